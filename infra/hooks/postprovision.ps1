# azd postprovision hook (azure.yaml, on Windows): the PowerShell twin of postprovision.sh, the two
# provisioning steps ARM cannot do from main.bicep.
#
# 1. The role assignments on the certificate Key Vault (infra/modules/vault-access.bicep), as a deployment
#    stack in the vault's resource group; infra/hooks/predown.ps1 deletes it and them.
# 2. The runbooks' content: infra/runbooks/<AUTOMATION_RUNBOOK_NAME>.ps1 (and the discovery runbook's) is
#    uploaded as the draft of the runbook main.bicep declared, and published.
#
# Reads main.bicep's outputs, which azd passes in the environment. Needs the Azure CLI, signed in as a
# principal that may create role assignments on the vault (infra/README.md, "Who can deploy").
. "$PSScriptRoot/common.ps1"

Require 'azd provision or azd up' @('AZURE_ENV_NAME', 'AZURE_RESOURCE_GROUP', 'KEY_VAULT_NAME',
    'KEY_VAULT_RESOURCE_GROUP', 'FUNCTION_PRINCIPAL_ID', 'AUTOMATION_ACCOUNT_NAME', 'AUTOMATION_RUNBOOK_NAME')

$runbook = Join-Path $root "infra/runbooks/$env:AUTOMATION_RUNBOOK_NAME.ps1"
if (-not (Test-Path -LiteralPath $runbook -PathType Leaf)) {
    [Console]::Error.WriteLine("certsync postprovision: $runbook does not exist; the runbook $env:AUTOMATION_RUNBOOK_NAME needs its content")
    exit 2
}

# The roles below grant nothing on a vault that still uses access policies.
$rbac = & az keyvault show --name $env:KEY_VAULT_NAME --resource-group $env:KEY_VAULT_RESOURCE_GROUP `
    --query properties.enableRbacAuthorization --output tsv --only-show-errors
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
if ("$rbac".Trim() -ne 'true') {
    [Console]::Error.WriteLine("certsync postprovision: Key Vault $env:KEY_VAULT_NAME uses access policies; switch it to Azure RBAC (az keyvault update --name $env:KEY_VAULT_NAME --enable-rbac-authorization true) and run azd provision again")
    exit 2
}

$stack = "certsync-$env:AZURE_ENV_NAME-vault-access"
Write-Output "certsync: role assignments on Key Vault $env:KEY_VAULT_NAME (deployment stack $stack in $env:KEY_VAULT_RESOURCE_GROUP)"
Invoke-Az stack group create `
    --name $stack `
    --resource-group $env:KEY_VAULT_RESOURCE_GROUP `
    --template-file (Join-Path $root 'infra/modules/vault-access.bicep') `
    --parameters "keyVaultName=$env:KEY_VAULT_NAME" `
        "functionPrincipalId=$env:FUNCTION_PRINCIPAL_ID" `
        "hybridWorkerPrincipalIds=$(Optional 'HYBRID_WORKER_PRINCIPAL_IDS')" `
        "defaultWorkerGroup=$(Optional 'HYBRID_WORKER_GROUP' 'hrw-exchange')" `
        "watchedCertificates=$(Optional 'WATCHED_CERTIFICATES')" `
        "functionSecretNames=$(Optional 'FUNCTION_SECRET_NAMES')" `
        "workerSecretNames=$(Optional 'WORKER_SECRET_NAMES')" `
    --action-on-unmanage deleteResources `
    --deny-settings-mode none `
    --description "certsync ($env:AZURE_ENV_NAME): role assignments on the certificate vault" `
    --yes --only-show-errors --output none

Invoke-Az extension add --name automation --upgrade --only-show-errors --output none
$runbooks = @($env:AUTOMATION_RUNBOOK_NAME)
$discovery = Optional 'AUTOMATION_DISCOVERY_RUNBOOK_NAME'
if ($discovery) { $runbooks += $discovery }
foreach ($name in $runbooks) {
    $file = Join-Path $root "infra/runbooks/$name.ps1"
    if (-not (Test-Path -LiteralPath $file -PathType Leaf)) {
        [Console]::Error.WriteLine("certsync postprovision: $file does not exist; the runbook $name needs its content")
        exit 2
    }
    Write-Output "certsync: publishing runbook $name from infra/runbooks/ to $env:AUTOMATION_ACCOUNT_NAME"
    Invoke-Az automation runbook replace-content `
        --resource-group $env:AZURE_RESOURCE_GROUP `
        --automation-account-name $env:AUTOMATION_ACCOUNT_NAME `
        --name $name `
        --content "@$file" `
        --only-show-errors --output none
    Invoke-Az automation runbook publish `
        --resource-group $env:AZURE_RESOURCE_GROUP `
        --automation-account-name $env:AUTOMATION_ACCOUNT_NAME `
        --name $name `
        --only-show-errors --output none
}

Write-Output 'certsync: provisioned. Next: azd deploy (azd up does it), then the on-premises steps in infra/README.md'
