"""The X.509 core: DER, X.500 names as Windows prints them, TlsCertificateName, certificates and PKCS#12
input. Imports nothing else of certsync's but `shared.errors` and `shared.times`."""
