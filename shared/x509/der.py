"""A small, strict DER reader: just enough ASN.1 to walk certificates, names and PKCS#7 bundles.

certsync reads names from the certificate's own bytes instead of a library's parsed view, because
libraries re-sort SETs, re-encode strings, or refuse real-world names outright (PrintableString
holding `*` or `_`, Latin-1 T61String). This reader never interprets more than it is asked to.
"""

from __future__ import annotations

from typing import NamedTuple, overload

from shared.errors import DerError

# Universal tags used in this project.
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OID = 0x06
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
SET = 0x31

Buffer = bytes | bytearray  # DER is read where it lies: a fetched CRL stays in its download buffer


class Tlv(NamedTuple):
    """One element: its identifier octet(s) as an int, and where its content and the whole TLV lie."""

    tag: int
    start: int  # first byte of the TLV (the tag)
    content_start: int
    end: int  # one past the last content byte


def read_tlv(buf: Buffer, pos: int, limit: int | None = None) -> Tlv:
    """Read the TLV at `pos`, which must end at or before `limit` (default: the end of `buf`)."""
    if limit is None:
        limit = len(buf)
    start = pos
    if pos >= limit:
        raise DerError(f"truncated: expected an element at offset {pos}")
    tag = buf[pos]
    pos += 1
    if tag & 0x1F == 0x1F:  # high tag number form: keep the whole identifier as the tag value
        while True:
            if pos >= limit:
                raise DerError(f"truncated tag at offset {start}")
            octet = buf[pos]
            tag = (tag << 8) | octet
            pos += 1
            if not octet & 0x80:
                break
            if pos - start > 5:
                raise DerError(f"tag too long at offset {start}")
    if pos >= limit:
        raise DerError(f"truncated length at offset {start}")
    first = buf[pos]
    pos += 1
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError(f"indefinite length at offset {start} is not DER")
    else:
        count = first & 0x7F
        if count > 4 or pos + count > limit:
            raise DerError(f"bad length at offset {start}")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > limit:
        raise DerError(f"element at offset {start} runs past its container")
    return Tlv(tag, start, pos, end)


def header(buf: Buffer, pos: int, limit: int) -> tuple[int, int, int]:
    """`(tag, content_start, end)` of the element at `pos`: the hot-path form of `read_tlv`."""
    if pos + 2 > limit:
        raise DerError(f"truncated: expected an element at offset {pos}")
    tag = buf[pos]
    first = buf[pos + 1]
    if first < 0x80 and tag & 0x1F != 0x1F:
        end = pos + 2 + first
        if end > limit:
            raise DerError(f"element at offset {pos} runs past its container")
        return tag, pos + 2, end
    tlv = read_tlv(buf, pos, limit)
    return tlv.tag, tlv.content_start, tlv.end


def children(buf: Buffer, tlv: Tlv) -> list[Tlv]:
    """The elements directly inside a constructed element."""
    if not tlv.tag & 0x20:
        raise DerError(f"element at offset {tlv.start} is not constructed")
    out = []
    pos = tlv.content_start
    while pos < tlv.end:
        child = read_tlv(buf, pos, tlv.end)
        out.append(child)
        pos = child.end
    return out


def expect(buf: Buffer, pos: int, tag: int, what: str, limit: int | None = None) -> Tlv:
    """Read the TLV at `pos` and require its tag."""
    tlv = read_tlv(buf, pos, limit)
    if tlv.tag != tag:
        raise DerError(f"{what}: expected tag 0x{tag:02X}, found 0x{tlv.tag:02X} at offset {pos}")
    return tlv


@overload
def content(buf: bytes, tlv: Tlv) -> bytes: ...
@overload
def content(buf: bytearray, tlv: Tlv) -> bytearray: ...
def content(buf: Buffer, tlv: Tlv) -> Buffer:
    return buf[tlv.content_start : tlv.end]


@overload
def whole(buf: bytes, tlv: Tlv) -> bytes: ...
@overload
def whole(buf: bytearray, tlv: Tlv) -> bytearray: ...
def whole(buf: Buffer, tlv: Tlv) -> Buffer:
    return buf[tlv.start : tlv.end]


_OID_TEXT: dict[bytes, str] = {}


def decode_oid(body: bytes) -> str:
    """Dotted-decimal text of an OBJECT IDENTIFIER's content octets (memoised: names reuse a few)."""
    text = _OID_TEXT.get(body)
    if text is None:
        text = _decode_oid(body)
        if len(_OID_TEXT) < 4096:
            _OID_TEXT[body] = text
    return text


def _decode_oid(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise DerError("malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for octet in body:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    if first < 40:
        head = [0, first]
    elif first < 80:
        head = [1, first - 40]
    else:
        head = [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


def encode_oid(dotted: str) -> bytes:
    """Content octets of an OBJECT IDENTIFIER given in dotted-decimal text."""
    try:
        arcs = [int(part) for part in dotted.split(".")]
    except ValueError:
        raise DerError(f"not a dotted OID: {dotted!r}") from None
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40) or min(arcs) < 0:
        raise DerError(f"not a valid OID: {dotted!r}")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)
