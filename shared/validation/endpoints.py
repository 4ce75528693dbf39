"""HOST:PORT, read and written one way: allow-list entries for the guarded fetch, probe endpoints, settings.

HOST is a DNS name (no wildcard) or an IP address, an IPv6 address in brackets when a port follows
(`[2001:db8::1]:25`); a bare IPv6 address is taken whole. Anything else is a one-line CertsyncError that
names the input and shows an example.
"""

from __future__ import annotations

import ipaddress

from shared.errors import CertsyncError
from shared.x509.tls_certificate_name import is_exchange_host_name


def parse_host_port(text: str, default_port: int, what: str, example: str) -> tuple[str, int]:
    """`HOST`, `HOST:PORT`, `[v6]`, `[v6]:PORT` or a bare IPv6 address -> (lower-case host, port).

    `what` names the input in errors (`--allow-host`, `probe endpoint`), `example` is shown after
    "give HOST or HOST:PORT, e.g."."""
    help_ = f"give HOST or HOST:PORT, e.g. {example}"

    def refuse(problem: str) -> CertsyncError:
        return CertsyncError(f"{what} {text!r}: {problem}{help_}")

    raw = text.strip() if isinstance(text, str) else ""
    host, port_text = raw, ""
    if raw.startswith("["):
        inside, bracket, rest = raw[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise refuse("")
        host, port_text = inside, rest[1:] if rest else ""
        if not is_ip_address(host) or ":" not in host:
            raise refuse("brackets hold an IPv6 address; ")
    elif raw.count(":") > 1:
        if not is_ip_address(raw):
            raise refuse("")
    elif ":" in raw:
        host, _, port_text = raw.partition(":")
        if not port_text:
            raise refuse("the port is missing after ':'; ")
    host = host.lower() if is_ip_address(host) else host.lower().rstrip(".")
    if not host or not (is_ip_address(host) or (is_exchange_host_name(host) and not host.startswith("*."))):
        raise refuse("the host is not a DNS name or IP address; ")
    port = default_port
    if port_text or raw.endswith(":"):
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise refuse("the port is not a number from 1 to 65535; ")
        port = int(port_text)
    return host, port


def format_endpoint(host: str, port: int) -> str:
    """HOST:PORT, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip_address(text: str) -> bool:
    """Whether `text` is an IPv4 or IPv6 address (no brackets)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
