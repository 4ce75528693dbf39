"""Remediation on premises: start the Automation job for a plan, track it, take its signed result, prove the
change. Takes ports; never imports an adapter."""
