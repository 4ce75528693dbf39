"""The remediation plan: what the runbook must do on premises, in a safe order, as plain data.

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
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from shared.pipeline.sources import StoredVersion
from shared.pipeline.targets import Targets
from shared.times import format_time
from shared.validation.assessment import VALID, Assessment
from shared.x509.tls_certificate_name import TlsCertificateName, diff_certificates

PLAN_SCHEMA = "certsync.plan/1"
INTERMEDIATE_STORE = "Cert:\\LocalMachine\\CA"


@dataclass(frozen=True)
class Plan:
    body: dict

    @property
    def nothing_to_change(self) -> bool:
        return self.body["nothing_to_change"]

    @property
    def blocked(self) -> bool:
        return self.body["blocked"] is not None

    @property
    def steps(self) -> list[dict]:
        return self.body["steps"]

    @property
    def summary(self) -> str:
        return self.body["summary"]

    def to_dict(self) -> dict:
        return self.body


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
    steps: list[dict] = []

    def step(phase: str, action: str, **fields: object) -> None:
        steps.append({"n": len(steps) + 1, "phase": phase, "action": action, **fields})

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
            step("verify", "verify-connectors", server=None, object=changed_objects, previous=old_name, value=new_name)
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
    body = {
        "schema": PLAN_SCHEMA,
        "certificate": {
            "vault": new.vault,
            "name": new.name,
            "version": new.version,
            "secret_id": new.secret_id,
            "thumbprint": leaf.thumbprint,
            "tls_certificate_name": new_name,
            "not_after": format_time(leaf.not_after, timespec="seconds"),
            "intermediates": [
                {"thumbprint": c.thumbprint, "subject": str(c.subject), "der_base64": base64.b64encode(c.der).decode()}
                for c in intermediates
            ],
        },
        "previous": None
        if previous is None
        else {"version": previous.version, "thumbprint": previous.thumbprint, "tls_certificate_name": old_name},
        "change": change,
        "connector_update_required": switch,
        "nothing_to_change": nothing,
        "assessment_status": assessment.status,
        "blocked": blocked,
        "worker_group": targets.worker_group,
        "servers": list(targets.servers),
        "probe": list(targets.probe),
        "summary": _summary(change, switch, nothing, changed_objects, targets, blocked),
        "steps": steps,
    }
    return Plan(body)


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
