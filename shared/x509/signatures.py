"""Signature checks over exact bytes, for the signed structures certsync reads itself (CRLs).

The algorithm's OID is matched against the algorithms certificates and CRLs use; anything
else (RSASSA-PSS with parameters, DSA, GOST) is reported as unsupported rather than guessed at.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from shared.x509 import der

# OID -> (key family, hash)
_ALGORITHMS: dict[str, tuple[str, type[hashes.HashAlgorithm] | None]] = {
    "1.2.840.113549.1.1.5": ("rsa", hashes.SHA1),
    "1.2.840.113549.1.1.11": ("rsa", hashes.SHA256),
    "1.2.840.113549.1.1.12": ("rsa", hashes.SHA384),
    "1.2.840.113549.1.1.13": ("rsa", hashes.SHA512),
    "1.2.840.10045.4.1": ("ec", hashes.SHA1),
    "1.2.840.10045.4.3.2": ("ec", hashes.SHA256),
    "1.2.840.10045.4.3.3": ("ec", hashes.SHA384),
    "1.2.840.10045.4.3.4": ("ec", hashes.SHA512),
    "1.3.101.112": ("ed25519", None),
    "1.3.101.113": ("ed448", None),
}
SHA1_SIGNATURES = frozenset(oid for oid, (_, h) in _ALGORITHMS.items() if h is hashes.SHA1)


def algorithm_oid(algorithm_der: bytes) -> str:
    """The OID of a DER AlgorithmIdentifier."""
    seq = der.expect(algorithm_der, 0, der.SEQUENCE, "AlgorithmIdentifier")
    oid = der.expect(algorithm_der, seq.content_start, der.OID, "algorithm", seq.end)
    return der.decode_oid(der.content(algorithm_der, oid))


def verify_signature(public_key: object, algorithm: str, signature: bytes, data: bytes | memoryview) -> bool:
    """Whether `signature` over `data` verifies with `public_key` under the algorithm whose OID is `algorithm`.

    False for a bad signature, a key of the wrong family for the algorithm, or an unsupported algorithm."""
    family, hash_type = _ALGORITHMS.get(algorithm, (None, None))
    try:
        if family == "rsa" and isinstance(public_key, rsa.RSAPublicKey) and hash_type:
            # cryptography 50's stub types RSA's `data` as bytes, but the binding takes any buffer (as EC's stub
            # says): a memoryview lets a 20 MB CRL's TBS be verified without a copy.
            public_key.verify(signature, data, padding.PKCS1v15(), hash_type())  # type: ignore[arg-type]
        elif family == "ec" and isinstance(public_key, ec.EllipticCurvePublicKey) and hash_type:
            public_key.verify(signature, data, ec.ECDSA(hash_type()))
        elif (family == "ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey)) or (
            family == "ed448" and isinstance(public_key, ed448.Ed448PublicKey)
        ):
            public_key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
