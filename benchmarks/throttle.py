"""Throttle fidelity: does ``bulkpatch run --rate 285`` land 285 writes/s under a 300/s limit?

    python benchmarks/throttle.py            # 6,000 jobs, 3 repeats (median), ~25 s each
    python benchmarks/throttle.py --quick    # 600 jobs, 1 repeat: checks the script works

The simulator (``bulkpatch sim --rate-limit 300 --burst 10``: a token bucket over all API
requests, its 429s carrying ``Retry-After`` in seconds) runs in its own process pinned to
one core; ``bulkpatch run --rate 285 --concurrency 64`` runs as a child process pinned to
the other, on replace jobs spread over 2,000 seeded offers. A fresh simulator serves each
repeat. Every figure is the simulator's own count:

- landed rate: writes applied / the run's duration, timed from the first write the
  simulator applied (seen by polling its statistics while the client starts) to the
  client's exit, so Python's start-up is left out and the client's shutdown is not.
  Bar: median >= 0.97 x 285/s;
- the per-second bins of applied writes (``writes_by_second``, whole seconds from the first
  write): their mean over whole seconds, and the highest one. Bar: no bin, in any repeat,
  above the limit of 300;
- throttled 429s / API requests (the statistics polls left out). Bar: median <= 0.5 %.

Every job must land. Exit 0 when every bar is met, 1 when one is missed, 2 when the
benchmark could not measure (a child failed or overran its time limit). Each child has a
hard time limit, and so has the whole script.
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

LIMIT: Final = 300  # the simulator's requests/s
BURST: Final = 10
RATE: Final = 285  # the client's --rate: 5 % under the limit
CONCURRENCY: Final = 64
OFFERS: Final = 2_000
RATE_BAR: Final = 0.97
SHARE_BAR: Final = 0.005


@dataclass(frozen=True)
class Result:
    landed: float  # writes/s from the first write to the client's exit
    bins_mean: float  # mean of the whole-second bins (NaN when the run is under 2 s)
    bins_max: int
    throttled: int
    requests: int

    @property
    def share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0


def one_repeat(jobs: Path, count: int, limit_s: float) -> Result:
    server_cpu, client_cpu = cores()
    options = [
        "--offers", str(OFFERS), "--rate-limit", str(LIMIT), "--burst", str(BURST),
        "--retry-after", "seconds",
    ]  # fmt: skip
    with simulator(options, server_cpu) as ready:
        command = [
            sys.executable, "-m", "bulkpatch.cli", "run", str(jobs), "--endpoint", ready["endpoint"],
            "--rate", str(RATE), "--concurrency", str(CONCURRENCY), "-q",
        ]  # fmt: skip
        env = {**os.environ, **ENV, "ADOBE_ACCESS_TOKEN": ready["access_token"]}
        run = run_client(command, env, ready, client_cpu, limit_s)
        seen = sim_stats(ready)
    writes = int(seen["writes_applied"])
    if writes != count:
        raise BenchError(f"{writes} writes applied, not {count}")
    bins = [int(v) for _, v in sorted(seen["writes_by_second"].items(), key=lambda kv: int(kv[0]))]
    # The last second is cut short by the end of the jobs: the mean takes whole seconds only.
    full = bins[:-1]
    return Result(
        landed=writes / (run.wall_s - run.first_write_s),
        bins_mean=sum(full) / len(full) if full else float("nan"),
        bins_max=max(bins),
        throttled=int(seen["throttled_429"]),
        # Each statistics poll was counted as a request; the last read does not count itself.
        requests=int(seen["requests_total"]) - run.polls,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, help="default 6,000")
    parser.add_argument("--repeats", type=int, help="default 3")
    parser.add_argument("--quick", action="store_true", help="600 jobs, 1 repeat")
    args = parser.parse_args()
    # --quick changes the defaults; values given explicitly win over it.
    defaults = (600, 1) if args.quick else (6_000, 3)
    args.jobs = args.jobs or defaults[0]
    args.repeats = args.repeats or defaults[1]
    # Three times the paced duration: a run that slow is broken, not throttled.
    limit_s = 60 + 3 * args.jobs / RATE
    results: list[Result] = []
    try:
        with (
            time_limit(args.repeats * (limit_s + READY_LIMIT_S + 2 * STOP_LIMIT_S) + 60),
            tempfile.TemporaryDirectory(prefix="bulkpatch-throttle-") as tmp,
        ):
            jobs = Path(tmp) / "jobs.ndjson"
            write_jobs(jobs, args.jobs, OFFERS, "Throttle")
            for repeat in range(args.repeats):
                results.append(one_repeat(jobs, args.jobs, limit_s))
                r = results[-1]
                print(
                    f"repeat {repeat + 1}: landed {r.landed:.1f} writes/s, "
                    f"bins mean {r.bins_mean:.1f} max {r.bins_max}, "
                    f"429s {r.throttled} of {r.requests} requests ({r.share:.2%})",
                    flush=True,
                )
    except BenchError as exc:
        print(f"throttle benchmark failed: {exc}", file=sys.stderr)
        return 2
    landed = statistics.median(r.landed for r in results)
    whole = [r.bins_mean for r in results if r.bins_mean == r.bins_mean]  # not NaN
    share = statistics.median(r.share for r in results)
    worst = max(r.bins_max for r in results)
    landed_ratio, worst_ratio = landed / RATE, worst / LIMIT
    print(
        f"jobs={args.jobs} limit={LIMIT}/s burst={BURST} rate={RATE}/s "
        f"concurrency={CONCURRENCY} cores={os.cpu_count()} repeats={args.repeats}"
    )
    print(
        f"landed rate      : {landed:.1f} writes/s (median) = {landed_ratio:.3f}x of {RATE} (bar >= {RATE_BAR:.2f})"
    )
    if whole:
        mean = statistics.median(whole)
        print(
            f"whole-second bins: mean {mean:.1f} writes/s (median) = {mean / RATE:.3f}x of {RATE}"
        )
    else:
        print("whole-second bins: none (the run was under 2 s)")
    print(
        f"highest bin      : {worst} writes = {worst_ratio:.3f}x of the limit {LIMIT} (bar <= 1.00)"
    )
    print(f"429s / requests  : {share:.3%} (median; bar <= {SHARE_BAR:.1%})")
    ok = landed_ratio >= RATE_BAR and worst <= LIMIT and share <= SHARE_BAR
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
