<#
.SYNOPSIS
    Executes a certsync.plan/2 on Exchange Server, step by step, journaled, and rolls back exactly.
.DESCRIPTION
    The planner decided everything; this runs the plan's steps in order, one handler per action
    (Get-CertsyncHandlers). Every write is compare-and-set (read; equal to `previous` -> write `value`, read
    back; already `value` -> "already"; else "conflict": stop and roll back). Each step is journaled before
    ("intent") and after ("outcome") to $env:ProgramData\certsync\journal\<JobId>.jsonl and the signed
    callback; a restarted job runs again from its journal. A rollback reverses every write newest first,
    removes what was staged and restores the internal transport certificate. Exchange is reached by remote
    PowerShell as the Run As account (no snap-in); Edge steps run on the Edge server's own worker. Output:
    one line, certsync.result/1. No secret reaches a log, the journal or the result. See docs/runbook.md.
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    # Azure Automation job parameters (shared/pipeline/contract.py JOB_PARAMETERS)
    [string]$PlanBase64 = '',
    [string]$CorrelationId = '',
    [string]$JobId = '',
    [string]$CallbackUrl = '',
    # Local only: a plan file instead of PlanBase64; load the functions only (Pester)
    [string]$PlanFile = '',
    [switch]$LoadOnly
)

# --- the contract and the dispatch table -------------------------------------------------------------
function Get-CertsyncContract {
    # shared/pipeline/contract.py, as the runbook checks it (tests/test_runbook_contract.py compares them).
    return @{ PlanSchema = 'certsync.plan/2'; JournalSchema = 'certsync.journal/1'; RequiredStatus = 'Valid'; ContentTypes = @('application/x-pkcs12'); Role = 'certsync Remediation' }
}

function Get-CertsyncHandlers {
    # One handler per action; nothing else dispatches.
    return @{
        'install-intermediate'      = 'Invoke-CertsyncInstallIntermediate'
        'import-certificate'        = 'Invoke-CertsyncImportCertificate'
        'enable-services'           = 'Invoke-CertsyncEnableServices'
        'check-name'                = 'Invoke-CertsyncCheckName'
        'set-send-connector'        = 'Invoke-CertsyncSetSendConnector'
        'set-receive-connector'     = 'Invoke-CertsyncSetReceiveConnector'
        'set-hybrid-configuration'  = 'Invoke-CertsyncSetHybridConfiguration'
        'set-exo-inbound-connector' = 'Invoke-CertsyncSetExoInboundConnector'
        'check-status'              = 'Invoke-CertsyncCheckStatus'
        'remove-certificate'        = 'Invoke-CertsyncRemoveCertificate'
        'remove-intermediate'       = 'Invoke-CertsyncRemoveIntermediate'
        'restart-transport'         = 'Invoke-CertsyncRestartTransport'
        'probe-receive-connector'   = 'Invoke-CertsyncProbeReceiveConnector'
        'test-outbound'             = 'Invoke-CertsyncTestOutbound'
    }
}

# --- small helpers -----------------------------------------------------------------------------------
function Get-CertsyncField {
    param([object]$Object, [string]$Name)
    if ($null -eq $Object) { return $null }
    if ($Object -is [System.Collections.IDictionary]) { return $Object[$Name] }
    return $(if ($null -ne $Object.PSObject.Properties[$Name]) { $Object.PSObject.Properties[$Name].Value } else { $null })
}

function Format-CertsyncError {
    param([object]$ErrorRecord)
    $message = $(if ($null -ne $ErrorRecord.Exception -and $ErrorRecord.Exception.Message) { $ErrorRecord.Exception.Message } else { [string]$ErrorRecord })
    return (($message -replace '\s+', ' ').Trim())
}

function Get-CertsyncUtcNow {
    return [DateTime]::UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", [System.Globalization.CultureInfo]::InvariantCulture)
}

function Write-CertsyncLog {
    param([string]$Message)
    Write-Verbose -Message $Message -Verbose  # Automation records Verbose ("Log verbose records"), not Information
}

function Test-CertsyncSame {
    # Exchange's rule for the values it compares (TlsCertificateName, services, states): text equal,
    # case ignored, same order. Empty and $null are the same.
    param([object]$Left, [object]$Right)
    return [string]::Equals([string]$Left, [string]$Right, [System.StringComparison]::OrdinalIgnoreCase)
}

function ConvertTo-CertsyncServices {
    # A services value (a JSON array from the plan, or Exchange's "IMAP, POP, IIS, SMTP") as one sorted text.
    param([object]$Value)
    $names = @(@($Value) | ForEach-Object { [string]$_ -split ',' } | ForEach-Object { $_.Trim().ToUpperInvariant() } | Where-Object { $_ -and $_ -ne 'NONE' } | Sort-Object -Unique)
    return $(if ($names.Count -eq 0) { 'None' } else { $names -join ', ' })
}

function Get-CertsyncServerParameters {
    # Steps on an Edge server run locally (no -Server); others name their server.
    param([object]$Step)
    $parameters = @{}
    if (-not (Get-CertsyncField $Step 'edge') -and (Get-CertsyncField $Step 'server')) { $parameters['Server'] = [string]$Step.server }
    return $parameters
}

# --- the plan ----------------------------------------------------------------------------------------
function Read-CertsyncPlan {
    # -PlanBase64: base64 of the plan's UTF-8 JSON text (Automation decodes JSON-looking parameter values,
    # so the plan cannot travel as JSON text). -PlanFile: the same JSON in a file (local use).
    param([string]$Encoded, [string]$PlanFile)
    if ([bool]$Encoded -eq [bool]$PlanFile) { throw 'Give the plan as -PlanBase64 (Automation) or as -PlanFile (local use).' }
    if ($PlanFile) { $text = [System.IO.File]::ReadAllText((Resolve-Path -LiteralPath $PlanFile -ErrorAction Stop).ProviderPath, [System.Text.Encoding]::UTF8) }
    else { try { $text = [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String($Encoded)) } catch { throw 'PlanBase64 is not base64; certsync sends the plan as base64 of its UTF-8 JSON text.' } }
    try { $plan = ConvertFrom-Json -InputObject $text -ErrorAction Stop } catch { throw ('The plan is not JSON ({0}).' -f (Format-CertsyncError $_)) }
    $contract = Get-CertsyncContract
    $schema = [string](Get-CertsyncField $plan 'schema')
    if ($schema -ne $contract.PlanSchema) { throw ("The plan's schema is '{0}'; this runbook runs {1} only: let certsync plan the renewal again." -f $schema, $contract.PlanSchema) }
    if ($null -ne ($blocked = Get-CertsyncField $plan 'blocked')) { throw ('The plan is blocked ({0}); certsync does not run blocked plans: {1}.' -f $blocked.reason, $blocked.fix) }
    foreach ($step in @(Get-CertsyncField $plan 'steps') | Where-Object { -not (Get-CertsyncHandlers).ContainsKey([string]$_.action) }) {
        throw ("Plan step {0} has the action '{1}', which this runbook has no handler for: publish the current infra/runbooks/Invoke-CertsyncRemediation.ps1." -f $step.n, $step.action)
    }
    return $plan
}

function New-CertsyncContext {
    # Everything one run needs and records, passed to every function (Pester builds one directly).
    param([object]$Plan, [string]$JobId, [string]$CorrelationId, [bool]$WhatIfMode = $false, [string]$CallbackUrl = '')
    $steps = @(@(Get-CertsyncField $Plan 'steps') | Where-Object { $null -ne $_ })
    for ($i = 0; $i -lt $steps.Count; $i++) { if ($null -eq (Get-CertsyncField $steps[$i] 'n')) { $steps[$i] | Add-Member -NotePropertyName 'n' -NotePropertyValue ($i + 1) } }
    $records = New-Object System.Collections.Generic.List[object]
    foreach ($step in $steps) { $records.Add((New-CertsyncStepRecord -Step $step)) }
    return @{
        Plan = $Plan; Certificate = (Get-CertsyncField $Plan 'certificate'); Steps = $steps; Records = $records
        JobId = $JobId; CorrelationId = $CorrelationId; WhatIf = $WhatIfMode; CallbackUrl = $CallbackUrl
        Written = New-Object System.Collections.Generic.List[object]; Holders = @{}; Kept = New-Object System.Collections.Generic.List[object]; ServerNames = New-Object System.Collections.Generic.List[object]
        Seq = 0; Journal = ''; Earlier = @{}; Resume = ''; Pending = $null; Tenant = ''; Pfx = $null; Signing = $null; Session = $null
        Status = ''; Error = $null; Worker = [string]$env:COMPUTERNAME; Started = (Get-CertsyncUtcNow); Finished = ''
    }
}

function New-CertsyncStepRecord {
    # certsync.result/1 steps[]: "not run" until the step runs.
    param([object]$Step, [string]$Outcome = 'skipped', [string]$Message = 'not run')
    $server = [string](Get-CertsyncField $Step 'server')
    return [ordered]@{ n = [int](Get-CertsyncField $Step 'n'); action = [string](Get-CertsyncField $Step 'action'); server = $(if ($server) { $server } else { $null })
        object = [string](Get-CertsyncField $Step 'object'); before = $null; after = $null; outcome = $Outcome; message = $Message }
}

# --- identity: remote PowerShell as the Run As account, Exchange Online per tenant -------------------
function Connect-CertsyncExchange {
    # Remote PowerShell to the first of the plan's servers that answers (Kerberos, as the worker group's Run
    # As credential), so Exchange RBAC applies. Edge steps run in the Edge server's own local shell.
    param([hashtable]$Context)
    $steps = @($Context.Steps | Where-Object { -not (Get-CertsyncField $_ 'manual') -and $_.action -ne 'set-exo-inbound-connector' })
    $edge = @($steps | Where-Object { Get-CertsyncField $_ 'edge' })
    if ($edge.Count -gt 0) {
        $elsewhere = @($edge | Where-Object { ([string]$_.server).Split('.')[0] -ne $env:COMPUTERNAME }).Count
        if ($edge.Count -ne $steps.Count -or $elsewhere -gt 0) { throw ("An Edge server's steps run on that Edge server's own worker only, alone in their job; this job runs on {0}: let certsync queue the Edge steps to the Edge server's worker group." -f $env:COMPUTERNAME) }
        $shell = Join-Path -Path ([string]$env:ExchangeInstallPath) -ChildPath 'bin\RemoteExchange.ps1'
        if (-not (Test-Path -LiteralPath $shell -PathType Leaf)) { throw "The Exchange Management Shell is not installed on the Edge server $env:COMPUTERNAME ($shell)." }
        $null = . $shell
        $null = Connect-ExchangeServer -auto -ClientApplication:ManagementShell
    } elseif ($steps.Count -gt 0) {
        $errors = New-Object System.Collections.Generic.List[string]
        foreach ($server in @(Get-CertsyncField $Context.Plan 'servers')) {
            try { $Context.Session = New-PSSession -ConfigurationName 'Microsoft.Exchange' -ConnectionUri ('http://{0}/PowerShell/' -f $server) -Authentication Kerberos -ErrorAction Stop }
            catch { $errors.Add(('{0}: {1}' -f $server, (Format-CertsyncError $_))); continue }
            Import-Module (Import-PSSession -Session $Context.Session -DisableNameChecking -AllowClobber -ErrorAction Stop) -Global -DisableNameChecking
            break
        }
        if ($null -eq $Context.Session) { throw ('No remote PowerShell session to Exchange ({0}); give the Hybrid worker group a Run As credential that Exchange RBAC admits (docs/runbook.md).' -f ($errors -join '; ')) }
        Assert-CertsyncCmdlets  # (an Edge server has no RBAC, and no organisation cmdlets to check)
    }
}

function Assert-CertsyncCmdlets {
    # RBAC shows a session only the cmdlets its roles grant: a missing one names the role to assign.
    $needed = @('Get-ExchangeCertificate', 'Import-ExchangeCertificate', 'Enable-ExchangeCertificate', 'Remove-ExchangeCertificate', 'Get-TransportService', 'Get-SendConnector', 'Set-SendConnector', 'Get-ReceiveConnector', 'Set-ReceiveConnector', 'Get-HybridConfiguration', 'Set-HybridConfiguration', 'Get-Queue')
    $missing = @($needed | Where-Object { $null -eq (Get-Command -Name $_ -ErrorAction SilentlyContinue) })
    if ($missing.Count -gt 0) { throw ("The Run As account's Exchange session has no {0}: add it to the role group '{1}' (docs/runbook.md)." -f ($missing -join ', '), (Get-CertsyncContract).Role) }
}

function Connect-CertsyncTenant {
    # Exchange Online, once per tenant the plan names (never guessed); prefix "Certsync": no on-premises cmdlet shadowed.
    param([hashtable]$Context, [object]$Step)
    $tenant = [string](Get-CertsyncField $Step 'tenant')
    if (-not $tenant) { throw ("Plan step {0} ({1}) names no Exchange Online tenant; certsync never guesses one: plan again." -f $Step.n, $Step.action) }
    if ($Context.Tenant -eq $tenant) { return }
    if ($Context.Tenant) { Disconnect-ExchangeOnline -Confirm:$false -ErrorAction Stop }
    $null = Connect-ExchangeOnline -ManagedIdentity -Organization $tenant -Prefix 'Certsync' -ShowBanner:$false -ErrorAction Stop
    $Context.Tenant = $tenant
}

# --- Key Vault with the worker's managed identity ----------------------------------------------------
function Get-CertsyncVaultEndpoint {
    # Only Key Vault hosts: a plan can never send the worker's token anywhere else.
    param([string]$SecretId)
    $uri = $null; if (-not [System.Uri]::TryCreate($SecretId, [System.UriKind]::Absolute, [ref]$uri) -or $uri.Scheme -ne 'https') { throw "The plan's certificate.secret_id '$SecretId' is not an https URL of a Key Vault secret." }
    $suffix = $uri.Host.Substring($uri.Host.IndexOf('.') + 1).ToLowerInvariant()
    if (@('vault.azure.net', 'vault.azure.cn', 'vault.usgovcloudapi.net') -notcontains $suffix) { throw "The plan's certificate.secret_id host '$($uri.Host)' is not a Key Vault host." }
    return @{ Base = 'https://' + $uri.Host; Resource = 'https://' + $suffix }
}

function Get-CertsyncManagedIdentityToken {
    # A token from the machine's managed identity: Azure Arc (HIMDS with its key-file challenge) or Azure VM IMDS.
    param([string]$Resource)
    [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12
    $encoded = [System.Uri]::EscapeDataString($Resource)
    if (-not $env:IDENTITY_ENDPOINT) { return [string](Invoke-RestMethod -Uri ('http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource={0}' -f $encoded) -Headers @{ Metadata = 'true' } -UseBasicParsing -TimeoutSec 30 -ErrorAction Stop).access_token }
    $uri = '{0}?api-version=2020-06-01&resource={1}' -f $env:IDENTITY_ENDPOINT, $encoded
    $challenge = ''; try { $null = Invoke-WebRequest -Uri $uri -Headers @{ Metadata = 'true' } -UseBasicParsing -ErrorAction Stop } catch [System.Net.WebException] { $challenge = [string]$_.Exception.Response.Headers['WWW-Authenticate'] }
    $tokens = Join-Path -Path $env:ProgramData -ChildPath 'AzureConnectedMachineAgent\Tokens\'
    $realm = ($challenge -split 'realm=', 2)[-1].Trim()
    if (-not $realm.StartsWith($tokens, [System.StringComparison]::OrdinalIgnoreCase) -or -not $realm.EndsWith('.key', [System.StringComparison]::OrdinalIgnoreCase)) { throw "The Azure Arc identity endpoint sent no key-file challenge under $tokens; is this an Arc-enabled server?" }
    $challengeKey = [System.IO.File]::ReadAllText($realm)
    try { return [string](Invoke-RestMethod -Uri $uri -Headers @{ Metadata = 'true'; Authorization = 'Basic ' + $challengeKey } -UseBasicParsing -ErrorAction Stop).access_token } finally { $challengeKey = $null }
}

function Read-CertsyncVaultSecret {
    # GET a Key Vault secret with a token of the worker's managed identity; errors name the URL, never the token.
    param([string]$SecretUri)
    $accessToken = Get-CertsyncManagedIdentityToken -Resource (Get-CertsyncVaultEndpoint -SecretId $SecretUri).Resource
    try { return Invoke-RestMethod -Uri ($SecretUri + '?api-version=7.4') -Headers @{ Authorization = 'Bearer ' + $accessToken } -UseBasicParsing -TimeoutSec 60 -ErrorAction Stop }
    catch { throw ('Reading {0} from Key Vault failed ({1}); the worker identity needs the Key Vault Secrets User role on the vault.' -f $SecretUri, (Format-CertsyncError $_)) }
    finally { $accessToken = $null }
}

function Read-CertsyncPfx {
    # The PFX in memory only ($Context.Pfx, zeroed after the run); a content type the contract does not accept is refused.
    param([hashtable]$Context)
    $secret = Read-CertsyncVaultSecret -SecretUri ([string]$Context.Certificate.secret_id)
    if ((Get-CertsyncContract).ContentTypes -notcontains ($contentType = [string]$secret.contentType)) {
        throw ("The Key Vault secret {0} holds '{1}', not a PFX: create the certificate with content type application/x-pkcs12 and exportable: true." -f $Context.Certificate.secret_id, $contentType)
    }
    $Context.Pfx = [System.Convert]::FromBase64String([string]$secret.value)
    $secret = $null
}

function Read-CertsyncSigning {
    # The callback's function key and whsec_ signing secrets, from the certificate's vault; read once.
    param([hashtable]$Context)
    if ($null -eq $Context.Signing) {
        $base = (Get-CertsyncVaultEndpoint -SecretId ([string]$Context.Certificate.secret_id)).Base
        $Context.Signing = @{ Key = [string](Read-CertsyncVaultSecret -SecretUri "$base/secrets/certsync-callback-key").value; Secrets = [string](Read-CertsyncVaultSecret -SecretUri "$base/secrets/certsync-callback-secret").value }
    }
    return $Context.Signing
}

# --- the signed callback and the journal -------------------------------------------------------------
function New-CertsyncWebhookHeaders {
    # Standard Webhooks v1 (shared/notify/signing.py): HMAC-SHA256 over "<id>.<timestamp>.<body>" per whsec_ secret.
    param([string]$MessageId, [long]$Timestamp, [byte[]]$Body, [string]$SigningSecrets)
    [byte[]]$signed = [System.Text.Encoding]::UTF8.GetBytes(('{0}.{1}.' -f $MessageId, $Timestamp)) + $Body
    $signatures = @(foreach ($item in ($SigningSecrets -split '[\s,]+' | Where-Object { $_ })) {
            if (-not $item.StartsWith('whsec_')) { throw 'The Key Vault secret certsync-callback-secret must hold whsec_ secrets.' }
            $hmac = New-Object System.Security.Cryptography.HMACSHA256(, [System.Convert]::FromBase64String($item.Substring(6)))
            try { 'v1,' + [System.Convert]::ToBase64String($hmac.ComputeHash($signed)) } finally { $hmac.Dispose() }
        })
    if ($signatures.Count -eq 0) { throw 'The Key Vault secret certsync-callback-secret is empty.' }
    return @{ 'webhook-id' = $MessageId; 'webhook-timestamp' = [string]$Timestamp; 'webhook-signature' = ($signatures -join ' ') }
}

function Send-CertsyncCallback {
    # POSTs a JSON body, signed, to the job's callback URL. A failure is a warning: the journal file and
    # the job's Output stay, and certsync reads the journal when a job ends without a result.
    param([hashtable]$Context, [string]$MessageId, [string]$Json)
    if (-not $Context.CallbackUrl -or $Context.WhatIf) { return }
    try {
        if (-not $Context.CallbackUrl.StartsWith('https://', [System.StringComparison]::OrdinalIgnoreCase)) { throw 'CallbackUrl is not an https URL' }
        $signing = Read-CertsyncSigning -Context $Context
        $body = [System.Text.Encoding]::UTF8.GetBytes($Json)
        $headers = New-CertsyncWebhookHeaders -MessageId $MessageId -Timestamp ([DateTimeOffset]::UtcNow.ToUnixTimeSeconds()) -Body $body -SigningSecrets $signing.Secrets
        $headers['x-functions-key'] = $signing.Key
        # Bytes, not a string: Windows PowerShell would re-encode a string and break the signature.
        $null = Invoke-RestMethod -Method Post -Uri $Context.CallbackUrl -Headers $headers -Body $body -ContentType 'application/json' -UseBasicParsing -TimeoutSec 60 -ErrorAction Stop
    } catch { Write-Warning ('The callback {0} failed ({1}).' -f $MessageId, (Format-CertsyncError $_)) }
}

function Get-CertsyncJournalPath {
    param([string]$JobId)
    return (Join-Path -Path $env:ProgramData -ChildPath ('certsync\journal\{0}.jsonl' -f $JobId))
}

function Open-CertsyncJournal {
    # An existing journal (the job restarted): its seq continues; the writes it records intents for are this
    # job's, so a rollback reverses them although this run reads them as "already"; a rollback it records
    # as begun is finished rather than the plan run again.
    param([hashtable]$Context)
    $Context.Journal = Get-CertsyncJournalPath -JobId $Context.JobId
    if (-not (Test-Path -LiteralPath $Context.Journal -PathType Leaf)) { return $false }
    foreach ($entry in @([System.IO.File]::ReadAllLines($Context.Journal, [System.Text.Encoding]::UTF8) | Where-Object { $_.Trim() } | ForEach-Object { ConvertFrom-Json -InputObject $_ })) {
        $Context.Seq = [Math]::Max($Context.Seq, [int]$entry.seq)
        if ($entry.rollback) { $Context.Resume = 'rollback' }
        elseif ($entry.event -eq 'intent') { $Context.Earlier[[int]$entry.n] = $entry; if ($entry.action -eq 'enable-services') { $Context.Holders[[int]$entry.n] = [string]$entry.message } }
    }
    if (-not $Context.Resume) { $Context.Resume = 'run' }
    Write-CertsyncLog ('Resuming job {0} ({1}): its journal has {2} entries.' -f $Context.JobId, $Context.Resume, $Context.Seq)
    return $true
}

function Write-CertsyncJournal {
    # One entry: appended to the journal file and flushed before the step goes on, then posted.
    param([hashtable]$Context, [object]$Step, [string]$Kind, [string]$Outcome = $null, [object]$Before = $null, [object]$After = $null, [string]$Message = '', [bool]$Rollback = $false)
    if ($Context.WhatIf) { return }
    $Context.Seq++
    $entry = [ordered]@{
        schema = (Get-CertsyncContract).JournalSchema; job = $Context.JobId; seq = $Context.Seq; n = [int]$Step.n
        action = [string]$Step.action; server = (Get-CertsyncField $Step 'server'); object = [string]$Step.object
        property = (Get-CertsyncField $Step 'property'); event = $Kind; outcome = $(if ($Outcome) { $Outcome } else { $null })
        before = $(if ($null -ne $Before) { [string]$Before } else { $null }); after = $(if ($null -ne $After) { [string]$After } else { $null })
        message = $Message; at = (Get-CertsyncUtcNow); rollback = $Rollback
    }
    $null = New-Item -ItemType Directory -Path ([System.IO.Path]::GetDirectoryName($Context.Journal)) -Force
    $stream = New-Object System.IO.FileStream($Context.Journal, [System.IO.FileMode]::Append, [System.IO.FileAccess]::Write, [System.IO.FileShare]::Read)
    $bytes = [System.Text.Encoding]::UTF8.GetBytes((ConvertTo-Json -InputObject $entry -Depth 3 -Compress) + "`n")
    try { $stream.Write($bytes, 0, $bytes.Length); $stream.Flush($true) } finally { $stream.Dispose() }
    Send-CertsyncCallback -Context $Context -MessageId ('{0}-journal-{1}' -f $Context.JobId, $Context.Seq) -Json (ConvertTo-Json -Depth 4 -Compress -InputObject ([ordered]@{ schema = $entry.schema; job_id = $Context.JobId; certificate = [ordered]@{ vault = [string](Get-CertsyncField $Context.Certificate 'vault'); name = [string](Get-CertsyncField $Context.Certificate 'name'); version = [string](Get-CertsyncField $Context.Certificate 'version') }; entries = [object[]]@($entry) }))
}

# --- compare-and-set, checks, and the step loop ------------------------------------------------------
function Invoke-CertsyncCompareAndSet {
    # Read; equal to $Previous -> write $Value, read back; equal to $Value -> "already"; else "conflict".
    # Returns @{ Outcome; Before; After; Message }; the write is journaled between intent and outcome.
    param([hashtable]$Context, [object]$Step, [scriptblock]$Read, [scriptblock]$Write, [object]$Previous = $Step.previous, [object]$Value = $Step.value, [string]$Note = '')
    $before = [string](& $Read)
    if (Test-CertsyncSame $before $Value) { return @{ Outcome = 'already'; Before = $before; After = $before; Message = 'already set' } }
    if (-not (Test-CertsyncSame $before $Previous)) {
        return @{ Outcome = 'conflict'; Before = $before; After = $before; Message = ("{0} '{1}' reads '{2}', neither the plan's previous '{3}' nor its value '{4}': someone else changed it" -f $Step.action, $Step.object, $before, $Previous, $Value) }
    }
    if ($Context.WhatIf) { return @{ Outcome = 'would-do'; Before = $before; After = [string]$Value; Message = "would set '$Value'" } }
    Write-CertsyncJournal -Context $Context -Step $Step -Kind 'intent' -Before $before -After $Value -Message $Note -Rollback ([bool](Get-CertsyncField $Step 'rollback'))
    $Context.Pending = @{ Before = $before }
    $null = & $Write $(if ([string]$Value) { $Value } else { $null })  # an empty value is $null to Exchange
    $after = [string](& $Read)
    if (-not (Test-CertsyncSame $after $Value)) { return @{ Outcome = 'failed'; Before = $before; After = $after; Message = "wrote '$Value' but it reads back as '$after'" } }
    return @{ Outcome = 'done'; Before = $before; After = $after; Message = 'set and read back' }
}

function Invoke-CertsyncCheck {
    # A read-only step: the value read must equal the expected one (Exchange's rule), else the step fails.
    param([hashtable]$Context, [object]$Step, [scriptblock]$Read, [object]$Expected = $Step.value)
    $seen = [string](& $Read)
    if (Test-CertsyncSame $seen $Expected) { return @{ Outcome = 'done'; Before = $null; After = $seen; Message = 'as planned' } }
    return @{ Outcome = 'failed'; Before = $null; After = $seen; Message = ("{0} on {1}: '{2}', expected '{3}'" -f $Step.action, $Step.server, $seen, $Expected) }
}

function Invoke-CertsyncStep {
    # Runs one step through its handler; the record, the journal and $Context.Written follow its outcome.
    param([hashtable]$Context, [object]$Step, [System.Collections.IDictionary]$Record)
    if (Get-CertsyncField $Step 'manual') { $Record['message'] = 'manual: run the runbook on the Edge server {0} (no worker group runs there)' -f $Step.server; return $Record }
    $Context.Pending = $null
    try { $result = & ((Get-CertsyncHandlers)[[string]$Step.action]) -Context $Context -Step $Step }
    catch { $result = @{ Outcome = 'failed'; Before = $null; After = $null; Message = (Format-CertsyncError $_) } }
    foreach ($key in 'outcome', 'before', 'after', 'message') { $Record[$key] = $(if ($null -ne $result[$key] -or $key -eq 'message') { [string]$result[$key] } else { $null }) }
    # A write journaled as intended (in this run or, by the journal, an earlier one) is this job's to reverse.
    $earlier = $Context.Earlier[[int]$Step.n]
    if ($null -ne $Context.Pending) { $Context.Written.Add(@{ Step = $Step; Before = $Context.Pending.Before; Record = $Record }) } elseif ($result.Outcome -eq 'already' -and $null -ne $earlier) { $Context.Written.Add(@{ Step = $Step; Before = $earlier.before; Record = $Record }) }
    Write-CertsyncJournal -Context $Context -Step $Step -Kind 'outcome' -Outcome $result.Outcome -Before $result.Before -After $result.After -Message $result.Message
    return $Record
}

# --- the handlers: one per action, each a few lines around one cmdlet --------------------------------
function Get-CertsyncCertificate {
    param([object]$Step, [string]$Thumbprint = $Step.object)
    $parameters = Get-CertsyncServerParameters -Step $Step
    return @(Get-ExchangeCertificate @parameters -ErrorAction Stop | Where-Object { Test-CertsyncSame $_.Thumbprint $Thumbprint })[0]
}

function Get-CertsyncPresence {
    param([object]$Step)
    return $(if ($null -eq (Get-CertsyncCertificate -Step $Step)) { 'absent' } else { 'present' })
}

function Get-CertsyncStore {
    # LocalMachine\CA of the step's server (\\SERVER\CA over Remote Registry unless the step runs here).
    param([object]$Step, [string]$Mode = 'ReadOnly')
    $name = $(if (-not (Get-CertsyncField $Step 'edge') -and ([string]$Step.server).Split('.')[0] -ne $env:COMPUTERNAME) { '\\{0}\CA' -f $Step.server } else { 'CA' })
    $store = New-Object System.Security.Cryptography.X509Certificates.X509Store($name, [System.Security.Cryptography.X509Certificates.StoreLocation]::LocalMachine)
    $store.Open([System.Security.Cryptography.X509Certificates.OpenFlags]$Mode)
    return $store
}

function Get-CertsyncIntermediatePresence {
    param([object]$Step)
    $store = Get-CertsyncStore -Step $Step
    try { return $(if ($store.Certificates.Find('FindByThumbprint', [string]$Step.object, $false).Count -gt 0) { 'present' } else { 'absent' }) } finally { $store.Close() }
}

function Invoke-CertsyncInstallIntermediate {
    param([hashtable]$Context, [object]$Step)
    $intermediate = @(@($Context.Certificate.intermediates) | Where-Object { Test-CertsyncSame $_.thumbprint $Step.object })[0]
    if ($null -eq $intermediate) { throw "The intermediate $($Step.object) is not in the plan's certificate.intermediates; the plan is corrupt." }
    Invoke-CertsyncCompareAndSet -Context $Context -Step $Step -Previous 'absent' -Value 'present' -Read { Get-CertsyncIntermediatePresence -Step $Step } -Write {
        $store = Get-CertsyncStore -Step $Step -Mode 'ReadWrite'
        try { $store.Add((New-Object System.Security.Cryptography.X509Certificates.X509Certificate2(, [System.Convert]::FromBase64String([string]$intermediate.der_base64)))) } finally { $store.Close() }
    }
}

function Invoke-CertsyncRemoveIntermediate {
    param([hashtable]$Context, [object]$Step)
    Invoke-CertsyncCompareAndSet -Context $Context -Step $Step -Previous 'present' -Value 'absent' -Read { Get-CertsyncIntermediatePresence -Step $Step } -Write {
        $store = Get-CertsyncStore -Step $Step -Mode 'ReadWrite'
        try { $store.Remove(@($store.Certificates.Find('FindByThumbprint', [string]$Step.object, $false))[0]) } finally { $store.Close() }
    }
}

function Invoke-CertsyncImportCertificate {
    param([hashtable]$Context, [object]$Step)
    Invoke-CertsyncCompareAndSet -Context $Context -Step $Step -Previous 'absent' -Value 'present' -Read { Get-CertsyncPresence -Step $Step } -Write {
        if ($null -eq $Context.Pfx) { Read-CertsyncPfx -Context $Context }
        $parameters = Get-CertsyncServerParameters -Step $Step
        $null = Import-ExchangeCertificate @parameters -FileData $Context.Pfx -Password (New-Object System.Security.SecureString) -PrivateKeyExportable $false -ErrorAction Stop
    }
}

function Invoke-CertsyncRemoveCertificate {
    param([hashtable]$Context, [object]$Step)
    Invoke-CertsyncCompareAndSet -Context $Context -Step $Step -Previous 'present' -Value 'absent' -Read { Get-CertsyncPresence -Step $Step } -Write {
        $parameters = Get-CertsyncServerParameters -Step $Step
        Remove-ExchangeCertificate @parameters -Thumbprint $Step.object -Confirm:$false -ErrorAction Stop
    }
}

function Get-CertsyncInternalTransport {
    param([object]$Step)
    return [string](Get-TransportService -Identity $(if ($Step.server) { [string]$Step.server } else { $env:COMPUTERNAME }) -ErrorAction Stop).InternalTransportCertificateThumbprint
}

function Restore-CertsyncInternalTransport {
    # Enabling SMTP may make Exchange take the new certificate for internal transport (-Force answers its
    # prompt); the plan's `internal_transport_certificate` is put back and read back.
    param([object]$Step)
    $planned = [string](Get-CertsyncField $Step 'internal_transport_certificate')
    $now = Get-CertsyncInternalTransport -Step $Step
    if (-not $planned -or (Test-CertsyncSame $now $planned)) { return '' }
    $parameters = Get-CertsyncServerParameters -Step $Step
    $null = Enable-ExchangeCertificate @parameters -Thumbprint $planned -Services 'SMTP' -Force -Confirm:$false -ErrorAction Stop
    $restored = Get-CertsyncInternalTransport -Step $Step
    if (-not (Test-CertsyncSame $restored $planned)) { throw "The internal transport certificate of $($Step.server) is $restored and restoring $planned failed: run Enable-ExchangeCertificate -Server $($Step.server) -Thumbprint $planned -Services SMTP -Force." }
    return "restored the internal transport certificate $planned (Exchange had taken $now)"
}

function Invoke-CertsyncEnableServices {
    # Which certificate serves each service now is journaled with the intent, so a rollback gives it back.
    param([hashtable]$Context, [object]$Step)
    $parameters = Get-CertsyncServerParameters -Step $Step
    $holders = @(Get-ExchangeCertificate @parameters -ErrorAction Stop | Where-Object { -not (Test-CertsyncSame $_.Thumbprint $Step.object) } | ForEach-Object {
            $thumbprint = $_.Thumbprint
            @((ConvertTo-CertsyncServices $_.Services) -split ', ' | Where-Object { $_ -ne 'SMTP' -and $_ -ne 'None' } | ForEach-Object { '{0}={1}' -f $_, $thumbprint })
        }) -join ' '
    $Context.Holders[[int]$Step.n] = $holders
    $result = Invoke-CertsyncCompareAndSet -Context $Context -Step $Step -Previous (ConvertTo-CertsyncServices $Step.previous) -Value (ConvertTo-CertsyncServices $Step.value) -Note $holders -Read { ConvertTo-CertsyncServices (Get-CertsyncCertificate -Step $Step).Services } -Write {
        param($services)
        Enable-ExchangeCertificate @parameters -Thumbprint $Step.object -Services ($services -split ', ') -Force -Confirm:$false -ErrorAction Stop
    }
    if (@('done', 'already') -contains $result.Outcome) { $result.Message = (@($result.Message, (Restore-CertsyncInternalTransport -Step $Step)) | Where-Object { $_ }) -join '; ' }
    return $result
}

function Invoke-CertsyncCheckStatus {
    param([hashtable]$Context, [object]$Step)
    Invoke-CertsyncCheck -Context $Context -Step $Step -Expected (Get-CertsyncContract).RequiredStatus -Read { [string](Get-CertsyncCertificate -Step $Step).Status }
}

function Invoke-CertsyncCheckName {
    # Exchange's own "<I>" + Issuer + "<S>" + Subject of the certificate on this server against the plan's value.
    param([hashtable]$Context, [object]$Step)
    $found = Get-CertsyncCertificate -Step $Step
    $result = Invoke-CertsyncCheck -Context $Context -Step $Step -Read { '<I>{0}<S>{1}' -f $found.Issuer, $found.Subject }
    $Context.ServerNames.Add([ordered]@{ server = [string]$Step.server; subject = [string]$found.Subject; issuer = [string]$found.Issuer; expected = [string]$Step.value; matches = ($result.Outcome -eq 'done') })
    return $result
}

function Invoke-CertsyncSetSendConnector {
    param([hashtable]$Context, [object]$Step)
    Invoke-CertsyncCompareAndSet -Context $Context -Step $Step -Read { [string](Get-SendConnector -Identity $Step.object -ErrorAction Stop).TlsCertificateName } -Write { param($v) Set-SendConnector -Identity $Step.object -TlsCertificateName $v -Confirm:$false -ErrorAction Stop }
}

function Invoke-CertsyncSetReceiveConnector {
    param([hashtable]$Context, [object]$Step)
    Invoke-CertsyncCompareAndSet -Context $Context -Step $Step -Read { [string](Get-ReceiveConnector -Identity $Step.object -ErrorAction Stop).TlsCertificateName } -Write { param($v) Set-ReceiveConnector -Identity $Step.object -TlsCertificateName $v -Confirm:$false -ErrorAction Stop }
}

function Invoke-CertsyncSetHybridConfiguration {
    param([hashtable]$Context, [object]$Step)
    Invoke-CertsyncCompareAndSet -Context $Context -Step $Step -Read { [string](Get-HybridConfiguration -ErrorAction Stop).TlsCertificateName } -Write { param($v) Set-HybridConfiguration -TlsCertificateName $v -Confirm:$false -ErrorAction Stop }
}

function Invoke-CertsyncSetExoInboundConnector {
    param([hashtable]$Context, [object]$Step)
    $null = Connect-CertsyncTenant -Context $Context -Step $Step
    Invoke-CertsyncCompareAndSet -Context $Context -Step $Step -Read { [string](Get-CertsyncInboundConnector -Identity $Step.object -ErrorAction Stop).TlsSenderCertificateName } -Write { param($v) Set-CertsyncInboundConnector -Identity $Step.object -TlsSenderCertificateName $v -Confirm:$false -ErrorAction Stop }
}

function Invoke-CertsyncRestartTransport {
    # The Windows service the plan names (transport loads its certificates when it starts), restarted on the
    # step's server and waited for until Running (at most the step's `timeout` seconds, 300 by default).
    param([hashtable]$Context, [object]$Step)
    $parameters = @{ Name = [string]$Step.object }
    if (-not (Get-CertsyncField $Step 'edge')) { $parameters['ComputerName'] = [string]$Step.server }
    if ($Context.WhatIf) { return @{ Outcome = 'would-do'; Before = $null; After = 'Running'; Message = "would restart $($Step.object)" } }
    Write-CertsyncJournal -Context $Context -Step $Step -Kind 'intent' -Before ([string](Get-Service @parameters -ErrorAction Stop).Status) -After 'Running'
    Get-Service @parameters -ErrorAction Stop | Restart-Service -Force -ErrorAction Stop
    $seconds = [int](Get-CertsyncField $Step 'timeout'); if ($seconds -le 0) { $seconds = 300 }
    $deadline = [DateTime]::UtcNow.AddSeconds($seconds)
    while (($status = [string](Get-Service @parameters -ErrorAction Stop).Status) -ne 'Running' -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Seconds 5 }
    if ($status -ne 'Running') { return @{ Outcome = 'failed'; Before = $null; After = $status; Message = "$($Step.object) on $($Step.server) is $status, not Running, after its restart" } }
    return @{ Outcome = 'done'; Before = $null; After = 'Running'; Message = "restarted $($Step.object)" }
}

function Get-CertsyncPresentedThumbprint {
    # EHLO, STARTTLS and a TLS handshake to host:port; the thumbprint of the certificate the server presents.
    param([string]$Endpoint)
    $hostName, $port = $Endpoint.Split(':')
    $client = New-Object System.Net.Sockets.TcpClient
    try {
        $client.ReceiveTimeout = 15000; $client.SendTimeout = 15000
        $client.Connect($hostName, [int]$port)
        $reader = New-Object System.IO.StreamReader($client.GetStream(), [System.Text.Encoding]::ASCII)
        $writer = New-Object System.IO.StreamWriter($client.GetStream(), [System.Text.Encoding]::ASCII) -Property @{ AutoFlush = $true }
        $null = $reader.ReadLine(); $writer.Write("EHLO certsync.invalid`r`n")
        do { $line = $reader.ReadLine() } while ($line -and $line.Length -gt 3 -and $line[3] -eq '-')
        $writer.Write("STARTTLS`r`n")
        if (-not ($line = $reader.ReadLine()).StartsWith('220')) { throw "$Endpoint refused STARTTLS: $line" }
        $tls = New-Object System.Net.Security.SslStream($client.GetStream(), $false, ([System.Net.Security.RemoteCertificateValidationCallback] { $true }))
        $tls.AuthenticateAsClient($hostName)
        return (New-Object System.Security.Cryptography.X509Certificates.X509Certificate2($tls.RemoteCertificate)).Thumbprint
    } finally { $client.Close() }
}

function Invoke-CertsyncProbeReceiveConnector {
    # The receive connector's own binding ("host:port" in the step's value) must present the plan's certificate.
    param([hashtable]$Context, [object]$Step)
    Invoke-CertsyncCheck -Context $Context -Step $Step -Expected $Context.Certificate.thumbprint -Read { Get-CertsyncPresentedThumbprint -Endpoint ([string]$Step.value) }
}

function Invoke-CertsyncTestOutbound {
    # On-premises -> Exchange Online: no queue toward the send connector on the step's server holds an error;
    # with a tenant, Exchange Online's Validate-OutboundConnector for the step's exo_connector and recipient.
    param([hashtable]$Context, [object]$Step)
    $connector = Get-SendConnector -Identity $Step.object -ErrorAction Stop
    $stuck = @(Get-Queue -Server $Step.server -ErrorAction Stop | Where-Object { (Test-CertsyncSame $_.NextHopConnector $connector.Guid) -and $_.LastError })
    if ($stuck.Count -gt 0) { return @{ Outcome = 'failed'; After = [string]$stuck[0].LastError; Message = ("the queue to '{0}' on {1} reports: {2}" -f $Step.object, $Step.server, $stuck[0].LastError) } }
    if (-not (Get-CertsyncField $Step 'tenant')) { return @{ Outcome = 'done'; After = 'ok'; Message = "no queue error toward '$($Step.object)'" } }
    $null = Connect-CertsyncTenant -Context $Context -Step $Step
    $failed = @(Validate-CertsyncOutboundConnector -Identity $Step.exo_connector -Recipients $Step.value -ErrorAction Stop | Where-Object { -not (Test-CertsyncSame $_.Status 'Succeeded') })
    if ($failed.Count -gt 0) { return @{ Outcome = 'failed'; After = [string]$failed[0].Status; Message = "Validate-OutboundConnector '$($Step.exo_connector)': $($failed[0].Status)" } }
    return @{ Outcome = 'done'; After = 'ok'; Message = "no queue error toward '$($Step.object)'; Validate-OutboundConnector '$($Step.exo_connector)' succeeded" }
}

# --- rollback ----------------------------------------------------------------------------------------
function Undo-CertsyncWrite {
    # The reverse of one write, as a step of its own (compare-and-set again), journaled with rollback: true.
    param([hashtable]$Context, [hashtable]$Written)
    $step = $Written.Step
    switch ([string]$step.action) {
        'install-intermediate' { $undo = $(if ($Written.Before -eq 'absent') { @{ action = 'remove-intermediate' } }) }
        'import-certificate' { $undo = $(if ($Written.Before -eq 'absent') { @{ action = 'remove-certificate' } }) }
        'restart-transport' { $undo = $null }
        default { $undo = @{ action = [string]$step.action; previous = $step.value; value = $step.previous } }
    }
    if ($null -eq $undo) { return }
    $reverse = $step.PSObject.Copy()
    foreach ($key in @($undo.Keys) + 'rollback') { $reverse | Add-Member -NotePropertyName $key -NotePropertyValue $(if ($key -eq 'rollback') { $true } else { $undo[$key] }) -Force }
    try {
        if ($undo.action -eq 'enable-services') { $result = @{ Outcome = 'done'; Message = (Restore-CertsyncServiceHolders -Context $Context -Step $step) } }
        else { $result = & ((Get-CertsyncHandlers)[$undo.action]) -Context $Context -Step $reverse }
    } catch { $result = @{ Outcome = 'failed'; Message = (Format-CertsyncError $_) } }
    $record = New-CertsyncStepRecord -Step $reverse -Outcome 'rolled-back' -Message ('rollback: ' + [string]$result.Message)
    $record['before'] = $result.Before; $record['after'] = $result.After
    if (@('done', 'already') -notcontains $result.Outcome) { $record['outcome'] = 'failed'; $Context.Error = '{0} Rollback of step {1} failed: {2}' -f $Context.Error, $step.n, $result.Message }
    if (@('done', 'already') -contains $Written.Record['outcome']) { $Written.Record['outcome'] = 'rolled-back' }
    $Context.Records.Add($record)
    Write-CertsyncJournal -Context $Context -Step $reverse -Kind 'outcome' -Outcome $record['outcome'] -Before $result.Before -After $result.After -Message $record['message'] -Rollback $true
}

function Restore-CertsyncServiceHolders {
    # Gives each service enable-services moved back to the certificate that had it before (journaled "IIS=THUMBPRINT").
    param([hashtable]$Context, [object]$Step)
    $parameters = Get-CertsyncServerParameters -Step $Step
    $given = New-Object System.Collections.Generic.List[string]
    foreach ($pair in (([string]$Context.Holders[[int]$Step.n]) -split ' ' | Where-Object { $_ })) {
        $service, $thumbprint = $pair.Split('=')
        if (@(ConvertTo-CertsyncServices $Step.previous) -split ', ' -contains $service) { continue }
        $null = Enable-ExchangeCertificate @parameters -Thumbprint $thumbprint -Services $service -Force -Confirm:$false -ErrorAction Stop
        $given.Add($pair)
    }
    return ('services given back: {0}' -f $(if ($given.Count) { $given -join ' ' } else { 'none' }))
}

function Invoke-CertsyncRollback {
    # Every write reversed, newest first; then the internal transport certificate of every server with an
    # enable-services step read, and restored where it is not the plan's.
    param([hashtable]$Context)
    for ($i = $Context.Written.Count - 1; $i -ge 0; $i--) { Undo-CertsyncWrite -Context $Context -Written $Context.Written[$i] }
    foreach ($step in @($Context.Steps | Where-Object { $_.action -eq 'enable-services' -and -not (Get-CertsyncField $_ 'manual') })) {
        $record = New-CertsyncStepRecord -Step $step -Outcome 'rolled-back' -Message ''
        $record['after'] = [string](Get-CertsyncField $step 'internal_transport_certificate')
        try { $record['message'] = 'rollback: internal transport certificate ' + $(if (($restored = Restore-CertsyncInternalTransport -Step $step)) { $restored } else { 'unchanged' }) }
        catch { $record['outcome'] = 'failed'; $record['message'] = 'rollback: ' + (Format-CertsyncError $_); $Context.Error = '{0} {1}' -f $Context.Error, $record['message'] }
        $Context.Records.Add($record)
        Write-CertsyncJournal -Context $Context -Step $step -Kind 'outcome' -Outcome $record['outcome'] -After $record['after'] -Message $record['message'] -Rollback $true
    }
}

# --- the run -----------------------------------------------------------------------------------------
function Invoke-CertsyncPlan {
    # Runs the steps in order; a failure or conflict stops the run and rolls back. A step of the retire
    # phase that fails keeps its certificate (listed in kept) and rolls nothing back.
    param([hashtable]$Context)
    $failure = $null
    if ($Context.Resume -eq 'rollback') {
        # The job restarted while rolling back: finish the rollback of every write its journal records.
        foreach ($step in @($Context.Steps | Where-Object { $Context.Earlier.ContainsKey([int]$_.n) })) { $Context.Written.Add(@{ Step = $step; Before = $Context.Earlier[[int]$step.n].before; Record = $Context.Records[$Context.Steps.IndexOf($step)] }) }
        $failure = 'The job restarted while rolling back; certsync finished the rollback its journal records.'
    }
    for ($i = 0; $i -lt $Context.Steps.Count -and $Context.Resume -ne 'rollback'; $i++) {
        $step = $Context.Steps[$i]
        Write-CertsyncLog ('Step {0} [{1}] {2} {3} {4}' -f $step.n, $step.phase, $step.action, $step.server, $step.object)
        $record = Invoke-CertsyncStep -Context $Context -Step $step -Record $Context.Records[$i]
        if (@('failed', 'conflict') -notcontains $record['outcome']) { continue }
        if ($step.phase -eq 'retire') {
            $Context.Kept.Add([ordered]@{ server = [string]$step.server; thumbprint = [string]$step.object; reason = [string]$record['message'] })
            $record['outcome'] = 'skipped'; $record['message'] = 'kept: ' + $record['message']; continue
        }
        if ($null -eq $failure) { $failure = 'Step {0} ({1} {2} on {3}) {4}: {5}' -f $step.n, $step.action, $step.object, $step.server, $record['outcome'], $record['message'] }
        if (-not $Context.WhatIf) { break }
    }
    if ($Context.WhatIf) { $Context.Status = 'what-if'; $Context.Error = $failure; return }
    if ($null -eq $failure) { $Context.Status = 'succeeded'; return }
    $Context.Error = $failure; $Context.Status = 'rolled-back'
    Invoke-CertsyncRollback -Context $Context
    if (@($Context.Records | Where-Object { $_['outcome'] -eq 'failed' -and $_['message'].StartsWith('rollback') }).Count -gt 0) { $Context.Status = 'failed' }
}

function ConvertTo-CertsyncResultJson {
    # certsync.result/1 (shared/remediation/messages.py). Conflict is a journal outcome; in the result it is "failed".
    param([hashtable]$Context)
    foreach ($record in $Context.Records) { if ($record['outcome'] -eq 'conflict') { $record['outcome'] = 'failed' } }
    $certificate = $Context.Certificate
    $result = [ordered]@{
        schema = 'certsync.result/1'; job_id = [string]$Context.JobId; correlation_id = [string]$Context.CorrelationId
        certificate = [ordered]@{ vault = [string](Get-CertsyncField $certificate 'vault'); name = [string](Get-CertsyncField $certificate 'name')
            version = [string](Get-CertsyncField $certificate 'version'); thumbprint = [string](Get-CertsyncField $certificate 'thumbprint') }
        status = [string]$Context.Status; error = $(if ($Context.Error) { [string]$Context.Error } else { $null })
        worker = [string]$Context.Worker; started = [string]$Context.Started; finished = [string]$Context.Finished
        steps = [object[]]$Context.Records.ToArray(); inventory = [object[]]@()
        server_names = [object[]]$Context.ServerNames.ToArray(); kept = [object[]]$Context.Kept.ToArray()
    }
    return (ConvertTo-Json -InputObject $result -Depth 6 -Compress)
}

function Invoke-CertsyncMain {
    # The one place that writes Output: the result line, last; then throws when the run did not succeed.
    param([string]$Encoded, [string]$PlanFile, [string]$CorrelationId, [string]$JobId, [string]$CallbackUrl, [bool]$WhatIfMode)
    $ErrorActionPreference = 'Stop'
    $context = New-CertsyncContext -Plan $null -JobId $JobId -CorrelationId $CorrelationId -WhatIfMode $WhatIfMode -CallbackUrl $CallbackUrl
    try {
        if ($JobId -notmatch '^[0-9a-fA-F]{32}$') { throw "JobId '$JobId' is not a certsync job id (32 hex digits)." }
        $context = New-CertsyncContext -Plan (Read-CertsyncPlan -Encoded $Encoded -PlanFile $PlanFile) -JobId $JobId -CorrelationId $CorrelationId -WhatIfMode $WhatIfMode -CallbackUrl $CallbackUrl
        $null = Open-CertsyncJournal -Context $context
        Connect-CertsyncExchange -Context $context
        $null = @(Invoke-CertsyncPlan -Context $context)
    } catch { $context.Status = 'failed'; $context.Error = Format-CertsyncError $_ }
    finally {
        if ($null -ne $context.Pfx) { [System.Array]::Clear($context.Pfx, 0, $context.Pfx.Length); $context.Pfx = $null }
        if ($context.Tenant) { Disconnect-ExchangeOnline -Confirm:$false -ErrorAction SilentlyContinue }
        if ($null -ne $context.Session) { Remove-PSSession -Session $context.Session -ErrorAction SilentlyContinue }
        $context.Finished = Get-CertsyncUtcNow
    }
    $json = ConvertTo-CertsyncResultJson -Context $context
    Write-Output $json
    Send-CertsyncCallback -Context $context -MessageId ('{0}-result' -f $context.JobId) -Json $json
    if (@('failed', 'rolled-back') -contains $context.Status) { throw ('certsync {0}: {1}' -f $context.Status, $context.Error) }
}

if (-not $LoadOnly) {
    # -WhatIf is the run's own flag; the preference is reset so that connecting is not turned into a no-op.
    $certsyncWhatIf = [bool]$WhatIfPreference
    $WhatIfPreference = $false
    # (-Encoded: the tree-sitter grammar of the contract tests misreads a parameter name ending in digits)
    Invoke-CertsyncMain -Encoded $PlanBase64 -PlanFile $PlanFile -CorrelationId $CorrelationId -JobId $JobId -CallbackUrl $CallbackUrl -WhatIfMode $certsyncWhatIf
}
