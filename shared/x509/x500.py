"""X.500 names the way Windows prints them and Exchange reads them back.

`X500Name.from_der` decodes a Name straight from its DER, and `str()` renders it exactly as
`X509Certificate2.Subject` / `.Issuer` on Windows (CertNameToStr with CERT_X500_NAME_STR and
CERT_NAME_STR_REVERSE_FLAG): last RDN first, `", "` between RDNs, `" + "` inside one, crypt32's key
names, `"…"` quoting with doubled inner quotes and no backslash escaping. `X500Name.parse` reads
such a string the way Exchange does (CertStrToName rules), and `matches` compares two names as
Exchange does: canonical text, case-insensitive, order-sensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from shared.errors import DerError, NameDecodeError, NameSyntaxError
from shared.x509 import der

# crypt32's X.500 key for each attribute OID; every other OID prints as "OID.<dotted>".
KEY_BY_OID: dict[str, str] = {
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
# Keys accepted when parsing, case-insensitively. ST is the RFC 4514 spelling Exchange also takes.
OID_BY_KEY: dict[str, str] = {key.upper(): oid for oid, key in KEY_BY_OID.items()} | {"ST": "2.5.4.8"}

COMMON_NAME = "2.5.4.3"

# Quoting triggers (spec §2.8): these anywhere, or one of the edge blanks first or last, or empty.
_QUOTE_ANYWHERE = re.compile('[,+="\n<>#;]')
_EDGE_BLANKS = " \t\n\v\f\r"

# How each string tag's bytes become text (spec §2.7). T61String is handled on its own.
_LATIN1_TAGS = frozenset({0x13, 0x16, 0x12, 0x1A, 0x19, 0x1B, 0x15})
_UTF8, _BMP, _T61, _UNIVERSAL = 0x0C, 0x1E, 0x14, 0x1C


class Attribute(NamedTuple):
    """One AttributeTypeAndValue. `value` is the text as Windows shows it; for a value that is not a
    string type, it is `#` plus the upper-case hex of the whole value TLV, and `is_hex` is set."""

    oid: str
    value: str
    is_hex: bool = False

    @property
    def key(self) -> str:
        return KEY_BY_OID.get(self.oid) or "OID." + self.oid

    def __str__(self) -> str:
        return self.key + "=" + (self.value if self.is_hex else quote_value(self.value))


@dataclass(frozen=True, slots=True)
class X500Name:
    """A Name as a sequence of RDNs in display order (the last encoded RDN first, as Windows prints)."""

    rdns: tuple[tuple[Attribute, ...], ...]
    # `exchange_key` and the text, computed on first use: planning renders and compares the same few names
    # thousands of times.
    _key: str | None = field(default=None, init=False, repr=False, compare=False)
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_der(cls, name_der: bytes) -> X500Name:
        """Decode a DER Name (`SEQUENCE OF SET OF AttributeTypeAndValue`); raises NameDecodeError."""
        try:
            rdns = _walk_name(name_der)
        except DerError as exc:
            raise NameDecodeError(f"malformed Name: {exc}") from None
        rdns.reverse()
        return cls(tuple(rdns))

    @classmethod
    def parse(cls, text: str) -> X500Name:
        """Read an X.500 string as Exchange does: `,` or `;` between RDNs, `+` inside one, `"…"`
        quoting with `""` for a quote, `#hex` values, blanks around keys and values ignored."""
        return _Parser(text).parse()

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = ", ".join(" + ".join(str(ava) for ava in rdn) for rdn in self.rdns)
            object.__setattr__(self, "_text", text)  # a cache of a value derived from the frozen fields
        return text

    def first(self, oid: str) -> str | None:
        """The value of the first attribute with this OID, in display order."""
        for rdn in self.rdns:
            for ava in rdn:
                if ava.oid == oid:
                    return ava.value
        return None

    def exchange_key(self) -> str:
        """What Exchange compares: the canonical text, upper-cased character by character."""
        key = self._key
        if key is None:
            key = fold_case(self.__str__())
            object.__setattr__(self, "_key", key)  # a cache of a value derived from the frozen fields
        return key

    def matches(self, other: X500Name) -> bool:
        """Equal as Exchange compares names: same RDNs in the same order, case ignored."""
        return self.exchange_key() == other.exchange_key()


def quote_value(value: str) -> str:
    """A value as CertNameToStr writes it: quoted only when the spec's triggers say so."""
    if not value or value[0] in _EDGE_BLANKS or value[-1] in _EDGE_BLANKS or _QUOTE_ANYWHERE.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def fold_case(text: str) -> str:
    """Upper-case each character on its own, as .NET's OrdinalIgnoreCase does (no 'ß' -> 'SS')."""
    upper = text.upper()
    if len(upper) == len(text):
        return upper
    return "".join(ch if len(up := ch.upper()) != 1 else up for ch in text)


def _walk_name(buf: bytes) -> list[tuple[Attribute, ...]]:
    """The RDNs of a DER Name in encoded order, each RDN's attributes in encoded order (never re-sorted).

    One flat loop over `der.header`: this is the hot path of every event and every CLI call."""
    header = der.header
    size = len(buf)
    tag, pos, end = header(buf, 0, size)
    if tag != der.SEQUENCE:
        raise DerError("a Name must be a SEQUENCE")
    if end != size:
        raise DerError("bytes after the end of the Name")
    rdns = []
    while pos < end:
        tag, avas_at, rdn_end = header(buf, pos, end)
        if tag != der.SET:
            raise DerError(f"RDN at offset {pos} is not a SET")
        if avas_at == rdn_end:
            raise DerError(f"empty RDN at offset {pos}")
        rdn = []
        while avas_at < rdn_end:
            tag, oid_at, ava_end = header(buf, avas_at, rdn_end)
            if tag != der.SEQUENCE:
                raise DerError(f"attribute at offset {avas_at} is not a SEQUENCE")
            if oid_at == ava_end:
                raise DerError(f"attribute at offset {avas_at} is not (type, value)")
            tag, oid_start, value_at = header(buf, oid_at, ava_end)
            if tag != der.OID or value_at >= ava_end:
                raise DerError(f"attribute at offset {avas_at} is not (type, value)")
            oid = der.decode_oid(buf[oid_start:value_at])
            tag, body_start, value_end = header(buf, value_at, ava_end)
            if value_end != ava_end:
                raise DerError(f"attribute at offset {avas_at} is not (type, value)")
            rdn.append(_attribute(oid, tag, buf, value_at, body_start, value_end))
            avas_at = ava_end
        rdns.append(tuple(rdn))
        pos = rdn_end
    return rdns


_CODEC_BY_TAG = dict.fromkeys(_LATIN1_TAGS, "latin-1") | {_UTF8: "utf-8", _BMP: "utf-16-be", _UNIVERSAL: "utf-32-be"}
_STRING_KIND = {_UTF8: "UTF8String", _BMP: "BMPString", _UNIVERSAL: "UniversalString"}


def _attribute(oid: str, tag: int, buf: bytes, start: int, body_start: int, end: int) -> Attribute:
    """Decode one value by its tag (spec §2.7); a non-string value becomes `#` + hex of its whole TLV."""
    codec = _CODEC_BY_TAG.get(tag)
    try:
        if codec is not None:
            return Attribute(oid, buf[body_start:end].decode(codec))
        if tag == _T61:  # strict UTF-8 first, else one Latin-1 character per byte
            try:
                return Attribute(oid, buf[body_start:end].decode("utf-8"))
            except UnicodeDecodeError:
                return Attribute(oid, buf[body_start:end].decode("latin-1"))
    except UnicodeDecodeError as exc:
        key = KEY_BY_OID.get(oid, "OID." + oid)
        raise DerError(f"{key} value is not a valid {_STRING_KIND[tag]} ({exc.reason})") from None
    return Attribute(oid, "#" + buf[start:end].hex().upper(), is_hex=True)


class _Parser:
    """A single pass over an X.500 string, with errors that point at the character."""

    _BLANKS = _EDGE_BLANKS
    _HEX = re.compile(r"[0-9A-Fa-f]*\Z")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> NameSyntaxError:
        return NameSyntaxError(f"{message} at character {self.pos + 1} of {self.text!r}")

    def skip_blanks(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in self._BLANKS:
            pos += 1
        self.pos = pos

    def parse(self) -> X500Name:
        self.skip_blanks()
        if self.pos == len(self.text):
            return X500Name(())
        rdns: list[tuple[Attribute, ...]] = []
        rdn: list[Attribute] = []
        while True:
            rdn.append(self.attribute())
            if self.pos == len(self.text):
                rdns.append(tuple(rdn))
                return X500Name(tuple(rdns))
            sep = self.text[self.pos]
            self.pos += 1
            if sep in ",;":
                rdns.append(tuple(rdn))
                rdn = []
            self.skip_blanks()
            if self.pos == len(self.text):
                raise self.fail(f"nothing after {sep!r}")

    def attribute(self) -> Attribute:
        self.skip_blanks()
        start = self.pos
        eq = self.text.find("=", start)
        stop = _next_separator(self.text, start)
        if eq < 0 or eq > stop:
            raise self.fail("expected KEY=VALUE")
        key = self.text[start:eq].strip(self._BLANKS)
        oid = _oid_for_key(key)
        if oid is None:
            raise self.fail(f"unknown attribute key {key!r} (use a key such as CN, O, S, or OID.1.2.3)")
        self.pos = eq + 1
        self.skip_blanks()
        if self.text.startswith('"', self.pos):
            value = self.quoted()
            is_hex = False
        else:
            end = _next_separator(self.text, self.pos)
            raw = self.text[self.pos : end].strip(self._BLANKS)
            if '"' in raw:
                self.pos += raw.index('"')
                raise self.fail("a quote inside an unquoted value (quote the whole value instead)")
            is_hex = raw.startswith("#")
            value = raw
            if is_hex:
                digits = "".join(raw[1:].split())
                if not digits or len(digits) % 2 or not self._HEX.match(digits):
                    raise self.fail(f"{raw!r} is not '#' followed by pairs of hex digits")
                value = "#" + digits.upper()
            self.pos = end
        return Attribute(oid, value, is_hex)

    def quoted(self) -> str:
        text = self.text
        pos = self.pos + 1
        out = []
        while True:
            close = text.find('"', pos)
            if close < 0:
                raise self.fail("unterminated quoted value")
            out.append(text[pos:close])
            if text.startswith('"', close + 1):
                out.append('"')
                pos = close + 2
                continue
            self.pos = close + 1
            break
        self.skip_blanks()
        if self.pos < len(text) and text[self.pos] not in ",;+":
            raise self.fail("text after a closing quote")
        return "".join(out)


def _next_separator(text: str, start: int) -> int:
    """Where the unquoted run starting at `start` ends: the next `,`, `;`, `+`, or the end."""
    end = len(text)
    for sep in ",;+":
        found = text.find(sep, start, end)
        if found >= 0:
            end = found
    return end


_DOTTED = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+\Z")


def _oid_for_key(key: str) -> str | None:
    upper = key.upper()
    if upper.startswith("OID."):
        key = key[4:]
    elif upper in OID_BY_KEY:
        return OID_BY_KEY[upper]
    if _DOTTED.match(key):
        try:
            der.encode_oid(key)
        except DerError:
            return None
        return key
    return None
