#!/bin/sh
# azd predown hook (azure.yaml): removes what certsync put outside its own resource group before
# `azd down` deletes that resource group: the role assignments on the certificate Key Vault and the
# Event Grid subscription (both deployment stacks; deleting a stack with deleteResources deletes the
# resources it manages and nothing else). The Key Vault itself is never touched.
set -eu
. "$(dirname "$0")/common.sh"

require "azd down" AZURE_ENV_NAME

delete_stack() {
    stack=$1
    group=$2
    if [ -z "$group" ]; then
        echo "certsync: no resource group recorded for $stack; nothing to remove"
        return 0
    fi
    if az stack group show --name "$stack" --resource-group "$group" --only-show-errors --output none 2>/dev/null; then
        echo "certsync: deleting deployment stack $stack in $group and the resources it manages"
        az stack group delete --name "$stack" --resource-group "$group" \
            --action-on-unmanage deleteResources --yes --only-show-errors --output none
    else
        echo "certsync: deployment stack $stack not found in $group; nothing to remove"
    fi
}

delete_stack "certsync-$AZURE_ENV_NAME-events" "${SYSTEM_TOPIC_RESOURCE_GROUP:-}"
delete_stack "certsync-$AZURE_ENV_NAME-vault-access" "${KEY_VAULT_RESOURCE_GROUP:-}"
