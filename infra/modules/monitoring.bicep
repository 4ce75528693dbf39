// Application Insights on a Log Analytics workspace (workspace-based; classic resources are retired).
// Local (connection string) ingestion stays enabled: the Python worker's Azure Monitor exporter, switched
// on by PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY, is configured from the connection string alone.

param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object = {}

@description('Days of log retention in the workspace.')
@minValue(30)
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
  }
}

output workspaceId string = workspace.id
// The Function App module reads the connection string from the component itself (an `existing`
// reference), so it never passes through deployment outputs.
output applicationInsightsName string = appInsights.name
