"""The remediation plan: what the runbook must do on premises, in a safe order, as typed data.

Order (`spec/exchange-azure-facts.md` §1.5, §3.3):
1. stage, on every target server: install the intermediates the chain needs into the server's
   intermediate store (a missing intermediate hides the certificate: 454 4.7.5), import the
   certificate, enable it for SMTP *without* replacing the internal transport certificate, and check
   that Exchange shows it `Valid` there;
2. switch, only when the TlsCertificateName changed (or no earlier version is known): the send
   connectors, each receive connector, the hybrid configuration, and the Exchange Online inbound
   connector when the certificate's domain changed;
3. verify: each server's certificate status, and every changed object read back;
4. retire the superseded certificate, only once nothing references it.

Every step records the value it expects to find (`previous`) beside the value it sets (`value`), so
that a rollback restores exactly what was there. Public certificates only: the PFX stays in Key Vault.

The contract: `Plan` (with `PlanCertificate`, `PlanIntermediate`, `PlanPrevious` and `PlanStep`) is the
typed form; `Plan.to_dict()` gives the `certsync.plan/1` document (`PlanDocument`), key for key in the
order it has always had, and `Plan.from_dict()` reads one back. The document travels unchanged inside a
`RemediationRequest` to the runbook (`PlanJson`) and into the audit trail (without the intermediates' DER).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from shared.pipeline.sources import StoredVersion
from shared.pipeline.targets import Targets
from shared.times import format_time
from shared.validation.assessment import VALID, Assessment
from shared.x509.tls_certificate_name import TlsCertificateName, diff_certificates

PLAN_SCHEMA = "certsync.plan/1"
INTERMEDIATE_STORE = "Cert:\\LocalMachine\\CA"


# --- the certsync.plan/1 document (JSON) ------------------------------------------------------------


class _IntermediateDocumentBase(TypedDict):
    thumbprint: str
    subject: str


class IntermediateDocument(_IntermediateDocumentBase, total=False):
    der_base64: str  # left out in the audit trail's copy of the plan


class PlanCertificateDocument(TypedDict):
    vault: str
    name: str
    version: str
    secret_id: str
    thumbprint: str
    tls_certificate_name: str
    not_after: str
    intermediates: list[IntermediateDocument]


class PlanPreviousDocument(TypedDict):
    version: str
    thumbprint: str
    tls_certificate_name: str


class _PlanStepDocumentBase(TypedDict):
    n: int
    phase: str
    action: str
    server: str | None
    object: str | list[str]
    previous: str | None
    value: str


class PlanStepDocument(_PlanStepDocumentBase, total=False):
    thumbprint: str
    subject: str
    where: str
    keep_internal_transport_certificate: bool
    condition: str


class PlanDocument(TypedDict):
    schema: str
    certificate: PlanCertificateDocument
    previous: PlanPreviousDocument | None
    change: str
    connector_update_required: bool
    nothing_to_change: bool
    assessment_status: str
    blocked: str | None
    worker_group: str
    servers: list[str]
    probe: list[str]
    summary: str
    steps: list[PlanStepDocument]


# --- the typed plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanIntermediate:
    """An intermediate the servers must have in their intermediate store (a public certificate)."""

    thumbprint: str
    subject: str
    der_base64: str

    def to_dict(self, *, der: bool = True) -> IntermediateDocument:
        document: IntermediateDocument = {"thumbprint": self.thumbprint, "subject": self.subject}
        if der:
            document["der_base64"] = self.der_base64
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanIntermediate:
        return cls(str(data["thumbprint"]), str(data["subject"]), str(data.get("der_base64", "")))


@dataclass(frozen=True)
class PlanCertificate:
    """The version to deploy: its identifiers, TlsCertificateName, expiry and the intermediates to install."""

    vault: str
    name: str
    version: str
    secret_id: str
    thumbprint: str
    tls_certificate_name: str
    not_after: str  # ISO 8601, UTC
    intermediates: tuple[PlanIntermediate, ...]

    def to_dict(self, *, der: bool = True) -> PlanCertificateDocument:
        return {
            "vault": self.vault,
            "name": self.name,
            "version": self.version,
            "secret_id": self.secret_id,
            "thumbprint": self.thumbprint,
            "tls_certificate_name": self.tls_certificate_name,
            "not_after": self.not_after,
            "intermediates": [c.to_dict(der=der) for c in self.intermediates],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanCertificate:
        return cls(
            vault=data["vault"],
            name=data["name"],
            version=data["version"],
            secret_id=data["secret_id"],
            thumbprint=data["thumbprint"],
            tls_certificate_name=data["tls_certificate_name"],
            not_after=data["not_after"],
            intermediates=tuple(PlanIntermediate.from_dict(c) for c in data.get("intermediates") or ()),
        )


@dataclass(frozen=True)
class PlanPrevious:
    """The version being replaced, as far as the plan needs it."""

    version: str
    thumbprint: str
    tls_certificate_name: str

    def to_dict(self) -> PlanPreviousDocument:
        return {
            "version": self.version,
            "thumbprint": self.thumbprint,
            "tls_certificate_name": self.tls_certificate_name,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanPrevious:
        return cls(data["version"], data["thumbprint"], data["tls_certificate_name"])


@dataclass(frozen=True)
class PlanStep:
    """One step for the runbook. The optional facts are left out of the document when absent."""

    n: int  # 1, 2, ... in the order the runbook runs them
    phase: str  # stage | switch | verify | retire
    action: str  # install-intermediate, import-certificate, enable-smtp, set-send-connector, ...
    server: str | None  # None: not tied to one server (an organisation-wide object)
    object: str | tuple[str, ...]  # what the step acts on; verify-connectors: every changed object
    previous: str | None  # the value expected before the step (a rollback restores it)
    value: str  # the value the step sets or checks
    thumbprint: str | None = None
    subject: str | None = None
    where: str | None = None  # "exchange-online" for the Exchange Online inbound connector
    keep_internal_transport_certificate: bool | None = None
    condition: str | None = None  # retire-certificate: when it may go

    def to_dict(self) -> PlanStepDocument:
        # Built as a plain dict: `previous` and `value` come after the optional facts, as they always have.
        document: dict[str, Any] = {
            "n": self.n,
            "phase": self.phase,
            "action": self.action,
            "server": self.server,
            "object": self.object if isinstance(self.object, str) else list(self.object),
        }
        if self.thumbprint is not None:
            document["thumbprint"] = self.thumbprint
        if self.subject is not None:
            document["subject"] = self.subject
        if self.where is not None:
            document["where"] = self.where
        if self.keep_internal_transport_certificate is not None:
            document["keep_internal_transport_certificate"] = self.keep_internal_transport_certificate
        if self.condition is not None:
            document["condition"] = self.condition
        document["previous"] = self.previous
        document["value"] = self.value
        return cast(PlanStepDocument, document)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanStep:
        target = data["object"]
        return cls(
            n=data["n"],
            phase=data["phase"],
            action=data["action"],
            server=data.get("server"),
            object=target if isinstance(target, str) else tuple(target),
            previous=data.get("previous"),
            value=data["value"],
            thumbprint=data.get("thumbprint"),
            subject=data.get("subject"),
            where=data.get("where"),
            keep_internal_transport_certificate=data.get("keep_internal_transport_certificate"),
            condition=data.get("condition"),
        )


@dataclass(frozen=True)
class Plan:
    """A `certsync.plan/1` plan: what to deploy, where, and the steps, or why it must not run."""

    certificate: PlanCertificate
    previous: PlanPrevious | None  # None: no earlier enabled version is known
    change: str  # first_version, same_certificate, or the TlsCertificateName diff's change
    connector_update_required: bool  # whether the plan switches connectors (the switch phase)
    nothing_to_change: bool  # the version is the certificate already deployed
    assessment_status: str
    blocked: str | None  # why the plan must not run (the assessment); None when it may
    worker_group: str  # the Hybrid Runbook Worker group that runs it
    servers: tuple[str, ...]
    probe: tuple[str, ...]  # host:port endpoints to STARTTLS-probe after the remediation
    summary: str  # one line for people
    steps: list[PlanStep]  # in order; empty when there is nothing to change

    def to_dict(self, *, der: bool = True) -> PlanDocument:
        """The certsync.plan/1 document; without `der`, the intermediates are named by thumbprint and
        subject only (the audit trail's copy: their DER is in the remediation request)."""
        return {
            "schema": PLAN_SCHEMA,
            "certificate": self.certificate.to_dict(der=der),
            "previous": self.previous.to_dict() if self.previous is not None else None,
            "change": self.change,
            "connector_update_required": self.connector_update_required,
            "nothing_to_change": self.nothing_to_change,
            "assessment_status": self.assessment_status,
            "blocked": self.blocked,
            "worker_group": self.worker_group,
            "servers": list(self.servers),
            "probe": list(self.probe),
            "summary": self.summary,
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """A plan from its certsync.plan/1 document; ValueError for another schema."""
        if data.get("schema") != PLAN_SCHEMA:
            raise ValueError(f"plan schema {data.get('schema')!r} is not {PLAN_SCHEMA}")
        previous = data.get("previous")
        return cls(
            certificate=PlanCertificate.from_dict(data["certificate"]),
            previous=PlanPrevious.from_dict(previous) if previous is not None else None,
            change=data["change"],
            connector_update_required=data["connector_update_required"],
            nothing_to_change=data["nothing_to_change"],
            assessment_status=data["assessment_status"],
            blocked=data.get("blocked"),
            worker_group=data["worker_group"],
            servers=tuple(data.get("servers") or ()),
            probe=tuple(data.get("probe") or ()),
            summary=data["summary"],
            steps=[PlanStep.from_dict(s) for s in data.get("steps") or ()],
        )


def build_plan(new: StoredVersion, previous: StoredVersion | None, assessment: Assessment, targets: Targets) -> Plan:
    """The plan for deploying `new` (replacing `previous`, when known) to `targets`."""
    leaf = new.bundle.leaf
    new_name = assessment.tls_certificate_name
    old_name = str(TlsCertificateName.from_certificate(previous.bundle.leaf)) if previous else None
    diff = diff_certificates(previous.bundle.leaf, leaf) if previous else None
    same_certificate = previous is not None and previous.thumbprint == leaf.thumbprint
    if same_certificate:
        change = "same_certificate"
    elif diff is None:
        change = "first_version"
    else:
        change = diff.change
    switch = not same_certificate and (diff is None or diff.connector_update_required)

    intermediates = [] if same_certificate else list(assessment.intermediates_to_install)
    already_there = {c.thumbprint for c in (*previous.bundle.chain, *previous.bundle.extras)} if previous else set()
    steps: list[PlanStep] = []

    def step(phase: str, action: str, **fields: Any) -> None:
        steps.append(PlanStep(n=len(steps) + 1, phase=phase, action=action, **fields))

    if not same_certificate:
        for server in targets.servers:
            for cert in intermediates:
                step(
                    "stage",
                    "install-intermediate",
                    server=server,
                    object=INTERMEDIATE_STORE,
                    thumbprint=cert.thumbprint,
                    subject=str(cert.subject),
                    previous="present" if cert.thumbprint in already_there else "absent",
                    value="present",
                )
            step(
                "stage",
                "import-certificate",
                server=server,
                object="Cert:\\LocalMachine\\My",
                thumbprint=leaf.thumbprint,
                previous="absent",
                value="present",
            )
            step(
                "stage",
                "enable-smtp",
                server=server,
                object=leaf.thumbprint,
                thumbprint=leaf.thumbprint,
                keep_internal_transport_certificate=True,
                previous="not enabled",
                value="SMTP",
            )
            step(
                "stage",
                "check-status",
                server=server,
                object=leaf.thumbprint,
                thumbprint=leaf.thumbprint,
                previous=None,
                value="Valid",
            )

    changed_objects: list[str] = []
    if switch:
        for connector in targets.send_connectors:
            step("switch", "set-send-connector", server=None, object=connector, previous=old_name, value=new_name)
            changed_objects.append(connector)
        for connector in targets.receive_connectors:
            server = connector.split("\\", 1)[0]
            step("switch", "set-receive-connector", server=server, object=connector, previous=old_name, value=new_name)
            changed_objects.append(connector)
        if targets.hybrid_configuration:
            step(
                "switch",
                "set-hybrid-configuration",
                server=None,
                object="HybridConfiguration",
                previous=old_name,
                value=new_name,
            )
            changed_objects.append("HybridConfiguration")
    old_domain = _domain(previous) if previous else None
    new_domain = _domain(new)
    if targets.exo_inbound_connector and not same_certificate and old_domain != new_domain and new_domain:
        step(
            "switch",
            "set-exo-inbound-connector",
            server=None,
            object=targets.exo_inbound_connector,
            where="exchange-online",
            previous=old_domain,
            value=new_domain,
        )
        changed_objects.append(targets.exo_inbound_connector)

    if not same_certificate:
        for server in targets.servers:
            step(
                "verify",
                "verify-certificate",
                server=server,
                object=leaf.thumbprint,
                thumbprint=leaf.thumbprint,
                previous=None,
                value="Valid, SMTP",
            )
        if changed_objects:
            step(
                "verify",
                "verify-connectors",
                server=None,
                object=tuple(changed_objects),
                previous=old_name,
                value=new_name,
            )
        if previous is not None:
            for server in targets.servers:
                step(
                    "retire",
                    "retire-certificate",
                    server=server,
                    object=previous.thumbprint,
                    thumbprint=previous.thumbprint,
                    condition="no connector references it, and it is not the internal transport certificate",
                    previous="present",
                    value="removed",
                )

    blocked = None
    if assessment.status != VALID and assessment.status not in targets.allow_status:
        errors = [f.message for f in assessment.findings if f.severity == "error"]
        blocked = f"the assessment is {assessment.status}" + (f": {errors[0]}" if errors else "")
    nothing = same_certificate
    return Plan(
        certificate=PlanCertificate(
            vault=new.vault,
            name=new.name,
            version=new.version,
            secret_id=new.secret_id,
            thumbprint=leaf.thumbprint,
            tls_certificate_name=new_name,
            not_after=format_time(leaf.not_after, timespec="seconds"),
            intermediates=tuple(
                PlanIntermediate(c.thumbprint, str(c.subject), base64.b64encode(c.der).decode()) for c in intermediates
            ),
        ),
        previous=None
        if previous is None or old_name is None
        else PlanPrevious(previous.version, previous.thumbprint, old_name),
        change=change,
        connector_update_required=switch,
        nothing_to_change=nothing,
        assessment_status=assessment.status,
        blocked=blocked,
        worker_group=targets.worker_group,
        servers=tuple(targets.servers),
        probe=tuple(targets.probe),
        summary=_summary(change, switch, nothing, changed_objects, targets, blocked),
        steps=steps,
    )


def _domain(version: StoredVersion) -> str | None:
    """The DNS name Exchange Online's TlsSenderCertificateName matches: the first CN, else the first SAN."""
    leaf = version.bundle.leaf
    cn = leaf.subject.first("2.5.4.3")
    return (cn or (leaf.dns_names[0] if leaf.dns_names else "")).lower() or None


def _summary(
    change: str, switch: bool, nothing: bool, changed: list[str], targets: Targets, blocked: str | None
) -> str:
    if nothing:
        return "Nothing to change: this version is the certificate already deployed."
    servers = ", ".join(targets.servers)
    if switch:
        what = f"import on {servers}, then set TlsCertificateName on {len(changed)} object(s)"
    else:
        what = f"import on {servers}; the TlsCertificateName is unchanged, so no connector changes"
    text = f"{change.replace('_', ' ')}: {what}."
    return f"BLOCKED ({blocked}). Would {text}" if blocked else text[0].upper() + text[1:]
