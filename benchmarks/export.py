"""Export: every entity exactly once, in pages, with flat memory.

    python benchmarks/export.py                        # 10,000 offers in pages of 100
    python benchmarks/export.py --entity offer-items   # 10,000 decision items
    python benchmarks/export.py --quick                # 2,000 entities

The simulator (its own process) is seeded with the entities (``--offers``, or
``--items`` for decision items, whose calls need the x-schema-id it is started with);
``bulkpatch export --page-size 100`` runs as a child process writing to a file. Prints
the entities exported, duplicates, missing ones, those without an etag, the wall time
and the client's peak RSS (its own, from ``wait4``). Bar: all exported exactly once,
each with its etag, peak RSS <= 80 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

BAR_MB = 80.0
ENV = {"ADOBE_API_KEY": "bench", "ADOBE_ORG_ID": "BENCH@AdobeOrg", "ADOBE_SANDBOX_NAME": "bench"}
SCHEMA_ID = "https://ns.adobe.com/bench/schemas/offer-items"
# Per --entity: the simulator's seeding option, and what the export adds to its command.
SEEDS = {"offers": ("--offers", []), "offer-items": ("--items", ["--schema-id", SCHEMA_ID])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entity", choices=sorted(SEEDS), default="offers")
    parser.add_argument("--entities", "--offers", dest="offers", type=int,
                        help="how many to seed and export (default 10,000)")  # fmt: skip
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="2,000 entities unless --entities")
    args = parser.parse_args()
    if args.offers is None:
        args.offers = 2_000 if args.quick else 10_000
    seed, extra = SEEDS[args.entity]
    sim = subprocess.Popen(
        [sys.executable, "-m", "bulkpatch.cli", "sim", "--host", "127.0.0.1", "--port", "0",
         seed, str(args.offers), *extra, "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        ready = json.loads(sim.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="bulkpatch-export-") as tmp:
            out = Path(tmp) / "offers.ndjson"
            env = {**os.environ, **ENV, "ADOBE_ACCESS_TOKEN": ready["access_token"]}
            started = time.perf_counter()
            with out.open("wb") as sink:
                client = subprocess.Popen(
                    [sys.executable, "-m", "bulkpatch.cli", "export", "--endpoint", ready["endpoint"],
                     "--entity", args.entity, *extra, "--rate", "0", "--page-size", str(args.page_size),
                     "-q"],
                    stdout=sink, env=env,
                )  # fmt: skip
                deadline = time.monotonic() + 300
                while (done := os.wait4(client.pid, os.WNOHANG))[0] == 0:
                    if time.monotonic() > deadline:
                        client.kill()
                        print("export overran 300 s")
                        return 2
                    time.sleep(0.05)
            wall = time.perf_counter() - started
            _, status, usage = done
            client.returncode = os.waitstatus_to_exitcode(status)
            ids: list[str] = []
            without_etag = 0
            with out.open("rb") as f:
                for line in f:
                    doc = orjson.loads(line)
                    ids.append(doc["id"])
                    without_etag += not isinstance(doc.get("etag"), int)
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)
    rss_mb = usage.ru_maxrss * 1024 / 1e6
    unique = len(set(ids))
    print(f"{args.entity}={args.offers} page size={args.page_size} exit={client.returncode}")
    print(f"exported {len(ids):,}, distinct {unique:,}, duplicates {len(ids) - unique}, "
          f"missing {args.offers - unique}, without etag {without_etag}")
    print(f"wall {wall:.1f} s ({len(ids) / wall:,.0f} entities/s)")
    print(f"peak RSS {rss_mb:.1f} MB = {rss_mb / BAR_MB:.2f}x of the {BAR_MB:.0f} MB bar")
    ok = client.returncode == 0 and unique == len(ids) == args.offers and not without_etag
    return 0 if ok and rss_mb <= BAR_MB else 1


if __name__ == "__main__":
    sys.exit(main())
