"""The storm suite (issue 17): a small storm in `make test`; bench/storm.py blows the full one (1,000
deliveries for 200 versions). See tests/storm.py for what runs and what is counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.notify.signing import new_secret
from tests.azurite import Azurite, running
from tests.receivers import WebhookReceiver
from tests.storm import Storm, StormPlan


@pytest.fixture
def persistent_azurite() -> Iterator[Azurite]:
    """An Azurite of this test's own, with its data on disk, so it can be restarted mid-run."""
    yield from running(Azurite(persistent=True))


@pytest.fixture
def storm(persistent_azurite, keyvault, arm, http_server, tmp_path: Path) -> Iterator[Storm]:
    secret = new_secret()
    with WebhookReceiver([secret]) as receiver:
        yield Storm(
            StormPlan(restart_pause=1.0),
            azurite=persistent_azurite,
            keyvault=keyvault,
            arm=arm,
            http_server=http_server,
            receiver=receiver,
            secret=secret,
            directory=tmp_path,
        )


def test_a_small_storm_loses_nothing_doubles_nothing_and_notifies_each_outcome_once(storm: Storm):
    report = storm.run()
    print(report.line())
    assert report.deliveries == 60 and report.restarted
    assert report.keyvault_faults["5xx"] + report.keyvault_faults["429"] > 0 and report.webhook_faults > 0
    assert report.attempts > report.deliveries  # faults made Event Grid deliver again
    assert report.lost == 0 and report.unaudited == 0
    assert report.missing_jobs == 0 and report.expired_jobs == 0 and report.duplicate_jobs == 0
    assert report.results == storm.plan.versions - storm.plan.expired and report.duplicate_results == 0
    assert report.max_notices_per_outcome == 1 and report.webhook_ids_per_outcome == 1
