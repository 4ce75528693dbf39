"""Proof after the change: once a job succeeded, STARTTLS-probe the plan's endpoints and say, per server,
whether it serves the new certificate with its chain, Valid.

The probe (`shared.validation.probe`) runs guarded: endpoints come from the targets and Key Vault tags, so
only global addresses, or HOST:PORT entries of CERTSYNC_ALLOW_HOSTS, are connected to. The findings are
audited as `probe`, and notified when an endpoint is not right.
"""

from __future__ import annotations

from typing import Any

from shared.errors import CertsyncError
from shared.remediation.context import RemediationContext, Subject
from shared.remediation.messages import ServerOutcome, TrackMessage
from shared.validation.probe import ProbeResult, probe


def prove(context: RemediationContext, track: TrackMessage, subject: Subject) -> list[dict[str, Any]]:
    """STARTTLS-probe each endpoint of the plan; audited, and notified when one is not right. Returns each
    endpoint's result (`ProbeResult.to_dict()`, or the endpoint and its error); [] when the plan has none."""
    if not track.probe:
        return []
    settings = context.settings
    results: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    servers: list[ServerOutcome] = []
    for endpoint in track.probe:
        try:
            outcome = probe(
                endpoint,
                expected_thumbprint=track.thumbprint,
                trust=settings.trust,
                timeout=settings.probe_timeout,
                guarded=True,
                allow_hosts=settings.allow_hosts,
            )
        except CertsyncError as exc:  # a malformed endpoint: reported like a failed probe
            results.append({"endpoint": endpoint, "ok": False, "error": str(exc)})
            bad.append(results[-1])
            servers.append({"server": endpoint, "outcome": str(exc)})
            continue
        results.append(outcome.to_dict())
        servers.append({"server": outcome.endpoint, "outcome": served(outcome, track.thumbprint)})
        if not outcome.passed:  # the new certificate, its intermediates, and Valid as served
            bad.append(results[-1])
    summary = (
        f"probe after job {track.job_id}: every endpoint serves certificate {track.thumbprint} with its chain"
        if not bad
        else f"probe after job {track.job_id}: {len(bad)} of {len(results)} endpoint(s) do not serve certificate"
        f" {track.thumbprint} with its intermediates, Valid ({', '.join(str(r.get('endpoint')) for r in bad)})"
    )
    context.record(subject, "probe", summary, {"job_id": track.job_id, "endpoints": results})
    if bad:
        details = {"job_id": track.job_id, "thumbprint": track.thumbprint, "servers": servers, "endpoints": results}
        context.notify(subject, "probe", summary, details)
    return results


def served(result: ProbeResult, thumbprint: str) -> str:
    """One phrase per endpoint for people: what is wrong with what it serves, or that it is right."""
    if not result.ok:
        return str(result.error or "the probe failed")
    if result.is_expected is False:
        leaf = result.leaf.thumbprint if result.leaf else "nothing"
        return f"serves {leaf}, not the new certificate {thumbprint}"
    if result.intermediates_sent is False:
        return "serves the new certificate without its intermediates (install them in Cert:\\LocalMachine\\CA)"
    if result.assessment is not None and result.assessment.status != "Valid":
        return f"serves the new certificate with its chain, but it assesses {result.assessment.status}"
    return "serves the new certificate with its chain"
