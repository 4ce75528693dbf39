// The Function App's user-assigned managed identity (Azure Verified Module). It is created before the app
// so that its role assignments (storage, Automation, Application Insights, the vault) can exist before the
// app first starts.

@description('Name of the user-assigned managed identity.')
param name string

param location string
param tags object = {}

module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.6.0' = {
  name: 'user-assigned-identity'
  params: {
    name: name
    location: location
    tags: tags
  }
}

output id string = identity.outputs.resourceId
output name string = identity.outputs.name
output clientId string = identity.outputs.clientId
output principalId string = identity.outputs.principalId
