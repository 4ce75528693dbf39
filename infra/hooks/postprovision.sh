#!/bin/sh
# azd postprovision hook (azure.yaml): the two provisioning steps ARM cannot do from main.bicep.
#
# 1. The role assignments on the certificate Key Vault (infra/modules/vault-access.bicep), as a
#    deployment stack in the vault's resource group. Not in main.bicep: `azd down` deletes every resource
#    group its deployment touched, and the vault's resource group is not certsync's. The stack owns only
#    the assignments; infra/hooks/predown.sh deletes it and them.
# 2. The runbooks' content: infra/runbooks/<AUTOMATION_RUNBOOK_NAME>.ps1 (and the discovery runbook's,
#    <AUTOMATION_DISCOVERY_RUNBOOK_NAME>.ps1) is uploaded as the draft of the runbook main.bicep declared,
#    and published. ARM takes runbook content only from a URL.
#
# Reads main.bicep's outputs, which azd passes in the environment. Needs the Azure CLI, signed in as a
# principal that may create role assignments on the vault (infra/README.md, "Who can deploy").
set -eu
. "$(dirname "$0")/common.sh"

require "azd provision or azd up" AZURE_ENV_NAME AZURE_RESOURCE_GROUP KEY_VAULT_NAME KEY_VAULT_RESOURCE_GROUP \
    FUNCTION_PRINCIPAL_ID AUTOMATION_ACCOUNT_NAME AUTOMATION_RUNBOOK_NAME

runbook="$root/infra/runbooks/$AUTOMATION_RUNBOOK_NAME.ps1"
if [ ! -f "$runbook" ]; then
    echo "certsync postprovision: $runbook does not exist; the runbook $AUTOMATION_RUNBOOK_NAME needs its content" >&2
    exit 2
fi

# The roles below grant nothing on a vault that still uses access policies.
rbac=$(az keyvault show --name "$KEY_VAULT_NAME" --resource-group "$KEY_VAULT_RESOURCE_GROUP" \
    --query properties.enableRbacAuthorization --output tsv --only-show-errors)
if [ "$rbac" != "true" ]; then
    echo "certsync postprovision: Key Vault $KEY_VAULT_NAME uses access policies; switch it to Azure RBAC (az keyvault update --name $KEY_VAULT_NAME --enable-rbac-authorization true) and run azd provision again" >&2
    exit 2
fi

echo "certsync: role assignments on Key Vault $KEY_VAULT_NAME (deployment stack certsync-$AZURE_ENV_NAME-vault-access in $KEY_VAULT_RESOURCE_GROUP)"
az stack group create \
    --name "certsync-$AZURE_ENV_NAME-vault-access" \
    --resource-group "$KEY_VAULT_RESOURCE_GROUP" \
    --template-file "$root/infra/modules/vault-access.bicep" \
    --parameters keyVaultName="$KEY_VAULT_NAME" \
        functionPrincipalId="$FUNCTION_PRINCIPAL_ID" \
        hybridWorkerPrincipalIds="${HYBRID_WORKER_PRINCIPAL_IDS:-}" \
        defaultWorkerGroup="${HYBRID_WORKER_GROUP:-hrw-exchange}" \
        watchedCertificates="${WATCHED_CERTIFICATES:-}" \
        functionSecretNames="${FUNCTION_SECRET_NAMES:-}" \
        workerSecretNames="${WORKER_SECRET_NAMES:-}" \
    --action-on-unmanage deleteResources \
    --deny-settings-mode none \
    --description "certsync ($AZURE_ENV_NAME): role assignments on the certificate vault" \
    --yes --only-show-errors --output none

echo "certsync: publishing runbook $AUTOMATION_RUNBOOK_NAME from infra/runbooks/ to $AUTOMATION_ACCOUNT_NAME"
az extension add --name automation --upgrade --only-show-errors --output none
az automation runbook replace-content \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --automation-account-name "$AUTOMATION_ACCOUNT_NAME" \
    --name "$AUTOMATION_RUNBOOK_NAME" \
    --content @"$runbook" \
    --only-show-errors --output none
az automation runbook publish \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --automation-account-name "$AUTOMATION_ACCOUNT_NAME" \
    --name "$AUTOMATION_RUNBOOK_NAME" \
    --only-show-errors --output none

discovery="${AUTOMATION_DISCOVERY_RUNBOOK_NAME:-}"
if [ -n "$discovery" ]; then
    discovery_file="$root/infra/runbooks/$discovery.ps1"
    if [ ! -f "$discovery_file" ]; then
        echo "certsync postprovision: $discovery_file does not exist; the runbook $discovery needs its content" >&2
        exit 2
    fi
    echo "certsync: publishing runbook $discovery from infra/runbooks/ to $AUTOMATION_ACCOUNT_NAME"
    az automation runbook replace-content \
        --resource-group "$AZURE_RESOURCE_GROUP" \
        --automation-account-name "$AUTOMATION_ACCOUNT_NAME" \
        --name "$discovery" \
        --content @"$discovery_file" \
        --only-show-errors --output none
    az automation runbook publish \
        --resource-group "$AZURE_RESOURCE_GROUP" \
        --automation-account-name "$AUTOMATION_ACCOUNT_NAME" \
        --name "$discovery" \
        --only-show-errors --output none
fi

echo "certsync: provisioned. Next: azd deploy (azd up does it), then the on-premises steps in infra/README.md"
