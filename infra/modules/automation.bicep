// The Automation account that runs the remediation runbook on the Exchange servers' Hybrid Runbook
// Worker group, and the Function identity's right to start and read its jobs.
//
// The runbook resource is declared here (its type, PowerShell 5.1); its content is uploaded from
// infra/runbooks/ and published by the azd postprovision hook (infra/hooks/postprovision.sh), because
// ARM can only take runbook content from a URL (publishContentLink) and the draft-content API is not
// an ARM resource. See infra/README.md.
//
// The account has no managed identity: certsync starts every job on the hybrid worker group, and a job
// there signs in to Azure (Key Vault) with the Arc-enabled server's own identity, not the account's.

param name string
param location string
param tags object = {}

@description('Name of the runbook; the content comes from infra/runbooks/<name>.ps1.')
param runbookName string

@description('Name of the read-only discovery runbook; the content comes from infra/runbooks/<name>.ps1.')
param discoveryRunbookName string

@description('Name of the Hybrid Runbook Worker group the Exchange servers join.')
param hybridWorkerGroupName string

@description('Principal id of the Function App\'s user-assigned identity.')
param functionPrincipalId string

@description('Log Analytics workspace for job logs and streams.')
param workspaceId string

@description('Exchange Online organization (contoso.onmicrosoft.com) for plan steps on EXO connectors; empty for none.')
param exoOrganization string = ''

resource automation 'Microsoft.Automation/automationAccounts@2024-10-23' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'Basic'
    }
    publicNetworkAccess: true
    // Only Microsoft Entra ID callers: this turns off webhooks (certsync starts jobs through ARM) and
    // agent-based workers (retired); extension-based hybrid workers are not affected.
    disableLocalAuth: true
  }
}

resource runbook 'Microsoft.Automation/automationAccounts/runbooks@2024-10-23' = {
  parent: automation
  name: runbookName
  location: location
  tags: tags
  properties: {
    // PowerShell 5.1: the Exchange Management Shell on the worker is Windows PowerShell.
    runbookType: 'PowerShell'
    description: 'certsync: applies a certsync.plan/1 remediation plan to Exchange (content from infra/runbooks/)'
    logProgress: false
    logVerbose: true
  }
}

// The read-only discovery runbook (Get-CertsyncInventory): reads servers, certificates, connectors and the
// hybrid configuration into certsync.inventory/1. Published by the same hook as the remediation runbook.
resource discoveryRunbook 'Microsoft.Automation/automationAccounts/runbooks@2024-10-23' = {
  parent: automation
  name: discoveryRunbookName
  location: location
  tags: tags
  properties: {
    runbookType: 'PowerShell'
    description: 'certsync: reads the Exchange inventory (certsync.inventory/1), read-only (content from infra/runbooks/)'
    logProgress: false
    logVerbose: true
  }
}

// Workers join on premises: the Arc-enabled Exchange server gets the Hybrid Worker extension and is
// added to this group (infra/README.md, "On-premises prerequisites").
resource hybridWorkerGroup 'Microsoft.Automation/automationAccounts/hybridRunbookWorkerGroups@2024-10-23' = {
  parent: automation
  name: hybridWorkerGroupName
}

// The runbook reads the Exchange Online organization from this Automation variable when a plan changes
// an EXO inbound connector (Connect-ExchangeOnline -ManagedIdentity -Organization ...). Variable values
// are JSON: a string value is quoted.
resource exoOrganizationVariable 'Microsoft.Automation/automationAccounts/variables@2024-10-23' = if (!empty(exoOrganization)) {
  parent: automation
  name: 'CertsyncExoOrganization'
  properties: {
    value: '"${exoOrganization}"'
    isEncrypted: false
    description: 'certsync: Exchange Online organization for EXO inbound connector steps'
  }
}

// Job logs and streams in Log Analytics: the runbook's result line is in the Output stream, so failed
// jobs can be investigated after Automation's own 30-day job history is gone.
resource jobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'certsync-job-logs'
  scope: automation
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'JobLogs'
        enabled: true
      }
      {
        category: 'JobStreams'
        enabled: true
      }
    ]
  }
}

// Automation Job Operator for the Function identity on this account only: shared/adapters/azure/automation.py creates
// jobs (PUT .../jobs/{name}, jobs/write), reads their status, output and streams (jobs/read,
// jobs/output/read, jobs/streams/read) and stops them (jobs/stop/action). It cannot create, edit or
// publish runbooks.
resource functionJobOperator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(automation.id, functionPrincipalId, '4fe576fe-1146-4730-92eb-48519fa6bf9f')
  scope: automation
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4fe576fe-1146-4730-92eb-48519fa6bf9f')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'certsync: start remediation jobs on the hybrid worker group and read their results'
  }
}

output id string = automation.id
output name string = automation.name
output runbookName string = runbook.name
output discoveryRunbookName string = discoveryRunbook.name
output hybridWorkerGroupName string = hybridWorkerGroup.name
