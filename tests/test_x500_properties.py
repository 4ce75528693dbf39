"""Property tests of the Windows name rendering and the Exchange-style parser.

The expectations here are written from the spec (§2.7 decoding, §2.8 quoting, §3 keys) without
reusing the implementation's tables or regular expressions, so that a drift in either shows up.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import NameDecodeError, NameSyntaxError
from shared.x509.x500 import X500Name
from tests.pki import BMP, IA5, PRINTABLE, T61, UNIVERSAL, UTF8, VISIBLE, ava, ava_tlv, integer, name, octet_string, rdn

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Spec §3, typed in again.
SPEC_KEYS = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "SERIALNUMBER",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "S",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "T",
    "2.5.4.13": "Description",
    "2.5.4.17": "PostalCode",
    "2.5.4.18": "POBox",
    "2.5.4.20": "Phone",
    "2.5.4.24": "X21Address",
    "2.5.4.42": "G",
    "2.5.4.43": "I",
    "2.5.4.46": "dnQualifier",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "E",
    "2.23.133.2.1": "TPMManufacturer",
    "2.23.133.2.2": "TPMModel",
    "2.23.133.2.3": "TPMVersion",
}

# Spec §2.8, as plain sets: edge characters and anywhere characters that force quotes.
EDGE_TRIGGERS = {" ", "\t", "\n", "\x0b", "\x0c", "\r"}
ANYWHERE_TRIGGERS = {",", "+", "=", '"', "\n", "<", ">", "#", ";"}


def needs_quotes(value: str) -> bool:
    if value == "":
        return True
    if value[0] in EDGE_TRIGGERS or value[-1] in EDGE_TRIGGERS:
        return True
    return any(ch in ANYWHERE_TRIGGERS for ch in value)


def expected_value_text(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if needs_quotes(value) else value


# --- Strategies ----------------------------------------------------------------------------------

SPECIAL = [*",+=\"\n<>#;'\\/&*:@ \t\x0b\x0c\r", "\x00", "\x01", "\x1f", "\x7f", "\x85", "\u00a0", "\u2002"]
NON_ASCII = ["é", "ß", "€", "Ω", "中", "\U0001f600", "\u0130", "\u0131", "ﬁ", "\ufeff"]

texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(SPECIAL),
        st.sampled_from(NON_ASCII),
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
        st.sampled_from("abcXYZ019 .-"),
    ),
    max_size=12,
)

random_oids = st.builds(
    lambda first, second, rest: ".".join(map(str, [first, second, *rest])),
    st.integers(0, 2),
    st.integers(0, 39),
    st.lists(st.integers(0, 2**40), max_size=4),
)
oids = st.one_of(st.sampled_from(sorted(SPEC_KEYS)), st.just("2.5.4.15"), random_oids)


@st.composite
def attributes(draw):
    """(oid, AVA DER, expected text, is_hex)."""
    attr_oid = draw(oids)
    kind = draw(st.sampled_from(["utf8", "bmp", "universal", "t61", "latin1", "integer", "octets"]))
    if kind == "integer":
        value = integer(draw(st.integers(-(2**70), 2**70)))
        return attr_oid, ava_tlv(attr_oid, value), "#" + value.hex().upper(), True
    if kind == "octets":
        value = octet_string(draw(st.binary(max_size=8)))
        return attr_oid, ava_tlv(attr_oid, value), "#" + value.hex().upper(), True
    text = draw(texts)
    if kind == "utf8":
        raw, tag = text.encode("utf-8"), UTF8
    elif kind == "bmp":
        raw, tag = text.encode("utf-16-be"), BMP
    elif kind == "universal":
        raw, tag = text.encode("utf-32-be"), UNIVERSAL
    elif kind == "t61":
        raw, tag = text.encode("utf-8"), T61
    else:
        try:
            raw = text.encode("latin-1")
        except UnicodeEncodeError:
            raw, tag = text.encode("utf-8"), UTF8
        else:
            tag = draw(st.sampled_from([PRINTABLE, IA5, VISIBLE]))
    return attr_oid, ava(attr_oid, tag, raw), text, False


names = st.lists(st.lists(attributes(), min_size=1, max_size=3), min_size=1, max_size=6)


def encode(rdns) -> bytes:
    return name(*(rdn(*(a[1] for a in r)) for r in rdns))


def expected_rendering(rdns) -> str:
    def one(attr_oid, value, is_hex):
        key = SPEC_KEYS.get(attr_oid, "OID." + attr_oid)
        return f"{key}={value if is_hex else expected_value_text(value)}"

    return ", ".join(" + ".join(one(o, v, h) for o, _, v, h in r) for r in reversed(rdns))


def triples(x500: X500Name):
    return [[(a.oid, a.value, a.is_hex) for a in r] for r in x500.rdns]


# --- (a) render, then parse back -----------------------------------------------------------------


@PROPERTY
@given(names)
def test_rendering_follows_the_spec_and_parses_back(rdns):
    decoded = X500Name.from_der(encode(rdns))
    assert triples(decoded) == [[(o, v, h) for o, _, v, h in r] for r in reversed(rdns)]
    rendered = str(decoded)
    assert rendered == expected_rendering(rdns)
    reparsed = X500Name.parse(rendered)
    assert triples(reparsed) == triples(decoded)
    assert str(reparsed) == rendered
    assert reparsed.matches(decoded)


# --- (b) quoting ---------------------------------------------------------------------------------


@PROPERTY
@given(texts, st.sampled_from(["utf8", "bmp"]))
def test_quoting_follows_the_spec_triggers(value, kind):
    raw, tag = (value.encode("utf-8"), UTF8) if kind == "utf8" else (value.encode("utf-16-be"), BMP)
    rendered = str(X500Name.from_der(name(rdn(ava("2.5.4.10", tag, raw)))))
    assert rendered.startswith("O=")
    body = rendered[2:]
    if needs_quotes(value):
        assert len(body) >= 2 and body[0] == '"' and body[-1] == '"', rendered
        inner = body[1:-1]
        assert '"' not in inner.replace('""', ""), "every inner quote is doubled"
        assert inner.replace('""', '"') == value
    else:
        assert body == value
    assert body.count("\\") == value.count("\\"), "no backslash escaping"


@PROPERTY
@given(st.lists(texts, min_size=1, max_size=4))
def test_quoting_in_multi_valued_rdn(values):
    avas = [ava("2.5.4.3", UTF8, v.encode()) for v in values]
    rendered = str(X500Name.from_der(name(rdn(*avas))))
    assert rendered == " + ".join("CN=" + expected_value_text(v) for v in values)


# --- (c) arbitrary bytes -------------------------------------------------------------------------


def decode_or_name_error(data: bytes) -> None:
    try:
        X500Name.from_der(data)
    except NameDecodeError as exc:
        assert str(exc)


@PROPERTY
@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_name_decode_error(data):
    decode_or_name_error(data)
    decode_or_name_error(b"\x30" + bytes([len(data)]) + data if len(data) < 0x80 else data)


@PROPERTY
@given(names, st.data())
def test_mutated_names_raise_only_name_decode_error(rdns, data):
    blob = bytearray(encode(rdns))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if op == "set" and blob:
            blob[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        elif op == "delete" and blob:
            del blob[at]
        else:
            del blob[at:]
    decode_or_name_error(bytes(blob))


# --- (d) arbitrary text --------------------------------------------------------------------------

TOKENS = [
    "CN", "cn", "O", "ST", "S", "E", "OID.", "oid.", "2.5.4.3", "2.5.4.15", "1.2", "XX",
    "=", "=", ",", ";", "+", '"', '""', "#", "#AB", "0c", "f", " ", "  ", "\t", "\n", "\r", "\x0b",
    "<", ">", "\\", "'", "é", "ß", "\u00a0", "\x00", "a", "mail.contoso.com",
]  # fmt: skip

syntax_texts = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=14).map("".join),
    st.text(max_size=20),
)


@PROPERTY
@given(syntax_texts)
def test_arbitrary_text_parses_or_raises_name_syntax_error(text):
    try:
        parsed = X500Name.parse(text)
    except NameSyntaxError as exc:
        assert "character" in str(exc)
        return
    canonical = str(parsed)
    again = X500Name.parse(canonical)
    assert again.matches(parsed)
    assert triples(again) == triples(parsed)
    assert str(again) == canonical


@PROPERTY
@given(names)
def test_parse_accepts_blanks_and_semicolons_around_the_canonical_text(rdns):
    rendered = str(X500Name.from_der(encode(rdns)))
    # Outside quotes, '=' only ever follows a key and ',' '+' only ever separate (values holding
    # them are quoted), so they can be re-spaced freely; ',' may also be written ';'.
    respaced, in_quotes = [], False
    for ch in rendered:
        if ch == '"':
            in_quotes = not in_quotes
        if not in_quotes and ch in "=,+":
            ch = {"=": " \t= ", ",": " ;", "+": "\t+"}[ch]
        respaced.append(ch)
    text = " " + "".join(respaced) + " \t"
    assert str(X500Name.parse(text)) == rendered
