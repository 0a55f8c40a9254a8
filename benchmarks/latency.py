"""Latency hiding: does ``bulkpatch run`` keep its requests in flight on a slow server?

    python benchmarks/latency.py            # 20,000 jobs, 3 repeats (median)
    python benchmarks/latency.py --quick    # 2,000 jobs, 1 repeat: checks the script works

The simulator (``bulkpatch sim --latency-ms 100``, 2,000 seeded offers, no throttle, no
faults) runs in its own process pinned to one core; ``bulkpatch run --concurrency 200
--rate 0`` runs as a child process pinned to the other, on replace jobs spread over the
seeded offers in turn (consecutive jobs never share an offer, so per-offer ordering never
holds a job back). Every answer leaves the server 100 ms after its request arrived, so by
Little's law the most any client can do is concurrency / latency = 200 / 0.1 s = 2,000
jobs/s.

jobs/s is timed from the first request reaching the server (the first write the
simulator applies, on arrival, seen by polling its statistics while the client starts) to
the client's exit: Python's start-up, identical for any job count, is left out; it is
printed apart as the end-to-end rate. Every job must land (the simulator's own count of
applied writes). A fresh simulator serves each repeat.

Bar: median jobs/s >= 0.9 x 2,000/s. Exit 0 when met, 1 when missed, 2 when the benchmark
could not measure (a child failed or overran its time limit). Each child has a hard time
limit, and so has the whole script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ENV,
    READY_LIMIT_S,
    STOP_LIMIT_S,
    BenchError,
    cores,
    run_client,
    sim_stats,
    simulator,
    time_limit,
    write_jobs,
)

LATENCY_MS: Final = 100.0
CONCURRENCY: Final = 200
BAR: Final = 0.9


@dataclass(frozen=True)
class Result:
    rate: float  # jobs/s from the first request's arrival to the client's exit
    end_to_end: float  # jobs/s over the child's whole life, start-up included
    sustained: float  # the simulator's applied writes per whole second (full seconds only)


def one_repeat(jobs: Path, count: int, offers: int, limit_s: float) -> Result:
    server_cpu, client_cpu = cores()
    options = ["--offers", str(offers), "--latency-ms", f"{LATENCY_MS:g}"]
    with simulator(options, server_cpu) as ready:
        command = [
            sys.executable, "-m", "bulkpatch.cli", "run", str(jobs), "--endpoint", ready["endpoint"],
            "--rate", "0", "--concurrency", str(CONCURRENCY), "-q",
        ]  # fmt: skip
        env = {**os.environ, **ENV, "ADOBE_ACCESS_TOKEN": ready["access_token"]}
        run = run_client(command, env, ready, client_cpu, limit_s)
        seen = sim_stats(ready)
    if seen["writes_applied"] != count:
        raise BenchError(f"{seen['writes_applied']} writes applied, not {count}")
    # The simulator applies a write when it arrives and answers one latency later.
    duration = run.wall_s - run.first_write_s
    bins = [int(v) for _, v in sorted(seen["writes_by_second"].items(), key=lambda kv: int(kv[0]))]
    # The last second is cut short by the end of the jobs: whole seconds only.
    full = bins[:-1]
    sustained = sum(full) / len(full) if full else float("nan")
    return Result(count / duration, count / run.wall_s, sustained)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, help="default 20,000")
    parser.add_argument("--offers", type=int, default=2_000, help="seeded offers (default 2,000)")
    parser.add_argument("--repeats", type=int, help="default 3")
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 1 repeat")
    args = parser.parse_args()
    # --quick changes the defaults; values given explicitly win over it.
    defaults = (2_000, 1) if args.quick else (20_000, 3)
    args.jobs = args.jobs or defaults[0]
    args.repeats = args.repeats or defaults[1]
    bound = CONCURRENCY / (LATENCY_MS / 1000)
    # A run at a tenth of the bound is broken, not slow: that is each client's limit.
    limit_s = 60 + 10 * args.jobs / bound
    results: list[Result] = []
    try:
        with (
            time_limit(args.repeats * (limit_s + READY_LIMIT_S + 2 * STOP_LIMIT_S) + 60),
            tempfile.TemporaryDirectory(prefix="bulkpatch-latency-") as tmp,
        ):
            jobs = Path(tmp) / "jobs.ndjson"
            write_jobs(jobs, args.jobs, args.offers, "Latency")
            for repeat in range(args.repeats):
                results.append(one_repeat(jobs, args.jobs, args.offers, limit_s))
                r = results[-1]
                print(
                    f"repeat {repeat + 1}: {r.rate:,.0f} jobs/s "
                    f"(end to end {r.end_to_end:,.0f}/s, simulator {r.sustained:,.0f} writes/s)",
                    flush=True,
                )
    except BenchError as exc:
        print(f"latency benchmark failed: {exc}", file=sys.stderr)
        return 2
    rate = statistics.median(r.rate for r in results)
    end_to_end = statistics.median(r.end_to_end for r in results)
    whole = [r.sustained for r in results if r.sustained == r.sustained]  # not NaN
    sustained = f"{statistics.median(whole):,.0f}" if whole else "n/a (no whole second)"
    ratio = rate / bound
    print(
        f"jobs={args.jobs} offers={args.offers} latency={LATENCY_MS:g} ms "
        f"concurrency={CONCURRENCY} cores={os.cpu_count()} repeats={args.repeats}"
    )
    print(f"Little's-law bound : {bound:,.0f} jobs/s (concurrency / latency)")
    print(f"bulkpatch run      : {rate:,.0f} jobs/s (median)")
    print(f"end to end         : {end_to_end:,.0f} jobs/s (median, Python start-up included)")
    print(f"simulator's count  : {sustained} writes/s (median of whole-second means)")
    print(f"ratio to the bound : {ratio:.3f}x (bar >= {BAR:.2f})")
    return 0 if ratio >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
