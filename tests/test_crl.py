"""The CRL reader (`shared.validation.crl`) on CRLs that `cryptography` builds and on hand-made DER: what makes
a CRL unusable as evidence (delta, partitioned, indirect, attribute-only, unknown critical extensions, no
CRLNumber or nextUpdate, dates, the distribution point), entries found by serial without being mistaken for
bytes inside another entry, and input that is not a CRL. End to end over HTTP: tests/test_assessment.py."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from shared.validation.crl import Crl, CrlError, parse_crl
from shared.validation.revocation import serial_bytes
from tests.chains import Issued, issue, make_crl
from tests.pki import big_crl_der, explicit, integer, octet_string, oid, seq, time, tlv

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
URL = "http://crl.contoso.com/issuing.crl"


@pytest.fixture(scope="module")
def ca() -> Issued:
    return issue("Contoso CRL Test CA", kind="ec", ca=True)


def build(
    ca: Issued,
    *extensions: tuple[x509.ExtensionType, bool],
    entries: tuple[x509.RevokedCertificate, ...] = (),
    number: int | None = 7,
) -> Crl:
    """A signed CRL from `ca` with CRLNumber `number` and the given (extension, critical) pairs."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - dt.timedelta(hours=1))
        .next_update(NOW + dt.timedelta(days=1))
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    crl = parse_crl(builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER), "test.crl")
    assert crl.verify_signature(ca.cert.public_key())
    return crl


def entry(serial: int, *extensions: tuple[x509.ExtensionType, bool]) -> x509.RevokedCertificate:
    builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - dt.timedelta(days=1))
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    return builder.build()


def idp(**flags: object) -> x509.IssuingDistributionPoint:
    options: dict[str, object] = {
        "full_name": None,
        "relative_name": None,
        "only_contains_user_certs": False,
        "only_contains_ca_certs": False,
        "only_some_reasons": None,
        "indirect_crl": False,
        "only_contains_attribute_certs": False,
    }
    return x509.IssuingDistributionPoint(**(options | flags))


def unusable(crl: Crl, fragment: str, **check: object) -> None:
    """`crl.check(at=NOW, **check)` raises CrlError saying `fragment`."""
    with pytest.raises(CrlError, match=fragment):
        crl.check(at=NOW, **check)


# -- what makes a CRL unusable -------------------------------------------------------------------------


def test_a_plain_crl_is_usable_evidence(ca):
    crl = build(ca)
    crl.check(at=NOW, fetched_from=URL)
    crl.check(at=NOW, for_ca=True)
    assert crl.number == 7 and crl.next_update == NOW + dt.timedelta(days=1)


def test_a_delta_crl_is_unsupported(ca):
    unusable(build(ca, (x509.DeltaCRLIndicator(6), True)), "delta CRL")


def test_a_critical_crl_number_is_refused(ca):
    crl = parse_crl(make_crl(ca, number=3, number_critical=True), "critical.crl")
    unusable(crl, "CRLNumber is marked critical")


def test_an_unknown_critical_extension_is_unsupported_and_a_non_critical_one_is_ignored(ca):
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.311.21.4"), b"\x05\x00")
    build(ca, (unknown, False)).check(at=NOW)
    unusable(build(ca, (unknown, True)), "unknown critical extension 1.3.6.1.4.1.311.21.4")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"only_some_reasons": frozenset({x509.ReasonFlags.key_compromise})}, "partitioned CRL"),
        ({"indirect_crl": True}, "indirect CRL"),
        ({"only_contains_attribute_certs": True}, "only attribute certificates"),
    ],
)
def test_issuing_distribution_points_certsync_cannot_use(ca, flags, fragment):
    unusable(build(ca, (idp(**flags), True)), fragment)


def test_an_idp_for_end_entities_or_for_cas_only_covers_those(ca):
    users = build(ca, (idp(only_contains_user_certs=True), True))
    users.check(at=NOW)
    unusable(users, "only end-entity certificates", for_ca=True)
    cas = build(ca, (idp(only_contains_ca_certs=True), True))
    cas.check(at=NOW, for_ca=True)
    unusable(cas, "only CA certificates")


def test_an_idp_url_must_be_where_the_crl_came_from(ca):
    crl = build(ca, (idp(full_name=[x509.UniformResourceIdentifier(URL)]), True))
    assert crl.idp_urls == (URL,)
    crl.check(at=NOW, fetched_from=URL)
    crl.check(at=NOW)  # a supplied file names no URL
    unusable(crl, "not the URL it was fetched from", fetched_from="http://elsewhere.contoso.com/issuing.crl")


def test_dates(ca):
    crl = build(ca)
    with pytest.raises(CrlError, match="not yet in effect"):
        crl.check(at=NOW - dt.timedelta(hours=2))
    crl.check(at=NOW - dt.timedelta(hours=1, minutes=4))  # within the 5 minutes of skew
    with pytest.raises(CrlError, match="stale"):
        crl.check(at=NOW + dt.timedelta(days=2))


def test_a_crl_without_crl_number_is_refused(ca):
    unusable(build(ca, number=None), "no CRLNumber")


# -- hand-made DER: what cryptography will not build ---------------------------------------------------

ECDSA_SHA256 = seq(oid("1.2.840.10045.4.3.2"))


def crl_der(ca: Issued, *tbs_tail: bytes, version: bool = True, signature: bytes = b"\x00\x30\x00") -> bytes:
    """A CertificateList whose TBS is (version), signature, issuer, thisUpdate, then `tbs_tail`; unsigned."""
    issuer = ca.cert.subject.public_bytes()
    tbs = seq(*([integer(1)] if version else []), ECDSA_SHA256, issuer, time(NOW - dt.timedelta(hours=1)), *tbs_tail)
    return seq(tbs, ECDSA_SHA256, tlv(0x03, signature))


def crl_number(n: int) -> bytes:
    return explicit(0, seq(seq(oid("2.5.29.20"), octet_string(integer(n)))))


def test_a_crl_without_next_update_cannot_be_judged_fresh(ca):
    crl = parse_crl(crl_der(ca, crl_number(1)), "no-next.crl")
    assert crl.next_update is None and crl.number == 1
    unusable(crl, "no nextUpdate")


def test_a_v1_crl_without_extensions_or_entries(ca):
    crl = parse_crl(crl_der(ca, time(NOW + dt.timedelta(days=1)), version=False), "v1.crl")
    assert crl.lookup(serial_bytes(5)) is None
    unusable(crl, "no CRLNumber")


@pytest.mark.parametrize(
    ("tail", "fragment"),
    [
        ((time(NOW + dt.timedelta(days=1)), integer(5)), "unexpected fields at the end"),
        ((time(NOW + dt.timedelta(days=1)), explicit(0, seq(seq(oid("2.5.29.20"))))), "not \\(id, critical, value\\)"),
    ],
)
def test_malformed_tbs_tails(ca, tail, fragment):
    with pytest.raises(CrlError, match=fragment):
        parse_crl(crl_der(ca, *tail), "bad.crl")


def test_a_signature_algorithm_that_differs_inside_and_out(ca):
    good = make_crl(ca)
    swapped = good.replace(bytes.fromhex("06082a8648ce3d040302"), bytes.fromhex("06082a8648ce3d040303"), 1)
    with pytest.raises(CrlError, match="inside and outside the TBS differ"):
        parse_crl(swapped, "swapped.crl")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "holds no X509 CRL block"),
        (b"-----BEGIN X509 CRL-----\n!!notbase64!!\n-----END X509 CRL-----\n", "not valid base64"),
        (b"\x30\x03\x02\x01\x01", "not a valid CRL"),
    ],
)
def test_input_that_is_not_a_crl(data, fragment):
    with pytest.raises(CrlError, match=f"in.crl: .*{fragment}"):
        parse_crl(data, "in.crl")


def test_pem_and_trailing_bytes(ca):
    der_bytes = make_crl(ca)
    pem = b"-----BEGIN X509 CRL-----\n" + base64.encodebytes(der_bytes) + b"-----END X509 CRL-----\n"
    assert parse_crl(pem, "pem.crl").der == der_bytes
    with pytest.raises(CrlError, match="bytes after the end of the CRL"):
        parse_crl(der_bytes + b"\x00", "trailing.crl")
    with pytest.raises(CrlError, match="bad signature value"):
        parse_crl(crl_der(ca, signature=b"\x01\x30\x00"), "unused-bits.crl")


# -- entries ---------------------------------------------------------------------------------------------


def test_entries_by_serial_with_their_reasons(ca):
    crl = build(
        ca,
        entries=(
            entry(1000),
            entry(0x7F_FFFF_FFFF, (x509.CRLReason(x509.ReasonFlags.key_compromise), False)),
            entry(42, (x509.InvalidityDate(NOW - dt.timedelta(days=3)), False)),
        ),
    )
    assert crl.lookup(serial_bytes(1000)) is not None and crl.lookup(serial_bytes(1000)).reason is None
    assert crl.lookup(serial_bytes(0x7F_FFFF_FFFF)).reason == "keyCompromise"
    assert crl.lookup(serial_bytes(42)).revoked_at == NOW - dt.timedelta(days=1)
    assert crl.lookup(serial_bytes(43)) is None
    assert crl.lookup(b"\x01" * 200) is None  # no certificate has a 200-byte serial


def test_a_serial_inside_another_entry_is_not_taken_for_an_entry(ca):
    decoy = 0x11_02_01_05_22  # its INTEGER content holds 02 01 05, the encoding of serial 5
    crl = build(ca, entries=(entry(decoy),))
    assert crl.lookup(serial_bytes(5)) is None
    both = build(ca, entries=(entry(decoy), entry(5)))
    assert both.lookup(serial_bytes(5)) is not None
    assert both.lookup(serial_bytes(decoy)) is not None


def test_an_entry_naming_another_issuer_or_an_unknown_critical_extension_is_an_error(ca):
    other = x509.CertificateIssuer([x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "X")]))])
    crl = build(ca, entries=(entry(9, (other, True)),))
    with pytest.raises(CrlError, match="another certificate issuer"):
        crl.lookup(serial_bytes(9))
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00")
    crl = build(ca, entries=(entry(10, (unknown, True)), entry(11, (unknown, False))))
    with pytest.raises(CrlError, match=r"unknown critical extension 1\.2\.3\.4"):
        crl.lookup(serial_bytes(10))
    assert crl.lookup(serial_bytes(11)) is not None


def tricky_serials() -> list[int]:
    """Serials whose encodings trip a byte search: sign octets (127, 128, 255), one that is the DER of
    another inside its own content, zero, negatives (as some CAs wrote them) and 20 octets long."""
    decoy = 0x11_02_01_05_22
    return [0, 1, 5, 127, 128, 255, 256, 0x7FFF, 0x8000, decoy, -1, -129, (1 << 159) - 1, 0x7ABC, 1 << 100]


def test_the_index_answers_as_the_scan_does_on_every_serial(ca):
    data = big_crl_der(
        ca.cert.subject.public_bytes(),
        ca.key,
        3000,
        this_update=NOW - dt.timedelta(hours=1),
        next_update=NOW + dt.timedelta(days=1),
        include_serials=[s for s in tricky_serials() if s not in (5, 0x7ABC)],
        seed=19,
    )
    indexed = parse_crl(data, "big.crl")
    indexed.lookup(serial_bytes(3))  # the first lookup scans; every later one asks the index
    start, end = indexed.entries
    listed = []
    pos = start
    while pos < end:  # every serial on the list, read independently of the code under test (short forms only)
        assert data[pos + 1] < 0x80 and data[pos + 2] == 0x02
        listed.append(data[pos + 4 : pos + 4 + data[pos + 3]])
        pos += 2 + data[pos + 1]
    assert len(listed) == 3000 + len(tricky_serials()) - 2
    absent = [serial_bytes(s) for s in (5, 0x7ABC, 2, 0x0105, 0x0201)] + [s[:-1] for s in listed[:50]]
    for serial in listed + absent:
        assert indexed.lookup(serial) == parse_crl(data, "big.crl")._scan(serial), serial.hex()
    assert indexed.lookup(serial_bytes(0x11_02_01_05_22)) is not None
    assert indexed.lookup(serial_bytes(5)) is None  # inside the decoy's content, not an entry
    assert all(indexed.lookup(s) is not None for s in listed)
    assert indexed.lookup(b"\x01" * 200) is None


def test_the_index_is_built_once_and_kept_with_the_crl(ca):
    crl = build(ca, entries=(entry(77), entry(5), entry(0x11_02_01_05_22)))
    assert crl.lookup(serial_bytes(78)) is None and "_index" not in vars(crl)  # one lookup: a scan
    assert crl.lookup(serial_bytes(77)) is not None
    index = vars(crl)["_index"]
    assert len(index) == 3
    assert crl.lookup(serial_bytes(5)) is not None and crl.lookup(serial_bytes(6)) is None
    assert vars(crl)["_index"] is index


def test_the_first_of_two_entries_with_one_serial_answers(ca):
    first = seq(integer(9), time(NOW - dt.timedelta(days=2)))
    second = seq(integer(9), time(NOW - dt.timedelta(days=1)))
    crl = parse_crl(crl_der(ca, time(NOW + dt.timedelta(days=1)), seq(first, second), crl_number(1)), "dup.crl")
    assert crl.lookup(serial_bytes(9)).revoked_at == NOW - dt.timedelta(days=2)  # the scan
    assert crl.lookup(serial_bytes(9)).revoked_at == NOW - dt.timedelta(days=2)  # the index


@pytest.mark.parametrize(
    "entries",
    [
        seq(integer(9), time(NOW)) + b"\x05\x00",  # not an entry after the first
        seq(integer(9), time(NOW)) + seq(tlv(0x04, b"x"), time(NOW)),  # an entry without a serial
        seq(integer(9), time(NOW)) + b"\x30\x20\x02\x01",  # an entry cut short
    ],
)
def test_an_entry_list_that_cannot_be_indexed_is_refused(ca, entries):
    crl = parse_crl(crl_der(ca, time(NOW + dt.timedelta(days=1)), tlv(0x30, entries), crl_number(1)), "bad.crl")
    crl.lookup(serial_bytes(1))
    with pytest.raises(CrlError, match="list of revoked certificates is not valid DER"):
        crl.lookup(serial_bytes(9))


def test_an_entry_that_is_not_a_revoked_certificate_is_refused(ca):
    entries = seq(integer(9)) + seq(integer(10), tlv(0x04, b"not a time"))
    crl = parse_crl(crl_der(ca, time(NOW + dt.timedelta(days=1)), tlv(0x30, entries), crl_number(1)), "bad.crl")
    crl.lookup(serial_bytes(1))
    for serial in (9, 10):
        with pytest.raises(CrlError, match="is not a revoked certificate"):
            crl.lookup(serial_bytes(serial))


def test_long_form_lengths_in_an_entry(ca):
    long_entry = seq(integer(1 << 1100), time(NOW - dt.timedelta(days=1)))  # a 138-octet serial: long forms
    crl = parse_crl(
        crl_der(ca, time(NOW + dt.timedelta(days=1)), seq(long_entry, seq(integer(3), time(NOW))), crl_number(1)),
        "long.crl",
    )
    assert crl.lookup(serial_bytes(3)) is not None  # the scan
    assert crl.lookup(serial_bytes(1 << 1100)) is not None  # the index reads the long forms
    assert crl.lookup(serial_bytes(3)) is not None and crl.lookup(serial_bytes(4)) is None
