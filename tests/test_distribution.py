"""The wheel `pipx install exchange-certsync` would install: built from this tree, it holds the library and
the CLI and nothing of tests/, and installed alone in a clean venv its `certsync` command works.

The clean venv gets no dependencies from PyPI: a `.pth` line puts this venv's site-packages (cryptography,
the Azure SDK, tqdm) after its own, where the wheel goes, so what runs is the wheel's copy of certsync."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DISTRIBUTION = "exchange-certsync"
UNVERSIONED = (".git", ".venv", ".tools", ".artifacts", ".demo", "build", "*.egg-info", "__pycache__", ".*cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # a copy of the checkout, so that setuptools' build/ and egg-info land there, not here
    source = tmp_path_factory.mktemp("source") / "certsync"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*UNVERSIONED))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [built] = out.glob("*.whl")
    return built


def test_the_wheel_is_named_for_pypi_and_installs_the_certsync_command(wheel: Path):
    assert wheel.name.startswith("exchange_certsync-")
    with zipfile.ZipFile(wheel) as archive:
        [info] = {n.split("/")[0] for n in archive.namelist() if n.split("/")[0].endswith(".dist-info")}
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert metadata["Name"] == DISTRIBUTION
    requires = {r.split(">")[0].split("=")[0].split(";")[0].strip() for r in metadata.get_all("Requires-Dist")}
    assert {"cryptography", "certifi", "tqdm", "azure-identity"} <= requires
    assert "certsync = shared.cli.main:main" in entry_points.splitlines()


def test_the_wheel_holds_every_module_of_the_library_and_nothing_else(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = {n for n in archive.namelist() if ".dist-info/" not in n}
    source = {p.relative_to(REPO).as_posix() for top in ("shared", "functions") for p in (REPO / top).rglob("*.py")}
    assert names == source
    assert not [n for n in names if n.startswith(("tests/", "bench/", "scripts/", "infra/", "examples/"))]


def test_the_wheel_installed_in_a_clean_venv_runs_certsync(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CERTSYNC_DEBUG")}  # nothing of this tree
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    installed = sorted(p.name for p in Path(purelib).iterdir())
    assert installed == ["exchange_certsync-0.1.0.dist-info", "functions", "shared"]
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}  # the dependencies, after the wheel
    Path(purelib, "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    certsync = str(venv / "bin" / "certsync")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False)

    where = run(str(python), "-c", "import shared.cli.main as m; print(m.__file__)")
    assert where.stdout.strip().startswith(purelib), where  # the wheel's copy, not this checkout
    version = run(certsync, "--version")
    assert (version.returncode, version.stdout) == (0, "certsync 0.1.0\n"), version
    name = run(certsync, "name", str(REPO / "examples" / "mail-2026-11.pem"))
    assert name.returncode == 0, name.stderr
    assert name.stdout.splitlines()[0] == "TlsCertificateName  <I>CN=R11, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    powershell = run(certsync, "name", "--powershell", str(REPO / "examples" / "mail-2026-11.pem"))
    assert powershell.stdout == "'<I>CN=R11, O=Let''s Encrypt, C=US<S>CN=mail.contoso.com'\n", powershell


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins |= _pins(path.with_name(line[3:].strip()))
        elif "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_the_demo_installs_the_cli_and_its_two_servers_pinned_as_everywhere_else():
    demo, everything = _pins(REPO / "requirements-demo.txt"), _pins(REPO / "requirements-dev.txt")
    assert {name: everything.get(name) for name in demo} == demo  # the same pins as the tests run with
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in project["dependencies"]}
    without_azure = {name for name in needed if not name.startswith("azure-")}  # the demo reads a vault directory
    assert without_azure | {"aiosmtpd", "standardwebhooks"} == set(demo)  # the CLI's, the SMTP server, the receiver
    makefile = (REPO / "Makefile").read_text()
    demo_rule = next(line for line in makefile.splitlines() if line.startswith("demo:"))
    assert demo_rule.split(":", 1)[1].split() == ["$(DEMO_STAMP)"]  # not Azurite, not the test tools
