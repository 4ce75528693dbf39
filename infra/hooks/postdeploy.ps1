# azd postdeploy hook (azure.yaml, on Windows): the PowerShell twin of postdeploy.sh. The Event Grid
# subscription from the Key Vault's system topic to the function keyvault_certificate_events
# (infra/modules/event-subscription.bicep), once the function exists, as a deployment stack that
# infra/hooks/predown.ps1 removes.
. "$PSScriptRoot/common.ps1"

Require 'azd deploy or azd up' @('AZURE_ENV_NAME', 'SYSTEM_TOPIC_NAME', 'SYSTEM_TOPIC_RESOURCE_GROUP',
    'FUNCTION_APP_ID', 'STORAGE_ACCOUNT_ID', 'DEAD_LETTER_CONTAINER')

$stack = "certsync-$env:AZURE_ENV_NAME-events"
Write-Output "certsync: Event Grid subscription $env:SYSTEM_TOPIC_NAME -> keyvault_certificate_events (deployment stack $stack in $env:SYSTEM_TOPIC_RESOURCE_GROUP)"
Invoke-Az stack group create `
    --name $stack `
    --resource-group $env:SYSTEM_TOPIC_RESOURCE_GROUP `
    --template-file (Join-Path $root 'infra/modules/event-subscription.bicep') `
    --parameters "systemTopicName=$env:SYSTEM_TOPIC_NAME" `
        "functionAppId=$env:FUNCTION_APP_ID" `
        "deadLetterStorageAccountId=$env:STORAGE_ACCOUNT_ID" `
        "deadLetterContainerName=$env:DEAD_LETTER_CONTAINER" `
    --action-on-unmanage deleteResources `
    --deny-settings-mode none `
    --description "certsync ($env:AZURE_ENV_NAME): Key Vault certificate events to the Function" `
    --yes --only-show-errors --output none
