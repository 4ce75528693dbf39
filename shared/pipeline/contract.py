"""The runbook's contract: what `infra/runbooks/Invoke-CertsyncRemediation.ps1` accepts and what it writes back.

The planner makes every decision; the runbook executes plan steps. These names are shared by the planner, the
pre-queue check, the journal decisions and the runbook's contract tests (which read the runbook's source and
compare it with this module), so that a plan certsync queues is a plan the runbook can run.
"""

from __future__ import annotations

PLAN_SCHEMA = "certsync.plan/2"
JOURNAL_SCHEMA = "certsync.journal/1"

# Job parameters, as the ARM job request names them. The plan travels as base64 of its UTF-8 JSON text:
# Azure Automation decodes every parameter value that looks like JSON, so JSON text cannot reach a
# [string] parameter intact.
JOB_PARAMETERS = ("PlanBase64", "CorrelationId", "JobId", "CallbackUrl")

# One runbook handler per action. The first ten are `exchange-inventory.md` §3; the rest are the
# executor's own: rollback of an intermediate it staged, and the proof of mail flow.
PLAN_ACTIONS = (
    "install-intermediate",
    "import-certificate",
    "enable-services",
    "check-name",
    "set-send-connector",
    "set-receive-connector",
    "set-hybrid-configuration",
    "set-exo-inbound-connector",
    "check-status",
    "remove-certificate",
)
EXECUTOR_ACTIONS = (
    "remove-intermediate",
    "restart-transport",
    "probe-receive-connector",
    "test-outbound",
)
ACTIONS = PLAN_ACTIONS + EXECUTOR_ACTIONS

# A journal entry's `event` and, for "outcome" entries, its `outcome`.
JOURNAL_EVENTS = ("intent", "outcome")
OUTCOMES = ("done", "already", "conflict", "failed", "skipped", "rolled-back", "would-do")

# What the runbook imports: a PKCS#12 (PFX) secret whose key is exportable, Valid in Exchange.
ACCEPTED_CONTENT_TYPES = ("application/x-pkcs12",)
REQUIRED_STATUS = "Valid"
