"""`Remediation`: the three entry points of `functions/remediation.py` on one object that holds the ports.

- `start(text)`: a `certsync.job/1` message starts its Automation job (`shared.remediation.start`);
- `track(text)`: a `certsync.track/1` message polls the job to its end and takes its result
  (`shared.remediation.track`, then the probe of `shared.remediation.proof`);
- `accept_result(job_id, headers, body)`: the runbook's signed POST of the same result
  (`shared.remediation.callback`).

Failures of Azure Automation are handled there rather than by the Functions host: a transient one (5xx, 429,
no connection) re-sends the message with a backoff delay and an attempt count, then moves it to the poison
queue; a permanent one (4xx) is audited and notified with a hint and not retried. Each entry point then
returns normally, so the host deletes the message it delivered. Only a failure to write to Storage (or a
bug) raises, and then the host's own retries and poison queue apply; starting is idempotent, so a retry
by the host is safe.

Job parameters, queue messages, audit rows and log records carry identifiers and public certificates only:
never a function key, a webhook secret or key material (`shared.remediation.messages.check_no_secrets`).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.remediation.callback import CallbackResponse, accept_result
from shared.remediation.context import RemediationContext
from shared.remediation.start import StartOutcome, start_job
from shared.remediation.track import TrackOutcome, track_job


class Remediation(RemediationContext):
    """Starts, tracks and receives the results of remediation jobs (see the module docstring)."""

    def start(self, message_text: str) -> StartOutcome:
        """Start the Automation job of one `certsync.job/1` message (or find the one it started before)."""
        return start_job(self, message_text)

    def track(self, message_text: str) -> TrackOutcome:
        """Poll the job of one `certsync.track/1` message; report it when it has ended."""
        return track_job(self, message_text)

    def accept_result(self, job_id: str, headers: Mapping[str, str], body: bytes) -> CallbackResponse:
        """The runbook's POSTed result: checked (signature, schema, job) and audited once."""
        return accept_result(self, job_id, headers, body)
