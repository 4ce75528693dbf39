#!/bin/sh
# azd postdeploy hook (azure.yaml): the Event Grid subscription from the Key Vault's system topic to the
# function keyvault_certificate_events (infra/modules/event-subscription.bicep).
#
# It runs after the code is deployed because Event Grid refuses an AzureFunction destination whose
# function does not exist yet. It is a deployment stack in the system topic's resource group (certsync's
# own, or the vault's when an existing topic is reused), so infra/hooks/predown.sh can remove exactly
# the subscription.
set -eu
. "$(dirname "$0")/common.sh"

require "azd deploy or azd up" AZURE_ENV_NAME SYSTEM_TOPIC_NAME SYSTEM_TOPIC_RESOURCE_GROUP FUNCTION_APP_ID \
    STORAGE_ACCOUNT_ID DEAD_LETTER_CONTAINER

echo "certsync: Event Grid subscription $SYSTEM_TOPIC_NAME -> keyvault_certificate_events (deployment stack certsync-$AZURE_ENV_NAME-events in $SYSTEM_TOPIC_RESOURCE_GROUP)"
az stack group create \
    --name "certsync-$AZURE_ENV_NAME-events" \
    --resource-group "$SYSTEM_TOPIC_RESOURCE_GROUP" \
    --template-file "$root/infra/modules/event-subscription.bicep" \
    --parameters systemTopicName="$SYSTEM_TOPIC_NAME" \
        functionAppId="$FUNCTION_APP_ID" \
        deadLetterStorageAccountId="$STORAGE_ACCOUNT_ID" \
        deadLetterContainerName="$DEAD_LETTER_CONTAINER" \
    --action-on-unmanage deleteResources \
    --deny-settings-mode none \
    --description "certsync ($AZURE_ENV_NAME): Key Vault certificate events to the Function" \
    --yes --only-show-errors --output none
