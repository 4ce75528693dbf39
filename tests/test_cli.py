"""`certsync` as a user runs it: a real process, every exit path, stdout, stderr and JSON."""

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.chains import build_chain, issue, make_name

CERTSYNC = str(Path(sys.executable).with_name("certsync"))
VECTORS = Path(__file__).parent / "fixtures" / "tls-certificate-name"
PASSWORD = "correct horse battery staple"


def run(*args, env=None):
    environment = {k: v for k, v in os.environ.items() if k != "CERTSYNC_DEBUG"} | (env or {})
    return subprocess.run([CERTSYNC, *map(str, args)], capture_output=True, text=True, env=environment, timeout=60)


def assert_bad_input(result, *words):
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("certsync: error: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- name ---------------------------------------------------------------------------------------


def test_name_prints_the_exact_string_and_exits_0():
    result = run("name", VECTORS / "godaddy_g2_dv.pem")
    assert result.returncode == 0, result.stderr
    expected = json.loads((VECTORS / "cases.json").read_text())[0]["tls_certificate_name"]
    assert result.stdout.splitlines()[0] == "TlsCertificateName  " + expected
    assert result.stderr == ""


def test_name_json_has_every_field_with_values_computed_independently(tmp_path):
    chain = build_chain("rsa", dns_names=("mail.contoso.com", "autodiscover.contoso.com"))
    path = write(tmp_path, "bundle.pem", chain.root.pem + chain.leaf.pem + chain.intermediate.pem)
    result = run("name", path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    cert = chain.leaf.cert
    assert report["issuer"] == "CN=Contoso Issuing CA 1, O=Contoso, C=US"
    assert report["subject"] == "CN=mail.contoso.com, O=Contoso, C=US"
    assert report["tls_certificate_name"] == "<I>" + report["issuer"] + "<S>" + report["subject"]
    assert report["thumbprint"] == hashlib.sha1(chain.leaf.der).hexdigest().upper()
    serial = cert.serial_number
    encoded = serial.to_bytes((serial.bit_length() + 8) // 8, "big")  # DER INTEGER: sign bit kept clear
    assert report["serial"] == encoded.hex().upper()
    assert report["not_before"] == cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert report["not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert report["dns_names"] == ["mail.contoso.com", "autodiscover.contoso.com"]
    assert report["exchange_accepts"] is True and report["problems"] == []
    assert [c["subject"] for c in report["chain"]] == [
        "CN=Contoso Issuing CA 1, O=Contoso, C=US",
        "CN=Contoso Root CA, O=Contoso, C=US",
    ]


def test_name_of_a_certificate_exchange_cannot_name_exits_1_with_the_reason():
    result = run("name", VECTORS / "q_comma.pem")
    assert result.returncode == 1
    assert (
        "Problem: the subject's first CN 'a,b' (read by Exchange as '\"a', up to the next comma) "
        "is not a DNS host name" in result.stdout
    )
    assert result.stderr == ""


def test_name_reads_a_pfx_with_the_password_from_the_environment_and_never_prints_it(tmp_path):
    chain = build_chain("ec")
    encryption = serialization.BestAvailableEncryption(PASSWORD.encode())
    pfx = pkcs12.serialize_key_and_certificates(
        b"mail", chain.leaf.key, chain.leaf.cert, [chain.intermediate.cert], encryption
    )
    path = write(tmp_path, "mail.pfx", pfx)
    result = run("name", path, "--password-env", "PFX_PASSWORD", "--json", env={"PFX_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["subject"] == "CN=mail.contoso.com, O=Contoso, C=US"
    key_pem = chain.leaf.key_pem.decode()
    for secret in (PASSWORD, key_pem.splitlines()[1]):
        assert secret not in result.stdout + result.stderr


def test_a_wrong_pfx_password_is_bad_input_naming_the_file(tmp_path):
    chain = build_chain("ec")
    encryption = serialization.BestAvailableEncryption(PASSWORD.encode())
    path = write(
        tmp_path,
        "mail.pfx",
        pkcs12.serialize_key_and_certificates(b"mail", chain.leaf.key, chain.leaf.cert, None, encryption),
    )
    wrong = run("name", path, "--password-env", "PFX_PASSWORD", env={"PFX_PASSWORD": "guess"})
    assert_bad_input(wrong, str(path), "wrong password")
    assert "guess" not in wrong.stderr
    assert_bad_input(run("name", path), str(path), "password-protected", "--password-env")
    unset = run("name", path, "--password-env", "Hunter2-typed-here")
    assert_bad_input(unset, str(path), "named by --password-env is not set")
    assert "Hunter2" not in unset.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--password", "Hunter2secret"], "pass its name with --password-env"),
        (["--pass", "Hunter2secret"], "pass its name with --password-env"),
        (["--passw", "Hunter2secret"], "(values not shown)"),
        (["--pwd=Hunter2secret"], "(values not shown)"),
        (["Hunter2secret"], "(values not shown)"),
        # issue 17: a password that starts with "-" after a misspelled option was echoed as an option name
        (["--pasword", "-Hunter2secret"], "unrecognized arguments: --pasword and 1 more argument(s) (values not"),
        (["--pasword", "--Hunter2secret"], "unrecognized arguments: --pasword and 1 more argument(s)"),
        (["-pHunter2secret"], "unrecognized arguments: an argument (values not shown)"),
        (["--pasword=-Hunter2secret", "-Hunter2secret"], "unrecognized arguments: --pasword and 1 more"),
    ],
)
def test_a_password_on_the_command_line_is_refused_without_echoing_it(args, says):
    result = run("name", VECTORS / "zerossl.pem", *args)
    assert result.returncode == 2
    assert "Hunter2secret" not in result.stderr + result.stdout
    assert says in result.stderr  # the refusal (a known option) or the unechoed unknown arguments


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["no such file"]),
        (b"", ["is empty"]),
        (b"\x00\x01garbage that is no certificate", ["is not a certificate"]),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", ["holds no certificate", "PRIVATE KEY"]),
    ],
)
def test_unreadable_input_is_one_line_and_exit_2(tmp_path, content, words):
    path = tmp_path / "input.pem"
    if content is not None:
        path.write_bytes(content)
    assert_bad_input(run("name", path), str(path), *words)


def test_a_name_that_cannot_be_decoded_is_bad_input_naming_the_certificate(tmp_path):
    leaf = issue(make_name("zzzz.contoso.com", "Contoso"))
    # Same length, so the DER stays well-formed: the UTF8String CN now holds invalid UTF-8.
    broken = leaf.der.replace(b"zzzz.contoso.com", b"\xff\xfe.contoso.com\xc3\x28")
    assert broken != leaf.der
    path = write(tmp_path, "broken.cer", broken)
    assert_bad_input(run("name", path), str(path), "cannot be decoded", "UTF8String")


def test_a_directory_is_bad_input(tmp_path):
    assert_bad_input(run("name", tmp_path), str(tmp_path), "is a directory")


# --- diff ---------------------------------------------------------------------------------------


def test_diff_of_an_issuer_rotation_requires_a_connector_update_and_exits_1():
    result = run("diff", VECTORS / "rotation_le_r10.pem", VECTORS / "letsencrypt_r11.pem", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["change"] == "issuer_changed"
    assert report["connector_update_required"] is True
    assert report["old"]["tls_certificate_name"] == "<I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    assert report["new"]["tls_certificate_name"] == "<I>CN=R11, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    human = run("diff", VECTORS / "rotation_le_r10.pem", VECTORS / "letsencrypt_r11.pem")
    assert human.returncode == 1
    assert "UPDATE REQUIRED" in human.stdout
    assert "'<I>CN=R11, O=Let''s Encrypt, C=US<S>CN=mail.contoso.com'" in human.stdout
    assert report["issuer_change"]["expected"] is True  # the table of CA hierarchies explains it
    assert "Let's Encrypt rotated R10 -> R11 within Generation X, expected" in human.stdout


def test_diff_of_a_renewal_with_the_same_names_needs_no_update_and_exits_0(tmp_path):
    chain = build_chain("ec", dns_names=("mail.contoso.com",))
    dns_names = ("mail.contoso.com", "smtp.contoso.com")
    renewed = issue(chain.leaf.cert.subject, issuer=chain.intermediate, dns_names=dns_names)
    old = write(tmp_path, "old.pem", chain.leaf.pem)
    new = write(tmp_path, "new.pem", renewed.pem)
    result = run("diff", old, new, "--json")
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["change"] == "unchanged" and report["connector_update_required"] is False
    assert report["dns_names_added"] == ["smtp.contoso.com"] and report["dns_names_removed"] == []
    assert "no change needed" in run("diff", old, new).stdout


def test_diff_that_differs_only_in_case_needs_no_update(tmp_path):
    chain = build_chain("ec")
    upper = issue(make_name("MAIL.CONTOSO.COM", "CONTOSO"), issuer=chain.intermediate)
    lower = issue(make_name("mail.contoso.com", "contoso"), issuer=chain.intermediate)
    result = run("diff", write(tmp_path, "a.pem", upper.pem), write(tmp_path, "b.pem", lower.pem), "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["differs_only_in_case"] is True and report["change"] == "unchanged"


@pytest.mark.parametrize(
    ("new_issuer_org", "new_cn", "change"),
    [
        ("Contoso", "smtp.contoso.com", "subject_changed"),
        ("Fabrikam", "smtp.contoso.com", "issuer_and_subject_changed"),
    ],
)
def test_diff_reports_subject_and_both_changes(tmp_path, new_issuer_org, new_cn, change):
    old_chain = build_chain("ec")
    new_chain = old_chain if new_issuer_org == "Contoso" else build_chain("ec", organization=new_issuer_org)
    renewed = issue(make_name(new_cn, "Contoso"), issuer=new_chain.intermediate, dns_names=(new_cn,))
    old, new = write(tmp_path, "a.pem", old_chain.leaf.pem), write(tmp_path, "b.pem", renewed.pem)
    result = run("diff", old, new, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["change"] == change
    assert report["dns_names_added"] == [new_cn]
    assert report["dns_names_removed"] == ["mail.contoso.com", "autodiscover.contoso.com"]


def test_diff_with_a_bad_file_is_bad_input(tmp_path):
    assert_bad_input(run("diff", VECTORS / "zerossl.pem", tmp_path / "nope.pem"), "nope.pem", "no such file")


# --- parse --------------------------------------------------------------------------------------


def test_parse_accepts_a_connector_value_and_shows_what_exchange_stores():
    result = run("parse", "<i>cn=R11 ; O = Let's Encrypt,ST=Ohio, C=US<s> CN=mail.contoso.com")
    assert result.returncode == 0, result.stdout
    assert "Stored as  <I>CN=R11, O=Let's Encrypt, S=Ohio, C=US<S>CN=mail.contoso.com" in result.stdout
    assert "Exchange accepts this value." in result.stdout


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("CN=mail.contoso.com", "has no <S> tag"),
        ("<I>CN=a<b<S>CN=mail.contoso.com", "cannot contain '<'"),
        ('<S>CN="unterminated', "unterminated quoted value"),
        ("<S>XX=mail.contoso.com", "unknown attribute key 'XX'"),
        ("<S>CN=Contoso Mail Server", "is not a DNS host name"),
        ("<S>O=Contoso", "has no CN"),
    ],
)
def test_parse_exits_1_when_exchange_would_reject_the_value(value, words):
    result = run("parse", value, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["exchange_accepts"] is False
    assert any(words in problem for problem in report["problems"]), report["problems"]
    human = run("parse", value)
    assert human.returncode == 1 and "Problem: " in human.stdout and human.stderr == ""


def test_parse_with_cert_tells_whether_the_value_selects_it():
    value = "<I>CN=R10, O=LET'S ENCRYPT, C=US<S>CN=MAIL.contoso.com"
    selected = run("parse", value, "--cert", VECTORS / "rotation_le_r10.pem", "--json")
    assert selected.returncode == 0
    assert json.loads(selected.stdout)["selects_certificate"] is True
    missed = run("parse", value, "--cert", VECTORS / "letsencrypt_r11.pem")
    assert missed.returncode == 1
    assert "NO: the certificate is <I>CN=R11, O=Let's Encrypt, C=US<S>CN=mail.contoso.com" in missed.stdout


# --- the command line itself ---------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["name"], ["diff", "one"], ["name", "x", "--jsn"]])
def test_usage_errors_exit_2_without_a_traceback(args):
    result = run(*args)
    assert result.returncode == 2
    assert "usage: certsync" in result.stderr and "Traceback" not in result.stderr


def test_version_and_help_exit_0():
    assert run("--version").stdout.startswith("certsync ")
    assert run("--version").returncode == 0
    help_text = run("name", "--help")
    assert help_text.returncode == 0 and "--password-env" in help_text.stdout


HEAVY_FOR_NAME = ("cryptography", "azure", "shared.validation", "shared.pipeline", "shared.adapters", "shared.wiring")
HEAVY_FOR_NAME += ("shared.settings", "logging", "email", "json", "sqlite3", "http", "ssl", "urllib.request")


def test_certsync_name_imports_only_what_naming_a_pem_needs():
    # Start-up cost matters for a CLI (bench/names.py measures it): cryptography is only needed to open
    # PKCS#12, and each other command imports its own modules in its handler. What the interpreter itself
    # loads in this environment (coverage's measurement of subprocesses loads json and sqlite3) is subtracted.
    report = f"print(sorted(m for m in sys.modules if m.startswith({HEAVY_FOR_NAME!r})), file=sys.stderr)"
    code = f"import sys; from shared.cli.main import main; rc = main(['name', sys.argv[1]]); {report}; sys.exit(rc)"
    result = subprocess.run([sys.executable, "-c", code, VECTORS / "zerossl.pem"], capture_output=True, text=True)
    bare = subprocess.run([sys.executable, "-c", f"import sys; {report}"], capture_output=True, text=True)
    assert result.returncode == 0 and bare.returncode == 0
    imported = set(ast.literal_eval(result.stderr.strip().splitlines()[-1]))
    assert imported - set(ast.literal_eval(bare.stderr.strip().splitlines()[-1])) == set()
    assert "cryptography" not in imported


def test_certificates_cryptography_refuses_still_get_a_name(tmp_path):
    leaf = issue(make_name("zzz.contoso.com", "Contoso"))
    # Turn the CN's UTF8String into a PrintableString holding '*', which cryptography rejects outright.
    der = leaf.der.replace(b"\x0c\x0fzzz.contoso.com", b"\x13\x0f*.z.contoso.com")
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der)
    result = run("name", write(tmp_path, "star.cer", der), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["subject"] == "CN=*.z.contoso.com, O=Contoso, C=US"


# --- history ------------------------------------------------------------------------------------


def audit_file(tmp_path, count: int, name: str = "mail-contoso-com") -> Path:
    """An audit trail with `count` entries of `name` a minute apart from 2026-11-26T12:00Z, through the
    same SQLite backend `certsync process` writes."""
    import datetime as dt

    from shared.adapters.local.sqlite import SqliteAuditLog
    from shared.pipeline.audit import AuditEntry

    path = tmp_path / "audit.sqlite"
    log = SqliteAuditLog(path)
    start = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)
    for i in range(count):
        at = start + dt.timedelta(minutes=i)
        log.record(AuditEntry(name, "assessment", f"corr{i:04d}", f"entry {i}", at=at, details={"i": i}))
    log.close()
    return path


def test_history_prints_every_entry_oldest_first(tmp_path):
    result = run("history", "Mail-Contoso-Com", "--audit", audit_file(tmp_path, 3))
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [
        "TIME (UTC)            KIND                   DELIVERY  SUMMARY",
        *(f"2026-11-26T12:0{i}:00Z  assessment             corr{i:04d}  entry {i}" for i in range(3)),
        "3 entries for Mail-Contoso-Com from 2026-11-26T12:00:00Z to 2026-11-26T12:02:00Z: 3 assessment.",
    ]


def test_history_since_and_limit_select_a_window(tmp_path):
    path = audit_file(tmp_path, 10)
    result = run("history", "mail-contoso-com", "--audit", path, "--since", "2026-11-26T12:04Z", "--limit", "3")
    assert result.returncode == 0, result
    assert [line.split()[-1] for line in result.stdout.splitlines()[1:-1]] == ["4", "5", "6"]
    offset = run("history", "mail-contoso-com", "--audit", path, "--since", "2026-11-26T13:08:00+01:00")
    assert [line.split()[-1] for line in offset.stdout.splitlines()[1:-1]] == ["8", "9"]
    one = run("history", "mail-contoso-com", "--audit", path, "--limit", "1")
    assert one.stdout.splitlines()[-1] == "1 entry for mail-contoso-com at 2026-11-26T12:00:00Z: 1 assessment."


def test_history_json_is_one_array_of_the_entries_one_per_line(tmp_path):
    result = run("history", "mail-contoso-com", "--audit", audit_file(tmp_path, 4), "--limit", "3", "--json")
    assert result.returncode == 0, result
    entries = json.loads(result.stdout)
    assert [e["details"] for e in entries] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert entries[0]["certificate"] == "mail-contoso-com" and entries[0]["at"] == "2026-11-26T12:00:00Z"
    lines = result.stdout.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 5


def test_history_of_nothing(tmp_path):
    path = audit_file(tmp_path, 2)
    assert run("history", "other", "--audit", path).stdout == "No audit entries for other.\n"
    late = run("history", "mail-contoso-com", "--audit", path, "--since", "2027-01-01")
    assert late.returncode == 0 and late.stdout == "No audit entries for mail-contoso-com since 2027-01-01.\n"
    empty = run("history", "other", "--audit", path, "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout) == []


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--since", "last tuesday", ("--since 'last tuesday'", "ISO 8601")),
        ("--since", "", ("--since ''", "ISO 8601")),
        ("--limit", "0", ("--limit '0'", "1 or more")),
        ("--limit", "-5", ("--limit '-5'", "1 or more")),
        ("--limit", "ten", ("--limit 'ten'", "1 or more")),
    ],
)
def test_history_refuses_a_malformed_option_in_one_line_naming_it(tmp_path, option, value, words):
    assert_bad_input(run("history", "mail-contoso-com", "--audit", audit_file(tmp_path, 1), option, value), *words)


def test_a_missing_azure_sdk_is_a_one_line_error_not_an_internal_one(tmp_path):
    # `make demo` installs no Azure SDK: a command that needs it says so and how to get it (exit 2)
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _NoAzure:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'azure' or name.startswith('azure.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NoAzure())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{Path(__file__).resolve().parent.parent}"}
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", "doctor", "--policies", "--vault-url", "https://contoso-kv.vault.azure.net"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Azure SDK" in result.stderr and "Traceback" not in result.stderr
