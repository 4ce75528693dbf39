"""`shared.adapters.azure.keyvault.KeyVaultSource` with the real Key Vault SDK clients against the fake vault
over HTTPS."""

from __future__ import annotations

import base64
import datetime as dt
import gc
import socket
import subprocess
import sys
import traceback
import types
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.serialization import pkcs12

from shared.adapters.azure.keyvault import KeyVaultSource, default_credential, vault_name
from shared.errors import CertsyncError
from shared.pipeline.sources import SourceError, StoredVersion
from tests.chains import Chain, build_chain, issue, pem_of
from tests.fakes.keyvault import KEY_VAULT_SCOPE, PEM, PKCS12, FakeKeyVault, StaticTokenCredential

ROOT = Path(__file__).resolve().parent.parent
NAME = "exch-smtp"
T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.timezone.utc)
PRIVATE_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
    x25519.X25519PrivateKey,
    x448.X448PrivateKey,
)


def pfx_of(chain: Chain) -> bytes:
    """An unprotected PFX as Key Vault stores it: the leaf with its key, then the CA certificates
    (root first, so the loader has to order the chain itself)."""
    extras = [chain.root.cert, chain.intermediate.cert]
    return pkcs12.serialize_key_and_certificates(
        b"exch-smtp", chain.leaf.key, chain.leaf.cert, extras, serialization.NoEncryption()
    )


def source_for(vault: FakeKeyVault, credential: object | None = None) -> KeyVaultSource:
    return KeyVaultSource(vault.vault_url, credential or vault.credential, **vault.client_kwargs)


def reachable(root: object) -> list[object]:
    """Every object reachable from `root` through references, leaving out classes, modules and functions."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen: set[int] = set()
    found: list[object] = []
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        found.append(obj)
        stack.extend(gc.get_referents(obj))
    return found


def frames_holding(exc: BaseException, secrets: list[bytes]) -> list[str]:
    """Names of frames under `shared/` in the exception's traceback (and its context) whose locals
    hold any of `secrets` (as bytes or as base64/text)."""
    texts = [s.decode("latin-1") for s in secrets] + [base64.b64encode(s).decode() for s in secrets]
    leaks = []
    current: BaseException | None = exc
    while current is not None:
        for frame, _ in traceback.walk_tb(current.__traceback__):
            if "/shared/" not in frame.f_code.co_filename:
                continue
            for value in frame.f_locals.values():
                if isinstance(value, bytes) and any(s in value for s in secrets):
                    leaks.append(frame.f_code.co_name)
                if isinstance(value, str) and any(t in value for t in texts):
                    leaks.append(frame.f_code.co_name)
        current = current.__cause__ or current.__context__
    return leaks


# --- reading one version -------------------------------------------------------------------------


def test_a_pfx_backed_version_yields_its_leaf_chain_and_properties(keyvault: FakeKeyVault) -> None:
    chain = build_chain("rsa")
    version = keyvault.add_version(
        "Exch-SMTP", pfx_of(chain), PKCS12, created=T0, tags={"exchange-servers": "EX01,EX02"}
    )

    stored = source_for(keyvault).get(NAME, version)

    assert stored.vault == "localhost"
    assert (stored.name, stored.version) == ("Exch-SMTP", version)  # Key Vault's spelling of the name
    assert stored.bundle.leaf.der == chain.leaf.der
    assert [c.der for c in stored.bundle.chain] == [chain.intermediate.der, chain.root.der]
    assert stored.bundle.container == "pkcs12"
    assert stored.thumbprint == chain.leaf.cert.fingerprint(hashes.SHA1()).hex().upper()
    assert stored.enabled is True
    assert stored.created == T0
    assert stored.tags == {"exchange-servers": "EX01,EX02"}
    assert stored.secret_id == f"{keyvault.vault_url}/secrets/Exch-SMTP/{version}"


def test_a_stored_version_holds_no_private_key_nor_the_secret(keyvault: FakeKeyVault) -> None:
    chain = build_chain("ec")
    pfx = pfx_of(chain)
    key_der = chain.leaf.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    version = keyvault.add_version(NAME, pfx, PKCS12)

    stored = source_for(keyvault).get(NAME, version)

    objects = reachable(stored)
    assert any(isinstance(o, StoredVersion) for o in objects) and len(objects) > 20  # the walk did walk
    assert [type(o).__name__ for o in objects if isinstance(o, PRIVATE_KEY_TYPES)] == []
    assert [type(o).__name__ for o in objects if isinstance(o, pkcs12.PKCS12KeyAndCertificates)] == []
    blobs = [o for o in objects if isinstance(o, bytes)]
    texts = [o for o in objects if isinstance(o, str)]
    assert not [b for b in blobs if pfx in b or key_der in b]
    assert not [t for t in texts if base64.b64encode(pfx).decode() in t]


def test_a_pem_backed_version_yields_its_leaf_and_chain_and_skips_the_key(keyvault: FakeKeyVault) -> None:
    chain = build_chain("ec")
    pem = chain.leaf.key_pem + pem_of([chain.root, chain.leaf, chain.intermediate])
    version = keyvault.add_version(NAME, pem, PEM, tags={"role": "smtp"})

    stored = source_for(keyvault).get(NAME, version)

    assert stored.bundle.leaf.der == chain.leaf.der
    assert [c.der for c in stored.bundle.chain] == [chain.intermediate.der, chain.root.der]
    assert (stored.bundle.container, stored.bundle.has_private_key) == ("pem", False)
    assert stored.tags == {"role": "smtp"}
    key_body = chain.leaf.key_pem.split(b"-----")[2].strip().splitlines()[0].decode()
    assert not [o for o in reachable(stored) if isinstance(o, str) and (key_body in o or "PRIVATE KEY" in o)]


def test_certificate_names_are_case_insensitive(keyvault: FakeKeyVault) -> None:
    version = keyvault.add_version("exch-smtp", pfx_of(build_chain()), PKCS12)

    stored = source_for(keyvault).get("EXCH-SMTP", version.upper())

    assert (stored.name, stored.version) == ("exch-smtp", version)


def test_a_disabled_version_is_its_leaf_alone_and_its_secret_is_not_asked_for(keyvault: FakeKeyVault) -> None:
    chain = build_chain()
    version = keyvault.add_version(NAME, pfx_of(chain), PKCS12, enabled=False)

    stored = source_for(keyvault).get(NAME, version)

    assert stored.enabled is False
    assert stored.bundle.leaf.der == chain.leaf.der
    assert stored.bundle.chain == ()
    assert not [r.path for r in keyvault.requests if r.path.startswith("/secrets/")]


def test_the_fake_refuses_a_disabled_secret_like_key_vault(keyvault: FakeKeyVault) -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.keyvault.secrets import SecretClient

    version = keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12, enabled=False)
    client = SecretClient(keyvault.vault_url, keyvault.credential, **keyvault.client_kwargs)

    with pytest.raises(HttpResponseError) as caught:
        client.get_secret(NAME, version)

    assert caught.value.status_code == 403
    assert caught.value.error is not None and caught.value.error.code == "Forbidden"
    assert "disabled secret" in caught.value.error.message


def test_the_fake_serves_the_latest_version_and_its_policy_to_the_real_client(keyvault: FakeKeyVault) -> None:
    from azure.keyvault.certificates import CertificateClient

    older, newer = build_chain(), build_chain(dns_names=("smtp.contoso.com",))
    keyvault.add_version(NAME, pfx_of(older), PKCS12, created=T0)
    latest = keyvault.add_version(NAME, pfx_of(newer), PKCS12, created=T0 + dt.timedelta(days=60))
    client = CertificateClient(keyvault.vault_url, keyvault.credential, **keyvault.client_kwargs)

    certificate = client.get_certificate(NAME)

    assert certificate.properties.version == latest
    assert bytes(certificate.cer) == newer.leaf.der
    assert certificate.policy is not None and certificate.policy.san_dns_names == ["smtp.contoso.com"]
    assert any(r.path.startswith(f"/certificates/{NAME}/?") for r in keyvault.requests)


# --- the previous version ------------------------------------------------------------------------


def test_previous_is_the_newest_enabled_version_created_before_across_pages(keyvault: FakeKeyVault) -> None:
    chains = [build_chain() for _ in range(5)]
    # Version ids sort against time (the fake lists by id, as Key Vault does), and 5 versions are 3 pages.
    ids = ["e0", "d0", "c0", "b0", "a0"]
    for n, (chain, version) in enumerate(zip(chains, ids, strict=True)):
        keyvault.add_version(
            NAME,
            pfx_of(chain),
            PKCS12,
            version=version * 16,
            created=T0 + dt.timedelta(days=30 * n),
            enabled=version != "c0",  # the one just before the new version is disabled
        )
    source = source_for(keyvault)

    previous = source.previous(NAME, "b0" * 16)

    assert previous is not None
    assert previous.version == "d0" * 16
    assert previous.bundle.leaf.der == chains[1].leaf.der
    listed = [r.path for r in keyvault.requests if "/versions" in r.path and "Authorization" in r.headers]
    assert len(listed) == 3 and "$skiptoken=" in listed[-1]


def test_the_oldest_version_has_no_previous(keyvault: FakeKeyVault) -> None:
    first = keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12, created=T0)
    keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12, created=T0 + dt.timedelta(days=1))

    assert source_for(keyvault).previous(NAME, first) is None


def test_versions_created_in_the_same_second_are_ordered_by_version_id(keyvault: FakeKeyVault) -> None:
    for version in ("b" * 32, "a" * 32, "c" * 32):
        keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12, version=version, created=T0)
    source = source_for(keyvault)

    previous = source.previous(NAME, "b" * 32)

    assert previous is not None and previous.version == "a" * 32
    assert source.previous(NAME, "a" * 32) is None


def test_previous_of_a_version_the_vault_does_not_list_is_not_found(keyvault: FakeKeyVault) -> None:
    keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12)

    with pytest.raises(SourceError) as caught:
        source_for(keyvault).previous(NAME, "0" * 32)

    assert (caught.value.kind, caught.value.transient) == ("not-found", False)
    assert NAME in str(caught.value) and "0" * 32 in str(caught.value)


# --- listing: names and the latest version (the daily reconciliation) ----------------------------


def test_names_lists_every_certificate_across_pages(keyvault: FakeKeyVault) -> None:
    for name in ("exch-smtp", "Alpha-Web", "zeta-old"):
        keyvault.add_version(name, pfx_of(build_chain()), PKCS12, enabled=name != "zeta-old")

    names = source_for(keyvault).names()

    assert names == ["Alpha-Web", "exch-smtp", "zeta-old"]  # disabled ones too: the caller decides
    listed = [r.path for r in keyvault.requests if r.path.startswith("/certificates?") and "Authorization" in r.headers]
    assert len(listed) == 2 and "$skiptoken=" in listed[-1]  # page size 2: the SDK followed nextLink


def test_an_empty_vault_has_no_names(keyvault: FakeKeyVault) -> None:
    assert source_for(keyvault).names() == []


def test_latest_is_the_newest_enabled_version_with_its_tags(keyvault: FakeKeyVault) -> None:
    chains = [build_chain() for _ in range(4)]
    # Ids sort against time, so the listing order (by id) is not the answer; the newest is disabled.
    for n, (chain, version) in enumerate(zip(chains, ["d0", "c0", "b0", "a0"], strict=True)):
        keyvault.add_version(
            NAME,
            pfx_of(chain),
            PKCS12,
            version=version * 16,
            created=T0 + dt.timedelta(days=30 * n),
            enabled=version != "a0",
            tags={"certsync-servers": f"EX0{n}"},
        )

    latest = source_for(keyvault).latest(NAME)

    assert latest is not None and latest.version == "b0" * 16
    assert latest.bundle.leaf.der == chains[2].leaf.der
    assert latest.tags == {"certsync-servers": "EX02"} and latest.enabled
    assert [c.der for c in latest.bundle.chain] == [chains[2].intermediate.der, chains[2].root.der]


def test_latest_after_the_listing_is_one_request_for_the_current_secret(keyvault: FakeKeyVault) -> None:
    chains = [build_chain(), build_chain()]
    keyvault.add_version(NAME, pfx_of(chains[0]), PKCS12, version="a1" * 16, created=T0)
    keyvault.add_version(
        NAME, pfx_of(chains[1]), PKCS12, version="b2" * 16, created=T0 + dt.timedelta(days=1), tags={"k": "v"}
    )
    source = source_for(keyvault)
    source.names()
    before = len(keyvault.requests)

    latest = source.latest(NAME)

    authorized = [r.path.split("?")[0] for r in keyvault.requests[before:] if "Authorization" in r.headers]
    assert authorized == [f"/secrets/{NAME}/"]  # the current version: no certificate object, no version listing
    assert latest is not None and latest.version == "b2" * 16 and latest.bundle.leaf.der == chains[1].leaf.der
    assert latest.tags == {"k": "v"} and latest.enabled and latest.created == T0 + dt.timedelta(days=1)
    assert latest.secret_id.endswith(f"/secrets/{NAME}/{'b2' * 16}")


def test_latest_after_the_listing_reads_a_version_created_since_the_two_request_way(
    keyvault: FakeKeyVault,
) -> None:
    keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12, version="a1" * 16, created=T0, tags={"k": "old"})
    source = source_for(keyvault)
    source.names()
    newer = build_chain()
    keyvault.add_version(
        NAME, pfx_of(newer), PKCS12, version="c3" * 16, created=T0 + dt.timedelta(days=2), tags={"k": "new"}
    )

    latest = source.latest(NAME)

    # the secret holds a certificate the listing did not show: its tags and dates are read, not assumed
    assert latest is not None and latest.version == "c3" * 16 and latest.bundle.leaf.der == newer.leaf.der
    assert latest.tags == {"k": "new"} and latest.created == T0 + dt.timedelta(days=2)


def test_tags_are_the_newest_enabled_versions_read_without_its_secret(keyvault: FakeKeyVault) -> None:
    keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12, created=T0, tags={"certsync-servers": "EX01"})
    keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12, created=T0 + dt.timedelta(days=1), enabled=False)
    source = source_for(keyvault)

    assert source.tags(NAME) == {"certsync-servers": "EX01"}
    assert source.tags("never-added") == {}
    assert {r.path.split("?")[0] for r in keyvault.requests} == {
        f"/certificates/{NAME}/versions",
        "/certificates/never-added/versions",
    }  # the version listings alone: no certificate object, no secret


def test_latest_is_none_without_an_enabled_version(keyvault: FakeKeyVault) -> None:
    keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12, enabled=False)
    source = source_for(keyvault)

    assert source.latest(NAME) is None
    assert source.latest("never-added") is None


@pytest.mark.parametrize(
    ("status", "code", "kind"), [(403, "Forbidden", "forbidden"), (503, "ServiceUnavailable", "unavailable")]
)
def test_a_failed_certificate_listing_is_mapped(keyvault: FakeKeyVault, status: int, code: str, kind: str) -> None:
    keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12)
    keyvault.fail("/certificates", status, code)

    with pytest.raises(SourceError) as caught:
        source_for(keyvault).names()

    assert (caught.value.kind, caught.value.transient) == (kind, True)
    assert "Key Vault localhost: listing the certificates" in str(caught.value) and "\n" not in str(caught.value)


def test_latest_of_a_name_key_vault_cannot_hold_is_refused_before_any_request(keyvault: FakeKeyVault) -> None:
    with pytest.raises(SourceError) as caught:
        source_for(keyvault).latest("../secrets/x")

    assert caught.value.kind == "not-found" and keyvault.requests == []


# --- errors --------------------------------------------------------------------------------------


def test_a_missing_certificate_is_not_found_and_final(keyvault: FakeKeyVault) -> None:
    with pytest.raises(SourceError) as caught:
        source_for(keyvault).get(NAME, "f" * 32)

    error = caught.value
    assert (error.kind, error.transient) == ("not-found", False)
    assert "Key Vault localhost" in str(error) and NAME in str(error) and "f" * 32 in str(error)
    assert "404 CertificateNotFound" in str(error)
    assert "\n" not in str(error)


def test_a_missing_secret_is_not_found(keyvault: FakeKeyVault) -> None:
    version = keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12)
    keyvault.fail("/secrets/", 404, "SecretNotFound")

    with pytest.raises(SourceError) as caught:
        source_for(keyvault).get(NAME, version)

    assert (caught.value.kind, caught.value.transient) == ("not-found", False)
    assert "secret" in str(caught.value) and "404 SecretNotFound" in str(caught.value)


def test_forbidden_is_transient_and_says_which_roles_to_grant(keyvault: FakeKeyVault) -> None:
    version = keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12)
    keyvault.fail("/secrets/", 403, "Forbidden", inner_code="ForbiddenByRbac")

    with pytest.raises(SourceError) as caught:
        source_for(keyvault).get(NAME, version)

    error = caught.value
    assert (error.kind, error.transient) == ("forbidden", True)
    assert "403 Forbidden/ForbiddenByRbac" in str(error)
    assert "Key Vault Reader on localhost and Key Vault Secrets User on the certificate's secret" in str(error)
    assert version in str(error) and "\n" not in str(error)


def test_a_token_the_vault_does_not_accept_is_forbidden(keyvault: FakeKeyVault) -> None:
    version = keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12)

    with pytest.raises(SourceError) as caught:
        source_for(keyvault, StaticTokenCredential("someone-else")).get(NAME, version)

    assert (caught.value.kind, caught.value.transient) == ("forbidden", True)
    assert "401" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "code"), [(500, "InternalServerError"), (503, "ServiceUnavailable"), (429, "Throttled")]
)
def test_server_errors_and_throttling_are_unavailable_and_transient(
    keyvault: FakeKeyVault, status: int, code: str
) -> None:
    version = keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12)
    keyvault.fail(f"/certificates/{NAME}/", status, code)

    with pytest.raises(SourceError) as caught:
        source_for(keyvault).get(NAME, version)

    assert (caught.value.kind, caught.value.transient) == ("unavailable", True)
    assert f"{status} {code}" in str(caught.value)
    authorized = [r for r in keyvault.requests if "Authorization" in r.headers]
    assert len(authorized) == 1  # retry_total=0 reaches the SDK: one try, no retries


def test_a_failed_version_listing_is_mapped_too(keyvault: FakeKeyVault) -> None:
    version = keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12)
    keyvault.fail(f"/certificates/{NAME}/versions", 500, "InternalServerError")

    with pytest.raises(SourceError) as caught:
        source_for(keyvault).previous(NAME, version)

    assert (caught.value.kind, caught.value.transient) == ("unavailable", True)
    assert "listing the versions" in str(caught.value)


def test_an_unreachable_vault_is_unavailable_and_transient(keyvault: FakeKeyVault) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = KeyVaultSource(f"https://localhost:{port}", keyvault.credential, **keyvault.client_kwargs)

    with pytest.raises(SourceError) as caught:
        source.get(NAME, "a" * 32)

    assert (caught.value.kind, caught.value.transient) == ("unavailable", True)
    assert "could not be reached" in str(caught.value) and "\n" not in str(caught.value)


def test_a_vault_certificate_the_client_does_not_trust_is_unavailable(keyvault: FakeKeyVault) -> None:
    version = keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12)
    untrusting = {**keyvault.client_kwargs, "connection_verify": True}  # system CAs, not the test CA

    with pytest.raises(SourceError) as caught:
        KeyVaultSource(keyvault.vault_url, keyvault.credential, **untrusting).get(NAME, version)

    assert caught.value.kind == "unavailable"
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert keyvault.requests == []  # the TLS handshake failed before any request was read


def test_a_secret_that_disagrees_with_its_certificate_thumbprint_is_bad_content(keyvault: FakeKeyVault) -> None:
    chain = build_chain()
    other = issue("mail.contoso.com", issuer=chain.intermediate, dns_names=["mail.contoso.com"])
    version = keyvault.add_version(NAME, pfx_of(chain), PKCS12, cer=other.der)

    with pytest.raises(SourceError) as caught:
        source_for(keyvault).get(NAME, version)

    assert (caught.value.kind, caught.value.transient) == ("bad-content", False)
    message = str(caught.value)
    assert other.cert.fingerprint(hashes.SHA1()).hex().upper() in message
    assert chain.leaf.cert.fingerprint(hashes.SHA1()).hex().upper() in message


@pytest.mark.parametrize("content", ["pem-key-only", "pfx-garbage"])
def test_a_secret_without_certificates_is_bad_content_and_never_quoted(keyvault: FakeKeyVault, content: str) -> None:
    chain = build_chain()
    if content == "pem-key-only":
        value, content_type = chain.leaf.key_pem, PEM
    else:
        value, content_type = b"\x30\x82\x01\x00" + b"\x02\x01\x03" + bytes(range(253)), PKCS12
    version = keyvault.add_version(NAME, value, content_type, cer=chain.leaf.der)

    with pytest.raises(SourceError) as caught:
        source_for(keyvault).get(NAME, version)

    error = caught.value
    assert (error.kind, error.transient) == ("bad-content", False)
    assert NAME in str(error) and version in str(error) and "\n" not in str(error)
    body = value.split(b"-----")[2].strip() if content == "pem-key-only" else value
    assert body.decode("latin-1")[:40] not in str(error)
    assert base64.b64encode(value).decode()[:40] not in str(error)
    assert frames_holding(error, [value, body]) == []


def test_a_name_key_vault_cannot_hold_is_refused_before_any_request(keyvault: FakeKeyVault) -> None:
    with pytest.raises(SourceError) as caught:
        source_for(keyvault).get("../secrets/other", "a" * 32)

    assert (caught.value.kind, caught.value.transient) == ("not-found", False)
    assert keyvault.requests == []


# --- the wire: challenge, clients, imports -------------------------------------------------------


def test_the_bearer_challenge_round_trip_happens(keyvault: FakeKeyVault) -> None:
    version = keyvault.add_version(NAME, pfx_of(build_chain()), PKCS12)

    source_for(keyvault).get(NAME, version)

    first, second = keyvault.requests[:2]
    assert (first.method, first.path.split("?")[0]) == ("GET", f"/certificates/{NAME}/{version}")
    assert "Authorization" not in first.headers
    assert second.path == first.path
    assert second.headers["Authorization"] == f"Bearer {keyvault.credential.token}"
    scopes, options = keyvault.credential.calls[0]
    assert scopes == (KEY_VAULT_SCOPE,)
    assert options.get("tenant_id") == keyvault.tenant_id


def test_importing_shared_keyvault_loads_no_azure_module() -> None:
    code = (
        "import sys, shared.adapters.azure.keyvault\n"
        "print(sorted(m for m in sys.modules if m == 'azure' or m.startswith('azure.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_default_credential_is_the_user_assigned_identity_when_azure_client_id_is_set() -> None:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    assert isinstance(default_credential("11111111-2222-3333-4444-555555555555"), ManagedIdentityCredential)
    assert isinstance(default_credential(), DefaultAzureCredential)


def test_the_vault_name_is_the_first_label_of_the_host() -> None:
    assert vault_name("https://contoso-kv.vault.azure.net/") == "contoso-kv"
    assert vault_name("https://Contoso-KV.vault.azure.net:443") == "contoso-kv"
    with pytest.raises(CertsyncError, match="not a Key Vault URL"):
        KeyVaultSource("http://contoso-kv.vault.azure.net")
