"""Every shared vector renders byte for byte, and each string survives Exchange's re-parse unchanged."""

import json
from pathlib import Path

import pytest

from shared.x509.containers import load_certificate_file
from shared.x509.tls_certificate_name import TlsCertificateName

VECTORS = Path(__file__).parent / "fixtures" / "tls-certificate-name"
CASES = json.loads((VECTORS / "cases.json").read_text(encoding="utf-8"))


def test_all_vectors_are_present():
    assert len(CASES) == 32
    assert all((VECTORS / case["pem_file"]).is_file() for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector_renders_byte_for_byte(case):
    leaf = load_certificate_file(str(VECTORS / case["pem_file"])).leaf
    assert str(leaf.issuer).encode("utf-8") == case["issuer"].encode("utf-8")
    assert str(leaf.subject).encode("utf-8") == case["subject"].encode("utf-8")
    name = TlsCertificateName.from_certificate(leaf)
    assert str(name).encode("utf-8") == case["tls_certificate_name"].encode("utf-8")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector_string_reparses_to_itself(case):
    parsed = TlsCertificateName.parse(case["tls_certificate_name"], strict=False)
    assert str(parsed) == case["tls_certificate_name"]
    leaf = load_certificate_file(str(VECTORS / case["pem_file"])).leaf
    assert parsed.selects(leaf)
