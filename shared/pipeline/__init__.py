"""The event pipeline: a Key Vault event in, an audited outcome (a queued job, a block) out, through
sources, targets, the assessment and the plan. Takes ports (protocols); never imports an adapter."""
