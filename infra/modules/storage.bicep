// The one storage account: the Functions host (AzureWebJobsStorage), the Flex Consumption deployment
// package, certsync's queues and tables (the JobsStorage connection) and Event Grid's dead letters.
//
// Shared key access is off: every client (host, bindings, SDK code, Event Grid) signs in with Microsoft
// Entra ID, so no account key or connection string exists anywhere in the app's configuration.

param name string
param location string
param tags object = {}

@description('Principal id of the Function App\'s user-assigned identity.')
param functionPrincipalId string

@description('Principal id of the Key Vault system topic\'s system-assigned identity (writes dead letters).')
param eventGridPrincipalId string

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Blob container Event Grid writes undeliverable events to.')
param deadLetterContainerName string

// The queues and tables the app settings name (REMEDIATION_QUEUE, TRACKING_QUEUE, NOTIFY_POISON_QUEUE,
// AUDIT_TABLE, JOB_CLAIMS_TABLE, STATE_TABLE, INVENTORY_TABLE in function-app.bicep), and the -poison queues of the two
// queue triggers: the host moves a message there after maxDequeueCount failures, and the remediation
// code writes there itself when it gives up on a job. Created here so that monitoring can watch them
// from the start; the code would otherwise create them on first use.
var queueNames = [
  'certsync-jobs'
  'certsync-jobs-poison'
  'certsync-tracking'
  'certsync-tracking-poison'
  'certsync-notify-poison'
]

var tableNames = [
  'certsyncaudit'
  'certsyncjobs'
  'certsyncstate'
  'certsyncinventory'
]

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-01-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2025-01-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' = [
  for queueName in queueNames: {
    parent: queueService
    name: queueName
  }
]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2025-01-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2025-01-01' = [
  for tableName in tableNames: {
    parent: tableService
    name: tableName
  }
]

// Storage Blob Data Owner for the Function identity on the account: the Functions host keeps its keys,
// locks and timer state in blobs of AzureWebJobsStorage and creates those containers itself, and Flex
// Consumption reads the deployment package from the container with this identity. Microsoft's Functions
// documentation names this role for identity-based host storage; it is assigned as documented rather
// than narrowed to Data Contributor, a variant nobody has run against the host.
resource functionBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionPrincipalId, 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'certsync: Functions host storage (AzureWebJobsStorage) and the Flex deployment package'
  }
}

// Storage Queue Data Contributor for the Function identity on the account: the queue triggers read and
// delete messages, and the code sends jobs, tracking and poison messages (shared/adapters/azure/queues.py,
// shared/remediation/start.py, shared/remediation/track.py, shared/wiring.py) and creates its queues if they are missing.
resource functionQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionPrincipalId, '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'certsync: job, tracking and poison queues (JobsStorage)'
  }
}

// Storage Table Data Contributor for the Function identity on the account: the audit trail, the job
// claims and the reconciliation state are Table storage entities the code inserts, reads and updates,
// creating its tables if they are missing.
resource functionTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionPrincipalId, '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'certsync: audit, job claims and reconciliation state tables (JobsStorage)'
  }
}

// Storage Blob Data Contributor for the system topic's identity on the dead-letter container only:
// Event Grid writes events it could not deliver there, signing in as the topic (shared key is off, so
// keyless dead-lettering is the only kind that can work on this account).
resource eventGridDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, eventGridPrincipalId, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
    description: 'certsync: Event Grid dead letters of Key Vault certificate events'
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
output deadLetterContainerName string = deadLetterContainer.name
