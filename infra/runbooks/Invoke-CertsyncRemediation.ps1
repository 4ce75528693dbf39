<#
.SYNOPSIS
    Carries out a certsync remediation plan (certsync.plan/1 or certsync.plan/2) on Exchange Server:
    stage the renewed certificate, check the name Exchange renders for it, switch the connectors'
    TlsCertificateName, verify, retire the old certificate.

.DESCRIPTION
    Runs in Windows PowerShell 5.1 with the Exchange Management Shell, as an Azure Automation runbook
    on a Hybrid Runbook Worker that is an Exchange server (Arc-enabled or an Azure VM), or standalone
    on an Exchange server with a plan file (-PlanFile).

    - The PFX comes from Key Vault (plan.certificate.secret_id) with the worker's managed identity, or
      in standalone use from -PfxPath. It lives only in memory, is never logged, and is zeroed after
      the last import. Job parameters carry no secret.
    - Steps run in plan order and are idempotent: a worker reboot restarts the job from the top and
      every step that is already done reports "already".
    - The internal transport certificate is never replaced; a connector value that is neither the
      plan's previous value nor its new value is never overwritten; a certificate that something
      still references, or that still serves IIS, POP, IMAP, UM or Federation, is never removed.
    - No connector is switched until every staged server renders the new certificate's
      "<I>" + Issuer + "<S>" + Subject as certsync's TlsCertificateName (ignoring case, Exchange's rule);
      on a mismatch, staging is rolled back and the result names both strings per server.
    - TlsCertificateName values are compared ignoring case everywhere (Test-CertsyncSameTlsName).
    - After each phase the result is verified (Get-ExchangeCertificate Status, TlsCertificateName read
      back). When a step fails after connector values changed, those values are restored.
    - -WhatIf reports what would change and changes nothing.
    - Progress goes to the Verbose stream (Automation: enable "Log verbose records") or, standalone,
      to the Information stream. The Output stream carries exactly one line: the certsync.result/1
      JSON. On failure the line is still written, then the script throws so the job is Failed.

    See docs/runbook.md for parameters, permissions and the result schema.

.EXAMPLE
    .\Invoke-CertsyncRemediation.ps1 -PlanFile .\job.json -PfxPath .\mail.pfx -WhatIf
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    # Azure Automation job parameters (strings, never a secret)
    [string]$PlanJson = '',
    [string]$CorrelationId = '',
    [string]$JobId = '',
    [string]$CallbackUrl = '',
    # Standalone use on an Exchange server without Azure Automation
    [string]$PlanFile = '',
    [string]$PfxPath = '',
    [string]$ExoOrganization = '',
    [switch]$SkipExchangeOnline,
    # Load the functions only (for Pester: `. .\Invoke-CertsyncRemediation.ps1 -LoadOnly`)
    [switch]$LoadOnly
)

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

function Get-CertsyncActions {
    # Every action a plan of $Schema can contain: certsync.plan/1 (shared/pipeline/plan.py) or
    # certsync.plan/2 (spec exchange-inventory.md section 3). A plan with any other action is refused
    # before the first step runs, so a runbook older than the planner never half-runs a plan.
    param([string]$Schema = 'certsync.plan/1')
    if ($Schema -eq 'certsync.plan/2') {
        return @(
            'install-intermediate',
            'import-certificate',
            'enable-services',
            'check-name',
            'set-send-connector',
            'set-receive-connector',
            'set-hybrid-configuration',
            'set-exo-inbound-connector',
            'check-status',
            'remove-certificate'
        )
    }
    return @(
        'install-intermediate',
        'import-certificate',
        'enable-smtp',
        'check-status',
        'set-send-connector',
        'set-receive-connector',
        'set-hybrid-configuration',
        'set-exo-inbound-connector',
        'verify-certificate',
        'verify-connectors',
        'retire-certificate'
    )
}

function Get-CertsyncField {
    # An optional property of a parsed JSON object, or $null (plans may omit optional fields).
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

function ConvertTo-CertsyncText {
    # Exchange returns TlsCertificateName as SmtpX509Identifier (or, remoted, a string); compare text.
    param([object]$Value)
    if ($null -eq $Value) { return '' }
    return [string]$Value.ToString()
}

function ConvertTo-CertsyncOneLine {
    param([string]$Text)
    if ($null -eq $Text) { return '' }
    return (($Text -replace '\s+', ' ').Trim())
}

function Format-CertsyncError {
    # One line from an error record: the exception's message, without the PowerShell position info.
    param([object]$ErrorRecord)
    $message = ''
    if ($null -ne $ErrorRecord.Exception) { $message = $ErrorRecord.Exception.Message }
    if (-not $message) { $message = [string]$ErrorRecord }
    return (ConvertTo-CertsyncOneLine $message)
}

function Get-CertsyncUtcNow {
    # ISO 8601 UTC; InvariantCulture because ':' in a .NET format string is the culture's separator.
    return [DateTime]::UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", [System.Globalization.CultureInfo]::InvariantCulture)
}

function Write-CertsyncLog {
    # Progress for people. Azure Automation records the Verbose stream ("Log verbose records") but not
    # the Information stream; an interactive console shows Information without -Verbose.
    param([string]$Message)
    if ($script:CertsyncLogToVerbose) {
        Write-Verbose -Message $Message -Verbose
    } else {
        Write-Information -MessageData $Message -InformationAction Continue
    }
}

function Test-CertsyncInAutomation {
    # An Automation job has $PSPrivateMetadata.JobId. Failing that, a -PlanJson run where the
    # Automation asset cmdlets exist is a job too; a -PlanFile run on a worker machine is standalone.
    param([bool]$PlanJsonGiven = $false)
    $metadata = Get-Variable -Name 'PSPrivateMetadata' -ValueOnly -ErrorAction SilentlyContinue
    if ($null -ne $metadata -and [bool](Get-CertsyncField $metadata 'JobId')) { return $true }
    return ($PlanJsonGiven -and $null -ne (Get-Command -Name 'Get-AutomationVariable' -ErrorAction SilentlyContinue))
}

# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------

function Read-CertsyncPlanText {
    param([string]$PlanJson, [string]$PlanFile)
    if ($PlanJson -and $PlanFile) { throw 'Give either -PlanJson (Automation) or -PlanFile (standalone), not both.' }
    if ($PlanJson) { return $PlanJson }
    if ($PlanFile) {
        if (-not (Test-Path -LiteralPath $PlanFile -PathType Leaf)) { throw "Plan file '$PlanFile' does not exist; give the path of a certsync plan or job JSON file." }
        return [System.IO.File]::ReadAllText((Resolve-Path -LiteralPath $PlanFile).ProviderPath, [System.Text.Encoding]::UTF8)
    }
    throw 'No plan: the Automation job must pass -PlanJson; standalone, give -PlanFile <plan or job JSON file>.'
}

function ConvertFrom-CertsyncPlan {
    # Parses and checks a certsync.plan/1 or certsync.plan/2 body, or a certsync.job/1 file holding one
    # (standalone use of an outbox job file). Returns @{ Plan; JobId; CorrelationId } (ids from the job
    # file, if any). The plan's schema decides which actions it may contain.
    param([string]$Text)
    try {
        $document = ConvertFrom-Json -InputObject $Text -ErrorAction Stop
    } catch {
        throw ('The plan is not valid JSON ({0}); pass the certsync.plan/1 body as compact JSON.' -f (Format-CertsyncError $_))
    }
    $jobId = ''
    $correlationId = ''
    if ([string](Get-CertsyncField $document 'schema') -eq 'certsync.job/1') {
        $jobId = [string](Get-CertsyncField $document 'job_id')
        $correlationId = [string](Get-CertsyncField $document 'correlation_id')
        $document = Get-CertsyncField $document 'plan'
    }
    $schema = [string](Get-CertsyncField $document 'schema')
    if (@('certsync.plan/1', 'certsync.plan/2') -notcontains $schema) {
        throw "The plan's schema is '$schema'; this runbook runs certsync.plan/1 and certsync.plan/2 plans: update infra/runbooks/Invoke-CertsyncRemediation.ps1 in the Automation account."
    }
    $certificate = Get-CertsyncField $document 'certificate'
    foreach ($field in @('vault', 'name', 'version', 'secret_id', 'thumbprint', 'tls_certificate_name')) {
        if (-not [string](Get-CertsyncField $certificate $field)) {
            throw "The plan has no certificate.$field; it was not made by certsync's planner."
        }
    }
    $blocked = Get-CertsyncField $document 'blocked'
    if ($null -ne $blocked -and [string]$blocked) {
        # plan/1: a string; plan/2: {reason, fix}.
        $reason = Get-CertsyncField $blocked 'reason'
        if ($null -ne $reason) { $blocked = '{0}; {1}' -f $reason, (Get-CertsyncField $blocked 'fix') }
        throw "The plan is blocked ($blocked); certsync does not run blocked plans: fix the certificate and let certsync plan again."
    }
    $known = Get-CertsyncActions -Schema $schema
    $index = 0
    foreach ($step in @(Get-CertsyncField $document 'steps')) {
        if ($null -eq $step) { continue }
        $index++
        $action = [string](Get-CertsyncField $step 'action')
        if ($known -notcontains $action) {
            throw ("Plan step {0} has an unknown action '{1}' for {2} (newer than this runbook); update infra/runbooks/Invoke-CertsyncRemediation.ps1 in the Automation account." -f $index, $action, $schema)
        }
    }
    return @{ Plan = $document; JobId = $jobId; CorrelationId = $correlationId }
}

function New-CertsyncContext {
    # Everything one run needs and records. A hashtable, passed to every function (no global state),
    # so Pester can build one and drive any part of the run.
    param(
        [object]$Plan,
        [string]$JobId,
        [string]$CorrelationId,
        [bool]$WhatIfMode = $false,
        [bool]$SkipExchangeOnline = $false,
        [string]$ExoOrganization = '',
        [string]$PfxPath = '',
        [bool]$InAutomation = $false
    )
    $steps = @()
    $certificate = $null
    if ($null -ne $Plan) {
        $steps = @(Get-CertsyncField $Plan 'steps' | Where-Object { $null -ne $_ })
        $certificate = Get-CertsyncField $Plan 'certificate'
    }
    $records = New-Object System.Collections.Generic.List[object]
    $setSteps = @{}
    $lastImport = -1
    for ($i = 0; $i -lt $steps.Count; $i++) {
        $step = $steps[$i]
        $records.Add((New-CertsyncStepRecord -Step $step -Index ($i + 1)))
        $action = [string](Get-CertsyncField $step 'action')
        if ($action -like 'set-*') { $setSteps[[string](Get-CertsyncField $step 'object')] = $step }
        if ($action -eq 'import-certificate') { $lastImport = $i }
    }
    return @{
        Plan               = $Plan
        Certificate        = $certificate
        Steps              = $steps
        Records            = $records
        SetSteps           = $setSteps
        LastImportIndex    = $lastImport
        JobId              = $JobId
        CorrelationId      = $CorrelationId
        WhatIf             = $WhatIfMode
        SkipExchangeOnline = $SkipExchangeOnline
        ExoOrganization    = $ExoOrganization
        PfxPath            = $PfxPath
        InAutomation       = $InAutomation
        Pfx                = $null
        Changes            = New-Object System.Collections.Generic.List[object]
        Staged             = New-Object System.Collections.Generic.List[object]
        ServerNames        = New-Object System.Collections.Generic.List[object]
        Kept               = New-Object System.Collections.Generic.List[object]
        RollbackFailures   = New-Object System.Collections.Generic.List[string]
        ExoConnected       = $false
        Status             = ''
        Error              = $null
        Inventory          = New-Object System.Collections.Generic.List[object]
        Worker             = [string]$env:COMPUTERNAME
        Started            = Get-CertsyncUtcNow
        Finished           = ''
    }
}

function New-CertsyncStepRecord {
    # The result record of one plan step (certsync.result/1 steps[]): "not run" until it runs. A step
    # without its own n (plan/2 may omit it) is numbered by its position, from 1.
    param([object]$Step, [int]$Index = 0)
    $n = Get-CertsyncField $Step 'n'
    if ($null -eq $n) { $n = $Index }
    $object = Get-CertsyncField $Step 'object'
    if ($object -is [System.Array]) { $object = (@($object) | ForEach-Object { [string]$_ }) -join '; ' }
    $server = Get-CertsyncField $Step 'server'
    if ($null -ne $server) { $server = [string]$server }
    if ('' -eq $server) { $server = $null }
    return [ordered]@{
        n       = [int]$n
        action  = [string](Get-CertsyncField $Step 'action')
        server  = $server
        object  = [string]$object
        before  = $null
        after   = $null
        outcome = 'skipped'
        message = 'not run'
    }
}

function Set-CertsyncStepOutcome {
    param(
        [System.Collections.IDictionary]$Record,
        [ValidateSet('done', 'already', 'skipped', 'failed', 'rolled-back', 'would-do')]
        [string]$Outcome,
        [object]$Before = $null,
        [object]$After = $null,
        [string]$Message = ''
    )
    $Record['outcome'] = $Outcome
    if ($null -ne $Before) { $Record['before'] = [string]$Before }
    if ($null -ne $After) { $Record['after'] = [string]$After }
    $Record['message'] = ConvertTo-CertsyncOneLine $Message
}

# ---------------------------------------------------------------------------------------------
# Exchange Management Shell
# ---------------------------------------------------------------------------------------------

function Find-CertsyncRemoteExchangeScript {
    # $null when the Exchange cmdlets are already there (EMS session, or tests); else the standard
    # RemoteExchange.ps1, which the caller dot-sources at script scope (its session must outlive it).
    if ($null -ne (Get-Command -Name 'Get-ExchangeCertificate' -ErrorAction SilentlyContinue)) { return $null }
    if (-not $env:ExchangeInstallPath) { return $null }
    $path = Join-Path -Path $env:ExchangeInstallPath -ChildPath 'bin\RemoteExchange.ps1'
    if (Test-Path -LiteralPath $path -PathType Leaf) { return $path }
    return $null
}

function Assert-CertsyncExchangeLoaded {
    # After RemoteExchange.ps1 + Connect-ExchangeServer: if the cmdlets are still missing, try the
    # local snap-in (Exchange's own scripts do; it bypasses RBAC, so it is the fallback, not the rule).
    param([string]$LoadError = '')
    if ($null -ne (Get-Command -Name 'Get-ExchangeCertificate' -ErrorAction SilentlyContinue)) { return }
    try {
        Add-PSSnapin -Name 'Microsoft.Exchange.Management.PowerShell.SnapIn' -ErrorAction Stop
        Write-Warning 'Loaded the Exchange snap-in directly (RemoteExchange.ps1 did not connect); Exchange RBAC is not applied in this mode.'
    } catch {
        if (-not $LoadError) { $LoadError = Format-CertsyncError $_ }
    }
    if ($null -eq (Get-Command -Name 'Get-ExchangeCertificate' -ErrorAction SilentlyContinue)) {
        throw ("The Exchange Management Shell is not available on {0} (ExchangeInstallPath='{1}'; {2}); run the job on a Hybrid Runbook Worker that is an Exchange server." -f $env:COMPUTERNAME, $env:ExchangeInstallPath, $LoadError)
    }
}

function Get-CertsyncServerParameters {
    param([string]$Server)
    $parameters = @{}
    if ($Server) { $parameters['Server'] = $Server }
    return $parameters
}

function Get-CertsyncExchangeCertificates {
    # Every certificate Exchange sees on a server. Listing (not -Thumbprint) keeps "not found" apart
    # from real errors (RPC, permissions), which must stop the run instead of triggering an import.
    param([string]$Server)
    $parameters = Get-CertsyncServerParameters -Server $Server
    return @(Get-ExchangeCertificate @parameters -ErrorAction Stop)
}

function Get-CertsyncExchangeCertificate {
    param([string]$Server, [string]$Thumbprint)
    $wanted = $Thumbprint.ToUpperInvariant()
    foreach ($certificate in (Get-CertsyncExchangeCertificates -Server $Server)) {
        if (([string]$certificate.Thumbprint).ToUpperInvariant() -eq $wanted) { return $certificate }
    }
    return $null
}

function Get-CertsyncInternalTransportThumbprint {
    param([string]$Server)
    $identity = $Server
    if (-not $identity) { $identity = $env:COMPUTERNAME }
    $service = Get-TransportService -Identity $identity -ErrorAction Stop
    return ([string](Get-CertsyncField $service 'InternalTransportCertificateThumbprint')).ToUpperInvariant()
}

function Get-CertsyncServices {
    # The services a certificate is enabled for, by name: 'IIS, POP, SMTP' -> IIS, POP, SMTP; 'None' -> none.
    param([object]$Certificate)
    $names = New-Object System.Collections.Generic.List[string]
    foreach ($service in (([string](Get-CertsyncField $Certificate 'Services')) -split ',')) {
        $name = $service.Trim()
        if ($name -and $name -ne 'None' -and -not $names.Contains($name)) { $names.Add($name) }
    }
    return $names.ToArray()
}

function Test-CertsyncSmtpEnabled {
    param([object]$Certificate)
    return (@(Get-CertsyncServices -Certificate $Certificate) -contains 'SMTP')
}

function Get-CertsyncCertificateTlsName {
    # The TlsCertificateName a connector would use for this certificate, as this server renders it.
    param([object]$Certificate)
    return ('<I>{0}<S>{1}' -f [string]$Certificate.Issuer, [string]$Certificate.Subject)
}

function Test-CertsyncSameTlsName {
    # The one comparison of TlsCertificateName (and TlsSenderCertificateName) values: Exchange matches
    # them ignoring case (spec tls-certificate-name.md section 4), so certsync does too. Empty and $null
    # are the same (no value).
    param([object]$Left, [object]$Right)
    return [string]::Equals((ConvertTo-CertsyncText $Left), (ConvertTo-CertsyncText $Right), [System.StringComparison]::OrdinalIgnoreCase)
}

function Test-CertsyncTlsNameSelects {
    # Whether a connector's TlsCertificateName selects this certificate, as Exchange matches: the issuer
    # and subject texts ignoring case; a value with only <S> selects every certificate with that subject.
    param([object]$Value, [object]$Certificate)
    $text = ConvertTo-CertsyncText $Value
    if (-not $text -or $null -eq $Certificate) { return $false }
    if ($text.StartsWith('<S>', [System.StringComparison]::OrdinalIgnoreCase)) {
        return (Test-CertsyncSameTlsName -Left $text.Substring(3) -Right ([string]$Certificate.Subject))
    }
    return (Test-CertsyncSameTlsName -Left $text -Right (Get-CertsyncCertificateTlsName -Certificate $Certificate))
}

function Get-CertsyncStepThumbprint {
    # The certificate a step is about: its own thumbprint (plan/1), else its object when that is a
    # thumbprint (plan/2 remove-certificate), else the plan's certificate.
    param([hashtable]$Context, [object]$Step)
    $thumbprint = [string](Get-CertsyncField $Step 'thumbprint')
    $object = [string](Get-CertsyncField $Step 'object')
    if (-not $thumbprint -and $object -match '^[0-9A-Fa-f]{40}$') { $thumbprint = $object }
    if (-not $thumbprint) { $thumbprint = [string](Get-CertsyncField $Context.Certificate 'thumbprint') }
    return $thumbprint.ToUpperInvariant()
}

function Get-CertsyncOldThumbprints {
    # The certificates the plan replaces: plan/1's previous.thumbprint and every retire/remove step's.
    param([hashtable]$Context)
    $old = New-Object System.Collections.Generic.List[string]
    $previous = Get-CertsyncField $Context.Plan 'previous'
    if ([string](Get-CertsyncField $previous 'thumbprint')) { $old.Add(([string]$previous.thumbprint).ToUpperInvariant()) }
    foreach ($step in $Context.Steps) {
        if (@('retire-certificate', 'remove-certificate') -contains [string](Get-CertsyncField $step 'action')) {
            $thumbprint = Get-CertsyncStepThumbprint -Context $Context -Step $step
            if (-not $old.Contains($thumbprint)) { $old.Add($thumbprint) }
        }
    }
    return $old.ToArray()
}

function Test-CertsyncServerName {
    # Exchange's own rendering of the new certificate's name on $Server ("<I>" + Issuer + "<S>" + Subject
    # from Get-ExchangeCertificate) against certsync's TlsCertificateName, ignoring case as Exchange
    # matches. Records {server, subject, issuer, expected, matches} in $Context.ServerNames (one per
    # server, the latest) and returns it; $null when the certificate is not on the server.
    param([hashtable]$Context, [string]$Server, [string]$Thumbprint)
    $certificate = Get-CertsyncExchangeCertificate -Server $Server -Thumbprint $Thumbprint
    if ($null -eq $certificate) { return $null }
    $expected = [string](Get-CertsyncField $Context.Certificate 'tls_certificate_name')
    $name = $Server
    if (-not $name) { $name = [string]$env:COMPUTERNAME }
    $entry = [ordered]@{
        server   = $name
        subject  = [string]$certificate.Subject
        issuer   = [string]$certificate.Issuer
        expected = $expected
        matches  = (Test-CertsyncSameTlsName -Left (Get-CertsyncCertificateTlsName -Certificate $certificate) -Right $expected)
    }
    for ($i = $Context.ServerNames.Count - 1; $i -ge 0; $i--) {
        if ($Context.ServerNames[$i]['server'] -eq $name) { $Context.ServerNames.RemoveAt($i) }
    }
    $Context.ServerNames.Add($entry)
    return $entry
}

function Get-CertsyncNameMismatch {
    # The one-line failure for a server whose rendering differs from certsync's string.
    param([System.Collections.IDictionary]$Entry, [string]$Thumbprint)
    return ("On {0} Exchange renders certificate {1} as '<I>{2}<S>{3}', not certsync's '{4}'; certsync switches no connector to a name Exchange would not match and rolls staging back: compare Get-ExchangeCertificate -Server {0} -Thumbprint {1} | Format-List Issuer,Subject with 'certsync name' on the certificate and report the difference." -f $Entry['server'], $Thumbprint, $Entry['issuer'], $Entry['subject'], $Entry['expected'])
}

function Get-CertsyncStatusAdvice {
    param([string]$Status)
    switch ($Status) {
        'RevocationCheckFailure' { return 'the server cannot reach the CRL or OCSP addresses of the chain (proxy or firewall): allow them, or set the machine proxy with netsh winhttp, then rerun' }
        'Revoked' { return 'the certificate is revoked: issue a new one' }
        'Untrusted' { return 'the chain does not build to a root this server trusts: install the intermediates and the root on the server' }
        'DateInvalid' { return "the certificate is outside its validity dates: check the server's clock and the certificate" }
        'PendingRequest' { return 'the certificate is a pending request without a private key: import the issued PFX' }
        'Invalid' { return 'Windows rejects the certificate or its private key: check it with certutil -verifystore My' }
        default { return 'check the certificate on the server with Get-ExchangeCertificate | Format-List' }
    }
}

# ---------------------------------------------------------------------------------------------
# Key Vault with the worker's managed identity
# ---------------------------------------------------------------------------------------------

function Get-CertsyncVaultEndpoint {
    # The vault's base URL and token resource, from the plan's secret id. Only Key Vault hosts are
    # accepted, so a plan can never send the worker's token anywhere else.
    param([string]$SecretId, [string]$VaultName)
    $uri = $null
    if (-not [System.Uri]::TryCreate($SecretId, [System.UriKind]::Absolute, [ref]$uri) -or $uri.Scheme -ne 'https') {
        throw "The plan's certificate.secret_id '$SecretId' is not an https URL of a Key Vault secret."
    }
    $suffixes = @('vault.azure.net', 'vault.azure.cn', 'vault.usgovcloudapi.net', 'vault.microsoftazure.de')
    $vaultHost = $uri.Host.ToLowerInvariant()
    $dot = $vaultHost.IndexOf('.')
    $label = ''
    $suffix = ''
    if ($dot -gt 0) {
        $label = $vaultHost.Substring(0, $dot)
        $suffix = $vaultHost.Substring($dot + 1)
    }
    if ($suffixes -notcontains $suffix) {
        throw "The plan's certificate.secret_id host '$vaultHost' is not a Key Vault host (*.vault.azure.net and the sovereign clouds)."
    }
    if ($VaultName -and $label -ne $VaultName.ToLowerInvariant()) {
        throw "The plan's certificate.secret_id is in vault '$label', but certificate.vault is '$VaultName'."
    }
    return @{ Base = 'https://' + $vaultHost; Resource = 'https://' + $suffix }
}

function Get-CertsyncManagedIdentityToken {
    # An access token for $Resource from the machine's managed identity: Azure Arc (HIMDS, with its
    # file challenge), the App Service style endpoint (IDENTITY_HEADER), or the Azure VM IMDS.
    param([string]$Resource)
    [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12
    $encoded = [System.Uri]::EscapeDataString($Resource)
    $endpoint = [string]$env:IDENTITY_ENDPOINT
    if ($endpoint -and $env:IDENTITY_HEADER) {
        $uri = '{0}?resource={1}&api-version=2019-08-01' -f $endpoint, $encoded
        $response = Invoke-RestMethod -Uri $uri -Headers @{ 'X-IDENTITY-HEADER' = $env:IDENTITY_HEADER; Metadata = 'true' } -UseBasicParsing -ErrorAction Stop
        return [string]$response.access_token
    }
    if ($endpoint) {
        # Azure Arc: the first request is answered 401 with the path of a key file only local
        # administrators can read; its content, sent as Basic credentials, proves we are on the machine.
        $uri = '{0}?api-version=2020-06-01&resource={1}' -f $endpoint, $encoded
        $challenge = ''
        try {
            $null = Invoke-WebRequest -Uri $uri -Headers @{ Metadata = 'true' } -UseBasicParsing -ErrorAction Stop
            throw "The Azure Arc identity endpoint $endpoint answered without its challenge; is this an Arc-enabled server?"
        } catch [System.Net.WebException] {
            $response = $_.Exception.Response
            if ($null -eq $response) { throw ('The Azure Arc identity endpoint {0} is unreachable ({1}); is the Azure Connected Machine agent running?' -f $endpoint, (Format-CertsyncError $_)) }
            $challenge = [string]$response.Headers['WWW-Authenticate']
        }
        $realm = ''
        if ($challenge -match 'realm=(.+)$') { $realm = [System.IO.Path]::GetFullPath($Matches[1].Trim()) }
        $tokens = Join-Path -Path $env:ProgramData -ChildPath 'AzureConnectedMachineAgent\Tokens\'
        if (-not $realm -or -not $realm.StartsWith($tokens, [System.StringComparison]::OrdinalIgnoreCase) -or -not $realm.EndsWith('.key', [System.StringComparison]::OrdinalIgnoreCase)) {
            throw "The Azure Arc identity endpoint sent an unexpected challenge; expected a key file under $tokens."
        }
        $challengeKey = [System.IO.File]::ReadAllText($realm)
        $response = Invoke-RestMethod -Uri $uri -Headers @{ Metadata = 'true'; Authorization = 'Basic ' + $challengeKey } -UseBasicParsing -ErrorAction Stop
        $challengeKey = $null
        return [string]$response.access_token
    }
    $uri = 'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource={0}' -f $encoded
    try {
        $response = Invoke-RestMethod -Uri $uri -Headers @{ Metadata = 'true' } -UseBasicParsing -TimeoutSec 30 -ErrorAction Stop
    } catch {
        throw ('No managed identity on {0}: IDENTITY_ENDPOINT is not set (not Arc-enabled) and the Azure VM metadata endpoint failed ({1}).' -f $env:COMPUTERNAME, (Format-CertsyncError $_))
    }
    return [string]$response.access_token
}

function Get-CertsyncKeyVaultSecret {
    # GET a secret (the response object: value, contentType, id ...). Errors name the URL, never the token.
    param([string]$SecretUri, [string]$AccessToken)
    try {
        return Invoke-RestMethod -Uri ($SecretUri + '?api-version=7.4') -Headers @{ Authorization = 'Bearer ' + $AccessToken } -UseBasicParsing -TimeoutSec 60 -ErrorAction Stop
    } catch {
        throw ('Reading {0} from Key Vault failed ({1}); the worker identity needs the Key Vault Secrets User role on the vault.' -f $SecretUri, (Format-CertsyncError $_))
    }
}

function Read-CertsyncPfx {
    # Puts the PFX in $Context.Pfx = @{ Bytes; Password } (in memory only; Clear-CertsyncPfx zeroes it).
    param([hashtable]$Context)
    if ($Context.PfxPath) {
        $path = (Resolve-Path -LiteralPath $Context.PfxPath -ErrorAction Stop).ProviderPath
        $password = Read-Host -Prompt ("Password of {0} (Enter if it has none)" -f [System.IO.Path]::GetFileName($path)) -AsSecureString
        $Context.Pfx = @{ Bytes = [System.IO.File]::ReadAllBytes($path); Password = $password }
        return
    }
    $secretId = [string]$Context.Certificate.secret_id
    $vault = Get-CertsyncVaultEndpoint -SecretId $secretId -VaultName ([string]$Context.Certificate.vault)
    $accessToken = Get-CertsyncManagedIdentityToken -Resource $vault.Resource
    $secret = Get-CertsyncKeyVaultSecret -SecretUri $secretId -AccessToken $accessToken
    $accessToken = $null
    $contentType = [string](Get-CertsyncField $secret 'contentType')
    if ($contentType -ne 'application/x-pkcs12') {
        throw ("The Key Vault secret {0} holds '{1}', not a PFX; Import-ExchangeCertificate needs PKCS #12: set the certificate policy's content type to application/x-pkcs12 and create a new version." -f $secretId, $contentType)
    }
    # Key Vault exports a certificate's PFX without a password.
    $Context.Pfx = @{ Bytes = [System.Convert]::FromBase64String([string]$secret.value); Password = $null }
    $secret = $null
}

function Clear-CertsyncPfx {
    param([hashtable]$Context)
    if ($null -eq $Context -or $null -eq $Context.Pfx) { return }
    $bytes = $Context.Pfx.Bytes
    if ($null -ne $bytes) { [System.Array]::Clear($bytes, 0, $bytes.Length) }
    if ($null -ne $Context.Pfx.Password) { $Context.Pfx.Password.Dispose() }
    $Context.Pfx = $null
}

# ---------------------------------------------------------------------------------------------
# Certificate stores (intermediates)
# ---------------------------------------------------------------------------------------------

function Test-CertsyncLocalServer {
    param([string]$Server)
    if (-not $Server) { return $true }
    $short = $Server.Split('.')[0]
    return ($short -eq $env:COMPUTERNAME)
}

function Get-CertsyncStoreName {
    # A remote server's machine store is opened as \\SERVER\CA (CryptoAPI over Remote Registry).
    param([string]$Server, [string]$Store)
    if (Test-CertsyncLocalServer -Server $Server) { return $Store }
    return ('\\{0}\{1}' -f $Server, $Store)
}

function Test-CertsyncStoreCertificate {
    param([string]$Server, [string]$Thumbprint)
    $store = [System.Security.Cryptography.X509Certificates.X509Store]::new((Get-CertsyncStoreName -Server $Server -Store 'CA'), [System.Security.Cryptography.X509Certificates.StoreLocation]::LocalMachine)
    try {
        $store.Open([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadOnly)
        $found = $store.Certificates.Find([System.Security.Cryptography.X509Certificates.X509FindType]::FindByThumbprint, $Thumbprint, $false)
        return ($found.Count -gt 0)
    } finally {
        $store.Close()
    }
}

function Add-CertsyncStoreCertificate {
    param([string]$Server, [byte[]]$Der, [string]$Thumbprint)
    $certificate = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($Der)
    if ($certificate.Thumbprint -ne $Thumbprint) {
        throw ("The plan's intermediate has thumbprint {0}, but the step expects {1}; the plan is corrupt." -f $certificate.Thumbprint, $Thumbprint)
    }
    $store = [System.Security.Cryptography.X509Certificates.X509Store]::new((Get-CertsyncStoreName -Server $Server -Store 'CA'), [System.Security.Cryptography.X509Certificates.StoreLocation]::LocalMachine)
    try {
        $store.Open([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadWrite)
        $store.Add($certificate)
    } finally {
        $store.Close()
    }
}

# ---------------------------------------------------------------------------------------------
# Connector values (TlsCertificateName; Exchange Online: TlsSenderCertificateName)
# ---------------------------------------------------------------------------------------------

function Get-CertsyncKind {
    param([string]$Action, [string]$Object)
    switch ($Action) {
        'set-send-connector' { return 'send-connector' }
        'set-receive-connector' { return 'receive-connector' }
        'set-hybrid-configuration' { return 'hybrid-configuration' }
        'set-exo-inbound-connector' { return 'exo-inbound-connector' }
    }
    if ($Object -eq 'HybridConfiguration' -or $Object -eq 'Hybrid Configuration') { return 'hybrid-configuration' }
    if ($Object.Contains('\')) { return 'receive-connector' }
    return 'send-connector'
}

function Get-CertsyncExoOrganization {
    param([hashtable]$Context, [object]$Step)
    $organization = [string](Get-CertsyncField $Step 'organization')
    if (-not $organization -and $Context.InAutomation) {
        try { $organization = [string](Get-AutomationVariable -Name 'CertsyncExoOrganization') } catch { $organization = '' }
    }
    if (-not $organization) { $organization = $Context.ExoOrganization }
    if (-not $organization) { $organization = [string]$env:CertsyncExoOrganization }
    if (-not $organization) {
        throw 'No Exchange Online organization: create the Automation variable CertsyncExoOrganization (contoso.onmicrosoft.com), or pass -ExoOrganization standalone, or -SkipExchangeOnline.'
    }
    return $organization
}

function Connect-CertsyncExchangeOnline {
    # The EXO cmdlets get the prefix "Certsync" (Get-CertsyncInboundConnector ...) so they can never
    # shadow the on-premises ones in the same session ("EXO" itself is reserved by the module).
    param([hashtable]$Context, [object]$Step)
    if ($Context.ExoConnected) { return }
    $organization = Get-CertsyncExoOrganization -Context $Context -Step $Step
    if ($null -eq (Get-Command -Name 'Connect-ExchangeOnline' -ErrorAction SilentlyContinue)) {
        Import-Module -Name 'ExchangeOnlineManagement' -ErrorAction Stop
    }
    if ($Context.InAutomation) {
        Connect-ExchangeOnline -ManagedIdentity -Organization $organization -Prefix 'Certsync' -ShowBanner:$false -ErrorAction Stop
    } else {
        Connect-ExchangeOnline -Organization $organization -Prefix 'Certsync' -ShowBanner:$false -ErrorAction Stop
    }
    $Context.ExoConnected = $true
    Write-CertsyncLog "Connected to Exchange Online ($organization)."
}

function Disconnect-CertsyncExchangeOnline {
    param([hashtable]$Context)
    if (-not $Context.ExoConnected) { return }
    try {
        Disconnect-ExchangeOnline -Confirm:$false -ErrorAction Stop
    } catch {
        Write-Warning ('Disconnecting from Exchange Online failed: {0}' -f (Format-CertsyncError $_))
    }
    $Context.ExoConnected = $false
}

function Get-CertsyncTlsValue {
    param([hashtable]$Context, [string]$Kind, [string]$Object, [object]$Step = $null)
    switch ($Kind) {
        'send-connector' {
            $connector = Get-SendConnector -Identity $Object -ErrorAction Stop
            return (ConvertTo-CertsyncText $connector.TlsCertificateName)
        }
        'receive-connector' {
            $connector = Get-ReceiveConnector -Identity $Object -ErrorAction Stop
            return (ConvertTo-CertsyncText $connector.TlsCertificateName)
        }
        'hybrid-configuration' {
            $hybrid = Get-HybridConfiguration -ErrorAction Stop
            if ($null -eq $hybrid) { throw 'This organization has no hybrid configuration; run the Hybrid Configuration Wizard, or remove hybrid_configuration from the targets.' }
            return (ConvertTo-CertsyncText $hybrid.TlsCertificateName)
        }
        'exo-inbound-connector' {
            Connect-CertsyncExchangeOnline -Context $Context -Step $Step
            $connector = Get-CertsyncInboundConnector -Identity $Object -ErrorAction Stop
            return (ConvertTo-CertsyncText $connector.TlsSenderCertificateName)
        }
        default { throw "Unknown connector kind '$Kind'." }
    }
}

function Set-CertsyncTlsValue {
    param([hashtable]$Context, [string]$Kind, [string]$Object, [string]$Value, [object]$Step = $null)
    $newValue = $null
    if ($Value) { $newValue = $Value }
    switch ($Kind) {
        'send-connector' { Set-SendConnector -Identity $Object -TlsCertificateName $newValue -Confirm:$false -ErrorAction Stop }
        'receive-connector' { Set-ReceiveConnector -Identity $Object -TlsCertificateName $newValue -Confirm:$false -ErrorAction Stop }
        'hybrid-configuration' { Set-HybridConfiguration -TlsCertificateName $newValue -Confirm:$false -ErrorAction Stop }
        'exo-inbound-connector' {
            Connect-CertsyncExchangeOnline -Context $Context -Step $Step
            Set-CertsyncInboundConnector -Identity $Object -TlsSenderCertificateName $newValue -Confirm:$false -ErrorAction Stop
        }
        default { throw "Unknown connector kind '$Kind'." }
    }
}

# ---------------------------------------------------------------------------------------------
# Step handlers: each sets its record's outcome, or throws a one-line message (the step failed)
# ---------------------------------------------------------------------------------------------

function Invoke-CertsyncInstallIntermediate {
    param([hashtable]$Context, [object]$Step, [System.Collections.IDictionary]$Record)
    $server = [string](Get-CertsyncField $Step 'server')
    $thumbprint = Get-CertsyncStepThumbprint -Context $Context -Step $Step
    $intermediate = $null
    foreach ($candidate in @(Get-CertsyncField $Context.Certificate 'intermediates')) {
        if ($null -ne $candidate -and ([string]$candidate.thumbprint).ToUpperInvariant() -eq $thumbprint) { $intermediate = $candidate }
    }
    if ($null -eq $intermediate) { throw "The intermediate $thumbprint is not in the plan's certificate.intermediates; the plan is corrupt." }
    if (Test-CertsyncStoreCertificate -Server $server -Thumbprint $thumbprint) {
        Set-CertsyncStepOutcome -Record $Record -Outcome 'already' -Before 'present' -After 'present' -Message "intermediate $($intermediate.subject) is in the CA store"
        return
    }
    if ($Context.WhatIf) {
        Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -Before 'absent' -After 'present' -Message "would add intermediate $($intermediate.subject) to Cert:\LocalMachine\CA"
        return
    }
    Add-CertsyncStoreCertificate -Server $server -Der ([System.Convert]::FromBase64String([string]$intermediate.der_base64)) -Thumbprint $thumbprint
    if (-not (Test-CertsyncStoreCertificate -Server $server -Thumbprint $thumbprint)) {
        throw "Added intermediate $thumbprint to the CA store of $server, but it is not there on reading back."
    }
    Set-CertsyncStepOutcome -Record $Record -Outcome 'done' -Before 'absent' -After 'present' -Message "added intermediate $($intermediate.subject)"
}

function Invoke-CertsyncImportCertificate {
    param([hashtable]$Context, [object]$Step, [System.Collections.IDictionary]$Record)
    $server = [string](Get-CertsyncField $Step 'server')
    $thumbprint = Get-CertsyncStepThumbprint -Context $Context -Step $Step
    if ($null -ne (Get-CertsyncExchangeCertificate -Server $server -Thumbprint $thumbprint)) {
        Set-CertsyncStepOutcome -Record $Record -Outcome 'already' -Before 'present' -After 'present' -Message 'the certificate is installed'
        return
    }
    if ($Context.WhatIf) {
        Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -Before 'absent' -After 'present' -Message 'would import the PFX from Key Vault'
        return
    }
    if ($null -eq $Context.Pfx) { Read-CertsyncPfx -Context $Context }
    $parameters = Get-CertsyncServerParameters -Server $server
    $parameters['FileData'] = $Context.Pfx.Bytes
    $parameters['PrivateKeyExportable'] = $false
    # Exchange wants a friendly name shorter than 64 characters; it is only a label.
    $friendlyName = 'certsync {0} {1}' -f $Context.Certificate.name, $Context.Certificate.version
    $parameters['FriendlyName'] = $friendlyName.Substring(0, [Math]::Min(63, $friendlyName.Length))
    $password = $Context.Pfx.Password
    if ($null -ne $password -and $password.Length -gt 0) { $parameters['Password'] = $password }
    try {
        $imported = @(Import-ExchangeCertificate @parameters -ErrorAction Stop)
    } catch {
        if ($parameters.ContainsKey('Password')) { throw }
        # A PFX without a password: some Exchange builds want an (empty) password for any PFX.
        $parameters['Password'] = New-Object System.Security.SecureString
        $imported = @(Import-ExchangeCertificate @parameters -ErrorAction Stop)
    }
    if ($null -eq (Get-CertsyncExchangeCertificate -Server $server -Thumbprint $thumbprint)) {
        $got = (@($imported | ForEach-Object { [string]$_.Thumbprint }) -join ', ')
        throw "The PFX imported on $server holds $got, not the planned certificate $thumbprint; the Key Vault secret version and the plan disagree."
    }
    $Context.Staged.Add(@{ Server = $server; Thumbprint = $thumbprint; Imported = $true; Holders = @{}; Record = $Record })
    Set-CertsyncStepOutcome -Record $Record -Outcome 'done' -Before 'absent' -After 'present' -Message 'imported (private key not exportable)'
}

function Restore-CertsyncInternalTransport {
    # The new certificate became the internal transport certificate and the previous one is no longer
    # known (the job restarted). The previous one is, unless an admin chose otherwise, the self-signed
    # certificate Exchange setup made; restore it when exactly one such certificate qualifies.
    param([hashtable]$Context, [string]$Server, [string]$Thumbprint, [System.Collections.IDictionary]$Record)
    $candidates = @(Get-CertsyncExchangeCertificates -Server $Server | Where-Object {
            ([string]$_.Thumbprint).ToUpperInvariant() -ne $Thumbprint -and
            [string](Get-CertsyncField $_ 'IsSelfSigned') -eq 'True' -and
            [string]$_.Status -eq 'Valid' -and
            (Test-CertsyncSmtpEnabled -Certificate $_)
        })
    if ($candidates.Count -ne 1) {
        throw "Certificate $Thumbprint is the internal transport certificate of $Server (an earlier run was interrupted) and certsync cannot tell which certificate to restore ($($candidates.Count) self-signed SMTP candidates); run Enable-ExchangeCertificate -Server $Server -Thumbprint <Exchange's self-signed certificate> -Services SMTP -Force."
    }
    $previous = ([string]$candidates[0].Thumbprint).ToUpperInvariant()
    if ($Context.WhatIf) {
        Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -Before 'SMTP' -After 'SMTP' -Message "would restore $previous as the internal transport certificate of $Server"
        return
    }
    $parameters = Get-CertsyncServerParameters -Server $Server
    Enable-ExchangeCertificate @parameters -Thumbprint $previous -Services 'SMTP' -Force -Confirm:$false -ErrorAction Stop
    $now = Get-CertsyncInternalTransportThumbprint -Server $Server
    if ($now -ne $previous) {
        throw "Restoring $previous as the internal transport certificate of $Server failed (it is $now); run Enable-ExchangeCertificate -Server $Server -Thumbprint $previous -Services SMTP -Force."
    }
    Set-CertsyncStepOutcome -Record $Record -Outcome 'done' -Before 'SMTP' -After 'SMTP' -Message "an interrupted run had left the new certificate as the internal transport certificate; restored $previous"
}

function Get-CertsyncStepServices {
    # enable-services' value: a JSON array (["IIS","SMTP"]), or its text, or 'IIS, SMTP'. SMTP always.
    param([object]$Step)
    $value = Get-CertsyncField $Step 'value'
    if ($value -is [string] -and $value.Trim().StartsWith('[')) {
        try { $value = ConvertFrom-Json -InputObject $value -ErrorAction Stop } catch { throw ("Plan step {0}: enable-services' value '{1}' is not a JSON array of services; the plan is corrupt." -f (Get-CertsyncField $Step 'n'), $value) }
    }
    $services = New-Object System.Collections.Generic.List[string]
    foreach ($item in @($value)) {
        foreach ($part in ([string]$item -split ',')) {
            $name = $part.Trim()
            if ($name -and $name -ne 'None' -and -not $services.Contains($name)) { $services.Add($name) }
        }
    }
    if (-not $services.Contains('SMTP')) { $services.Add('SMTP') }
    return $services.ToArray()
}

function Invoke-CertsyncEnableServices {
    # enable-smtp (plan/1: SMTP) and enable-services (plan/2: each service the old certificate had).
    # Enabling SMTP on a third-party certificate makes Exchange offer to replace the internal transport
    # certificate. The offer is a ShouldContinue prompt that a non-interactive job cannot answer "No"
    # to (it would fail the job), so certsync passes -Force, then puts the previous internal transport
    # certificate back at once with Enable-ExchangeCertificate -Services SMTP -Force, the way
    # Microsoft's CSS-Exchange scripts do, and fails the step if it cannot. Which certificate served
    # each other service before is remembered, so a failed name check can give it back.
    param([hashtable]$Context, [object]$Step, [System.Collections.IDictionary]$Record, [string[]]$Services)
    $server = [string](Get-CertsyncField $Step 'server')
    $thumbprint = Get-CertsyncStepThumbprint -Context $Context -Step $Step
    $wanted = ($Services -join ', ')
    $all = @(Get-CertsyncExchangeCertificates -Server $server)
    $certificate = $null
    foreach ($candidate in $all) {
        if (([string]$candidate.Thumbprint).ToUpperInvariant() -eq $thumbprint) { $certificate = $candidate }
    }
    if ($null -eq $certificate) {
        if ($Context.WhatIf) {
            Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -Before 'not enabled' -After $wanted -Message "would enable $wanted after the import, keeping the internal transport certificate"
            return
        }
        throw "Certificate $thumbprint is not installed on $server; the import step must run first."
    }
    $have = @(Get-CertsyncServices -Certificate $certificate)
    $missing = @($Services | Where-Object { $have -notcontains $_ })
    $before = 'not enabled'
    if ($have.Count -gt 0) { $before = $have -join ', ' }
    $internal = Get-CertsyncInternalTransportThumbprint -Server $server
    if ($missing.Count -eq 0) {
        if ($internal -ne $thumbprint) {
            Set-CertsyncStepOutcome -Record $Record -Outcome 'already' -Before $before -After $before -Message ('services: {0}; internal transport certificate {1}' -f $certificate.Services, $internal)
            return
        }
        # The new certificate is the internal transport certificate: an earlier run was interrupted
        # between enabling and restoring (a worker reboot restarts the job). Put Exchange's own back.
        Restore-CertsyncInternalTransport -Context $Context -Server $server -Thumbprint $thumbprint -Record $Record
        return
    }
    if ($Context.WhatIf) {
        Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -Before $before -After $wanted -Message ("would enable {0} and keep the internal transport certificate {1}" -f ($missing -join ', '), $internal)
        return
    }
    # Who serves each other service now (the plan's old certificate first), to give it back on rollback.
    $holders = @{}
    $old = @(Get-CertsyncOldThumbprints -Context $Context)
    $others = @($all | Where-Object { $old -contains ([string]$_.Thumbprint).ToUpperInvariant() }) + @($all | Where-Object { $old -notcontains ([string]$_.Thumbprint).ToUpperInvariant() -and ([string]$_.Thumbprint).ToUpperInvariant() -ne $thumbprint })
    foreach ($service in $missing) {
        if ($service -eq 'SMTP') { continue }
        foreach ($other in $others) {
            if (-not $holders.ContainsKey($service) -and (@(Get-CertsyncServices -Certificate $other) -contains $service)) {
                $holders[$service] = ([string]$other.Thumbprint).ToUpperInvariant()
            }
        }
    }
    $Context.Staged.Add(@{ Server = $server; Thumbprint = $thumbprint; Imported = $false; Holders = $holders; Record = $Record })
    $parameters = Get-CertsyncServerParameters -Server $server
    Enable-ExchangeCertificate @parameters -Thumbprint $thumbprint -Services $missing -Force -Confirm:$false -ErrorAction Stop
    $message = "{0} enabled; internal transport certificate $internal kept" -f ($missing -join ', ')
    $now = Get-CertsyncInternalTransportThumbprint -Server $server
    if (-not $internal) {
        $message = "{0} enabled; $server had no internal transport certificate, Exchange now uses $now" -f ($missing -join ', ')
        Write-Warning $message
    } elseif ($now -ne $internal) {
        Write-CertsyncLog "Exchange made $now the internal transport certificate of $server; restoring $internal."
        Enable-ExchangeCertificate @parameters -Thumbprint $internal -Services 'SMTP' -Force -Confirm:$false -ErrorAction Stop
        $restored = Get-CertsyncInternalTransportThumbprint -Server $server
        if ($restored -ne $internal) {
            throw "Enabling SMTP made $now the internal transport certificate of $server and restoring $internal failed (it is $restored); run Enable-ExchangeCertificate -Server $server -Thumbprint $internal -Services SMTP -Force."
        }
        $message = "{0} enabled; Exchange took it as the internal transport certificate and certsync restored $internal" -f ($missing -join ', ')
    }
    $certificate = Get-CertsyncExchangeCertificate -Server $server -Thumbprint $thumbprint
    $enabled = @(Get-CertsyncServices -Certificate $certificate)
    $absent = @($Services | Where-Object { $enabled -notcontains $_ })
    if ($null -eq $certificate -or $absent.Count -gt 0) {
        throw ("Enable-ExchangeCertificate ran, but certificate {0} on {1} is still not enabled for {2}." -f $thumbprint, $server, ($absent -join ', '))
    }
    Set-CertsyncStepOutcome -Record $Record -Outcome 'done' -Before $before -After $wanted -Message $message
}

function Invoke-CertsyncCheckStatus {
    # check-status (stage) and verify-certificate (verify): Exchange's own view of the certificate on
    # that server must be Valid (and, to verify, enabled for SMTP).
    param([hashtable]$Context, [object]$Step, [System.Collections.IDictionary]$Record, [bool]$RequireSmtp = $false)
    $server = [string](Get-CertsyncField $Step 'server')
    $thumbprint = Get-CertsyncStepThumbprint -Context $Context -Step $Step
    $certificate = Get-CertsyncExchangeCertificate -Server $server -Thumbprint $thumbprint
    if ($null -eq $certificate) {
        if ($Context.WhatIf) {
            Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -After ([string](Get-CertsyncField $Step 'value')) -Message 'would check the status after the import'
            return
        }
        throw "Certificate $thumbprint is not installed on $server."
    }
    $status = [string]$certificate.Status
    $services = [string]$certificate.Services
    if ($status -ne 'Valid') {
        throw ("Certificate {0} on {1} has Status {2}: {3}." -f $thumbprint, $server, $status, (Get-CertsyncStatusAdvice -Status $status))
    }
    $after = $status
    if ($RequireSmtp) {
        if (-not (Test-CertsyncSmtpEnabled -Certificate $certificate)) {
            if ($Context.WhatIf) {
                Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -Before $status -After 'Valid, SMTP' -Message 'would verify after SMTP is enabled'
                return
            }
            throw "Certificate $thumbprint on $server is Valid but not enabled for SMTP (services: $services)."
        }
        $after = "$status, SMTP"
    }
    $outcome = 'done'
    if ($Context.WhatIf) { $outcome = 'already' }
    Set-CertsyncStepOutcome -Record $Record -Outcome $outcome -Before $null -After $after -Message "status $status; services $services"
}

function Invoke-CertsyncCheckName {
    # check-name: Exchange's own Subject and Issuer of the new certificate on the step's server, as
    # "<I>" + Issuer + "<S>" + Subject, must equal certsync's TlsCertificateName ignoring case; otherwise
    # the step fails, nothing is switched and staging is rolled back (Invoke-CertsyncPlan).
    param([hashtable]$Context, [object]$Step, [System.Collections.IDictionary]$Record)
    $server = [string](Get-CertsyncField $Step 'server')
    $thumbprint = Get-CertsyncStepThumbprint -Context $Context -Step $Step
    $entry = Test-CertsyncServerName -Context $Context -Server $server -Thumbprint $thumbprint
    if ($null -eq $entry) {
        if ($Context.WhatIf) {
            Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -After ([string]$Context.Certificate.tls_certificate_name) -Message "would compare Exchange's Subject and Issuer with certsync's name after the import"
            return
        }
        throw "Certificate $thumbprint is not installed on $server."
    }
    $rendered = '<I>{0}<S>{1}' -f $entry['issuer'], $entry['subject']
    $Record['after'] = $rendered
    if (-not $entry['matches']) { throw (Get-CertsyncNameMismatch -Entry $entry -Thumbprint $thumbprint) }
    $outcome = 'done'
    if ($Context.WhatIf) { $outcome = 'already' }
    Set-CertsyncStepOutcome -Record $Record -Outcome $outcome -After $rendered -Message "Exchange renders the name as certsync does"
}

function Invoke-CertsyncSetTlsName {
    # set-send-connector, set-receive-connector, set-hybrid-configuration, set-exo-inbound-connector.
    # Only a value the plan expects (its previous value, or empty) is replaced; anything else means
    # someone changed it, and certsync stops rather than overwrite it.
    param([hashtable]$Context, [object]$Step, [System.Collections.IDictionary]$Record)
    $action = [string](Get-CertsyncField $Step 'action')
    $object = [string](Get-CertsyncField $Step 'object')
    $kind = Get-CertsyncKind -Action $action -Object $object
    $value = [string](Get-CertsyncField $Step 'value')
    $previous = [string](Get-CertsyncField $Step 'previous')
    if ($kind -eq 'exo-inbound-connector' -and $Context.SkipExchangeOnline) {
        Set-CertsyncStepOutcome -Record $Record -Outcome 'skipped' -After $value -Message "skipped (-SkipExchangeOnline): set TlsSenderCertificateName of '$object' to '$value' in Exchange Online yourself"
        return
    }
    $current = Get-CertsyncTlsValue -Context $Context -Kind $kind -Object $object -Step $Step
    $Record['before'] = $current
    if (Test-CertsyncSameTlsName -Left $current -Right $value) {
        Set-CertsyncStepOutcome -Record $Record -Outcome 'already' -Before $current -After $current -Message 'already set'
        return
    }
    if ($current -and -not ($previous -and (Test-CertsyncSameTlsName -Left $current -Right $previous))) {
        throw "The $kind '$object' is set to '$current', which is neither the value the plan replaces ('$previous') nor the new one; someone changed it: check it, then run certsync again (it never overwrites a value it does not know)."
    }
    if ($Context.WhatIf) {
        Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -Before $current -After $value -Message "would set it to '$value'"
        return
    }
    # Recorded before the change, so a failure while setting or reading back is rolled back as well.
    $Context.Changes.Add(@{ Record = $Record; Kind = $kind; Object = $object; Before = $current; Value = $value; Step = $Step })
    Set-CertsyncTlsValue -Context $Context -Kind $kind -Object $object -Value $value -Step $Step
    $after = Get-CertsyncTlsValue -Context $Context -Kind $kind -Object $object -Step $Step
    $Record['after'] = $after
    if (-not (Test-CertsyncSameTlsName -Left $after -Right $value)) {
        throw "Set the $kind '$object' to '$value', but it reads back as '$after'."
    }
    Set-CertsyncStepOutcome -Record $Record -Outcome 'done' -Before $current -After $after -Message 'set and read back'
}

function Invoke-CertsyncVerifyConnectors {
    param([hashtable]$Context, [object]$Step, [System.Collections.IDictionary]$Record)
    $problems = New-Object System.Collections.Generic.List[string]
    $notes = New-Object System.Collections.Generic.List[string]
    foreach ($item in @(Get-CertsyncField $Step 'object')) {
        $object = [string]$item
        $setStep = $Context.SetSteps[$object]
        $expected = [string](Get-CertsyncField $Step 'value')
        $kind = Get-CertsyncKind -Action '' -Object $object
        if ($null -ne $setStep) {
            $expected = [string](Get-CertsyncField $setStep 'value')
            $kind = Get-CertsyncKind -Action ([string](Get-CertsyncField $setStep 'action')) -Object $object
        }
        if ($kind -eq 'exo-inbound-connector' -and $Context.SkipExchangeOnline) {
            $notes.Add("$object not checked (-SkipExchangeOnline)")
            continue
        }
        if ($Context.WhatIf) { continue }
        $actual = Get-CertsyncTlsValue -Context $Context -Kind $kind -Object $object -Step $setStep
        if (-not (Test-CertsyncSameTlsName -Left $actual -Right $expected)) { $problems.Add("$kind '$object' is '$actual', expected '$expected'") }
    }
    if ($Context.WhatIf) {
        Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -After ([string](Get-CertsyncField $Step 'value')) -Message 'would read every changed object back'
        return
    }
    if ($problems.Count -gt 0) { throw ('Verification failed: {0}.' -f ($problems -join '; ')) }
    $message = 'every changed object reads back as planned'
    if ($notes.Count -gt 0) { $message = $message + ' (' + ($notes -join '; ') + ')' }
    Set-CertsyncStepOutcome -Record $Record -Outcome 'done' -After ([string](Get-CertsyncField $Step 'value')) -Message $message
}

function Find-CertsyncTlsNameReferences {
    # Which objects select this certificate by name (Test-CertsyncTlsNameSelects): the send connectors
    # (org-wide), this server's receive connectors, and the hybrid configuration. @{ Object; Label; Value }.
    param([string]$Server, [object]$Certificate)
    $references = New-Object System.Collections.Generic.List[object]
    foreach ($connector in @(Get-SendConnector -ErrorAction Stop)) {
        if (Test-CertsyncTlsNameSelects -Value $connector.TlsCertificateName -Certificate $Certificate) {
            $references.Add(@{ Object = [string]$connector.Identity; Label = "send connector '$($connector.Identity)'"; Value = (ConvertTo-CertsyncText $connector.TlsCertificateName) })
        }
    }
    $parameters = Get-CertsyncServerParameters -Server $Server
    foreach ($connector in @(Get-ReceiveConnector @parameters -ErrorAction Stop)) {
        if (Test-CertsyncTlsNameSelects -Value $connector.TlsCertificateName -Certificate $Certificate) {
            $references.Add(@{ Object = [string]$connector.Identity; Label = "receive connector '$($connector.Identity)'"; Value = (ConvertTo-CertsyncText $connector.TlsCertificateName) })
        }
    }
    $hybrid = Get-HybridConfiguration -ErrorAction Stop
    if ($null -ne $hybrid -and (Test-CertsyncTlsNameSelects -Value $hybrid.TlsCertificateName -Certificate $Certificate)) {
        $references.Add(@{ Object = 'HybridConfiguration'; Label = 'the hybrid configuration'; Value = (ConvertTo-CertsyncText $hybrid.TlsCertificateName) })
    }
    return $references.ToArray()
}

function Add-CertsyncKept {
    # A certificate retire leaves on a server: the step is "skipped" with "kept: <reason>", and the
    # result's kept[] lists {server, thumbprint, reason}.
    param([hashtable]$Context, [System.Collections.IDictionary]$Record, [string]$Server, [string]$Thumbprint, [string]$Reason)
    $Context.Kept.Add([ordered]@{ server = $Server; thumbprint = $Thumbprint; reason = (ConvertTo-CertsyncOneLine $Reason) })
    Set-CertsyncStepOutcome -Record $Record -Outcome 'skipped' -Before 'present' -After 'present' -Message "kept: $Reason"
}

function Invoke-CertsyncRetireCertificate {
    # retire-certificate (plan/1) and remove-certificate (plan/2). Removes the old certificate from a
    # server only when nothing loses its certificate by it (spec exchange-inventory.md section 2.5):
    #   - it is not that server's internal transport certificate;
    #   - it serves no service (IIS, POP, IMAP, UM, Federation ...) besides SMTP that the new certificate
    #     is not enabled for on that server (removing it would break OWA and mail clients);
    #   - every send connector, receive connector of that server or hybrid configuration that selects it
    #     by name also selects another installed, Valid, SMTP-enabled certificate there.
    # Otherwise it is kept (Add-CertsyncKept), also when Exchange refuses: a certificate left behind is
    # harmless, so this never fails the job.
    param([hashtable]$Context, [object]$Step, [System.Collections.IDictionary]$Record)
    $server = [string](Get-CertsyncField $Step 'server')
    $thumbprint = Get-CertsyncStepThumbprint -Context $Context -Step $Step
    $newThumbprint = ([string](Get-CertsyncField $Context.Certificate 'thumbprint')).ToUpperInvariant()
    try {
        $all = Get-CertsyncExchangeCertificates -Server $server
        $old = $null
        $new = $null
        foreach ($certificate in $all) {
            $each = ([string]$certificate.Thumbprint).ToUpperInvariant()
            if ($each -eq $thumbprint) { $old = $certificate }
            if ($each -eq $newThumbprint) { $new = $certificate }
        }
        if ($null -eq $old) {
            Set-CertsyncStepOutcome -Record $Record -Outcome 'already' -Before 'absent' -After 'absent' -Message "certificate $thumbprint is not on $server"
            return
        }
        $internal = Get-CertsyncInternalTransportThumbprint -Server $server
        if ($internal -eq $thumbprint) {
            Add-CertsyncKept -Context $Context -Record $Record -Server $server -Thumbprint $thumbprint -Reason "it is the internal transport certificate of $server"
            return
        }
        $newServices = @(Get-CertsyncServices -Certificate $new)
        $serving = @(Get-CertsyncServices -Certificate $old | Where-Object { $_ -ne 'SMTP' -and $newServices -notcontains $_ })
        if ($serving.Count -gt 0) {
            $services = $serving -join ', '
            Add-CertsyncKept -Context $Context -Record $Record -Server $server -Thumbprint $thumbprint -Reason ("it still serves {0} on {1}, which the new certificate {2} is not enabled for there; run Enable-ExchangeCertificate -Server {1} -Thumbprint {2} -Services {0}, then remove {3}" -f $services, $server, $newThumbprint, $thumbprint)
            return
        }
        $references = @(Find-CertsyncTlsNameReferences -Server $server -Certificate $old)
        if ($Context.WhatIf) {
            # Objects the plan's switch would move to a name that does not select it will not reference it any more.
            $references = @($references | Where-Object {
                    $setStep = $Context.SetSteps[$_.Object]
                    -not ($null -ne $setStep -and -not (Test-CertsyncTlsNameSelects -Value (Get-CertsyncField $setStep 'value') -Certificate $old))
                })
        }
        $orphaned = @($references | Where-Object {
                $value = $_.Value
                $successors = @($all | Where-Object {
                        ([string]$_.Thumbprint).ToUpperInvariant() -ne $thumbprint -and
                        [string]$_.Status -eq 'Valid' -and
                        (Test-CertsyncSmtpEnabled -Certificate $_) -and
                        (Test-CertsyncTlsNameSelects -Value $value -Certificate $_)
                    })
                $successors.Count -eq 0
            })
        if ($orphaned.Count -gt 0) {
            Add-CertsyncKept -Context $Context -Record $Record -Server $server -Thumbprint $thumbprint -Reason ('{0} still select it and no other valid SMTP certificate on {1} matches' -f ((@($orphaned | ForEach-Object { "$($_.Label) ($($_.Value))" })) -join ', '), $server)
            return
        }
        if ($Context.WhatIf) {
            Set-CertsyncStepOutcome -Record $Record -Outcome 'would-do' -Before 'present' -After 'removed' -Message "would remove certificate $thumbprint from $server"
            return
        }
        $parameters = Get-CertsyncServerParameters -Server $server
        Remove-ExchangeCertificate @parameters -Thumbprint $thumbprint -Confirm:$false -ErrorAction Stop
        Set-CertsyncStepOutcome -Record $Record -Outcome 'done' -Before 'present' -After 'removed' -Message "removed certificate $thumbprint from $server"
    } catch {
        $reason = Format-CertsyncError $_
        Write-Warning "Retiring certificate $thumbprint on ${server}: $reason"
        Add-CertsyncKept -Context $Context -Record $Record -Server $server -Thumbprint $thumbprint -Reason $reason
    }
}

function Invoke-CertsyncStep {
    param([hashtable]$Context, [object]$Step, [System.Collections.IDictionary]$Record)
    switch ([string](Get-CertsyncField $Step 'action')) {
        'install-intermediate' { Invoke-CertsyncInstallIntermediate -Context $Context -Step $Step -Record $Record }
        'import-certificate' { Invoke-CertsyncImportCertificate -Context $Context -Step $Step -Record $Record }
        'enable-smtp' { Invoke-CertsyncEnableServices -Context $Context -Step $Step -Record $Record -Services @('SMTP') }
        'enable-services' { Invoke-CertsyncEnableServices -Context $Context -Step $Step -Record $Record -Services (Get-CertsyncStepServices -Step $Step) }
        'check-name' { Invoke-CertsyncCheckName -Context $Context -Step $Step -Record $Record }
        'check-status' { Invoke-CertsyncCheckStatus -Context $Context -Step $Step -Record $Record -RequireSmtp $false }
        'set-send-connector' { Invoke-CertsyncSetTlsName -Context $Context -Step $Step -Record $Record }
        'set-receive-connector' { Invoke-CertsyncSetTlsName -Context $Context -Step $Step -Record $Record }
        'set-hybrid-configuration' { Invoke-CertsyncSetTlsName -Context $Context -Step $Step -Record $Record }
        'set-exo-inbound-connector' { Invoke-CertsyncSetTlsName -Context $Context -Step $Step -Record $Record }
        'verify-certificate' { Invoke-CertsyncCheckStatus -Context $Context -Step $Step -Record $Record -RequireSmtp $true }
        'verify-connectors' { Invoke-CertsyncVerifyConnectors -Context $Context -Step $Step -Record $Record }
        'retire-certificate' { Invoke-CertsyncRetireCertificate -Context $Context -Step $Step -Record $Record }
        'remove-certificate' { Invoke-CertsyncRetireCertificate -Context $Context -Step $Step -Record $Record }
        default { throw ("Plan step {0} has the unknown action '{1}'; update the runbook." -f (Get-CertsyncField $Step 'n'), (Get-CertsyncField $Step 'action')) }
    }
}

# ---------------------------------------------------------------------------------------------
# Phases, rollback, inventory
# ---------------------------------------------------------------------------------------------

function Test-CertsyncPhase {
    # The check after a phase. stage: the new certificate is Valid and SMTP-enabled on each staged
    # server, and each staged server renders its name as certsync does (Test-CertsyncServerName: also
    # for a plan/1 plan, which has no check-name step), so no connector is switched to a name Exchange
    # would not match. switch: every object changed in this run still reads back as set (nobody
    # changed it meanwhile). Returns $null or @{ Index; Message } naming the step to blame.
    param([hashtable]$Context, [string]$Phase)
    if ($Context.WhatIf) { return $null }
    $named = @{}
    for ($i = 0; $i -lt $Context.Steps.Count; $i++) {
        $step = $Context.Steps[$i]
        if ([string](Get-CertsyncField $step 'phase') -ne $Phase) { continue }
        $action = [string](Get-CertsyncField $step 'action')
        if ($Phase -ne 'stage' -or @('check-status', 'check-name') -notcontains $action) { continue }
        $server = [string](Get-CertsyncField $step 'server')
        $thumbprint = Get-CertsyncStepThumbprint -Context $Context -Step $step
        if ($action -eq 'check-status') {
            $certificate = Get-CertsyncExchangeCertificate -Server $server -Thumbprint $thumbprint
            if ($null -eq $certificate -or [string]$certificate.Status -ne 'Valid' -or -not (Test-CertsyncSmtpEnabled -Certificate $certificate)) {
                return @{ Index = $i; Message = "After staging, certificate $thumbprint on $server is not Valid and enabled for SMTP." }
            }
        }
        if ($named.ContainsKey($server)) { continue }
        $named[$server] = $true
        $entry = Test-CertsyncServerName -Context $Context -Server $server -Thumbprint $thumbprint
        if ($null -eq $entry) {
            return @{ Index = $i; Message = "After staging, certificate $thumbprint is not installed on $server." }
        }
        if (-not $entry['matches']) {
            return @{ Index = $i; Message = (Get-CertsyncNameMismatch -Entry $entry -Thumbprint $thumbprint) }
        }
    }
    if ($Phase -eq 'switch') {
        foreach ($change in $Context.Changes) {
            $actual = Get-CertsyncTlsValue -Context $Context -Kind $change.Kind -Object $change.Object -Step $change.Step
            if (-not (Test-CertsyncSameTlsName -Left $actual -Right $change.Value)) {
                $index = [int]$Context.Records.IndexOf($change.Record)
                return @{ Index = $index; Message = "After the switch, the $($change.Kind) '$($change.Object)' reads '$actual' instead of '$($change.Value)'; something else changed it." }
            }
        }
    }
    return $null
}

function Invoke-CertsyncPhaseCheck {
    # Test-CertsyncPhase, where an error while checking (RPC, permissions) is itself a failed check,
    # blamed on the phase's last step, so that it still leads to a rollback.
    param([hashtable]$Context, [string]$Phase, [int]$LastIndex)
    try {
        return (Test-CertsyncPhase -Context $Context -Phase $Phase)
    } catch {
        return @{ Index = $LastIndex; Message = ('Checking the {0} phase failed: {1}' -f $Phase, (Format-CertsyncError $_)) }
    }
}

function Undo-CertsyncChanges {
    # Restores every connector value this run changed, newest first. Imports and SMTP enablement
    # stay (harmless, and Exchange cannot disable a service); retire never ran.
    param([hashtable]$Context)
    $failures = $Context.RollbackFailures
    for ($i = $Context.Changes.Count - 1; $i -ge 0; $i--) {
        $change = $Context.Changes[$i]
        $record = $change.Record
        try {
            Set-CertsyncTlsValue -Context $Context -Kind $change.Kind -Object $change.Object -Value $change.Before -Step $change.Step
            $actual = Get-CertsyncTlsValue -Context $Context -Kind $change.Kind -Object $change.Object -Step $change.Step
            if (-not (Test-CertsyncSameTlsName -Left $actual -Right $change.Before)) { throw "it reads back as '$actual'" }
            $record['after'] = $actual
            if ($record['outcome'] -eq 'failed') {
                $record['message'] = ConvertTo-CertsyncOneLine ($record['message'] + " (restored to '$($change.Before)')")
            } else {
                Set-CertsyncStepOutcome -Record $record -Outcome 'rolled-back' -Message "restored to '$($change.Before)'"
            }
            Write-CertsyncLog "Rolled back the $($change.Kind) '$($change.Object)' to '$($change.Before)'."
        } catch {
            $reason = Format-CertsyncError $_
            $failures.Add("$($change.Kind) '$($change.Object)': $reason")
            $record['message'] = ConvertTo-CertsyncOneLine ($record['message'] + " (rollback to '$($change.Before)' failed: $reason)")
        }
    }
}

function Undo-CertsyncStaging {
    # After a failed name check: gives each service this run moved to the new certificate back to the
    # certificate that had it (SMTP needs nothing: the internal transport certificate never changed and
    # no connector was switched), then removes the certificates this run imported, newest first.
    # Intermediates stay (harmless). A certificate imported by an earlier run stays.
    param([hashtable]$Context)
    for ($i = $Context.Staged.Count - 1; $i -ge 0; $i--) {
        $change = $Context.Staged[$i]
        $record = $change.Record
        $parameters = Get-CertsyncServerParameters -Server $change.Server
        try {
            if ($change.Imported) {
                Remove-ExchangeCertificate @parameters -Thumbprint $change.Thumbprint -Confirm:$false -ErrorAction Stop
                $undone = "removed again from $($change.Server)"
            } else {
                foreach ($service in @($change.Holders.Keys)) {
                    Enable-ExchangeCertificate @parameters -Thumbprint $change.Holders[$service] -Services $service -Force -Confirm:$false -ErrorAction Stop
                }
                $undone = 'services given back: ' + ((@($change.Holders.Keys | ForEach-Object { '{0} to {1}' -f $_, $change.Holders[$_] })) -join ', ')
                if ($change.Holders.Count -eq 0) { $undone = 'nothing to give back' }
            }
            if ($record['outcome'] -ne 'failed') {
                Set-CertsyncStepOutcome -Record $record -Outcome 'rolled-back' -Before $record['before'] -After $record['before'] -Message $undone
            }
            Write-CertsyncLog "Rolled back staging on $($change.Server): $undone."
        } catch {
            $reason = Format-CertsyncError $_
            $Context.RollbackFailures.Add("staging of $($change.Thumbprint) on $($change.Server): $reason")
            $record['message'] = ConvertTo-CertsyncOneLine ($record['message'] + " (rollback failed: $reason)")
        }
    }
}

function Add-CertsyncInventory {
    param([hashtable]$Context, [object]$Server, [string]$Kind, [string]$Object, [object]$TlsName, [object]$Thumbprint, [object]$Status, [object]$Services)
    $serverValue = $null
    if ($Server) { $serverValue = [string]$Server }
    $Context.Inventory.Add([ordered]@{
            server               = $serverValue
            kind                 = $Kind
            object               = $Object
            tls_certificate_name = $(if ($null -ne $TlsName) { [string]$TlsName } else { $null })
            thumbprint           = $(if ($null -ne $Thumbprint) { [string]$Thumbprint } else { $null })
            status               = $(if ($null -ne $Status) { [string]$Status } else { $null })
            services             = $(if ($null -ne $Services) { [string]$Services } else { $null })
        })
}

function Get-CertsyncInventory {
    # What the targets look like after the run: each target connector's value and the new and old
    # certificates on each server. Best effort: a read that fails is a warning, not a failed job.
    param([hashtable]$Context)
    $seen = @{}
    foreach ($step in $Context.Steps) {
        $action = [string](Get-CertsyncField $step 'action')
        $objects = @()
        if ($action -like 'set-*') { $objects = @([string](Get-CertsyncField $step 'object')) }
        elseif ($action -eq 'verify-connectors') { $objects = @(Get-CertsyncField $step 'object' | ForEach-Object { [string]$_ }) }
        foreach ($object in $objects) {
            if ($seen.ContainsKey($object)) { continue }
            $seen[$object] = $true
            $setStep = $Context.SetSteps[$object]
            $kind = Get-CertsyncKind -Action $(if ($null -ne $setStep) { [string]$setStep.action } else { '' }) -Object $object
            if ($kind -eq 'exo-inbound-connector' -and -not $Context.ExoConnected) { continue }
            $server = $null
            if ($null -ne $setStep) { $server = Get-CertsyncField $setStep 'server' }
            try {
                $value = Get-CertsyncTlsValue -Context $Context -Kind $kind -Object $object -Step $setStep
                Add-CertsyncInventory -Context $Context -Server $server -Kind $kind -Object $object -TlsName $value
            } catch {
                Write-Warning ("Inventory: reading the {0} '{1}' failed: {2}" -f $kind, $object, (Format-CertsyncError $_))
            }
        }
    }
    $wanted = @(([string]$Context.Certificate.thumbprint).ToUpperInvariant()) + @(Get-CertsyncOldThumbprints -Context $Context)
    foreach ($server in @(Get-CertsyncField $Context.Plan 'servers')) {
        if (-not $server) { continue }
        try {
            foreach ($certificate in (Get-CertsyncExchangeCertificates -Server ([string]$server))) {
                $thumbprint = ([string]$certificate.Thumbprint).ToUpperInvariant()
                if ($wanted -notcontains $thumbprint) { continue }
                Add-CertsyncInventory -Context $Context -Server $server -Kind 'certificate' -Object $thumbprint -TlsName (Get-CertsyncCertificateTlsName -Certificate $certificate) -Thumbprint $thumbprint -Status ([string]$certificate.Status) -Services ([string]$certificate.Services)
            }
        } catch {
            Write-Warning ("Inventory: listing the certificates on {0} failed: {1}" -f $server, (Format-CertsyncError $_))
        }
    }
}

# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

function Invoke-CertsyncPlan {
    # Runs every step in order; sets $Context.Status (succeeded | failed | rolled-back | what-if),
    # $Context.Error and $Context.Inventory. Writes nothing to the Output stream.
    param([hashtable]$Context)
    $failure = $null
    $failedIndex = -1
    try {
        $phase = ''
        for ($i = 0; $i -lt $Context.Steps.Count; $i++) {
            $step = $Context.Steps[$i]
            $record = $Context.Records[$i]
            $stepPhase = [string](Get-CertsyncField $step 'phase')
            if ($phase -and $stepPhase -ne $phase) {
                $problem = Invoke-CertsyncPhaseCheck -Context $Context -Phase $phase -LastIndex ($i - 1)
                if ($null -ne $problem) {
                    $failedIndex = $problem.Index
                    $failure = $problem.Message
                    Set-CertsyncStepOutcome -Record $Context.Records[$failedIndex] -Outcome 'failed' -Message $failure
                    break
                }
            }
            $phase = $stepPhase
            Write-CertsyncLog ('Step {0} [{1}] {2} {3} {4}' -f $record['n'], $stepPhase, $record['action'], $record['server'], $record['object'])
            try {
                Invoke-CertsyncStep -Context $Context -Step $step -Record $record
            } catch {
                $message = Format-CertsyncError $_
                Set-CertsyncStepOutcome -Record $record -Outcome 'failed' -Message $message
            }
            if ($i -eq $Context.LastImportIndex) { Clear-CertsyncPfx -Context $Context }
            Write-CertsyncLog ('  -> {0}: {1}' -f $record['outcome'], $record['message'])
            if ($record['outcome'] -eq 'failed' -and $null -eq $failure) {
                $failedIndex = $i
                $failure = 'Step {0} ({1}{2}) failed: {3}' -f $record['n'], $record['action'], $(if ($record['server']) { ' on ' + $record['server'] } else { '' }), $record['message']
                if (-not $Context.WhatIf) { break }
            }
        }
        if ($null -eq $failure -and $phase) {
            $problem = Invoke-CertsyncPhaseCheck -Context $Context -Phase $phase -LastIndex ($Context.Steps.Count - 1)
            if ($null -ne $problem) {
                $failedIndex = $problem.Index
                $failure = $problem.Message
                Set-CertsyncStepOutcome -Record $Context.Records[$failedIndex] -Outcome 'failed' -Message $failure
            }
        }
        if ($Context.WhatIf) {
            $Context.Status = 'what-if'
            if ($null -ne $failure) { $Context.Error = ConvertTo-CertsyncOneLine $failure }
        } elseif ($null -eq $failure) {
            $Context.Status = 'succeeded'
        } else {
            $Context.Error = ConvertTo-CertsyncOneLine $failure
            for ($j = $failedIndex + 1; $j -lt $Context.Records.Count; $j++) {
                if ($Context.Records[$j]['outcome'] -eq 'skipped' -and $Context.Records[$j]['message'] -eq 'not run') {
                    $Context.Records[$j]['message'] = 'not run: an earlier step failed'
                }
            }
            $Context.Status = 'failed'
            $unstage = $Context.Staged.Count -gt 0 -and @($Context.ServerNames | Where-Object { -not $_['matches'] }).Count -gt 0
            if ($Context.Changes.Count -gt 0 -or $unstage) {
                if ($Context.Changes.Count -gt 0) {
                    Write-Warning "$($Context.Error) Rolling back $($Context.Changes.Count) connector value(s)."
                    Undo-CertsyncChanges -Context $Context
                }
                if ($unstage) {
                    Write-Warning "$($Context.Error) Rolling back $($Context.Staged.Count) staging change(s)."
                    Undo-CertsyncStaging -Context $Context
                }
                if ($Context.RollbackFailures.Count -eq 0) {
                    $Context.Status = 'rolled-back'
                } else {
                    $Context.Error = ConvertTo-CertsyncOneLine ('{0} Rollback failed for {1}.' -f $Context.Error, ($Context.RollbackFailures -join '; '))
                }
            }
        }
        try {
            Get-CertsyncInventory -Context $Context
        } catch {
            Write-Warning ('Inventory failed: {0}' -f (Format-CertsyncError $_))
        }
    } finally {
        Clear-CertsyncPfx -Context $Context
        Disconnect-CertsyncExchangeOnline -Context $Context
        $Context.Finished = Get-CertsyncUtcNow
    }
}

function ConvertTo-CertsyncResultJson {
    # The certsync.result/1 line. Arrays come from List.ToArray() so Windows PowerShell 5.1's
    # ConvertTo-Json writes them as arrays even with one element, and -Depth covers every level.
    param([hashtable]$Context)
    $certificate = $Context.Certificate
    $result = [ordered]@{
        schema         = 'certsync.result/1'
        job_id         = [string]$Context.JobId
        correlation_id = [string]$Context.CorrelationId
        certificate    = [ordered]@{
            vault      = [string](Get-CertsyncField $certificate 'vault')
            name       = [string](Get-CertsyncField $certificate 'name')
            version    = [string](Get-CertsyncField $certificate 'version')
            thumbprint = [string](Get-CertsyncField $certificate 'thumbprint')
        }
        status         = [string]$Context.Status
        error          = $(if ($Context.Error) { [string]$Context.Error } else { $null })
        worker         = [string]$Context.Worker
        started        = [string]$Context.Started
        finished       = [string]$Context.Finished
        steps          = [object[]]$Context.Records.ToArray()
        inventory      = [object[]]$Context.Inventory.ToArray()
        server_names   = [object[]]$Context.ServerNames.ToArray()
        kept           = [object[]]$Context.Kept.ToArray()
    }
    return (ConvertTo-Json -InputObject $result -Depth 8 -Compress)
}

function New-CertsyncWebhookHeaders {
    # Standard Webhooks v1 (shared/notify/signing.py): HMAC-SHA256 over "<id>.<timestamp>.<body bytes>" with
    # each whsec_ secret (several, space separated, while one is rotated), base64, "v1," prefix.
    param([string]$MessageId, [long]$Timestamp, [byte[]]$Body, [string]$SigningSecrets)
    $prefix = [System.Text.Encoding]::UTF8.GetBytes(('{0}.{1}.' -f $MessageId, $Timestamp))
    [byte[]]$signed = $prefix + $Body
    $signatures = New-Object System.Collections.Generic.List[string]
    foreach ($item in ($SigningSecrets -split '[\s,]+')) {
        if (-not $item) { continue }
        if (-not $item.StartsWith('whsec_')) { throw 'The Key Vault secret certsync-callback-secret must hold whsec_ secrets.' }
        $hmac = New-Object System.Security.Cryptography.HMACSHA256
        try {
            $hmac.Key = [System.Convert]::FromBase64String($item.Substring(6))
            $signatures.Add('v1,' + [System.Convert]::ToBase64String($hmac.ComputeHash($signed)))
        } finally {
            $hmac.Dispose()
        }
    }
    if ($signatures.Count -eq 0) { throw 'The Key Vault secret certsync-callback-secret is empty.' }
    return @{
        'webhook-id'        = $MessageId
        'webhook-timestamp' = [string]$Timestamp
        'webhook-signature' = ($signatures -join ' ')
    }
}

function Send-CertsyncCallback {
    # POSTs the result line, signed, to the callback function. Its key and signing secret come from
    # the certificate's vault with the worker's identity. Failure is a warning: polling still works.
    param([hashtable]$Context, [string]$Url, [string]$Json)
    try {
        $target = $null
        if (-not [System.Uri]::TryCreate($Url, [System.UriKind]::Absolute, [ref]$target) -or $target.Scheme -ne 'https') {
            throw 'CallbackUrl is not an https URL'
        }
        $vault = Get-CertsyncVaultEndpoint -SecretId ([string]$Context.Certificate.secret_id) -VaultName ([string]$Context.Certificate.vault)
        $accessToken = Get-CertsyncManagedIdentityToken -Resource $vault.Resource
        $functionKey = [string](Get-CertsyncKeyVaultSecret -SecretUri ($vault.Base + '/secrets/certsync-callback-key') -AccessToken $accessToken).value
        $signingSecrets = [string](Get-CertsyncKeyVaultSecret -SecretUri ($vault.Base + '/secrets/certsync-callback-secret') -AccessToken $accessToken).value
        $accessToken = $null
        $body = [System.Text.Encoding]::UTF8.GetBytes($Json)
        $headers = New-CertsyncWebhookHeaders -MessageId ('{0}-result' -f $Context.JobId) -Timestamp ([DateTimeOffset]::UtcNow.ToUnixTimeSeconds()) -Body $body -SigningSecrets $signingSecrets
        $signingSecrets = $null
        $headers['x-functions-key'] = $functionKey
        $functionKey = $null
        # The body goes as bytes: a string body would be re-encoded (ISO-8859-1 in 5.1) and no longer
        # match what was signed.
        $null = Invoke-RestMethod -Method Post -Uri $Url -Headers $headers -Body $body -ContentType 'application/json' -UseBasicParsing -TimeoutSec 60 -ErrorAction Stop
        Write-CertsyncLog "Posted the result to $($target.GetLeftPart([System.UriPartial]::Path))."
    } catch {
        Write-Warning ('The result callback failed ({0}); the tracker will still read the result from the job output.' -f (Format-CertsyncError $_))
    }
}

function Invoke-CertsyncMain {
    # The one place that writes Output: the result line, last. Then, if the run did not succeed,
    # throws so the Automation job ends Failed with the same one-line error.
    param(
        [string]$PlanJson,
        [string]$PlanFile,
        [string]$CorrelationId,
        [string]$JobId,
        [string]$CallbackUrl,
        [string]$PfxPath,
        [string]$ExoOrganization,
        [bool]$SkipExchangeOnline,
        [bool]$WhatIfMode,
        [string]$ExchangeLoadError
    )
    $ErrorActionPreference = 'Stop'
    $inAutomation = Test-CertsyncInAutomation -PlanJsonGiven ([bool]$PlanJson)
    $script:CertsyncLogToVerbose = $inAutomation
    $context = $null
    $parsed = $null
    $started = Get-CertsyncUtcNow
    try {
        if ($inAutomation -and ($PfxPath -or $PlanFile)) {
            throw '-PlanFile and -PfxPath are for standalone use; an Automation job passes -PlanJson and the runbook reads the PFX from Key Vault.'
        }
        if ($PfxPath -and -not $PlanFile) { throw '-PfxPath needs -PlanFile (standalone use).' }
        $parsed = ConvertFrom-CertsyncPlan -Text (Read-CertsyncPlanText -PlanJson $PlanJson -PlanFile $PlanFile)
        if (-not $JobId) { $JobId = $parsed.JobId }
        if (-not $JobId) { $JobId = [guid]::NewGuid().ToString('N') }
        if ($JobId -notmatch '^[0-9a-fA-F]{32}$') { throw "JobId '$JobId' is not a certsync job id (32 hex digits)." }
        if (-not $CorrelationId) { $CorrelationId = $parsed.CorrelationId }
        if (-not $CorrelationId) { $CorrelationId = $JobId }
        $context = New-CertsyncContext -Plan $parsed.Plan -JobId $JobId -CorrelationId $CorrelationId -WhatIfMode $WhatIfMode -SkipExchangeOnline $SkipExchangeOnline -ExoOrganization $ExoOrganization -PfxPath $PfxPath -InAutomation $inAutomation
        $context.Started = $started
        Write-CertsyncLog ('certsync job {0}: {1} ({2} step(s)){3}' -f $JobId, [string](Get-CertsyncField $parsed.Plan 'summary'), $context.Steps.Count, $(if ($WhatIfMode) { ' [WhatIf: nothing changes]' } else { '' }))
        Assert-CertsyncExchangeLoaded -LoadError $ExchangeLoadError
        # Anything a step lets slip into the pipeline is dropped here: Output is the result line only.
        $stray = @(Invoke-CertsyncPlan -Context $context)
        if ($stray.Count -gt 0) { Write-Verbose "Dropped $($stray.Count) unexpected output object(s)." }
    } catch {
        $message = Format-CertsyncError $_
        if ($null -eq $context) {
            $context = New-CertsyncContext -Plan $null -JobId $JobId -CorrelationId $CorrelationId -WhatIfMode $WhatIfMode
            $context.Started = $started
            if ($null -ne $parsed) { $context.Certificate = Get-CertsyncField $parsed.Plan 'certificate' }
        } else {
            Clear-CertsyncPfx -Context $context
        }
        $context.Status = 'failed'
        $context.Error = $message
        $context.Finished = Get-CertsyncUtcNow
    }
    $json = ConvertTo-CertsyncResultJson -Context $context
    Write-Output $json
    if ($CallbackUrl) { Send-CertsyncCallback -Context $context -Url $CallbackUrl -Json $json }
    if ($context.Status -eq 'failed' -or $context.Status -eq 'rolled-back') {
        throw ('certsync {0}: {1}' -f $context.Status, $context.Error)
    }
}

# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

if (-not $LoadOnly) {
    # -WhatIf is honoured by the run's own flag; the preference is reset so that Exchange loading and
    # Exchange Online sign-in, which are not changes, are not turned into no-ops.
    $certsyncWhatIf = [bool]$WhatIfPreference
    $WhatIfPreference = $false
    $certsyncExchangeLoadError = ''
    # RemoteExchange.ps1 is dot-sourced here, at script scope, so its session outlives any function.
    try {
        $certsyncRemoteExchange = Find-CertsyncRemoteExchangeScript
        if ($certsyncRemoteExchange) {
            $null = . $certsyncRemoteExchange
            $null = Connect-ExchangeServer -auto -ClientApplication:ManagementShell
        }
    } catch {
        $certsyncExchangeLoadError = Format-CertsyncError $_
    }
    Invoke-CertsyncMain -PlanJson $PlanJson -PlanFile $PlanFile -CorrelationId $CorrelationId -JobId $JobId -CallbackUrl $CallbackUrl -PfxPath $PfxPath -ExoOrganization $ExoOrganization -SkipExchangeOnline ([bool]$SkipExchangeOnline) -WhatIfMode $certsyncWhatIf -ExchangeLoadError $certsyncExchangeLoadError
}
