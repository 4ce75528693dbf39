<#
    Pester 5 tests of infra/runbooks/Get-CertsyncInventory.ps1 (the read-only discovery runbook) on
    Windows PowerShell 5.1, against FakeExchange.ps1 and FakeExchangeInventory.ps1. See README.md: the
    certsync CI has no PowerShell, so these tests never run there and are never counted as passed.
#>

BeforeAll {
    $script:Runbook = Join-Path $PSScriptRoot '..\..\infra\runbooks\Get-CertsyncInventory.ps1'
    . $script:Runbook -LoadOnly
    . (Join-Path $PSScriptRoot 'FakeExchange.ps1')
    . (Join-Path $PSScriptRoot 'FakeExchangeInventory.ps1')

    function Invoke-Discovery {
        # The runbook's main, as the job runs it; returns what it wrote to Output.
        param([string]$ExoOrganization = '', [switch]$SkipExchangeOnline)
        return @(Invoke-CertsyncDiscoveryMain -WorkerGroup 'hrw-exchange' -ExoOrganization $ExoOrganization -SkipExchangeOnline ([bool]$SkipExchangeOnline) -ExchangeLoadError '' 3>$null)
    }
}

Describe 'Get-CertsyncInventory' {
    BeforeEach {
        New-FakeExchange
        New-FakeInventory
        $env:CertsyncExoOrganization = $null
    }

    It 'writes exactly one Output line: certsync.inventory/1 with every section' {
        $output = Invoke-Discovery -SkipExchangeOnline
        $output.Count | Should -Be 1
        $output[0] | Should -BeOfType [string]
        $output[0] | Should -Not -Match "`n"
        $inventory = $output[0] | ConvertFrom-Json
        $inventory.schema | Should -Be 'certsync.inventory/1'
        $inventory.worker_group | Should -Be 'hrw-exchange'
        $inventory.collected_at | Should -Match '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$'
        @($inventory.servers | ForEach-Object { $_.Name }) | Should -Be @('EX01', 'EX02')
        $inventory.servers[0].InternalTransportCertificateThumbprint | Should -Be $global:FakeExchange.Internal['EX01']
        @($inventory.certificates | Where-Object { $_.Server -eq 'EX01' }).Count | Should -Be 2
        $old = @($inventory.certificates | Where-Object { $_.Thumbprint -eq '0CB65935AF474E04D10597A12E9538959901A4C8' })[0]
        $old.Issuer | Should -Be "CN=R10, O=Let's Encrypt, C=US"
        $old.Services | Should -Be 'IIS, SMTP'
        $old.Status | Should -Be 'Valid'
        @($inventory.send_connectors).Count | Should -Be 1
        @($inventory.receive_connectors).Count | Should -Be 2
        $inventory.hybrid_configuration.TlsCertificateName | Should -Be "<I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
        $inventory.exo | Should -BeNullOrEmpty
        @($inventory.errors).Count | Should -Be 0
    }

    It 'changes nothing (only Get- cmdlets are called)' {
        $null = Invoke-Discovery -ExoOrganization 'contoso.onmicrosoft.com'
        Get-FakeChanges | Should -BeNullOrEmpty
        @($global:FakeExchange.Calls | Where-Object { $_.Name -notmatch '^(Get|Connect|Disconnect)-' }).Count | Should -Be 0
    }

    It 'keeps one-element lists as arrays' {
        $text = (Invoke-Discovery -SkipExchangeOnline)[0]
        $inventory = $text | ConvertFrom-Json
        $text | Should -Match '"send_connectors":\[\{'
        $text | Should -Match '"errors":\[\]'
        $inventory.send_connectors.GetType().IsArray | Should -BeTrue
    }

    It 'records a server whose certificates cannot be read as an error naming it, never as empty' {
        $global:FakeExchange.Fail['Get-ExchangeCertificate'] = 'The RPC server is unavailable.'
        $inventory = (Invoke-Discovery -SkipExchangeOnline)[0] | ConvertFrom-Json
        @($inventory.errors | ForEach-Object { $_.where }) | Should -Be @('EX01', 'EX02')
        $inventory.errors[0].message | Should -Match 'Get-ExchangeCertificate: The RPC server is unavailable.'
        @($inventory.certificates).Count | Should -Be 0
        @($inventory.servers).Count | Should -Be 2
    }

    It 'names an organisation-wide cmdlet that failed' {
        $global:FakeExchange.Fail['Get-SendConnector'] = 'Access denied.'
        $global:FakeExchange.Fail['Get-HybridConfiguration'] = 'Access denied.'
        $inventory = (Invoke-Discovery -SkipExchangeOnline)[0] | ConvertFrom-Json
        @($inventory.errors | ForEach-Object { $_.where }) | Should -Be @('Get-SendConnector', 'Get-HybridConfiguration')
        $inventory.hybrid_configuration | Should -BeNullOrEmpty
    }

    It 'writes null for an organisation without a hybrid configuration' {
        $global:FakeExchange.Hybrid = $null
        $text = (Invoke-Discovery -SkipExchangeOnline)[0]
        $text | Should -Match '"hybrid_configuration":null'
    }

    It 'lists an Edge server it cannot reach as an error' {
        New-FakeInventory -WithEdge
        $inventory = (Invoke-Discovery -SkipExchangeOnline)[0] | ConvertFrom-Json
        @($inventory.servers | ForEach-Object { $_.Name }) | Should -Contain 'EDGE01'
        @($inventory.errors | Where-Object { $_.where -eq 'EDGE01' }).Count | Should -Be 1
    }

    It 'reads Exchange Online with the prefixed cmdlets when an organization is configured, and disconnects' {
        $inventory = (Invoke-Discovery -ExoOrganization 'contoso.onmicrosoft.com')[0] | ConvertFrom-Json
        $inventory.exo.inbound_connectors[0].TlsSenderCertificateName | Should -Be 'mail.contoso.com'
        $inventory.exo.outbound_connectors[0].TlsSettings | Should -Be 'DomainValidation'
        @($inventory.exo.accepted_domains | ForEach-Object { $_.DomainName }) | Should -Contain 'contoso.com'
        $global:FakeExchange.ExoConnected | Should -BeFalse
        $connect = @($global:FakeExchange.Calls | Where-Object { $_.Name -eq 'Connect-ExchangeOnline' })[0]
        $connect.Parameters['Prefix'] | Should -Be 'Certsync'
    }

    It 'records a failed Exchange Online sign-in as an error and keeps the on-premises part' {
        $global:FakeExchange.Fail['Connect-ExchangeOnline'] = 'AADSTS700016: application not found'
        $inventory = (Invoke-Discovery -ExoOrganization 'contoso.onmicrosoft.com')[0] | ConvertFrom-Json
        @($inventory.errors | ForEach-Object { $_.where }) | Should -Be @('Connect-ExchangeOnline')
        $inventory.exo | Should -BeNullOrEmpty
        @($inventory.servers).Count | Should -Be 2
    }

    It 'writes the line with its error and throws when the Exchange Management Shell is missing' {
        Mock Get-Command { $null } -ParameterFilter { $Name -eq 'Get-ExchangeServer' }
        { Invoke-CertsyncDiscoveryMain -WorkerGroup 'hrw-exchange' -ExoOrganization '' -SkipExchangeOnline $true -ExchangeLoadError 'no RemoteExchange.ps1' 3>$null } | Should -Throw '*Exchange Management Shell*'
    }

    It 'records per server whether its root store holds DigiCert Global Root G2, null when unreadable' {
        Mock Test-CertsyncDiscoveryExoRoot { if ($Server -eq 'EX01') { $true } else { $null } }
        $inventory = (Invoke-Discovery -SkipExchangeOnline)[0] | ConvertFrom-Json
        $inventory.servers[0].HasDigiCertGlobalRootG2 | Should -Be $true
        $inventory.servers[1].HasDigiCertGlobalRootG2 | Should -BeNullOrEmpty
        @($inventory.errors).Count | Should -Be 0
    }
}
