"""What an assessment costs, beside its floor and a peer, measured in the same run.

1. One assessment of root -> intermediate -> leaf (RSA-2048, then P-256) with a warm revocation cache
   (the CRLs were fetched from a loopback server by a first assessment); again with Mozilla's ~150 roots
   added to the trust store (the size a real run searches); against:
   - the floor: the two signature verifications that validate the chain, keys already loaded;
   - pyhanko-certvalidator 0.33 on the same chain and the same two CRLs (hard-fail revocation), and
     without revocation (how `spec/validation.md` measured it).
2. CRLs of 10k, 100k and 1M entries: load plus signature check (certsync's raw-TBS walk beside
   cryptography's `load_der_x509_crl` + `is_signature_valid`), the first lookup of a serial that is not
   on the list, and the same lookup again on the cached CRL (beside cryptography's linear scan).

Prints ratios, never pass/fail. The last line is the headline:
`floor_ratio=` (assessment / floor, worst algorithm), `pyhanko_speedup=` (pyhanko / certsync, worst
algorithm, both checking revocation), `crl_1m_verify_ms=`, `crl_1m_cached_lookup_ms=`.
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


def median_us(fn, rounds: int, inner: int) -> float:
    for _ in range(inner):  # warm up: caches, branch predictors, the CPU's clock
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner * 1e6)
    return statistics.median(samples)


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
    results = {
        "ours_us": median_us(ours, rounds, inner),
        "ours_mozilla_us": median_us(ours_mozilla, rounds, inner),
        "floor_us": median_us(floor, rounds, inner * 4),
        "pyhanko_crl_us": pyhanko_crl(rounds, inner),
        "pyhanko_plain_us": pyhanko_plain(rounds, inner),
    }
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

    def runner(with_crls: bool):
        def run(rounds: int, inner: int) -> float:
            async def timed() -> float:
                await once(with_crls)  # fails loudly if pyhanko does not accept the chain
                samples = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    for _ in range(inner):
                        await once(with_crls)
                    samples.append((time.perf_counter() - start) / inner * 1e6)
                return statistics.median(samples)

            return asyncio.run(timed())

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
    first = timed_ms(lambda: crl.lookup(missing))
    cached = min_ms(lambda: crl.lookup(missing), 20)
    peer_crl = x509.load_der_x509_crl(data)
    peer_lookup = min_ms(lambda: peer_crl.get_revoked_certificate_by_serial_number(0x7ABCDEF0123456789), repeats)
    return {
        "size_mib": len(data) / 2**20,
        "ours_load_verify_ms": ours_ms,
        "peer_load_verify_ms": peer_ms,
        "first_lookup_ms": first,
        "cached_lookup_ms": cached,
        "peer_lookup_ms": peer_lookup,
    }


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

    print("one assessment, 3-certificate chain, warm revocation cache (medians, µs)")
    print(
        f"{'key':<9}{'certsync':>10}{'+Mozilla':>10}{'floor':>9}{'x floor':>9}{'pyhanko+CRL':>13}"
        f"{'pyhanko':>10}{'speedup':>9}"
    )
    floor_ratios, speedups = [], []
    with HttpServer() as server:
        for kind, label in (("rsa", "RSA-2048"), ("ec", "P-256")):
            r = chain_bench(kind, server, rounds, inner)
            ratio = r["ours_us"] / r["floor_us"]
            speedup = r["pyhanko_crl_us"] / r["ours_us"]
            floor_ratios.append(ratio)
            speedups.append(speedup)
            print(
                f"{label:<9}{r['ours_us']:>10.0f}{r['ours_mozilla_us']:>10.0f}{r['floor_us']:>9.0f}{ratio:>9.2f}"
                f"{r['pyhanko_crl_us']:>13.0f}{r['pyhanko_plain_us']:>10.0f}{speedup:>9.1f}"
            )

    print("\nCRLs, RSA-2048 signed (ms; lookups of a serial not on the list)")
    print(
        f"{'entries':>9}{'MiB':>7}{'load+verify':>13}{'cryptography':>14}{'first lookup':>14}"
        f"{'cached':>9}{'crypto lookup':>15}"
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
            f"{last['cached_lookup_ms']:>9.4f}{last['peer_lookup_ms']:>15.2f}"
        )
    label = "1m" if sizes[-1] == 1_000_000 else f"{sizes[-1] // 1000}k"
    print(
        f"\nfloor_ratio={max(floor_ratios):.2f} pyhanko_speedup={min(speedups):.1f} "
        f"crl_{label}_verify_ms={last['ours_load_verify_ms']:.1f} "
        f"crl_{label}_cached_lookup_ms={last['cached_lookup_ms']:.4f}"
    )


if __name__ == "__main__":
    main()
