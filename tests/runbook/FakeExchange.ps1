<#
    An in-memory Exchange organisation for the runbook's Pester tests: global functions with the
    names and parameters of the Exchange cmdlets the runbook calls, over a state that the tests set up
    and inspect ($global:FakeExchange). It behaves the way the facts in
    ../shared/spec/exchange-azure-facts.md describe Exchange:
      - Enable-ExchangeCertificate -Services SMTP -Force makes the certificate the internal transport
        certificate; without -Force it needs the "overwrite the default SMTP certificate?" answer,
        which a non-interactive job cannot give (the fake throws, as the job would fail);
      - services are additive;
      - Remove-ExchangeCertificate refuses the internal transport certificate and a certificate whose
        <I><S> name a send connector uses (compared ignoring case, as Exchange does);
      - Get-ExchangeCertificate returns Subject and Issuer as "Windows renders them": the PFX's
        Issuer/Subject below, which a test can set to differ from the plan's TlsCertificateName;
      - objects come back as copies (like deserialized objects from the EMS remote session).
    Every call is logged in $global:FakeExchange.Calls as @{ Name; Parameters }.
#>

function global:New-FakeExchange {
    # The world before the renewal of tests/fixtures/runbook/plan-two-server.json: the old R10
    # certificate on EX01 and EX02, every connector on its <I><S> name, Exchange's self-signed
    # internal transport certificate on each server, the new certificate waiting in the "PFX"; no
    # queue holds an error, and Exchange Online validates the outbound connector.
    param([string]$OldName = "<I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com")
    $global:FakeExchange = @{
        Certificates      = @{}
        Internal          = @{}
        CaStore           = @{ EX01 = @(); EX02 = @() }
        SendConnectors    = [ordered]@{ 'Outbound to Office 365 - 0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10' = $OldName }
        ReceiveConnectors = [ordered]@{
            'EX01\Default Frontend EX01' = $OldName
            'EX02\Default Frontend EX02' = $OldName
        }
        Hybrid            = @{ TlsCertificateName = $OldName }
        Exo               = @{ 'Inbound from contoso' = 'mail.contoso.com' }
        ExoConnected      = $false
        Pfx               = @{ Thumbprint = '1514218ACD2571E7AA8E4920F2EBBE430A5D1996'; Issuer = "CN=R11, O=Let's Encrypt, C=US"; Subject = 'CN=mail.contoso.com' }
        Queues            = @()
        Validation        = 'Succeeded'
        Fail              = @{}
        Calls             = New-Object System.Collections.Generic.List[object]
    }
    foreach ($server in @('EX01', 'EX02')) {
        $selfSigned = ('5E1F' + $server + ('0' * 32)).Substring(0, 40)
        $global:FakeExchange.Certificates[$server] = New-Object System.Collections.Generic.List[object]
        Add-FakeCertificate -Server $server -Thumbprint $selfSigned -Issuer "CN=$server" -Subject "CN=$server" -Services 'IMAP, POP, IIS, SMTP' -IsSelfSigned $true
        Add-FakeCertificate -Server $server -Thumbprint '0CB65935AF474E04D10597A12E9538959901A4C8' -Issuer "CN=R10, O=Let's Encrypt, C=US" -Subject 'CN=mail.contoso.com' -Services 'IIS, SMTP'
        $global:FakeExchange.Internal[$server] = $selfSigned
    }
}

function global:Add-FakeCertificate {
    param([string]$Server, [string]$Thumbprint, [string]$Issuer, [string]$Subject, [string]$Services = 'None', [string]$Status = 'Valid', [bool]$IsSelfSigned = $false)
    $global:FakeExchange.Certificates[$Server].Add(@{
            Thumbprint   = $Thumbprint
            Issuer       = $Issuer
            Subject      = $Subject
            Services     = $Services
            Status       = $Status
            IsSelfSigned = $IsSelfSigned
        })
}

function global:Get-FakeServer {
    param([string]$Server)
    if (-not $Server) { return 'EX01' }
    return $Server.Split('.')[0].ToUpperInvariant()
}

function global:Find-FakeCertificate {
    param([string]$Server, [string]$Thumbprint)
    foreach ($certificate in $global:FakeExchange.Certificates[(Get-FakeServer $Server)]) {
        if ($certificate.Thumbprint -eq $Thumbprint) { return $certificate }
    }
    return $null
}

function global:Add-FakeCall {
    param([string]$Name, [System.Collections.IDictionary]$Parameters)
    $copy = @{}
    foreach ($key in $Parameters.Keys) { $copy[$key] = $Parameters[$key] }
    $global:FakeExchange.Calls.Add(@{ Name = $Name; Parameters = $copy })
    if ($global:FakeExchange.Fail.ContainsKey($Name)) { throw $global:FakeExchange.Fail[$Name] }
}

function global:Get-FakeChanges {
    # The calls that change something (what -WhatIf must never make).
    return @($global:FakeExchange.Calls | Where-Object { $_.Name -match '^(Set|Import|Enable|Remove|Add)-' } | ForEach-Object { $_.Name })
}

function global:Get-FakeState {
    # A comparable snapshot of everything the runbook can change.
    $state = [ordered]@{
        Send     = @($global:FakeExchange.SendConnectors.GetEnumerator() | ForEach-Object { '{0}={1}' -f $_.Key, $_.Value })
        Receive  = @($global:FakeExchange.ReceiveConnectors.GetEnumerator() | ForEach-Object { '{0}={1}' -f $_.Key, $_.Value })
        Hybrid   = $global:FakeExchange.Hybrid.TlsCertificateName
        Exo      = @($global:FakeExchange.Exo.GetEnumerator() | Sort-Object Key | ForEach-Object { '{0}={1}' -f $_.Key, $_.Value })
        Internal = @($global:FakeExchange.Internal.GetEnumerator() | Sort-Object Key | ForEach-Object { '{0}={1}' -f $_.Key, $_.Value })
        Certs    = @($global:FakeExchange.Certificates.GetEnumerator() | Sort-Object Key | ForEach-Object { $server = $_.Key; $_.Value | ForEach-Object { '{0}:{1}:{2}' -f $server, $_.Thumbprint, $_.Services } })
        CaStore  = @($global:FakeExchange.CaStore.GetEnumerator() | Sort-Object Key | ForEach-Object { '{0}:{1}' -f $_.Key, ($_.Value -join ',') })
    }
    return ($state | ConvertTo-Json -Depth 4 -Compress)
}

function global:Get-ExchangeCertificate {
    [CmdletBinding()]
    param([Parameter(Position = 0)][string]$Thumbprint, [string]$Server)
    Add-FakeCall 'Get-ExchangeCertificate' $PSBoundParameters
    foreach ($certificate in $global:FakeExchange.Certificates[(Get-FakeServer $Server)]) {
        if ($Thumbprint -and $certificate.Thumbprint -ne $Thumbprint) { continue }
        [pscustomobject]@{
            Thumbprint   = $certificate.Thumbprint
            Issuer       = $certificate.Issuer
            Subject      = $certificate.Subject
            Services     = $certificate.Services
            Status       = $certificate.Status
            IsSelfSigned = $certificate.IsSelfSigned
        }
    }
}

function global:Import-ExchangeCertificate {
    [CmdletBinding(SupportsShouldProcess = $true)]
    param([byte[]]$FileData, [System.Security.SecureString]$Password, [bool]$PrivateKeyExportable = $true, [string]$FriendlyName, [string]$Server)
    Add-FakeCall 'Import-ExchangeCertificate' $PSBoundParameters
    if ($null -eq $FileData -or $FileData.Length -eq 0) { throw 'Import-ExchangeCertificate: no FileData' }
    $pfx = $global:FakeExchange.Pfx
    if ($null -eq (Find-FakeCertificate -Server $Server -Thumbprint $pfx.Thumbprint)) {
        Add-FakeCertificate -Server (Get-FakeServer $Server) -Thumbprint $pfx.Thumbprint -Issuer $pfx.Issuer -Subject $pfx.Subject
    }
    [pscustomobject]@{ Thumbprint = $pfx.Thumbprint; Services = 'None'; Status = 'Valid' }
}

function global:Enable-ExchangeCertificate {
    [CmdletBinding(SupportsShouldProcess = $true)]
    param([Parameter(Position = 0)][string]$Thumbprint, [string[]]$Services, [string]$Server, [switch]$Force, [switch]$DoNotRequireSsl)
    Add-FakeCall 'Enable-ExchangeCertificate' $PSBoundParameters
    $server = Get-FakeServer $Server
    $certificate = Find-FakeCertificate -Server $server -Thumbprint $Thumbprint
    if ($null -eq $certificate) { throw "The certificate with thumbprint $Thumbprint was not found on server $server." }
    $requested = @($Services -split ',' | ForEach-Object { $_.Trim() } | Where-Object { $_ })
    if ($requested -contains 'SMTP' -and $global:FakeExchange.Internal[$server] -ne $Thumbprint) {
        if (-not $Force) {
            throw 'Overwrite the existing default SMTP certificate? A command that prompts the user failed because the host program or the command type does not support user interaction.'
        }
        $global:FakeExchange.Internal[$server] = $Thumbprint
    }
    $have = @($certificate.Services -split ',' | ForEach-Object { $_.Trim() } | Where-Object { $_ -and $_ -ne 'None' })
    foreach ($service in $requested) { if ($have -notcontains $service) { $have += $service } }
    $certificate.Services = ($have -join ', ')
}

function global:Remove-ExchangeCertificate {
    [CmdletBinding(SupportsShouldProcess = $true)]
    param([Parameter(Position = 0)][string]$Thumbprint, [string]$Server)
    Add-FakeCall 'Remove-ExchangeCertificate' $PSBoundParameters
    $server = Get-FakeServer $Server
    $certificate = Find-FakeCertificate -Server $server -Thumbprint $Thumbprint
    if ($null -eq $certificate) { throw "The certificate with thumbprint $Thumbprint was not found on server $server." }
    if ($global:FakeExchange.Internal[$server] -eq $Thumbprint) { throw 'The internal transport certificate cannot be removed because that would disrupt internal mail flow.' }
    $name = '<I>{0}<S>{1}' -f $certificate.Issuer, $certificate.Subject
    $tagged = @($global:FakeExchange.SendConnectors.GetEnumerator() | Where-Object { $_.Value -eq $name } | ForEach-Object { $_.Key })
    if ($tagged.Count -gt 0) {
        throw ("A special Rpc error occurs on server {0}: These certificates are tagged with following Send Connectors : {1}. Removing and replacing certificates from Send Connector would break the mail flow." -f $server, ($tagged -join ', '))
    }
    [void]$global:FakeExchange.Certificates[$server].Remove($certificate)
}

function global:Get-TransportService {
    [CmdletBinding()]
    param([Parameter(Position = 0)][string]$Identity)
    Add-FakeCall 'Get-TransportService' $PSBoundParameters
    $server = Get-FakeServer $Identity
    [pscustomobject]@{ Name = $server; InternalTransportCertificateThumbprint = $global:FakeExchange.Internal[$server] }
}

function global:Get-SendConnector {
    [CmdletBinding()]
    param([Parameter(Position = 0)][string]$Identity)
    Add-FakeCall 'Get-SendConnector' $PSBoundParameters
    foreach ($entry in $global:FakeExchange.SendConnectors.GetEnumerator()) {
        if ($Identity -and $entry.Key -ne $Identity) { continue }
        [pscustomobject]@{ Identity = $entry.Key; Guid = '0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10'; TlsCertificateName = $(if ($entry.Value) { $entry.Value } else { $null }) }
    }
    if ($Identity -and -not $global:FakeExchange.SendConnectors.Contains($Identity)) { throw "The operation couldn't be performed because object '$Identity' couldn't be found." }
}

function global:Set-SendConnector {
    [CmdletBinding(SupportsShouldProcess = $true)]
    param([Parameter(Position = 0)][string]$Identity, [object]$TlsCertificateName)
    Add-FakeCall 'Set-SendConnector' $PSBoundParameters
    if (-not $global:FakeExchange.SendConnectors.Contains($Identity)) { throw "The operation couldn't be performed because object '$Identity' couldn't be found." }
    $global:FakeExchange.SendConnectors[$Identity] = [string]$TlsCertificateName
}

function global:Get-ReceiveConnector {
    [CmdletBinding()]
    param([Parameter(Position = 0)][string]$Identity, [string]$Server)
    Add-FakeCall 'Get-ReceiveConnector' $PSBoundParameters
    foreach ($entry in $global:FakeExchange.ReceiveConnectors.GetEnumerator()) {
        if ($Identity -and $entry.Key -ne $Identity) { continue }
        if ($Server -and -not $entry.Key.StartsWith((Get-FakeServer $Server) + '\')) { continue }
        [pscustomobject]@{ Identity = $entry.Key; TlsCertificateName = $(if ($entry.Value) { $entry.Value } else { $null }) }
    }
    if ($Identity -and -not $global:FakeExchange.ReceiveConnectors.Contains($Identity)) { throw "The operation couldn't be performed because object '$Identity' couldn't be found." }
}

function global:Set-ReceiveConnector {
    [CmdletBinding(SupportsShouldProcess = $true)]
    param([Parameter(Position = 0)][string]$Identity, [object]$TlsCertificateName)
    Add-FakeCall 'Set-ReceiveConnector' $PSBoundParameters
    if (-not $global:FakeExchange.ReceiveConnectors.Contains($Identity)) { throw "The operation couldn't be performed because object '$Identity' couldn't be found." }
    $global:FakeExchange.ReceiveConnectors[$Identity] = [string]$TlsCertificateName
}

function global:Get-HybridConfiguration {
    [CmdletBinding()]
    param()
    Add-FakeCall 'Get-HybridConfiguration' $PSBoundParameters
    if ($null -eq $global:FakeExchange.Hybrid) { return }
    [pscustomobject]@{ TlsCertificateName = $(if ($global:FakeExchange.Hybrid.TlsCertificateName) { $global:FakeExchange.Hybrid.TlsCertificateName } else { $null }) }
}

function global:Set-HybridConfiguration {
    [CmdletBinding(SupportsShouldProcess = $true)]
    param([object]$TlsCertificateName)
    Add-FakeCall 'Set-HybridConfiguration' $PSBoundParameters
    $global:FakeExchange.Hybrid.TlsCertificateName = [string]$TlsCertificateName
}

function global:Connect-ExchangeOnline {
    [CmdletBinding()]
    param([switch]$ManagedIdentity, [string]$Organization, [string]$Prefix, [switch]$ShowBanner)
    Add-FakeCall 'Connect-ExchangeOnline' $PSBoundParameters
    $global:FakeExchange.ExoConnected = $true
}

function global:Disconnect-ExchangeOnline {
    [CmdletBinding(SupportsShouldProcess = $true)]
    param()
    Add-FakeCall 'Disconnect-ExchangeOnline' $PSBoundParameters
    $global:FakeExchange.ExoConnected = $false
}

function global:Get-CertsyncInboundConnector {
    [CmdletBinding()]
    param([Parameter(Position = 0)][string]$Identity)
    Add-FakeCall 'Get-CertsyncInboundConnector' $PSBoundParameters
    if (-not $global:FakeExchange.ExoConnected) { throw 'Not connected to Exchange Online.' }
    if (-not $global:FakeExchange.Exo.ContainsKey($Identity)) { throw "The operation couldn't be performed because object '$Identity' couldn't be found." }
    [pscustomobject]@{ Identity = $Identity; TlsSenderCertificateName = $global:FakeExchange.Exo[$Identity] }
}

function global:Set-CertsyncInboundConnector {
    [CmdletBinding(SupportsShouldProcess = $true)]
    param([Parameter(Position = 0)][string]$Identity, [object]$TlsSenderCertificateName)
    Add-FakeCall 'Set-CertsyncInboundConnector' $PSBoundParameters
    if (-not $global:FakeExchange.ExoConnected) { throw 'Not connected to Exchange Online.' }
    $global:FakeExchange.Exo[$Identity] = [string]$TlsSenderCertificateName
}

function global:Get-Queue {
    [CmdletBinding()]
    param([string]$Server)
    Add-FakeCall 'Get-Queue' $PSBoundParameters
    foreach ($queue in @($global:FakeExchange.Queues)) { [pscustomobject]$queue }
}

function global:Validate-CertsyncOutboundConnector {
    [CmdletBinding()]
    param([string]$Identity, [string[]]$Recipients)
    Add-FakeCall 'Validate-CertsyncOutboundConnector' $PSBoundParameters
    if (-not $global:FakeExchange.ExoConnected) { throw 'Not connected to Exchange Online.' }
    [pscustomobject]@{ Identity = $Identity; Status = $global:FakeExchange.Validation }
}

function global:New-FakeStore {
    # LocalMachine\CA of one server as Get-CertsyncStore returns it: Certificates.Find by thumbprint,
    # Add, Remove, Close, over $global:FakeExchange.CaStore.
    param([string]$Server)
    $store = [pscustomobject]@{ Server = (Get-FakeServer $Server); Certificates = $null }
    $certificates = [pscustomobject]@{ Server = $store.Server }
    $certificates | Add-Member -MemberType ScriptMethod -Name Find -Value {
        param($Type, $Thumbprint, $Valid)
        return @($global:FakeExchange.CaStore[$this.Server] | Where-Object { $_ -eq $Thumbprint })
    }
    $store.Certificates = $certificates
    $store | Add-Member -MemberType ScriptMethod -Name Add -Value {
        param($Certificate)
        Add-FakeCall 'Add-StoreCertificate' @{ Server = $this.Server; Thumbprint = $Certificate.Thumbprint }
        $global:FakeExchange.CaStore[$this.Server] = @($global:FakeExchange.CaStore[$this.Server]) + $Certificate.Thumbprint
    }
    $store | Add-Member -MemberType ScriptMethod -Name Remove -Value {
        param($Item)
        $Thumbprint = [string]$(if ($Item -is [string]) { $Item } else { $Item.Thumbprint })
        Add-FakeCall 'Remove-StoreCertificate' @{ Server = $this.Server; Thumbprint = $Thumbprint }
        $global:FakeExchange.CaStore[$this.Server] = @($global:FakeExchange.CaStore[$this.Server] | Where-Object { $_ -ne $Thumbprint })
    }
    $store | Add-Member -MemberType ScriptMethod -Name Close -Value { $null }
    return $store
}
