"""Chains with the encoding quirks real CAs ship and Windows accepts (issue 18 item 8).

`QuirkyPki` builds root -> intermediate -> leaf as hand-made DER (`tests.pki`), each certificate signed for
real, with any of these quirks on any member:

- `generalized`: validity dates before 2050 as GeneralizedTime (the Certum hierarchy does this);
- `serial`: any serial, e.g. a negative one;
- `explicit_false`: `critical FALSE` encoded in every non-critical extension (DER forbids the default);
- `cn`: the subject CN as raw PrintableString bytes, e.g. `*.contoso.com`;
- `bc_critical=False`: a CA's basicConstraints not marked critical;
- `version=1`: a v1 certificate (no version, no extensions);
- `policies_critical`: certificatePolicies marked critical;
- `key`: a key on another curve (brainpool).

    pki = QuirkyPki()
    root, inter, leaf = pki.chain(root={"generalized": True})
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from shared.x509 import der
from shared.x509.certificate import Certificate
from tests import pki as P

UTC = dt.timezone.utc
NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=UTC)
NOT_AFTER = dt.datetime(2035, 1, 1, tzinfo=UTC)
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
ANY_POLICY = "2.5.29.32.0"
KEY_USAGE = "2.5.29.15"
EXT_KEY_USAGE = "2.5.29.37"
CERT_POLICIES = "2.5.29.32"
NAME_CONSTRAINTS = "2.5.29.30"


def generalized_time(when: dt.datetime) -> bytes:
    return P.tlv(der.GENERALIZED_TIME, when.astimezone(UTC).strftime("%Y%m%d%H%M%SZ").encode())


def time_of(when: dt.datetime, generalized: bool) -> bytes:
    return generalized_time(when) if generalized else P.time(when)


def ext(ext_oid: str, critical: bool | None, value: bytes) -> bytes:
    """An Extension; `critical=None` encodes `critical FALSE` explicitly (BER, not DER)."""
    flag = P.boolean(True) if critical else (P.boolean(False) if critical is None else b"")
    return P.seq(P.oid(ext_oid), flag, P.octet_string(value))


def basic_constraints_value(ca: bool, path_length: int | None = None) -> bytes:
    return P.seq((P.boolean(True) if ca else b"") + (P.integer(path_length) if path_length is not None else b""))


def key_usage_value(ca: bool) -> bytes:
    return P.tlv(der.BIT_STRING, b"\x01\x06" if ca else b"\x05\xa0")  # keyCertSign|cRLSign / dS|kE


def eku_value(*oids: str) -> bytes:
    return P.seq(*(P.oid(o) for o in oids))


def policies_value(*oids: str) -> bytes:
    return P.seq(*(P.seq(P.oid(o)) for o in oids))


def name_constraints_value(permitted: list[bytes] = (), excluded: list[bytes] = ()) -> bytes:  # type: ignore[assignment]
    """NameConstraints from GeneralName elements (e.g. `dn_subtree(name_der)`, `uri_subtree(".contoso.com")`)."""
    parts = b""
    if permitted:
        parts += P.tlv(0xA0, b"".join(P.seq(g) for g in permitted))
    if excluded:
        parts += P.tlv(0xA1, b"".join(P.seq(g) for g in excluded))
    return P.seq(parts)


def dn_subtree(name_der: bytes) -> bytes:
    return P.tlv(0xA4, name_der)


def uri_subtree(host: str) -> bytes:
    return P.tlv(0x86, host.encode())


def dns_subtree(host: str) -> bytes:
    return P.tlv(0x82, host.encode())


class QuirkyPki:
    """Keys and names of a three-level hierarchy; `chain()` issues it with quirks."""

    def __init__(self, root_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.root_key = root_key or P.new_key()
        self.inter_key = P.new_key()
        self.leaf_key = P.new_key()
        self.root_name = P.name(P.rdn(P.printable(P.C, "PL")), P.rdn(P.utf8(P.CN, "Quirk Root CA")))
        self.inter_name = P.name(P.rdn(P.printable(P.C, "PL")), P.rdn(P.utf8(P.CN, "Quirk Issuing CA")))
        self.leaf_name = P.name(P.rdn(P.utf8(P.CN, "mail.contoso.com")))
        self.root_key_id = P.key_id(self.root_key)

    def chain(
        self,
        root: dict[str, Any] | None = None,
        inter: dict[str, Any] | None = None,
        leaf: dict[str, Any] | None = None,
    ) -> tuple[bytes, bytes, bytes]:
        root_der = self.issue("root", **(root or {}))
        inter_der = self.issue("inter", **(inter or {}))
        leaf_der = self.issue("leaf", **(leaf or {}))
        return root_der, inter_der, leaf_der

    def issue(
        self,
        role: str,
        *,
        generalized: bool = False,
        serial: int = 0x1001,
        explicit_false: bool = False,
        cn: bytes | None = None,
        bc_critical: bool = True,
        version: int = 3,
        policies_critical: bool | None = None,
        name_constraints: bytes | None = None,
        eku: tuple[str, ...] | None = None,
        path_length: int | None = None,
        key: Any = None,
        signer: Any = None,
        not_before: dt.datetime = NOT_BEFORE,
        not_after: dt.datetime = NOT_AFTER,
        hash_algorithm: hashes.HashAlgorithm | None = None,
        extra: tuple[bytes, ...] = (),
        san_extra: bytes = b"",
    ) -> bytes:
        """One member of the hierarchy, DER. `key` replaces the certified key (public or private)."""
        own_key = {"root": self.root_key, "inter": self.inter_key, "leaf": self.leaf_key}[role]
        issuer_key = {"root": self.root_key, "inter": self.root_key, "leaf": self.inter_key}[role]
        subject = {"root": self.root_name, "inter": self.inter_name, "leaf": self.leaf_name}[role]
        issuer = {"root": self.root_name, "inter": self.root_name, "leaf": self.inter_name}[role]
        if cn is not None:
            subject = P.name(P.rdn(P.ava(P.CN, P.PRINTABLE, cn)))
        certified = key if key is not None else own_key
        signing = signer or issuer_key
        quiet = None if explicit_false else False
        exts: list[bytes] = []
        ca = role != "leaf"
        if version == 3:
            exts.append(
                ext(P.BASIC_CONSTRAINTS, True if bc_critical else quiet, basic_constraints_value(ca, path_length))
            )
            exts.append(ext(KEY_USAGE, True, key_usage_value(ca)))
            exts.append(ext(P.SUBJECT_KEY_ID, quiet, P.octet_string(P.key_id(certified))))
            if role != "root":
                issuer_id = self.root_key_id if role == "inter" else P.key_id(issuer_key)
                exts.append(ext(P.AUTHORITY_KEY_ID, quiet, P.seq(P.tlv(0x80, issuer_id))))
            if role == "leaf":
                exts.append(ext(P.SUBJECT_ALT_NAME, quiet, P.seq(P.tlv(0x82, b"mail.contoso.com") + san_extra)))
                exts.append(ext(EXT_KEY_USAGE, quiet, eku_value(*(eku or (SERVER_AUTH, CLIENT_AUTH)))))
            elif eku is not None:
                exts.append(ext(EXT_KEY_USAGE, quiet, eku_value(*eku)))
            if policies_critical is not None:
                exts.append(ext(CERT_POLICIES, policies_critical or quiet, policies_value(ANY_POLICY)))
            if name_constraints is not None:
                exts.append(ext(NAME_CONSTRAINTS, True, name_constraints))
            exts.extend(extra)
        algorithm, sign = _algorithm(signing, hash_algorithm)
        tbs = P.seq(
            P.explicit(0, P.integer(version - 1)) if version > 1 else b"",
            P.integer(serial),
            algorithm,
            issuer,
            P.seq(time_of(not_before, generalized), time_of(not_after, generalized)),
            subject,
            P.spki(certified.public_key() if hasattr(certified, "private_bytes") else certified),
            P.explicit(3, P.seq(*exts)) if exts else b"",
        )
        return P.seq(tbs, algorithm, P.tlv(der.BIT_STRING, b"\x00" + sign(tbs)))


def _algorithm(key: Any, hash_algorithm: hashes.HashAlgorithm | None) -> tuple[bytes, Any]:
    chosen = hash_algorithm or hashes.SHA256()
    oids = {"sha1": "1.2.840.10045.4.1", "sha256": P.ECDSA_WITH_SHA256, "sha384": "1.2.840.10045.4.3.3"}
    return P.seq(P.oid(oids[chosen.name])), lambda tbs: key.sign(tbs, ec.ECDSA(chosen))


def under_real_root(root_der: bytes) -> tuple[bytes, QuirkyPki]:
    """A real root's certificate with its key swapped for a test key (and re-signed), every other byte of its
    encoding kept, and a `QuirkyPki` whose intermediate it issues: a chain "under" a root we have no key for."""
    pki = QuirkyPki()
    outer = der.read_tlv(root_der, 0)
    tbs = der.children(root_der, outer)[0]
    fields = der.children(root_der, tbs)
    offset = 1 if fields[0].tag == 0xA0 else 0
    parts = [der.whole(root_der, f) for f in fields]
    algorithm = P.seq(P.oid(P.ECDSA_WITH_SHA256))
    parts[offset + 1] = algorithm
    parts[offset + 5] = P.spki(pki.root_key)
    new_tbs = P.seq(*parts)
    signature = pki.root_key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    rekeyed = P.seq(new_tbs, algorithm, P.tlv(der.BIT_STRING, b"\x00" + signature))
    pki.root_name = der.whole(root_der, fields[offset + 4])
    pki.inter_name = P.name(P.rdn(P.utf8(P.CN, "Issuing CA under a real root")))
    ski = Certificate.from_der(root_der).subject_key_id
    pki.root_key_id = ski if ski is not None else P.key_id(pki.root_key)
    return rekeyed, pki
