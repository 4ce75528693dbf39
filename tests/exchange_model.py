"""A Python model of an Exchange organisation, for testing plans: the oracle the planner is held to.

`ExchangeOrg` holds the organisation's truth as a `certsync.inventory/1` document
(`/work/shared/spec/exchange-inventory.md` §1) plus what discovery does not report (each server's
`LocalMachine\\CA` intermediates, and the PFX files the runbook can import), and applies
`certsync.plan/2` steps (spec §3) the way the runbook and Exchange would:

- every write is compare-and-set: a value already equal to the step's `value` is a no-op; otherwise the
  step's `previous` must equal the current value exactly, or the write is refused (`StaleWrite`);
- Exchange's refusals (`Refused`): removing the internal transport certificate; removing a certificate
  when that would leave a send connector sourcing from that server with no Valid, SMTP-enabled
  certificate it selects there (`exchange-azure-facts.md` §1.5: "Removing and replacing certificates
  from Send Connector would break the mail flow"); a TlsCertificateName whose first CN is not a DNS name
  (`tls-certificate-name.md` §4); a step on an unknown server or object;
- `enable-services` only adds services (Exchange cannot disable one) and never replaces the internal
  transport certificate; an imported certificate is `Valid` only once its chain's intermediates are in
  the server's `LocalMachine\\CA` (else `Untrusted`, as Windows shows a chain it cannot build);
- `check-name` and `check-status` read back and fail (`CheckFailed`) when they do not hold.

The removal refusal is read from Exchange's error text, as the integrator decided for issue 15: Exchange
refuses because the removal *would break the mail flow*, so a certificate a send connector selects may go
when another Valid, SMTP-enabled certificate with the same names stays beside it on that server (a renewed
copy). UNVERIFIED on a real server: the only report (win-acme #1754) shows the refusal, not which
certificates Exchange counts; the planner (spec §2 rule 5) and the runbook's keep rule read it the same
way, so if a real server refuses more, all three change together.

A step names its certificate as the runbook reads it (`Get-CertsyncStepThumbprint`): its `thumbprint`,
else its `object` when that is a thumbprint (the runbook's last resort, the plan's certificate, is not
modelled: `apply` takes steps, and every plan/2 certificate step names its thumbprint).

Each applied step leaves an undo entry; `rollback()` undoes them newest first and restores the
inventory exactly (deep equality, list order included). Undoing `enable-services` puts the earlier
`Services` back, which real Exchange cannot do for a certificate it kept: the runbook's undo removes the
certificate it imported, which the model does too when it undoes the import.

`violations()` answers spec §4, "what is broken right now?": every send connector's
SourceTransportServers, every receive connector's server and every hybrid-configuration server must hold a
`Valid`, SMTP-enabled certificate the object's TlsCertificateName selects. `exo_violations()` adds the
Exchange Online side (the OnPremises inbound connector's TlsSenderCertificateName must be covered by a
certificate the cloud send connectors present).

The match rule is written here again on purpose, deliberately simply (`parse_x500`, `selects`): comparing
the planner with `shared.x509`'s own parser would be testing that parser with itself.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Exchange's AllowedServices flags, in the order their string form lists them ("IIS, SMTP").
SERVICE_ORDER = ("IMAP", "POP", "UM", "IIS", "SMTP", "Federation", "UMCallRouter")
DNS_NAME = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$", re.IGNORECASE)
TLS_NAME = re.compile(r"^(?:<I>(?P<issuer>[^<]*))?<S>(?P<subject>.*)$", re.IGNORECASE | re.DOTALL)


class StepFailed(Exception):
    """A plan step Exchange (or the runbook's read-back) did not carry out; the org is unchanged."""


class Refused(StepFailed):
    """Exchange refused the cmdlet."""


class StaleWrite(StepFailed):
    """A compare-and-set write whose `previous` is not what the object holds now."""


class CheckFailed(StepFailed):
    """A `check-name` or `check-status` read-back that does not hold."""


# --- Exchange's match rule (tls-certificate-name.md §4), written independently -----------------------


def _split_outside_quotes(text: str, separators: str) -> list[str]:
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char in separators and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_x500(text: str) -> tuple[tuple[tuple[str, str], ...], ...] | None:
    """An X.500 name as Exchange re-parses it: RDNs split on `,`/`;`, AVAs on `+`, `"…"` quoting with `""`
    for a quote, blanks around keys and values ignored, `ST` read as `S`; keys and values case-folded so
    that equal tuples mean "the same name, case ignored, same RDN order". None when it does not parse."""
    rdns = []
    for rdn_text in _split_outside_quotes(text, ",;"):
        avas = []
        for ava in _split_outside_quotes(rdn_text, "+"):
            key, equals, value = ava.partition("=")
            key, value = key.strip().upper(), value.strip()
            if not equals or not key:
                return None
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('""', '"')
            avas.append(("S" if key == "ST" else key, value.casefold()))
        rdns.append(tuple(avas))
    return tuple(rdns)


def parse_tls_name(name: str) -> tuple[str | None, str] | None:
    """`(issuer or None, subject)` of a TlsCertificateName; None when it is not `[<I>issuer]<S>subject`."""
    match = TLS_NAME.match(name.strip())
    return (match["issuer"], match["subject"]) if match else None


def first_cn(subject: str) -> str | None:
    """The first CN value of a subject, or None."""
    for rdn in parse_x500(subject) or ():
        for key, value in rdn:
            if key == "CN":
                return value
    return None


def selects(name: str | None, certificate: Mapping[str, Any]) -> bool:
    """Whether a TlsCertificateName selects a certificate (its server-side Subject and Issuer): same
    subject and issuer texts, case ignored, same RDN order; a name without `<I>` matches any issuer."""
    parsed = parse_tls_name(name) if name else None
    if parsed is None:
        return False
    issuer, subject = parsed
    wanted = parse_x500(subject)
    if wanted is None or wanted != parse_x500(certificate["Subject"]):
        return False
    return issuer is None or parse_x500(issuer) == parse_x500(certificate["Issuer"])


def covers(dns_names: Iterable[str], value: str) -> bool:
    """Whether a certificate with these DNS names covers a connector's domain value: the same name, a
    `*.` name covering it (one label), or, for a wildcard value, a name one label under it."""
    value = value.casefold()
    for name in (n.casefold() for n in dns_names):
        parent = name.split(".", 1)[1:]
        if name == value or (name.startswith("*.") and value.split(".", 1)[1:] == [name[2:]]):
            return True
        if value.startswith("*.") and not name.startswith("*.") and parent == [value[2:]]:
            return True
    return False


def services(value: str | Iterable[str] | None) -> frozenset[str]:
    """A Services value (`"IIS, SMTP"`, a list, `"None"` or None) as a set of service names."""
    if value is None:
        return frozenset()
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(s.strip() for s in items if s.strip() and s.strip() != "None")


def render_services(names: Iterable[str]) -> str:
    """Services as Exchange prints them: flags in their own order, `"None"` when empty."""
    chosen = set(names)
    ordered = [s for s in SERVICE_ORDER if s in chosen] + sorted(chosen - set(SERVICE_ORDER))
    return ", ".join(ordered) or "None"


# --- the organisation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """A mail-flow break spec §4 predicts: `kind` send | receive | hybrid | exo."""

    kind: str
    object: str
    server: str | None
    tls_certificate_name: str | None
    error: str


@dataclass
class ExchangeOrg:
    """An Exchange organisation: the inventory (its truth), each server's intermediate store, and the
    certificates (facts of their PFX) the runbook can import, by thumbprint.

    An importable certificate is a dict: `thumbprint`, `subject`, `issuer` (Windows's rendering),
    `dns_names`, `intermediates` (`[{thumbprint, subject}]`), `not_before`, `not_after`, `exportable`."""

    inventory: dict[str, Any]
    intermediates: dict[str, set[str]] = field(default_factory=dict)
    importable: dict[str, dict[str, Any]] = field(default_factory=dict)
    journal: list[Callable[[], None]] = field(default_factory=list)
    applied: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.inventory = copy.deepcopy(self.inventory)
        self.intermediates = {k.upper(): set(v) for k, v in self.intermediates.items()}
        self.importable = {k.upper(): dict(v) for k, v in self.importable.items()}

    # -- reading

    def server(self, name: str) -> dict[str, Any]:
        for server in self.inventory.get("servers") or []:
            if server["Name"].casefold() == name.casefold():
                return server
        raise Refused(f"server {name!r} is not in the organisation")

    def certificates_on(self, server: str) -> list[dict[str, Any]]:
        return [c for c in self.inventory.get("certificates") or [] if c["Server"].casefold() == server.casefold()]

    def certificate(self, server: str, thumbprint: str) -> dict[str, Any] | None:
        for cert in self.certificates_on(server):
            if cert["Thumbprint"].upper() == thumbprint.upper():
                return cert
        return None

    def hybrid_servers(self) -> list[str]:
        hybrid = self.inventory.get("hybrid_configuration") or {}
        names = [
            *(hybrid.get("SendingTransportServers") or []),
            *(hybrid.get("ReceivingTransportServers") or []),
            *(hybrid.get("EdgeTransportServers") or []),
        ]
        return sorted({n.split(".")[0].upper() for n in names})

    def usable(self, server: str, name: str | None) -> list[dict[str, Any]]:
        """The certificates on `server` that `name` selects and Exchange would use: Valid, SMTP-enabled."""
        return [
            c
            for c in self.certificates_on(server)
            if c["Status"] == "Valid" and "SMTP" in services(c["Services"]) and selects(name, c)
        ]

    def send_references(self, server: str, thumbprint: str) -> list[str]:
        """Send connectors sourcing from `server` whose TlsCertificateName selects that certificate."""
        cert = self.certificate(server, thumbprint)
        if cert is None:
            return []
        return [
            c["Identity"]
            for c in self.inventory.get("send_connectors") or []
            if any(s.split(".")[0].casefold() == server.casefold() for s in c.get("SourceTransportServers") or [])
            and selects(c.get("TlsCertificateName"), cert)
        ]

    def removal_refused_by(self, server: str, thumbprint: str) -> list[str]:
        """The send connectors that make Exchange refuse `Remove-ExchangeCertificate` (facts §1.5): those
        sourcing from `server` that select the certificate and would find no other Valid, SMTP-enabled
        certificate they select there once it is gone."""
        refusing = []
        for identity in self.send_references(server, thumbprint):
            name = self._connector("send_connectors", identity).get("TlsCertificateName")
            others = [c for c in self.usable(server, name) if c["Thumbprint"].upper() != thumbprint.upper()]
            if not others:
                refusing.append(identity)
        return refusing

    def violations(self) -> list[Violation]:
        """Spec §4: each object that names a certificate must find a Valid, SMTP-enabled one it selects on
        each of its servers. Objects without a TlsCertificateName use Exchange's default choice: skipped."""
        found = []
        for connector in self.inventory.get("send_connectors") or []:
            name = connector.get("TlsCertificateName")
            for server in connector.get("SourceTransportServers") or [] if name else []:
                if not self.usable(server.split(".")[0], name):
                    found.append(
                        Violation(
                            "send", connector["Identity"], server.upper(), name, "454 4.7.5 certificate not found"
                        )
                    )
        for connector in self.inventory.get("receive_connectors") or []:
            name = connector.get("TlsCertificateName")
            if name and not self.usable(connector["Server"], name):
                found.append(
                    Violation(
                        "receive",
                        connector["Identity"],
                        connector["Server"].upper(),
                        name,
                        "TLS negotiation failed with error NoCredentials",
                    )
                )
        hybrid = self.inventory.get("hybrid_configuration")
        if hybrid and hybrid.get("TlsCertificateName"):
            for server in self.hybrid_servers():
                if not self.usable(server, hybrid["TlsCertificateName"]):
                    found.append(
                        Violation(
                            "hybrid",
                            "Hybrid Configuration",
                            server,
                            hybrid["TlsCertificateName"],
                            "454 4.7.5 certificate not found",
                        )
                    )
        return found

    def exo_violations(self) -> list[Violation]:
        """Exchange Online's side: each enabled OnPremises inbound connector's TlsSenderCertificateName must
        be covered by a certificate each cloud send connector (CloudServicesMailEnabled) that names one
        presents. Checked at the end of a plan, not after each step: when the name changes domain there is
        an unavoidable moment between the two writes."""
        exo = self.inventory.get("exo") or {}
        found = []
        for inbound in exo.get("inbound_connectors") or []:
            domain = inbound.get("TlsSenderCertificateName")
            if inbound.get("ConnectorType") != "OnPremises" or not inbound.get("Enabled", True) or not domain:
                continue
            for connector in self.inventory.get("send_connectors") or []:
                if not connector.get("CloudServicesMailEnabled") or not connector.get("TlsCertificateName"):
                    continue  # without a name Exchange chooses the certificate itself: not judged here
                for server in connector.get("SourceTransportServers") or []:
                    presented = self.usable(server.split(".")[0], connector.get("TlsCertificateName"))
                    if not any(covers(c.get("CertificateDomains") or [], domain) for c in presented):
                        found.append(
                            Violation(
                                "exo",
                                inbound["Identity"],
                                server.upper(),
                                domain,
                                "Exchange Online rejects the on-premises certificate (TlsSenderCertificateName)",
                            )
                        )
        return found

    # -- applying

    def apply_plan(self, plan: Mapping[str, Any], *, stop_after: int | None = None) -> None:
        """Apply the plan's steps in order (the first `stop_after` only, when given); raises `StepFailed`
        at the first one that fails, the steps before it staying applied."""
        for step in list(plan.get("steps") or [])[:stop_after]:
            self.apply(step)

    def apply(self, step: Mapping[str, Any]) -> None:
        """Apply one plan/2 step; on `StepFailed` nothing changed and nothing was journalled."""
        action = step.get("action")
        handler = getattr(self, "_" + str(action).replace("-", "_"), None)
        if handler is None:
            raise Refused(f"unknown action {action!r}")
        undo = handler(step)
        if undo is not None:
            self.journal.append(undo)
        self.applied.append(dict(step))

    def rollback(self) -> None:
        """Undo every applied step, newest first."""
        while self.journal:
            self.journal.pop()()
        self.applied.clear()

    @staticmethod
    def _thumbprint_of(step: Mapping[str, Any]) -> str:
        """The certificate a step is about, as the runbook reads it: its `thumbprint`, else its `object`
        when that is a thumbprint (a plan/2 certificate step), else ''."""
        named = str(step.get("thumbprint") or "")
        obj = str(step.get("object") or "")
        if not named and re.fullmatch(r"[0-9A-Fa-f]{40}", obj):
            named = obj
        return named.upper()

    def _server_of(self, step: Mapping[str, Any]) -> str:
        if not step.get("server"):
            raise Refused(f"{step.get('action')} needs a server")
        return self.server(step["server"])["Name"]

    def _refresh_status(self, server: str) -> Callable[[], None]:
        """Recompute the Status of importable certificates on `server` from its intermediate store (the
        chain Windows can build); returns the undo."""
        before = []
        store = self.intermediates.get(server.upper(), set())
        for cert in self.certificates_on(server):
            facts = self.importable.get(cert["Thumbprint"].upper())
            if facts is not None:
                before.append((cert, cert["Status"]))
                chain = {i["thumbprint"].upper() for i in facts.get("intermediates") or []}
                cert["Status"] = "Valid" if chain <= store else "Untrusted"

        def undo() -> None:
            for cert, status in before:
                cert["Status"] = status

        return undo

    def _install_intermediate(self, step: Mapping[str, Any]) -> Callable[[], None] | None:
        server = self._server_of(step).upper()
        thumbprint = self._thumbprint_of(step)
        if not thumbprint:
            raise Refused(f"install-intermediate on {server} names no certificate")
        store = self.intermediates.setdefault(server, set())
        if thumbprint in store:
            return None
        store.add(thumbprint)
        restore = self._refresh_status(server)

        def undo() -> None:
            restore()
            store.discard(thumbprint)

        return undo

    def _remove_intermediate(self, step: Mapping[str, Any]) -> Callable[[], None] | None:
        """Rollback of an intermediate the plan staged: out of LocalMachine\\CA again."""
        server = self._server_of(step).upper()
        thumbprint = self._thumbprint_of(step)
        store = self.intermediates.setdefault(server, set())
        if thumbprint not in store:
            return None
        store.discard(thumbprint)
        restore = self._refresh_status(server)

        def undo() -> None:
            restore()
            store.add(thumbprint)

        return undo

    def _restart_transport(self, step: Mapping[str, Any]) -> None:
        """Restart-Service: Exchange reloads its certificates; nothing in the inventory changes."""
        self._server_of(step)
        if step.get("object") not in ("MSExchangeFrontEndTransport", "MSExchangeTransport"):
            raise Refused(f"restart-transport: {step.get('object')!r} is not a transport service")

    def _probe_receive_connector(self, step: Mapping[str, Any]) -> None:
        """STARTTLS to the binding: the connector must find a Valid, SMTP-enabled certificate it selects."""
        server = self._server_of(step)
        connector = self._connector("receive_connectors", step.get("object"))
        name = connector.get("TlsCertificateName")
        if not self.usable(server, name):
            raise CheckFailed(f"probe {step.get('value')} on {server}: no certificate for {name!r}")

    def _test_outbound(self, step: Mapping[str, Any]) -> None:
        """Mail to Exchange Online from the connector's source server: it must present a certificate."""
        server = self._server_of(step)
        connector = self._connector("send_connectors", step.get("object"))
        name = connector.get("TlsCertificateName")
        if not self.usable(server, name):
            raise CheckFailed(f"test-outbound {step.get('object')} from {server}: no certificate for {name!r}")

    def _import_certificate(self, step: Mapping[str, Any]) -> Callable[[], None] | None:
        server = self._server_of(step)
        thumbprint = self._thumbprint_of(step)
        if self.certificate(server, thumbprint) is not None:
            return None
        facts = self.importable.get(thumbprint)
        if facts is None:
            raise Refused(f"import-certificate on {server}: no certificate {thumbprint} to import")
        certificates = self.inventory.setdefault("certificates", [])
        certificates.append(
            {
                "Server": server,
                "Thumbprint": thumbprint,
                "Subject": facts["subject"],
                "Issuer": facts["issuer"],
                "Services": "None",
                "Status": "Untrusted",
                "NotBefore": facts.get("not_before"),
                "NotAfter": facts.get("not_after"),
                "CertificateDomains": list(facts.get("dns_names") or []),
                "HasPrivateKey": True,
                "PrivateKeyExportable": bool(facts.get("exportable", False)),
                "IsSelfSigned": False,
            }
        )
        added = certificates[-1]
        chain = {i["thumbprint"].upper() for i in facts.get("intermediates") or []}
        added["Status"] = "Valid" if chain <= self.intermediates.get(server.upper(), set()) else "Untrusted"

        def undo() -> None:
            del certificates[next(i for i, c in enumerate(certificates) if c is added)]

        return undo

    def _enable_services(self, step: Mapping[str, Any]) -> Callable[[], None] | None:
        server = self._server_of(step)
        thumbprint = self._thumbprint_of(step)
        cert = self.certificate(server, thumbprint)
        if cert is None:
            raise Refused(f"enable-services on {server}: certificate {thumbprint} is not installed")
        wanted = services(step.get("value"))
        current = services(cert["Services"])
        if wanted <= current:
            return None
        if services(step.get("previous")) != current:
            raise StaleWrite(
                f"enable-services on {server} {thumbprint}: expected {step.get('previous')!r},"
                f" found {cert['Services']!r}"
            )
        before = cert["Services"]
        # Enable-ExchangeCertificate adds; the runbook answers "No" to replacing the internal transport
        # certificate, so InternalTransportCertificateThumbprint is left as it is.
        cert["Services"] = render_services(current | wanted)

        def undo() -> None:
            cert["Services"] = before

        return undo

    def _check_name(self, step: Mapping[str, Any]) -> None:
        server = self._server_of(step)
        thumbprint = self._thumbprint_of(step)
        cert = self.certificate(server, thumbprint)
        if cert is None:
            raise CheckFailed(f"check-name on {server}: certificate {thumbprint} is not installed")
        shown = f"<I>{cert['Issuer']}<S>{cert['Subject']}"
        if shown.casefold() != str(step.get("value")).casefold():
            raise CheckFailed(
                f"check-name on {server}: Exchange shows {shown!r}, the plan expects {step.get('value')!r}"
            )

    def _check_status(self, step: Mapping[str, Any]) -> None:
        server = self._server_of(step)
        thumbprint = self._thumbprint_of(step)
        cert = self.certificate(server, thumbprint)
        wanted = step.get("value") or "Valid"
        if cert is None or cert["Status"] != wanted:
            found = cert["Status"] if cert else "not installed"
            raise CheckFailed(f"check-status on {server} {thumbprint}: {found}, not {wanted}")

    def _write(self, step: Mapping[str, Any], target: dict[str, Any], prop: str) -> Callable[[], None] | None:
        """Compare-and-set `target[prop]`: a no-op when it already holds `value`, refused when it does not
        hold `previous`."""
        value, current = step.get("value"), target.get(prop)
        if step.get("property") not in (None, prop):
            raise Refused(f"{step['action']} {step.get('object')}: cannot write {step.get('property')}")
        if current == value:
            return None
        if current != step.get("previous"):
            raise StaleWrite(
                f"{step['action']} {step.get('object')}: expected {step.get('previous')!r}, found {current!r}"
            )
        if prop == "TlsCertificateName":
            parsed = parse_tls_name(value) if isinstance(value, str) else None
            cn = first_cn(parsed[1]) if parsed else None
            if cn is None or not DNS_NAME.match(cn):
                raise Refused(f"{step['action']} {step.get('object')}: {value!r} does not name a DNS host in its CN")
        target[prop] = value

        def undo() -> None:
            target[prop] = current

        return undo

    def _connector(self, collection: str, identity: object) -> dict[str, Any]:
        if collection == "inbound_connectors":
            items = (self.inventory.get("exo") or {}).get(collection) or []
        else:
            items = self.inventory.get(collection) or []
        for item in items:
            if str(item["Identity"]).casefold() == str(identity).casefold():
                return item
        raise Refused(f"no {collection[:-1].replace('_', ' ')} {identity!r}")

    def _set_send_connector(self, step: Mapping[str, Any]) -> Callable[[], None] | None:
        return self._write(step, self._connector("send_connectors", step.get("object")), "TlsCertificateName")

    def _set_receive_connector(self, step: Mapping[str, Any]) -> Callable[[], None] | None:
        return self._write(step, self._connector("receive_connectors", step.get("object")), "TlsCertificateName")

    def _set_exo_inbound_connector(self, step: Mapping[str, Any]) -> Callable[[], None] | None:
        connector = self._connector("inbound_connectors", step.get("object"))
        return self._write(step, connector, "TlsSenderCertificateName")

    def _set_hybrid_configuration(self, step: Mapping[str, Any]) -> Callable[[], None] | None:
        hybrid = self.inventory.get("hybrid_configuration")
        if not hybrid:
            raise Refused("set-hybrid-configuration: the organisation has no hybrid configuration")
        return self._write(step, hybrid, "TlsCertificateName")

    def _remove_certificate(self, step: Mapping[str, Any]) -> Callable[[], None] | None:
        server = self._server_of(step)
        thumbprint = self._thumbprint_of(step)
        cert = self.certificate(server, thumbprint)
        if cert is None:
            return None
        if (self.server(server).get("InternalTransportCertificateThumbprint") or "").upper() == thumbprint:
            raise Refused(f"remove-certificate on {server}: {thumbprint} is the internal transport certificate")
        tagged = self.removal_refused_by(server, thumbprint)
        if tagged:
            raise Refused(
                f"remove-certificate on {server}: {thumbprint} is the only certificate send connectors "
                f"{', '.join(tagged)} select there; removing and replacing certificates from Send Connector "
                "would break the mail flow"
            )
        certificates = self.inventory["certificates"]
        index = certificates.index(cert)
        del certificates[index]

        def undo() -> None:
            certificates.insert(index, cert)

        return undo

    # -- for tests

    def snapshot(self) -> tuple[dict[str, Any], dict[str, set[str]]]:
        """What rollback must restore: the inventory and the intermediate stores (deep copies)."""
        return copy.deepcopy(self.inventory), copy.deepcopy(self.intermediates)


def with_step(step: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of `step` with some fields changed (for tests that break a plan on purpose)."""
    return {**step, **changes}
