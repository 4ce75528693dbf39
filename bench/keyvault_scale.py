"""What the reconciliation's Key Vault phase costs at fleet scale, beside its floor, measured in the same run.

A child process serves the local HTTPS Key Vault test server (tests/fakes/keyvault.py) holding N
certificates (default 10,000; one PFX reused, so building takes seconds), each tagged `certsync-servers`,
with `--latency` seconds (default 0.03) before every answer and Key Vault's page size (25). This process
then does what `certsync reconcile` does against Key Vault before it checks anything: `names()` (the
listing, page after page), then per batch of `reconcile.BATCH` names `tags_many` (from the listing: no
request) and `latest_many` (the current version's secret: one request per certificate), with a
`KeyVaultSource` of `--concurrency` threads (default: the source's) and its rate cap.

The floor is the least time those requests can take: the listing's pages one after another
(pages x latency) plus the fetches, either `concurrency` at a time (fetches x latency / concurrency) or
at the service-limit rate (fetches / MAX_RATE), whichever is slower. Prints, on its last line,
`key=value`: certificates, requests, wall seconds, the floor, wall/floor, certificates per second.
Run: `make bench` or `.venv/bin/python bench/keyvault_scale.py [--count 10000] [--latency 0.03]`.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs12  # noqa: E402

from shared.adapters.azure.keyvault import DEFAULT_CONCURRENCY, MAX_RATE, PAGE_SIZE, KeyVaultSource  # noqa: E402
from shared.reconciliation.reconcile import BATCH  # noqa: E402
from tests.chains import build_chain  # noqa: E402
from tests.fakes.keyvault import PKCS12, FakeKeyVault, StaticTokenCredential  # noqa: E402
from tests.servers import LoopbackTls  # noqa: E402


def serve(count: int, latency: float, tls_dir: str, pipe: object) -> None:
    """In the child: fill the fake vault, send (port, token), serve until the parent closes the pipe."""
    chain = build_chain()
    pfx = pkcs12.serialize_key_and_certificates(
        b"bench", chain.leaf.key, chain.leaf.cert, [chain.intermediate.cert], serialization.NoEncryption()
    )
    vault = FakeKeyVault(LoopbackTls.create(Path(tls_dir)), page_size=PAGE_SIZE)
    for n in range(count):
        vault.add_version(f"cert-{n:05d}", pfx, PKCS12, tags={"certsync-servers": "EX01"})
    vault.latency = latency
    with vault:
        pipe.send((vault.port, vault.credential.token))  # type: ignore[attr-defined]
        with contextlib.suppress(EOFError):
            pipe.recv()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.03)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    args = parser.parse_args()
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="certsync-kv-bench-") as tls_dir:
        parent, child = multiprocessing.get_context("fork").Pipe()
        server = multiprocessing.get_context("fork").Process(
            target=serve, args=(args.count, args.latency, tls_dir, child), daemon=True
        )
        started = time.perf_counter()
        server.start()
        port, token = parent.recv()
        print(f"built {args.count} certificates in {time.perf_counter() - started:.1f} s")
        source = KeyVaultSource(
            f"https://localhost:{port}",
            StaticTokenCredential(token),
            concurrency=args.concurrency,
            verify_challenge_resource=False,
            connection_verify=str(Path(tls_dir) / "ca.pem"),
        )
        began = time.perf_counter()
        cpu = time.process_time()
        names = source.names()
        listed = time.perf_counter() - began
        fetched = failed = 0
        for start in range(0, len(names), BATCH):
            batch = names[start : start + BATCH]
            tags = source.tags_many(batch)
            wanted = [n for n in batch if isinstance(tags[n], dict) and tags[n]]
            for value in source.latest_many(wanted).values():
                fetched += value is not None and not isinstance(value, Exception)
                failed += isinstance(value, Exception)
        wall = time.perf_counter() - began
        cpu = time.process_time() - cpu
        parent.send("stop")
        server.join(10)
    pages = -(-len(names) // PAGE_SIZE)
    fetches = len(names)  # a certificate's secret must be read: one request each is the least possible
    floor = pages * args.latency + max(fetches * args.latency / args.concurrency, fetches / MAX_RATE)
    print(f"listing {len(names)} names in {pages} pages: {listed:.2f} s; fetched {fetched}, failed {failed}")
    figures = {
        "certificates": len(names),
        "fetched": fetched,
        "failed": failed,
        "floor_requests": pages + fetches,
        "latency_ms": round(args.latency * 1000),
        "concurrency": args.concurrency,
        "wall_s": f"{wall:.2f}",
        "client_cpu_s": f"{cpu:.2f}",
        "floor_s": f"{floor:.2f}",
        "x_floor": f"{wall / floor:.2f}",
        "certs_per_s": f"{len(names) / wall:.0f}",
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
