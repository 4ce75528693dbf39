"""The Azure Key Vault backend of `CertificateSource`: certificate versions read with the Function's identity.

Per version it reads the certificate object (`get_certificate_version`: enabled, created, tags, x5t,
secret id) and the secret Key Vault keeps behind it (`get_secret(name, version)`: a PFX or a PEM),
from which only the certificates are taken: the leaf and its chain. The private key in the secret is
never parsed or kept, the secret's value is dropped as soon as the certificates are read, and it
never reaches an exception or a log. The identity needs Key Vault Reader on the vault (list, public
facts) and Key Vault Secrets User on each watched certificate's secret (infra/modules/vault-access.bicep).

The daily reconciliation also lists the vault's certificates (`list_properties_of_certificates`, paged)
and each one's versions: `tags` (of the newest enabled version) from the listing alone, so certificates
certsync has no targets for are never read further, and `latest` (the listing, then `get`). Listing is
covered by Key Vault Reader (certificates/read), which reads no secret value.

At fleet scale the reconciliation reads a batch of names at once (`tags_many`, `latest_many`): tags
come from the vault listing when its item (the current version) is enabled, so they cost no request;
`latest` reads the current version's secret alone -- one request -- when the listing shows that version
enabled (its thumbprint, creation time and tags come from the listing; a secret holding another certificate
means a version was created since, and the two-request read follows); otherwise it reads the current
version (`get_certificate`) and its secret, and lists the versions when the current one is disabled.
The reads of a batch run in `concurrency` threads (default 12), and every request of the source, from
any thread, passes one `_Throttle`:

- it starts requests no faster than `max_rate` per second (default 400: Key Vault allows 4,000
  transactions per 10 seconds per vault per region for secrets and vault transactions, see
  https://learn.microsoft.com/azure/key-vault/general/service-limits; 12 threads at 30 ms per call
  would reach that rate too, so the cap only bites when the vault answers faster);
- after a 429 (or 503) with `Retry-After`, no request of the source starts before that time has
  passed (Key Vault's throttling guidance: https://learn.microsoft.com/azure/key-vault/general/
  overview-throttling). The SDK's own retry policy (azure-core `RetryPolicy`, kept as the SDK sets it:
  up to 10 tries, honouring `Retry-After`) then sends the throttled request again; the throttle makes
  the other threads wait too instead of spending their tries.

A disabled version keeps its certificate object readable but Key Vault refuses its secret (403
"Operation get is not allowed on a disabled secret."), so a disabled version's bundle is its leaf
alone, from the certificate object.

The Azure SDKs are imported when the first request is made, not on import (cold start, and the CLI
with `--vault-dir`). Clients come only from `make_clients`, which is where tests pass the fake
vault's settings (`verify_challenge_resource=False, connection_verify=<ca.pem>, retry_total=0`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.errors import CertsyncError
from shared.pipeline.policy import IssuancePolicy
from shared.pipeline.sources import SourceError, StoredVersion, check_object_name, gather
from shared.x509.certificate import CertificateBundle
from shared.x509.containers import load_certificates

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.keyvault.certificates import CertificateClient, CertificateProperties, KeyVaultCertificate
    from azure.keyvault.secrets import SecretClient

PKCS12_CONTENT_TYPE = "application/x-pkcs12"
PEM_CONTENT_TYPE = "application/x-pem-file"

DEFAULT_CONCURRENCY = 12  # reads in flight at once (see the module docstring for the service limits)
MAX_CONCURRENCY = 64
MAX_RATE = 400.0  # requests per second: Key Vault's 4,000 transactions per 10 seconds per vault per region
PAGE_SIZE = 25  # items per listing page: the most Key Vault returns


def default_credential(client_id: str = "") -> TokenCredential:
    """The Function's managed identity: the user-assigned one `client_id` names (the app setting
    `AZURE_CLIENT_ID`) when given, else whatever `DefaultAzureCredential` finds (system-assigned identity,
    or a developer login)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()


def make_clients(
    vault_url: str,
    credential: TokenCredential | None = None,
    *,
    client_id: str = "",
    pool_size: int = 0,
    **client_kwargs: Any,
) -> tuple[CertificateClient, SecretClient]:
    """The certificate and secret clients for one vault; `client_kwargs` go to both. Without a `credential`,
    `default_credential(client_id)`. `pool_size` keeps that many connections open per client (requests
    keeps 10 by default, and a thread beyond them would open a new TLS connection per request)."""
    from azure.keyvault.certificates import CertificateClient
    from azure.keyvault.secrets import SecretClient

    credential = credential or default_credential(client_id)

    def options() -> dict[str, Any]:
        if pool_size <= 0 or "transport" in client_kwargs:
            return client_kwargs
        from azure.core.pipeline.transport import RequestsTransport

        transport = RequestsTransport(**client_kwargs)
        transport.open()  # the SDK's session and adapters (no urllib3 retries), re-mounted with a bigger pool
        session = transport.session
        assert session is not None
        for prefix in ("https://", "http://"):
            adapter = session.get_adapter(prefix)
            session.mount(prefix, type(adapter)(max_retries=adapter.max_retries, pool_maxsize=pool_size))
        return {**client_kwargs, "transport": transport}

    return (
        CertificateClient(vault_url, credential, **options()),
        SecretClient(vault_url, credential, **options()),
    )


def vault_name(vault_url: str) -> str:
    """`contoso-kv` for `https://contoso-kv.vault.azure.net/`: the first label of the host."""
    parts = urlsplit(vault_url)
    if parts.scheme != "https" or not parts.hostname:
        raise CertsyncError(f"{vault_url!r} is not a Key Vault URL; give https://<vault name>.vault.azure.net")
    return parts.hostname.split(".")[0]


class KeyVaultSource:
    """`CertificateSource` over one vault. Thread-safe; the clients are built on first use."""

    def __init__(
        self,
        vault_url: str,
        credential: TokenCredential | None = None,
        *,
        name: str | None = None,
        client_id: str = "",
        concurrency: int = DEFAULT_CONCURRENCY,
        max_rate: float = MAX_RATE,
        **client_kwargs: Any,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise CertsyncError(
                f"Key Vault concurrency {concurrency!r}: give a whole number from 1 to {MAX_CONCURRENCY}"
            )
        if isinstance(max_rate, bool) or not isinstance(max_rate, (int, float)) or not 0 < max_rate <= MAX_RATE:
            raise CertsyncError(
                f"Key Vault request rate {max_rate!r}: give requests per second above 0 and at most {MAX_RATE:g} "
                "(the vault's service limit)"
            )
        self.concurrency = concurrency
        self.throttle = _Throttle(float(max_rate))
        self.vault = name or vault_name(vault_url)  # `name` when the URL's host is not the vault's name
        self.vault_url = vault_url.rstrip("/")
        self._credential = credential
        self._client_id = client_id  # the user-assigned identity, when no `credential` is given
        self._client_kwargs = client_kwargs
        self._clients: tuple[CertificateClient, SecretClient] | None = None
        self._lock = threading.Lock()
        self._listed: dict[str, CertificateProperties] = {}  # the last listing, by lower-case name

    def get(self, name: str, version: str) -> StoredVersion:
        self._check(name, version)
        certificates, secrets = self._get_clients()
        with self._answers(f"reading certificate {name} version {version}"):
            certificate = certificates.get_certificate_version(name, version)
        return self._stored(secrets, certificate, name, version)

    def _stored(
        self, secrets: SecretClient, certificate: KeyVaultCertificate, name: str, version: str
    ) -> StoredVersion:
        properties = certificate.properties
        if properties is None:  # the SDK types it optional; Key Vault always sends them
            raise SourceError(
                f"Key Vault {self.vault}: certificate {name} version {version} came without its properties; "
                "it is retried",
                "unavailable",
                transient=True,
            )
        enabled = properties.enabled is not False
        content_type: str | None = None
        if enabled:
            bundle, content_type, _, _ = self._secret_certificates(secrets, name, version)
        else:
            bundle = self._object_certificate(certificate, name, version)
        stated = properties.x509_thumbprint.hex().upper() if properties.x509_thumbprint else "none"
        if bundle.leaf.thumbprint != stated:
            raise SourceError(
                f"Key Vault {self.vault}: certificate {name} version {version} states thumbprint {stated} but holds "
                f"a certificate with thumbprint {bundle.leaf.thumbprint}; re-import the certificate as a new version",
                "bad-content",
            )
        return StoredVersion(
            vault=self.vault,
            name=properties.name or name,
            version=properties.version or version,
            bundle=bundle,
            secret_id=certificate.secret_id or f"{self.vault_url}/secrets/{name}/{version}",
            enabled=enabled,
            created=properties.created_on,
            tags=dict(properties.tags or {}),
            content_type=content_type,
            # A PFX secret without its key: the policy says exportable: false (PEM is refused by its type).
            key_exportable=bundle.has_private_key if content_type == PKCS12_CONTENT_TYPE else None,
            policy=issuance_policy(certificate.policy),
        )

    def previous(self, name: str, version: str) -> StoredVersion | None:
        self._check(name, version)
        versions = self._list_versions(name)
        target = next((v for v in versions if (v.version or "").lower() == version.lower()), None)
        if target is None or target.created_on is None:
            raise SourceError(
                f"Key Vault {self.vault}: certificate {name} has no version {version}; check the event, or whether "
                "the version was deleted",
                "not-found",
            )
        position = _order(target)
        earlier = [_order(v) for v in versions if v.enabled and v.created_on is not None and _order(v) < position]
        if not earlier:
            return None
        return self.get(name, max(earlier)[1])

    def names(self) -> list[str]:
        certificates, _ = self._get_clients()
        with self._answers("listing the certificates"):
            listed = [p for p in certificates.list_properties_of_certificates(max_page_size=PAGE_SIZE) if p.name]
        with self._lock:
            self._listed = {(p.name or "").lower(): p for p in listed}
        return sorted((p.name or "" for p in listed), key=str.lower)

    def latest(self, name: str) -> StoredVersion | None:
        self._check(name)
        certificates, secrets = self._get_clients()
        with self._lock:
            listed = self._listed.get(name.lower())
        if listed is not None and listed.enabled is not False and listed.x509_thumbprint:
            found = self._latest_from_listing(secrets, listed, name)
            if found is not None:
                return found
        try:
            with self._answers(f"reading the current version of certificate {name}"):
                current = certificates.get_certificate(name)
        except SourceError as exc:
            if exc.kind == "not-found":  # no such certificate: no enabled version either
                return None
            raise
        properties = current.properties
        if properties is not None and properties.enabled is not False and properties.version:
            return self._stored(secrets, current, name, properties.version)  # the current version is the newest
        newest = self._newest_enabled(name)  # the current version is disabled: an older one may be enabled
        return self.get(name, newest.version or "") if newest is not None else None

    def _latest_from_listing(
        self, secrets: SecretClient, listed: CertificateProperties, name: str
    ) -> StoredVersion | None:
        """The current version from one request: its secret (`get_secret` without a version), with the
        enabled flag, creation time and tags the listing already gave. None when the secret holds another
        certificate than the listing's thumbprint (a version created since the listing): `latest` then
        reads it the two-request way."""
        bundle, content_type, secret_id, version = self._secret_certificates(secrets, name, "")
        if bundle.leaf.thumbprint != (listed.x509_thumbprint or b"").hex().upper() or not version:
            return None
        return StoredVersion(
            vault=self.vault,
            name=listed.name or name,
            version=version,
            bundle=bundle,
            secret_id=secret_id or f"{self.vault_url}/secrets/{name}/{version}",
            enabled=True,
            created=listed.created_on,
            tags=dict(listed.tags or {}),
            content_type=content_type,
            # A PFX secret without its key: the policy says exportable: false (PEM is refused by its type).
            key_exportable=bundle.has_private_key if content_type == PKCS12_CONTENT_TYPE else None,
        )

    def tags(self, name: str) -> dict[str, str]:
        newest = self._newest_enabled(name)  # the listing carries each version's tags: no secret is read
        return dict(newest.tags or {}) if newest is not None else {}

    def tags_many(self, names: Sequence[str]) -> dict[str, dict[str, str] | Exception]:
        """`tags` of each name; from the last `names()` listing, without a request, where it shows the
        current version enabled (that version is then the newest enabled one)."""
        with self._lock:
            listed = dict(self._listed)

        def read(name: str) -> dict[str, str]:
            item = listed.get(name.lower())
            if item is not None and item.enabled is not False:
                return dict(item.tags or {})
            return self.tags(name)

        return gather(names, read, self.concurrency)

    def latest_many(self, names: Sequence[str]) -> dict[str, StoredVersion | Exception | None]:
        return gather(names, self.latest, self.concurrency)

    # helpers

    def _check(self, name: str, version: str | None = None) -> None:
        try:
            check_object_name(name)
            if version is not None:
                check_object_name(version, "version")
        except CertsyncError as exc:
            raise SourceError(f"Key Vault {self.vault}: {exc}", "not-found") from None

    def _newest_enabled(self, name: str) -> CertificateProperties | None:
        self._check(name)
        enabled = [v for v in self._list_versions(name) if v.enabled and v.created_on is not None and v.version]
        return max(enabled, key=_order, default=None)

    def _list_versions(self, name: str) -> list[CertificateProperties]:
        certificates, _ = self._get_clients()
        with self._answers(f"listing the versions of certificate {name}"):
            return list(certificates.list_properties_of_certificate_versions(name))

    def _get_clients(self) -> tuple[CertificateClient, SecretClient]:
        with self._lock:
            if self._clients is None:
                options = {"per_retry_policies": [self.throttle], **self._client_kwargs}
                self._clients = make_clients(
                    self.vault_url,
                    self._credential,
                    client_id=self._client_id,
                    pool_size=self.concurrency,
                    **options,
                )
            return self._clients

    def _secret_certificates(
        self, secrets: SecretClient, name: str, version: str
    ) -> tuple[CertificateBundle, str, str, str]:
        """The certificates in the version's secret ("": the current version's), the secret's content type
        (lower case), its id and its version. The value is deleted before anything is raised, and errors are
        raised outside the handler, so no traceback frame or exception context holds it."""
        which = f"version {version}" if version else "current version"
        with self._answers(f"reading the secret of certificate {name} {which}"):
            secret = secrets.get_secret(name, version or None)
        value = secret.value or ""
        content_type = (secret.properties.content_type or "").lower()
        secret_id, version = secret.properties.id or "", secret.properties.version or version
        del secret
        label = f"Key Vault {self.vault}: the secret of certificate {name} {which}"
        bundle: CertificateBundle | None = None
        problem = ""
        try:
            if content_type == PKCS12_CONTENT_TYPE:
                data = base64.b64decode("".join(value.split()), validate=True)
            elif content_type == PEM_CONTENT_TYPE:
                data = value.encode("utf-8")
            else:
                data = b""
                problem = (
                    f"{label} has content type {content_type or 'none'!r}, not PFX or PEM; re-import the certificate"
                )
            if not problem:
                bundle = load_certificates(data, source=label, password=None)
        except binascii.Error:
            problem = f"{label} is not base64 although its content type says PFX; re-import the certificate"
        except CertsyncError as exc:  # names `label` and what to do, never the data
            problem = str(exc)
        finally:
            del value
            data = b""
        if bundle is None:
            raise SourceError(problem, "bad-content")
        return bundle, content_type, secret_id, version

    def _object_certificate(self, certificate: KeyVaultCertificate, name: str, version: str) -> CertificateBundle:
        label = f"Key Vault {self.vault}: certificate {name} version {version}"
        try:
            return load_certificates(bytes(certificate.cer or b""), source=label)
        except CertsyncError as exc:
            raise SourceError(str(exc), "bad-content") from None

    @contextlib.contextmanager
    def _answers(self, action: str) -> Iterator[None]:
        """Turn the SDK's exceptions for `action` into SourceError (one line, what to do)."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        where = f"Key Vault {self.vault}: {action}"
        grant = (
            f"grant the Function's identity Key Vault Reader on {self.vault} and Key Vault Secrets User on the"
            " certificate's secret (infra/modules/vault-access.bicep)"
        )
        try:
            yield
        except ResourceNotFoundError as exc:
            raise SourceError(
                f"{where}: not found ({_status(exc)}); check the certificate name and version in the event, "
                "or whether the version was deleted",
                "not-found",
            ) from None
        except ClientAuthenticationError as exc:
            if exc.status_code is None:  # the credential failed before any request was answered
                raise SourceError(
                    f"{where}: the Function's identity could not get a token ({_first_line(exc)}); check its managed "
                    f"identity (AZURE_CLIENT_ID) and {grant}",
                    "forbidden",
                    transient=True,
                ) from None
            raise SourceError(f"{where}: refused ({_status(exc)}); {grant}", "forbidden", transient=True) from None
        except HttpResponseError as exc:
            status = exc.status_code or 0
            if status in (401, 403):
                raise SourceError(f"{where}: refused ({_status(exc)}); {grant}", "forbidden", transient=True) from None
            if status == 400:
                raise SourceError(
                    f"{where}: Key Vault rejected the name or version ({_status(exc)}); check the event",
                    "not-found",
                ) from None
            transient = status in (408, 429) or status >= 500
            advice = "it is retried; check the vault's health if it persists" if transient else "check the vault"
            raise SourceError(f"{where}: failed ({_status(exc)}); {advice}", "unavailable", transient) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise SourceError(
                f"{where}: could not be reached ({_first_line(exc)}); check the vault URL and the Function's "
                "network access to the vault (firewall, private endpoint)",
                "unavailable",
                transient=True,
            ) from None


class _Throttle:
    """An azure-core pipeline policy (added per retry, so every try passes it) shared by all of a source's
    requests: starts them at most `rate` per second, and after a 429/503 with Retry-After starts none
    before that time has passed. `throttled` counts the answers that asked to wait."""

    next: Any  # the rest of the pipeline, set by azure-core

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._lock = threading.Lock()
        self._next_start = 0.0  # time.monotonic() values
        self._resume = 0.0
        self.throttled = 0

    def send(self, request: Any) -> Any:
        self._wait()
        response = self.next.send(request)
        http = response.http_response
        if http.status_code in (429, 503):
            delay = retry_after(http.headers.get("Retry-After"))
            with self._lock:
                self.throttled += 1
                if delay:
                    self._resume = max(self._resume, time.monotonic() + delay)
        return response

    def _wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start, self._resume)
            self._next_start = start + self._interval
        if start > now:
            time.sleep(start - now)


def issuance_policy(policy: Any) -> IssuancePolicy | None:
    """The SDK's `CertificatePolicy` (sent with each certificate version) as the policy doctor reads it."""
    if policy is None:
        return None
    renew = [a for a in policy.lifetime_actions or () if str(getattr(a.action, "value", a.action)) == "AutoRenew"]
    trigger = renew[0] if renew else None

    def text(value: Any) -> str | None:
        return None if value is None else str(getattr(value, "value", value))

    return IssuancePolicy(
        exportable=policy.exportable,
        key_type=text(policy.key_type),
        key_size=policy.key_size,
        curve=text(policy.key_curve_name),
        content_type=text(policy.content_type),
        subject=policy.subject,
        dns_names=tuple(policy.san_dns_names or ()),
        validity_months=policy.validity_in_months,
        lifetime_percentage=trigger.lifetime_percentage if trigger else None,
        days_before_expiry=trigger.days_before_expiry if trigger else None,
        auto_renew=trigger is not None,
        issuer=policy.issuer_name,
    )


def retry_after(value: str | None) -> float:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date); 0 when absent or unreadable."""
    text = (value or "").strip()
    if not text:
        return 0.0
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        return 0.0
    return max(0.0, when.timestamp() - time.time())


def _order(version: CertificateProperties) -> tuple:
    """Versions in order like DirectoryVault: by created time, then by version id (so two versions created
    in the same second still have a fixed order)."""
    return (version.created_on, (version.version or "").lower())


def _status(exc: Any) -> str:
    """`HTTP 403 Forbidden/ForbiddenByRbac`: the status and Key Vault's error code, never the body."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or getattr(exc, "reason", None) or ""
    inner = getattr(error, "innererror", None)
    if isinstance(inner, dict) and inner.get("code"):
        code = f"{code}/{inner['code']}"
    return f"HTTP {exc.status_code} {code}".strip()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc or type(exc).__name__)
    line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return line[:200]
