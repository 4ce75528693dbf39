"""shared/settings.py: the registry of every environment variable, `load` and its one-line errors, and
README's settings table checked against the registry (same names, same defaults)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.errors import CertsyncError
from shared.notify.signing import new_secret
from shared.settings import (
    BY_NAME,
    JOBS_STORAGE,
    REGISTRY,
    Setting,
    debug,
    load,
    notify_values,
    storage_connection,
    value,
)

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Automation/"
    "automationAccounts/aa-certsync"
)
SECRET = new_secret()
GUID = "11111111-2222-3333-4444-555555555555"

# A bad value for every validated setting; what the message must say besides the name.
BAD = {
    f"{JOBS_STORAGE}__clientId": ("not-a-guid", "client id"),
    "REMEDIATION_QUEUE": ("Jobs_Queue", "queue name"),
    "TRACKING_QUEUE": ("t" * 57, "queue name"),
    "NOTIFY_POISON_QUEUE": ("a--b", "queue name"),
    "AUDIT_TABLE": ("audit-table", "table name"),
    "JOB_CLAIMS_TABLE": ("1claims", "table name"),
    "STATE_TABLE": ("st", "table name"),
    "INVENTORY_TABLE": ("inventory_table", "table name"),
    "DISCOVERY_RUNBOOK": ("Get Inventory", "runbook name"),
    "CERTSYNC_INVENTORY_MAX_AGE_HOURS": ("0", "whole number of hours above 0"),
    "CERTSYNC_VAULTS": None,  # any text is a list of names; unset is the error (below)
    "CERTSYNC_REVOCATION": ("strict", "use one of hard, soft, off"),
    "CERTSYNC_ALLOW_HOSTS": ("crl.corp.local,host:port:x", "give HOST or HOST:PORT"),
    "CERTSYNC_EXPIRY_DAYS": ("thirty", "whole number of days"),
    "CERTSYNC_EXPIRY_WARNING_FRACTION": ("15%", "fraction of the lifetime between 0 and 1"),
    "CERTSYNC_EXPIRY_CRITICAL_FRACTION": ("1.5", "fraction of the lifetime between 0 and 1"),
    "CERTSYNC_EXPIRY_CRITICAL_DAYS": ("0", "whole number of days above 0"),
    "CERTSYNC_EXPIRY_WARNING_FLOOR_DAYS": ("three", "whole number of days above 0"),
    "CERTSYNC_EXPIRY_CRITICAL_FLOOR_DAYS": ("-1", "whole number of days above 0"),
    "CERTSYNC_PRESTAGE_INTERMEDIATES": ("sometimes", "write true or false"),
    "CERTSYNC_REQUIRE_ACCEPTED_DOMAIN": ("maybe", "write true or false"),
    "CERTSYNC_EXO_TENANT_ID": ("contoso.onmicrosoft.com", "not a tenant id"),
    "CERTSYNC_RESTART_TRANSPORT": ("sometimes", "write true or false"),
    "CERTSYNC_CRL_MAX_MB": ("0", "in whole MiB, 1 to 1024"),
    "CERTSYNC_FETCH_CONNECT_TIMEOUT": ("0", "above 0 and at most 600"),
    "CERTSYNC_FETCH_READ_TIMEOUT": ("ten", "above 0 and at most 600"),
    "CERTSYNC_FETCH_DEADLINE": ("601", "above 0 and at most 600"),
    "CERTSYNC_BLOCK_NOTICE_HOURS": ("0", "whole number of hours above 0"),
    "CERTSYNC_APPROVAL_REQUIRED": ("sometimes", "write true or false"),
    "CERTSYNC_MAINTENANCE_WINDOWS": ('{"hrw-exchange": ["Sat 22:00-Sun 4"]}', "worker group 'hrw-exchange'"),
    "CERTSYNC_VAULT_DNS_SUFFIX": ("vault azure net", "DNS suffix"),
    "CERTSYNC_VAULT_URLS": ("contoso-kv=http://plain", "write name=https://host"),
    "AZURE_CLIENT_ID": ("my-identity", "client id"),
    "AUTOMATION_ACCOUNT_ID": ("aa-certsync", "not an Automation account resource id"),
    "AUTOMATION_RUNBOOK": ("Invoke Remediation", "runbook name"),
    "CERTSYNC_ARM_ENDPOINT": ("http://management.azure.com", "not an ARM endpoint"),
    "CERTSYNC_CALLBACK_URL": ("https://app.azurewebsites.net/api?code=abc", "origin only"),
    "CERTSYNC_CALLBACK_SECRET": ("hunter2-callback", "must start with whsec_"),
    "CERTSYNC_PROBE_TIMEOUT": ("121", "above 0 and at most 120"),
    "CERTSYNC_NOTICE_DIGEST_LIMIT": ("0", "1 to 1000"),
    "CERTSYNC_TEAMS_WEBHOOK_URL": ("http://outlook.example/webhook?sig=s3cr3t", "https://"),
    "CERTSYNC_SLACK_WEBHOOK_URL": ("@Microsoft.KeyVault(SecretUri=https://kv/secrets/s3cr3t/)", "unresolved"),
    "CERTSYNC_WEBHOOK_URL": ("ftp://hooks.contoso.com/s3cr3t", "http(s) URL"),
    "CERTSYNC_WEBHOOK_SECRET": ("whsec_s3cr3t!", "not valid base64"),
    "CERTSYNC_DEBUG": None,  # any value turns it on
    "CERTSYNC_WATCHED_CERTIFICATES": ("exch-smtp=hrw-exchange,exch smtp", "write NAME or NAME=WORKER_GROUP"),
    "HYBRID_WORKER_GROUP": ("hrw exchange", "not a worker group name"),
    "KEY_VAULT_RESOURCE_GROUP": ("rg pki", "not a resource group name"),
    "FUNCTION_APP_ID": ("func-certsync", "not a Function App id"),
    "CERTSYNC_EVENT_SUBSCRIPTION_ID": ("certsync-certificate-events", "not an event subscription id"),
}
# What a setting needs set beside it to be read at all.
CONTEXT = {"CERTSYNC_WEBHOOK_SECRET": {"CERTSYNC_WEBHOOK_URL": "https://hooks.contoso.com/certsync"}}


def validated() -> list[Setting]:
    return [s for s in REGISTRY if s.validated and BAD[s.name] is not None]


def test_every_validated_setting_has_a_bad_value_here():
    assert sorted(s.name for s in REGISTRY if s.validated) == sorted(BAD)


@pytest.mark.parametrize("setting", validated(), ids=lambda s: s.name)
def test_a_bad_value_is_one_line_naming_the_setting_and_what_to_do(setting: Setting):
    bad, words = BAD[setting.name]
    with pytest.raises(CertsyncError) as caught:
        if setting.scope == "cli":  # read by the command line on its own, not by `load`
            setting.value({setting.name: bad})
        else:
            load({**CONTEXT.get(setting.name, {}), setting.name: bad})
    message = str(caught.value)
    assert message.startswith(setting.name) and "\n" not in message
    assert words in message
    if setting.secret:
        assert bad not in message and "s3cr3t" not in message and "hunter2" not in message


def test_secrets_are_never_echoed_and_the_registry_marks_them():
    secrets = {s.name for s in REGISTRY if s.secret}
    assert {
        "JobsStorage",
        "CERTSYNC_TEAMS_WEBHOOK_URL",
        "CERTSYNC_SLACK_WEBHOOK_URL",
        "CERTSYNC_WEBHOOK_URL",
        "CERTSYNC_WEBHOOK_SECRET",
        "CERTSYNC_CALLBACK_SECRET",
    } == secrets
    url = "https://prod-01.westeurope.logic.azure.com/workflows/x?sig=s3cr3t"
    settings = load(
        {
            "JobsStorage": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=s3cr3t",
            "CERTSYNC_TEAMS_WEBHOOK_URL": url,
            "CERTSYNC_WEBHOOK_URL": "https://hooks.contoso.com/s3cr3t",
            "CERTSYNC_WEBHOOK_SECRET": SECRET,
            "CERTSYNC_CALLBACK_SECRET": SECRET,
        }
    )
    assert settings.notify.webhook_urls["teams"] == url
    assert "s3cr3t" not in repr(settings) and SECRET.removeprefix("whsec_") not in repr(settings)


def test_defaults_are_the_registry_defaults_typed():
    settings = load({})
    assert settings.storage is None and settings.unset == {"CERTSYNC_VAULTS", "AUTOMATION_ACCOUNT_ID"}
    names = settings.names
    assert (names.remediation_queue, names.tracking_queue, names.notify_poison_queue) == (
        "certsync-jobs",
        "certsync-tracking",
        "certsync-notify-poison",
    )
    assert (names.audit_table, names.claims_table, names.state_table) == (
        "certsyncaudit",
        "certsyncjobs",
        "certsyncstate",
    )
    pipeline = settings.pipeline
    assert pipeline.vaults == () and pipeline.revocation == "hard" and pipeline.expiry_days == 30
    assert pipeline.allow_hosts == () and pipeline.trust_file == "" and pipeline.targets_file == ""
    assert pipeline.crl_max_mb == 64
    assert pipeline.vault_url("contoso-kv") == "https://contoso-kv.vault.azure.net"
    remediation = settings.remediation
    assert remediation.runbook == "Invoke-CertsyncRemediation" and remediation.probe_timeout == 15.0
    assert remediation.arm_endpoint == "https://management.azure.com" and remediation.callback_secrets == ()
    assert remediation.automation_account_id == "" and remediation.callback_url == ""
    assert settings.notify.webhook_urls == {} and settings.azure_client_id == ""
    assert debug({}) is False and debug({"CERTSYNC_DEBUG": "1"}) is True


def test_blank_values_are_the_defaults_and_values_are_trimmed_and_typed():
    settings = load(
        {
            "REMEDIATION_QUEUE": "  ",
            "CERTSYNC_VAULTS": " Contoso-KV , ,other-kv ",
            "CERTSYNC_REVOCATION": " SOFT ",
            "CERTSYNC_EXPIRY_DAYS": "45",
            "CERTSYNC_CRL_MAX_MB": "128",
            "CERTSYNC_VAULT_DNS_SUFFIX": ".vault.usgovcloudapi.net",
            "CERTSYNC_VAULT_URLS": "contoso-kv=https://kv.privatelink.contoso.com",
            "CERTSYNC_PROBE_TIMEOUT": "2.5",
            "AUTOMATION_ACCOUNT_ID": ACCOUNT,
            "AZURE_CLIENT_ID": GUID,
        }
    )
    assert settings.names.remediation_queue == "certsync-jobs"
    assert settings.pipeline.vaults == ("contoso-kv", "other-kv") and settings.unset == frozenset()
    assert settings.pipeline.revocation == "soft" and settings.pipeline.expiry_days == 45
    assert settings.pipeline.crl_max_mb == 128
    assert settings.pipeline.vault_url("contoso-kv") == "https://kv.privatelink.contoso.com"
    assert settings.pipeline.vault_url("other-kv") == "https://other-kv.vault.usgovcloudapi.net"
    assert settings.remediation.probe_timeout == 2.5 and settings.remediation.automation_account_id == ACCOUNT
    assert settings.azure_client_id == GUID


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("CERTSYNC_VAULTS", "CERTSYNC_VAULTS is not set; set it to the comma-separated Key Vault names"),
        ("AUTOMATION_ACCOUNT_ID", "AUTOMATION_ACCOUNT_ID is not set; set it to the Automation account's resource id"),
        ("JobsStorage", "JobsStorage is not set: define JobsStorage (a connection string"),
    ],
)
def test_a_required_setting_that_is_unset_is_reported_when_needed(name, words):
    settings = load({name: "   "})
    assert BY_NAME[name].required
    with pytest.raises(CertsyncError, match=re.escape(words)):
        settings.jobs_storage() if name == JOBS_STORAGE else settings.require(name)


def test_required_settings_that_are_set_pass():
    settings = load(
        {"CERTSYNC_VAULTS": "kv", "AUTOMATION_ACCOUNT_ID": ACCOUNT, "JobsStorage": "UseDevelopmentStorage=true"}
    )
    settings.require("CERTSYNC_VAULTS", "AUTOMATION_ACCOUNT_ID")
    assert settings.jobs_storage().connection_string == "UseDevelopmentStorage=true"


def test_the_storage_connection_is_read_like_the_functions_host():
    env = {"jobsstorage__QUEUESERVICEURI": "https://a.queue.core.windows.net", "JobsStorage__clientId": GUID}
    connection = load(env).jobs_storage()
    assert connection.queue_service_uri == "https://a.queue.core.windows.net" and connection.client_id == GUID
    assert connection.connection_string == "" and connection.table_service_uri == ""
    assert storage_connection({"Other": "UseDevelopmentStorage=true"}, "Other").name == "Other"
    with pytest.raises(CertsyncError, match=r"^Other is not set: define Other "):
        storage_connection({}, "Other")


def test_the_generic_webhooks_secret_is_read_with_its_url_only():
    assert notify_values({"CERTSYNC_WEBHOOK_SECRET": "not read"}).webhook_secrets == ()
    both = {
        "CERTSYNC_WEBHOOK_URL": "https://hooks.contoso.com/x",
        "CERTSYNC_WEBHOOK_SECRET": f"{SECRET} {new_secret()}",
    }
    assert len(notify_values(both).webhook_secrets) == 2


def test_one_value_reads_one_setting():
    assert value("CERTSYNC_EXPIRY_DAYS", {"CERTSYNC_EXPIRY_DAYS": "7"}) == 7
    assert value("CERTSYNC_PROBE_TIMEOUT", {"CERTSYNC_REVOCATION": "bad"}) == 15.0  # the others are not read


def test_the_registry_describes_every_setting_once():
    assert len(BY_NAME) == len(REGISTRY)
    for setting in REGISTRY:
        assert setting.description and "\n" not in setting.description, setting.name
        assert setting.scope in ("app", "host", "cli"), setting.name
        assert not setting.required or setting.missing, setting.name
        if setting.default and setting.validated:
            assert setting.value({}) is not None  # the default passes its own check


def test_the_notify_layers_setting_names_are_registered():
    from shared.notify.webhooks import SECRET_SETTING, URL_SETTINGS

    assert {*URL_SETTINGS.values(), SECRET_SETTING} <= set(BY_NAME)


# --- README's settings table ------------------------------------------------------------------------


def readme_rows() -> dict[str, str]:
    """README's app settings table: setting name -> its default cell (one cell may name several settings,
    with one default each, or one `(required...)` or empty cell for all)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| setting | default | what |") :].split("\n\n")[0].splitlines()[2:]
    rows: dict[str, str] = {}
    for line in table:
        names_cell, default_cell = (cell.strip() for cell in line.strip("|").split("|")[:2])
        names = re.findall(r"`([^`]+)`", names_cell)
        defaults = re.findall(r"`([^`]+)`", default_cell)
        if not defaults:
            defaults = [default_cell] * len(names)
        assert len(defaults) == len(names), f"README row {names_cell}: give one default per setting"
        for name, default in zip(names, defaults, strict=True):
            assert name not in rows, f"README names {name} twice"
            rows[name] = default
    return rows


def readme_default(setting: Setting) -> str:
    if setting.required:
        return f"(required for {setting.required_for})" if setting.required_for else "(required)"
    return setting.default


def test_readme_has_a_row_with_the_default_of_every_function_app_setting():
    rows = readme_rows()
    assert len(rows) > 20  # the parse sees the table
    for setting in REGISTRY:
        if setting.scope == "cli":
            assert setting.name not in rows, f"{setting.name} is the command line's, not an app setting"
            continue
        assert setting.name in rows, f"README's settings table has no row for {setting.name}"
        assert rows[setting.name] == readme_default(setting), setting.name


def test_every_readme_row_names_a_registered_setting():
    unknown = sorted(set(readme_rows()) - set(BY_NAME))
    assert unknown == []


def test_the_readme_table_check_catches_a_wrong_default(monkeypatch):
    rows = readme_rows()
    assert rows["CERTSYNC_EXPIRY_DAYS"] == "30" and rows["AUTOMATION_ACCOUNT_ID"] == "(required for remediation)"
    changed = Setting("CERTSYNC_EXPIRY_DAYS", "x", default="31")
    assert rows[changed.name] != readme_default(changed)


# --- the wiring builds each layer's values from the settings ----------------------------------------


def test_a_file_a_setting_names_is_read_with_the_setting_in_its_error(tmp_path):
    import shared.wiring
    from shared.pipeline.targets import TargetsError

    missing = str(tmp_path / "missing")
    with pytest.raises(CertsyncError, match=r"^CERTSYNC_TRUST_FILE: .*missing: cannot be read"):
        shared.wiring.settings_from_env({"CERTSYNC_VAULTS": "kv", "CERTSYNC_TRUST_FILE": missing})
    env = {"CERTSYNC_VAULTS": "kv", "JobsStorage": "UseDevelopmentStorage=true", "CERTSYNC_TARGETS_FILE": missing}
    with pytest.raises(TargetsError, match=r"^CERTSYNC_TARGETS_FILE: .*missing: no such targets file"):
        shared.wiring.pipeline_from_env(env)


def test_the_workers_compositions_read_the_process_environment(monkeypatch, tmp_path):
    import shared.wiring

    for name in [n for n in __import__("os").environ if n in BY_NAME or n.lower().startswith("jobsstorage")]:
        monkeypatch.delenv(name)
    for name, setting in {
        "JobsStorage": "UseDevelopmentStorage=true",
        "CERTSYNC_VAULTS": "contoso-kv",
        "AUTOMATION_ACCOUNT_ID": ACCOUNT,
        "AZURE_CLIENT_ID": GUID,
        "CERTSYNC_PROBE_TIMEOUT": "7",
        "AUDIT_TABLE": "myaudit",
        "STATE_TABLE": "mystate",
    }.items():
        monkeypatch.setenv(name, setting)
    cached = [
        shared.wiring.azure_pipeline,
        shared.wiring.azure_audit,
        shared.wiring.azure_reconciler,
        shared.wiring.azure_state_store,
        shared.wiring.azure_remediation,
    ]
    for function in cached:
        function.cache_clear()
    try:
        pipeline = shared.wiring.azure_pipeline()
        assert pipeline.settings.vaults == ("contoso-kv",)
        assert pipeline.sources("contoso-kv").vault_url == "https://contoso-kv.vault.azure.net"
        assert shared.wiring.azure_audit()._table.table_name == "myaudit"  # the table the setting named
        assert shared.wiring.azure_reconciler().vaults == ("contoso-kv",)
        assert shared.wiring.azure_state_store()._table.table_name == "mystate"
        remediation = shared.wiring.azure_remediation()
        assert remediation.settings.probe_timeout == 7.0
        assert remediation.automation.account_id == ACCOUNT
    finally:
        for function in cached:
            function.cache_clear()


def test_the_local_pipeline_reads_only_the_webhooks_and_the_identity(tmp_path):
    from shared.wiring import local_audit, local_pipeline, local_reconciler

    audit = str(tmp_path / "audit.sqlite")
    with pytest.raises(CertsyncError, match="give exactly one of --vault-dir DIR or --vault-url URL"):
        local_pipeline(audit=audit)
    with pytest.raises(CertsyncError, match="no such directory"):
        local_pipeline(vault_dir=str(tmp_path / "none"), audit=audit)
    url = "https://contoso-kv.vault.azure.net"
    env = {"AZURE_CLIENT_ID": GUID, "CERTSYNC_REVOCATION": "not read here"}
    pipeline = local_pipeline(vault_url=url, audit=audit, outbox=str(tmp_path / "outbox"), env=env)
    assert pipeline.sources("any").vault == "contoso-kv"
    with pytest.raises(CertsyncError, match=r"^AZURE_CLIENT_ID='me': not a client id"):
        local_pipeline(vault_url=url, audit=audit, env={"AZURE_CLIENT_ID": "me"})
    assert local_audit(audit) is not None
    with pytest.raises(CertsyncError, match="no audit trail here yet"):
        local_audit(str(tmp_path / "none.sqlite"))
    state = str(tmp_path / "state.sqlite")
    assert local_reconciler(vault_url=url, audit=audit, state=state).vaults == ("contoso-kv",)
    with pytest.raises(CertsyncError, match="--vault names a --vault-dir vault"):
        local_reconciler(vault_url=url, vault="other", audit=audit, state=state)


def test_the_crl_cap_reaches_the_pipelines_fetcher():
    import shared.wiring

    settings = shared.wiring.settings_from_env({"CERTSYNC_VAULTS": "kv", "CERTSYNC_CRL_MAX_MB": "2"})
    assert settings.crl_max_mb == 2 and settings.fetcher().limits.max_bytes["crl"] == 2 * 1024 * 1024
    assert shared.wiring.settings_from_env({"CERTSYNC_VAULTS": "kv"}).fetcher().limits.max_bytes["crl"] == 64 << 20


def test_problems_lists_every_bad_or_missing_setting_not_only_the_first():
    from shared.settings import problems

    env = {"CERTSYNC_EXPIRY_DAYS": "thirty", "CERTSYNC_REVOCATION": "strict", "CERTSYNC_WEBHOOK_URL": "ftp://x/s3cr3t"}
    found = dict(problems(env))
    assert set(found) == {
        "JobsStorage", "CERTSYNC_VAULTS", "AUTOMATION_ACCOUNT_ID",  # required, unset
        "CERTSYNC_EXPIRY_DAYS", "CERTSYNC_REVOCATION", "CERTSYNC_WEBHOOK_URL",
    }  # fmt: skip
    assert all("\n" not in message for message in found.values())
    assert "s3cr3t" not in found["CERTSYNC_WEBHOOK_URL"]  # a secret's value is never echoed
    good = {"JobsStorage": "UseDevelopmentStorage=true", "CERTSYNC_VAULTS": "kv", "AUTOMATION_ACCOUNT_ID": ACCOUNT}
    assert problems(good) == []


def test_the_watched_certificates_are_names_with_their_worker_group():
    assert value("CERTSYNC_WATCHED_CERTIFICATES", {"CERTSYNC_WATCHED_CERTIFICATES": " Exch-SMTP=hrw-a , edge ,"}) == {
        "exch-smtp": "hrw-a",
        "edge": "",
    }
    assert value("CERTSYNC_EVENT_SUBSCRIPTION_ID", {}) == ""
