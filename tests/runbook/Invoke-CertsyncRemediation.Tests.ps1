<#
    Pester 5 tests of infra/runbooks/Invoke-CertsyncRemediation.ps1 on Windows PowerShell 5.1.
    They load the runbook's functions (-LoadOnly) and run them against FakeExchange.ps1, an in-memory
    Exchange organisation; Key Vault, the certificate stores and the PFX are mocked. See README.md:
    the certsync CI has no PowerShell, so these tests never run there and are never counted as passed.
#>

BeforeAll {
    $script:Runbook = Join-Path $PSScriptRoot '..\..\infra\runbooks\Invoke-CertsyncRemediation.ps1'
    $script:JobFile = Join-Path $PSScriptRoot '..\fixtures\runbook\job-issuer-changed.json'
    $script:ResultFixture = Join-Path $PSScriptRoot '..\fixtures\runbook\result-succeeded.json'
    . $script:Runbook -LoadOnly
    . (Join-Path $PSScriptRoot 'FakeExchange.ps1')

    $script:OldName = "<I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    $script:NewName = "<I>CN=R11, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    $script:NewThumbprint = '1514218ACD2571E7AA8E4920F2EBBE430A5D1996'
    $script:OldThumbprint = '0CB65935AF474E04D10597A12E9538959901A4C8'
    $script:Send = 'Outbound to Office 365 - 0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10'

    function New-TestContext {
        param([string]$Text = (Get-Content -Raw -LiteralPath $script:JobFile), [switch]$WhatIfMode, [switch]$SkipExchangeOnline, [string]$ExoOrganization = '')
        $parsed = ConvertFrom-CertsyncPlan -Text $Text
        return New-CertsyncContext -Plan $parsed.Plan -JobId $parsed.JobId -CorrelationId $parsed.CorrelationId -WhatIfMode ([bool]$WhatIfMode) -SkipExchangeOnline ([bool]$SkipExchangeOnline) -ExoOrganization $ExoOrganization
    }

    function Get-Record {
        param([hashtable]$Context, [int]$N)
        return @($Context.Records | Where-Object { $_['n'] -eq $N })[0]
    }

    function Get-Outcomes {
        param([hashtable]$Context)
        return (@($Context.Records | ForEach-Object { '{0}:{1}' -f $_['n'], $_['outcome'] }) -join ' ')
    }

    function New-SmallPlanText {
        # A certsync.plan/1 body with only the given steps (for the Exchange Online and Main tests).
        param([object[]]$Steps)
        return (ConvertTo-Json -Depth 6 -Compress -InputObject ([ordered]@{
                    schema      = 'certsync.plan/1'
                    certificate = [ordered]@{
                        vault = 'contoso-kv'; name = 'exch-hybrid-smtp'; version = '6aa99e8a0ea145e287007d4e46fb1787'
                        secret_id = 'https://contoso-kv.vault.azure.net/secrets/exch-hybrid-smtp/6aa99e8a0ea145e287007d4e46fb1787'
                        thumbprint = $script:NewThumbprint; tls_certificate_name = $script:NewName; intermediates = @()
                    }
                    previous    = [ordered]@{ thumbprint = $script:OldThumbprint; tls_certificate_name = $script:OldName; version = '4dfcc8386965431ba721d1c629d006a6' }
                    blocked     = $null
                    servers     = @('EX01')
                    summary     = 'test plan'
                    steps       = $Steps
                }))
    }
}

Describe 'Invoke-CertsyncRemediation' {
    BeforeAll {
        Mock Test-CertsyncStoreCertificate { @($global:FakeExchange.CaStore[(Get-FakeServer $Server)]) -contains $Thumbprint }
        Mock Add-CertsyncStoreCertificate {
            $key = Get-FakeServer $Server
            $global:FakeExchange.CaStore[$key] = @($global:FakeExchange.CaStore[$key]) + $Thumbprint
        }
        Mock Read-CertsyncPfx { $Context.Pfx = @{ Bytes = $global:FakePfxBytes; Password = $null } }
    }

    BeforeEach {
        New-FakeExchange
        $global:FakePfxBytes = [byte[]](1..64)
    }

    Context 'a first run' {
        It 'stages on both servers, switches every connector, verifies and keeps the old certificate that still serves IIS' {
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'succeeded'
            $context.Error | Should -BeNullOrEmpty
            Get-Outcomes $context | Should -Be '1:done 2:done 3:done 4:done 5:done 6:done 7:done 8:done 9:done 10:done 11:done 12:done 13:done 14:done 15:done 16:skipped 17:skipped'
            $global:FakeExchange.SendConnectors[$script:Send] | Should -BeExactly $script:NewName
            $global:FakeExchange.ReceiveConnectors['EX01\Default Frontend EX01'] | Should -BeExactly $script:NewName
            $global:FakeExchange.ReceiveConnectors['EX02\Default Frontend EX02'] | Should -BeExactly $script:NewName
            $global:FakeExchange.Hybrid.TlsCertificateName | Should -BeExactly $script:NewName
            foreach ($server in 'EX01', 'EX02') {
                (Find-FakeCertificate -Server $server -Thumbprint $script:NewThumbprint).Services | Should -Match 'SMTP'
                # The plan/1 plan enables only SMTP on the new certificate; the old one still serves OWA.
                Find-FakeCertificate -Server $server -Thumbprint $script:OldThumbprint | Should -Not -BeNullOrEmpty
                $global:FakeExchange.CaStore[$server] | Should -Contain '5E44ABD5BDE8651B8E18C866E84BBD82FC6F34A8'
            }
            (Get-Record $context 9)['before'] | Should -BeExactly $script:OldName
            (Get-Record $context 9)['after'] | Should -BeExactly $script:NewName
            (Get-Record $context 16)['message'] | Should -Match '^kept: it still serves IIS on EX01'
            @($context.Kept | ForEach-Object { '{0}:{1}' -f $_['server'], $_['thumbprint'] }) | Should -Be @("EX01:$($script:OldThumbprint)", "EX02:$($script:OldThumbprint)")
            @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Remove-ExchangeCertificate' }) | Should -HaveCount 0
            @($context.ServerNames | ForEach-Object { '{0}:{1}' -f $_['server'], $_['matches'] }) | Should -Be @('EX01:True', 'EX02:True')
        }

        It 'retires the old certificate when it serves nothing the new one does not' {
            foreach ($server in 'EX01', 'EX02') { (Find-FakeCertificate -Server $server -Thumbprint $script:OldThumbprint).Services = 'SMTP' }
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'succeeded'
            (Get-Record $context 16)['outcome'] | Should -Be 'done'
            (Get-Record $context 17)['outcome'] | Should -Be 'done'
            foreach ($server in 'EX01', 'EX02') { Find-FakeCertificate -Server $server -Thumbprint $script:OldThumbprint | Should -BeNullOrEmpty }
            $context.Kept | Should -HaveCount 0
        }

        It 'imports the PFX without an exportable key and zeroes it after the last import' {
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $imports = @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Import-ExchangeCertificate' })
            $imports | Should -HaveCount 2
            $imports | ForEach-Object { $_.Parameters['PrivateKeyExportable'] | Should -BeFalse }
            @($imports | ForEach-Object { $_.Parameters['Server'] }) | Should -Be @('EX01', 'EX02')
            @($global:FakePfxBytes | Where-Object { $_ -ne 0 }) | Should -HaveCount 0
            $context.Pfx | Should -BeNullOrEmpty
        }

        It 'never replaces the internal transport certificate' {
            $before = @{ EX01 = $global:FakeExchange.Internal['EX01']; EX02 = $global:FakeExchange.Internal['EX02'] }
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $global:FakeExchange.Internal['EX01'] | Should -Be $before.EX01
            $global:FakeExchange.Internal['EX02'] | Should -Be $before.EX02
            $enables = @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Enable-ExchangeCertificate' -and $_.Parameters['Server'] -eq 'EX01' })
            @($enables | ForEach-Object { $_.Parameters['Thumbprint'] }) | Should -Be @($script:NewThumbprint, $before.EX01)
            (Get-Record $context 3)['message'] | Should -Match 'restored'
        }

        It 'writes an inventory of every target connector and the certificates on each server' {
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $connectors = @($context.Inventory | Where-Object { $_['kind'] -ne 'certificate' })
            $connectors | Should -HaveCount 4
            $connectors | ForEach-Object { $_['tls_certificate_name'] | Should -BeExactly $script:NewName }
            $certificates = @($context.Inventory | Where-Object { $_['kind'] -eq 'certificate' })
            @($certificates | ForEach-Object { '{0}:{1}:{2}' -f $_['server'], $_['thumbprint'], $_['status'] }) | Should -Be @("EX01:$($script:NewThumbprint):Valid", "EX02:$($script:NewThumbprint):Valid")
        }
    }

    Context 'idempotency (a worker reboot restarts the job from the beginning)' {
        It 're-running a finished plan changes nothing and reports already' {
            Invoke-CertsyncPlan -Context (New-TestContext)
            $state = Get-FakeState
            $global:FakeExchange.Calls.Clear()

            $again = New-TestContext
            Invoke-CertsyncPlan -Context $again

            $again.Status | Should -Be 'succeeded'
            Get-FakeChanges | Should -HaveCount 0
            Get-FakeState | Should -BeExactly $state
            foreach ($n in 1, 2, 3, 5, 6, 7, 9, 10, 11, 12) { (Get-Record $again $n)['outcome'] | Should -Be 'already' -Because "step $n is done" }
            foreach ($n in 16, 17) { (Get-Record $again $n)['message'] | Should -Match '^kept: it still serves IIS' }
        }

        It 'restores the internal transport certificate an interrupted run left replaced' {
            $selfSigned = $global:FakeExchange.Internal['EX01']
            Add-FakeCertificate -Server 'EX01' -Thumbprint $script:NewThumbprint -Issuer "CN=R11, O=Let's Encrypt, C=US" -Subject 'CN=mail.contoso.com' -Services 'SMTP'
            $global:FakeExchange.Internal['EX01'] = $script:NewThumbprint

            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $global:FakeExchange.Internal['EX01'] | Should -Be $selfSigned
            (Get-Record $context 3)['outcome'] | Should -Be 'done'
            (Get-Record $context 3)['message'] | Should -Match 'interrupted'
        }
    }

    Context '-WhatIf' {
        It 'changes nothing and says what it would do' {
            $state = Get-FakeState
            $context = New-TestContext -WhatIfMode
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'what-if'
            Get-FakeChanges | Should -HaveCount 0
            Get-FakeState | Should -BeExactly $state
            Should -Invoke Add-CertsyncStoreCertificate -Times 0 -Exactly
            Should -Invoke Read-CertsyncPfx -Times 0 -Exactly
            foreach ($n in 1..15) { (Get-Record $context $n)['outcome'] | Should -Be 'would-do' -Because "step $n would change or check something" }
            (Get-Record $context 16)['outcome'] | Should -Be 'skipped'
            (Get-Record $context 16)['message'] | Should -Match '^kept: it still serves IIS'
            (Get-Record $context 9)['after'] | Should -BeExactly $script:NewName
        }
    }

    Context 'values certsync does not know' {
        It 'refuses to overwrite an unknown TlsCertificateName and rolls back what it changed' {
            $unknown = '<I>CN=Someone Else CA<S>CN=mail.contoso.com'
            $global:FakeExchange.ReceiveConnectors['EX02\Default Frontend EX02'] = $unknown
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'rolled-back'
            $context.Error | Should -Match 'Step 11 \(set-receive-connector on EX02\) failed'
            $global:FakeExchange.ReceiveConnectors['EX02\Default Frontend EX02'] | Should -BeExactly $unknown
            $global:FakeExchange.ReceiveConnectors['EX01\Default Frontend EX01'] | Should -BeExactly $script:OldName
            $global:FakeExchange.SendConnectors[$script:Send] | Should -BeExactly $script:OldName
            @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Set-ReceiveConnector' -and $_.Parameters['Identity'] -eq 'EX02\Default Frontend EX02' }) | Should -HaveCount 0
            (Get-Record $context 9)['outcome'] | Should -Be 'rolled-back'
            (Get-Record $context 10)['outcome'] | Should -Be 'rolled-back'
            (Get-Record $context 11)['outcome'] | Should -Be 'failed'
            (Get-Record $context 11)['before'] | Should -BeExactly $unknown
            foreach ($n in 12..17) { (Get-Record $context $n)['message'] | Should -Be 'not run: an earlier step failed' }
            Find-FakeCertificate -Server 'EX01' -Thumbprint $script:OldThumbprint | Should -Not -BeNullOrEmpty
        }

        It 'restores changed connectors newest first when a later step fails' {
            $global:FakeExchange.Fail['Get-HybridConfiguration'] = 'Active Directory operation failed'
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'rolled-back'
            (Get-Record $context 12)['outcome'] | Should -Be 'failed'
            $restores = @($global:FakeExchange.Calls | Where-Object { $_.Name -in 'Set-SendConnector', 'Set-ReceiveConnector' -and [string]$_.Parameters['TlsCertificateName'] -ceq $script:OldName } | ForEach-Object { $_.Parameters['Identity'] })
            $restores | Should -Be @('EX02\Default Frontend EX02', 'EX01\Default Frontend EX01', $script:Send)
            $global:FakeExchange.SendConnectors[$script:Send] | Should -BeExactly $script:OldName
        }

        It 'stops in the stage phase on a RevocationCheckFailure and touches no connector' {
            Add-FakeCertificate -Server 'EX02' -Thumbprint $script:NewThumbprint -Issuer "CN=R11, O=Let's Encrypt, C=US" -Subject 'CN=mail.contoso.com' -Services 'SMTP' -Status 'RevocationCheckFailure'
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'failed'
            $context.Error | Should -Match 'RevocationCheckFailure'
            $context.Error | Should -Match 'CRL'
            @($global:FakeExchange.Calls | Where-Object { $_.Name -like 'Set-*' }) | Should -HaveCount 0
        }

        It 'refuses a plan with an action it does not know before running anything' {
            $text = (Get-Content -Raw -LiteralPath $script:JobFile) -replace '"verify-connectors"', '"verify-the-moon"'
            { ConvertFrom-CertsyncPlan -Text $text } | Should -Throw "*unknown*verify-the-moon*"
        }

        It 'refuses a blocked plan' {
            $text = (Get-Content -Raw -LiteralPath $script:JobFile) -replace '"blocked": null', '"blocked": "the assessment is Revoked"'
            { ConvertFrom-CertsyncPlan -Text $text } | Should -Throw '*blocked*'
        }
    }

    Context 'retiring the old certificate' {
        BeforeEach {
            # Only SMTP, so what each test adds is the one reason to keep it.
            foreach ($server in 'EX01', 'EX02') { (Find-FakeCertificate -Server $server -Thumbprint $script:OldThumbprint).Services = 'SMTP' }
        }

        It 'keeps a certificate that still serves <Services> and says so' -TestCases @(
            @{ Services = 'IIS, SMTP' }, @{ Services = 'POP, IMAP, SMTP' }, @{ Services = 'UM' }, @{ Services = 'Federation' }
        ) {
            (Find-FakeCertificate -Server 'EX01' -Thumbprint $script:OldThumbprint).Services = $Services
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'succeeded'
            (Get-Record $context 16)['outcome'] | Should -Be 'skipped'
            (Get-Record $context 16)['message'] | Should -Match ('^kept: it still serves ' + [regex]::Escape(($Services -replace ', SMTP', '')))
            Find-FakeCertificate -Server 'EX01' -Thumbprint $script:OldThumbprint | Should -Not -BeNullOrEmpty
            (Get-Record $context 17)['outcome'] | Should -Be 'done'
            @($context.Kept) | Should -HaveCount 1
        }

        It 'keeps a certificate a connector outside the plan still references' {
            $global:FakeExchange.SendConnectors['Relay to partner'] = $script:OldName.ToUpperInvariant()
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'succeeded'
            (Get-Record $context 16)['outcome'] | Should -Be 'skipped'
            (Get-Record $context 16)['message'] | Should -Match 'Relay to partner'
            Find-FakeCertificate -Server 'EX01' -Thumbprint $script:OldThumbprint | Should -Not -BeNullOrEmpty
            @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Remove-ExchangeCertificate' }) | Should -HaveCount 0
        }

        It 'keeps the internal transport certificate' {
            $global:FakeExchange.Internal['EX01'] = $script:OldThumbprint
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            (Get-Record $context 16)['outcome'] | Should -Be 'skipped'
            (Get-Record $context 16)['message'] | Should -Match 'internal transport'
            Find-FakeCertificate -Server 'EX01' -Thumbprint $script:OldThumbprint | Should -Not -BeNullOrEmpty
        }

        It 'reports an Exchange refusal as skipped, not as a failure' {
            $global:FakeExchange.Fail['Remove-ExchangeCertificate'] = 'These certificates are tagged with following Send Connectors'
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'succeeded'
            (Get-Record $context 16)['outcome'] | Should -Be 'skipped'
            (Get-Record $context 16)['message'] | Should -Match 'tagged'
        }
    }

    Context "Exchange's own rendering of the name" {
        It 'switches nothing, rolls staging back and reports both strings when a server renders the name differently' {
            $global:FakeExchange.Pfx.Issuer = "C=US, O=Let's Encrypt, CN=R11"
            $state = Get-FakeState
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'rolled-back'
            $context.Error | Should -Match ([regex]::Escape("renders certificate $($script:NewThumbprint) as '<I>C=US, O=Let's Encrypt, CN=R11<S>CN=mail.contoso.com'"))
            $context.Error | Should -Match ([regex]::Escape("not certsync's '$($script:NewName)'"))
            @($global:FakeExchange.Calls | Where-Object { $_.Name -like 'Set-*' }) | Should -HaveCount 0
            foreach ($server in 'EX01', 'EX02') { Find-FakeCertificate -Server $server -Thumbprint $script:NewThumbprint | Should -BeNullOrEmpty }
            $global:FakeExchange.Internal['EX01'] | Should -Be ('5E1FEX01' + ('0' * 32))
            (Get-Record $context 4)['outcome'] | Should -Be 'failed'
            (Get-Record $context 2)['outcome'] | Should -Be 'rolled-back'
            (Get-Record $context 6)['outcome'] | Should -Be 'rolled-back'
            $entry = @($context.ServerNames)[0]
            $entry['server'] | Should -Be 'EX01'
            $entry['issuer'] | Should -BeExactly "C=US, O=Let's Encrypt, CN=R11"
            $entry['expected'] | Should -BeExactly $script:NewName
            $entry['matches'] | Should -BeFalse
            $document = ConvertTo-CertsyncResultJson -Context $context | ConvertFrom-Json
            $document.server_names[0].subject | Should -BeExactly 'CN=mail.contoso.com'
            $document.server_names[0].matches | Should -BeFalse
        }

        It 'treats a difference in case only as the same name, as Exchange does' {
            $global:FakeExchange.Pfx.Subject = 'cn=MAIL.contoso.com'
            $global:FakeExchange.ReceiveConnectors['EX02\Default Frontend EX02'] = $script:NewName.ToUpperInvariant()
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'succeeded'
            @($context.ServerNames | ForEach-Object { $_['matches'] }) | Should -Be @($true, $true)
            (Get-Record $context 11)['outcome'] | Should -Be 'already'
        }
    }

    Context 'certsync.plan/2' {
        BeforeAll {
            $script:Plan2Steps = @(
                [ordered]@{ phase = 'stage'; action = 'import-certificate'; server = 'EX01'; object = 'Cert:\LocalMachine\My'; property = $null; previous = 'absent'; value = 'present' },
                [ordered]@{ phase = 'stage'; action = 'enable-services'; server = 'EX01'; object = $script:NewThumbprint; property = 'Services'; previous = $null; value = @('IIS', 'SMTP') },
                [ordered]@{ phase = 'stage'; action = 'check-name'; server = 'EX01'; object = $script:NewThumbprint; property = $null; previous = $null; value = $script:NewName },
                [ordered]@{ phase = 'switch'; action = 'set-send-connector'; server = $null; object = $script:Send; property = 'TlsCertificateName'; previous = $script:OldName; value = $script:NewName },
                [ordered]@{ phase = 'switch'; action = 'set-hybrid-configuration'; server = $null; object = 'Hybrid Configuration'; property = 'TlsCertificateName'; previous = $script:OldName; value = $script:NewName },
                [ordered]@{ phase = 'verify'; action = 'check-status'; server = 'EX01'; object = $script:NewThumbprint; property = $null; previous = $null; value = 'Valid' },
                [ordered]@{ phase = 'retire'; action = 'remove-certificate'; server = 'EX01'; object = $script:OldThumbprint; property = $null; previous = 'present'; value = 'absent' }
            )
        }

        It 'enables every service the old certificate had, keeps the internal transport certificate, checks the name and removes the old one' {
            $global:FakeExchange.ReceiveConnectors.Clear()
            $text = (New-SmallPlanText -Steps $script:Plan2Steps) -replace 'certsync.plan/1', 'certsync.plan/2'
            $context = New-TestContext -Text $text
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'succeeded'
            Get-Outcomes $context | Should -Be '1:done 2:done 3:done 4:done 5:done 6:done 7:done'
            (Find-FakeCertificate -Server 'EX01' -Thumbprint $script:NewThumbprint).Services | Should -Be 'IIS, SMTP'
            $global:FakeExchange.Internal['EX01'] | Should -Be ('5E1FEX01' + ('0' * 32))
            $global:FakeExchange.Hybrid.TlsCertificateName | Should -BeExactly $script:NewName
            Find-FakeCertificate -Server 'EX01' -Thumbprint $script:OldThumbprint | Should -BeNullOrEmpty
        }

        It 'gives IIS back to the old certificate when the name check fails' {
            $global:FakeExchange.Pfx.Subject = 'CN=mail.contoso.com, O=Contoso'
            $text = (New-SmallPlanText -Steps $script:Plan2Steps) -replace 'certsync.plan/1', 'certsync.plan/2'
            $context = New-TestContext -Text $text
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'rolled-back'
            (Get-Record $context 3)['outcome'] | Should -Be 'failed'
            @($global:FakeExchange.Calls | Where-Object { $_.Name -like 'Set-*' }) | Should -HaveCount 0
            $enables = @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Enable-ExchangeCertificate' } | ForEach-Object { '{0}:{1}' -f $_.Parameters['Thumbprint'], ($_.Parameters['Services'] -join ',') })
            $enables[-1] | Should -Be "$($script:OldThumbprint):IIS"
            Find-FakeCertificate -Server 'EX01' -Thumbprint $script:NewThumbprint | Should -BeNullOrEmpty
        }

        It 'refuses a plan/1 action in a plan/2 plan' {
            $text = (New-SmallPlanText -Steps @([ordered]@{ phase = 'stage'; action = 'enable-smtp'; server = 'EX01'; object = $script:NewThumbprint })) -replace 'certsync.plan/1', 'certsync.plan/2'
            { ConvertFrom-CertsyncPlan -Text $text } | Should -Throw "*unknown action 'enable-smtp' for certsync.plan/2*"
        }
    }

    Context 'Exchange Online' {
        BeforeAll {
            $script:ExoSteps = @(
                [ordered]@{ n = 1; phase = 'switch'; action = 'set-exo-inbound-connector'; server = $null; object = 'Inbound from contoso'; where = 'exchange-online'; previous = 'mail.contoso.com'; value = 'smtp.contoso.com' },
                [ordered]@{ n = 2; phase = 'verify'; action = 'verify-connectors'; server = $null; object = @('Inbound from contoso'); previous = 'mail.contoso.com'; value = 'smtp.contoso.com' }
            )
        }

        It 'connects with the Certsync prefix, sets TlsSenderCertificateName and disconnects' {
            $context = New-TestContext -Text (New-SmallPlanText -Steps $script:ExoSteps) -ExoOrganization 'contoso.onmicrosoft.com'
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'succeeded'
            $global:FakeExchange.Exo['Inbound from contoso'] | Should -Be 'smtp.contoso.com'
            $connect = @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Connect-ExchangeOnline' })
            $connect | Should -HaveCount 1
            $connect[0].Parameters['Prefix'] | Should -Be 'Certsync'
            $connect[0].Parameters['Organization'] | Should -Be 'contoso.onmicrosoft.com'
            $global:FakeExchange.ExoConnected | Should -BeFalse
        }

        It 'skips Exchange Online with -SkipExchangeOnline and says what to do' {
            $context = New-TestContext -Text (New-SmallPlanText -Steps $script:ExoSteps) -SkipExchangeOnline
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'succeeded'
            (Get-Record $context 1)['outcome'] | Should -Be 'skipped'
            (Get-Record $context 1)['message'] | Should -Match 'smtp.contoso.com'
            @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Connect-ExchangeOnline' }) | Should -HaveCount 0
        }

        It 'fails clearly without an organization' {
            $context = New-TestContext -Text (New-SmallPlanText -Steps $script:ExoSteps)
            Invoke-CertsyncPlan -Context $context

            $context.Status | Should -Be 'failed'
            $context.Error | Should -Match 'CertsyncExoOrganization'
        }
    }

    Context 'the result line' {
        It 'is one line of JSON with exactly the fields of certsync.result/1 and the fixture' {
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context
            $json = ConvertTo-CertsyncResultJson -Context $context

            $json | Should -Not -Match "`n"
            $document = $json | ConvertFrom-Json
            $fixture = Get-Content -Raw -LiteralPath $script:ResultFixture | ConvertFrom-Json
            @($document.PSObject.Properties.Name) | Should -Be @($fixture.PSObject.Properties.Name)
            @($document.certificate.PSObject.Properties.Name) | Should -Be @($fixture.certificate.PSObject.Properties.Name)
            @($document.steps[0].PSObject.Properties.Name) | Should -Be @($fixture.steps[0].PSObject.Properties.Name)
            @($document.inventory[0].PSObject.Properties.Name) | Should -Be @($fixture.inventory[0].PSObject.Properties.Name)
            $document.schema | Should -Be 'certsync.result/1'
            $document.job_id | Should -Be 'a7d33d27f549da6ee5b954d7079b8535'
            $document.status | Should -Be 'succeeded'
            $document.steps | Should -HaveCount 17
            $document.steps[8].before | Should -BeExactly $script:OldName
            @($document.server_names[0].PSObject.Properties.Name) | Should -Be @('server', 'subject', 'issuer', 'expected', 'matches')
            @($document.kept[0].PSObject.Properties.Name) | Should -Be @($fixture.kept[0].PSObject.Properties.Name)
        }

        It 'keeps one-element lists as JSON arrays' {
            $steps = @([ordered]@{ n = 1; phase = 'switch'; action = 'set-send-connector'; server = $null; object = $script:Send; previous = $script:OldName; value = $script:NewName })
            $context = New-TestContext -Text (New-SmallPlanText -Steps $steps)
            Invoke-CertsyncPlan -Context $context
            $json = ConvertTo-CertsyncResultJson -Context $context

            $json | Should -Match '"steps":\[\{'
            $json | Should -Match '"inventory":\[\{'
        }
    }

    Context 'the callback' {
        BeforeAll {
            $script:SigningSecret = 'whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8='
            Mock Get-CertsyncManagedIdentityToken { 'eyJ0-token-value' }
            Mock Get-CertsyncKeyVaultSecret {
                if ($SecretUri -like '*/secrets/certsync-callback-key') { return [pscustomobject]@{ value = 'function-key-value' } }
                return [pscustomobject]@{ value = $script:SigningSecret }
            }
            Mock Invoke-RestMethod { $script:Posted = @{ Uri = $Uri; Headers = $Headers; Body = $Body; ContentType = $ContentType; Method = $Method } }
        }

        It 'signs like shared/notify/signing.py (the same vector as tests/test_runbook.py)' {
            $body = [System.Text.Encoding]::UTF8.GetBytes('{"schema":"certsync.result/1","status":"succeeded"}')
            $headers = New-CertsyncWebhookHeaders -MessageId 'a7d33d27f549da6ee5b954d7079b8535-result' -Timestamp 1767225600 -Body $body -SigningSecrets $script:SigningSecret
            $headers['webhook-signature'] | Should -BeExactly 'v1,+LGiyAtgmk0BcKynw9Qwm3nptbZZB3apA3MRJ7vDQaQ='
        }

        It 'posts the exact bytes it signed, with the function key, and logs no secret' {
            $context = New-TestContext
            Invoke-CertsyncPlan -Context $context
            $json = ConvertTo-CertsyncResultJson -Context $context
            $url = 'https://certsync.azurewebsites.net/api/jobs/a7d33d27f549da6ee5b954d7079b8535/result'
            $streams = @(Send-CertsyncCallback -Context $context -Url $url -Json $json *>&1 | ForEach-Object { [string]$_ })

            $script:Posted.Method | Should -Be 'Post'
            $script:Posted.Uri | Should -Be $url
            [System.Text.Encoding]::UTF8.GetString($script:Posted.Body) | Should -BeExactly $json
            $script:Posted.Headers['x-functions-key'] | Should -Be 'function-key-value'
            $script:Posted.Headers['webhook-id'] | Should -Be 'a7d33d27f549da6ee5b954d7079b8535-result'
            $timestamp = [long]$script:Posted.Headers['webhook-timestamp']
            $hmac = New-Object System.Security.Cryptography.HMACSHA256
            $hmac.Key = [System.Convert]::FromBase64String($script:SigningSecret.Substring(6))
            [byte[]]$signed = [System.Text.Encoding]::UTF8.GetBytes("a7d33d27f549da6ee5b954d7079b8535-result.$timestamp.") + $script:Posted.Body
            $script:Posted.Headers['webhook-signature'] | Should -BeExactly ('v1,' + [System.Convert]::ToBase64String($hmac.ComputeHash($signed)))
            ($streams -join "`n") | Should -Not -Match 'function-key-value|token-value|AAECAwQFBgcICQoL'
        }

        It 'turns a failed callback into a warning' {
            Mock Invoke-RestMethod { throw 'The remote server returned an error: (503) Server Unavailable.' }
            $context = New-TestContext
            $warnings = @(Send-CertsyncCallback -Context $context -Url 'https://certsync.azurewebsites.net/api/jobs/x/result' -Json '{}' 3>&1)
            ($warnings -join ' ') | Should -Match 'callback failed'
        }

        It 'never sends the token to a host that is not Key Vault' {
            { Get-CertsyncVaultEndpoint -SecretId 'https://contoso-kv.example.com/secrets/x/1' -VaultName 'contoso-kv' } | Should -Throw '*not a Key Vault host*'
            { Get-CertsyncVaultEndpoint -SecretId 'http://contoso-kv.vault.azure.net/secrets/x/1' -VaultName 'contoso-kv' } | Should -Throw '*https*'
            (Get-CertsyncVaultEndpoint -SecretId 'https://contoso-kv.vault.azure.net/secrets/x/1' -VaultName 'contoso-kv').Resource | Should -Be 'https://vault.azure.net'
        }
    }

    Context 'the script as Azure Automation runs it' {
        BeforeAll {
            $script:SmallPlan = Join-Path $TestDrive 'plan.json'
            $steps = @(
                [ordered]@{ n = 1; phase = 'switch'; action = 'set-send-connector'; server = $null; object = $script:Send; previous = $script:OldName; value = $script:NewName },
                [ordered]@{ n = 2; phase = 'verify'; action = 'verify-connectors'; server = $null; object = @($script:Send); previous = $script:OldName; value = $script:NewName }
            )
            Set-Content -LiteralPath $script:SmallPlan -Value (New-SmallPlanText -Steps $steps) -Encoding UTF8
        }

        It 'writes exactly one Output object, the result line' {
            $output = @(& $script:Runbook -PlanFile $script:SmallPlan -SkipExchangeOnline)

            $output | Should -HaveCount 1
            ($output[0] | ConvertFrom-Json).status | Should -Be 'succeeded'
            $global:FakeExchange.SendConnectors[$script:Send] | Should -BeExactly $script:NewName
        }

        It 'writes the result line and then throws when the run fails' {
            $global:FakeExchange.SendConnectors[$script:Send] = '<I>CN=Someone Else CA<S>CN=mail.contoso.com'
            $caught = $null
            try {
                & $script:Runbook -PlanFile $script:SmallPlan -SkipExchangeOnline -OutVariable lines | Out-Null
            } catch {
                $caught = $_
            }

            $caught | Should -Not -BeNullOrEmpty
            [string]$caught | Should -Match '^certsync failed: Step 1'
            @($lines) | Should -HaveCount 1
            ($lines[0] | ConvertFrom-Json).status | Should -Be 'failed'
        }

        It 'changes nothing with -WhatIf' {
            $state = Get-FakeState
            $output = @(& $script:Runbook -PlanFile $script:SmallPlan -SkipExchangeOnline -WhatIf)

            ($output[0] | ConvertFrom-Json).status | Should -Be 'what-if'
            Get-FakeState | Should -BeExactly $state
        }

        It 'reports a plan that is not JSON in the result line' {
            $bad = Join-Path $TestDrive 'bad.json'
            Set-Content -LiteralPath $bad -Value '{ not json' -Encoding UTF8
            $caught = $null
            try { & $script:Runbook -PlanFile $bad -OutVariable lines | Out-Null } catch { $caught = $_ }

            [string]$caught | Should -Match 'not valid JSON'
            ($lines[0] | ConvertFrom-Json).error | Should -Match 'not valid JSON'
        }
    }
}
