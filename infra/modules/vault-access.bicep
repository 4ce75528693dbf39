// certsync's role assignments on the certificate Key Vault, which certsync does not own.
//
// Deployed by the azd postprovision hook (infra/hooks/postprovision.sh) as a deployment stack in the
// vault's resource group, never from main.bicep: `azd down` deletes every resource group its deployment
// put resources into, so a role assignment made by main.bicep in the vault's resource group would make
// `azd down` delete the vault's whole resource group. The stack manages exactly these assignments; the
// predown hook deletes the stack and with it the assignments, and nothing else in that resource group.
//
// The vault must use the Azure RBAC permission model (enableRbacAuthorization); with access policies
// these roles grant nothing.

@description('Name of the existing certificate Key Vault (in this deployment\'s resource group).')
param keyVaultName string

@description('Principal id of the Function App\'s user-assigned identity.')
param functionPrincipalId string

@description('Principal ids of the Hybrid Runbook Workers\' identities (each Arc-enabled Exchange server\'s system-assigned identity), comma-separated; empty to skip.')
param hybridWorkerPrincipalIds string = ''

// A job sent to the worker group runs on any one of its workers, so every worker needs the grant.
var hybridWorkerPrincipals = filter(map(split(hybridWorkerPrincipalIds, ','), id => trim(id)), id => !empty(id))

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// Key Vault Certificate User for the Function identity on the vault: shared/adapters/azure/keyvault.py reads each
// certificate version (get_certificate_version: enabled, x5t, tags, the secret id).
resource functionCertificateUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionPrincipalId, 'db79e9a7-68ee-4b58-9aeb-b90e7c24fcba')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'db79e9a7-68ee-4b58-9aeb-b90e7c24fcba')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'certsync: read certificate versions'
  }
}

// Key Vault Secrets User for the Function identity on the vault: shared/adapters/azure/keyvault.py reads the secret
// behind a certificate version for its chain (the private key is never parsed), and App Service resolves
// the @Microsoft.KeyVault(...) app settings (webhook URLs, signing and callback secrets) with this
// identity (keyVaultReferenceIdentity).
resource functionSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionPrincipalId, '4633458b-17de-408a-b874-0445c86b69e6')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'certsync: read certificate chains and Key Vault referenced app settings'
  }
}

// Key Vault Secrets User for each hybrid worker's identity on the vault: the runbook reads the certificate
// (PFX) it installs on Exchange, and the callback key and signing secret, from the vault itself, so no
// secret travels in job parameters.
resource workerSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for hybridWorkerPrincipalId in hybridWorkerPrincipals: {
    name: guid(vault.id, hybridWorkerPrincipalId, '4633458b-17de-408a-b874-0445c86b69e6')
    scope: vault
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
      principalId: hybridWorkerPrincipalId
      principalType: 'ServicePrincipal'
      description: 'certsync: the remediation runbook reads the certificate and callback secrets'
    }
  }
]
