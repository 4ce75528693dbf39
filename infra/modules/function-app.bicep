// The Function App on the Flex Consumption plan (Linux, Python 3.11) with its user-assigned identity,
// and every app setting the code and the bindings read.
//
// Flex Consumption takes the runtime from functionAppConfig, so FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE and the content-share settings are not app
// settings here (Microsoft documents them as deprecated on Flex; tests/test_infra.py keeps them out).
// Storage connections are identity-based: `<connection>__...` settings, no keys.

param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the Function App\'s user-assigned identity.')
param identityId string

@description('Client id of the Function App\'s user-assigned identity.')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string

@description('vaultUri of the certificate Key Vault (https://<name>.vault.azure.net/).')
param keyVaultUri string

@description('CERTSYNC_VAULTS: comma-separated names of the vaults certsync acts on.')
param certsyncVaults string

@description('Resource id of the Automation account (AUTOMATION_ACCOUNT_ID).')
param automationAccountId string

param runbookName string

@description('Name of the read-only discovery runbook (DISCOVERY_RUNBOOK).')
param discoveryRunbookName string

@allowed([
  'hard'
  'soft'
  'off'
])
param revocationPolicy string = 'hard'

@minValue(1)
param expiryWarningDays int = 30

param requireAcceptedDomain bool = false
@minValue(1)
@maxValue(1024)
param crlMaxMegabytes int = 64

@description('CERTSYNC_ALLOW_HOSTS: extra HOST[:PORT] entries for private PKI (comma-separated).')
param allowHosts string = ''

@description('CERTSYNC_TARGETS_FILE: path of the targets file inside the deployed package; empty for none.')
param targetsFile string = ''

@description('CERTSYNC_TRUST_FILE: path of a PEM trust store inside the deployed package; empty for the default roots.')
param trustFile string = ''

@description('CERTSYNC_VAULT_URLS: name=https://host pairs for vaults behind private endpoints; empty for <name>.<dns suffix>.')
param vaultUrls string = ''

// Notification settings are secrets: each is the name of a Key Vault secret in the certificate vault,
// referenced from the app setting; empty leaves that channel off.
@description('Secret holding the Teams Workflows webhook URL (CERTSYNC_TEAMS_WEBHOOK_URL).')
param teamsWebhookSecretName string = ''

@description('Secret holding the Slack incoming webhook URL (CERTSYNC_SLACK_WEBHOOK_URL).')
param slackWebhookSecretName string = ''

@description('Secret holding the generic Standard Webhooks URL (CERTSYNC_WEBHOOK_URL).')
param webhookUrlSecretName string = ''

@description('Secret holding the whsec_ signing secret(s) of the generic webhook (CERTSYNC_WEBHOOK_SECRET).')
param webhookSigningSecretName string = ''

@description('Turn on the runbook\'s result callback (POST /api/jobs/{job_id}/result). Needs the secrets certsync-callback-key and certsync-callback-secret in the vault.')
param enableResultCallback bool = false

@description('NCRONTAB schedule of the daily reconciliation.')
param reconcileSchedule string = '0 0 6 * * *'

@minValue(1)
@maxValue(120)
param probeTimeoutSeconds int = 15

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Key Vault references are resolved by App Service with keyVaultReferenceIdentity; an empty secret name
// leaves the setting empty, which the code reads as "not configured".
var kvSecrets = '${keyVaultUri}secrets/'
var teamsWebhookUrl = empty(teamsWebhookSecretName) ? '' : '@Microsoft.KeyVault(SecretUri=${kvSecrets}${teamsWebhookSecretName})'
var slackWebhookUrl = empty(slackWebhookSecretName) ? '' : '@Microsoft.KeyVault(SecretUri=${kvSecrets}${slackWebhookSecretName})'
var webhookUrl = empty(webhookUrlSecretName) ? '' : '@Microsoft.KeyVault(SecretUri=${kvSecrets}${webhookUrlSecretName})'
var webhookSecret = empty(webhookSigningSecretName) ? '' : '@Microsoft.KeyVault(SecretUri=${kvSecrets}${webhookSigningSecretName})'
// The callback secret name is fixed by the runbook contract (it reads the same secret to sign).
var callbackSecret = enableResultCallback ? '@Microsoft.KeyVault(SecretUri=${kvSecrets}certsync-callback-secret)' : ''

// ARM and Key Vault endpoints of the cloud this is deployed to (public, sovereign).
var resourceManager = environment().resourceManager
var armEndpoint = endsWith(resourceManager, '/') ? substring(resourceManager, 0, length(resourceManager) - 1) : resourceManager
var vaultDnsSuffix = environment().suffixes.keyvaultDns

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the service to deploy (`api` in azure.yaml) by this tag.
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// All app settings in one place (this resource replaces the whole set on every deployment). The names
// are the contract with the code (shared/*.py), the bindings (functions/*.py) and
// local.settings.json.example; tests/test_infra.py checks all three agree.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    // Functions host storage, identity-based (no AzureWebJobsStorage connection string).
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId

    // Telemetry: the host (host.json telemetryMode OpenTelemetry) and the Python worker export to
    // Application Insights; only the `certsync` logger's records are exported by the worker.
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
    PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME: 'certsync'

    // The identity the SDK clients use (shared/adapters/azure/keyvault.py, shared/adapters/azure/automation.py).
    AZURE_CLIENT_ID: identityClientId

    // JobsStorage: the queues and tables of the pipeline, remediation and notifications.
    JobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
    JobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
    JobsStorage__credential: 'managedidentity'
    JobsStorage__clientId: identityClientId
    REMEDIATION_QUEUE: 'certsync-jobs'
    TRACKING_QUEUE: 'certsync-tracking'
    NOTIFY_POISON_QUEUE: 'certsync-notify-poison'
    AUDIT_TABLE: 'certsyncaudit'
    JOB_CLAIMS_TABLE: 'certsyncjobs'
    STATE_TABLE: 'certsyncstate'
    INVENTORY_TABLE: 'certsyncinventory'

    // The pipeline (shared/wiring.py).
    CERTSYNC_VAULTS: certsyncVaults
    CERTSYNC_TARGETS_FILE: targetsFile
    CERTSYNC_REVOCATION: revocationPolicy
    CERTSYNC_ALLOW_HOSTS: allowHosts
    CERTSYNC_CRL_MAX_MB: string(crlMaxMegabytes)
    CERTSYNC_EXPIRY_DAYS: string(expiryWarningDays)
    CERTSYNC_REQUIRE_ACCEPTED_DOMAIN: string(requireAcceptedDomain)
    CERTSYNC_TRUST_FILE: trustFile
    CERTSYNC_VAULT_DNS_SUFFIX: vaultDnsSuffix
    CERTSYNC_VAULT_URLS: vaultUrls

    // Remediation (shared/adapters/azure/automation.py, shared/remediation/).
    AUTOMATION_ACCOUNT_ID: automationAccountId
    AUTOMATION_RUNBOOK: runbookName
    DISCOVERY_RUNBOOK: discoveryRunbookName
    CERTSYNC_INVENTORY_MAX_AGE_HOURS: '24'
    CERTSYNC_ARM_ENDPOINT: armEndpoint
    CERTSYNC_CALLBACK_URL: enableResultCallback ? 'https://${site.properties.defaultHostName}' : ''
    CERTSYNC_CALLBACK_SECRET: callbackSecret
    CERTSYNC_PROBE_TIMEOUT: string(probeTimeoutSeconds)

    // Notifications and reconciliation (shared/notify/webhooks.py, functions/reconcile.py).
    CERTSYNC_TEAMS_WEBHOOK_URL: teamsWebhookUrl
    CERTSYNC_SLACK_WEBHOOK_URL: slackWebhookUrl
    CERTSYNC_WEBHOOK_URL: webhookUrl
    CERTSYNC_WEBHOOK_SECRET: webhookSecret
    CERTSYNC_NOTICE_DIGEST_LIMIT: '10'
    RECONCILE_SCHEDULE: reconcileSchedule
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
