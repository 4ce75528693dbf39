"""The Azure role assignments certsync needs, in one registry: which built-in role, held by whom, on
what, why, and which code (or platform component) needs it.

infra/ assigns exactly these and nothing else (tests/test_infra.py checks both directions: every entry
is assigned in the Bicep by its role definition id at a scope of the right resource type, and every
role assignment in the Bicep is an entry here). The 403 hints in shared/ may name only roles listed
here, and infra/README.md's table of role assignments is checked against this registry too.

Role definition ids are those of Azure's built-in roles; they are the same in every tenant and cloud.
Checked against Microsoft's built-in roles reference (learn.microsoft.com, "Azure built-in roles").
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import CertsyncError

# Built-in role name -> role definition id.
BUILT_IN_ROLES: dict[str, str] = {
    "Key Vault Certificate User": "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba",
    "Key Vault Reader": "21090545-7ca7-4776-b22c-e363652d74d2",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Automation Job Operator": "4fe576fe-1146-4730-92eb-48519fa6bf9f",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    # Never assigned by certsync: `certsync doctor --deployment` looks for them on the vault (below).
    "Key Vault Administrator": "00482a5a-887f-4fb3-b363-3b7fe8e74483",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Key Vault Certificates Officer": "a4417e6f-fecd-4de8-b567-7b0420556985",
}

# Roles whose data actions read secret values: held on a vault (or above it), they read every secret in it,
# every certificate's private key included. certsync grants Secrets User per secret only.
SECRET_READING_ROLES = (
    "Key Vault Administrator",
    "Key Vault Secrets Officer",
    "Key Vault Certificates Officer",
    "Key Vault Secrets User",
    "Key Vault Certificate User",
)

# Who holds a role.
FUNCTION = "function"  # the Function App's user-assigned managed identity
HYBRID_WORKER = "hybrid-worker"  # each Arc-enabled Exchange server's system-assigned identity
EVENT_GRID = "event-grid"  # the Key Vault system topic's system-assigned identity
PRINCIPALS = (FUNCTION, HYBRID_WORKER, EVENT_GRID)

# The resource types roles are assigned on (the scope of the assignment).
KEY_VAULT = "Microsoft.KeyVault/vaults"
KEY_VAULT_SECRET = "Microsoft.KeyVault/vaults/secrets"  # one secret: a certificate's, or a setting's
APPLICATION_INSIGHTS = "Microsoft.Insights/components"
STORAGE_ACCOUNT = "Microsoft.Storage/storageAccounts"
BLOB_CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
AUTOMATION_ACCOUNT = "Microsoft.Automation/automationAccounts"


@dataclass(frozen=True)
class RoleAssignment:
    """One grant: `role` (a built-in role name) for `principal` on a resource of type `scope`."""

    role: str
    principal: str
    scope: str
    reason: str
    needed_by: tuple[str, ...]

    @property
    def role_definition_id(self) -> str:
        return role_definition_id(self.role)


ASSIGNMENTS: tuple[RoleAssignment, ...] = (
    RoleAssignment(
        "Key Vault Reader",
        FUNCTION,
        KEY_VAULT,
        "lists the vault's certificates and reads each version's public facts (enabled, x5t, tags, the"
        " certificate, the id of the secret behind it); it cannot read any secret's value",
        ("shared/adapters/azure/keyvault.py",),
    ),
    RoleAssignment(
        "Key Vault Secrets User",
        FUNCTION,
        KEY_VAULT_SECRET,
        "on each watched certificate's secret only: reads it for the chain (the private key is never"
        " parsed); and on each secret an app setting references (webhook URLs and secrets, the callback"
        " secret), which App Service resolves with this identity",
        ("shared/adapters/azure/keyvault.py", "shared/notify/webhooks.py", "app settings (keyVaultReferenceIdentity)"),
    ),
    RoleAssignment(
        "Key Vault Secrets User",
        HYBRID_WORKER,
        KEY_VAULT_SECRET,
        "on the secrets of its own worker group's certificates only (and the callback key and secret): the"
        " runbook reads the PFX it installs from the vault itself, so no secret travels in job parameters;"
        " every worker of the group needs it (a job runs on any one of them)",
        ("infra/runbooks/Invoke-CertsyncRemediation.ps1",),
    ),
    RoleAssignment(
        "Monitoring Metrics Publisher",
        FUNCTION,
        APPLICATION_INSIGHTS,
        "Application Insights takes Entra-only ingestion (local authentication off): the host and the worker"
        " send telemetry signed in as this identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING)",
        ("Functions host and Python worker telemetry",),
    ),
    RoleAssignment(
        "Storage Blob Data Owner",
        FUNCTION,
        STORAGE_ACCOUNT,
        "the Functions host keeps keys, locks and timer state in blobs of AzureWebJobsStorage and creates"
        " their containers; Flex Consumption reads the deployment package with this identity",
        ("Functions host (AzureWebJobsStorage)", "Flex Consumption deployment"),
    ),
    RoleAssignment(
        "Storage Queue Data Contributor",
        FUNCTION,
        STORAGE_ACCOUNT,
        "queue triggers read and delete messages; the code sends job, tracking and poison messages and"
        " creates its queues if missing",
        (
            "functions/remediation.py",
            "shared/adapters/azure/queues.py",
            "shared/remediation/start.py",
            "shared/remediation/track.py",
            "shared/wiring.py",
        ),
    ),
    RoleAssignment(
        "Storage Table Data Contributor",
        FUNCTION,
        STORAGE_ACCOUNT,
        "the audit trail, job claims and reconciliation state are table entities the code inserts, reads"
        " and updates, creating its tables if missing",
        ("shared/adapters/azure/tables.py", "shared/adapters/azure/queues.py", "shared/wiring.py"),
    ),
    RoleAssignment(
        "Automation Job Operator",
        FUNCTION,
        AUTOMATION_ACCOUNT,
        "creates remediation jobs on the hybrid worker group, reads their status, output and streams, and"
        " stops them; it cannot create, edit or publish runbooks",
        ("shared/adapters/azure/automation.py",),
    ),
    RoleAssignment(
        "Storage Blob Data Contributor",
        EVENT_GRID,
        BLOB_CONTAINER,
        "Event Grid writes certificate events it could not deliver to the dead-letter container, signing in"
        " as the system topic (shared key access is off on the account)",
        ("Event Grid dead-lettering",),
    ),
)


def role_definition_id(role: str) -> str:
    """The role definition id (a GUID) of the built-in role named `role`."""
    try:
        return BUILT_IN_ROLES[role]
    except KeyError:
        raise CertsyncError(
            f"role {role!r}: not one certsync uses; use one of {', '.join(sorted(BUILT_IN_ROLES))}"
        ) from None


def role_name(definition_id: str) -> str | None:
    """The built-in role whose role definition id is `definition_id` (case-insensitive), if certsync uses it."""
    wanted = definition_id.strip().lower()
    return next((name for name, guid in BUILT_IN_ROLES.items() if guid == wanted), None)


def assignments_for(principal: str) -> tuple[RoleAssignment, ...]:
    """The grants one principal (FUNCTION, HYBRID_WORKER or EVENT_GRID) needs."""
    if principal not in PRINCIPALS:
        raise CertsyncError(f"principal {principal!r}: use one of {', '.join(PRINCIPALS)}")
    return tuple(a for a in ASSIGNMENTS if a.principal == principal)
