"""The Exchange inventory (`certsync.inventory/1`, `exchange-inventory.md` §1): read, validated, typed.

What discovery collects on the Hybrid worker, or what an admin saves by hand with the same cmdlets and
`ConvertTo-Json`: `schema` is optional, one selected item may be a single object instead of an array
(and Windows PowerShell's `{"value": [...], "Count": n}` wrapping is unwrapped), enum flags may be their
string form (`"IIS, SMTP"`) or their number, dates ISO 8601 or `/Date(ms)/`, property names are matched
ignoring case, and unknown keys are ignored. A TlsCertificateName may be the string `<I>…<S>…` or the
`{CertificateIssuer, CertificateSubject}` object a local Exchange shell writes.

Servers are referred to by their Name, compared ignoring case; an FQDN's first label is the Name
(`server_key`). Every error is one line naming the file and the field path, e.g.
`inventory.json: send_connectors[1].SourceTransportServers: expected a list of server names`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.errors import CertsyncError, NameSyntaxError
from shared.exchange.match import name_of, read_value
from shared.times import parse_time
from shared.x509.tls_certificate_name import TlsCertificateName

SCHEMA = "certsync.inventory/1"
MAX_INVENTORY_BYTES = 20 * 1024 * 1024
HYBRID_CONFIGURATION = "Hybrid Configuration"
# Exchange Online's certificates chain to DigiCert Global Root G2 (message center MC1224565): discovery
# records per server whether its Cert:\LocalMachine\Root holds that root, under this field.
EXO_ROOT_NAME = "DigiCert Global Root G2"
EXO_ROOT_THUMBPRINT = "DF3C24F9BFD666761B268073FE06D1CC8D4F82A4"
EXO_ROOT_FIELD = "HasDigiCertGlobalRootG2"

# Exchange's AllowedServices flags, in the order Exchange prints them (ConvertTo-Json may write the number).
SERVICE_FLAGS = (
    ("IMAP", 1),
    ("POP", 2),
    ("UM", 4),
    ("IIS", 8),
    ("SMTP", 16),
    ("Federation", 32),
    ("UMCallRouter", 64),
)
_SERVICE_NAMES = {name.upper(): name for name, _ in SERVICE_FLAGS}
_CMDLET = re.compile(r"[A-Z][a-z]+-[A-Z][A-Za-z]+\Z")
_MS_DATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/\Z")

T = TypeVar("T")


class InventoryError(CertsyncError):
    """An inventory that cannot be used: names the file and the field path, and what is expected."""


def server_key(name: str) -> str:
    """How a server is compared and shown: its Name (an FQDN's first label), upper-case."""
    return name.strip().split(".", 1)[0].upper()


def order_services(services: set[str] | frozenset[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Service names in Exchange's own order (IMAP, POP, UM, IIS, SMTP, Federation, UMCallRouter)."""
    known = [name for name, _ in SERVICE_FLAGS if name in services]
    return tuple(known + sorted(s for s in services if s not in _SERVICE_NAMES.values()))


# --- the typed inventory ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str  # upper-case Name
    fqdn: str
    roles: tuple[str, ...]
    version: str
    site: str
    is_edge: bool
    internal_transport_thumbprint: str | None
    # Whether Cert:\LocalMachine\Root holds DigiCert Global Root G2 (EXO_ROOT_THUMBPRINT); None when the
    # inventory does not say (written before certsync recorded it, or the store could not be read).
    has_exo_root: bool | None = None


@dataclass(frozen=True)
class InstalledCertificate:
    """One certificate on one server, as `Get-ExchangeCertificate -Server` shows it."""

    server: str
    thumbprint: str
    subject: str
    issuer: str
    services: tuple[str, ...]
    status: str
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    domains: tuple[str, ...]
    has_private_key: bool
    exportable: bool
    self_signed: bool
    name: TlsCertificateName  # from the server's own Subject and Issuer

    @property
    def smtp(self) -> bool:
        return "SMTP" in self.services

    @property
    def usable(self) -> bool:
        """What Exchange can pick for a connector: Valid and enabled for SMTP."""
        return self.status == "Valid" and self.smtp


@dataclass(frozen=True)
class SendConnector:
    identity: str
    source_servers: tuple[str, ...]
    tls_certificate_name: str | None
    address_spaces: tuple[str, ...]
    smart_hosts: tuple[str, ...]
    require_tls: bool
    tls_auth_level: str | None
    tls_domain: str | None
    cloud_services_mail_enabled: bool
    enabled: bool
    is_scoped: bool


@dataclass(frozen=True)
class ReceiveConnector:
    identity: str  # SERVER\Name
    server: str
    transport_role: str | None
    bindings: tuple[str, ...]
    auth_mechanism: str | None
    tls_certificate_name: str | None
    remote_ip_ranges: tuple[str, ...]
    cloud_services_mail_enabled: bool
    enabled: bool


@dataclass(frozen=True)
class HybridConfiguration:
    sending_servers: tuple[str, ...]
    receiving_servers: tuple[str, ...]
    edge_servers: tuple[str, ...]
    tls_certificate_name: str | None
    on_premises_smart_host: str | None
    domains: tuple[str, ...]
    features: tuple[str, ...]

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.sending_servers + self.receiving_servers + self.edge_servers))


@dataclass(frozen=True)
class InboundConnector:
    identity: str
    connector_type: str
    tls_sender_certificate_name: str | None
    require_tls: bool
    restrict_domains_to_certificate: bool
    enabled: bool


@dataclass(frozen=True)
class OutboundConnector:
    identity: str
    connector_type: str
    tls_settings: str | None
    tls_domain: str | None
    smart_hosts: tuple[str, ...]
    recipient_domains: tuple[str, ...]
    enabled: bool


@dataclass(frozen=True)
class AcceptedDomain:
    domain_name: str
    domain_type: str


@dataclass(frozen=True)
class ExchangeOnline:
    inbound_connectors: tuple[InboundConnector, ...]
    outbound_connectors: tuple[OutboundConnector, ...]
    accepted_domains: tuple[AcceptedDomain, ...]
    tenant: str | None = None  # the tenant id discovery connected to (`TenantId`), when it says


@dataclass(frozen=True)
class DiscoveryError:
    where: str  # a server Name or a cmdlet name (Verb-Noun), as written
    message: str


@dataclass(frozen=True)
class Inventory:
    source: str
    collected_at: dt.datetime | None
    worker_group: str | None
    servers: tuple[Server, ...]
    certificates: tuple[InstalledCertificate, ...]
    send_connectors: tuple[SendConnector, ...]
    receive_connectors: tuple[ReceiveConnector, ...]
    hybrid_configuration: HybridConfiguration | None
    exo: ExchangeOnline | None
    errors: tuple[DiscoveryError, ...]

    def server(self, name: str) -> Server | None:
        key = server_key(name)
        return next((s for s in self.servers if s.name == key), None)

    def certificates_on(self, server: str) -> tuple[InstalledCertificate, ...]:
        key = server_key(server)
        return tuple(c for c in self.certificates if c.server == key)

    def unread(self, server: str) -> DiscoveryError | None:
        """The discovery error for this server, when it could not be read."""
        key = server_key(server)
        return next((e for e in self.errors if server_key(e.where) == key), None)

    @property
    def organisation_errors(self) -> tuple[DiscoveryError, ...]:
        """Errors of organisation-wide cmdlets (`where` is not a server)."""
        names = {s.name for s in self.servers}
        return tuple(e for e in self.errors if server_key(e.where) not in names and _CMDLET.match(e.where))

    def send_connectors_on(self, server: str) -> tuple[SendConnector, ...]:
        key = server_key(server)
        return tuple(c for c in self.send_connectors if key in c.source_servers)

    def receive_connectors_on(self, server: str) -> tuple[ReceiveConnector, ...]:
        key = server_key(server)
        return tuple(c for c in self.receive_connectors if c.server == key)


# --- reading ----------------------------------------------------------------------------------------


def load_inventory(path: str) -> Inventory:
    """Read and validate the inventory file at `path`; errors name the file."""
    label = path.replace("\\", "/").rsplit("/", 1)[-1]
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_INVENTORY_BYTES + 1)
    except FileNotFoundError:
        raise InventoryError(f"{path}: no such file; check the path") from None
    except OSError as exc:
        raise InventoryError(f"{path}: cannot be read ({exc.strerror}); check the path and permissions") from None
    if len(data) > MAX_INVENTORY_BYTES:
        raise InventoryError(f"{label}: larger than {MAX_INVENTORY_BYTES // 2**20} MiB; is it an inventory?")
    return parse_inventory(data, label)


def parse_inventory(data: bytes | str, source: str = "inventory") -> Inventory:
    """Parse a `certsync.inventory/1` document (or an admin's hand-saved equivalent)."""
    text = data if isinstance(data, str) else decode_inventory(data, source)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryError(
            f"{source}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); save it with ConvertTo-Json"
        ) from None
    except RecursionError:
        raise InventoryError(f"{source}: JSON nested too deeply for an inventory; save it again") from None
    return read_inventory(document, source)


def read_inventory(document: object, source: str = "inventory") -> Inventory:
    """Validate an already-decoded `certsync.inventory/1` document (a stored one, a job's Output)."""
    return _Reader(source).inventory(document)


def decode_inventory(data: bytes, source: str) -> str:
    """An inventory file's text: UTF-8 (with or without BOM) or UTF-16 with BOM."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # `> file` in Windows PowerShell 5.1 writes UTF-16
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    else:
        try:
            return data.decode("utf-8-sig")  # Out-File/Set-Content -Encoding utf8 writes a BOM
        except UnicodeDecodeError:
            pass
    raise InventoryError(f"{source}: not UTF-8 or UTF-16 text; save it with Set-Content -Encoding utf8")


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, what: str) -> InventoryError:
        return InventoryError(f"{self.source}: {where}: {what}")

    # -- the document

    def inventory(self, document: object) -> Inventory:
        if not isinstance(document, dict):
            raise InventoryError(
                f"{self.source}: expected a JSON object with servers, certificates, send_connectors, ... "
                f"(found {_kind(document)})"
            )
        doc = _Object(document)
        schema = doc.get("schema")
        if schema is not None and schema != SCHEMA:
            raise self.fail("schema", f"{schema!r} is not {SCHEMA!r}; this certsync reads {SCHEMA}")
        worker_group = self.text(doc.get("worker_group"), "worker_group", optional=True)
        collected_at = self.time(doc.get("collected_at"), "collected_at")
        servers = self.items(doc.get("servers"), "servers", self.server_item)
        names = {s.name for s in servers}
        if len(names) != len(servers):
            raise self.fail("servers", "a server is listed twice; keep one entry per server")
        hybrid = doc.get("hybrid_configuration")
        exo = doc.get("exo")
        return Inventory(
            source=self.source,
            collected_at=collected_at,
            worker_group=worker_group,
            servers=servers,
            certificates=self.items(doc.get("certificates"), "certificates", self.certificate_item),
            send_connectors=self.items(doc.get("send_connectors"), "send_connectors", self.send_item),
            receive_connectors=self.items(doc.get("receive_connectors"), "receive_connectors", self.receive_item),
            hybrid_configuration=None if hybrid is None else self.hybrid(hybrid, "hybrid_configuration"),
            exo=None if exo is None else self.exchange_online(exo, "exo"),
            errors=self.items(doc.get("errors"), "errors", self.error_item),
        )

    def items(self, value: object, where: str, read: Callable[[_Object, str], T]) -> tuple[T, ...]:
        value = _unwrap(value)
        if value is None:
            return ()
        if isinstance(value, dict):  # ConvertTo-Json of one selected object
            value = [value]
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list of objects (found {_kind(value)})")
        found = []
        for n, item in enumerate(value):
            at = f"{where}[{n}]"
            if not isinstance(item, dict):
                raise self.fail(at, f"expected an object (found {_kind(item)})")
            found.append(read(_Object(item), at))
        return tuple(found)

    # -- the sections

    def server_item(self, obj: _Object, at: str) -> Server:
        name = self.server_name(obj.get("Name") or obj.get("Fqdn"), f"{at}.Name")
        roles = self.flags(obj.get("ServerRole"), f"{at}.ServerRole")
        is_edge = self.flag(obj.get("IsEdgeServer"), f"{at}.IsEdgeServer") or "EDGE" in {r.upper() for r in roles}
        return Server(
            name=name,
            fqdn=self.text(obj.get("Fqdn"), f"{at}.Fqdn", optional=True) or name,
            roles=roles,
            version=self.text(obj.get("AdminDisplayVersion"), f"{at}.AdminDisplayVersion", optional=True) or "",
            site=self.text(obj.get("Site"), f"{at}.Site", optional=True) or "",
            is_edge=is_edge,
            internal_transport_thumbprint=self.thumbprint(
                obj.get("InternalTransportCertificateThumbprint"), f"{at}.InternalTransportCertificateThumbprint", True
            ),
            has_exo_root=None
            if obj.get(EXO_ROOT_FIELD) is None
            else self.flag(obj.get(EXO_ROOT_FIELD), f"{at}.{EXO_ROOT_FIELD}"),
        )

    def certificate_item(self, obj: _Object, at: str) -> InstalledCertificate:
        subject = self.text(obj.get("Subject"), f"{at}.Subject", optional=True) or ""
        issuer = self.text(obj.get("Issuer"), f"{at}.Issuer")
        try:
            name = name_of(subject, issuer)
        except NameSyntaxError as exc:
            raise self.fail(f"{at}.Subject", f"not a name as Windows prints it ({exc})") from None
        return InstalledCertificate(
            server=self.server_name(obj.get("Server"), f"{at}.Server"),
            thumbprint=self.thumbprint(obj.get("Thumbprint"), f"{at}.Thumbprint") or "",
            subject=subject,
            issuer=issuer,
            services=self.services(obj.get("Services"), f"{at}.Services"),
            status=self.text(obj.get("Status"), f"{at}.Status", optional=True) or "Unknown",
            not_before=self.time(obj.get("NotBefore"), f"{at}.NotBefore"),
            not_after=self.time(obj.get("NotAfter"), f"{at}.NotAfter"),
            domains=self.texts(obj.get("CertificateDomains"), f"{at}.CertificateDomains", "domain names"),
            has_private_key=self.flag(obj.get("HasPrivateKey"), f"{at}.HasPrivateKey"),
            exportable=self.flag(obj.get("PrivateKeyExportable"), f"{at}.PrivateKeyExportable"),
            self_signed=self.flag(obj.get("IsSelfSigned"), f"{at}.IsSelfSigned"),
            name=name,
        )

    def send_item(self, obj: _Object, at: str) -> SendConnector:
        return SendConnector(
            identity=self.text(obj.get("Identity") or obj.get("Name"), f"{at}.Identity"),
            source_servers=self.server_names(obj.get("SourceTransportServers"), f"{at}.SourceTransportServers"),
            tls_certificate_name=self.tls_name(obj.get("TlsCertificateName"), f"{at}.TlsCertificateName"),
            address_spaces=self.texts(obj.get("AddressSpaces"), f"{at}.AddressSpaces", "address spaces"),
            smart_hosts=self.texts(obj.get("SmartHosts"), f"{at}.SmartHosts", "host names"),
            require_tls=self.flag(obj.get("RequireTLS"), f"{at}.RequireTLS"),
            tls_auth_level=self.text(obj.get("TlsAuthLevel"), f"{at}.TlsAuthLevel", optional=True),
            tls_domain=self.text(obj.get("TlsDomain"), f"{at}.TlsDomain", optional=True),
            cloud_services_mail_enabled=self.flag(
                obj.get("CloudServicesMailEnabled"), f"{at}.CloudServicesMailEnabled"
            ),
            enabled=self.flag(obj.get("Enabled"), f"{at}.Enabled", default=True),
            is_scoped=self.flag(obj.get("IsScopedConnector"), f"{at}.IsScopedConnector"),
        )

    def receive_item(self, obj: _Object, at: str) -> ReceiveConnector:
        identity = self.text(obj.get("Identity"), f"{at}.Identity")
        server_text = obj.get("Server")
        if server_text is None and "\\" in identity:
            server_text = identity.split("\\", 1)[0]
        server = self.server_name(server_text, f"{at}.Server")
        if "\\" not in identity:
            identity = f"{server}\\{identity}"
        elif server_key(identity.split("\\", 1)[0]) != server:
            raise self.fail(f"{at}.Identity", f"{identity!r} names another server than Server {server!r}")
        return ReceiveConnector(
            identity=identity,
            server=server,
            transport_role=self.text(obj.get("TransportRole"), f"{at}.TransportRole", optional=True),
            bindings=self.texts(obj.get("Bindings"), f"{at}.Bindings", "bindings such as 0.0.0.0:25"),
            auth_mechanism=self.text(obj.get("AuthMechanism"), f"{at}.AuthMechanism", optional=True),
            tls_certificate_name=self.tls_name(obj.get("TlsCertificateName"), f"{at}.TlsCertificateName"),
            remote_ip_ranges=self.texts(obj.get("RemoteIPRanges"), f"{at}.RemoteIPRanges", "IP ranges"),
            cloud_services_mail_enabled=self.flag(
                obj.get("CloudServicesMailEnabled"), f"{at}.CloudServicesMailEnabled"
            ),
            enabled=self.flag(obj.get("Enabled"), f"{at}.Enabled", default=True),
        )

    def hybrid(self, value: object, at: str) -> HybridConfiguration:
        value = _unwrap(value)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, dict):
            raise self.fail(at, f"expected an object or null (found {_kind(value)})")
        obj = _Object(value)
        return HybridConfiguration(
            sending_servers=self.server_names(obj.get("SendingTransportServers"), f"{at}.SendingTransportServers"),
            receiving_servers=self.server_names(
                obj.get("ReceivingTransportServers"), f"{at}.ReceivingTransportServers"
            ),
            edge_servers=self.server_names(obj.get("EdgeTransportServers"), f"{at}.EdgeTransportServers"),
            tls_certificate_name=self.tls_name(obj.get("TlsCertificateName"), f"{at}.TlsCertificateName"),
            on_premises_smart_host=self.text(obj.get("OnPremisesSmartHost"), f"{at}.OnPremisesSmartHost", True),
            domains=self.texts(obj.get("Domains"), f"{at}.Domains", "domain names"),
            features=self.texts(obj.get("Features"), f"{at}.Features", "feature names"),
        )

    def exchange_online(self, value: object, at: str) -> ExchangeOnline:
        if not isinstance(value, dict):
            raise self.fail(at, f"expected an object or null (found {_kind(value)})")
        obj = _Object(value)
        return ExchangeOnline(
            inbound_connectors=self.items(obj.get("inbound_connectors"), f"{at}.inbound_connectors", self.inbound),
            outbound_connectors=self.items(obj.get("outbound_connectors"), f"{at}.outbound_connectors", self.outbound),
            accepted_domains=self.items(obj.get("accepted_domains"), f"{at}.accepted_domains", self.accepted),
            tenant=self.text(obj.get("TenantId"), f"{at}.TenantId", optional=True),
        )

    def inbound(self, obj: _Object, at: str) -> InboundConnector:
        return InboundConnector(
            identity=self.text(obj.get("Identity") or obj.get("Name"), f"{at}.Identity"),
            connector_type=self.text(obj.get("ConnectorType"), f"{at}.ConnectorType", optional=True) or "",
            tls_sender_certificate_name=self.text(
                obj.get("TlsSenderCertificateName"), f"{at}.TlsSenderCertificateName", optional=True
            ),
            require_tls=self.flag(obj.get("RequireTls"), f"{at}.RequireTls"),
            restrict_domains_to_certificate=self.flag(
                obj.get("RestrictDomainsToCertificate"), f"{at}.RestrictDomainsToCertificate"
            ),
            enabled=self.flag(obj.get("Enabled"), f"{at}.Enabled", default=True),
        )

    def outbound(self, obj: _Object, at: str) -> OutboundConnector:
        return OutboundConnector(
            identity=self.text(obj.get("Identity") or obj.get("Name"), f"{at}.Identity"),
            connector_type=self.text(obj.get("ConnectorType"), f"{at}.ConnectorType", optional=True) or "",
            tls_settings=self.text(obj.get("TlsSettings"), f"{at}.TlsSettings", optional=True),
            tls_domain=self.text(obj.get("TlsDomain"), f"{at}.TlsDomain", optional=True),
            smart_hosts=self.texts(obj.get("SmartHosts"), f"{at}.SmartHosts", "host names"),
            recipient_domains=self.texts(obj.get("RecipientDomains"), f"{at}.RecipientDomains", "domain names"),
            enabled=self.flag(obj.get("Enabled"), f"{at}.Enabled", default=True),
        )

    def accepted(self, obj: _Object, at: str) -> AcceptedDomain:
        return AcceptedDomain(
            domain_name=self.text(obj.get("DomainName") or obj.get("Name"), f"{at}.DomainName"),
            domain_type=self.text(obj.get("DomainType"), f"{at}.DomainType", optional=True) or "Authoritative",
        )

    def error_item(self, obj: _Object, at: str) -> DiscoveryError:
        where = self.text(obj.get("where"), f"{at}.where")
        return DiscoveryError(
            where=where.strip(),
            message=self.text(obj.get("message"), f"{at}.message", optional=True) or "",
        )

    # -- values

    def text(self, value: object, at: str, optional: bool = False) -> Any:
        if value is None or value == "":
            if optional:
                return None
            raise self.fail(at, "missing; expected text")
        if isinstance(value, dict) and "Name" in value and isinstance(value["Name"], str):
            return value["Name"]  # an AD object reference (e.g. Site) written with its properties
        if not isinstance(value, str):
            raise self.fail(at, f"expected text (found {_kind(value)})")
        return value

    def texts(self, value: object, at: str, what: str) -> tuple[str, ...]:
        value = _unwrap(value)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,) if value else ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(at, f"expected a list of {what}")
        return tuple(value)

    def server_name(self, value: object, at: str) -> str:
        if isinstance(value, dict):  # an ADObjectId written with its properties
            value = _Object(value).get("Name")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(at, "expected a server name")
        key = server_key(value)
        if not re.fullmatch(r"[A-Z0-9-]{1,63}", key):
            raise self.fail(at, f"{value!r} is not a server name")
        return key

    def server_names(self, value: object, at: str) -> tuple[str, ...]:
        value = _unwrap(value)
        if value is None:
            return ()
        if isinstance(value, (str, dict)):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(at, "expected a list of server names")
        names = []
        for item in value:
            if not isinstance(item, (str, dict)):
                raise self.fail(at, "expected a list of server names")
            names.append(self.server_name(item, at))
        return tuple(dict.fromkeys(names))

    def tls_name(self, value: object, at: str) -> str | None:
        if isinstance(value, dict):  # SmtpX509Identifier as a local Exchange shell writes it
            obj = _Object(value)
            issuer, subject = obj.get("CertificateIssuer"), obj.get("CertificateSubject")
            if not isinstance(subject, str):
                raise self.fail(at, "expected '<I>issuer<S>subject' or null")
            value = ("" if not issuer else f"<I>{issuer}") + f"<S>{subject}"
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(at, f"expected '<I>issuer<S>subject' or null (found {_kind(value)})")
        try:
            read_value(value)
        except NameSyntaxError as exc:
            raise self.fail(at, f"not a TlsCertificateName ({exc})") from None
        return value

    def thumbprint(self, value: object, at: str, optional: bool = False) -> str | None:
        if value is None or value == "":
            if optional:
                return None
            raise self.fail(at, "missing; expected a 40-digit hex thumbprint")
        if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f]{40}", value.strip()):
            raise self.fail(at, "expected a 40-digit hex thumbprint")
        return value.strip().upper()

    def flag(self, value: object, at: str, default: bool = False) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.fail(at, f"expected true or false (found {_kind(value)})")

    def flags(self, value: object, at: str) -> tuple[str, ...]:
        value = _unwrap(value)
        if value is None:
            return ()
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value if v.strip())
        if not isinstance(value, str):
            raise self.fail(at, f'expected the string form, e.g. "Mailbox" (found {_kind(value)})')
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def services(self, value: object, at: str) -> tuple[str, ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0 or value >= 128:
                raise self.fail(at, f"{value} is not a combination of Exchange's services")
            return tuple(name for name, bit in SERVICE_FLAGS if value & bit)
        names = set()
        for part in self.flags(value, at):
            known = _SERVICE_NAMES.get(part.upper())
            if known is None:
                if part.upper() == "NONE":
                    continue
                expected = ", ".join(name for name, _ in SERVICE_FLAGS)
                raise self.fail(at, f"{part!r} is not an Exchange service; expected some of {expected}")
            names.add(known)
        return order_services(names)

    def time(self, value: object, at: str) -> dt.datetime | None:
        if value is None or value == "":
            return None
        if isinstance(value, dict) and "DateTime" in value:  # Windows PowerShell's extended DateTime
            value = value.get("value", value["DateTime"])
        if isinstance(value, str):
            if match := _MS_DATE.match(value.strip()):
                return dt.datetime.fromtimestamp(int(match.group(1)) / 1000, dt.timezone.utc)
            try:
                return parse_time(value)
            except ValueError:
                pass
        raise self.fail(at, "expected an ISO 8601 time such as 2026-11-20T00:00:00Z")


class _Object:
    """A JSON object whose keys are matched ignoring case, as PowerShell's property names are."""

    def __init__(self, raw: Mapping[str, object]) -> None:
        self._by_key = {key.lower(): value for key, value in raw.items()}

    def get(self, key: str) -> Any:
        return self._by_key.get(key.lower())


def _unwrap(value: object) -> object:
    """Windows PowerShell 5.1 sometimes writes an array as `{"value": [...], "Count": n}`."""
    if isinstance(value, dict) and len(value) == 2 and {k.lower() for k in value} == {"value", "count"}:
        return _Object(value).get("value")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "text", bool: "true/false"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )
