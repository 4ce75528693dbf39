"""The status page at 10 and 10,000 certificates: server time to render its first page (and a searched,
sorted page 2 with a certificate selected) and the page's size, beside a floor measured in the same run,
interleaved round by round: `json.dumps` of the same snapshots (what the JSON answer of them all would
cost). Medians of the rounds; the last line is key=value.

    python bench/status_page.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.notify.status_page import PageQuery, render_status_page
from tests.fleet import fleet_snapshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    now = dt.datetime(2026, 11, 26, 8, tzinfo=dt.timezone.utc)
    figures: dict[str, float] = {}
    for count in (10, 10_000):
        data = fleet_snapshots(count, now)
        searched = PageQuery(
            q="EX07", sort="expiry", page=2 if count > 1000 else 1, certificate="contoso-kv/mail-00005"
        )
        times: dict[str, list[float]] = {"floor": [], "first": [], "searched": []}
        sizes: dict[str, int] = {}
        for _ in range(args.rounds):  # interleaved: floor, first page, searched page, each round
            start = time.perf_counter()
            floor = json.dumps(data)
            times["floor"].append(time.perf_counter() - start)
            sizes["floor"] = len(floor.encode())
            start = time.perf_counter()
            page = render_status_page(data, now)
            times["first"].append(time.perf_counter() - start)
            sizes["first"] = len(page.encode())
            start = time.perf_counter()
            page = render_status_page(data, now, query=searched)
            times["searched"].append(time.perf_counter() - start)
            sizes["searched"] = len(page.encode())
        medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print(f"{count:>6,} certificates:", end="")
        for kind in ("floor", "first", "searched"):
            print(f"  {kind} {medians[kind]:.1f} ms {sizes[kind] / 1024:.0f} KiB", end="")
        print(f"  first/floor {medians['first'] / medians['floor']:.2f}")
        key = "10k" if count == 10_000 else str(count)
        figures[f"render_{key}_ms"] = round(medians["first"], 1)
        figures[f"searched_{key}_ms"] = round(medians["searched"], 1)
        figures[f"page_{key}_kib"] = round(sizes["first"] / 1024, 1)
        figures[f"floor_{key}_ms"] = round(medians["floor"], 1)
        figures[f"floor_{key}_kib"] = round(sizes["floor"] / 1024, 1)
        figures[f"ratio_{key}"] = round(medians["first"] / medians["floor"], 2)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
