"""Certificate revocation lists read from their own DER, verified over the raw TBS bytes.

`cryptography` re-encodes the whole TBSCertList to check a CRL's signature (2 s for a million entries)
and scans the entry list on every lookup, so certsync walks the CRL itself: the header fields and the
extensions are decoded, the entry list is left as bytes, and the signature is checked over the exact
bytes the CA signed (67 ms for a million entries). A CRL looked up once is scanned: one `bytes.find`
for the serial's DER INTEGER, confirmed by the shape of the entry around it. From the second lookup on
(a cached CRL, the fleet checked against it) an index answers: the entry list walked once, entry by
entry, and the entry offsets kept sorted by serial, so each lookup is a binary search of microseconds.
Either way a serial is a real entry's, never bytes inside another entry.

The checks of `spec/validation.md` §4: the signature is the issuer's and the issuer may sign CRLs
(cRLSign when it has a KeyUsage), CRLNumber is present and not critical, thisUpdate has passed and
nextUpdate has not, no unknown critical extension, no delta or indirect CRL, and a CRL with an
IssuingDistributionPoint covers the URL it was fetched from and the kind of certificate asked about.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import datetime as dt
import re
from array import array
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypedDict

from shared.errors import CertsyncError, DerError
from shared.x509 import der
from shared.x509.certificate import read_time
from shared.x509.der import Buffer

_CRL_NUMBER = "2.5.29.20"
_DELTA_CRL_INDICATOR = "2.5.29.27"
_ISSUING_DISTRIBUTION_POINT = "2.5.29.28"
_AUTHORITY_KEY_ID = "2.5.29.35"
_FRESHEST_CRL = "2.5.29.46"
_AUTHORITY_INFO_ACCESS = "1.3.6.1.5.5.7.1.1"
_REASON_CODE = "2.5.29.21"
_INVALIDITY_DATE = "2.5.29.24"
_CERTIFICATE_ISSUER = "2.5.29.29"
_KNOWN_CRL_EXTENSIONS = {
    _CRL_NUMBER,
    _ISSUING_DISTRIBUTION_POINT,
    _AUTHORITY_KEY_ID,
    _FRESHEST_CRL,
    _AUTHORITY_INFO_ACCESS,
}
_KNOWN_ENTRY_EXTENSIONS = {_REASON_CODE, _INVALIDITY_DATE}

# RFC 5280 §5.3.1 CRLReason, by code, in the words `cryptography.x509.ReasonFlags` uses.
REASONS = {
    0: "unspecified",
    1: "keyCompromise",
    2: "cACompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
    6: "certificateHold",
    8: "removeFromCRL",
    9: "privilegeWithdrawn",
    10: "aACompromise",
}

_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----\r?\n(.*?)-----END X509 CRL-----", re.DOTALL)


class CrlError(CertsyncError):
    """A CRL that cannot be used as evidence; the message says why in general terms."""


@dataclass(frozen=True)
class RevokedEntry:
    """One entry of a CRL: the certificate is revoked since `revoked_at`, for `reason` when given."""

    revoked_at: dt.datetime
    reason: str | None = None


@dataclass(frozen=True, eq=False)
class Crl:
    """A parsed CRL. Not yet trusted: `check()` says whether it is evidence about a certificate."""

    der: Buffer  # a fetched CRL's own download buffer, never copied
    source: str
    issuer_der: bytes
    this_update: dt.datetime
    next_update: dt.datetime | None
    number: int | None
    number_critical: bool
    signature_algorithm: bytes  # the whole AlgorithmIdentifier, as signed
    signature: bytes
    tbs: tuple[int, int]  # where the signed bytes lie in `der`
    entries: tuple[int, int]  # where the revokedCertificates content lies in `der`
    unsupported: str | None = None  # why the CRL cannot be used at all (delta, indirect, unknown critical)
    idp_urls: tuple[str, ...] = ()
    idp_only_user: bool = False
    idp_only_ca: bool = False
    _scanned: list[bool] = field(default_factory=lambda: [False], repr=False)  # whether a lookup has scanned

    def lookup(self, serial: bytes) -> RevokedEntry | None:
        """The entry for the certificate whose serial INTEGER content is `serial`, or None.

        The first lookup scans the entry bytes (17 ms for a million entries): a CRL read for one
        certificate costs no more. The second walks the entry list once and keeps an index with the CRL
        (the entry offsets sorted by serial, about a second for a million entries); that one and every
        later lookup are a binary search of a few microseconds. A CRL cached in `FetchCache` keeps its
        index until its nextUpdate. Raises CrlError when the entry found cannot be used, or when the
        list cannot be indexed because it is not a list of entries."""
        if not self._scanned[0]:
            self._scanned[0] = True
            return self._scan(serial)
        starts = self._index
        needle: Buffer = serial
        found = bisect.bisect_left(starts, needle, key=self._serial_at)
        if found == len(starts) or self._serial_at(starts[found]) != serial:
            return None
        start = starts[found]
        _, _, end = der.header(self.der, start, self.entries[1])
        return self._read_entry(start, end)

    def _scan(self, serial: bytes) -> RevokedEntry | None:
        buf = self.der
        start, end = self.entries
        needle = bytes([der.INTEGER, len(serial)]) + serial if len(serial) < 0x80 else None
        if needle is None:
            return None  # no certificate has a serial of 128 bytes or more
        pos = buf.find(needle, start, end)
        while pos >= 0:
            entry = self._entry_at(pos)
            if entry is not None:
                return entry
            pos = buf.find(needle, pos + 1, end)
        return None

    def _entry_at(self, serial_pos: int) -> RevokedEntry | None:
        """The entry whose serial INTEGER starts at `serial_pos`, or None when those bytes are not one.

        The entry's SEQUENCE header sits just before the serial, and its content must be exactly the
        serial, a Time and optional extensions, ending at the end of the list or at the next entry."""
        buf = self.der
        list_start, list_end = self.entries
        for header_len in (2, 3, 4):
            start = serial_pos - header_len
            if start < list_start or buf[start] != der.SEQUENCE:
                continue
            try:
                tag, content_start, end = der.header(buf, start, list_end)
                if tag != der.SEQUENCE or content_start != serial_pos:
                    continue
                if end != list_end and buf[end] != der.SEQUENCE:
                    continue
                fields = der.children(buf, der.read_tlv(buf, start, end))
                if len(fields) not in (2, 3) or fields[0].tag != der.INTEGER:
                    continue
                return self._read_entry(start, end)
            except DerError:
                continue
        return None

    def _serial_at(self, start: int) -> Buffer:
        """The serial INTEGER content of the entry at `start` (checked to be one when indexed)."""
        buf = self.der
        if buf[start + 1] < 0x80 and buf[start + 3] < 0x80:  # short-form lengths: nearly every entry
            return buf[start + 4 : start + 4 + buf[start + 3]]
        _, content, end = der.header(buf, start, self.entries[1])
        _, serial_start, serial_end = der.header(buf, content, end)
        return buf[serial_start:serial_end]

    @cached_property
    def _index(self) -> array[int]:
        """The offset of every entry, sorted by serial (a stable sort: of equal serials, the first listed
        comes first). Walking the list entry by entry is what confirms that a serial found is an entry's,
        never bytes inside another entry."""
        buf = self.der
        pos, end = self.entries
        starts: list[int] = []
        serials: list[Buffer] = []
        add_start, add_serial = starts.append, serials.append
        try:
            while pos < end:
                # The common shape inline (SEQUENCE and INTEGER with short-form lengths): a million
                # entries are walked in well under a second; anything else goes through der.header.
                length, serial_length = buf[pos + 1], buf[pos + 3]
                if buf[pos] == der.SEQUENCE and length < 0x80 and buf[pos + 2] == der.INTEGER and serial_length < 0x80:
                    entry_end = pos + 2 + length
                    if serial_length + 2 > length or entry_end > end:
                        raise DerError(f"entry at offset {pos} runs past its container")
                    add_serial(buf[pos + 4 : pos + 4 + serial_length])
                else:
                    tag, content, entry_end = der.header(buf, pos, end)
                    if tag != der.SEQUENCE or buf[content] != der.INTEGER:
                        raise DerError(f"entry at offset {pos} is not a SEQUENCE starting with a serial")
                    _, serial_start, serial_end = der.header(buf, content, entry_end)
                    add_serial(buf[serial_start:serial_end])
                add_start(pos)
                pos = entry_end
        except (DerError, IndexError) as exc:
            raise CrlError(f"its list of revoked certificates is not valid DER ({exc})") from None
        order = sorted(range(len(serials)), key=serials.__getitem__)
        del serials
        return array("Q", [starts[i] for i in order])

    def _read_entry(self, start: int, end: int) -> RevokedEntry:
        try:
            return self._entry(start, end)
        except DerError as exc:
            raise CrlError(f"the entry at offset {start} is not a revoked certificate ({exc})") from None

    def _entry(self, start: int, end: int) -> RevokedEntry:
        buf = self.der
        fields = der.children(buf, der.read_tlv(buf, start, end))
        if len(fields) not in (2, 3) or fields[0].tag != der.INTEGER:
            raise DerError("not (serial, revocationDate, extensions)")
        revoked_at = read_time(buf, fields[1])
        reason = None
        if len(fields) == 3:
            for oid, critical, value in _extensions(buf, fields[2]):
                if oid == _REASON_CODE:
                    code = der.expect(value, 0, 0x0A, "reasonCode")  # ENUMERATED
                    number = int.from_bytes(der.content(value, code), "big")
                    reason = REASONS.get(number, f"reason {number}")
                elif oid == _CERTIFICATE_ISSUER:
                    raise CrlError("an entry names another certificate issuer (an indirect CRL)")
                elif critical and oid not in _KNOWN_ENTRY_EXTENSIONS:
                    raise CrlError(f"an entry has an unknown critical extension {oid}")
        return RevokedEntry(revoked_at, reason)

    def verify_signature(self, public_key: object) -> bool:
        """Whether the issuer's `public_key` (a cryptography key) signed the TBS bytes as they are."""
        from shared.x509.signatures import algorithm_oid, verify_signature

        start, end = self.tbs
        algorithm = algorithm_oid(self.signature_algorithm)
        return verify_signature(public_key, algorithm, self.signature, memoryview(self.der)[start:end])

    def check(
        self,
        *,
        at: dt.datetime,
        fetched_from: str | None = None,
        for_ca: bool = False,
        skew: dt.timedelta | None = None,
    ) -> None:
        """Raise CrlError unless this (signature-checked) CRL is fresh usable evidence at `at`."""
        skew = skew if skew is not None else dt.timedelta(minutes=5)
        if self.unsupported:
            raise CrlError(self.unsupported)
        if self.number is None:
            raise CrlError("it has no CRLNumber")
        if self.number_critical:
            raise CrlError("its CRLNumber is marked critical")
        if self.this_update > at + skew:
            raise CrlError(f"it is not yet in effect (thisUpdate {self.this_update:%Y-%m-%d %H:%M}Z)")
        if self.next_update is None:
            raise CrlError("it has no nextUpdate, so its freshness cannot be judged")
        if self.next_update < at - skew:
            raise CrlError(f"it is stale (nextUpdate {self.next_update:%Y-%m-%d %H:%M}Z has passed)")
        if for_ca and self.idp_only_user:
            raise CrlError("it covers only end-entity certificates")
        if not for_ca and self.idp_only_ca:
            raise CrlError("it covers only CA certificates")
        if fetched_from and self.idp_urls and fetched_from not in self.idp_urls:
            raise CrlError("its issuing distribution point is not the URL it was fetched from")


def parse_crl(data: Buffer, source: str) -> Crl:
    """A CRL from DER or PEM bytes; raises CrlError naming `source` when it is not one.

    DER is read where it lies, never copied: a fetched CRL stays in the buffer it was streamed into (the
    caller hands it over and must not change it), which the returned Crl keeps."""
    if b"-----BEGIN" in data[:64]:
        match = _PEM_CRL.search(data)
        if not match:
            raise CrlError(f"{source}: holds no X509 CRL block")
        try:
            data = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        except binascii.Error:
            raise CrlError(f"{source}: the X509 CRL block is not valid base64") from None
    try:
        return _walk(data, source)
    except DerError as exc:
        raise CrlError(f"{source}: not a valid CRL ({exc})") from None


def _walk(buf: Buffer, source: str) -> Crl:
    outer = der.expect(buf, 0, der.SEQUENCE, "CertificateList")
    if outer.end != len(buf):
        raise DerError("bytes after the end of the CRL")
    tbs = der.expect(buf, outer.content_start, der.SEQUENCE, "TBSCertList", outer.end)
    algorithm = der.expect(buf, tbs.end, der.SEQUENCE, "signatureAlgorithm", outer.end)
    bits = der.expect(buf, algorithm.end, der.BIT_STRING, "signatureValue", outer.end)
    if bits.end != outer.end or bits.content_start >= bits.end or buf[bits.content_start] != 0:
        raise DerError("bad signature value")
    pos, limit = tbs.content_start, tbs.end
    first = der.read_tlv(buf, pos, limit)
    if first.tag == der.INTEGER:  # version v2
        pos = first.end
    inner_algorithm = der.expect(buf, pos, der.SEQUENCE, "signature", limit)
    if der.whole(buf, inner_algorithm) != der.whole(buf, algorithm):
        raise DerError("the signature algorithm inside and outside the TBS differ")
    issuer = der.expect(buf, inner_algorithm.end, der.SEQUENCE, "issuer", limit)
    this_tlv = der.read_tlv(buf, issuer.end, limit)
    this_update = read_time(buf, this_tlv)
    pos = this_tlv.end
    next_update = None
    if pos < limit and buf[pos] in (der.UTC_TIME, der.GENERALIZED_TIME):
        next_tlv = der.read_tlv(buf, pos, limit)
        next_update = read_time(buf, next_tlv)
        pos = next_tlv.end
    entries = (pos, pos)
    if pos < limit and buf[pos] == der.SEQUENCE:
        revoked = der.read_tlv(buf, pos, limit)
        entries = (revoked.content_start, revoked.end)
        pos = revoked.end
    fields: _CrlExtensions = {"number": None, "number_critical": False, "unsupported": None}
    if pos < limit:
        block = der.read_tlv(buf, pos, limit)
        if block.tag != 0xA0 or block.end != limit:
            raise DerError("unexpected fields at the end of the TBSCertList")
        inner = der.read_tlv(buf, block.content_start, block.end)
        for oid, critical, value in _extensions(buf, inner):
            _read_crl_extension(fields, oid, critical, value)
    return Crl(
        der=buf,
        source=source,
        issuer_der=bytes(der.whole(buf, issuer)),
        this_update=this_update,
        next_update=next_update,
        signature_algorithm=bytes(der.whole(buf, algorithm)),
        signature=bytes(buf[bits.content_start + 1 : bits.end]),
        tbs=(tbs.start, tbs.end),
        entries=entries,
        **fields,
    )


class _CrlExtensions(TypedDict, total=False):
    """The fields of `Crl` that its extensions give."""

    number: int | None
    number_critical: bool
    unsupported: str | None
    idp_urls: tuple[str, ...]
    idp_only_user: bool
    idp_only_ca: bool


def _read_crl_extension(fields: _CrlExtensions, oid: str, critical: bool, value: bytes) -> None:
    if oid == _CRL_NUMBER:
        number = der.expect(value, 0, der.INTEGER, "CRLNumber")
        fields["number"] = int.from_bytes(der.content(value, number), "big", signed=True)
        fields["number_critical"] = critical
    elif oid == _DELTA_CRL_INDICATOR:
        fields["unsupported"] = "it is a delta CRL, which certsync does not combine with a base CRL"
    elif oid == _ISSUING_DISTRIBUTION_POINT:
        idp = der.expect(value, 0, der.SEQUENCE, "issuingDistributionPoint")
        for part in der.children(value, idp):
            if part.tag == 0xA0:  # distributionPoint: [0] fullName GeneralNames
                names = der.read_tlv(value, part.content_start, part.end)
                if names.tag == 0xA0:
                    fields["idp_urls"] = tuple(
                        der.content(value, g).decode("latin-1") for g in der.children(value, names) if g.tag == 0x86
                    )
            elif part.tag == 0x81:
                fields["idp_only_user"] = der.content(value, part) != b"\x00"
            elif part.tag == 0x82:
                fields["idp_only_ca"] = der.content(value, part) != b"\x00"
            elif part.tag == 0x83:
                fields["unsupported"] = "it covers only some revocation reasons (a partitioned CRL)"
            elif part.tag == 0x84 and der.content(value, part) != b"\x00":
                fields["unsupported"] = "it is an indirect CRL"
            elif part.tag == 0x85 and der.content(value, part) != b"\x00":
                fields["unsupported"] = "it covers only attribute certificates"
    elif critical and oid not in _KNOWN_CRL_EXTENSIONS:
        fields["unsupported"] = f"it has an unknown critical extension {oid}"


def _extensions(buf: Buffer, seq: der.Tlv) -> list[tuple[str, bool, bytes]]:
    """(oid, critical, value bytes) of each Extension in a SEQUENCE OF Extension."""
    out = []
    for ext in der.children(buf, seq):
        parts = der.children(buf, ext)
        if len(parts) not in (2, 3) or parts[0].tag != der.OID or parts[-1].tag != der.OCTET_STRING:
            raise DerError(f"extension at offset {ext.start} is not (id, critical, value)")
        critical = len(parts) == 3 and parts[1].tag == der.BOOLEAN and der.content(buf, parts[1]) != b"\x00"
        oid, value = bytes(der.content(buf, parts[0])), bytes(der.content(buf, parts[-1]))
        out.append((der.decode_oid(oid), critical, value))
    return out
