"""The TlsCertificateName that Exchange connectors use to find their certificate.

`"<I>" + Issuer + "<S>" + Subject`, with both names as Windows prints them. Built from a certificate,
parsed from a string copied out of `Get-SendConnector`, compared the way Exchange compares (canonical
text, case ignored, order kept), and diffed across a renewal: the single most useful check when a
certificate is renewed, because a changed string is what breaks mail flow.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from shared.errors import NameSyntaxError
from shared.x509.certificate import Certificate
from shared.x509.x500 import COMMON_NAME, X500Name, fold_case

_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def is_exchange_host_name(value: str) -> bool:
    """A DNS name, optionally a `*.` wildcard: what Exchange requires of the subject's first CN."""
    host = value[2:] if value.startswith("*.") else value
    if not host or len(host) > 253:
        return False
    return all(_DNS_LABEL.match(label) for label in host.split("."))


@dataclass(frozen=True, slots=True)
class TlsCertificateName:
    """An issuer (None when the string has no `<I>` part) and a subject."""

    issuer: X500Name | None
    subject: X500Name

    @classmethod
    def from_certificate(cls, cert: Certificate) -> TlsCertificateName:
        return cls(cert.issuer, cert.subject)

    @classmethod
    def parse(cls, text: str, *, strict: bool = True) -> TlsCertificateName:
        """Read a TlsCertificateName as Exchange does. With `strict`, also refuse what the cmdlets
        refuse (see `problems`); without it, only the syntax is checked."""
        body = text.strip()
        offset = len(text) - len(text.lstrip())  # so positions count from the start of `text`
        issuer_text: str | None = None
        if body[:3].upper() == "<I>":
            close = body.find("<", 3)
            if close < 0:
                raise NameSyntaxError(f"{text!r} has <I> but no <S>; the form is <I>issuer<S>subject")
            issuer_text, body = body[3:close], body[close:]
        if body[:3].upper() != "<S>":
            if issuer_text is not None:
                raise NameSyntaxError(
                    f"{text!r}: the issuer cannot contain '<'; expected <S> at character {offset + close + 1}"
                )
            raise NameSyntaxError(f"{text!r} has no <S> tag; the form is <I>issuer<S>subject")
        issuer = None if issuer_text is None else _parse_part(issuer_text, "issuer")
        name = cls(issuer, _parse_part(body[3:], "subject"))
        if strict and (problems := name.problems()):
            raise NameSyntaxError(problems[0])
        return name

    def __str__(self) -> str:
        issuer = "" if self.issuer is None else "<I>" + str(self.issuer)
        return issuer + "<S>" + str(self.subject)

    def problems(self) -> list[str]:
        """Why Exchange would refuse this value on a connector; empty when it would accept it."""
        found = []
        if self.issuer is not None and "<" in str(self.issuer):
            found.append(
                f"the issuer {str(self.issuer)!r} contains '<', which a TlsCertificateName cannot hold; "
                "use a certificate from another issuing CA"
            )
        read = self.first_cn_as_exchange_reads_it()
        if read is None:
            found.append("the subject has no CN; Exchange needs the first CN to be the host name")
        elif not is_exchange_host_name(read):
            cn = self.subject.first(COMMON_NAME)
            shown = repr(cn) if read == cn else f"{cn!r} (read by Exchange as {read!r}, up to the next comma)"
            found.append(
                f"the subject's first CN {shown} is not a DNS host name, so Exchange rejects the value; "
                "re-issue the certificate with the host name as its CN"
            )
        return found

    def first_cn_as_exchange_reads_it(self) -> str | None:
        """The subject text from the first `CN=` up to the next `,`, as Exchange takes it: a quoted
        value keeps its quote, and the rest of a multi-valued RDN (` + O=x`) comes along."""
        return _first_cn(self.subject)

    def exchange_key(self) -> str:
        return fold_case(str(self))

    def matches(self, other: TlsCertificateName) -> bool:
        """Whether Exchange treats the two as the same value (issuer ignored where either lacks one)."""
        if self.subject.exchange_key() != other.subject.exchange_key():
            return False
        return self.issuer is None or other.issuer is None or self.issuer.exchange_key() == other.issuer.exchange_key()

    def selects(self, cert: Certificate) -> bool:
        """Whether a connector holding this value would look for `cert` (chain validity aside)."""
        return self.matches(TlsCertificateName.from_certificate(cert))


@functools.lru_cache(maxsize=4096)  # planning asks it of the same few subjects thousands of times
def _first_cn(subject: X500Name) -> str | None:
    for rdn in subject.rdns:
        for i, ava in enumerate(rdn):
            if ava.oid == COMMON_NAME:
                rendered = str(ava)[len("CN=") :] + "".join(" + " + str(rest) for rest in rdn[i + 1 :])
                return rendered.split(",", 1)[0]
    return None


def _parse_part(text: str, which: str) -> X500Name:
    try:
        return X500Name.parse(text)
    except NameSyntaxError as exc:
        raise NameSyntaxError(f"in the {which}: {exc}") from None


@dataclass(frozen=True)
class NameDiff:
    """What a renewal changed, as far as the connectors are concerned."""

    old: TlsCertificateName
    new: TlsCertificateName
    dns_names_added: tuple[str, ...]
    dns_names_removed: tuple[str, ...]

    @property
    def issuer_changed(self) -> bool:
        return not _same(self.old.issuer, self.new.issuer)

    @property
    def subject_changed(self) -> bool:
        return not self.old.subject.matches(self.new.subject)

    @property
    def change(self) -> str:
        """unchanged, issuer_changed, subject_changed, or issuer_and_subject_changed."""
        if self.issuer_changed and self.subject_changed:
            return "issuer_and_subject_changed"
        if self.issuer_changed:
            return "issuer_changed"
        if self.subject_changed:
            return "subject_changed"
        return "unchanged"

    @property
    def connector_update_required(self) -> bool:
        """True when send/receive connectors and the hybrid configuration must be given the new value."""
        return self.issuer_changed or self.subject_changed

    @property
    def differs_only_in_case(self) -> bool:
        """The strings differ, but only in case: Exchange still matches, no update needed."""
        return not self.connector_update_required and str(self.old) != str(self.new)


def _same(a: X500Name | None, b: X500Name | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.matches(b)


def diff_certificates(old: Certificate, new: Certificate) -> NameDiff:
    """Compare the TlsCertificateName and DNS names of two versions of a certificate."""
    old_dns = {fold_case(n): n for n in old.dns_names}
    new_dns = {fold_case(n): n for n in new.dns_names}
    return NameDiff(
        old=TlsCertificateName.from_certificate(old),
        new=TlsCertificateName.from_certificate(new),
        dns_names_added=tuple(new_dns[k] for k in new_dns if k not in old_dns),
        dns_names_removed=tuple(old_dns[k] for k in old_dns if k not in new_dns),
    )
