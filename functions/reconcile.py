"""Timer: the daily reconciliation (`shared.reconciliation.reconcile`), on the schedule in the
RECONCILE_SCHEDULE setting.

A certificate that cannot be checked is a finding of the run, not a failed invocation: the function
completes and logs one summary line. Only a configuration error (a setting missing or wrong) raises,
so the host records the invocation as failed. `clock` (`shared.times.utc_now`) gives the run's time;
tests replace it. The reconciler and the Azure SDKs are imported on first use, not at import.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.times import utc_now

bp = func.Blueprint()
log = logging.getLogger("certsync")
clock = utc_now  # where the run's time comes from; tests replace it


@bp.function_name("reconcile_daily")
@bp.timer_trigger(schedule="%RECONCILE_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def reconcile_daily(timer: func.TimerRequest) -> None:
    from shared.wiring import azure_reconciler

    if timer.past_due:
        log.warning("reconciliation is running late (the timer was past due)")
    report = azure_reconciler().run(clock())
    log.log(
        logging.WARNING if report.failures else logging.INFO,
        "%s",
        report.summary(),
        extra={
            "certsync.run_id": report.run_id,
            "certsync.findings": len(report.findings),
            "certsync.failures": len(report.failures),
        },
    )
