# azd predown hook (azure.yaml, on Windows): the PowerShell twin of predown.sh. Removes what certsync put
# outside its own resource group before `azd down` deletes that resource group: the role assignments on
# the certificate Key Vault and the Event Grid subscription (both deployment stacks). The Key Vault itself
# is never touched.
. "$PSScriptRoot/common.ps1"

Require 'azd down' @('AZURE_ENV_NAME')

function Remove-Stack {
    param([string] $Stack, [string] $Group)
    if (-not $Group) {
        Write-Output "certsync: no resource group recorded for $Stack; nothing to remove"
        return
    }
    # A missing stack is not an error here; Windows PowerShell 5.1 would turn the redirected stderr into
    # a terminating error under 'Stop', so this one call runs under 'Continue'.
    $ErrorActionPreference = 'Continue'
    & az stack group show --name $Stack --resource-group $Group --only-show-errors --output none 2>$null
    $found = $LASTEXITCODE -eq 0
    $ErrorActionPreference = 'Stop'
    if ($found) {
        Write-Output "certsync: deleting deployment stack $Stack in $Group and the resources it manages"
        Invoke-Az stack group delete --name $Stack --resource-group $Group `
            --action-on-unmanage deleteResources --yes --only-show-errors --output none
    } else {
        Write-Output "certsync: deployment stack $Stack not found in $Group; nothing to remove"
    }
}

Remove-Stack "certsync-$env:AZURE_ENV_NAME-events" (Optional 'SYSTEM_TOPIC_RESOURCE_GROUP')
Remove-Stack "certsync-$env:AZURE_ENV_NAME-vault-access" (Optional 'KEY_VAULT_RESOURCE_GROUP')
