"""hypothesis over the CLI's arguments (issue 17): a real in-process `main([...])` with arguments drawn from
every subcommand, option and kind of value (real files, hostile certificates, garbage, missing paths),
with a password typed where people type one by mistake: after `--password`, after a misspelled option,
starting with `-` or not. Never exit 3 (internal error), never a traceback, never the password in the
output. The counts are printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.cli.main import main
from tests.hostile_certs import hostile
from tests.pki import pem

SECRET = "Pw-s3cr3t-Hunter2"
EXAMPLES = Path(__file__).parent.parent / "examples"
COMMANDS = ["name", "diff", "parse", "check", "history", "plan", "doctor", "process", "reconcile", "--version"]
OPTIONS = [
    "--json",
    "--host",
    "--at",
    "--revocation",
    "--trust",
    "--crl",
    "--allow-host",
    "--password-env",
    "--cert",
    "--audit",
    "--since",
    "--limit",
    "--inventory",
    "--targets",
    "--name",
    "--old",
    "--offline",
    "--crl-max-mb",
    "--vault-dir",
    "--outbox",
    "-h",
]
MISSPELLED = ["--pasword", "--passwd", "--password-en", "--pw", "-p", "--hots", "--jsn", "--Password"]
SECRET_SPELLINGS = [SECRET, "-" + SECRET, "--" + SECRET, "=" + SECRET]


@pytest.fixture(scope="module")
def values(tmp_path_factory) -> list[str]:
    directory = tmp_path_factory.mktemp("cli-fuzz")
    certificates = hostile()
    for label in ("gost-key", "undecodable-key", "unknown-version", "one-time-validity", "negative-serial"):
        (directory / f"{label}.pem").write_text(pem(certificates[label]))
    (directory / "garbage.bin").write_bytes(b"\x30\x82\xff\xff garbage")
    (directory / "empty").write_bytes(b"")
    (directory / "inventory.json").write_text('{"schema": "certsync.inventory/1", "servers": [1, {"a": null}]}')
    (directory / "targets.json").write_text("[1, 2")
    (directory / "event.json").write_text('[{"eventType": 7}]')
    files = [str(p) for p in sorted(directory.iterdir())] + [str(p) for p in sorted(EXAMPLES.glob("*.pem"))]
    return [
        *files,
        str(directory / "missing.pem"),
        str(directory),
        str(directory / "audit.sqlite"),
        "<I>CN=R11, O=Let's Encrypt, C=US<S>CN=mail.contoso.com",
        "<I><S>",
        "hard",
        "off",
        "soft",
        "2026-01-01T00:00:00Z",
        "yesterday",
        "-1",
        "0",
        "99999999999999999999",
        "127.0.0.1:1",
        "[::1",
        "mail.contoso.com",
        "CERTSYNC_FUZZ_PASSWORD",
        "",
        "\udcff",
        "é" * 300,
    ]


def _argv(draw, values: list[str]) -> list[str]:
    argv = [draw(st.sampled_from(COMMANDS))]
    argv += draw(st.lists(st.sampled_from(values), max_size=2))  # the positional arguments, mostly
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["value", "option", "option-value", "misspelled-secret", "password"]))
        if kind == "value":
            argv.append(draw(st.sampled_from(values)))
        elif kind == "option":
            argv.append(draw(st.sampled_from(OPTIONS)))
        elif kind == "option-value":
            argv += [draw(st.sampled_from(OPTIONS)), draw(st.sampled_from(values))]
        elif kind == "misspelled-secret":
            option, secret = draw(st.sampled_from(MISSPELLED)), draw(st.sampled_from(SECRET_SPELLINGS))
            argv += [option + secret] if secret.startswith("=") else [option, secret]
        else:
            argv += [
                draw(st.sampled_from(["--password", "--pass", "--passw"])),
                draw(st.sampled_from(SECRET_SPELLINGS)),
            ]
    return argv


COUNTS = {"runs": 0, "exit 3": 0, "secret shown": 0, "by exit": {}}


@settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_fuzzed_arguments_never_exit_3_nor_show_a_password(values, data, capsys, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("CERTSYNC_FUZZ_PASSWORD", SECRET)
    monkeypatch.delenv("CERTSYNC_DEBUG", raising=False)
    argv = _argv(data.draw, values)
    if argv[0] in ("process", "reconcile") and "--vault-dir" not in argv:
        argv += ["--vault-dir", str(tmp_path_factory.mktemp("vault"))]  # never Key Vault over the network
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))  # default audit/state files land in a scratch directory
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors and --help/--version
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    COUNTS["runs"] += 1
    COUNTS["by exit"][code] = COUNTS["by exit"].get(code, 0) + 1
    assert code != 3, (argv, err)
    assert "Traceback" not in err, (argv, err)
    assert SECRET not in out + err, (argv, out + err)


def test_print_the_cli_fuzz_counts():
    print(f"\nCLI fuzz: {COUNTS['runs']} argument lists, exits {dict(sorted(COUNTS['by exit'].items()))}, 0 exit 3")
