"""A local HTTPS Key Vault (data plane, read side) that the real `azure-keyvault-certificates` and
`azure-keyvault-secrets` clients talk to unchanged.

No Key Vault emulator can be installed on the build machine (lowkey-vault and the others come as
Docker images, Maven jars or GitHub releases), so this is our own: an `HttpsServer` from `tests.servers`,
with a test CA (`LoopbackTls`, also importable from here) written to a PEM file the clients trust.

    with FakeKeyVault(tls) as vault:
        version = vault.add_version("exch-smtp", pfx_bytes, PKCS12, tags={"exchange": "yes"})
        client = CertificateClient(vault.vault_url, vault.credential, **vault.client_kwargs)
        client.get_certificate_version("exch-smtp", version)

What it does, following Key Vault as far as we know it:
- A request without `Authorization` is answered 401 with the bearer challenge
  (`WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"`); the SDK then asks its credential for
  `https://vault.azure.net/.default` with `tenant_id=<tenant>` and sends the request again. A token
  other than `credential`'s is answered 401 with the challenge too.
- `GET /certificates/{name}/{version}` and `GET /certificates/{name}/` (latest = newest created):
  the certificate bundle (`id`, `kid`, `sid`, `x5t`, `cer`, `attributes`, `tags`, a minimal `policy`).
  Disabled versions are returned as well (Key Vault does this by design, azure-cli#26044); only
  their secret is withheld.
- `GET /secrets/{name}/{version}` (or latest): the backing secret (`value`, `contentType`, `kid`,
  `managed: true`); for a disabled version 403 Forbidden "Operation get is not allowed on a disabled
  secret." (innererror SecretDisabled).
- `GET /certificates/{name}/versions`: certificate items, the client's `maxresults` per page but at
  most `page_size` (default 2; Key Vault's is 25), linked by `nextLink` with a `$skiptoken`. Items
  come in version-id order, not by date (as Key Vault and lowkey-vault list them), so callers have
  to sort. An unknown name lists nothing (assumed, not verified against Key Vault).
- `GET /certificates/{name}/policy`: the newest version's issuance policy (`add_version(policy=)`).
- `GET /certificates`: one item per certificate (id without a version; the attributes and tags of
  its newest version), in name order, paged the same way.
- Names and versions are case-insensitive; ids keep the case they were added with. Any api-version
  is accepted. Errors carry the Key Vault body `{"error": {"code": ..., "message": ...}}`.
- `fail(prefix, status, code)` makes authenticated requests under a path prefix fail;
  `requests` (from `HttpServer`) logs every request with its method, path, headers and body.
- At scale: `latency` (seconds, constructor or attribute) delays every answer, as a vault across a
  network does; `throttle(count, retry_after)` answers the next `count` authenticated requests 429
  Throttled with that `Retry-After`; `answers` lists each authenticated request with the
  `time.monotonic()` it arrived at and the status it got, so tests compare requests' times with each
  other, never with a wall clock; `peak_in_flight` is the most requests it was answering at once.

Not emulated: writes (the challenge request of a POST/PUT is sent without its body), deleted
objects, the issuer endpoints, policy writes, CAE claims challenges.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.servers import Headers, HttpsServer, LoopbackTls, Route

PKCS12 = "application/x-pkcs12"
PEM = "application/x-pem-file"
KEY_VAULT_RESOURCE = "https://vault.azure.net"
KEY_VAULT_SCOPE = KEY_VAULT_RESOURCE + "/.default"

_NOT_FOUND_HELP = (
    "If you recently deleted this {what} you may be able to recover it using the correct recovery command. "
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)
_DEFAULT_MESSAGES = {
    "Forbidden": (
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role "
        "definitions were changed recently, please observe propagation time."
    ),
    "CertificateNotFound": "A certificate with (name/id) was not found in this key vault.",
    "SecretNotFound": "A secret with (name/id) was not found in this key vault.",
    "Throttled": "Request was not processed because too many requests were received.",
    "InternalServerError": "The server encountered an internal error.",
    "ServiceUnavailable": "The service is unavailable.",
}


# --- credential ----------------------------------------------------------------------------------


class StaticTokenCredential:
    """A `TokenCredential` that hands out one fixed token and records every request for one."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            self.calls.append((scopes, kwargs))
        return AccessToken(self.token, int(time.time()) + 3600)


# --- the vault -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One authenticated request: when it arrived (`time.monotonic()`), what it asked, what it got."""

    at: float
    method: str
    path: str  # with the query string
    status: int


@dataclass
class _Version:
    name: str
    version: str
    cer: bytes  # DER of the certificate the certificate object reports
    secret: str  # the secret value exactly as Key Vault serves it
    content_type: str
    enabled: bool
    created: int
    not_before: int
    expires: int
    tags: dict[str, str] = field(default_factory=dict)
    policy: dict[str, Any] | None = None  # the policy sent with this version (None: a minimal one)


class FakeKeyVault(HttpsServer):
    """The fake vault on `https://localhost:PORT` (a context manager, like `HttpServer`).

    Without `tls` it makes its own CA in a temporary directory, removed on `stop()`."""

    def __init__(
        self,
        tls: LoopbackTls | None = None,
        *,
        page_size: int = 2,
        tenant_id: str | None = None,
        latency: float = 0.0,
    ) -> None:
        super().__init__(tls, name="fake-keyvault")
        self.page_size = page_size
        self.latency = latency  # seconds before each answer
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.credential = StaticTokenCredential(secrets.token_urlsafe(24))
        self._versions: dict[str, list[_Version]] = {}
        self._failures: dict[str, tuple[int, str, str, str | None]] = {}
        self._throttles: list[tuple[str, int, str]] = []  # (path prefix, requests left, Retry-After)
        self._answers: list[Answer] = []
        self._in_flight = 0
        self.peak_in_flight = 0  # the most requests being answered at once
        self._data_lock = threading.Lock()
        self._chaos: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (error rate, slow rate, slow seconds)
        self._chaos_random = random.Random(0)
        self.chaos_answers = {"5xx": 0, "429": 0, "slow": 0}  # what `chaos` injected so far

    # what clients need

    @property
    def origin(self) -> str:
        """`https://localhost:PORT`: the vault name (first host label) is `localhost`."""
        return f"https://localhost:{self.port}"

    @property
    def vault_url(self) -> str:
        """`https://localhost:PORT`, the vault URL the SDK clients take."""
        return self.origin

    @property
    def client_kwargs(self) -> dict[str, Any]:
        """Keywords for `CertificateClient`/`SecretClient`: no challenge-resource check (the SDK wants the
        vault under vault.azure.net), trust the test CA (the SDK sends tokens over HTTPS only), and fail on
        the first error instead of retrying for seconds."""
        return {"verify_challenge_resource": False, "connection_verify": str(self.tls.ca_pem), "retry_total": 0}

    # populating

    def add_version(
        self,
        name: str,
        pfx_or_pem: bytes,
        content_type: str = PKCS12,
        *,
        enabled: bool = True,
        created: dt.datetime | None = None,
        tags: Mapping[str, str] | None = None,
        version: str | None = None,
        cer: bytes | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> str:
        """Add a version of certificate `name` backed by `pfx_or_pem` (an unprotected PFX, or PEM with
        the private key and the certificates); returns its version id (random unless given).

        `created` defaults to now, or a second after the newest version if that is later, so versions
        added one after another are ordered. The certificate object reports the key's certificate
        unless `cer` (DER) says otherwise — a way to make the object and its secret disagree. `policy`
        (Key Vault's REST shape: `key_props`, `secret_props`, `x509_props`, `lifetime_actions`, `issuer`)
        is the issuance policy sent with the version and by `GET /certificates/{name}/policy` for the
        newest one; without it a minimal one matching the certificate is sent."""
        if content_type == PKCS12:
            value = base64.b64encode(pfx_or_pem).decode("ascii")
        elif content_type == PEM:
            value = pfx_or_pem.decode("ascii")
        else:
            raise ValueError(f"content_type must be {PKCS12!r} or {PEM!r}")
        if cer is not None:  # the secret need not even hold a certificate then
            leaf = x509.load_der_x509_certificate(cer)
        else:
            leaf = _pkcs12_leaf(pfx_or_pem) if content_type == PKCS12 else _pem_leaf(pfx_or_pem)
        with self._data_lock:
            existing = self._versions.setdefault(name.lower(), [])
            if created is None:
                stamp = max([int(time.time())] + [v.created + 1 for v in existing])
            else:
                stamp = int(created.timestamp())
            entry = _Version(
                name=existing[0].name if existing else name,
                version=version or uuid.uuid4().hex,
                cer=leaf.public_bytes(serialization.Encoding.DER),
                secret=value,
                content_type=content_type,
                enabled=enabled,
                created=stamp,
                not_before=int(leaf.not_valid_before_utc.timestamp()),
                expires=int(leaf.not_valid_after_utc.timestamp()),
                tags=dict(tags or {}),
                policy=json.loads(json.dumps(policy)) if policy is not None else None,
            )
            existing.append(entry)
        return entry.version

    def fail(
        self, path_prefix: str, status: int, code: str, message: str | None = None, *, inner_code: str | None = None
    ) -> None:
        """Answer authenticated requests whose path (without the query) starts with `path_prefix`
        (case-insensitive; the longest matching prefix wins) with `status` and the Key Vault error body."""
        with self._data_lock:
            self._failures[path_prefix.lower()] = (
                status,
                code,
                message or _DEFAULT_MESSAGES.get(code, code),
                inner_code,
            )

    def clear_failures(self) -> None:
        with self._data_lock:
            self._failures.clear()
            self._throttles.clear()

    def throttle(self, count: int, retry_after: str = "1", path_prefix: str = "/") -> None:
        """Answer the next `count` authenticated requests under `path_prefix` 429 Throttled with
        `Retry-After: retry_after` (seconds, or an HTTP date)."""
        with self._data_lock:
            self._throttles.append((path_prefix.lower(), count, retry_after))

    def chaos(
        self, error_rate: float = 0.0, *, slow_rate: float = 0.0, slow_seconds: float = 0.0, seed: int = 0
    ) -> None:
        """Fault injection for storms: answer a share `error_rate` of authenticated requests 503
        ServiceUnavailable or 429 Throttled (`Retry-After: 0`), alternately, and hold a share `slow_rate`
        `slow_seconds` before answering; drawn from a random generator seeded with `seed`, so a run repeats.
        `chaos()` turns it off."""
        with self._data_lock:
            self._chaos = (error_rate, slow_rate, slow_seconds)
            self._chaos_random = random.Random(seed)

    def _chaos_pick(self) -> tuple[str | None, float]:
        """(the injected failure, "5xx", "429" or None; seconds to hold the answer) for one request."""
        with self._data_lock:
            error_rate, slow_rate, slow_seconds = self._chaos
            if not (error_rate or slow_rate):
                return None, 0.0
            draw, slow = self._chaos_random.random(), self._chaos_random.random() < slow_rate
            failure = None
            if draw < error_rate:
                failure = "5xx" if draw < error_rate / 2 else "429"
                self.chaos_answers[failure] += 1
            if slow:
                self.chaos_answers["slow"] += 1
            return failure, slow_seconds if slow else 0.0

    @property
    def answers(self) -> list[Answer]:
        """Every authenticated request so far, in the order they arrived."""
        with self._data_lock:
            return list(self._answers)

    # serving

    def _lookup(self, path: str) -> Route | None:
        return Route(handler=self._answer_logged)

    def _answer_logged(
        self, method: str, target: str, headers: Headers, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        arrived = time.monotonic()
        with self._data_lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            status, extra, payload = self._answer(method, target, headers, body)
        finally:
            with self._data_lock:
                self._in_flight -= 1
        if headers.get("Authorization") is not None:
            with self._data_lock:
                self._answers.append(Answer(arrived, method, target, status))
        return status, extra, payload

    def _throttled(self, path: str) -> str | None:
        """The Retry-After of a throttle that takes this request, if one does."""
        lowered = path.lower()
        with self._data_lock:
            for index, (prefix, left, retry_after) in enumerate(self._throttles):
                if left > 0 and lowered.startswith(prefix):
                    self._throttles[index] = (prefix, left - 1, retry_after)
                    return retry_after
        return None

    def _answer(self, method: str, target: str, headers: Headers, body: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        authorization = headers.get("Authorization")
        if authorization is None:
            return self._challenge("AKV10000: Request is missing a Bearer or PoP token.")
        if authorization != f"Bearer {self.credential.token}":
            return self._challenge("The access token is not valid for this vault.")
        injected, hold = self._chaos_pick()
        if hold:
            time.sleep(hold)
        if injected == "5xx":
            return _error(503, "ServiceUnavailable", "The fake Key Vault is unavailable (injected).")
        if injected == "429":
            status, throttled, payload = _error(429, "Throttled", _DEFAULT_MESSAGES["Throttled"])
            return status, {**throttled, "Retry-After": "0"}, payload
        retry_after = self._throttled(path)
        if retry_after is not None:
            status, throttled, payload = _error(429, "Throttled", _DEFAULT_MESSAGES["Throttled"])
            return status, {**throttled, "Retry-After": retry_after}, payload
        failure = self._failure_for(path)
        if failure is not None:
            status, code, message, inner = failure
            return _error(status, code, message, inner)
        if method != "GET":
            return _error(405, "MethodNotAllowed", f"The fake Key Vault serves GET only, not {method}.")
        segments = path.split("/")[1:]
        if segments in (["certificates"], ["certificates", ""]):
            return self._list_certificates(query)
        if len(segments) in (2, 3) and segments[0] in ("certificates", "secrets"):
            collection, name = segments[0], segments[1]
            rest = segments[2] if len(segments) == 3 else ""
            if collection == "certificates" and rest.lower() == "versions":
                return self._list_versions(name, query)
            if collection == "certificates" and rest.lower() == "policy":
                found = self._find(name, "")
                if found is None:
                    return _error(404, "CertificateNotFound", f"A certificate with (name/id) {name} was not found.")
                return _json(200, self._policy(found))
            return self._get(collection, name, rest)
        return _error(404, "NotFound", f"The fake Key Vault has no route for {path}.")

    def _challenge(self, message: str) -> tuple[int, dict[str, str], bytes]:
        status, headers, payload = _error(401, "Unauthorized", message)
        headers["WWW-Authenticate"] = (
            f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
            f'resource="{KEY_VAULT_RESOURCE}"'
        )
        return status, headers, payload

    def _failure_for(self, path: str) -> tuple[int, str, str, str | None] | None:
        lowered = path.lower()
        with self._data_lock:
            matches = [prefix for prefix in self._failures if lowered.startswith(prefix)]
            return self._failures[max(matches, key=len)] if matches else None

    def _find(self, name: str, version: str) -> _Version | None:
        with self._data_lock:
            versions = list(self._versions.get(name.lower(), []))
        if not version:
            return max(versions, key=lambda v: v.created, default=None)
        return next((v for v in versions if v.version.lower() == version.lower()), None)

    def _get(self, collection: str, name: str, version: str) -> tuple[int, dict[str, str], bytes]:
        found = self._find(name, version)
        what = "certificate" if collection == "certificates" else "secret"
        if found is None:
            code = "CertificateNotFound" if what == "certificate" else "SecretNotFound"
            message = f"A {what} with (name/id) {name}/{version} was not found in this key vault. "
            return _error(404, code, message + _NOT_FOUND_HELP.format(what=what))
        if what == "certificate":
            return _json(200, self._certificate_bundle(found))
        if not found.enabled:
            return _error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
        return _json(200, self._secret_bundle(found))

    def _list_versions(self, name: str, query: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self._data_lock:
            versions = sorted(self._versions.get(name.lower(), []), key=lambda v: v.version.lower())
        return self._page(versions, query, f"/certificates/{name}/versions", lambda v: self._url("certificates", v))

    def _list_certificates(self, query: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        """One item per certificate, with the attributes and tags of its newest version (what Key Vault
        calls the current one), in name order; its id has no version."""
        with self._data_lock:
            current = [max(vs, key=lambda v: v.created) for _, vs in sorted(self._versions.items()) if vs]
        return self._page(current, query, "/certificates", lambda v: f"{self.vault_url}/certificates/{v.name}")

    def _page(
        self, items: list[_Version], query: Mapping[str, str], path: str, item_id: Callable[[_Version], str]
    ) -> tuple[int, dict[str, str], bytes]:
        """`maxresults` items (at most page_size) from the `$skiptoken` on, with a `nextLink` to the rest."""
        try:
            size = min(int(query.get("maxresults") or self.page_size), self.page_size)
            start = int(base64.urlsafe_b64decode(query["$skiptoken"]).decode()) if "$skiptoken" in query else 0
        except (ValueError, KeyError):
            return _error(400, "BadParameter", "The skiptoken or maxresults parameter is not valid.")
        page = items[start : start + size]
        next_link = None
        if start + size < len(items):
            token = base64.urlsafe_b64encode(str(start + size).encode()).decode()
            api_version = query.get("api-version", "")
            next_link = f"{self.vault_url}{path}?api-version={api_version}&$skiptoken={token}&maxresults={size}"
        listed = [
            {
                "id": item_id(v),
                "x5t": _x5t(v.cer),
                "attributes": _attributes(v),
                **({"tags": v.tags} if v.tags else {}),
            }
            for v in page
        ]
        return _json(200, {"value": listed, "nextLink": next_link})

    def _url(self, collection: str, v: _Version) -> str:
        return f"{self.vault_url}/{collection}/{v.name}/{v.version}"

    def _certificate_bundle(self, v: _Version) -> dict[str, Any]:
        return {
            "id": self._url("certificates", v),
            "kid": self._url("keys", v),
            "sid": self._url("secrets", v),
            "x5t": _x5t(v.cer),
            "cer": base64.b64encode(v.cer).decode("ascii"),
            "attributes": _attributes(v),
            **({"tags": v.tags} if v.tags else {}),
            "policy": self._policy(v),
        }

    def _policy(self, v: _Version) -> dict[str, Any]:
        if v.policy is not None:
            return {"id": f"{self.vault_url}/certificates/{v.name}/policy", **v.policy}
        cert = x509.load_der_x509_certificate(v.cer)
        try:
            dns_names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = {"dns_names": dns_names.get_values_for_type(x509.DNSName)}
        except x509.ExtensionNotFound:
            sans = {}
        return {
            "id": f"{self.vault_url}/certificates/{v.name}/policy",
            "key_props": {
                "exportable": True,
                "kty": "RSA" if isinstance(cert.public_key(), rsa.RSAPublicKey) else "EC",
                "reuse_key": False,
            },
            "secret_props": {"contentType": v.content_type},
            "x509_props": {"subject": cert.subject.rfc4514_string(), "sans": sans, "validity_months": 12},
            "issuer": {"name": "Unknown"},
            "attributes": {"enabled": True, "created": v.created, "updated": v.created},
        }

    def _secret_bundle(self, v: _Version) -> dict[str, Any]:
        return {
            "value": v.secret,
            "contentType": v.content_type,
            "id": self._url("secrets", v),
            "attributes": _attributes(v),
            **({"tags": v.tags} if v.tags else {}),
            "kid": self._url("keys", v),
            "managed": True,
        }


def _attributes(v: _Version) -> dict[str, Any]:
    return {
        "enabled": v.enabled,
        "nbf": v.not_before,
        "exp": v.expires,
        "created": v.created,
        "updated": v.created,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    }


def _x5t(der: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode("ascii")


def _json(status: int, document: Mapping[str, Any]) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json; charset=utf-8", "x-ms-request-id": str(uuid.uuid4())}
    return status, headers, json.dumps(document).encode()


def _error(status: int, code: str, message: str, inner_code: str | None = None) -> tuple[int, dict[str, str], bytes]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner_code:
        error["innererror"] = {"code": inner_code}
    status, headers, payload = _json(status, {"error": error})
    if status in (429, 503):
        headers["Retry-After"] = "1"
    return status, headers, payload


def _pkcs12_leaf(data: bytes) -> x509.Certificate:
    loaded = pkcs12.load_pkcs12(data, None)
    if loaded.cert is None:
        raise ValueError("the PFX has no certificate for its key")
    return loaded.cert.certificate


def _pem_leaf(data: bytes) -> x509.Certificate:
    """The certificate matching the PEM's private key (Key Vault's leaf), else the first one."""
    certificates = x509.load_pem_x509_certificates(data)
    start = data.find(b"-----BEGIN PRIVATE KEY-----")
    if start >= 0:
        end = data.index(b"-----END PRIVATE KEY-----", start) + len(b"-----END PRIVATE KEY-----")
        key = serialization.load_pem_private_key(data[start:end], None)
        spki = _spki(key.public_key())
        match = next((c for c in certificates if _spki(c.public_key()) == spki), None)
        if match is not None:
            return match
    return certificates[0]


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
