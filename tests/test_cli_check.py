"""`certsync check` through a real process: exit codes, the table, the JSON, every bad-input path, and
fetches that reach a loopback CRL server only when it is allow-listed."""

import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.chains import issue, make_crl, make_name, pem_of
from tests.test_cli import PASSWORD, assert_bad_input, run, write

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
EKU = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.fixture
def pki(tmp_path, http_server):
    root = issue(make_name("CLI Test Root", "Contoso"), kind="rsa", ca=True, path_length=1)
    intermediate = issue(
        make_name("CLI Issuing CA", "Contoso"),
        issuer=root,
        kind="rsa",
        ca=True,
        path_length=0,
        crl_urls=[http_server.url("/root.crl")],
    )
    leaf = issue(
        make_name("mail.contoso.com", "Contoso"),
        issuer=intermediate,
        kind="rsa",
        dns_names=["mail.contoso.com", "autodiscover.contoso.com"],
        eku=EKU,
        crl_urls=[http_server.url("/issuing.crl")],
    )
    http_server.route("/root.crl", body=make_crl(root))
    http_server.route("/issuing.crl", body=make_crl(intermediate))
    return {
        "root": root,
        "intermediate": intermediate,
        "leaf": leaf,
        "bundle": write(tmp_path, "mail.pem", pem_of([leaf, intermediate])),
        "trust": write(tmp_path, "root.pem", root.pem),
        "allow": f"127.0.0.1:{http_server.port}",
        "server": http_server,
        "tmp": tmp_path,
    }


def test_a_valid_certificate_exits_0_with_a_readable_table(pki):
    result = run(
        "check", pki["bundle"], "--trust", pki["trust"], "--allow-host", pki["allow"], "--host", "mail.contoso.com"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Status", "Valid"]
    assert lines[1].startswith("TlsCertificateName  <I>CN=CLI Issuing CA, O=Contoso, C=US<S>CN=mail.contoso.com")
    assert "1. CN=mail.contoso.com" in result.stdout and "trust store" in result.stdout
    assert result.stderr == ""


def test_json_has_the_documented_shape(pki):
    result = run("check", pki["bundle"], "--trust", pki["trust"], "--allow-host", pki["allow"], "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"status", "tls_certificate_name", "findings", "path"} <= set(report)
    assert report["status"] == "Valid"
    assert [p["source"] for p in report["path"]] == ["delivered", "delivered", "trust store"]
    for finding in report["findings"]:
        assert {"code", "severity", "subject", "message", "remedy"} <= set(finding)


def test_without_the_allow_list_the_loopback_crl_server_is_never_contacted(pki):
    result = run("check", pki["bundle"], "--trust", pki["trust"], "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "RevocationCheckFailure"
    assert pki["server"].connections == 0


def test_soft_and_off_policies(pki):
    soft = run("check", pki["bundle"], "--trust", pki["trust"], "--revocation", "soft", "--json")
    assert soft.returncode == 0
    assert any(
        f["code"] == "revocation-unknown" and f["severity"] == "warning" for f in json.loads(soft.stdout)["findings"]
    )
    off = run("check", pki["bundle"], "--trust", pki["trust"], "--revocation", "off", "--json")
    assert off.returncode == 0
    assert any(f["code"] == "revocation-not-checked" for f in json.loads(off.stdout)["findings"])


def test_supplied_crls_decide_offline(pki):
    crl = make_crl(pki["intermediate"], [(pki["leaf"].cert.serial_number, None, NOW)])
    path = write(pki["tmp"], "issuing.crl", crl)
    root_crl = write(pki["tmp"], "root.crl", make_crl(pki["root"]))
    result = run("check", pki["bundle"], "--trust", pki["trust"], "--crl", path, "--crl", root_crl)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].split() == ["Status", "Revoked"]
    assert pki["server"].connections == 0


def test_a_host_not_covered_and_a_time_after_expiry(pki):
    result = run(
        "check", pki["bundle"], "--trust", pki["trust"], "--revocation", "off", "--host", "smtp.contoso.com", "--json"
    )
    assert json.loads(result.stdout)["status"] == "Invalid"
    later = run("check", pki["bundle"], "--trust", pki["trust"], "--revocation", "off", "--at", "2099-01-01", "--json")
    assert later.returncode == 1
    assert json.loads(later.stdout)["status"] == "DateInvalid"


def test_mozilla_is_the_default_trust_store(pki):
    result = run("check", pki["bundle"], "--revocation", "off", "--json")
    assert json.loads(result.stdout)["status"] == "Untrusted"


def test_a_pfx_is_checked_with_its_password_from_the_environment(pki):
    leaf, intermediate = pki["leaf"], pki["intermediate"]
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption

    blob = pkcs12.serialize_key_and_certificates(
        b"mail", leaf.key, leaf.cert, [intermediate.cert], BestAvailableEncryption(PASSWORD.encode())
    )
    path = write(pki["tmp"], "mail.pfx", blob)
    result = run(
        "check", path, "--password-env", "PFX_PASS", "--trust", pki["trust"], "--revocation", "off",
        env={"PFX_PASS": PASSWORD},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--at", "next tuesday"], ["--at", "ISO 8601"]),
        (["--trust", "missing-roots.pem"], ["missing-roots.pem", "cannot be read"]),
        (["--crl", "missing.crl"], ["missing.crl", "cannot be read"]),
        (["--allow-host", "http://crl.contoso.local/"], ["--allow-host", "HOST:PORT"]),
    ],
)
def test_bad_options_are_one_line_errors(pki, extra, words):
    assert_bad_input(run("check", pki["bundle"], *extra), *words)


def test_a_file_that_is_not_a_crl_is_named(pki):
    not_crl = write(pki["tmp"], "notes.crl", b"this is not a CRL")
    assert_bad_input(run("check", pki["bundle"], "--crl", not_crl), "notes.crl", "not a valid CRL")


def test_a_trust_file_without_certificates_is_named(pki):
    empty = write(pki["tmp"], "roots.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert_bad_input(run("check", pki["bundle"], "--trust", empty), "roots.pem")


def test_a_bad_revocation_policy_is_refused_by_the_parser(pki):
    result = run("check", pki["bundle"], "--revocation", "maybe")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_a_missing_certificate_file(pki):
    assert_bad_input(run("check", pki["tmp"] / "nope.pem"), "nope.pem", "no such file")


def test_a_crl_cap_outside_1_to_1024_mib_is_refused(pki):
    result = run("check", pki["bundle"], "--crl-max-mb", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--crl-max-mb: '0' is not a whole number of MiB from 1 to 1024" in result.stderr
