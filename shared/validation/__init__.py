"""Validation: the certificate as Exchange will see it (chain, dates, EKU, key, host names), revocation
(CRL and OCSP), the guarded fetch for URLs named in certificates, and the STARTTLS probe. Built on `x509`."""
