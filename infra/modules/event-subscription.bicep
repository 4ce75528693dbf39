// The Event Grid subscription that delivers the Key Vault's certificate events to the Function
// `keyvault_certificate_events` (functions/pipeline.py).
//
// Deployed by the azd postdeploy hook (infra/hooks/postdeploy.sh) into the system topic's resource
// group, after the code: Event Grid refuses an AzureFunction destination whose function does not exist
// yet, so this cannot be part of the first `azd provision`.
//
// Delivery: Event Grid schema (the trigger and shared/pipeline/events.py read it; CloudEvents would need
// PYTHON_ISOLATE_WORKER_DEPENDENCIES), one event per call, Event Grid's retry schedule for up to 30
// attempts within 24 hours. The Function raises when it cannot settle an event (Key Vault unavailable,
// forbidden), so Event Grid retries it; what is still undelivered after that, or refused with a 4xx, is
// written to the dead-letter container with the topic's own identity (no storage key: shared key
// access is off on the account).

@description('Name of the Key Vault system topic (in this deployment\'s resource group).')
param systemTopicName string

@description('Resource id of the Function App (Microsoft.Web/sites).')
param functionAppId string

@description('Resource id of the storage account that holds the dead-letter container.')
param deadLetterStorageAccountId string

@description('Blob container for undeliverable events.')
param deadLetterContainerName string

@description('Name of the event subscription.')
param name string = 'certsync-certificate-events'

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

resource subscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: name
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/keyvault_certificate_events'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      // Only certificate events: every certificate version also creates a secret and a key of the same
      // name, whose events the pipeline would only have to ignore.
      includedEventTypes: [
        'Microsoft.KeyVault.CertificateNewVersionCreated'
        'Microsoft.KeyVault.CertificateNearExpiry'
        'Microsoft.KeyVault.CertificateExpired'
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output name string = subscription.name
