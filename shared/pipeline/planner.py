"""The planner: a new certificate plus the Exchange inventory -> the `certsync.plan/2` document.

Follows `exchange-inventory.md` §2 (rules 1-7) and §3 (the document). Servers come from Exchange itself
(the hybrid configuration and every connector that selects the old certificate), not from what someone
typed; a targets file may narrow which connectors are written or add servers, and where it disagrees
with the inventory that is reported as a conflict, never written. In order:

- stage, per server: the chain's intermediates into `Cert:\\LocalMachine\\CA`, import, enable the new
  certificate for every service the old one had there (SMTP always) keeping the internal transport
  certificate, then read back Status Valid and the server's own Subject/Issuer;
- switch: only objects that select the old certificate and would not select the new one, each write
  carrying the exact value read (`previous`) for compare-and-set; the Exchange Online inbound connector
  only when the new certificate does not cover its value;
- verify: each server's new certificate still Valid after the switch;
- retire: an old certificate only when nothing on that server still needs it (else `kept`, with why).

Blocks are decided before anything runs, each with a one-line fix. Pure: values in, a value out.
The pipeline calls it from one place (`shared.pipeline.process`), which adds the certificate's Key Vault
identity, the worker group and the inventory the plan was made from (`plan_document`).

The planner decides from facts about the new certificate (`NewCertificate`: thumbprint, certsync's
rendering of its names, DNS names, the intermediates to install, the assessment's status, whether the key
can be exported, and the Key Vault identifiers the runbook fetches the PFX by). `new_certificate()`
builds them from a bundle, its assessment and (when known) its Key Vault version; `plan_certificate()`
plans from them, and `plan_from_inventory()` does both for callers holding a bundle.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from shared.errors import CertsyncError
from shared.exchange.inventory import (
    HYBRID_CONFIGURATION,
    InstalledCertificate,
    Inventory,
    order_services,
    server_key,
)
from shared.exchange.mailflow import covers, is_accepted
from shared.exchange.match import read_value
from shared.pipeline.sources import StoredVersion
from shared.pipeline.targets import Targets
from shared.times import format_time
from shared.validation.assessment import VALID, Assessment
from shared.validation.hierarchies import prestage_certificates
from shared.x509.certificate import Certificate, CertificateBundle
from shared.x509.tls_certificate_name import TlsCertificateName, is_exchange_host_name
from shared.x509.x500 import COMMON_NAME, fold_case

PLAN2_SCHEMA = "certsync.plan/2"
PHASES = ("stage", "switch", "verify", "retire")
INTERMEDIATE_STORE = "Cert:\\LocalMachine\\CA"
PERSONAL_STORE = "Cert:\\LocalMachine\\My"
# Services Enable-ExchangeCertificate moves to the new certificate; others (UM, Federation) keep the old one.
MOVABLE_SERVICES = frozenset({"IMAP", "POP", "IIS", "SMTP"})
# Steps that carry the Exchange Online tenant they run against (one connection per tenant).
EXO_STEP_ACTIONS = frozenset({"set-exo-inbound-connector", "test-outbound"})
# The Windows service whose SMTP endpoints a connector lives in: a Mailbox server's Front End Transport
# service holds the FrontendTransport receive connectors (port 25 from the Internet and Exchange Online);
# its Transport service holds the send connectors and the HubTransport receive connectors (port 2525);
# an Edge server has only the Transport service.
FRONT_END_TRANSPORT = "MSExchangeFrontEndTransport"
TRANSPORT = "MSExchangeTransport"
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "[::]", "::", "[::0]"})


class _IntermediateDocumentBase(TypedDict):
    thumbprint: str
    subject: str


class IntermediateDocument(_IntermediateDocumentBase, total=False):
    der_base64: str  # left out in the audit trail's copy of the plan
    prestage: bool  # for the next renewal (the hierarchy forecast), not this certificate's chain


@dataclass(frozen=True)
class PlanIntermediate:
    """An intermediate the servers must have in their intermediate store (a public certificate)."""

    thumbprint: str
    subject: str
    der_base64: str
    prestage: bool = False  # CERTSYNC_PRESTAGE_INTERMEDIATES: one the next renewal may need

    def to_dict(self, *, der: bool = True) -> IntermediateDocument:
        document: IntermediateDocument = {"thumbprint": self.thumbprint, "subject": self.subject}
        if der:
            document["der_base64"] = self.der_base64
        if self.prestage:
            document["prestage"] = True
        return document


@dataclass(frozen=True)
class PlanBlock:
    reason: str
    fix: str
    code: str = "plan"  # certificate-status (the assessment's status), inventory (discovery could not read it)
    transient: bool = False  # running discovery again may clear it (`shared.pipeline.blocks`)

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "fix": self.fix}


@dataclass(frozen=True)
class InventoryStep:
    """One step. `object` is the cmdlet Identity (a thumbprint for certificate steps); `manual` marks a
    step on an Edge server that no worker group runs on."""

    phase: str
    action: str
    server: str | None
    object: str
    property: str | None
    previous: Any
    value: Any
    manual: bool = False
    internal_transport_certificate: str | None = None  # enable-services: must read back unchanged
    tenant: str | None = None  # Exchange Online steps: the tenant id the runbook connects to

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "phase": self.phase,
            "action": self.action,
            "server": self.server,
            "object": self.object,
            "property": self.property,
            "previous": list(self.previous) if isinstance(self.previous, tuple) else self.previous,
            "value": list(self.value) if isinstance(self.value, tuple) else self.value,
            "manual": self.manual,
        }
        if self.action == "enable-services":
            data["internal_transport_certificate"] = self.internal_transport_certificate
        if self.action in EXO_STEP_ACTIONS:
            data["tenant"] = self.tenant
        return data


@dataclass(frozen=True)
class KeptCertificate:
    server: str
    thumbprint: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"server": self.server, "thumbprint": self.thumbprint, "reason": self.reason}


@dataclass(frozen=True)
class KnownCertificate:
    """A certificate certsync holds (the new one, or an earlier version of its Key Vault object): its
    thumbprint and certsync's rendering of its names, which the servers' own rendering must agree with."""

    thumbprint: str
    tls_name: TlsCertificateName

    @classmethod
    def from_certificate(cls, certificate: Certificate) -> KnownCertificate:
        return cls(certificate.thumbprint, TlsCertificateName.from_certificate(certificate))


@dataclass(frozen=True)
class NewCertificate(KnownCertificate):
    """What the planner needs to know about the certificate it deploys; built by `new_certificate()`.

    `status` and `error_codes` are the assessment's (`certsync check`); `key_exportable` is False when the
    import cannot get the private key (a PKCS#12 without one, or a Key Vault policy `exportable: false`),
    None when not known. `vault`, `name`, `version` and `secret_id` identify the Key Vault version the
    runbook reads the PFX from (None on a file given to `certsync plan`)."""

    dns_names: tuple[str, ...] = ()
    intermediates: tuple[PlanIntermediate, ...] = ()
    status: str = VALID
    error_codes: tuple[str, ...] = ()
    key_exportable: bool | None = None
    not_after: str | None = None  # ISO 8601, UTC
    vault: str | None = None
    name: str | None = None
    version: str | None = None
    secret_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """plan/2's `certificate`: thumbprint and TlsCertificateName (spec §3), then what the runbook needs."""
        data: dict[str, Any] = {"thumbprint": self.thumbprint, "tls_certificate_name": str(self.tls_name)}
        for key in ("vault", "name", "version", "secret_id", "not_after"):
            known = getattr(self, key)
            if known is not None:
                data[key] = known
        data["intermediates"] = [i.to_dict() for i in self.intermediates]
        return data


def new_certificate(
    bundle: CertificateBundle,
    assessment: Assessment,
    version: StoredVersion | None = None,
    *,
    key_exportable: bool | None = None,
    prestage: bool = False,
) -> NewCertificate:
    """The planner's facts about `bundle`'s certificate, assessed as `certsync check` does; `version` is
    the Key Vault version it came from (its identifiers go into the plan for the runbook). With `prestage`
    (CERTSYNC_PRESTAGE_INTERMEDIATES) the intermediates its CA's next certificate may need (the hierarchy
    forecast, where certsync ships them) are installed too, so that renewal finds them in place."""
    leaf = bundle.leaf
    if version is not None and version.thumbprint != leaf.thumbprint:
        raise CertsyncError(
            f"Key Vault version {version.name}/{version.version} is certificate {version.thumbprint}, not "
            f"{leaf.thumbprint}; plan the version's own certificate"
        )
    if bundle.container == "pkcs12" and not bundle.has_private_key:
        key_exportable = False
    if key_exportable is None and version is not None:
        key_exportable = version.key_exportable  # Key Vault's secret leaves the key out when it is not exportable
    chain = [
        PlanIntermediate(c.thumbprint, str(c.subject), base64.b64encode(c.der).decode())
        for c in assessment.intermediates_to_install
    ]
    if prestage:
        present = {i.thumbprint for i in chain}
        chain += [
            PlanIntermediate(c.thumbprint, str(c.subject), base64.b64encode(c.der).decode(), prestage=True)
            for c in prestage_certificates(leaf, assessment.at.date())
            if c.thumbprint not in present
        ]
    return NewCertificate(
        thumbprint=leaf.thumbprint,
        tls_name=TlsCertificateName.from_certificate(leaf),
        dns_names=tuple(leaf.dns_names),
        intermediates=tuple(chain),
        status=assessment.status,
        error_codes=tuple(f.code for f in assessment.findings if f.severity == "error"),
        key_exportable=key_exportable,
        not_after=format_time(leaf.not_after, timespec="seconds"),
        vault=version.vault if version else None,
        name=version.name if version else None,
        version=version.version if version else None,
        secret_id=version.secret_id if version else None,
    )


@dataclass(frozen=True)
class InventoryPlan:
    """The `certsync.plan/2` document as typed values; `to_dict()` is the JSON `certsync plan --json` prints."""

    thumbprint: str
    tls_certificate_name: str
    servers: tuple[str, ...]
    blocked: PlanBlock | None
    warnings: tuple[str, ...]
    steps: tuple[InventoryStep, ...]
    kept: tuple[KeptCertificate, ...]
    old_certificates: tuple[str, ...] = ()  # thumbprints the plan treats as the old certificate
    conflicts: tuple[str, ...] = ()  # where the targets and the inventory disagree (never written)
    certificate: NewCertificate | None = None  # the facts planned from (the document's `certificate`)
    blocks: tuple[PlanBlock, ...] = ()  # every block, `blocked` first

    def to_dict(self) -> dict[str, Any]:
        certificate = (
            self.certificate.to_dict()
            if self.certificate is not None
            else {"thumbprint": self.thumbprint, "tls_certificate_name": self.tls_certificate_name}
        )
        return {
            "schema": PLAN2_SCHEMA,
            "certificate": certificate,
            "servers": list(self.servers),
            "blocked": None if self.blocked is None else self.blocked.to_dict(),
            "warnings": list(self.warnings),
            "steps": [s.to_dict() for s in self.steps],
            "kept": [k.to_dict() for k in self.kept],
            "old_certificates": list(self.old_certificates),
            "conflicts": list(self.conflicts),
        }


def plan_from_inventory(
    bundle: CertificateBundle,
    assessment: Assessment,
    inventory: Inventory,
    *,
    targets: Targets | None = None,
    old_thumbprints: Sequence[str] = (),
    previous_versions: Sequence[Certificate] = (),
    require_accepted_domain: bool = False,
    edge_workers: Collection[str] = (),
    key_exportable: bool | None = None,
    version: StoredVersion | None = None,
    exo_tenant: str | None = None,
    restart_transport: bool = False,
    prestage: bool = False,
) -> InventoryPlan:
    """Plan the change to `bundle`'s certificate (assessed as `certsync check` does) on `inventory`:
    `plan_certificate(new_certificate(...), ...)` for callers holding a bundle.

    The old certificates are `old_thumbprints` when given, else the Key Vault object's `previous_versions`,
    else those the connectors select today whose first CN or a DNS name is one of the new certificate's.
    `edge_workers` names Edge servers that have their own worker group (others get manual steps);
    `key_exportable=False` says the Key Vault policy keeps the key in the vault (the import needs it);
    `version` is the Key Vault version the bundle came from."""
    return plan_certificate(
        new_certificate(bundle, assessment, version, key_exportable=key_exportable, prestage=prestage),
        inventory,
        targets=targets,
        old_thumbprints=old_thumbprints,
        previous_versions=[KnownCertificate.from_certificate(c) for c in previous_versions],
        require_accepted_domain=require_accepted_domain,
        edge_workers=edge_workers,
        exo_tenant=exo_tenant,
        restart_transport=restart_transport,
    )


def plan_certificate(
    new: NewCertificate,
    inventory: Inventory,
    *,
    targets: Targets | None = None,
    old_thumbprints: Sequence[str] = (),
    previous_versions: Sequence[KnownCertificate] = (),
    require_accepted_domain: bool = False,
    edge_workers: Collection[str] = (),
    exo_tenant: str | None = None,
    restart_transport: bool = False,
) -> InventoryPlan:
    """Plan the change to the certificate `new` describes on `inventory` (spec §2), as `plan_from_inventory`.

    `exo_tenant` is the Exchange Online tenant id when the inventory does not state one (its Exchange Online
    steps carry it; without one they are blocked); `restart_transport` adds, in the verify phase, a restart of
    each transport service whose connectors the switch changed (CERTSYNC_RESTART_TRANSPORT)."""
    return _Planner(
        new=new,
        new_name=new.tls_name,
        new_value=str(new.tls_name),
        inventory=inventory,
        targets=targets,
        require_accepted_domain=require_accepted_domain,
        edge_workers=frozenset(server_key(s) for s in edge_workers),
        exo_tenant=(inventory.exo.tenant if inventory.exo is not None else None) or exo_tenant or None,
        restart_transport=restart_transport,
    ).plan(old_thumbprints, previous_versions)


@dataclass
class _Object:
    kind: str  # send | receive | hybrid
    identity: str
    servers: tuple[str, ...]
    value: str | None
    after: str | None = None  # the value once the switch has run
    switch: bool = False
    left_because: str = ""


@dataclass
class _Planner:
    new: NewCertificate
    new_name: TlsCertificateName
    new_value: str
    inventory: Inventory
    targets: Targets | None
    require_accepted_domain: bool
    edge_workers: frozenset[str]
    exo_tenant: str | None = None
    restart_transport: bool = False
    old: list[InstalledCertificate] = field(default_factory=list)
    old_names: list[TlsCertificateName] = field(default_factory=list)
    blocks: list[PlanBlock] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    steps: list[InventoryStep] = field(default_factory=list)
    kept: list[KeptCertificate] = field(default_factory=list)
    # Each distinct value's answers, once old_names is known: a plan asks them of every object several times.
    _selects: dict[tuple[str, str], bool] = field(default_factory=dict)

    def plan(self, old_thumbprints: Sequence[str], previous_versions: Sequence[KnownCertificate]) -> InventoryPlan:
        new = self.new
        self.check_certificate()
        self.cross_check([new, *previous_versions])
        self.old = self.old_certificates(old_thumbprints, previous_versions)
        self.old_names = list({fold_case(str(c.name)): c.name for c in self.old}.values())
        objects = self.objects()
        servers = self.servers(objects)
        self.check_errors(servers)
        for server in servers:
            self.stage(server)
        self.switch(objects)
        self.exchange_online()
        for server in servers:
            self.verify(server, objects)
        self.test_outbound(objects, servers)
        retired = self.retire(servers, objects)
        self.check_left_without(objects, servers, retired)
        if any(s.manual for s in self.steps):
            edges = sorted({s.server for s in self.steps if s.manual and s.server})
            self.warnings.append(
                f"manual: run the runbook on the Edge server {', '.join(edges)} (no worker group runs there; "
                "Edge servers are never reached from a Mailbox server)"
            )
        blocked = self.blocks[0] if self.blocks else None
        self.warnings += [f"also blocked: {b.reason}" for b in self.blocks[1:]]
        return InventoryPlan(
            thumbprint=new.thumbprint,
            tls_certificate_name=self.new_value,
            servers=tuple(servers),
            blocked=blocked,
            warnings=tuple(self.warnings),
            steps=tuple(self.steps),
            kept=tuple(self.kept),
            old_certificates=tuple(sorted({c.thumbprint for c in self.old})),
            conflicts=tuple(self.conflicts),
            certificate=self.new,
            blocks=tuple(self.blocks),
        )

    def block(self, reason: str, fix: str, code: str = "plan", transient: bool = False) -> None:
        self.blocks.append(PlanBlock(reason, fix, code, transient))

    def step(
        self,
        phase: str,
        action: str,
        server: str | None,
        obj: str,
        prop: str | None,
        previous: Any,
        value: Any,
        **extra: Any,
    ) -> None:
        manual = server is not None and self.is_manual(server)
        self.steps.append(InventoryStep(phase, action, server, obj, prop, previous, value, manual, **extra))

    def is_manual(self, server: str) -> bool:
        found = self.inventory.server(server)
        return found is not None and found.is_edge and found.name not in self.edge_workers

    # -- rule 7: the certificate itself

    def check_certificate(self) -> None:
        new, name = self.new, self.new_name
        no_cn_fix = (
            "request a profile that includes a CN (Let's Encrypt 'classic', not 'shortlived' or 'tlsserver'), "
            "or set the subject CN=<mail host name> in the Key Vault certificate policy, then renew"
        )
        if not name.subject.rdns:
            self.block(
                f"the certificate {new.thumbprint} has an empty subject, so Exchange's <S> cannot name it",
                no_cn_fix,
            )
        elif name.subject.first(COMMON_NAME) is None:
            self.block(
                f"the certificate's subject {str(name.subject)!r} has no CN, so TlsCertificateName cannot name it",
                no_cn_fix,
            )
        elif not is_exchange_host_name(name.first_cn_as_exchange_reads_it() or ""):
            self.block(
                f"the subject's first CN {name.subject.first(COMMON_NAME)!r} is not a DNS name, "
                "so Exchange refuses the TlsCertificateName",
                "re-issue the certificate with the host name as the subject's first CN",
            )
        if new.key_exportable is False:
            self.block(
                "the certificate's private key cannot be exported, and the import on the servers needs it",
                "create the certificate with exportable: true (Key Vault certificate policy), then renew",
            )
        allowed = self.targets.allow_status if self.targets else ()
        if new.status != VALID and new.status not in allowed:
            codes = ", ".join(new.error_codes) or "no detail"
            self.block(
                f"the new certificate is {new.status} ({codes}); Exchange would not use it",
                "run certsync check on it and fix what it reports (or allow the status in the targets' allow_status)",
                code="certificate-status",
            )

    def cross_check(self, certificates: Sequence[KnownCertificate]) -> None:
        """The server's own Subject/Issuer for a certificate certsync also holds must render the same."""
        ours = {c.thumbprint: c for c in certificates}
        for installed in self.inventory.certificates:
            cert = ours.get(installed.thumbprint)
            if cert is None:
                continue
            for which, theirs, mine in (
                ("Subject", installed.subject, cert.tls_name.subject),
                ("Issuer", installed.issuer, cert.tls_name.issuer),
            ):
                if mine is not None and fold_case(theirs) != fold_case(str(mine)):
                    self.block(
                        f"{installed.server} shows the {which} of {installed.thumbprint} as {theirs!r}, "
                        f"but certsync renders {str(mine)!r}",
                        "report this to certsync with both strings; until then set TlsCertificateName by hand",
                    )

    # -- the old certificates

    def old_certificates(
        self, old_thumbprints: Sequence[str], previous_versions: Sequence[KnownCertificate]
    ) -> list[InstalledCertificate]:
        new = self.new.thumbprint
        certificates = [c for c in self.inventory.certificates if c.thumbprint != new]
        if old_thumbprints or previous_versions:
            wanted = {t.strip().upper() for t in old_thumbprints} or {c.thumbprint for c in previous_versions}
            found = [c for c in certificates if c.thumbprint in wanted]
            for thumbprint in sorted(wanted - {c.thumbprint for c in found} - {new}):
                self.warnings.append(f"the old certificate {thumbprint} is on no server of the inventory")
            return found
        names = self.host_names
        same_names = [
            c
            for c in certificates
            if (c.name.first_cn_as_exchange_reads_it() or "").lower() in names
            or any(d.lower() in names for d in c.domains)
        ]
        values = [read_value(v) for v in self.all_values()]
        old = [c for c in same_names if any(v.matches(c.name) for v in values)]
        for cert in same_names:
            if cert not in old and not self.new_name.matches(cert.name):
                self.warnings.append(
                    f"{cert.server} holds {cert.thumbprint} for the same names, which no connector selects; "
                    "left as is (give --old to replace it too)"
                )
        return old

    @functools.cached_property
    def host_names(self) -> frozenset[str]:
        """The new certificate's DNS names and first CN, lower case: a certificate with one of them is an
        earlier copy of it (when no earlier version is known)."""
        names = {n.lower() for n in self.new.dns_names}
        cn = self.new_name.first_cn_as_exchange_reads_it()
        if cn:
            names.add(cn.lower())
        return frozenset(names)

    def may_name_an_old_copy(self, value: str | None) -> bool:
        """Whether a value not known to select an old certificate names one with the new certificate's
        host names: on a server discovery could not read, it may select an old copy there."""
        if value is None:
            return False
        key = ("copy", value)
        if key not in self._selects:
            cn = read_value(value).first_cn_as_exchange_reads_it() or ""
            self._selects[key] = cn.lower() in self.host_names
        return self._selects[key]

    def all_values(self) -> list[str]:
        inv = self.inventory
        values = [c.tls_certificate_name for c in inv.send_connectors if c.tls_certificate_name]
        values += [c.tls_certificate_name for c in inv.receive_connectors if c.tls_certificate_name]
        if inv.hybrid_configuration and inv.hybrid_configuration.tls_certificate_name:
            values.append(inv.hybrid_configuration.tls_certificate_name)
        return list(dict.fromkeys(values))

    def selects_old(self, value: str | None) -> bool:
        if value is None:
            return False
        key = ("old", value)  # asked only once `old_names` is final (after old_certificates)
        if key not in self._selects:
            self._selects[key] = any(read_value(value).matches(n) for n in self.old_names)
        return self._selects[key]

    def selects_new(self, value: str | None) -> bool:
        if value is None:
            return False
        key = ("new", value)
        if key not in self._selects:
            self._selects[key] = read_value(value).matches(self.new_name)
        return self._selects[key]

    # -- rule 1 and 3: the objects, the servers, the targets

    def objects(self) -> list[_Object]:
        inv = self.inventory
        objects = [_Object("send", c.identity, c.source_servers, c.tls_certificate_name) for c in inv.send_connectors]
        objects += [_Object("receive", c.identity, (c.server,), c.tls_certificate_name) for c in inv.receive_connectors]
        if inv.hybrid_configuration is not None:
            hybrid = inv.hybrid_configuration
            objects.append(_Object("hybrid", HYBRID_CONFIGURATION, hybrid.servers, hybrid.tls_certificate_name))
        for obj in objects:
            obj.after = obj.value
            obj.switch = self.selects_old(obj.value) and not self.selects_new(obj.value)
        if self.targets is not None:
            self.narrow(objects, self.targets)
        for obj in objects:
            if obj.switch:
                obj.after = self.new_value
        return objects

    def narrow(self, objects: list[_Object], targets: Targets) -> None:
        """A targets file may narrow which connectors are written; every disagreement is reported."""
        words = {"send": "send connector", "receive": "receive connector"}
        for kind, listed in (("send", targets.send_connectors), ("receive", targets.receive_connectors)):
            if not listed:
                continue
            wanted = {fold_case(n): n for n in listed}
            have = {fold_case(o.identity): o for o in objects if o.kind == kind}
            for key, name in wanted.items():
                obj = have.get(key)
                if obj is None:
                    self.conflicts.append(f"{words[kind]} {name!r} is in the targets but not in the inventory")
                elif not self.selects_old(obj.value) and not self.selects_new(obj.value):
                    self.conflicts.append(
                        f"{words[kind]} {name!r} is in the targets but selects another certificate "
                        f"({obj.value or 'no TlsCertificateName'}); left as is"
                    )
            for key, obj in have.items():
                if obj.switch and key not in wanted:
                    obj.switch = False
                    obj.left_because = "it is not in the targets"
                    self.warnings.append(
                        f"{words[kind]} {obj.identity!r} selects the old certificate but is not in the targets; "
                        "left as is"
                    )
        hybrid = next((o for o in objects if o.kind == "hybrid"), None)
        if hybrid is not None and hybrid.switch and not targets.hybrid_configuration:
            hybrid.switch = False
            hybrid.left_because = "the targets exclude the hybrid configuration"
            self.warnings.append("the hybrid configuration selects the old certificate but the targets exclude it")
        if targets.exo_inbound_connector and self.inventory.exo is not None:
            names = {fold_case(c.identity) for c in self.inventory.exo.inbound_connectors}
            if fold_case(targets.exo_inbound_connector) not in names:
                self.conflicts.append(
                    f"Exchange Online inbound connector {targets.exo_inbound_connector!r} is in the targets "
                    "but not in the inventory"
                )

    def servers(self, objects: list[_Object]) -> list[str]:
        found: set[str] = set()
        hybrid = self.inventory.hybrid_configuration
        if hybrid is not None:
            found.update(hybrid.servers)
        for obj in objects:
            if obj.kind != "hybrid" and self.selects_old(obj.value):
                found.update(obj.servers)
            elif obj.kind != "hybrid" and self.may_name_an_old_copy(obj.value):
                # Never take an unread server as empty: it may hold an old copy this object selects.
                found.update(s for s in obj.servers if self.inventory.unread(s) is not None)
        if self.targets is not None:
            found.update(server_key(s) for s in self.targets.servers)
        if not found:
            self.block(
                "no server uses the old certificate and there is no hybrid configuration, so nothing to plan on",
                "give the old certificate with --old THUMBPRINT, or name the servers in the targets file",
            )
        return sorted(found)

    def check_errors(self, servers: list[str]) -> None:
        inv = self.inventory
        for server in servers:
            unread = inv.unread(server)
            if unread is not None:
                self.block(
                    f"discovery could not read {server} ({unread.message}), which this plan needs",
                    f"make {server} reachable from the Hybrid worker, then run discovery again",
                    code="inventory",
                    transient=True,
                )
            elif inv.server(server) is None:
                self.block(
                    f"{server} is in this plan but not among the inventory's servers",
                    "run discovery again, or correct the server name where it is given",
                )
        organisation = inv.organisation_errors
        for error in organisation:
            self.block(
                f"{error.where} failed during discovery ({error.message}); the inventory is incomplete",
                f"fix what stops {error.where} on the Hybrid worker, then run discovery again",
                code="inventory",
                transient=True,
            )
        for error in inv.errors:
            if error not in organisation and server_key(error.where) not in servers:
                self.warnings.append(f"discovery could not read {error.where} ({error.message}); not in this plan")

    # -- rule 2: stage

    def stage(self, server: str) -> None:
        new = self.new
        installed = self.inventory.certificates_on(server)
        present = next((c for c in installed if c.thumbprint == new.thumbprint), None)
        services = {"SMTP"}
        for cert in installed:
            if cert in self.old:
                services |= set(cert.services) & MOVABLE_SERVICES
        current = set(present.services) if present else set()
        for intermediate in new.intermediates:
            self.step("stage", "install-intermediate", server, intermediate.thumbprint, None, None, INTERMEDIATE_STORE)
        if present is None:
            self.step("stage", "import-certificate", server, new.thumbprint, None, None, PERSONAL_STORE)
        if not services <= current:
            found = self.inventory.server(server)
            self.step(
                "stage",
                "enable-services",
                server,
                new.thumbprint,
                "Services",
                order_services(current),
                order_services(services | current),
                internal_transport_certificate=found.internal_transport_thumbprint if found else None,
            )
        self.step("stage", "check-status", server, new.thumbprint, "Status", None, VALID)
        self.step("stage", "check-name", server, new.thumbprint, None, None, self.new_value)

    # -- rule 3 and 4: switch

    def switch(self, objects: list[_Object]) -> None:
        actions = {
            "send": "set-send-connector",
            "receive": "set-receive-connector",
            "hybrid": "set-hybrid-configuration",
        }
        for kind in ("send", "receive", "hybrid"):
            for obj in sorted((o for o in objects if o.kind == kind and o.switch), key=lambda o: fold_case(o.identity)):
                server = obj.servers[0] if kind == "receive" else None
                self.step(
                    "switch", actions[kind], server, obj.identity, "TlsCertificateName", obj.value, self.new_value
                )

    def exchange_online(self) -> None:
        exo = self.inventory.exo
        if exo is None:
            self.warnings.append(
                "Exchange Online was not read: its inbound connector and accepted domains are not checked"
            )
            return
        names = self.new.dns_names
        cn = self.new_name.first_cn_as_exchange_reads_it() or ""
        used = [cn] if cn else []
        for connector in sorted(exo.inbound_connectors, key=lambda c: fold_case(c.identity)):
            value = connector.tls_sender_certificate_name
            if connector.connector_type.lower() != "onpremises" or not value:
                continue
            if covers((*names, cn), value):
                used.append(value)
            else:
                self.step(
                    "switch",
                    "set-exo-inbound-connector",
                    None,
                    connector.identity,
                    "TlsSenderCertificateName",
                    value,
                    cn,
                    tenant=self.exo_tenant,
                )
                if not self.exo_tenant:
                    self.block(
                        f"Exchange Online's inbound connector {connector.identity!r} must change, and no tenant id "
                        "says which Exchange Online organisation to connect to",
                        "set CERTSYNC_EXO_TENANT_ID to the tenant's id (a GUID), or run discovery with the tenant",
                    )
        accepted = [d.domain_name for d in exo.accepted_domains]
        for name in dict.fromkeys(n.lower() for n in used):
            if accepted and not is_accepted(name, accepted):
                reason = f"{name} is not an accepted domain of the Exchange Online tenant (MC1226222)"
                fix = "add its domain with New-AcceptedDomain, or use a certificate for an accepted domain"
                if self.require_accepted_domain:
                    self.block(reason, fix)
                else:
                    self.warnings.append(f"{reason}: {fix}")
        for outbound in exo.outbound_connectors:
            if (
                outbound.connector_type.lower() == "onpremises"
                and (outbound.tls_settings or "").lower() == "domainvalidation"
                and outbound.tls_domain
                and not covers((*names, cn), outbound.tls_domain)
            ):
                self.block(
                    f"Exchange Online's outbound connector {outbound.identity!r} validates TlsDomain "
                    f"{outbound.tls_domain}, which the new certificate does not cover: mail to on-premises would stop",
                    f"include {outbound.tls_domain} in the certificate, or Set-OutboundConnector "
                    f"'{outbound.identity}' -TlsDomain <a name of the new certificate> first",
                )

    # -- the proof: verify

    def verify(self, server: str, objects: list[_Object]) -> None:
        """After the switch, per server: restart the transport services that hold a switched connector
        (when `restart_transport`), read back Status Valid, then probe each switched receive connector's
        binding over STARTTLS."""
        new = self.new
        switched = [o for o in objects if o.switch and server in o.servers]
        receive = {c.identity: c for c in self.inventory.receive_connectors}
        if self.restart_transport and switched:
            found = self.inventory.server(server)
            services = set()
            for obj in switched:
                if obj.kind == "send" or (found is not None and found.is_edge):
                    services.add(TRANSPORT)
                elif obj.kind == "receive":
                    role = (receive[obj.identity].transport_role or "").lower()
                    services.add(FRONT_END_TRANSPORT if role == "frontendtransport" else TRANSPORT)
            for service in sorted(services):
                self.step("verify", "restart-transport", server, service, None, None, None)
        self.step("verify", "check-status", server, new.thumbprint, "Status", None, VALID)
        for obj in sorted((o for o in switched if o.kind == "receive"), key=lambda o: fold_case(o.identity)):
            for endpoint in self.endpoints(server, receive[obj.identity].bindings):
                self.step("verify", "probe-receive-connector", server, obj.identity, "Bindings", None, endpoint)

    def endpoints(self, server: str, bindings: Sequence[str]) -> list[str]:
        """ "host:port" to probe for each binding: the server's FQDN for an all-addresses binding, else the
        address itself (an IPv6 one in brackets); one per port for the all-addresses bindings."""
        found = self.inventory.server(server)
        host_of_server = (found.fqdn if found is not None and found.fqdn else server).lower()
        endpoints = []
        for binding in bindings:
            host, _, port = binding.strip().rpartition(":")
            if not host or not port.isdigit():
                continue
            host = host_of_server if host in _WILDCARD_HOSTS else host
            endpoints.append(f"{host}:{port}")
        return list(dict.fromkeys(endpoints))

    def test_outbound(self, objects: list[_Object], servers: list[str]) -> None:
        """On-premises -> Exchange Online: for each switched send connector that sends to Exchange Online, a
        test from one of its source servers in the plan (and `Validate-OutboundConnector` with the tenant)."""
        send = {c.identity: c for c in self.inventory.send_connectors}
        for obj in sorted((o for o in objects if o.kind == "send" and o.switch), key=lambda o: fold_case(o.identity)):
            connector = send[obj.identity]
            if not _to_exchange_online(connector):
                continue
            source = next((s for s in connector.source_servers if s in servers), None)
            if source is not None:
                self.step("verify", "test-outbound", source, obj.identity, None, None, None, tenant=self.exo_tenant)

    # -- rule 5: retire

    def retire(self, servers: list[str], objects: list[_Object]) -> set[tuple[str, str]]:
        retired: set[tuple[str, str]] = set()
        for cert in sorted(self.old, key=lambda c: (c.server, c.thumbprint)):
            reason = self.keep_reason(cert, servers, objects)
            if reason:
                self.kept.append(KeptCertificate(cert.server, cert.thumbprint, reason))
                if cert.usable and cert.name.matches(self.new_name):
                    self.warnings.append(
                        f"{cert.server} keeps {cert.thumbprint} beside the new certificate with the same "
                        "TlsCertificateName; Exchange may use either: remove it once nothing needs it"
                    )
                continue
            retired.add((cert.server, cert.thumbprint))
            self.step("retire", "remove-certificate", cert.server, cert.thumbprint, None, None, None)
        return retired

    def keep_reason(self, cert: InstalledCertificate, servers: list[str], objects: list[_Object]) -> str:
        server = self.inventory.server(cert.server)
        if cert.server not in servers:
            return f"{cert.server} is not one of the servers this plan installs the new certificate on"
        if server is not None and server.internal_transport_thumbprint == cert.thumbprint:
            return f"it is {cert.server}'s internal transport certificate"
        unmoved = order_services(frozenset(cert.services) - MOVABLE_SERVICES)
        if unmoved:
            return f"it serves {', '.join(unmoved)}, which certsync does not move to the new certificate"
        if self.new.status != VALID:
            return f"the new certificate is {self.new.status}, not Valid"
        for obj in objects:
            still = cert.server in obj.servers and obj.after and read_value(obj.after).matches(cert.name)
            if still and not self.selects_new(obj.after):
                why = f" ({obj.left_because})" if obj.left_because else ""
                return f"{_describe(obj)} still selects it after the switch{why}"
        return ""

    def check_left_without(self, objects: list[_Object], servers: list[str], retired: set[tuple[str, str]]) -> None:
        """Rule 7: no server may be left without a valid certificate for a connector that names it."""
        for obj in objects:
            if not obj.after or not (self.selects_old(obj.after) or self.selects_new(obj.after)):
                continue  # names some other certificate: not this plan's to judge (certsync doctor does)
            for server in obj.servers:
                if self.selects_new(obj.after) and server in servers:
                    continue
                left = [
                    c
                    for c in self.inventory.certificates_on(server)
                    if c.usable and (server, c.thumbprint) not in retired and read_value(obj.after).matches(c.name)
                ]
                if not left and self.inventory.unread(server) is None:
                    self.block(
                        f"{server} would be left with no valid certificate for {_describe(obj)} ({obj.after})",
                        "let the plan switch it too (add it to the targets), or renew the certificate it names",
                    )


def _to_exchange_online(connector: Any) -> bool:
    """Whether a send connector sends to Exchange Online (the Hybrid Configuration Wizard's: cloud mail enabled,
    or a smart host / address space of the service)."""
    names = [*connector.smart_hosts, *connector.address_spaces]
    return connector.cloud_services_mail_enabled or any(
        "mail.protection.outlook.com" in n.lower() or "mail.onmicrosoft.com" in n.lower() for n in names
    )


def _describe(obj: _Object) -> str:
    if obj.kind == "hybrid":
        return "the hybrid configuration"
    return f"{obj.kind} connector {obj.identity!r}"
