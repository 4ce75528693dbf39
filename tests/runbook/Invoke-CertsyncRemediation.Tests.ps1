<#
    Pester 5 tests of infra/runbooks/Invoke-CertsyncRemediation.ps1 on Windows PowerShell 5.1.
    They load the runbook's functions (-LoadOnly) and run them against FakeExchange.ps1, an in-memory
    Exchange organisation; Key Vault, the certificate stores, services and the STARTTLS probe are
    mocked; the journal is written under $TestDrive. See README.md: the certsync CI has no PowerShell,
    so these tests never run there and are never counted as passed.
#>

BeforeAll {
    $script:Runbook = Join-Path $PSScriptRoot '..\..\infra\runbooks\Invoke-CertsyncRemediation.ps1'
    $script:PlanPath = Join-Path $PSScriptRoot '..\fixtures\runbook\plan-two-server.json'
    . $script:Runbook -LoadOnly
    . (Join-Path $PSScriptRoot 'FakeExchange.ps1')

    $script:JobId = 'a7d33d27f549da6ee5b954d7079b8535'
    $script:OldName = "<I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    $script:NewName = "<I>CN=R11, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    $script:NewThumbprint = '1514218ACD2571E7AA8E4920F2EBBE430A5D1996'
    $script:OldThumbprint = '0CB65935AF474E04D10597A12E9538959901A4C8'
    $script:Send = 'Outbound to Office 365 - 0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10'

    function Get-TestPlan {
        return (Get-Content -Raw -LiteralPath $script:PlanPath | ConvertFrom-Json)
    }

    function New-TestContext {
        param([object]$Plan = (Get-TestPlan), [switch]$WhatIfMode)
        $context = New-CertsyncContext -Plan $Plan -JobId $script:JobId -CorrelationId 'c' -WhatIfMode ([bool]$WhatIfMode)
        $null = Open-CertsyncJournal -Context $context
        return $context
    }

    function New-TestStep {
        param([hashtable]$Fields)
        $step = [ordered]@{ n = 1; phase = 'proof'; action = ''; server = 'EX01'; object = ''; property = $null; previous = $null; value = $null; manual = $false }
        foreach ($key in $Fields.Keys) { $step[$key] = $Fields[$key] }
        return [pscustomobject]$step
    }

    function Get-Journal {
        return @([System.IO.File]::ReadAllLines((Get-CertsyncJournalPath -JobId $script:JobId)) | ForEach-Object { $_ | ConvertFrom-Json })
    }

    function Get-Outcomes {
        param([hashtable]$Context)
        return (@($Context.Records | ForEach-Object { '{0}:{1}' -f $_['n'], $_['outcome'] }) -join ' ')
    }
}

Describe 'Invoke-CertsyncRemediation' {
    BeforeEach {
        New-FakeExchange
        $env:ProgramData = Join-Path $TestDrive ([guid]::NewGuid().ToString('N'))
        Mock Get-CertsyncStore { New-FakeStore -Server $Step.server }
        Mock Read-CertsyncPfx { $Context.Pfx = [byte[]](1, 2, 3) }
        Mock Write-CertsyncLog { $null }
    }

    Context 'the plan' {
        It 'decodes base64 of the UTF-8 JSON and runs certsync.plan/2 only' {
            $text = Get-Content -Raw -LiteralPath $script:PlanPath
            $encoded = [System.Convert]::ToBase64String([System.Text.Encoding]::UTF8.GetBytes($text))
            (Read-CertsyncPlan -Encoded $encoded).steps.Count | Should -Be 18
            $plan1 = [System.Convert]::ToBase64String([System.Text.Encoding]::UTF8.GetBytes('{"schema":"certsync.plan/1","steps":[]}'))
            { Read-CertsyncPlan -Encoded $plan1 } | Should -Throw "*runs certsync.plan/2 only*"
            { Read-CertsyncPlan -Encoded '{"schema":"certsync.plan/2"}' } | Should -Throw '*not base64*'
        }

        It 'refuses an action it has no handler for and a blocked plan, before anything runs' {
            $plan = Get-TestPlan
            $plan.steps[0].action = 'format-disk'
            $path = Join-Path $TestDrive 'unknown.json'
            $plan | ConvertTo-Json -Depth 8 | Set-Content -LiteralPath $path -Encoding UTF8
            { Read-CertsyncPlan -PlanFile $path } | Should -Throw "*'format-disk'*no handler*"
            $plan = Get-TestPlan
            $plan.blocked = [pscustomobject]@{ reason = 'no exportable key'; fix = 'create the certificate with exportable: true' }
            $plan | ConvertTo-Json -Depth 8 | Set-Content -LiteralPath $path -Encoding UTF8
            { Read-CertsyncPlan -PlanFile $path } | Should -Throw '*blocked*exportable: true*'
            $global:FakeExchange.Calls.Count | Should -Be 0
        }
    }

    Context 'a first run and a rerun' {
        It 'runs every step through its handler, keeps the internal transport certificate, and a rerun changes nothing' {
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context
            $context.Status | Should -Be 'succeeded'
            @($context.Records | Where-Object { $_['outcome'] -ne 'done' }).Count | Should -Be 0
            $global:FakeExchange.SendConnectors[$script:Send] | Should -Be $script:NewName
            $global:FakeExchange.Hybrid.TlsCertificateName | Should -Be $script:NewName
            $global:FakeExchange.Internal['EX01'] | Should -Be ('5E1FEX01' + ('0' * 32))
            Find-FakeCertificate -Server 'EX01' -Thumbprint $script:OldThumbprint | Should -BeNullOrEmpty
            (Find-FakeCertificate -Server 'EX01' -Thumbprint $script:NewThumbprint).Services | Should -Match 'IMAP'
            $state = Get-FakeState

            $global:FakeExchange.Calls.Clear()
            $again = New-TestContext
            Invoke-CertsyncPlan -Context $again
            $again.Status | Should -Be 'succeeded'
            @($again.Records | Where-Object { @('already', 'done') -notcontains $_['outcome'] }).Count | Should -Be 0
            @($again.Records | Where-Object { $_['action'] -like 'set-*' -and $_['outcome'] -ne 'already' }).Count | Should -Be 0
            Get-FakeChanges | Should -BeNullOrEmpty
            Get-FakeState | Should -Be $state
        }

        It 'journals an intent before and an outcome after each write, with the state read before' {
            Mock Send-CertsyncCallback { $null }
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context
            $journal = Get-Journal
            $journal[0].schema | Should -Be 'certsync.journal/1'
            @($journal | ForEach-Object { $_.seq }) | Should -Be (1..$journal.Count)
            $import = @($journal | Where-Object { $_.action -eq 'import-certificate' -and $_.server -eq 'EX01' })
            ($import | ForEach-Object { $_.event }) -join ',' | Should -Be 'intent,outcome'
            $import[0].before | Should -Be 'absent'
            $import[1].outcome | Should -Be 'done'
            @($journal | Where-Object { $_.action -eq 'check-status' -and $_.event -eq 'intent' }).Count | Should -Be 0
            $enable = @($journal | Where-Object { $_.action -eq 'enable-services' -and $_.server -eq 'EX01' -and $_.event -eq 'intent' })[0]
            $enable.message | Should -Match ('IIS=' + $script:OldThumbprint)
            Should -Invoke Send-CertsyncCallback -Times $journal.Count -Exactly -ParameterFilter { $MessageId -like '*-journal-*' }
        }

        It '-WhatIf changes nothing and journals nothing' {
            $context = New-TestContext -WhatIfMode
            Invoke-CertsyncPlan -Context $context
            $context.Status | Should -Be 'what-if'
            Get-FakeChanges | Should -BeNullOrEmpty
            Test-Path -LiteralPath (Get-CertsyncJournalPath -JobId $script:JobId) | Should -BeFalse
            ($context.Records | Where-Object { $_['action'] -eq 'set-send-connector' })['outcome'] | Should -Be 'would-do'
        }
    }

    Context 'each handler' {
        It 'install-intermediate and remove-intermediate: compare-and-set on the CA store' {
            $context = New-TestContext
            $step = $context.Steps[0]
            (Invoke-CertsyncInstallIntermediate -Context $context -Step $step).Outcome | Should -Be 'done'
            (Invoke-CertsyncInstallIntermediate -Context $context -Step $step).Outcome | Should -Be 'already'
            $global:FakeExchange.CaStore['EX01'] | Should -Contain $step.object
            (Invoke-CertsyncRemoveIntermediate -Context $context -Step $step).Outcome | Should -Be 'done'
            $global:FakeExchange.CaStore['EX01'] | Should -Not -Contain $step.object
        }

        It 'import-certificate: imports with a non-exportable key, or finds it there' {
            $context = New-TestContext
            $result = Invoke-CertsyncImportCertificate -Context $context -Step $context.Steps[1]
            $result.Outcome | Should -Be 'done'
            $result.Before | Should -Be 'absent'
            $import = @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Import-ExchangeCertificate' })[0]
            $import.Parameters['PrivateKeyExportable'] | Should -BeFalse
            $import.Parameters['Server'] | Should -Be 'EX01'
            (Invoke-CertsyncImportCertificate -Context $context -Step $context.Steps[1]).Outcome | Should -Be 'already'
        }

        It 'enable-services: enables the plan''s services and restores the internal transport certificate Exchange took' {
            $context = New-TestContext
            $null = Invoke-CertsyncImportCertificate -Context $context -Step $context.Steps[1]
            $result = Invoke-CertsyncEnableServices -Context $context -Step $context.Steps[2]
            $result.Outcome | Should -Be 'done'
            $result.After | Should -Be 'IIS, IMAP, POP, SMTP'
            $result.Message | Should -Match 'restored the internal transport certificate'
            $global:FakeExchange.Internal['EX01'] | Should -Be $context.Steps[2].internal_transport_certificate
        }

        It 'enable-services: services that are neither previous nor value are a conflict' {
            $context = New-TestContext
            $null = Invoke-CertsyncImportCertificate -Context $context -Step $context.Steps[1]
            (Find-FakeCertificate -Server 'EX01' -Thumbprint $script:NewThumbprint).Services = 'UM'
            (Invoke-CertsyncEnableServices -Context $context -Step $context.Steps[2]).Outcome | Should -Be 'conflict'
        }

        It 'check-status and check-name compare with the plan, ignoring case' {
            $context = New-TestContext
            $null = Invoke-CertsyncImportCertificate -Context $context -Step $context.Steps[1]
            (Invoke-CertsyncCheckStatus -Context $context -Step $context.Steps[3]).Outcome | Should -Be 'done'
            $global:FakeExchange.Pfx.Issuer = "CN=r11, O=Let's Encrypt, C=US"
            (Find-FakeCertificate -Server 'EX01' -Thumbprint $script:NewThumbprint).Issuer = "CN=r11, O=Let's Encrypt, C=US"
            (Invoke-CertsyncCheckName -Context $context -Step $context.Steps[4]).Outcome | Should -Be 'done'
            (Find-FakeCertificate -Server 'EX01' -Thumbprint $script:NewThumbprint).Issuer = "C=US, O=Let's Encrypt, CN=R11"
            $mismatch = Invoke-CertsyncCheckName -Context $context -Step $context.Steps[4]
            $mismatch.Outcome | Should -Be 'failed'
            $context.ServerNames[$context.ServerNames.Count - 1]['matches'] | Should -BeFalse
            (Find-FakeCertificate -Server 'EX01' -Thumbprint $script:NewThumbprint).Status = 'RevocationCheckFailure'
            (Invoke-CertsyncCheckStatus -Context $context -Step $context.Steps[3]).Outcome | Should -Be 'failed'
        }

        It 'set-send-connector, set-receive-connector, set-hybrid-configuration: compare-and-set with read-back' {
            $context = New-TestContext
            foreach ($index in 10, 11, 13) {
                (& ((Get-CertsyncHandlers)[$context.Steps[$index].action]) -Context $context -Step $context.Steps[$index]).Outcome | Should -Be 'done'
                (& ((Get-CertsyncHandlers)[$context.Steps[$index].action]) -Context $context -Step $context.Steps[$index]).Outcome | Should -Be 'already'
            }
            $global:FakeExchange.ReceiveConnectors['EX02\Default Frontend EX02'] = 'something else'
            (Invoke-CertsyncSetReceiveConnector -Context $context -Step $context.Steps[12]).Outcome | Should -Be 'conflict'
            $global:FakeExchange.ReceiveConnectors['EX02\Default Frontend EX02'] | Should -Be 'something else'
        }

        It 'set-exo-inbound-connector connects once to the step''s tenant and never guesses one' {
            $context = New-TestContext
            $step = New-TestStep @{ action = 'set-exo-inbound-connector'; server = $null; object = 'Inbound from contoso'; previous = 'mail.contoso.com'; value = '*.contoso.com'; tenant = 'contoso.onmicrosoft.com' }
            (Invoke-CertsyncSetExoInboundConnector -Context $context -Step $step).Outcome | Should -Be 'done'
            (Invoke-CertsyncSetExoInboundConnector -Context $context -Step $step).Outcome | Should -Be 'already'
            @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Connect-ExchangeOnline' }).Count | Should -Be 1
            @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Connect-ExchangeOnline' })[0].Parameters['Organization'] | Should -Be 'contoso.onmicrosoft.com'
            $step.tenant = ''
            $context.Tenant = ''
            { Invoke-CertsyncSetExoInboundConnector -Context $context -Step $step } | Should -Throw '*never guesses*'
        }

        It 'restart-transport restarts the named service on the step''s server and waits for Running' {
            Mock Get-Service { [pscustomobject]@{ Name = $Name; Status = 'Running' } }
            Mock Restart-Service { $null }
            $context = New-TestContext
            $step = New-TestStep @{ action = 'restart-transport'; object = 'MSExchangeFrontEndTransport' }
            (Invoke-CertsyncRestartTransport -Context $context -Step $step).Outcome | Should -Be 'done'
            Should -Invoke Get-Service -ParameterFilter { $ComputerName -eq 'EX01' -and $Name -eq 'MSExchangeFrontEndTransport' }
            Should -Invoke Restart-Service -Times 1 -Exactly
        }

        It 'probe-receive-connector: the binding must present the plan''s certificate' {
            Mock Get-CertsyncPresentedThumbprint { if ($Endpoint -eq 'ex01.contoso.local:25') { '1514218acd2571e7aa8e4920f2ebbe430a5d1996' } else { $script:OldThumbprint } }
            $context = New-TestContext
            $step = New-TestStep @{ action = 'probe-receive-connector'; object = 'EX01\Default Frontend EX01'; value = 'ex01.contoso.local:25' }
            (Invoke-CertsyncProbeReceiveConnector -Context $context -Step $step).Outcome | Should -Be 'done'
            $step.value = 'ex02.contoso.local:25'
            (Invoke-CertsyncProbeReceiveConnector -Context $context -Step $step).Outcome | Should -Be 'failed'
        }

        It 'test-outbound: a queue error toward the connector fails; Validate-OutboundConnector with a tenant' {
            $context = New-TestContext
            $step = New-TestStep @{ action = 'test-outbound'; object = $script:Send; tenant = 'contoso.onmicrosoft.com'; exo_connector = 'Outbound to contoso'; value = 'postmaster@contoso.com' }
            (Invoke-CertsyncTestOutbound -Context $context -Step $step).Outcome | Should -Be 'done'
            Should -Not -Invoke Write-CertsyncLog -ParameterFilter { $Message -like '*token*' }
            @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Validate-CertsyncOutboundConnector' }).Count | Should -Be 1
            $global:FakeExchange.Queues = @(@{ NextHopConnector = '0B9D5C6E-3F51-4D2B-9A70-2F1C8E4B7A10'; LastError = '454 4.7.5 The certificate specified in TlsCertificateName of the SendConnector could not be found.' })
            (Invoke-CertsyncTestOutbound -Context $context -Step $step).Outcome | Should -Be 'failed'
            $global:FakeExchange.Queues = @()
            $global:FakeExchange.Validation = 'Failed'
            (Invoke-CertsyncTestOutbound -Context $context -Step $step).Outcome | Should -Be 'failed'
        }

        It 'remove-certificate removes, finds it gone, and a manual (Edge) step is skipped' {
            $context = New-TestContext
            $step = New-TestStep @{ action = 'remove-certificate'; object = $script:OldThumbprint; phase = 'retire' }
            $global:FakeExchange.SendConnectors[$script:Send] = $script:NewName
            (Invoke-CertsyncRemoveCertificate -Context $context -Step $step).Outcome | Should -Be 'done'
            (Invoke-CertsyncRemoveCertificate -Context $context -Step $step).Outcome | Should -Be 'already'
            $manual = New-TestStep @{ action = 'remove-certificate'; object = $script:OldThumbprint; server = 'EDGE01'; manual = $true }
            (Invoke-CertsyncStep -Context $context -Step $manual -Record (New-CertsyncStepRecord -Step $manual))['message'] | Should -Match '^manual: run the runbook on the Edge server EDGE01'
        }
    }

    Context 'conflicts and rollback' {
        It 'a conflict stops the run and reverses every write newest first, removing what it staged' {
            $global:FakeExchange.ReceiveConnectors['EX02\Default Frontend EX02'] = 'someone else''s value'
            $before = Get-FakeState
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context
            $context.Status | Should -Be 'rolled-back'
            $context.Error | Should -Match 'conflict'
            $sets = @($global:FakeExchange.Calls | Where-Object { $_.Name -like 'Set-*Connector' } | ForEach-Object { $_.Parameters['Identity'] })
            $sets | Should -Be @($script:Send, 'EX01\Default Frontend EX01', 'EX01\Default Frontend EX01', $script:Send)
            Get-FakeState | Should -Be $before
            $undo = @($context.Records | Where-Object { $_['message'] -like 'rollback: *' } | ForEach-Object { '{0}:{1}' -f $_['n'], $_['action'] })
            $undo[0..1] | Should -Be @('12:set-receive-connector', '11:set-send-connector')
            $undo | Should -Contain '7:remove-certificate'
            $undo | Should -Contain '1:remove-intermediate'
            $rollback = @(Get-Journal | Where-Object { $_.rollback })
            $rollback.Count | Should -BeGreaterThan 0
            @($rollback | Where-Object { $_.event -eq 'outcome' -and $_.outcome -ne 'rolled-back' }).Count | Should -Be 0
        }

        It 'a failed check after staging removes only the certificates this job imported' {
            Add-FakeCertificate -Server 'EX02' -Thumbprint $script:NewThumbprint -Issuer "CN=R11, O=Let's Encrypt, C=US" -Subject 'CN=mail.contoso.com' -Services 'IIS, SMTP'
            $plan = Get-TestPlan
            $plan.steps = @($plan.steps | Where-Object { -not ($_.server -eq 'EX02' -and @('import-certificate', 'enable-services') -contains $_.action) })
            (Find-FakeCertificate -Server 'EX02' -Thumbprint $script:NewThumbprint).Status = 'Untrusted'
            $context = New-TestContext -Plan $plan
            Invoke-CertsyncPlan -Context $context
            $context.Status | Should -Be 'rolled-back'
            Find-FakeCertificate -Server 'EX01' -Thumbprint $script:NewThumbprint | Should -BeNullOrEmpty
            Find-FakeCertificate -Server 'EX02' -Thumbprint $script:NewThumbprint | Should -Not -BeNullOrEmpty
            (Find-FakeCertificate -Server 'EX01' -Thumbprint $script:OldThumbprint).Services | Should -Match 'IIS'
        }

        It 'a failed retire step keeps the certificate and rolls nothing back' {
            $global:FakeExchange.Fail['Remove-ExchangeCertificate'] = 'These certificates are tagged with following Send Connectors'
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context
            $context.Status | Should -Be 'succeeded'
            $context.Kept.Count | Should -Be 2
            ($context.Records | Where-Object { $_['action'] -eq 'remove-certificate' })[0]['message'] | Should -Match '^kept: '
            $global:FakeExchange.SendConnectors[$script:Send] | Should -Be $script:NewName
        }
    }

    Context 'the journal after a worker restart' {
        It 'a rerun from the journal reads done steps as already and still reverses them on a later conflict' {
            $plan = Get-TestPlan
            $first = New-TestContext -Plan $plan
            foreach ($i in 0..10) { $null = Invoke-CertsyncStep -Context $first -Step $first.Steps[$i] -Record $first.Records[$i] }
            # The worker restarts here; the job runs again from its journal and meets a changed value.
            $global:FakeExchange.Hybrid.TlsCertificateName = 'an admin''s value'
            $second = New-TestContext -Plan (Get-TestPlan)
            $second.Resume | Should -Be 'run'
            $second.Seq | Should -BeGreaterThan 0
            Invoke-CertsyncPlan -Context $second
            ($second.Records | Where-Object { $_['action'] -eq 'set-send-connector' })[0]['outcome'] | Should -Be 'rolled-back'
            $second.Records[1]['outcome'] | Should -Be 'rolled-back'
            $global:FakeExchange.SendConnectors[$script:Send] | Should -Be $script:OldName
            Find-FakeCertificate -Server 'EX01' -Thumbprint $script:NewThumbprint | Should -BeNullOrEmpty
            $global:FakeExchange.Hybrid.TlsCertificateName | Should -Be 'an admin''s value'
            $seqs = @(Get-Journal | ForEach-Object { $_.seq })
            $seqs | Should -Be (1..$seqs.Count)
        }

        It 'a job that restarted while rolling back finishes the rollback and goes no further' {
            $first = New-TestContext
            foreach ($i in 0..10) { $null = Invoke-CertsyncStep -Context $first -Step $first.Steps[$i] -Record $first.Records[$i] }
            Undo-CertsyncWrite -Context $first -Written $first.Written[$first.Written.Count - 1]
            $second = New-TestContext
            $second.Resume | Should -Be 'rollback'
            Invoke-CertsyncPlan -Context $second
            $second.Status | Should -Be 'rolled-back'
            $global:FakeExchange.ReceiveConnectors['EX01\Default Frontend EX01'] | Should -Be $script:OldName
            Find-FakeCertificate -Server 'EX02' -Thumbprint $script:NewThumbprint | Should -BeNullOrEmpty
            @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Set-HybridConfiguration' }).Count | Should -Be 0
        }
    }

    Context 'identity' {
        It 'opens a Kerberos remote session to the plan''s servers and never loads a snap-in' {
            Mock New-PSSession { throw 'Connecting to remote server EX01 failed: Access is denied.' }
            $context = New-TestContext
            { Connect-CertsyncExchange -Context $context } | Should -Throw '*EX01: *Access is denied*EX02: *Run As credential*'
            Should -Invoke New-PSSession -ParameterFilter { $ConfigurationName -eq 'Microsoft.Exchange' -and $ConnectionUri -eq 'http://EX01/PowerShell/' -and $Authentication -eq 'Kerberos' }
        }

        It 'names the role group when the session lacks a cmdlet' {
            Mock Get-Command { $null } -ParameterFilter { $Name -eq 'Set-HybridConfiguration' }
            { Assert-CertsyncCmdlets } | Should -Throw "*no Set-HybridConfiguration*'certsync Remediation'*"
        }

        It 'runs Edge steps only on the Edge server itself, alone in their job' {
            $plan = Get-TestPlan
            $plan.steps[0] | Add-Member -NotePropertyName 'edge' -NotePropertyValue $true
            { Connect-CertsyncExchange -Context (New-TestContext -Plan $plan) } | Should -Throw "*Edge server's own worker*"
        }
    }

    Context 'the callback' {
        BeforeAll {
            $script:SigningSecret = 'whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8='
        }

        It 'signs like shared/notify/signing.py (the same vector as tests/test_runbook.py)' {
            $body = [System.Text.Encoding]::UTF8.GetBytes('{"schema":"certsync.result/1","status":"succeeded"}')
            $headers = New-CertsyncWebhookHeaders -MessageId 'a7d33d27f549da6ee5b954d7079b8535-result' -Timestamp 1767225600 -Body $body -SigningSecrets $script:SigningSecret
            $headers['webhook-signature'] | Should -BeExactly 'v1,+LGiyAtgmk0BcKynw9Qwm3nptbZZB3apA3MRJ7vDQaQ='
        }

        It 'posts journal entries and the result as signed bytes, with no secret in any stream' {
            Mock Get-CertsyncManagedIdentityToken { 'eyJ0-token-value' }
            Mock Invoke-RestMethod -ParameterFilter { $Uri -like 'https://contoso-kv.vault.azure.net/secrets/*' } {
                if ($Uri -like '*/certsync-callback-key*') { [pscustomobject]@{ value = 'function-key-value' } } else { [pscustomobject]@{ value = $script:SigningSecret } }
            }
            Mock Invoke-RestMethod -ParameterFilter { $Method -eq 'Post' } { $script:Posted = @{ Uri = $Uri; Headers = $Headers; Body = $Body } }
            $context = New-TestContext
            $context.CallbackUrl = 'https://certsync.azurewebsites.net/api/jobs/a7d33d27f549da6ee5b954d7079b8535/result'
            $streams = @(Send-CertsyncCallback -Context $context -MessageId 'x-journal-1' -Json '{"schema":"certsync.journal/1"}' *>&1 | ForEach-Object { [string]$_ })
            [System.Text.Encoding]::UTF8.GetString($script:Posted.Body) | Should -Be '{"schema":"certsync.journal/1"}'
            $script:Posted.Headers['x-functions-key'] | Should -Be 'function-key-value'
            $script:Posted.Headers['webhook-id'] | Should -Be 'x-journal-1'
            Should -Invoke Invoke-RestMethod -ParameterFilter { $Headers['Authorization'] -eq 'Bearer eyJ0-token-value' } -Times 2 -Exactly
            ($streams -join ' ') | Should -Not -Match 'function-key-value|eyJ0|whsec_'
        }
    }

    Context 'the script as Azure Automation runs it' {
        It 'writes exactly one Output line, then throws when the plan is refused' {
            $encoded = [System.Convert]::ToBase64String([System.Text.Encoding]::UTF8.GetBytes('{"schema":"certsync.plan/1"}'))
            $output = New-Object System.Collections.Generic.List[object]
            { Invoke-CertsyncMain -Encoded $encoded -JobId $script:JobId -CorrelationId 'c' | ForEach-Object { $output.Add($_) } } | Should -Throw '*certsync failed*plan/2 only*'
            $output.Count | Should -Be 1
            $result = $output[0] | ConvertFrom-Json
            $result.status | Should -Be 'failed'
            @($result.steps).Count | Should -Be 0
        }
    }
}
