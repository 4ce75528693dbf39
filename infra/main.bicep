// certsync on Azure: `azd up` provisions this (subscription scope), deploys the code, then the hooks in
// azure.yaml do what ARM cannot do from here (infra/README.md):
//   postprovision: the role assignments on the Key Vault (modules/vault-access.bicep, a deployment stack
//                  in the vault's resource group) and the runbook's content (upload and publish);
//   postdeploy:    the Event Grid subscription (modules/event-subscription.bicep), once the function exists;
//   predown:       removes the vault role assignments and the event subscription (both stacks).
//
// Everything this file deploys lives in one new resource group, so `azd down` deletes exactly certsync.
// The certificate Key Vault is referenced, never deployed or changed here.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds the resource names.')
param environmentName string

@minLength(1)
@description('Region for certsync\'s resources (the system topic follows the vault\'s region).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create; default rg-<environmentName>.')
param resourceGroupName string = ''

@minLength(3)
@maxLength(24)
@description('Name of the existing certificate Key Vault (Azure RBAC permission model): azd env set KEY_VAULT_NAME.')
param keyVaultName string

@minLength(1)
@description('Resource group of the existing certificate Key Vault: azd env set KEY_VAULT_RESOURCE_GROUP.')
param keyVaultResourceGroup string

@description('CERTSYNC_VAULTS: the vault names certsync acts on; default the vault above.')
param certsyncVaults string = ''

@description('An existing Event Grid system topic of the vault to reuse (a vault can have only one); empty to create one.')
param existingSystemTopicName string = ''

@description('Resource group of the existing system topic; default the vault\'s resource group.')
param existingSystemTopicResourceGroup string = ''

@description('Name of the Hybrid Runbook Worker group of the Exchange servers.')
param hybridWorkerGroupName string = 'hrw-exchange'

@description('Hybrid workers\' identities (each Arc-enabled Exchange server\'s system-assigned identity), comma-separated PRINCIPAL_ID or GROUP=PRINCIPAL_ID (alone: the group above), for Key Vault Secrets User on their own group\'s certificates\' secrets; empty until the workers exist. Used by the postprovision hook.')
param hybridWorkerPrincipalIds string = ''

@description('The certificates certsync watches, comma-separated NAME or NAME=WORKER_GROUP: the Function and that group\'s workers may read each one\'s secret, and nothing else in the vault. Used by the postprovision hook.')
param watchedCertificates string = ''

@description('Resource ids of existing action groups the alerts notify, comma-separated.')
param alertActionGroupIds string = ''

@description('An e-mail address for a new action group of the alerts; empty for none.')
param alertEmail string = ''

@description('Exchange Online organization (contoso.onmicrosoft.com) for EXO connector steps; empty for on-premises only.')
param exoOrganization string = ''

@allowed([
  'hard'
  'soft'
  'off'
])
param revocationPolicy string = 'hard'

@description('CERTSYNC_CRL_MAX_MB: the largest CRL downloaded, in MiB (a million-entry CRL is about 47 MiB).')
@minValue(1)
@maxValue(1024)
param crlMaxMegabytes int = 64

@description('CERTSYNC_EXPIRY_DAYS: days before expiry that count as a warning.')
@minValue(1)
param expiryWarningDays int = 30

@description('CERTSYNC_REQUIRE_ACCEPTED_DOMAIN: block a plan whose certificate names are not accepted domains in Exchange Online.')
param requireAcceptedDomain bool = false

@description('CERTSYNC_EXO_TENANT_ID: the Exchange Online tenant id (GUID) for plans whose inventory names none.')
param exoTenantId string = ''

@description('CERTSYNC_RESTART_TRANSPORT: restart the transport services a plan switched connectors in, before the proof.')
param restartTransport bool = false

@description('CERTSYNC_ALLOW_HOSTS: private PKI HOST[:PORT] entries, comma-separated.')
param allowHosts string = ''

@description('CERTSYNC_TARGETS_FILE: the targets file inside the deployed package; empty for none.')
param targetsFile string = ''

@description('CERTSYNC_TRUST_FILE: a PEM trust store inside the deployed package; empty for the default roots.')
param trustFile string = ''

@description('CERTSYNC_VAULT_URLS: name=https://host pairs for vaults behind private endpoints.')
param vaultUrls string = ''

// Notification secrets: names of secrets in the certificate vault (app settings become Key Vault
// references); empty leaves the channel off.
@description('Secret with the Teams Workflows webhook URL.')
param teamsWebhookSecretName string = ''

@description('Secret with the Slack incoming webhook URL.')
param slackWebhookSecretName string = ''

@description('Secret with the generic Standard Webhooks URL.')
param webhookUrlSecretName string = ''

@description('Secret with the generic webhook\'s whsec_ signing secret(s).')
param webhookSigningSecretName string = ''

@description('Result callback from the runbook (needs certsync-callback-key and certsync-callback-secret in the vault).')
param enableResultCallback bool = false

@description('RECONCILE_SCHEDULE: NCRONTAB schedule of the daily reconciliation.')
param reconcileSchedule string = '0 0 6 * * *'

@minValue(1)
@maxValue(120)
param probeTimeoutSeconds int = 15

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

var runbookName = 'Invoke-CertsyncRemediation'
var discoveryRunbookName = 'Get-CertsyncInventory'
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'certsync'
}
var reuseSystemTopic = !empty(existingSystemTopicName)
var systemTopicResourceGroup = reuseSystemTopic
  ? (empty(existingSystemTopicResourceGroup) ? keyVaultResourceGroup : existingSystemTopicResourceGroup)
  : rg.name
var systemTopicName = reuseSystemTopic ? existingSystemTopicName : 'evgt-certsync-${keyVaultName}'
// The secrets app settings reference (the Function resolves them) and those the runbook reads besides the
// certificates (the callback's); the postprovision hook grants exactly these (modules/vault-access.bicep).
var functionSecretNames = join(
  filter(
    [
      teamsWebhookSecretName
      slackWebhookSecretName
      webhookUrlSecretName
      webhookSigningSecretName
      enableResultCallback ? 'certsync-callback-secret' : ''
    ],
    secretName => !empty(secretName)
  ),
  ','
)
var workerSecretNames = enableResultCallback ? 'certsync-callback-key,certsync-callback-secret' : ''
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'certsync-deadletter'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

// Read only: the vault's id, region and URI.
resource vault 'Microsoft.KeyVault/vaults@2026-02-01' existing = {
  name: keyVaultName
  scope: resourceGroup(keyVaultResourceGroup)
}

// Read only: a system topic the vault already has, for its identity (it writes our dead letters).
resource existingSystemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = if (reuseSystemTopic) {
  name: existingSystemTopicName
  scope: resourceGroup(systemTopicResourceGroup)
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-certsync-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-certsync-${resourceToken}'
    applicationInsightsName: 'appi-certsync-${resourceToken}'
    location: location
    tags: tags
    functionPrincipalId: identity.outputs.principalId
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceId
    systemTopicId: reuseSystemTopic ? existingSystemTopic!.id : eventGrid!.outputs.id
    actionGroupIds: alertActionGroupIds
    alertEmail: alertEmail
  }
}

module eventGrid 'modules/event-grid.bicep' = if (!reuseSystemTopic) {
  name: 'event-grid'
  scope: rg
  params: {
    name: systemTopicName
    keyVaultId: vault.id
    keyVaultLocation: vault.location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stcertsync${take(resourceToken, 13)}'
    location: location
    tags: tags
    functionPrincipalId: identity.outputs.principalId
    eventGridPrincipalId: reuseSystemTopic ? existingSystemTopic!.identity.principalId : eventGrid!.outputs.principalId
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

module automation 'modules/automation.bicep' = {
  name: 'automation'
  scope: rg
  params: {
    name: 'aa-certsync-${resourceToken}'
    location: location
    tags: tags
    runbookName: runbookName
    discoveryRunbookName: discoveryRunbookName
    hybridWorkerGroupName: hybridWorkerGroupName
    functionPrincipalId: identity.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
    exoOrganization: exoOrganization
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: 'func-certsync-${resourceToken}'
    planName: 'asp-certsync-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultUri: vault.properties.vaultUri
    certsyncVaults: empty(certsyncVaults) ? keyVaultName : certsyncVaults
    automationAccountId: automation.outputs.id
    runbookName: automation.outputs.runbookName
    discoveryRunbookName: automation.outputs.discoveryRunbookName
    revocationPolicy: revocationPolicy
    expiryWarningDays: expiryWarningDays
    requireAcceptedDomain: requireAcceptedDomain
    exoTenantId: exoTenantId
    restartTransport: restartTransport
    crlMaxMegabytes: crlMaxMegabytes
    allowHosts: allowHosts
    targetsFile: targetsFile
    trustFile: trustFile
    vaultUrls: vaultUrls
    teamsWebhookSecretName: teamsWebhookSecretName
    slackWebhookSecretName: slackWebhookSecretName
    webhookUrlSecretName: webhookUrlSecretName
    webhookSigningSecretName: webhookSigningSecretName
    enableResultCallback: enableResultCallback
    reconcileSchedule: reconcileSchedule
    probeTimeoutSeconds: probeTimeoutSeconds
    maximumInstanceCount: maximumInstanceCount
  }
}

// azd stores these in the environment (.azure/<env>/.env); the hooks read them. No secrets.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_ID string = functionApp.outputs.id
output FUNCTION_APP_HOSTNAME string = functionApp.outputs.defaultHostName
output FUNCTION_PRINCIPAL_ID string = identity.outputs.principalId
output KEY_VAULT_NAME string = keyVaultName
output KEY_VAULT_RESOURCE_GROUP string = keyVaultResourceGroup
output HYBRID_WORKER_PRINCIPAL_IDS string = hybridWorkerPrincipalIds
output WATCHED_CERTIFICATES string = watchedCertificates
output FUNCTION_SECRET_NAMES string = functionSecretNames
output WORKER_SECRET_NAMES string = workerSecretNames
output HYBRID_WORKER_GROUP string = automation.outputs.hybridWorkerGroupName
output AUTOMATION_ACCOUNT_NAME string = automation.outputs.name
output AUTOMATION_RUNBOOK_NAME string = automation.outputs.runbookName
output AUTOMATION_DISCOVERY_RUNBOOK_NAME string = automation.outputs.discoveryRunbookName
output SYSTEM_TOPIC_NAME string = systemTopicName
output SYSTEM_TOPIC_RESOURCE_GROUP string = systemTopicResourceGroup
output SYSTEM_TOPIC_REUSED bool = reuseSystemTopic
output STORAGE_ACCOUNT_ID string = storage.outputs.id
output DEAD_LETTER_CONTAINER string = storage.outputs.deadLetterContainerName
// For `certsync doctor --deployment` from an admin's machine: `azd env get-values` gives these under the
// names of the settings it reads (with CERTSYNC_WATCHED_CERTIFICATES, which the admin set).
output CERTSYNC_VAULTS string = empty(certsyncVaults) ? keyVaultName : certsyncVaults
output AUTOMATION_ACCOUNT_ID string = automation.outputs.id
output CERTSYNC_EVENT_SUBSCRIPTION_ID string = '/subscriptions/${subscription().subscriptionId}/resourceGroups/${systemTopicResourceGroup}/providers/Microsoft.EventGrid/systemTopics/${systemTopicName}/eventSubscriptions/certsync-certificate-events'
output JobsStorage__queueServiceUri string = storage.outputs.queueEndpoint
output JobsStorage__tableServiceUri string = storage.outputs.tableEndpoint
