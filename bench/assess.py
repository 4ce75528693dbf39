"""What an assessment costs, beside its floor and a peer, measured in the same run.

1. One assessment of root -> intermediate -> leaf (RSA-2048, then P-256) with a warm revocation cache
   (the CRLs were fetched from a loopback server by a first assessment); again with Mozilla's ~150 roots
   added to the trust store (the size a real run searches); against:
   - the floor: the two signature verifications that validate the chain, keys already loaded;
   - pyhanko-certvalidator 0.33 on the same chain and the same two CRLs (hard-fail revocation), and
     without revocation (how `spec/validation.md` measured it).
   The contenders are interleaved: each round times every one of them (in a rotating order), and the
   ratios are the median of the per-round ratios, so load from the rest of the machine falls on both
   sides of a ratio alike (measured one after another, the floor ratio moved 2.9x-3.3x between runs).
2. CRLs of 10k, 100k and 1M entries: load plus signature check (certsync's raw-TBS walk beside
   cryptography's `load_der_x509_crl` + `is_signature_valid`), the first lookup of a serial that is not
   on the list (a scan), the second (which builds the index), and then lookups of 1,000 other serials
   on the same CRL, per lookup (beside cryptography's linear scan).

Prints ratios, never pass/fail. The last line is the headline:
`floor_ratio=` (assessment / floor, worst algorithm), `pyhanko_speedup=` (pyhanko / certsync, worst
algorithm, both checking revocation), `crl_1m_verify_ms=`, `crl_1m_cached_lookup_ms=` (an indexed lookup),
`crl_1m_index_ms=` (building the index, once per CRL), `crl_1m_first_lookup_ms=` (the scan).
Run: `make bench` or `.venv/bin/python bench/assess.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.validation.assessment import TrustStore, assess
from shared.validation.crl import parse_crl
from shared.validation.fetch import Fetcher
from shared.validation.revocation import FetchCache, serial_bytes
from shared.x509.certificate import Certificate, CertificateBundle
from tests.chains import issue, make_crl, make_name
from tests.pki import big_crl_der
from tests.servers import HttpServer

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
HOSTS = ("mail.contoso.com", "autodiscover.contoso.com")


def interleaved(contenders: dict, rounds: int, inner: dict) -> dict[str, list[float]]:
    """µs per call of each contender, per round: every round times each contender once (`inner[key]`
    calls), in an order that rotates from round to round (ABC, BCA, CAB, ...), so a burst of load from
    the rest of the machine falls on all of them alike. Each is warmed up first."""
    keys = list(contenders)
    for key in keys:  # warm up: caches, branch predictors, the CPU's clock
        for _ in range(inner[key]):
            contenders[key]()
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            fn, n = contenders[key], inner[key]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[key].append((time.perf_counter() - start) / n * 1e6)
    return samples


def median_ratio(top: list[float], bottom: list[float]) -> float:
    """The median of the per-round ratios top/bottom (rounds paired: each measured side by side)."""
    return statistics.median(t / b for t, b in zip(top, bottom, strict=True))


def verify_raw(public_key, cert: x509.Certificate) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def chain_bench(kind: str, server: HttpServer, rounds: int, inner: int) -> dict[str, float]:
    prefix = f"/{kind}"
    root = issue(make_name(f"Bench Root {kind}", "Bench"), kind=kind, ca=True, path_length=1)
    intermediate = issue(
        make_name(f"Bench Issuing {kind}", "Bench"),
        issuer=root,
        kind=kind,
        ca=True,
        path_length=0,
        crl_urls=[server.url(f"{prefix}/root.crl")],
    )
    leaf = issue(
        make_name("mail.contoso.com", "Contoso"),
        issuer=intermediate,
        kind=kind,
        dns_names=[*HOSTS, "smtp.contoso.com"],
        eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        crl_urls=[server.url(f"{prefix}/issuing.crl")],
        ca_issuers_urls=[server.url(f"{prefix}/issuing.cer")],
    )
    root_crl, issuing_crl = make_crl(root), make_crl(intermediate)
    server.route(f"{prefix}/root.crl", body=root_crl)
    server.route(f"{prefix}/issuing.crl", body=issuing_crl)

    trust = TrustStore.from_certificates([Certificate.from_der(root.der)], "bench")
    bundle = CertificateBundle(Certificate.from_der(leaf.der), (Certificate.from_der(intermediate.der),))
    allow = [f"127.0.0.1:{server.port}"]
    cache = FetchCache()
    first = assess(bundle, hosts=HOSTS, trust=trust, fetcher=Fetcher(allow=allow), cache=cache)
    assert first.status == "Valid", first.to_dict()
    fetched = len(server.requests)

    def ours() -> None:
        result = assess(bundle, hosts=HOSTS, trust=trust, fetcher=Fetcher(allow=allow), cache=cache)
        if result.status != "Valid":
            raise AssertionError(result.status)

    mozilla_plus = TrustStore.from_certificates([*TrustStore.mozilla().roots, *trust.roots], "mozilla+bench")

    def ours_mozilla() -> None:
        result = assess(bundle, hosts=HOSTS, trust=mozilla_plus, fetcher=Fetcher(allow=allow), cache=cache)
        if result.status != "Valid":
            raise AssertionError(result.status)

    inter_key, root_key = intermediate.cert.public_key(), root.cert.public_key()

    def floor() -> None:
        verify_raw(inter_key, leaf.cert)
        verify_raw(root_key, intermediate.cert)

    pyhanko_crl, pyhanko_plain = pyhanko_runners(root, intermediate, leaf, [root_crl, issuing_crl])
    contenders = {
        "ours": ours,
        "ours_mozilla": ours_mozilla,
        "floor": floor,
        "pyhanko_crl": pyhanko_crl,
        "pyhanko_plain": pyhanko_plain,
    }
    slow = max(1, inner // 6)  # pyhanko is about ten times slower: fewer calls keep each round short
    counts = {"ours": inner, "ours_mozilla": inner, "floor": inner * 4, "pyhanko_crl": slow, "pyhanko_plain": slow}
    samples = interleaved(contenders, rounds, counts)
    results = {f"{key}_us": statistics.median(values) for key, values in samples.items()}
    results["floor_ratio"] = median_ratio(samples["ours"], samples["floor"])
    results["pyhanko_speedup"] = median_ratio(samples["pyhanko_crl"], samples["ours"])
    results["floor_ratio_spread"] = _spread([o / f for o, f in zip(samples["ours"], samples["floor"], strict=True)])
    assert len(server.requests) == fetched, "the warm cache fetched again"
    return results


def pyhanko_runners(root, intermediate, leaf, crls: list[bytes]):
    from asn1crypto import crl as asn1_crl
    from asn1crypto import x509 as asn1_x509
    from pyhanko_certvalidator import CertificateValidator, ValidationContext

    root_a, inter_a, leaf_a = (asn1_x509.Certificate.load(c.der) for c in (root, intermediate, leaf))
    crls_a = [asn1_crl.CertificateList.load(c) for c in crls]

    async def once(with_crls: bool) -> None:
        if with_crls:
            context = ValidationContext(
                trust_roots=[root_a], crls=crls_a, moment=NOW, revocation_mode="hard-fail", allow_fetching=False
            )
        else:
            context = ValidationContext(trust_roots=[root_a], moment=NOW, allow_fetching=False)
        validator = CertificateValidator(leaf_a, intermediate_certs=[inter_a], validation_context=context)
        await validator.async_validate_usage({"digital_signature"}, extended_key_usage={"server_auth"})

    loop = asyncio.new_event_loop()  # one loop for every call: asyncio.run's set-up is not pyhanko's cost

    def runner(with_crls: bool):
        def run() -> None:
            loop.run_until_complete(once(with_crls))

        run()  # fails loudly if pyhanko does not accept the chain
        return run

    return runner(True), runner(False)


def crl_bench(entries: int, key, issuer_name_der: bytes, repeats: int) -> dict[str, float]:
    data = big_crl_der(
        issuer_name_der, key, entries, this_update=NOW - dt.timedelta(hours=1), next_update=NOW + dt.timedelta(days=1)
    )
    public_key = key.public_key()
    missing = serial_bytes(0x7ABCDEF0123456789)

    def ours_load_verify():
        crl = parse_crl(data, "bench.crl")
        if not crl.verify_signature(public_key):
            raise AssertionError("signature")
        return crl

    def peer_load_verify():
        crl = x509.load_der_x509_crl(data)
        if not crl.is_signature_valid(public_key):
            raise AssertionError("signature")
        return crl

    ours_ms = min_ms(ours_load_verify, repeats)
    peer_ms = min_ms(peer_load_verify, max(1, repeats // 2))
    crl = ours_load_verify()
    first = timed_ms(lambda: crl.lookup(missing))  # a scan
    index = timed_ms(lambda: crl.lookup(serial_bytes(0x7ABCDEF0123456788)))  # builds the index
    others = [serial_bytes(0x7ABCDEF0123456789 + i) for i in range(1, 1001)]  # distinct serials, none memoised

    def indexed() -> None:
        for serial in others:
            crl.lookup(serial)

    cached = min_ms(indexed, 5) / len(others)
    peer_crl = x509.load_der_x509_crl(data)
    peer_lookup = min_ms(lambda: peer_crl.get_revoked_certificate_by_serial_number(0x7ABCDEF0123456789), repeats)
    return {
        "size_mib": len(data) / 2**20,
        "ours_load_verify_ms": ours_ms,
        "peer_load_verify_ms": peer_ms,
        "first_lookup_ms": first,
        "index_ms": index,
        "cached_lookup_ms": cached,
        "peer_lookup_ms": peer_lookup,
    }


def _spread(ratios: list[float]) -> str:
    """The lowest and highest per-round ratio, to show how much one round can differ from the median."""
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def timed_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def min_ms(fn, repeats: int) -> float:
    return min(timed_ms(fn) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, and CRLs up to 100k entries only")
    args = parser.parse_args()
    rounds, inner = (5, 20) if args.quick else (15, 60)

    print(f"one assessment, 3-certificate chain, warm revocation cache: {rounds} interleaved rounds (medians, µs)")
    print(
        f"{'key':<9}{'certsync':>10}{'+Mozilla':>10}{'floor':>9}{'x floor':>9}{'(rounds)':>11}{'pyhanko+CRL':>13}"
        f"{'pyhanko':>10}{'speedup':>9}"
    )
    floor_ratios, speedups = [], []
    with HttpServer() as server:
        for kind, label in (("rsa", "RSA-2048"), ("ec", "P-256")):
            r = chain_bench(kind, server, rounds, inner)
            ratio, speedup = r["floor_ratio"], r["pyhanko_speedup"]
            floor_ratios.append(ratio)
            speedups.append(speedup)
            print(
                f"{label:<9}{r['ours_us']:>10.0f}{r['ours_mozilla_us']:>10.0f}{r['floor_us']:>9.0f}{ratio:>9.2f}"
                f"{r['floor_ratio_spread']:>11}{r['pyhanko_crl_us']:>13.0f}{r['pyhanko_plain_us']:>10.0f}{speedup:>9.1f}"
            )
    print("  x floor and speedup: the median of the per-round ratios (each round times every contender);")
    print("  (rounds): the lowest and highest per-round x floor")

    print("\nCRLs, RSA-2048 signed (ms; lookups of serials not on the list)")
    print(
        f"{'entries':>9}{'MiB':>7}{'load+verify':>13}{'cryptography':>14}{'first lookup':>14}"
        f"{'2nd: index':>12}{'indexed':>9}{'crypto lookup':>15}"
    )
    key = issue("Bench CRL CA", kind="rsa", ca=True)
    issuer_name = key.cert.subject.public_bytes()
    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    last = {}
    for entries in sizes:
        last = crl_bench(entries, key.key, issuer_name, 3 if entries >= 1_000_000 else 5)
        print(
            f"{entries:>9,}{last['size_mib']:>7.1f}{last['ours_load_verify_ms']:>13.1f}"
            f"{last['peer_load_verify_ms']:>14.1f}{last['first_lookup_ms']:>14.2f}"
            f"{last['index_ms']:>12.0f}{last['cached_lookup_ms']:>9.4f}{last['peer_lookup_ms']:>15.2f}"
        )
    label = "1m" if sizes[-1] == 1_000_000 else f"{sizes[-1] // 1000}k"
    print(
        f"\nfloor_ratio={max(floor_ratios):.2f} pyhanko_speedup={min(speedups):.1f} "
        f"crl_{label}_verify_ms={last['ours_load_verify_ms']:.1f} "
        f"crl_{label}_cached_lookup_ms={last['cached_lookup_ms']:.4f} crl_{label}_index_ms={last['index_ms']:.0f} "
        f"crl_{label}_first_lookup_ms={last['first_lookup_ms']:.1f}"
    )


if __name__ == "__main__":
    main()
