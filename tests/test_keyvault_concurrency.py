"""`KeyVaultSource` at fleet scale against the fake vault over HTTPS: batch reads in a bounded thread pool
give each name its own result in the order asked, and a 429's Retry-After holds back every thread.

Times are compared between the fake's own records of requests (`FakeKeyVault.answers`), never with a
wall clock or a threshold on how long something took."""

from __future__ import annotations

import datetime as dt
import email.utils
import time

import pytest

from shared.adapters.azure.keyvault import MAX_RATE, KeyVaultSource, retry_after
from shared.errors import CertsyncError
from shared.pipeline.sources import SourceError, StoredVersion, gather
from tests.chains import build_chain
from tests.fakes.keyvault import PKCS12, FakeKeyVault
from tests.test_keyvault import pfx_of

T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.timezone.utc)


def source_for(vault: FakeKeyVault, **options: object) -> KeyVaultSource:
    return KeyVaultSource(vault.vault_url, vault.credential, **{**vault.client_kwargs, **options})


def test_latest_many_reads_concurrently_within_the_bound_and_keys_results_in_the_order_asked(
    keyvault: FakeKeyVault,
) -> None:
    chain, other = build_chain(), build_chain()
    names = [f"cert-{n:02d}" for n in range(24)]
    for name in names:
        keyvault.add_version(name, pfx_of(chain), PKCS12, created=T0, version=f"{name}-old")
        keyvault.add_version(name, pfx_of(other), PKCS12, created=T0 + dt.timedelta(days=1), version=f"{name}-new")
    # cert-05's current version is disabled: the one before it is the latest enabled
    keyvault.add_version("cert-05", pfx_of(chain), PKCS12, created=T0 + dt.timedelta(days=2), enabled=False)
    keyvault.fail("/secrets/cert-07/", 403, "Forbidden")
    keyvault.latency = 0.05
    source = source_for(keyvault, concurrency=6)
    asked = [*reversed(names), "never-added"]

    found = source.latest_many(asked)

    assert list(found) == asked  # the order asked, whatever order the reads finished in
    for name in names:
        value = found[name]
        if name == "cert-07":
            assert isinstance(value, SourceError) and value.kind == "forbidden"
            continue
        assert isinstance(value, StoredVersion)
        assert (value.version, value.bundle.leaf.der) == (f"{name}-new", other.leaf.der)
    assert found["never-added"] is None
    listed = {a.path.split("?")[0] for a in keyvault.answers if a.path.split("?")[0].endswith("/versions")}
    assert listed == {"/certificates/cert-05/versions"}  # the others' current version was enabled
    assert 1 < keyvault.peak_in_flight <= 6  # overlapped, never more than the bound


def test_latest_reads_the_current_version_and_its_secret_only(keyvault: FakeKeyVault) -> None:
    version = keyvault.add_version("exch-smtp", pfx_of(build_chain()), PKCS12)
    source = source_for(keyvault)

    latest = source.latest("exch-smtp")

    assert latest is not None and latest.version == version
    asked = [a.path.split("?")[0] for a in keyvault.answers]
    assert asked == ["/certificates/exch-smtp/", f"/secrets/exch-smtp/{version}"]


def test_tags_many_takes_enabled_current_versions_from_the_listing_without_a_request(keyvault: FakeKeyVault) -> None:
    keyvault.add_version("web", pfx_of(build_chain()), PKCS12, tags={"role": "web"})
    keyvault.add_version("exch", pfx_of(build_chain()), PKCS12, created=T0, tags={"certsync-servers": "EX01"})
    keyvault.add_version("exch", pfx_of(build_chain()), PKCS12, created=T0 + dt.timedelta(days=1), enabled=False)
    source = source_for(keyvault, concurrency=4)
    assert source.names() == ["exch", "web"]
    listed = len(keyvault.answers)

    tags = source.tags_many(["web", "exch", "never-listed"])

    assert tags == {"web": {"role": "web"}, "exch": {"certsync-servers": "EX01"}, "never-listed": {}}
    asked = sorted(a.path.split("?")[0] for a in keyvault.answers[listed:])
    assert asked == ["/certificates/exch/versions", "/certificates/never-listed/versions"]  # not `web`


def test_the_sdk_retries_a_429_after_its_retry_after(keyvault: FakeKeyVault) -> None:
    version = keyvault.add_version("exch-smtp", pfx_of(build_chain()), PKCS12)
    keyvault.throttle(1, retry_after="1", path_prefix="/secrets/")
    source = source_for(keyvault, retry_total=2)

    latest = source.latest("exch-smtp")

    assert latest is not None and latest.version == version
    secrets = [a for a in keyvault.answers if a.path.startswith("/secrets/")]
    assert [a.status for a in secrets] == [429, 200]
    assert secrets[1].at - secrets[0].at >= 1.0  # sent again only after Retry-After
    assert source.throttle.throttled == 1


def test_a_429_holds_back_every_thread_of_the_source_until_its_retry_after(keyvault: FakeKeyVault) -> None:
    names = [f"cert-{n}" for n in range(8)]
    for name in names:
        keyvault.add_version(name, pfx_of(build_chain()), PKCS12)
    keyvault.throttle(1, retry_after="1", path_prefix="/certificates")
    source = source_for(keyvault, concurrency=4)  # retry_total=0: the listing itself fails

    with pytest.raises(SourceError) as caught:
        source.names()
    found = source.latest_many(names)

    assert caught.value.transient and "429" in str(caught.value)
    throttled, *after = keyvault.answers
    assert throttled.status == 429 and all(a.status == 200 for a in after) and len(after) == 16
    assert min(a.at for a in after) - throttled.at >= 1.0  # no thread started before Retry-After passed
    assert all(isinstance(v, StoredVersion) for v in found.values())


def test_retry_after_reads_seconds_and_http_dates() -> None:
    soon = email.utils.formatdate(time.time() + 120, usegmt=True)
    past = email.utils.formatdate(time.time() - 120, usegmt=True)

    assert retry_after("2") == 2.0
    assert retry_after(" 0.5 ") == 0.5
    assert 0 < retry_after(soon) <= 120
    assert retry_after(past) == 0.0
    assert retry_after("-3") == 0.0
    assert retry_after(None) == retry_after("") == retry_after("soon") == 0.0
    assert retry_after("Fri, 01 May 2026 08:00:00 -0000") == 0.0  # no zone: unreadable


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("concurrency", 0),
        ("concurrency", 65),
        ("concurrency", True),
        ("concurrency", "8"),
        ("max_rate", 0),
        ("max_rate", MAX_RATE + 1),
        ("max_rate", False),
    ],
)
def test_concurrency_and_rate_outside_the_limits_are_refused(option: str, value: object) -> None:
    with pytest.raises(CertsyncError, match=f"Key Vault (concurrency|request rate) {value!r}"):
        KeyVaultSource("https://contoso-kv.vault.azure.net", object(), **{option: value})  # type: ignore[arg-type]


def test_gather_keeps_each_names_result_or_error_in_the_order_given() -> None:
    def read(name: str) -> int:
        if name == "bad":
            raise SourceError("bad: refused", "forbidden")
        return len(name)

    for concurrency in (1, 4):
        found = gather(["ccc", "bad", "a", "ccc", "bb"], read, concurrency)
        assert list(found) == ["ccc", "bad", "a", "bb"]
        assert (found["ccc"], found["a"], found["bb"]) == (3, 1, 2)
        assert isinstance(found["bad"], SourceError)
