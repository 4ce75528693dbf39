"""Certificates that made `certsync check` crash (issue 17), built by hand and signed for real.

Each one is a leaf issued by `ROOT` (a P-256 root, `root_pem()` is its trust file) with one thing wrong
that `cryptography` trips over: an unknown key algorithm, a key that does not deserialise, explicit EC
curve parameters, a name the verifier cannot parse, a version it does not know, a validity holding one
time, or what it only warns about (a negative serial, UTF-8 in a VisibleString, an empty attribute).
`HOSTILE` maps a short name to the DER; `mutants()` makes structurally valid variants of a real
certificate for the fuzz tests.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Callable, Iterator

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from shared.x509 import der
from tests.pki import (
    CN,
    ECDSA_WITH_SHA256,
    UTF8,
    VISIBLE,
    authority_key_id,
    ava,
    basic_constraints,
    explicit,
    extension,
    integer,
    key_id,
    name,
    new_key,
    octet_string,
    oid,
    pem,
    rdn,
    san,
    seq,
    spki,
    subject_key_id,
    time,
    tlv,
    utf8,
)

NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
NOT_AFTER = dt.datetime(2035, 1, 1, tzinfo=dt.timezone.utc)
AT = "2026-01-01T00:00:00Z"  # inside every validity here
ROOT_NAME = name(rdn(utf8(CN, "Hostile Test Root")))
LEAF_NAME = name(rdn(utf8(CN, "mail.contoso.com")))
SERVER_AUTH_EKU = ("2.5.29.37", False, seq(oid("1.3.6.1.5.5.7.3.1"), oid("1.3.6.1.5.5.7.3.2")))


@functools.cache
def root_key() -> ec.EllipticCurvePrivateKey:
    return new_key()


@functools.cache
def leaf_key() -> ec.EllipticCurvePrivateKey:
    return new_key()


def signed(tbs: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """The certificate around `tbs`, signed with ECDSA/SHA-256 by `key` (the root's by default)."""
    signature = (key or root_key()).sign(tbs, ec.ECDSA(hashes.SHA256()))
    return seq(tbs, seq(oid(ECDSA_WITH_SHA256)), tlv(der.BIT_STRING, b"\x00" + signature))


def tbs(
    *,
    version: bytes = explicit(0, integer(2)),
    serial: bytes = integer(0x1234),
    issuer: bytes = ROOT_NAME,
    validity: bytes | None = None,
    subject: bytes = LEAF_NAME,
    key_info: bytes | None = None,
    extensions: tuple[bytes, ...] | None = None,
) -> bytes:
    """A leaf's TBSCertificate with any field replaced by raw DER."""
    exts = (
        extensions
        if extensions is not None
        else (
            extension(san("mail.contoso.com")),
            extension(SERVER_AUTH_EKU),
            extension(authority_key_id(key_id(root_key()))),
        )
    )
    return seq(
        version,
        serial,
        seq(oid(ECDSA_WITH_SHA256)),
        issuer,
        validity if validity is not None else seq(time(NOT_BEFORE), time(NOT_AFTER)),
        subject,
        key_info if key_info is not None else spki(leaf_key()),
        explicit(3, seq(*exts)) if exts else b"",
    )


@functools.cache
def root_der() -> bytes:
    body = tbs(
        serial=integer(1),
        subject=ROOT_NAME,
        key_info=spki(root_key()),
        extensions=(
            extension(basic_constraints(True)),
            extension(subject_key_id(key_id(root_key()))),
            extension(("2.5.29.15", True, tlv(der.BIT_STRING, b"\x01\x06"))),  # keyCertSign, cRLSign
        ),
    )
    return signed(body)


def root_pem() -> str:
    return pem(root_der())


def _bits(body: bytes) -> bytes:
    return tlv(der.BIT_STRING, b"\x00" + body)


def _explicit_p256_spki() -> bytes:
    """The leaf's P-256 key with the curve spelled out (specifiedCurve) instead of named."""
    p = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
    a = p - 3
    b = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    gx = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
    gy = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
    point = b"\x04" + gx.to_bytes(32, "big") + gy.to_bytes(32, "big")
    params = seq(
        integer(1),
        seq(oid("1.2.840.10045.1.1"), integer(p)),
        seq(octet_string(a.to_bytes(32, "big")), octet_string(b.to_bytes(32, "big"))),
        octet_string(point),
        integer(n),
        integer(1),
    )
    public = der.children(spki(leaf_key()), der.read_tlv(spki(leaf_key()), 0))[1]
    raw = spki(leaf_key())[public.start : public.end]
    return seq(seq(oid("1.2.840.10045.2.1"), params), raw)


def _self_issued(key_info: bytes) -> bytes:
    """A self-issued leaf (issuer = subject) whose key is `key_info`: `_signed_by` checks it against itself."""
    return signed(tbs(issuer=LEAF_NAME, key_info=key_info, extensions=(extension(san("mail.contoso.com")),)))


def hostile() -> dict[str, bytes]:
    """Every certificate of issue 17's list, by a short name."""
    gost_key = seq(
        seq(oid("1.2.643.7.1.1.1.1"), seq(oid("1.2.643.7.1.2.1.1.1"), oid("1.2.643.7.1.1.2.2"))),
        _bits(octet_string(bytes(range(64)))),
    )
    bad_point = seq(seq(oid("1.2.840.10045.2.1"), oid("1.2.840.10045.3.1.7")), _bits(b"\x04" + b"\x01" * 64))
    return {
        "gost-key": signed(tbs(key_info=gost_key)),
        "undecodable-key": signed(tbs(key_info=bad_point)),
        "explicit-curve-self-issued": _self_issued(_explicit_p256_spki()),
        "explicit-curve-leaf": signed(tbs(key_info=_explicit_p256_spki())),
        "invalid-utf8-cn": signed(tbs(subject=name(rdn(ava(CN, UTF8, b"mail\xff\xfe.contoso.com"))))),
        "long-form-tag-in-name": signed(tbs(subject=name(rdn(seq(oid(CN), b"\x1f\x0c\x04mail"))))),
        "unexpected-tag-in-subject": signed(tbs(subject=seq(integer(7), rdn(utf8(CN, "mail.contoso.com"))))),
        "duplicate-attribute": signed(
            tbs(subject=name(rdn(utf8(CN, "mail.contoso.com")), rdn(utf8(CN, "mail.contoso.com"))))
        ),
        "duplicate-attribute-in-one-rdn": signed(
            tbs(subject=name(rdn(utf8(CN, "mail.contoso.com"), utf8(CN, "mail.contoso.com"))))
        ),
        "empty-rdn": signed(tbs(subject=name(rdn(), rdn(utf8(CN, "mail.contoso.com"))))),
        "unknown-version": signed(tbs(version=explicit(0, integer(7)))),
        "one-time-validity": signed(tbs(validity=seq(time(NOT_BEFORE)))),
        "three-time-validity": signed(tbs(validity=seq(time(NOT_BEFORE), time(NOT_AFTER), time(NOT_AFTER)))),
        "negative-serial": signed(tbs(serial=integer(-4660))),
        "utf8-in-visiblestring": signed(tbs(subject=name(rdn(ava(CN, VISIBLE, "mäil.contoso.com".encode()))))),
        "empty-attribute": signed(tbs(extensions=(extension(_SAN_DIRNAME), extension(SERVER_AUTH_EKU)))),
        "utf8-in-policy-visiblestring": signed(tbs(extensions=(extension(_POLICY_UTF8), extension(SERVER_AUTH_EKU)))),
    }


# subjectAltName with a directoryName whose C and CN are empty (cryptography: UserWarning on length)
_SAN_DIRNAME = (
    "2.5.29.17",
    False,
    seq(tlv(0x82, b"mail.contoso.com"), tlv(0xA4, name(rdn(ava("2.5.4.6", 0x13, b"")), rdn(ava(CN, UTF8, b""))))),
)
# certificatePolicies with a user notice whose explicitText is a VisibleString holding UTF-8
_POLICY_UTF8 = (
    "2.5.29.32",
    False,
    seq(seq(oid("2.5.29.32.0"), seq(seq(oid("1.3.6.1.5.5.7.2.2"), seq(tlv(VISIBLE, "Zertifikat für Mail".encode())))))),
)


def refused_root() -> bytes:
    """A root `cryptography` refuses to load (an unknown version), for a --trust file."""
    body = tbs(
        version=explicit(0, integer(9)),
        serial=integer(2),
        subject=ROOT_NAME,
        key_info=spki(root_key()),
        extensions=(extension(basic_constraints(True)),),
    )
    return signed(body)


# -- mutants for the fuzz tests --------------------------------------------------------------------------

_TAGS = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x16, 0x17, 0x18, 0x1A, 0x1E, 0x30, 0x31, 0xA0, 0xA3)
_OIDS = (
    "2.5.4.3",
    "2.5.29.17",
    "2.5.29.19",
    "2.5.29.37",
    "1.2.840.10045.2.1",
    "1.2.840.113549.1.1.1",
    "1.2.643.7.1.1.1.1",
    "1.3.101.112",
    "1.2.840.10045.4.3.2",
    "0.0",
    "2.999.1",
)
_TIMES = (b"250101000000Z", b"2501010000Z", b"20250101000000Z", b"991399999999Z", b"250101000000+0100", b"", b"Z")


def _elements(buf: bytes) -> list[der.Tlv]:
    """Every element of `buf`, depth first (constructed ones are descended into)."""
    found: list[der.Tlv] = []

    def walk(pos: int, end: int, depth: int) -> None:
        while pos < end and depth < 12:
            try:
                item = der.read_tlv(buf, pos, end)
            except Exception:
                return
            found.append(item)
            if item.tag & 0x20 or item.tag in (der.BIT_STRING, der.OCTET_STRING):
                walk(item.content_start + (1 if item.tag == der.BIT_STRING else 0), item.end, depth + 1)
            pos = item.end

    walk(0, len(buf), 0)
    return found


def _replace(buf: bytes, item: der.Tlv, new: bytes) -> bytes:
    """`buf` with `item` replaced by `new`, every enclosing length fixed up (re-encoded from the top)."""
    return _rebuild(buf, 0, len(buf), item, new)


def _rebuild(buf: bytes, pos: int, end: int, target: der.Tlv, new: bytes) -> bytes:
    out = b""
    while pos < end:
        item = der.read_tlv(buf, pos, end)
        if item.start == target.start and item.end == target.end:
            out += new
        elif item.start <= target.start and target.end <= item.end and (item.tag & 0x20 or item.tag == 0x04):
            out += tlv(item.tag, _rebuild(buf, item.content_start, item.end, target, new))
        else:
            out += buf[item.start : item.end]
        pos = item.end
    return out


Mutation = Callable[[bytes, der.Tlv, random.Random], bytes]


def _flip_tag(buf: bytes, item: der.Tlv, rng: random.Random) -> bytes:
    return _replace(buf, item, tlv(rng.choice(_TAGS), buf[item.content_start : item.end]))


def _bad_length(buf: bytes, item: der.Tlv, rng: random.Random) -> bytes:
    body = buf[item.content_start : item.end]
    wrong = tlv(buf[item.start], body)
    cut = rng.choice((1, 2, -1))
    head = bytearray(wrong[: len(wrong) - len(body)])
    head[-1] = (head[-1] + cut) % 256
    return buf[: item.start] + bytes(head) + body + buf[item.end :]


def _time(buf: bytes, item: der.Tlv, rng: random.Random) -> bytes:
    return _replace(buf, item, tlv(rng.choice((der.UTC_TIME, der.GENERALIZED_TIME)), rng.choice(_TIMES)))


def _oid(buf: bytes, item: der.Tlv, rng: random.Random) -> bytes:
    return _replace(buf, item, oid(rng.choice(_OIDS)))


def _drop(buf: bytes, item: der.Tlv, rng: random.Random) -> bytes:
    return _replace(buf, item, b"")


def _duplicate(buf: bytes, item: der.Tlv, rng: random.Random) -> bytes:
    whole = buf[item.start : item.end]
    return _replace(buf, item, whole + whole)


def _bytes(buf: bytes, item: der.Tlv, rng: random.Random) -> bytes:
    body = bytearray(buf[item.content_start : item.end])
    for _ in range(rng.randint(1, 3)):
        if body:
            body[rng.randrange(len(body))] = rng.choice((0x00, 0x80, 0xFF, 0xC3, 0x2A, 0x7F, rng.randrange(256)))
    return _replace(buf, item, tlv(buf[item.start], bytes(body)))


def _integer(buf: bytes, item: der.Tlv, rng: random.Random) -> bytes:
    return _replace(buf, item, integer(rng.choice((-1, 0, 1, 2, 3, 7, -(2**70), 2**160))))


MUTATIONS: tuple[Mutation, ...] = (_flip_tag, _bad_length, _time, _oid, _drop, _duplicate, _bytes, _integer)


def mutant(original: bytes, seed: int, rounds: int = 1) -> bytes:
    """`original` with `rounds` structural mutations picked by `seed`: a tag flipped, a length off by one,
    a time, OID or INTEGER swapped, an element dropped or doubled, a few content bytes changed."""
    rng = random.Random(seed)
    buf = original
    for _ in range(rounds):
        items = _elements(buf)
        if not items:
            break
        item = rng.choice(items)
        mutate = rng.choice(MUTATIONS)
        if mutate is _time:
            times = [i for i in items if i.tag in (der.UTC_TIME, der.GENERALIZED_TIME)]
            item = rng.choice(times) if times else item
        elif mutate is _oid:
            oids = [i for i in items if i.tag == der.OID]
            item = rng.choice(oids) if oids else item
        try:
            buf = mutate(buf, item, rng)
        except Exception:
            continue
    return buf


def mutants(original: bytes, count: int) -> Iterator[bytes]:
    for seed in range(count):
        yield mutant(original, seed, rounds=1 + seed % 3)


INTERMEDIATE_NAME = name(rdn(utf8(CN, "Hostile Test Issuing CA")))


@functools.cache
def intermediate_key() -> ec.EllipticCurvePrivateKey:
    return new_key()


def intermediate_der(subject: bytes = INTERMEDIATE_NAME) -> bytes:
    """An intermediate issued by the root (`subject` may be any raw Name)."""
    body = tbs(
        serial=integer(2),
        subject=subject,
        key_info=spki(intermediate_key()),
        extensions=(
            extension(basic_constraints(True, 0)),
            extension(subject_key_id(key_id(intermediate_key()))),
            extension(authority_key_id(key_id(root_key()))),
        ),
    )
    return signed(body)


def leaf_of_intermediate(issuer: bytes = INTERMEDIATE_NAME) -> bytes:
    """A leaf issued by the intermediate, naming it as `issuer`."""
    exts = (
        extension(san("mail.contoso.com")),
        extension(SERVER_AUTH_EKU),
        extension(authority_key_id(key_id(intermediate_key()))),
    )
    return signed(tbs(issuer=issuer, extensions=exts), intermediate_key())
