"""The Azure side of `certsync doctor --deployment`: the `VaultProbe` and `DeploymentArm` ports of
`shared.reconciliation.health`.

`KeyVaultProbe` lists a vault's certificates and tries to read the secret behind each one with the real
Key Vault SDK clients (the identity's own view: a 403 means it may not). A secret's value is dropped the
moment it arrives and never reaches an exception, a log or the answer. `ArmDeployment` reads the
Automation account, its Hybrid Runbook Worker groups and their workers (api-version 2024-10-23, through
`AutomationClient.read`), the Event Grid subscription (api-version 2025-02-15) and the vaults' control-plane
resource (api-version 2026-02-01: its `enableRbacAuthorization`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.adapters.azure.automation import AutomationClient
from shared.adapters.azure.keyvault import PAGE_SIZE, make_clients
from shared.adapters.azure.permissions import SECRET_READING_ROLES, role_name
from shared.errors import CertsyncError

EVENT_GRID_API_VERSION = "2025-02-15"
# Key Vault control plane: versions before 2026-02-01 retire on 27 February 2027.
KEY_VAULT_API_VERSION = "2026-02-01"
AUTHORIZATION_API_VERSION = "2022-04-01"


class KeyVaultProbe:
    """What the identity can list and read in one vault (`VaultProbe`)."""

    def __init__(self, vault: str, vault_url: str, credential: Any = None, *, client_id: str = "", **options: Any):
        self.vault = vault
        options = {"retry_total": 0, **options}  # one answer per question: doctor reports, it does not wait
        self._certificates, self._secrets = make_clients(vault_url, credential, client_id=client_id, **options)

    def certificate_names(self) -> list[str]:
        from azure.core.exceptions import AzureError

        try:
            listed = self._certificates.list_properties_of_certificates(max_page_size=PAGE_SIZE)
            return sorted((p.name for p in listed if p.name), key=str.lower)
        except AzureError as exc:
            raise CertsyncError(_reason(exc)) from None

    def can_read_secret(self, name: str) -> bool:
        from azure.core.exceptions import AzureError, HttpResponseError

        try:
            self._secrets.get_secret(name)  # the value is not kept: only whether it could be read
        except HttpResponseError as exc:
            if exc.status_code == 403:
                return False
            raise CertsyncError(_reason(exc)) from None
        except AzureError as exc:
            raise CertsyncError(_reason(exc)) from None
        return True


class ArmDeployment:
    """ARM reads of the deployment (`DeploymentArm`), over one `AutomationClient`'s session."""

    def __init__(self, automation: AutomationClient) -> None:
        self.automation = automation

    def automation_account(self) -> Mapping[str, Any] | None:
        return self.automation.read(self.automation.account_id, f"Automation account {self.automation.account.account}")

    def worker_group(self, name: str) -> Mapping[str, Any] | None:
        return self.automation.read(self._group_path(name), f"hybrid worker group {name}")

    def workers(self, group: str) -> list[Mapping[str, Any]]:
        found = self.automation.read(self._group_path(group) + "/hybridRunbookWorkers", f"the workers of {group}")
        values = (found or {}).get("value") or []
        return [v for v in values if isinstance(v, Mapping)]

    def event_subscription(self, resource_id: str) -> Mapping[str, Any] | None:
        name = resource_id.rstrip("/").rsplit("/", 1)[-1]
        return self.automation.read(resource_id, f"Event Grid subscription {name}", EVENT_GRID_API_VERSION)

    def key_vault(self, resource_group: str, name: str) -> Mapping[str, Any] | None:
        from urllib.parse import quote

        account = self.automation.account
        path = (
            f"/subscriptions/{account.subscription}/resourceGroups/{quote(resource_group, safe='')}"
            f"/providers/Microsoft.KeyVault/vaults/{quote(name, safe='')}"
        )
        return self.automation.read(path, f"Key Vault {name}", KEY_VAULT_API_VERSION)

    def vault_secret_readers(self, resource_group: str, name: str) -> list[Mapping[str, str]]:
        """Role assignments at the vault or above it (`atScope()`) whose role reads secret values:
        {role, principalId, principalType, scope} each."""
        from urllib.parse import quote

        account = self.automation.account
        path = (
            f"/subscriptions/{account.subscription}/resourceGroups/{quote(resource_group, safe='')}"
            f"/providers/Microsoft.KeyVault/vaults/{quote(name, safe='')}"
            "/providers/Microsoft.Authorization/roleAssignments?$filter=atScope()"
        )
        found = self.automation.read(path, f"the role assignments on Key Vault {name}", AUTHORIZATION_API_VERSION)
        readers: list[Mapping[str, str]] = []
        for item in (found or {}).get("value") or []:
            props = (item.get("properties") or {}) if isinstance(item, Mapping) else {}
            role = role_name(str(props.get("roleDefinitionId") or "").rsplit("/", 1)[-1])
            if role in SECRET_READING_ROLES:
                readers.append(
                    {
                        "role": role,
                        "principalId": str(props.get("principalId") or ""),
                        "principalType": str(props.get("principalType") or ""),
                        "scope": str(props.get("scope") or ""),
                    }
                )
        return readers

    def _group_path(self, name: str) -> str:
        from urllib.parse import quote

        return f"{self.automation.account_id}/hybridRunbookWorkerGroups/{quote(name, safe='')}"


def _reason(exc: BaseException) -> str:
    """One line for an SDK error: the status and Key Vault's error code, never a value."""
    status = getattr(exc, "status_code", None)
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or type(exc).__name__
    first = str(getattr(error, "message", None) or exc).splitlines()[0][:200] if str(exc) else ""
    return f"HTTP {status} {code}: {first}" if status else f"{code}: {first}"
