"""The Key Vault issuance policy doctor: each rule, the policy read by the real Key Vault SDK from the
HTTPS fake vault and from a vault directory's policy.json, and `certsync doctor --policies` as a process."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.azure.keyvault import KeyVaultSource, issuance_policy
from shared.adapters.local.vault_directory import DirectoryVault
from shared.errors import CertsyncError
from shared.exchange.inventory import read_inventory
from shared.pipeline.policy import IssuancePolicy, check_policy, worst
from shared.pipeline.sources import SourceError
from tests.chains import build_chain, pem_of
from tests.fakes.keyvault import PKCS12, FakeKeyVault
from tests.test_cli import run
from tests.test_keyvault import pfx_of

YEAR = dt.timedelta(days=365)


def policy_document(**changes: Any) -> dict[str, Any]:
    """A policy Exchange and certsync are happy with (RSA-2048, exportable, PFX, CN=mail host, renew at
    67%), with `changes` as (section, key) -> value, e.g. `key_props__exportable=False`."""
    document: dict[str, Any] = {
        "key_props": {"exportable": True, "kty": "RSA", "key_size": 2048, "reuse_key": False},
        "secret_props": {"contentType": "application/x-pkcs12"},
        "x509_props": {
            "subject": "CN=mail.contoso.com",
            "sans": {"dns_names": ["mail.contoso.com"]},
            "validity_months": 12,
        },
        "lifetime_actions": [{"trigger": {"lifetime_percentage": 67}, "action": {"action_type": "AutoRenew"}}],
        "issuer": {"name": "Self"},
    }
    for key, value in changes.items():
        section, field = key.split("__")
        if value is None:
            document[section].pop(field, None)
        else:
            document[section][field] = value
    return document


def codes(document: dict[str, Any], **options: Any) -> dict[str, str]:
    policy = IssuancePolicy.from_document(document, "test")
    return {f.code: f.severity for f in check_policy("kv/exch", policy, **options)}


def inventory(*versions: str):
    servers = [
        {"Name": f"EX0{n}", "ServerRole": "Mailbox", "AdminDisplayVersion": v} for n, v in enumerate(versions, 1)
    ]
    return read_inventory(
        {"schema": "certsync.inventory/1", "collected_at": "2026-12-01T00:00:00Z", "servers": servers}, "test"
    )


def test_a_good_policy_has_no_finding() -> None:
    assert codes(policy_document(), lifetime=YEAR) == {}


def test_a_non_exportable_key_a_pem_secret_and_an_empty_subject_are_errors() -> None:
    found = codes(
        policy_document(
            key_props__exportable=False, secret_props__contentType="application/x-pem-file", x509_props__subject=""
        )
    )
    assert found == {
        "policy-key-not-exportable": "error",
        "policy-content-type": "error",
        "policy-subject-empty": "error",
    }


@pytest.mark.parametrize(
    ("subject", "code"),
    [
        ("O=Contoso, C=US", "policy-subject-empty"),
        ("CN=Contoso Mail Server", "policy-cn-not-dns-name"),
        ("CN=a,,", "policy-subject-empty"),
    ],
)
def test_a_subject_exchange_cannot_name_is_an_error(subject: str, code: str) -> None:
    assert codes(policy_document(x509_props__subject=subject)) == {code: "error"}


@pytest.mark.parametrize(
    ("trigger", "lifetime", "expected"),
    [
        ({"lifetime_percentage": 67}, 45, {}),
        ({"lifetime_percentage": 90}, 45, {"policy-renews-late": "error"}),  # 4.5 days left: inside the warning
        ({"lifetime_percentage": 80}, 45, {"policy-renews-late": "warning"}),  # 9 days: under 30% of 45
        ({"lifetime_percentage": 80}, 365, {}),  # 73 days of a year: fine
        ({"days_before_expiry": 30}, 45, {}),  # Key Vault's fixed 30 days: fine for 45 days
        ({"days_before_expiry": 30}, 30, {"policy-renews-late": "error"}),  # renews as soon as issued
        ({"days_before_expiry": 10}, 365, {"policy-renews-late": "error"}),  # after the 30-day warning
    ],
)
def test_the_renewal_trigger_is_judged_by_the_lifetime(trigger: dict, lifetime: int, expected: dict) -> None:
    document = policy_document()
    document["lifetime_actions"] = [{"trigger": trigger, "action": {"action_type": "AutoRenew"}}]
    assert codes(document, lifetime=dt.timedelta(days=lifetime)) == expected


def test_without_auto_renew_key_vault_only_emails_and_the_validity_gives_the_lifetime() -> None:
    document = policy_document()
    document["lifetime_actions"] = [{"trigger": {"days_before_expiry": 30}, "action": {"action_type": "EmailContacts"}}]
    assert codes(document) == {"policy-no-auto-renew": "warning"}
    document = policy_document(x509_props__validity_months=1)  # about 30 days, renewed at 67%: fine
    assert codes(document) == {}


@pytest.mark.parametrize(
    ("key", "servers", "expected"),
    [
        ({"kty": "RSA", "key_size": 1024}, (), "error"),
        ({"kty": "EC", "crv": "P-521"}, (), "error"),
        ({"kty": "oct"}, (), "error"),
        ({"kty": "EC", "crv": "P-256"}, (), "warning"),  # no inventory: enable ECC, check the builds
        ({"kty": "EC-HSM", "crv": "P-384"}, ("Version 15.2 (Build 1544.4)", "Version 15.1 (Build 2507.6)"), "warning"),
        ({"kty": "EC", "crv": "P-256"}, ("Version 15.2 (Build 1118.7)", "Version 15.1 (Build 2375.7)"), "error"),
        ({"kty": "EC", "crv": "P-256"}, ("15.2.1040.1",), "error"),  # 2019 CU11
        ({"kty": "EC", "crv": "P-256"}, ("",), "error"),  # a build certsync cannot read is not assumed capable
    ],
)
def test_a_key_exchange_cannot_use(key: dict, servers: tuple, expected: str) -> None:
    document = policy_document()
    document["key_props"] = {"exportable": True, **key}
    policy = IssuancePolicy.from_document(document, "test")
    findings = check_policy("kv/exch", policy, inventory=inventory(*servers) if servers else None)
    assert [f.code for f in findings] == ["policy-key"] and worst(findings) == expected
    if expected == "error" and servers:
        assert "EX02 (Version 15.1 (Build 2375.7))" in findings[0].message or "EX01" in findings[0].message


@pytest.mark.parametrize(
    "document",
    [
        {"key_props": []},
        {"key_props": {"exportable": "yes"}},
        {"x509_props": {"validity_months": 1.5}},
        {"issuer": {"name": 3}},
    ],
)
def test_a_policy_certsync_cannot_read_is_refused_in_one_line(document: dict) -> None:
    with pytest.raises(CertsyncError, match="not a Key Vault certificate policy"):
        IssuancePolicy.from_document(document, "policy.json")


def test_the_real_sdk_reads_the_policy_sent_with_the_version(keyvault: FakeKeyVault) -> None:
    chain = build_chain("rsa")
    keyvault.add_version(
        "exch", pfx_of(chain), PKCS12, policy=policy_document(key_props__exportable=False, x509_props__subject="")
    )
    source = KeyVaultSource(keyvault.vault_url, keyvault.credential, **keyvault.client_kwargs)
    latest = source.latest("exch")
    assert latest is not None and latest.policy is not None
    assert latest.policy.exportable is False and latest.policy.subject == ""
    assert latest.policy.auto_renew and latest.policy.lifetime_percentage == 67 and latest.policy.key_size == 2048
    found = {f.code for f in check_policy("localhost/exch", latest.policy)}
    assert found == {"policy-key-not-exportable", "policy-subject-empty"}
    from azure.keyvault.certificates import CertificateClient

    client = CertificateClient(keyvault.vault_url, keyvault.credential, **keyvault.client_kwargs)
    assert issuance_policy(client.get_certificate_policy("exch")) == latest.policy  # GET .../policy agrees
    assert issuance_policy(None) is None


def test_the_fake_vault_sends_a_minimal_policy_when_none_is_given(keyvault: FakeKeyVault) -> None:
    keyvault.add_version("plain", pfx_of(build_chain("rsa")), PKCS12)
    latest = KeyVaultSource(keyvault.vault_url, keyvault.credential, **keyvault.client_kwargs).latest("plain")
    assert latest is not None and latest.policy is not None and latest.policy.content_type == PKCS12
    assert {f.code for f in check_policy("localhost/plain", latest.policy)} == {"policy-no-auto-renew"}


def make_vault_dir(tmp_path: Path, policies: dict[str, Any]) -> Path:
    root = tmp_path / "vault"
    for name, document in policies.items():
        folder = root / name
        folder.mkdir(parents=True)
        chain = build_chain("rsa")
        (folder / "v1.pem").write_bytes(pem_of([chain.leaf, chain.intermediate]))
        if document is not None:
            (folder / "policy.json").write_text(document if isinstance(document, str) else json.dumps(document))
    return root


def test_a_vault_directory_reads_policy_json_beside_the_versions(tmp_path: Path) -> None:
    root = make_vault_dir(
        tmp_path, {"exch": policy_document(key_props__kty="EC", key_props__crv="P-256"), "web": None, "bad": "[1]"}
    )
    vault = DirectoryVault(root, "vault")
    exch = vault.latest("exch")
    assert exch is not None and exch.policy is not None and exch.policy.key_type == "EC"
    web = vault.latest("web")
    assert web is not None and web.policy is None
    with pytest.raises(SourceError, match=r"policy\.json: must be a JSON object"):
        vault.latest("bad")


def test_certsync_doctor_policies_reports_each_certificate_and_exits_1(tmp_path: Path) -> None:
    root = make_vault_dir(
        tmp_path,
        {
            "exch-smtp": policy_document(x509_props__subject="", key_props__exportable=False),
            "exch-ok": policy_document(),
            "web": None,
        },
    )
    result = run("doctor", "--policies", "--vault-dir", root, "--json")
    assert result.returncode == 1, result
    document = json.loads(result.stdout)
    assert document["schema"] == "certsync.doctor/1" and document["unchecked"] == ["web"]
    assert [(f["object"], f["code"], f["kind"]) for f in document["findings"]] == [
        ("vault/exch-smtp", "policy-key-not-exportable", "policy"),
        ("vault/exch-smtp", "policy-subject-empty", "policy"),
    ]
    text = run("doctor", "--policies", "--vault-dir", root)
    assert text.returncode == 1 and "ERROR" in text.stdout and "Fix: set the policy's subject" in text.stdout
    assert "No policy to check for: web" in text.stdout
    fine = run("doctor", "--policies", "--vault-dir", root, "--name", "exch-ok")
    assert fine.returncode == 0 and "No findings in 1 certificate polic(ies)." in fine.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("doctor",), "give --inventory FILE"),
        (("doctor", "--inventory", "x.json", "--vault-dir", "d"), "go with --policies"),
        (("doctor", "--policies"), "exactly one of --vault-dir"),
        (("doctor", "--policies", "--vault-dir", "/nonexistent/vault"), "no such directory"),
    ],
)
def test_certsync_doctor_policies_bad_input_is_one_line_and_exit_2(args: tuple, words: str) -> None:
    result = run(*args)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr
