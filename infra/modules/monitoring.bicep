// Application Insights on a Log Analytics workspace (workspace-based; classic resources are retired),
// both from Azure Verified Modules, and the workbook over certsync's audit trail.
//
// Entra-only ingestion: local (instrumentation key) authentication is off, so telemetry is accepted only
// from a caller signed in with Microsoft Entra ID. The Function's identity holds Monitoring Metrics
// Publisher on the component, and the app setting APPLICATIONINSIGHTS_AUTHENTICATION_STRING
// (function-app.bicep) tells the host and the worker to sign in as that identity. The connection string
// stays an app setting: it locates the component, it no longer authorizes anything.

param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object = {}

@description('Principal id of the Function App\'s user-assigned identity (sends telemetry).')
param functionPrincipalId string

@description('Days of log retention in the workspace.')
@minValue(30)
param retentionInDays int = 30

module workspace 'br/public:avm/res/operational-insights/workspace:0.15.0' = {
  name: 'log-analytics'
  params: {
    name: logAnalyticsName
    location: location
    tags: tags
    dataRetention: retentionInDays
  }
}

module component 'br/public:avm/res/insights/component:0.7.1' = {
  name: 'application-insights'
  params: {
    name: applicationInsightsName
    location: location
    tags: tags
    kind: 'web'
    applicationType: 'web'
    workspaceResourceId: workspace.outputs.resourceId
    disableLocalAuth: true
  }
}

// Read only: the component the module made, as the scope of the role assignment below.
resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Monitoring Metrics Publisher for the Function identity on Application Insights: with local authentication
// off, the host and the Python worker send all telemetry (not only metrics) signed in as this identity.
resource functionTelemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionPrincipalId, '3913510d-42f4-4e42-8a64-420c390055eb')
  scope: appInsights
  dependsOn: [
    component // the existing reference is by name: wait for the module that creates it
  ]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'certsync: Entra-authenticated telemetry (Application Insights local auth is off)'
  }
}

// The workbook over the audit trail: every audit row is also logged by the `certsync.audit` logger
// (shared/adapters/azure/tables.py), which the worker exports to the workspace's AppTraces. Its three
// queries: per-certificate timeline, failures, and time-to-deploy (infra/workbooks/certsync-audit.json).
resource auditWorkbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'certsync-audit-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'certsync: audit trail'
    category: 'workbook'
    sourceId: workspace.outputs.resourceId
    serializedData: loadTextContent('../workbooks/certsync-audit.json')
  }
}

output workspaceId string = workspace.outputs.resourceId
// The Function App module reads the connection string from the component itself (an `existing`
// reference), so it never passes through deployment outputs.
output applicationInsightsName string = component.outputs.name
output applicationInsightsId string = component.outputs.resourceId
