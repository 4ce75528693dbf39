"""The Exchange organisation as certsync models it: the discovered inventory (`certsync.inventory/1`), the
rule by which a TlsCertificateName selects a certificate, and the mail flow that follows from both.

Pure values: imports only shared.x509, shared.validation, errors and times. The pipeline (the planner),
the remediation and reconciliation layers, notify and the CLI build on it.
"""
