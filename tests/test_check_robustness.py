"""`certsync check` never crashes on a certificate (issue 17): every certificate `cryptography` trips over
becomes a finding or a one-line error (exit 0, 1 or 2, never 3), and what it only warns about becomes a
finding, never text on stderr. Through a real `certsync` process, then a hypothesis fuzz of structurally
valid mutants of a real certificate through `assess()` and `certsync name`/`parse` in process."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.cli.main import main
from shared.errors import CertsyncError
from shared.times import parse_time
from shared.validation.assessment import TrustStore, assess
from shared.x509.certificate import Certificate, CertificateBundle
from shared.x509.tls_certificate_name import TlsCertificateName
from tests.hostile_certs import (
    AT,
    INTERMEDIATE_NAME,
    hostile,
    intermediate_der,
    intermediate_key,
    key_id,
    leaf_of_intermediate,
    mutant,
    refused_root,
    root_der,
    root_key,
    root_pem,
    signed,
    tbs,
)
from tests.pki import authority_key_id, basic_constraints, explicit, extension, integer, pem, spki, subject_key_id
from tests.test_cli import assert_bad_input, run

CASES = hostile()
# What each case must come to: a finding code in the table, or a one-line error (exit 2) with these words.
EXPECTED = {
    "gost-key": "unsupported-key: The key cannot be read (algorithm 1.2.643.7.1.1.1.1",
    "undecodable-key": "unsupported-key: The key cannot be read (1.2.840.10045.2.1 key: Invalid key)",
    "unknown-version": "malformed-certificate: The certificate is not well-formed DER that a strict parser "
    "accepts (7 is not a valid X509 version)",
    "long-form-tag-in-name": "malformed-certificate",
    "negative-serial": "nonconforming-encoding: The certificate breaks an encoding rule that strict TLS "
    "libraries enforce: Parsed a serial number which wasn't positive",
    "empty-attribute": "nonconforming-encoding: The certificate breaks an encoding rule that strict TLS "
    "libraries enforce: Attribute's length must be >= 2 and <= 2, but it was 0",
    "utf8-in-policy-visiblestring": "nonconforming-encoding: The certificate breaks an encoding rule that strict "
    "TLS libraries enforce: Invalid ASN.1 (UTF-8 characters in a VisibleString)",
}
ONE_LINE_ERRORS = {
    "one-time-validity": "not a valid X.509 certificate (the validity does not hold exactly two times",
    "three-time-validity": "not a valid X.509 certificate (the validity does not hold exactly two times",
    "invalid-utf8-cn": "the subject name cannot be decoded",
    "unexpected-tag-in-subject": "the subject name cannot be decoded",
    "empty-rdn": "the subject name cannot be decoded",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile")
    (directory / "root.pem").write_text(root_pem())
    for label, der in CASES.items():
        (directory / f"{label}.pem").write_text(pem(der))
    return directory


@pytest.mark.parametrize("label", sorted(CASES))
def test_check_answers_every_hostile_certificate_without_a_crash_or_a_warning(files, label):
    result = run(
        "check",
        files / f"{label}.pem",
        "--trust",
        files / "root.pem",
        "--at",
        AT,
        "--revocation",
        "off",
        "--host",
        "mail.contoso.com",
    )
    assert result.returncode in (0, 1, 2), result
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if label in ONE_LINE_ERRORS:
        assert_bad_input(result, ONE_LINE_ERRORS[label])
        return
    assert result.stderr == ""  # no warning from cryptography reaches the terminal
    if label in EXPECTED:
        assert EXPECTED[label] in result.stdout, result.stdout


@pytest.mark.parametrize("label", ["one-time-validity", "three-time-validity"])
def test_name_refuses_a_validity_without_two_times_in_one_line(files, label):
    assert_bad_input(run("name", files / f"{label}.pem"), f"{label}.pem: not a valid X.509 certificate")


def test_a_trust_file_root_cryptography_refuses_is_a_one_line_error(files, tmp_path):
    trust = tmp_path / "refused-root.pem"
    trust.write_text(pem(refused_root()))
    result = run("check", files / "gost-key.pem", "--trust", trust, "--at", AT, "--revocation", "off")
    assert_bad_input(
        result, "refused-root.pem: cannot be used as a trust anchor, cryptography refuses it (9 is not a valid X509"
    )


def test_a_chain_whose_intermediate_cryptography_refuses_is_a_finding():
    trust = TrustStore.from_certificates([Certificate.from_der(root_der(), "root")], "roots")
    leaf = Certificate.from_der(leaf_of_intermediate(), "leaf")
    intermediate = Certificate.from_der(_unknown_version_intermediate(), "intermediate")
    result = assess(CertificateBundle(leaf, (intermediate,)), trust=trust, at=parse_time(AT), revocation="off")
    assert result.status == "Invalid"
    malformed = [f for f in result.findings if f.code == "malformed-certificate"]
    assert malformed and "5 is not a valid X509 version" in malformed[0].message


def _unknown_version_intermediate() -> bytes:
    return signed(
        tbs(
            version=explicit(0, integer(5)),
            serial=integer(2),
            subject=INTERMEDIATE_NAME,
            key_info=spki(intermediate_key()),
            extensions=(
                extension(basic_constraints(True, 0)),
                extension(subject_key_id(key_id(intermediate_key()))),
                extension(authority_key_id(key_id(root_key()))),
            ),
        )
    )


# -- the fuzz ----------------------------------------------------------------------------------------------

FUZZ = {"assess": 0, "cli": 0}
TRUST = TrustStore.from_certificates([Certificate.from_der(root_der(), "root")], "hostile roots")
BASE = {"leaf": signed(tbs()), "intermediate": intermediate_der()}
LEAF_OF_INTERMEDIATE = Certificate.from_der(leaf_of_intermediate(), "leaf")


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 3), which=st.sampled_from(["leaf", "intermediate"]))
def test_fuzzed_certificates_through_assess_raise_only_certsync_errors(seed, rounds, which):
    data = mutant(BASE[which], seed, rounds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cert = Certificate.from_der(data, "mutant")
            str(TlsCertificateName.from_certificate(cert))
            bundle = CertificateBundle(cert) if which == "leaf" else CertificateBundle(LEAF_OF_INTERMEDIATE, (cert,))
            assess(bundle, trust=TRUST, at=parse_time(AT), revocation="off", hosts=["mail.contoso.com"])
        except CertsyncError as exc:
            assert "\n" not in str(exc)
    assert [str(w.message) for w in caught] == []
    FUZZ["assess"] += 1


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 3))
def test_fuzzed_certificates_through_name_and_parse_never_exit_3(tmp_path_factory, seed, rounds, capsys):
    path = tmp_path_factory.mktemp("fuzz") / "mutant.pem"
    path.write_text(pem(mutant(BASE["leaf"], seed, rounds)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["name", str(path)]) in (0, 1, 2)
        assert main(["parse", "<I>CN=Hostile Test Root<S>CN=mail.contoso.com", "--cert", str(path)]) in (0, 1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    assert [str(w.message) for w in caught] == []
    FUZZ["cli"] += 1


def test_print_the_fuzz_counts():
    print(f"\ncertificate fuzz: {FUZZ['assess']} mutants through assess(), {FUZZ['cli']} through name and parse")
