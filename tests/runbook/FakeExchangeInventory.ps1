<#
    What the discovery runbook (infra/runbooks/Get-CertsyncInventory.ps1) reads beyond FakeExchange.ps1:
    the organisation's servers (Get-ExchangeServer), listing Exchange Online's connectors and accepted
    domains. Dot-source it after FakeExchange.ps1 and call New-FakeInventory after New-FakeExchange.
    Like FakeExchange.ps1, every call is logged in $global:FakeExchange.Calls and $global:FakeExchange.Fail
    makes a cmdlet throw.
#>

function global:New-FakeInventory {
    # EX01 and EX02 (Mailbox) of New-FakeExchange, optionally an Edge server, and an EXO tenant.
    param([switch]$WithEdge)
    $global:FakeExchange.Servers = [System.Collections.Generic.List[object]]::new()
    foreach ($name in @('EX01', 'EX02')) {
        $global:FakeExchange.Servers.Add(@{ Name = $name; Fqdn = "$($name.ToLowerInvariant()).contoso.local"; ServerRole = 'Mailbox'; IsEdgeServer = $false })
    }
    if ($WithEdge) {
        $global:FakeExchange.Servers.Add(@{ Name = 'EDGE01'; Fqdn = 'edge01.perimeter.contoso.com'; ServerRole = 'Edge'; IsEdgeServer = $true })
    }
    $global:FakeExchange.ExoOutbound = @{ 'Outbound to contoso' = 'mail.contoso.com' }
    $global:FakeExchange.AcceptedDomains = @('contoso.com', 'contoso.mail.onmicrosoft.com')
}

function global:Get-ExchangeServer {
    [CmdletBinding()]
    param([Parameter(Position = 0)][string]$Identity)
    Add-FakeCall 'Get-ExchangeServer' $PSBoundParameters
    foreach ($server in $global:FakeExchange.Servers) {
        [pscustomobject]@{
            Name                = $server.Name
            Fqdn                = $server.Fqdn
            ServerRole          = $server.ServerRole
            AdminDisplayVersion = 'Version 15.2 (Build 1544.4)'
            Site                = 'contoso.local/Configuration/Sites/Default-First-Site-Name'
            IsEdgeServer        = $server.IsEdgeServer
        }
    }
}

function global:Get-CertsyncInboundConnector {
    # Listing (no -Identity) as discovery calls it; with -Identity as the remediation runbook does.
    [CmdletBinding()]
    param([Parameter(Position = 0)][string]$Identity)
    Add-FakeCall 'Get-CertsyncInboundConnector' $PSBoundParameters
    if (-not $global:FakeExchange.ExoConnected) { throw 'Not connected to Exchange Online.' }
    foreach ($entry in $global:FakeExchange.Exo.GetEnumerator()) {
        if ($Identity -and $entry.Key -ne $Identity) { continue }
        [pscustomobject]@{ Identity = $entry.Key; ConnectorType = 'OnPremises'; TlsSenderCertificateName = $entry.Value; RequireTls = $true; RestrictDomainsToCertificate = $false; Enabled = $true }
    }
}

function global:Get-CertsyncOutboundConnector {
    [CmdletBinding()]
    param([Parameter(Position = 0)][string]$Identity)
    Add-FakeCall 'Get-CertsyncOutboundConnector' $PSBoundParameters
    if (-not $global:FakeExchange.ExoConnected) { throw 'Not connected to Exchange Online.' }
    foreach ($entry in $global:FakeExchange.ExoOutbound.GetEnumerator()) {
        [pscustomobject]@{ Identity = $entry.Key; ConnectorType = 'OnPremises'; TlsSettings = 'DomainValidation'; TlsDomain = $entry.Value; SmartHosts = @($entry.Value); RecipientDomains = @('contoso.com'); Enabled = $true }
    }
}

function global:Get-CertsyncAcceptedDomain {
    [CmdletBinding()]
    param([Parameter(Position = 0)][string]$Identity)
    Add-FakeCall 'Get-CertsyncAcceptedDomain' $PSBoundParameters
    if (-not $global:FakeExchange.ExoConnected) { throw 'Not connected to Exchange Online.' }
    foreach ($domain in $global:FakeExchange.AcceptedDomains) {
        [pscustomobject]@{ DomainName = $domain; DomainType = 'Authoritative' }
    }
}
