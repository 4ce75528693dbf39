// certsync's role assignments on the certificate Key Vault, which certsync does not own: least privilege,
// each secret granted on its own (Key Vault RBAC scopes a role to one secret: .../vaults/<vault>/secrets/<name>).
//
// Deployed by the azd postprovision hook (infra/hooks/postprovision.sh, .ps1) as a deployment stack in the
// vault's resource group, never from main.bicep: `azd down` deletes every resource group its deployment
// put resources into, so a role assignment made by main.bicep in the vault's resource group would make
// `azd down` delete the vault's whole resource group. The stack manages exactly these assignments; the
// predown hook deletes the stack and with it the assignments, and nothing else in that resource group.
//
// Who reads what:
// - the Function's identity: Key Vault Reader on the vault (it lists certificates and reads their public
//   facts; Reader reads no secret value), and Key Vault Secrets User on the secret of each watched
//   certificate and on each secret an app setting references (webhooks, callback);
// - each hybrid worker (an Arc-enabled Exchange server's identity): Key Vault Secrets User on the secrets
//   of its own worker group's certificates only, plus the shared secrets the runbook reads (callback).
// A certificate not listed in `watchedCertificates` is readable by nobody here. The alternative, one vault
// per trust boundary (a vault per worker group, vault-wide roles), is described in infra/README.md.
//
// The vault must use the Azure RBAC permission model (enableRbacAuthorization); with access policies
// these roles grant nothing.

@description('Name of the existing certificate Key Vault (in this deployment\'s resource group).')
param keyVaultName string

@description('Principal id of the Function App\'s user-assigned identity.')
param functionPrincipalId string

@description('The certificates certsync watches and the worker group that installs each: comma-separated NAME=GROUP (a NAME alone belongs to defaultWorkerGroup).')
param watchedCertificates string = ''

@description('Hybrid workers\' identities (each Arc-enabled Exchange server\'s system-assigned identity): comma-separated PRINCIPAL_ID or GROUP=PRINCIPAL_ID (a PRINCIPAL_ID alone belongs to defaultWorkerGroup); empty until the workers exist.')
param hybridWorkerPrincipalIds string = ''

@description('The worker group of unqualified entries above.')
param defaultWorkerGroup string = 'hrw-exchange'

@description('Secrets app settings reference (webhook URLs and signing secrets, the callback secret), comma-separated: the Function reads these too.')
param functionSecretNames string = ''

@description('Secrets every worker reads besides its certificates (the callback key and secret), comma-separated.')
param workerSecretNames string = ''

var certificateEntries = filter(map(split(watchedCertificates, ','), entry => trim(entry)), entry => !empty(entry))
var certificates = map(certificateEntries, entry => contains(entry, '=')
  ? { name: trim(split(entry, '=')[0]), group: trim(split(entry, '=')[1]) }
  : { name: entry, group: defaultWorkerGroup })
var workerEntries = filter(map(split(hybridWorkerPrincipalIds, ','), entry => trim(entry)), entry => !empty(entry))
var workers = map(workerEntries, entry => contains(entry, '=')
  ? { group: trim(split(entry, '=')[0]), principalId: trim(split(entry, '=')[1]) }
  : { group: defaultWorkerGroup, principalId: entry })
var functionExtraSecrets = filter(map(split(functionSecretNames, ','), name => trim(name)), name => !empty(name))
var workerExtraSecrets = filter(map(split(workerSecretNames, ','), name => trim(name)), name => !empty(name))

// The Function reads every watched certificate's secret and the referenced settings' secrets.
var functionSecrets = union(map(certificates, certificate => certificate.name), functionExtraSecrets)
// A job sent to a worker group runs on any one of its workers, so every worker of the group needs the
// grant; a worker gets its own group's certificates' secrets and nothing of another group.
var workerGrants = concat(
  flatten([
    for certificate in certificates: map(
      filter(workers, worker => worker.group == certificate.group),
      worker => { secret: certificate.name, principalId: worker.principalId }
    )
  ]),
  flatten([for secret in workerExtraSecrets: map(workers, worker => { secret: secret, principalId: worker.principalId })])
)

resource vault 'Microsoft.KeyVault/vaults@2026-02-01' existing = {
  name: keyVaultName
}

resource functionSecret 'Microsoft.KeyVault/vaults/secrets@2026-02-01' existing = [
  for secretName in functionSecrets: {
    parent: vault
    name: secretName
  }
]

resource workerSecret 'Microsoft.KeyVault/vaults/secrets@2026-02-01' existing = [
  for grant in workerGrants: {
    parent: vault
    name: grant.secret
  }
]

// Key Vault Reader for the Function identity on the vault: shared/adapters/azure/keyvault.py lists the
// certificates and reads each version's public facts (enabled, x5t, tags, secret id); no secret value.
resource functionVaultReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionPrincipalId, '21090545-7ca7-4776-b22c-e363652d74d2')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '21090545-7ca7-4776-b22c-e363652d74d2')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'certsync: list certificates and read their public facts (no secret values)'
  }
}

// Key Vault Secrets User for the Function identity on each watched certificate's secret: the code reads
// the chain from it (the private key is never parsed); and on each secret an app setting references, which
// App Service resolves with this identity (keyVaultReferenceIdentity).
resource functionSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (secretName, i) in functionSecrets: {
    name: guid(functionSecret[i].id, functionPrincipalId, '4633458b-17de-408a-b874-0445c86b69e6')
    scope: functionSecret[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
      principalId: functionPrincipalId
      principalType: 'ServicePrincipal'
      description: 'certsync: read one watched certificate\'s chain or one referenced setting'
    }
  }
]

// Key Vault Secrets User for each hybrid worker's identity on its own worker group's certificates' secrets
// (and the callback secrets): the runbook reads the PFX it installs from the vault itself, so no secret
// travels in job parameters.
resource workerSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (grant, i) in workerGrants: {
    name: guid(workerSecret[i].id, grant.principalId, '4633458b-17de-408a-b874-0445c86b69e6')
    scope: workerSecret[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
      principalId: grant.principalId
      principalType: 'ServicePrincipal'
      description: 'certsync: the remediation runbook reads one certificate of its worker group'
    }
  }
]

output functionSecretCount int = length(functionSecrets)
output workerGrantCount int = length(workerGrants)
