// The Event Grid system topic of the certificate Key Vault, created in certsync's resource group (it may
// live in any resource group of the vault's subscription), so that `azd down` removes it with the rest.
// Its system-assigned identity writes dead letters (the role is in storage.bicep).
//
// The event subscription to the Function is not here: Event Grid checks that the function exists when
// the subscription is created, and the code is deployed after provisioning. The postdeploy hook deploys
// event-subscription.bicep once the function is there.
//
// A vault can have only one system topic. If it already has one, set KEY_VAULT_SYSTEM_TOPIC_NAME and
// this module is skipped (main.bicep).

param name string

@description('Resource id of the Key Vault whose certificate events are wanted.')
param keyVaultId string

@description('Location of the Key Vault: a system topic lives where its source does.')
param keyVaultLocation string

param tags object = {}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: name
  location: keyVaultLocation
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: keyVaultId
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

output id string = systemTopic.id
output name string = systemTopic.name
output principalId string = systemTopic.identity.principalId
