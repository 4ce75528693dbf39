"""The local remediation queue (shared/adapters/local/outbox.py): one `<job id>.json` file per request, written
atomically, a second request with the same id refused, and an unusable directory reported in one line."""

from __future__ import annotations

import json

import pytest

from shared.adapters.local.outbox import OutboxQueue
from shared.errors import CertsyncError
from shared.pipeline.jobs import RemediationRequest


def request(version: str = "0123456789abcdef0123456789abcdef") -> RemediationRequest:
    return RemediationRequest(
        vault="contoso-kv",
        certificate="exch-hybrid-smtp",
        version=version,
        secret_id=f"https://contoso-kv.vault.azure.net/secrets/exch-hybrid-smtp/{version}",
        thumbprint="A" * 40,
        correlation_id="c0ffee",
        plan={"schema": "certsync.plan/1", "steps": []},
    )


def test_a_request_is_written_once_and_a_second_with_the_same_id_is_refused(tmp_path):
    outbox = OutboxQueue(tmp_path / "outbox")
    first = request()
    assert not outbox.queued(first.vault, first.job_id)
    assert outbox.enqueue(first) is True
    assert outbox.queued(first.vault, first.job_id)
    assert json.loads(outbox.path_for(first).read_text())["version"] == first.version
    assert outbox.enqueue(request()) is False  # same vault, name and version: same job id
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [f"{first.job_id}.json"]  # no temporary left


def test_an_outbox_that_cannot_be_created_is_one_line_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CertsyncError) as caught:
        OutboxQueue(blocker / "outbox")
    message = str(caught.value)
    assert message.startswith(f"{blocker / 'outbox'}: cannot create the outbox") and "\n" not in message
