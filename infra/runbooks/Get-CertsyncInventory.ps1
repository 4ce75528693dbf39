<#
.SYNOPSIS
    Reads what Exchange has (servers, certificates, connectors, the hybrid configuration and, when it is
    configured, Exchange Online's connectors and accepted domains) and writes it as one line of
    certsync.inventory/1 JSON. Read-only: it changes nothing.

.DESCRIPTION
    Runs in Windows PowerShell 5.1 with the Exchange Management Shell, as an Azure Automation runbook on
    a Hybrid Runbook Worker that is an Exchange server (certsync starts it: `certsync discover`, the
    daily reconciliation, POST /api/discover/{worker_group}), or standalone on an Exchange server.

    - Only Get- cmdlets are called on Exchange. Property names are Exchange's own, as
      `Select-Object ... | ConvertTo-Json` writes them; dates are ISO 8601 UTC; multi-valued properties
      are arrays of strings; enum flags (Services, ServerRole) are their string form ("IIS, SMTP").
    - A server or cmdlet that cannot be read becomes an entry in `errors` ({where, message}, where being
      the server's Name or else the cmdlet's name); it is never reported as empty.
    - Edge Transport servers are not domain-joined: their certificates are read only when this runs on
      the Edge server itself (its own worker group); otherwise the Edge server is listed in `errors`.
    - Exchange Online is read when an organization is configured, the same way as the remediation
      runbook: the Automation variable CertsyncExoOrganization (managed identity sign-in), or
      -ExoOrganization standalone. The EXO cmdlets carry the prefix "Certsync".
    - The Output stream carries exactly one line: the inventory JSON. Progress goes to the Verbose
      stream (Automation) or the Information stream (standalone). No secret is read or written.

    See docs/discovery.md and spec exchange-inventory.md section 1.

.EXAMPLE
    .\Get-CertsyncInventory.ps1 -SkipExchangeOnline | Out-File -Encoding utf8 inventory.json
#>
[CmdletBinding()]
param(
    # Azure Automation job parameter: the worker group, echoed in the document
    [string]$WorkerGroup = '',
    # Standalone use
    [string]$ExoOrganization = '',
    [switch]$SkipExchangeOnline,
    # Load the functions only (for Pester: `. .\Get-CertsyncInventory.ps1 -LoadOnly`)
    [switch]$LoadOnly
)

# ---------------------------------------------------------------------------------------------
# What is read: spec exchange-inventory.md section 1, under Exchange's own property names
# ---------------------------------------------------------------------------------------------

function Get-CertsyncDiscoveryProperties {
    param([string]$Kind)
    switch ($Kind) {
        'server' { return @('Name', 'Fqdn', 'ServerRole', 'AdminDisplayVersion', 'Site', 'IsEdgeServer') }
        'certificate' { return @('Thumbprint', 'Subject', 'Issuer', 'Services', 'Status', 'NotBefore', 'NotAfter', 'CertificateDomains', 'HasPrivateKey', 'PrivateKeyExportable', 'IsSelfSigned') }
        'send-connector' { return @('Identity', 'SourceTransportServers', 'TlsCertificateName', 'AddressSpaces', 'SmartHosts', 'RequireTLS', 'TlsAuthLevel', 'TlsDomain', 'CloudServicesMailEnabled', 'Enabled', 'IsScopedConnector') }
        'receive-connector' { return @('Identity', 'Server', 'TransportRole', 'Bindings', 'AuthMechanism', 'TlsCertificateName', 'RemoteIPRanges', 'CloudServicesMailEnabled', 'Enabled') }
        'hybrid-configuration' { return @('SendingTransportServers', 'ReceivingTransportServers', 'EdgeTransportServers', 'TlsCertificateName', 'OnPremisesSmartHost', 'Domains', 'Features') }
        'exo-inbound-connector' { return @('Identity', 'ConnectorType', 'TlsSenderCertificateName', 'RequireTls', 'RestrictDomainsToCertificate', 'Enabled') }
        'exo-outbound-connector' { return @('Identity', 'ConnectorType', 'TlsSettings', 'TlsDomain', 'SmartHosts', 'RecipientDomains', 'Enabled') }
        'accepted-domain' { return @('DomainName', 'DomainType') }
    }
    throw "Unknown inventory kind '$Kind'."
}

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

function Get-CertsyncDiscoveryField {
    # An optional property of an object (or a dictionary entry), or $null.
    param([object]$Object, [string]$Name)
    if ($null -eq $Object) { return $null }
    if ($Object -is [System.Collections.IDictionary]) {
        if ($Object.Contains($Name)) { return $Object[$Name] }
        return $null
    }
    $property = $Object.PSObject.Properties[$Name]
    if ($null -eq $property) { return $null }
    return $property.Value
}

function Format-CertsyncDiscoveryError {
    # One line from an error record: the exception's message, without PowerShell's position info.
    param([object]$ErrorRecord)
    $message = ''
    if ($null -ne $ErrorRecord.Exception) { $message = $ErrorRecord.Exception.Message }
    if (-not $message) { $message = [string]$ErrorRecord }
    return (($message -replace '\s+', ' ').Trim())
}

function Get-CertsyncDiscoveryUtcNow {
    return [DateTime]::UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", [System.Globalization.CultureInfo]::InvariantCulture)
}

function Write-CertsyncDiscoveryLog {
    param([string]$Message)
    if ($script:CertsyncDiscoveryToVerbose) {
        Write-Verbose -Message $Message -Verbose
    } else {
        Write-Information -MessageData $Message -InformationAction Continue
    }
}

function ConvertTo-CertsyncDiscoveryValue {
    # A property value as the inventory writes it: null, a boolean or number as is, a date as ISO 8601
    # UTC, a collection as an array of strings, anything else (enums, SmtpX509Identifier, ...) as text.
    param([object]$Value)
    if ($null -eq $Value) { return $null }
    if ($Value -is [bool] -or $Value -is [int] -or $Value -is [long]) { return $Value }
    if ($Value -is [DateTime]) {
        return $Value.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", [System.Globalization.CultureInfo]::InvariantCulture)
    }
    if ($Value -is [string]) { return $Value }
    if ($Value -is [System.Collections.IEnumerable]) {
        $items = @(foreach ($item in $Value) { if ($null -ne $item) { [string]$item.ToString() } })
        return , ([object[]]$items)
    }
    return [string]$Value.ToString()
}

function Select-CertsyncDiscoveryObject {
    # The properties of one Exchange object, in the inventory's order, under Exchange's names.
    param([object]$Object, [string]$Kind, [hashtable]$Extra = @{})
    $record = [ordered]@{}
    foreach ($key in $Extra.Keys) { $record[$key] = $Extra[$key] }
    foreach ($name in (Get-CertsyncDiscoveryProperties -Kind $Kind)) {
        $value = ConvertTo-CertsyncDiscoveryValue -Value (Get-CertsyncDiscoveryField $Object $name)
        $record[$name] = $value
    }
    return $record
}

function Add-CertsyncDiscoveryError {
    # One server or cmdlet that could not be read: never taken as empty.
    param([hashtable]$Inventory, [string]$Where, [string]$Message)
    $Inventory.Errors.Add([ordered]@{ where = $Where; message = $Message })
    Write-Warning ('certsync discovery: {0} not read: {1}' -f $Where, $Message)
}

function Test-CertsyncDiscoveryLocalServer {
    param([string]$Name)
    return ($Name -and $env:COMPUTERNAME -and $Name.Split('.')[0] -eq $env:COMPUTERNAME.Split('.')[0])
}

function Test-CertsyncDiscoveryInAutomation {
    $metadata = Get-Variable -Name 'PSPrivateMetadata' -ValueOnly -ErrorAction SilentlyContinue
    return ($null -ne $metadata -and [bool](Get-CertsyncDiscoveryField $metadata 'JobId'))
}

# ---------------------------------------------------------------------------------------------
# Exchange Server (on premises)
# ---------------------------------------------------------------------------------------------

function Initialize-CertsyncDiscoveryState {
    # Everything one run collects. The lists stay lists (one element is still an array in the JSON).
    param([string]$WorkerGroup)
    return @{
        WorkerGroup         = $WorkerGroup
        Servers             = [System.Collections.Generic.List[object]]::new()
        Certificates        = [System.Collections.Generic.List[object]]::new()
        SendConnectors      = [System.Collections.Generic.List[object]]::new()
        ReceiveConnectors   = [System.Collections.Generic.List[object]]::new()
        HybridConfiguration = $null
        Exo                 = $null
        Errors              = [System.Collections.Generic.List[object]]::new()
        ExoConnected        = $false
    }
}

function Read-CertsyncDiscoveryServers {
    # Get-ExchangeServer for the organisation's servers (an Edge server run alone lists itself), then
    # Get-TransportService per server for its internal transport certificate.
    param([hashtable]$Inventory)
    try {
        $servers = @(Get-ExchangeServer -ErrorAction Stop)
    } catch {
        Add-CertsyncDiscoveryError -Inventory $Inventory -Where 'Get-ExchangeServer' -Message (Format-CertsyncDiscoveryError $_)
        return
    }
    foreach ($server in $servers) {
        $name = [string](Get-CertsyncDiscoveryField $server 'Name')
        $record = Select-CertsyncDiscoveryObject -Object $server -Kind 'server'
        $record['InternalTransportCertificateThumbprint'] = $null
        $isEdge = [bool](Get-CertsyncDiscoveryField $server 'IsEdgeServer')
        if ($isEdge -and -not (Test-CertsyncDiscoveryLocalServer $name)) {
            Add-CertsyncDiscoveryError -Inventory $Inventory -Where $name -Message 'Edge Transport server: not reachable from this worker; run discovery on the Edge server''s own worker group'
            $Inventory.Servers.Add($record)
            continue
        }
        try {
            $transport = Get-TransportService -Identity $name -ErrorAction Stop
            $thumbprint = [string](Get-CertsyncDiscoveryField $transport 'InternalTransportCertificateThumbprint')
            if ($thumbprint) { $record['InternalTransportCertificateThumbprint'] = $thumbprint.ToUpperInvariant() }
        } catch {
            Add-CertsyncDiscoveryError -Inventory $Inventory -Where $name -Message ('Get-TransportService: {0}' -f (Format-CertsyncDiscoveryError $_))
        }
        $record['HasDigiCertGlobalRootG2'] = Test-CertsyncDiscoveryExoRoot -Server $name -Local $isEdge
        $Inventory.Servers.Add($record)
        Read-CertsyncDiscoveryCertificates -Inventory $Inventory -Server $name -Local ($isEdge)
    }
}

function Test-CertsyncDiscoveryExoRoot {
    # Whether the server's Cert:\LocalMachine\Root holds DigiCert Global Root G2, the root of Exchange
    # Online's certificates (MC1224565); $null (and a warning, not an error: the server was read) when the
    # store cannot be opened, e.g. with the Remote Registry service stopped.
    param([string]$Server, [bool]$Local = $false)
    $thumbprint = 'DF3C24F9BFD666761B268073FE06D1CC8D4F82A4'
    $storeName = if ($Local -or (Test-CertsyncDiscoveryLocalServer $Server)) { 'Root' } else { '\\{0}\Root' -f $Server }
    $store = [System.Security.Cryptography.X509Certificates.X509Store]::new($storeName, [System.Security.Cryptography.X509Certificates.StoreLocation]::LocalMachine)
    try {
        $store.Open([System.Security.Cryptography.X509Certificates.OpenFlags]'ReadOnly, OpenExistingOnly')
        return [bool]($store.Certificates | Where-Object { $_.Thumbprint -eq $thumbprint })
    } catch {
        Write-Warning ('certsync discovery: {0}: Cert:\LocalMachine\Root not read: {1}' -f $Server, (Format-CertsyncDiscoveryError $_))
        return $null
    } finally {
        $store.Close()
    }
}

function Read-CertsyncDiscoveryCertificates {
    # Get-ExchangeCertificate -Server S (on an Edge server, locally, without -Server).
    param([hashtable]$Inventory, [string]$Server, [bool]$Local = $false)
    try {
        if ($Local) {
            $certificates = @(Get-ExchangeCertificate -ErrorAction Stop)
        } else {
            $certificates = @(Get-ExchangeCertificate -Server $Server -ErrorAction Stop)
        }
    } catch {
        Add-CertsyncDiscoveryError -Inventory $Inventory -Where $Server -Message ('Get-ExchangeCertificate: {0}' -f (Format-CertsyncDiscoveryError $_))
        return
    }
    foreach ($certificate in $certificates) {
        $record = Select-CertsyncDiscoveryObject -Object $certificate -Kind 'certificate' -Extra @{ Server = $Server }
        $Inventory.Certificates.Add($record)
    }
}

function Read-CertsyncDiscoverySendConnectors {
    param([hashtable]$Inventory)
    try {
        $connectors = @(Get-SendConnector -ErrorAction Stop)
    } catch {
        Add-CertsyncDiscoveryError -Inventory $Inventory -Where 'Get-SendConnector' -Message (Format-CertsyncDiscoveryError $_)
        return
    }
    foreach ($connector in $connectors) {
        $Inventory.SendConnectors.Add((Select-CertsyncDiscoveryObject -Object $connector -Kind 'send-connector'))
    }
}

function Read-CertsyncDiscoveryReceiveConnectors {
    # Per server, so that one server that does not answer is one error naming it.
    param([hashtable]$Inventory)
    foreach ($server in $Inventory.Servers) {
        $name = [string]$server['Name']
        if ($server['IsEdgeServer'] -and -not (Test-CertsyncDiscoveryLocalServer $name)) { continue }
        try {
            $connectors = @(Get-ReceiveConnector -Server $name -ErrorAction Stop)
        } catch {
            Add-CertsyncDiscoveryError -Inventory $Inventory -Where $name -Message ('Get-ReceiveConnector: {0}' -f (Format-CertsyncDiscoveryError $_))
            continue
        }
        foreach ($connector in $connectors) {
            $Inventory.ReceiveConnectors.Add((Select-CertsyncDiscoveryObject -Object $connector -Kind 'receive-connector'))
        }
    }
}

function Read-CertsyncDiscoveryHybrid {
    # null when the organisation has no hybrid configuration (Get-HybridConfiguration returns nothing).
    param([hashtable]$Inventory)
    try {
        $hybrid = @(Get-HybridConfiguration -ErrorAction Stop)
    } catch {
        Add-CertsyncDiscoveryError -Inventory $Inventory -Where 'Get-HybridConfiguration' -Message (Format-CertsyncDiscoveryError $_)
        return
    }
    if ($hybrid.Count -gt 0) {
        $Inventory.HybridConfiguration = Select-CertsyncDiscoveryObject -Object $hybrid[0] -Kind 'hybrid-configuration'
    }
}

# ---------------------------------------------------------------------------------------------
# Exchange Online (only when an organization is configured)
# ---------------------------------------------------------------------------------------------

function Get-CertsyncDiscoveryExoOrganization {
    param([string]$ExoOrganization, [bool]$InAutomation)
    $organization = $ExoOrganization
    if (-not $organization -and $InAutomation) {
        try { $organization = [string](Get-AutomationVariable -Name 'CertsyncExoOrganization') } catch { $organization = '' }
    }
    if (-not $organization) { $organization = [string]$env:CertsyncExoOrganization }
    return $organization
}

function Read-CertsyncDiscoveryExo {
    param([hashtable]$Inventory, [string]$Organization, [bool]$InAutomation)
    try {
        if ($InAutomation) {
            Connect-ExchangeOnline -ManagedIdentity -Organization $Organization -Prefix 'Certsync' -ShowBanner:$false -ErrorAction Stop
        } else {
            Connect-ExchangeOnline -Organization $Organization -Prefix 'Certsync' -ShowBanner:$false -ErrorAction Stop
        }
        $Inventory.ExoConnected = $true
    } catch {
        Add-CertsyncDiscoveryError -Inventory $Inventory -Where 'Connect-ExchangeOnline' -Message (Format-CertsyncDiscoveryError $_)
        return
    }
    $exo = [ordered]@{
        inbound_connectors  = [System.Collections.Generic.List[object]]::new()
        outbound_connectors = [System.Collections.Generic.List[object]]::new()
        accepted_domains    = [System.Collections.Generic.List[object]]::new()
    }
    try {
        foreach ($item in @(Get-CertsyncInboundConnector -ErrorAction Stop)) { $exo.inbound_connectors.Add((Select-CertsyncDiscoveryObject -Object $item -Kind 'exo-inbound-connector')) }
    } catch {
        Add-CertsyncDiscoveryError -Inventory $Inventory -Where 'Get-InboundConnector' -Message (Format-CertsyncDiscoveryError $_)
    }
    try {
        foreach ($item in @(Get-CertsyncOutboundConnector -ErrorAction Stop)) { $exo.outbound_connectors.Add((Select-CertsyncDiscoveryObject -Object $item -Kind 'exo-outbound-connector')) }
    } catch {
        Add-CertsyncDiscoveryError -Inventory $Inventory -Where 'Get-OutboundConnector' -Message (Format-CertsyncDiscoveryError $_)
    }
    try {
        foreach ($item in @(Get-CertsyncAcceptedDomain -ErrorAction Stop)) { $exo.accepted_domains.Add((Select-CertsyncDiscoveryObject -Object $item -Kind 'accepted-domain')) }
    } catch {
        Add-CertsyncDiscoveryError -Inventory $Inventory -Where 'Get-AcceptedDomain' -Message (Format-CertsyncDiscoveryError $_)
    }
    $Inventory.Exo = $exo
    try {
        Disconnect-ExchangeOnline -Confirm:$false -ErrorAction Stop
    } catch {
        Write-Warning ('Disconnecting from Exchange Online failed: {0}' -f (Format-CertsyncDiscoveryError $_))
    }
    $Inventory.ExoConnected = $false
}

# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------

function Read-CertsyncDiscovery {
    # Reads everything into the state; nothing here throws for one server or cmdlet.
    param([hashtable]$Inventory, [string]$ExoOrganization, [bool]$SkipExchangeOnline, [bool]$InAutomation)
    Read-CertsyncDiscoveryServers -Inventory $Inventory
    Read-CertsyncDiscoverySendConnectors -Inventory $Inventory
    Read-CertsyncDiscoveryReceiveConnectors -Inventory $Inventory
    Read-CertsyncDiscoveryHybrid -Inventory $Inventory
    if (-not $SkipExchangeOnline) {
        $organization = Get-CertsyncDiscoveryExoOrganization -ExoOrganization $ExoOrganization -InAutomation $InAutomation
        if ($organization) {
            Read-CertsyncDiscoveryExo -Inventory $Inventory -Organization $organization -InAutomation $InAutomation
        }
    }
}

function ConvertTo-CertsyncDiscoveryJson {
    # One line of certsync.inventory/1.
    param([hashtable]$Inventory, [string]$CollectedAt)
    $document = [ordered]@{
        schema               = 'certsync.inventory/1'
        collected_at         = $CollectedAt
        worker_group         = $Inventory.WorkerGroup
        servers              = $Inventory.Servers
        certificates         = $Inventory.Certificates
        send_connectors      = $Inventory.SendConnectors
        receive_connectors   = $Inventory.ReceiveConnectors
        hybrid_configuration = $Inventory.HybridConfiguration
        exo                  = $Inventory.Exo
        errors               = $Inventory.Errors
    }
    return (ConvertTo-Json -InputObject $document -Depth 8 -Compress)
}

function Invoke-CertsyncDiscoveryMain {
    # The one place that writes Output: the inventory line. When Exchange cannot be loaded at all, the
    # line still comes (with that error) and the script throws so the job ends Failed.
    param([string]$WorkerGroup, [string]$ExoOrganization, [bool]$SkipExchangeOnline, [string]$ExchangeLoadError)
    $ErrorActionPreference = 'Stop'
    $inAutomation = Test-CertsyncDiscoveryInAutomation
    $script:CertsyncDiscoveryToVerbose = $inAutomation
    $collectedAt = Get-CertsyncDiscoveryUtcNow
    $inventory = Initialize-CertsyncDiscoveryState -WorkerGroup $WorkerGroup
    $fatal = ''
    if ($null -eq (Get-Command -Name 'Get-ExchangeServer' -ErrorAction SilentlyContinue)) {
        $fatal = ('The Exchange Management Shell is not available on {0} ({1}); run discovery on a Hybrid Runbook Worker that is an Exchange server.' -f $env:COMPUTERNAME, $ExchangeLoadError)
        Add-CertsyncDiscoveryError -Inventory $inventory -Where 'Exchange Management Shell' -Message $fatal
    } else {
        Write-CertsyncDiscoveryLog "certsync discovery on $env:COMPUTERNAME (worker group '$WorkerGroup')"
        Read-CertsyncDiscovery -Inventory $inventory -ExoOrganization $ExoOrganization -SkipExchangeOnline $SkipExchangeOnline -InAutomation $inAutomation
        Write-CertsyncDiscoveryLog ('Read {0} server(s), {1} certificate(s), {2} send and {3} receive connector(s); {4} error(s).' -f $inventory.Servers.Count, $inventory.Certificates.Count, $inventory.SendConnectors.Count, $inventory.ReceiveConnectors.Count, $inventory.Errors.Count)
    }
    $json = ConvertTo-CertsyncDiscoveryJson -Inventory $inventory -CollectedAt $collectedAt
    Write-Output $json
    if ($fatal) { throw $fatal }
}

# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

if (-not $LoadOnly) {
    $certsyncExchangeLoadError = ''
    # RemoteExchange.ps1 is dot-sourced here, at script scope, so its session outlives any function.
    # Connect-ExchangeServer opens the remote session as the job's account (Exchange RBAC applies; on an
    # Edge server, the Edge server's own shell). There is no snap-in fallback: it would bypass RBAC.
    try {
        if ($null -eq (Get-Command -Name 'Get-ExchangeServer' -ErrorAction SilentlyContinue) -and $env:ExchangeInstallPath) {
            $certsyncRemoteExchange = Join-Path -Path $env:ExchangeInstallPath -ChildPath 'bin\RemoteExchange.ps1'
            if (Test-Path -LiteralPath $certsyncRemoteExchange -PathType Leaf) {
                $null = . $certsyncRemoteExchange
                $null = Connect-ExchangeServer -auto -ClientApplication:ManagementShell
            }
        }
    } catch {
        $certsyncExchangeLoadError = Format-CertsyncDiscoveryError $_
    }
    Invoke-CertsyncDiscoveryMain -WorkerGroup $WorkerGroup -ExoOrganization $ExoOrganization -SkipExchangeOnline ([bool]$SkipExchangeOnline) -ExchangeLoadError $certsyncExchangeLoadError
}
