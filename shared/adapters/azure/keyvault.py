"""The Azure Key Vault backend of `CertificateSource`: certificate versions read with the Function's identity.

Per version it reads the certificate object (`get_certificate_version`: enabled, created, tags, x5t,
secret id) and the secret Key Vault keeps behind it (`get_secret(name, version)`: a PFX or a PEM),
from which only the certificates are taken: the leaf and its chain. The private key in the secret is
never parsed or kept, the secret's value is dropped as soon as the certificates are read, and it
never reaches an exception or a log. The identity needs the Key Vault Certificate User and Key
Vault Secrets User roles on the vault.

The daily reconciliation also lists the vault's certificates (`list_properties_of_certificates`, paged)
and each one's versions: `tags` (of the newest enabled version) from the listing alone, so certificates
certsync has no targets for are never read further, and `latest` (the listing, then `get`). Listing is
covered by the same Certificate User role (certificates/read).

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
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.errors import CertsyncError
from shared.pipeline.sources import SourceError, StoredVersion, check_object_name
from shared.x509.certificate import CertificateBundle
from shared.x509.containers import load_certificates

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.keyvault.certificates import CertificateClient, CertificateProperties, KeyVaultCertificate
    from azure.keyvault.secrets import SecretClient

PKCS12_CONTENT_TYPE = "application/x-pkcs12"
PEM_CONTENT_TYPE = "application/x-pem-file"


def default_credential(client_id: str = "") -> TokenCredential:
    """The Function's managed identity: the user-assigned one `client_id` names (the app setting
    `AZURE_CLIENT_ID`) when given, else whatever `DefaultAzureCredential` finds (system-assigned identity,
    or a developer login)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()


def make_clients(
    vault_url: str, credential: TokenCredential | None = None, *, client_id: str = "", **client_kwargs: Any
) -> tuple[CertificateClient, SecretClient]:
    """The certificate and secret clients for one vault; `client_kwargs` go to both. Without a `credential`,
    `default_credential(client_id)`."""
    from azure.keyvault.certificates import CertificateClient
    from azure.keyvault.secrets import SecretClient

    credential = credential or default_credential(client_id)
    return (
        CertificateClient(vault_url, credential, **client_kwargs),
        SecretClient(vault_url, credential, **client_kwargs),
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
        **client_kwargs: Any,
    ) -> None:
        self.vault = name or vault_name(vault_url)  # `name` when the URL's host is not the vault's name
        self.vault_url = vault_url.rstrip("/")
        self._credential = credential
        self._client_id = client_id  # the user-assigned identity, when no `credential` is given
        self._client_kwargs = client_kwargs
        self._clients: tuple[CertificateClient, SecretClient] | None = None
        self._lock = threading.Lock()

    def get(self, name: str, version: str) -> StoredVersion:
        self._check(name, version)
        certificates, secrets = self._get_clients()
        with self._answers(f"reading certificate {name} version {version}"):
            certificate = certificates.get_certificate_version(name, version)
        properties = certificate.properties
        if properties is None:  # the SDK types it optional; Key Vault always sends them
            raise SourceError(
                f"Key Vault {self.vault}: certificate {name} version {version} came without its properties; "
                "it is retried",
                "unavailable",
                transient=True,
            )
        enabled = properties.enabled is not False
        if enabled:
            bundle = self._secret_certificates(secrets, name, version)
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
            listed = [p.name for p in certificates.list_properties_of_certificates() if p.name]
        return sorted(listed, key=str.lower)

    def latest(self, name: str) -> StoredVersion | None:
        newest = self._newest_enabled(name)
        return self.get(name, newest.version or "") if newest is not None else None

    def tags(self, name: str) -> dict[str, str]:
        newest = self._newest_enabled(name)  # the listing carries each version's tags: no secret is read
        return dict(newest.tags or {}) if newest is not None else {}

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
                self._clients = make_clients(
                    self.vault_url, self._credential, client_id=self._client_id, **self._client_kwargs
                )
            return self._clients

    def _secret_certificates(self, secrets: SecretClient, name: str, version: str) -> CertificateBundle:
        """The certificates in the version's secret. The value is deleted before anything is raised, and
        errors are raised outside the handler, so no traceback frame or exception context holds it."""
        with self._answers(f"reading the secret of certificate {name} version {version}"):
            secret = secrets.get_secret(name, version)
        value = secret.value or ""
        content_type = (secret.properties.content_type or "").lower()
        del secret
        label = f"Key Vault {self.vault}: the secret of certificate {name} version {version}"
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
        return bundle

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
        grant = f"grant the Function's identity Key Vault Certificate User and Key Vault Secrets User on {self.vault}"
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
