"""How fast certsync renders X.509 names, beside `cryptography`, and how fast `certsync name` starts.

Run `.venv/bin/python bench/names.py` (under ten seconds here) or add `--quick` for a smoke run of a
second or two. It only prints: nothing is asserted, so a slow machine never fails a build.

1. Names per second. The corpus is the issuer and the subject of every certificate in
   tests/fixtures/tls-certificate-name (32 certificates, 64 names, 1 to 11 RDNs each), already read
   into memory as DER. Every case renders all 64 names per pass; the figure is names / second.

   (a) parsed name, the headline comparison:
       ours  `str(X500Name.from_der(name_der))` -- includes decoding the Name's DER;
       peer  `name.rfc4514_string()` on an `x509.Name` parsed beforehand -- rendering only.
       This favours the peer (it does less). `cryptography` caches no rendering: rfc4514_string() is
       plain Python that re-escapes every attribute on each call. For a like-for-like view, the table
       also shows ours rendering an X500Name decoded beforehand (`str(name)` only).
   (b) from the certificate:
       ours  `Certificate.from_der(der)`, then `str(cert.issuer)`, `str(cert.subject)`;
       peer  `load_der_x509_certificate(der)`, then `.issuer.rfc4514_string()`, `.subject...`.
       Both sides parse the whole certificate (ours also decodes validity and extensions; the peer
       caches `.subject` on the certificate object, but each pass loads fresh certificates).

   Method: time.perf_counter_ns, garbage collection off while timing (as timeit does), each sample
   a calibrated number of passes (~50 ms), cases interleaved in a rotating order over several
   rounds; the figure is the median sample. ratio = ours / peer: above 1 means certsync is faster.
   The peer's warning about an empty CN (q_empty_value.pem) is silenced, not avoided.

2. Cold start: wall time of a fresh process, from spawn to exit, output discarded.
       cli    `certsync name tests/fixtures/tls-certificate-name/ev_full_subject.pem` (the venv's
              console script; `python -m shared.cli.main` if there is none);
       peer   `python -c` loading the same PEM with cryptography and printing issuer and subject;
       floor  `python -c pass` (the interpreter, site and the venv's .pth files: paid by both).
   Bytecode is cached for every module, as for an installed package: the processes get a private
   PYTHONPYCACHEPREFIX (filled by warm-up runs) and PYTHONDONTWRITEBYTECODE unset. The extra row
   "cli, PYTHONDONTWRITEBYTECODE=1" runs the CLI as a shell that sets it does: with an editable
   install and no shared/__pycache__ (the row says which), shared/ is compiled on every start.
   Runs are interleaved; the figure is the median. ratio = cli / peer: below 1 means certsync starts
   faster. "over floor" is the median minus the floor: the part each program adds.

The last line is a headline of key=value figures (rates in names/s, times in ms).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `shared` without relying on the editable install

import cryptography  # noqa: E402
from cryptography import x509  # noqa: E402

from shared.x509.certificate import Certificate  # noqa: E402
from shared.x509.containers import load_certificate_file  # noqa: E402
from shared.x509.x500 import X500Name  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "tls-certificate-name"
COLD_FIXTURE = FIXTURES / "ev_full_subject.pem"
PEER_SCRIPT = (
    "import sys; from cryptography import x509; "
    "c=x509.load_pem_x509_certificate(open(sys.argv[1],'rb').read()); "
    "print(c.issuer.rfc4514_string(), c.subject.rfc4514_string())"
)

Case = Callable[[], int]  # one pass over the corpus; returns the number of names rendered


def load_corpus() -> list[bytes]:
    """The DER of every fixture certificate (the leaf of each file), in file-name order."""
    return [load_certificate_file(str(path)).leaf.der for path in sorted(FIXTURES.glob("*.pem"))]


def make_cases(ders: list[bytes]) -> dict[str, Case]:
    """The throughput cases, each closing over inputs prepared outside the timed region."""
    certs = [Certificate.from_der(d) for d in ders]
    name_ders = [n for c in certs for n in (c.issuer_der, c.subject_der)]
    ours_names = [X500Name.from_der(n) for n in name_ders]
    peer_certs = [x509.load_der_x509_certificate(d) for d in ders]
    peer_names = [n for c in peer_certs for n in (c.issuer, c.subject)]

    def ours_from_name_der() -> int:
        for name_der in name_ders:
            str(X500Name.from_der(name_der))
        return len(name_ders)

    def ours_render_only() -> int:
        for name in ours_names:
            str(name)
        return len(ours_names)

    def peer_parsed_name() -> int:
        for name in peer_names:
            name.rfc4514_string()
        return len(peer_names)

    def ours_from_cert() -> int:
        for cert_der in ders:
            cert = Certificate.from_der(cert_der)
            str(cert.issuer)
            str(cert.subject)
        return 2 * len(ders)

    def peer_from_cert() -> int:
        for cert_der in ders:
            cert = x509.load_der_x509_certificate(cert_der)
            cert.issuer.rfc4514_string()
            cert.subject.rfc4514_string()
        return 2 * len(ders)

    return {
        "ours_a": ours_from_name_der,
        "peer_a": peer_parsed_name,
        "ours_render": ours_render_only,
        "ours_b": ours_from_cert,
        "peer_b": peer_from_cert,
    }


def _sample(case: Case, passes: int) -> float:
    """Names per second over `passes` passes, with the collector off."""
    gc.collect()
    gc.disable()
    try:
        names = 0
        start = time.perf_counter_ns()
        for _ in range(passes):
            names += case()
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return names * 1e9 / elapsed


def _calibrate(case: Case, target_s: float) -> int:
    """How many passes make one sample last about `target_s`."""
    passes = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(passes):
            case()
        elapsed = (time.perf_counter_ns() - start) / 1e9
        if elapsed >= target_s / 4:
            return max(1, round(passes * target_s / elapsed))
        passes *= 4


def measure_rates(cases: dict[str, Case], rounds: int, target_s: float) -> dict[str, float]:
    """Median names/second per case, cases interleaved in a rotating order."""
    passes = {key: _calibrate(case, target_s) for key, case in cases.items()}
    samples: dict[str, list[float]] = {key: [] for key in cases}
    keys = list(cases)
    for r in range(rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            samples[key].append(_sample(cases[key], passes[key]))
    return {key: statistics.median(values) for key, values in samples.items()}


def cold_commands() -> dict[str, list[str]]:
    script = Path(sys.executable).parent / "certsync"
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "shared.cli.main"]
    fixture = str(COLD_FIXTURE)
    return {
        "cli": [*cli, "name", fixture],
        "peer": [sys.executable, "-c", PEER_SCRIPT, fixture],
        "floor": [sys.executable, "-c", "pass"],
    }


def _run(argv: list[str], env: dict[str, str]) -> int:
    """Wall time of one process in nanoseconds; exits the bench if the command itself fails."""
    start = time.perf_counter_ns()
    done = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter_ns() - start
    if done.returncode not in (0, 1):  # `certsync name` exits 1 for a finding; that still ran
        sys.exit(f"bench: {argv[0]} exited {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
    return elapsed


def measure_cold(runs: int, warmups: int) -> dict[str, float]:
    """Median wall time in ms per command: cached bytecode, plus the CLI without a bytecode cache."""
    commands = cold_commands()
    with tempfile.TemporaryDirectory(prefix="certsync-bench-pyc-") as prefix:
        cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = prefix
        uncached = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
        uncached["PYTHONDONTWRITEBYTECODE"] = "1"
        jobs = {key: (argv, cached) for key, argv in commands.items()}
        jobs["cli_nopyc"] = (commands["cli"], uncached)
        for argv, env in jobs.values():  # warm-up: fills the bytecode cache and the page cache
            for _ in range(warmups):
                _run(argv, env)
        times: dict[str, list[int]] = {key: [] for key in jobs}
        keys = list(jobs)
        for r in range(runs):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                argv, env = jobs[key]
                times[key].append(_run(argv, env))
    return {key: statistics.median(values) / 1e6 for key, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a second or two")
    args = parser.parse_args(argv)
    rounds, target_s, runs, warmups = (3, 0.01, 5, 1) if args.quick else (11, 0.05, 15, 2)

    warnings.simplefilter("ignore")  # cryptography warns about the empty CN of q_empty_value.pem
    ders = load_corpus()
    rdn_counts = [len(name.rdns) for c in map(Certificate.from_der, ders) for name in (c.issuer, c.subject)]
    probe = x509.load_der_x509_certificate(ders[0])
    peer_caches = probe.subject is probe.subject

    rates = measure_rates(make_cases(ders), rounds, target_s)
    cold = measure_cold(runs, warmups)
    tag = sys.implementation.cache_tag
    shared_pyc = any((ROOT / "shared" / "__pycache__").glob(f"*.{tag}.pyc"))

    render_speedup = rates["ours_a"] / rates["peer_a"]
    cert_speedup = rates["ours_b"] / rates["peer_b"]
    cold_ratio = cold["cli"] / cold["peer"]
    floor = cold["floor"]

    print(
        f"certsync bench/names.py{' --quick' if args.quick else ''}: Python {sys.version.split()[0]}, "
        f"cryptography {cryptography.__version__}, {os.cpu_count()} CPUs"
    )
    print(
        f"corpus: {len(ders)} certificates, {len(rdn_counts)} names (up to {max(rdn_counts)} RDNs); "
        f"{rounds} rounds of ~{target_s * 1000:.0f} ms samples, medians"
    )
    print(
        f"cryptography caches Certificate.subject: {'yes' if peer_caches else 'no'}; "
        "Name.rfc4514_string(): no (recomputed per call)"
    )
    print()
    print(f"{'names rendered per second':<58} {'names/s':>10} {'ratio':>7}")
    print(f"{'(a) ours: str(X500Name.from_der(name_der))':<58} {rates['ours_a']:>10,.0f} {render_speedup:>7.2f}")
    print(f"{'(a) peer: parsed_name.rfc4514_string()':<58} {rates['peer_a']:>10,.0f} {'1.00':>7}")
    print(
        f"{'    ours, render only: str(decoded X500Name)':<58} {rates['ours_render']:>10,.0f} "
        f"{rates['ours_render'] / rates['peer_a']:>7.2f}"
    )
    print(
        f"{'(b) ours: Certificate.from_der(der) + str(issuer/subject)':<58} {rates['ours_b']:>10,.0f} "
        f"{cert_speedup:>7.2f}"
    )
    print(f"{'(b) peer: load_der_x509_certificate(der) + rfc4514_string()':<58} {rates['peer_b']:>10,.0f} {'1.00':>7}")
    print("    ratio = ours / peer (a: vs peer a; b: vs peer b); above 1 means certsync is faster")
    print()
    print(
        f"{f'cold start, {runs} interleaved runs, fixture {COLD_FIXTURE.name}':<58} "
        f"{'ms':>10} {'over floor':>10} {'ratio':>7}"
    )
    rows = [
        ("cli: certsync name FILE", "cli", f"{cold_ratio:.2f}"),
        ("peer: python -c <cryptography load + rfc4514_string>", "peer", "1.00"),
        ("floor: python -c pass", "floor", ""),
        (
            "cli, PYTHONDONTWRITEBYTECODE=1: " + ("shared/ has pyc" if shared_pyc else "shared/ compiled each run"),
            "cli_nopyc",
            f"{cold['cli_nopyc'] / cold['peer']:.2f}",
        ),
    ]
    for label, key, ratio in rows:
        print(f"{label:<58} {cold[key]:>10.1f} {cold[key] - floor:>10.1f} {ratio:>7}")
    print("    ratio = cli / peer; below 1 means certsync starts faster")
    print()
    print(
        f"names_per_s={rates['ours_a']:.0f} rfc4514_per_s={rates['peer_a']:.0f} render_speedup={render_speedup:.2f} "
        f"cert_names_per_s={rates['ours_b']:.0f} peer_cert_names_per_s={rates['peer_b']:.0f} "
        f"cert_speedup={cert_speedup:.2f} cli_cold_ms={cold['cli']:.1f} peer_cold_ms={cold['peer']:.1f} "
        f"floor_cold_ms={floor:.1f} cold_ratio={cold_ratio:.2f} cli_cold_nopyc_ms={cold['cli_nopyc']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
