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

// Azure Verified Module; the system-assigned identity is the one storage.bicep lets write dead letters.
module systemTopic 'br/public:avm/res/event-grid/system-topic:0.6.4' = {
  name: 'event-grid-system-topic'
  params: {
    name: name
    location: keyVaultLocation
    tags: tags
    source: keyVaultId
    topicType: 'Microsoft.KeyVault.vaults'
    managedIdentities: {
      systemAssigned: true
    }
  }
}

output id string = systemTopic.outputs.resourceId
output name string = systemTopic.outputs.name
output principalId string = systemTopic.outputs.systemAssignedMIPrincipalId ?? ''
