"""Rendering hand-built X.509 names as Windows does (spec §2, §3), from a bare Name and from a
certificate, including names that `cryptography` refuses to load, and names that cannot be decoded."""

from __future__ import annotations

import pytest
from cryptography import x509

from shared.errors import NameDecodeError
from shared.x509.certificate import Certificate
from shared.x509.x500 import X500Name
from tests.pki import (
    BMP,
    BUSINESS_CATEGORY,
    CN,
    EMAIL,
    GENERAL,
    GRAPHIC,
    IA5,
    NUMERIC,
    OU,
    PRINTABLE,
    ST,
    T61,
    UNIVERSAL,
    UTF8,
    VIDEOTEX,
    VISIBLE,
    C,
    L,
    O,
    ava,
    ava_tlv,
    bmp,
    certificate,
    integer,
    name,
    octet_string,
    oid,
    printable,
    rdn,
    seq,
    tlv,
    utf8,
)


def render(name_der: bytes) -> str:
    """The rendering from the bare Name, checked to be the same as the certificate's subject and
    issuer rendering when the Name is put in a real certificate."""
    direct = str(X500Name.from_der(name_der))
    cert = Certificate.from_der(certificate(name_der, name_der), "hand-built")
    assert str(cert.subject) == direct
    assert str(cert.issuer) == direct
    return direct


def cryptography_refuses(cert_der: bytes) -> bool:
    """Whether `cryptography` fails to load the certificate or to give its subject."""
    try:
        x509.load_der_x509_certificate(cert_der).subject  # noqa: B018
    except ValueError:
        return True
    return False


# --- Names cryptography refuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*.contoso.com", "CN=*.contoso.com"),
        ("postmaster@contoso.com", "CN=postmaster@contoso.com"),
        ("mail_relay.contoso.com", "CN=mail_relay.contoso.com"),
    ],
)
def test_printable_string_outside_its_charset_renders_as_is(text, expected):
    subject = name(rdn(printable(CN, text)))
    cert_der = certificate(subject, name(rdn(utf8(CN, "Test CA"))))
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(cert_der)
    assert str(X500Name.from_der(subject)) == expected
    cert = Certificate.from_der(cert_der, "odd.cer")
    assert str(cert.subject) == expected
    assert str(cert.issuer) == "CN=Test CA"


def test_printable_wildcard_in_full_subject():
    subject = name(rdn(printable(C, "US")), rdn(printable(O, "Contoso_Labs")), rdn(printable(CN, "*.contoso.com")))
    assert render(subject) == "CN=*.contoso.com, O=Contoso_Labs, C=US"


def test_t61_string_valid_utf8_is_read_as_utf8():
    subject = name(rdn(ava(CN, T61, "Müller Straße".encode())))
    assert render(subject) == "CN=Müller Straße"


def test_t61_string_latin1_bytes_are_read_as_latin1():
    subject = name(rdn(ava(CN, T61, b"M\xfcller Stra\xdfe")))
    assert cryptography_refuses(certificate(subject))
    assert render(subject) == "CN=Müller Straße"


def test_t61_string_mixed_utf8_and_stray_byte_falls_back_to_latin1_for_the_whole_value():
    # "é" in UTF-8 (C3 A9) followed by a lone 0xE9: not valid UTF-8, so every byte is Latin-1.
    subject = name(rdn(ava(CN, T61, b"\xc3\xa9\xe9")))
    assert render(subject) == "CN=Ã©é"


def test_unsorted_multi_valued_rdn_keeps_encoded_order():
    subject = name(rdn(utf8(CN, "b"), utf8(CN, "a")))
    assert cryptography_refuses(certificate(subject))
    assert render(subject) == "CN=b + CN=a"


def test_multi_valued_rdn_order_is_not_reversed_while_rdns_are():
    subject = name(
        rdn(utf8(C, "US")),
        rdn(utf8(OU, "Mail"), utf8(O, "Contoso")),  # unsorted: O (2.5.4.10) sorts before OU
        rdn(utf8(CN, "mail.contoso.com"), utf8(L, "Redmond"), utf8(EMAIL, "x@contoso.com")),
    )
    assert render(subject) == "CN=mail.contoso.com + L=Redmond + E=x@contoso.com, OU=Mail + O=Contoso, C=US"


def test_sorted_multi_valued_rdn_also_keeps_encoded_order():
    subject = name(rdn(utf8(OU, "Mail"), utf8(CN, "mail.contoso.com"), sort=True))
    # DER order: the shorter AVA (OU) encodes first.
    assert render(subject) == "OU=Mail + CN=mail.contoso.com"
    assert x509.load_der_x509_certificate(certificate(subject)).subject.rfc4514_string()  # it is valid DER


# --- String types --------------------------------------------------------------------------------


def test_bmp_string():
    subject = name(rdn(bmp(CN, "Zürich € Ωmega")))
    assert render(subject) == "CN=Zürich € Ωmega"


def test_bmp_string_surrogate_pair_is_one_character():
    subject = name(rdn(ava(CN, BMP, b"\x00A\xd8\x3d\xde\x00")))
    assert render(subject) == "CN=A\U0001f600"


def test_universal_string():
    subject = name(rdn(ava(CN, UNIVERSAL, "Ωmega \U0001f600".encode("utf-32-be"))))
    assert render(subject) == "CN=Ωmega \U0001f600"


def test_utf8_string_non_ascii():
    subject = name(rdn(utf8(O, "Société Générale")), rdn(utf8(CN, "ßtraße.example")))
    assert render(subject) == "CN=ßtraße.example, O=Société Générale"


@pytest.mark.parametrize("tag", [PRINTABLE, IA5, NUMERIC, VISIBLE, GRAPHIC, GENERAL, VIDEOTEX])
def test_byte_string_types_read_high_bytes_as_latin1(tag):
    subject = name(rdn(ava(CN, tag, b"caf\xe9 \xa9\xff")))
    assert render(subject) == "CN=caf\u00e9 \u00a9\u00ff"


def test_numeric_string_with_letters_is_not_checked():
    subject = name(rdn(ava("2.5.4.5", NUMERIC, b"12-AB")))
    assert render(subject) == "SERIALNUMBER=12-AB"


# --- Non-string values ---------------------------------------------------------------------------


def test_integer_value_renders_as_hex_of_the_whole_tlv():
    subject = name(rdn(ava_tlv(CN, integer(0x1234))))
    assert cryptography_refuses(certificate(subject))
    assert render(subject) == "CN=#02021234"


def test_octet_string_value_is_upper_hex_and_never_quoted():
    # '#' is a quoting trigger for text, but a hex value is printed bare.
    subject = name(rdn(ava_tlv("2.5.4.45", octet_string(b"\x01\xab\xcd"))), rdn(utf8(CN, "#1 Server")))
    assert render(subject) == 'CN="#1 Server", OID.2.5.4.45=#040301ABCD'


def test_constructed_value_renders_as_hex():
    value = seq(integer(1), tlv(UTF8, b"x"))
    subject = name(rdn(ava_tlv(O, value)))
    assert render(subject) == "O=#30060201010C0178"


def test_empty_octet_string_value():
    subject = name(rdn(ava_tlv(CN, octet_string(b""))))
    assert render(subject) == "CN=#0400"


def test_boolean_and_null_values_are_hex():
    subject = name(rdn(ava(CN, 0x01, b"\xff"), ava(O, 0x05, b"")))
    assert render(subject) == "CN=#0101FF + O=#0500"


# --- Keys ----------------------------------------------------------------------------------------

# Spec §3, written out again here so a typo in the implementation's table shows up.
SPEC_KEYS = [
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "SERIALNUMBER"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "S"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "T"),
    ("2.5.4.13", "Description"),
    ("2.5.4.17", "PostalCode"),
    ("2.5.4.18", "POBox"),
    ("2.5.4.20", "Phone"),
    ("2.5.4.24", "X21Address"),
    ("2.5.4.42", "G"),
    ("2.5.4.43", "I"),
    ("2.5.4.46", "dnQualifier"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.2.840.113549.1.9.1", "E"),
    ("2.23.133.2.1", "TPMManufacturer"),
    ("2.23.133.2.2", "TPMModel"),
    ("2.23.133.2.3", "TPMVersion"),
]


@pytest.mark.parametrize(("attr_oid", "key"), SPEC_KEYS)
def test_key_table(attr_oid, key):
    assert render(name(rdn(utf8(attr_oid, "v")))) == f"{key}=v"


@pytest.mark.parametrize(
    "attr_oid",
    [
        "2.5.4.15",  # businessCategory
        "1.3.6.1.4.1.311.60.2.1.1",
        "1.3.6.1.4.1.311.60.2.1.2",
        "1.3.6.1.4.1.311.60.2.1.3",
        "2.5.4.97",  # organizationIdentifier
        "0.9.2342.19200300.100.1.1",  # UID
        "1.2.840.113549.1.9.2",  # unstructuredName
        "2.5.4.14",
        "2.999.1234567890123",
    ],
)
def test_oid_outside_the_table_renders_as_oid_dot(attr_oid):
    assert render(name(rdn(utf8(attr_oid, "v")))) == f"OID.{attr_oid}=v"


def test_email_is_e_and_state_is_s():
    subject = name(rdn(utf8(ST, "Washington")), rdn(ava(EMAIL, IA5, b"admin@contoso.com")))
    assert render(subject) == "E=admin@contoso.com, S=Washington"


def test_ev_subject_matches_spec_example():
    subject = name(
        rdn(printable("1.3.6.1.4.1.311.60.2.1.3", "US")),
        rdn(printable("1.3.6.1.4.1.311.60.2.1.2", "Delaware")),
        rdn(printable(BUSINESS_CATEGORY, "Private Organization")),
        rdn(printable("2.5.4.5", "4860621")),
        rdn(printable(C, "US")),
        rdn(printable(ST, "California")),
        rdn(printable(L, "San Francisco")),
        rdn(utf8(O, "Example, PBC")),
        rdn(utf8(CN, "Example, PBC")),
    )
    assert render(subject) == (
        'CN="Example, PBC", O="Example, PBC", L=San Francisco, S=California, C=US, SERIALNUMBER=4860621, '
        "OID.2.5.4.15=Private Organization, OID.1.3.6.1.4.1.311.60.2.1.2=Delaware, "
        "OID.1.3.6.1.4.1.311.60.2.1.3=US"
    )


# --- Structure -----------------------------------------------------------------------------------


def test_empty_name_is_empty_string():
    assert render(b"\x30\x00") == ""
    assert X500Name.from_der(name()).rdns == ()


def test_rdns_print_last_encoded_first():
    ca = name(
        rdn(printable(C, "US")),
        rdn(printable(ST, "Arizona")),
        rdn(printable(L, "Scottsdale")),
        rdn(printable(O, "GoDaddy.com, Inc.")),
        rdn(printable(OU, "http://certs.godaddy.com/repository/")),
        rdn(printable(CN, "Go Daddy Secure Certificate Authority - G2")),
    )
    assert render(ca) == (
        "CN=Go Daddy Secure Certificate Authority - G2, OU=http://certs.godaddy.com/repository/, "
        'O="GoDaddy.com, Inc.", L=Scottsdale, S=Arizona, C=US'
    )


def test_single_rdn_has_no_separator():
    assert render(name(rdn(utf8(CN, "R11")))) == "CN=R11"


def test_display_order_of_parsed_structure():
    parsed = X500Name.from_der(name(rdn(utf8(C, "US")), rdn(utf8(CN, "x"), utf8(O, "y"))))
    assert [[(a.oid, a.value) for a in r] for r in parsed.rdns] == [[(CN, "x"), (O, "y")], [(C, "US")]]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("GoDaddy.com, Inc.", 'O="GoDaddy.com, Inc."'),
        ('The "Best" Server', 'O="The ""Best"" Server"'),
        (" leading", 'O=" leading"'),
        ("trailing ", 'O="trailing "'),
        ("#1 Server", 'O="#1 Server"'),
        ("two  spaces inside", "O=two  spaces inside"),
        ("Let's Encrypt", "O=Let's Encrypt"),
        ("", 'O=""'),
        ("a\rb", "O=a\rb"),
        ("a\nb", 'O="a\nb"'),
        ("\tx", 'O="\tx"'),
        ("x\x0b", 'O="x\x0b"'),
        ("x\x0c", 'O="x\x0c"'),
        ("\u00a0nbsp\u2002", "O=\u00a0nbsp\u2002"),
        ("a\\b/c&d*e:f@g'h", "O=a\\b/c&d*e:f@g'h"),
        ("<tag>", 'O="<tag>"'),
        ("a;b", 'O="a;b"'),
        ("a=b", 'O="a=b"'),
        ("\x01ctl\x1f", "O=\x01ctl\x1f"),
    ],
)
def test_quoting_examples(value, expected):
    assert render(name(rdn(utf8(O, value)))) == expected


def test_quoted_value_inside_multi_valued_rdn():
    assert render(name(rdn(utf8(CN, "a+b"), utf8(O, "Org")))) == 'CN="a+b" + O=Org'


def test_high_tag_number_value_is_hex():
    subject = name(rdn(ava_tlv(CN, b"\x9f\x81\x00\x01\x41")))
    assert render(subject) == "CN=#9F81000141"


# --- Errors --------------------------------------------------------------------------------------

GOOD = name(rdn(utf8(CN, "ok")))


def _decode_error(name_der: bytes) -> str:
    with pytest.raises(NameDecodeError) as info:
        X500Name.from_der(name_der)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("name_der", "words"),
    [
        pytest.param(name(rdn(ava(CN, UTF8, b"caf\xe9"))), ["UTF8String", "CN"], id="bad-utf8"),
        pytest.param(name(rdn(ava(CN, UTF8, b"\xed\xa0\x80"))), ["UTF8String"], id="utf8-encoded-surrogate"),
        pytest.param(name(rdn(ava(O, BMP, b"\x00a\x00"))), ["BMPString", "O"], id="odd-bmp"),
        pytest.param(name(rdn(ava(CN, UNIVERSAL, b"\x00\x00\x00"))), ["UniversalString"], id="short-universal"),
        pytest.param(
            name(rdn(ava(CN, UNIVERSAL, b"\x00\x11\x00\x00"))), ["UniversalString"], id="universal-out-of-range"
        ),
    ],
)
def test_undecodable_string_values(name_der, words):
    message = _decode_error(name_der)
    for word in words:
        assert word in message


def test_truncated_name():
    message = _decode_error(GOOD[:-1])
    assert "truncated" in message or "past" in message
    assert _decode_error(GOOD[:1])
    assert _decode_error(b"")


def test_truncated_inside_the_name():
    # The AVA claims 16 bytes but its RDN holds only 7.
    broken = name(tlv(0x31, b"\x30\x10\x06\x03\x55\x04\x03"))
    message = _decode_error(broken)
    assert "past" in message or "truncated" in message


def test_indefinite_length():
    assert "indefinite" in _decode_error(b"\x30\x80" + GOOD[2:] + b"\x00\x00")
    inner = name(tlv(0x31, b"\x30\x80" + oid(CN) + tlv(UTF8, b"x") + b"\x00\x00"))
    assert "indefinite" in _decode_error(inner)


def test_trailing_bytes_after_name():
    assert "after" in _decode_error(GOOD + b"\x00")


def test_empty_rdn_set():
    assert "empty" in _decode_error(name(rdn(utf8(C, "US")), tlv(0x31, b"")))


def test_rdn_that_is_not_a_set():
    assert "SET" in _decode_error(name(seq(utf8(CN, "x"))))


@pytest.mark.parametrize(
    "bad_ava",
    [
        pytest.param(seq(oid(CN)), id="oid-only"),
        pytest.param(seq(tlv(UTF8, b"x"), oid(CN)), id="value-then-oid"),
        pytest.param(seq(oid(CN), tlv(UTF8, b"x"), tlv(UTF8, b"y")), id="three-parts"),
        pytest.param(seq(), id="empty"),
        pytest.param(seq(tlv(UTF8, b"x"), tlv(UTF8, b"y")), id="no-oid"),
    ],
)
def test_ava_that_is_not_type_and_value(bad_ava):
    message = _decode_error(name(tlv(0x31, bad_ava)))
    assert "type, value" in message or "attribute" in message


def test_ava_that_is_not_a_sequence():
    assert _decode_error(name(tlv(0x31, tlv(UTF8, b"x"))))


def test_name_that_is_not_a_sequence():
    assert _decode_error(tlv(0x31, b""))


def test_malformed_oid_in_ava():
    assert _decode_error(name(tlv(0x31, seq(tlv(0x06, b""), tlv(UTF8, b"x")))))
    assert _decode_error(name(tlv(0x31, seq(tlv(0x06, b"\x81"), tlv(UTF8, b"x")))))


@pytest.mark.parametrize("which", ["subject", "issuer"])
def test_certificate_error_names_the_certificate_and_which_name(which):
    bad = name(rdn(utf8(C, "US")), rdn(ava(CN, UTF8, b"\xff\xfe")))
    good = name(rdn(utf8(CN, "Fine CA")))
    cert_der = certificate(bad, good) if which == "subject" else certificate(good, bad)
    cert = Certificate.from_der(cert_der, "mail.pfx, certificate 2 of 3")
    with pytest.raises(NameDecodeError) as info:
        getattr(cert, which)
    message = str(info.value)
    assert "mail.pfx, certificate 2 of 3" in message
    assert which in message
    other = "issuer" if which == "subject" else "subject"
    assert other not in message
    assert "UTF8String" in message
    assert str(getattr(cert, other)) == "CN=Fine CA"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(name(tlv(0x31, b"")), id="empty-rdn"),
        pytest.param(name(rdn(ava(CN, BMP, b"\x00"))), id="odd-bmp"),
        pytest.param(name(tlv(0x31, b"\x30\x10\x06\x03\x55\x04\x03")), id="truncated-ava"),
        pytest.param(name(tlv(0x31, seq(oid(CN)))), id="ava-without-value"),
    ],
)
def test_certificate_subject_errors_are_name_decode_errors(bad):
    cert = Certificate.from_der(certificate(bad, GOOD), "leaf.cer")
    with pytest.raises(NameDecodeError, match=r"leaf\.cer.*subject"):
        cert.subject  # noqa: B018
