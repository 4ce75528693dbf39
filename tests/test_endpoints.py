"""The one HOST:PORT reader (shared/validation/endpoints.py) behind --allow-host, CERTSYNC_ALLOW_HOSTS and probe
endpoints: the same input reads the same way everywhere, and every refusal is one line naming the input."""

from __future__ import annotations

import pytest

from shared.errors import CertsyncError
from shared.validation.endpoints import format_endpoint, is_ip_address, parse_host_port
from shared.validation.fetch import parse_allow_entry
from shared.validation.probe import parse_endpoint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail.Contoso.COM.", ("mail.contoso.com", 7)),
        ("mail.contoso.com:2525", ("mail.contoso.com", 2525)),
        ("192.0.2.1", ("192.0.2.1", 7)),
        ("[2001:DB8::1]:25", ("2001:db8::1", 25)),
        ("[2001:db8::1]", ("2001:db8::1", 7)),
        ("2001:db8::1", ("2001:db8::1", 7)),
    ],
)
def test_host_port_forms(text, expected):
    assert parse_host_port(text, 7, "thing", "x") == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[192.0.2.1]:25", "brackets hold an IPv6 address"),
        ("[2001:db8::1]x", "give HOST"),
        ("host:", "the port is missing"),
        ("host:0", "not a number from 1 to 65535"),
        ("host:65536", "not a number from 1 to 65535"),
        ("host:２５", "not a number from 1 to 65535"),
        ("*.contoso.com", "not a DNS name or IP address"),
        ("a:b:c", "give HOST"),
        ("", "not a DNS name or IP address"),
    ],
)
def test_refusals_name_the_input_and_show_an_example(text, problem):
    with pytest.raises(CertsyncError) as caught:
        parse_host_port(text, 25, "probe endpoint", "mail.contoso.com")
    message = str(caught.value)
    assert message.startswith(f"probe endpoint {text!r}: ") and problem in message
    assert message.endswith("give HOST or HOST:PORT, e.g. mail.contoso.com") and "\n" not in message


@pytest.mark.parametrize("text", ["PKI.Contoso.Local:8080", "[::1]:8080", "10.1.2.3", "crl.contoso.local"])
def test_allow_entries_and_probe_endpoints_read_alike(text):
    assert parse_allow_entry(text, 25) == parse_endpoint(text)


def test_format_endpoint_brackets_ipv6_only():
    assert format_endpoint("2001:db8::1", 25) == "[2001:db8::1]:25"
    assert format_endpoint("mail.contoso.com", 25) == "mail.contoso.com:25"
    assert is_ip_address("::1") and not is_ip_address("[::1]")
