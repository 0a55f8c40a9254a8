"""The long chaos run: 20,000 jobs on 2,000 offers, every fault, kills and resumes.

    python benchmarks/chaos.py            # the full drill (a few minutes)
    python benchmarks/chaos.py --quick    # 2,000 jobs, to check the script works
    python benchmarks/chaos.py --zombie-seeds 5,8,9   # phase 2 under three fault draws

Phases, each against a fresh simulator and checked against the reference model (every
job applied once, in input order, per offer):

1. every fault at once, in-process, a 409 server, then a 412 server;
2. zombie writes added, under ``--guard always`` (once per ``--zombie-seeds`` fault draw);
3. every fault again, in the legacy xcore dialect;
4. the CLI killed with SIGKILL at 5 random moments and resumed each time.

Prints per phase: jobs, faults injected by kind, retries, recovered writes, requests per
job, wall time, and the verdict (lost / duplicated / wrong entities: all must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bulkpatch import chaos
from bulkpatch.cli import configure_logging
from bulkpatch.demo import chaos_jobs
from bulkpatch.simulator import FaultRates, running


def report(
    name: str, verdict: chaos.Verdict, stats: dict[str, Any], wall: float, extra: str = ""
) -> bool:
    print(
        f"{name}: jobs={verdict.lines} wall={wall:.1f}s lost={verdict.lost} "
        f"duplicated={verdict.duplicated} wrong_entities={verdict.wrong_entities} "
        f"recovered={verdict.recovered} {extra}".rstrip()
    )
    print(f"  faults injected: {stats['faults']} (total {stats['faults_total']})")
    return verdict.clean


async def in_process(name: str, jobs_n: int, offers: int, **settings: Any) -> bool:
    guard = settings.pop("guard", "auto")
    xcore = settings.pop("xcore", False)
    async with running(chaos.sim_config(offers=offers, **settings)) as sim:
        initial = chaos.initial_offers(sim)
        jobs = chaos_jobs(initial, jobs_n)
        started = time.monotonic()
        if xcore:
            outcomes, engine = await chaos.run_in_process(
                sim,
                chaos.as_xcore(jobs, await chaos.xcore_ids(sim)),
                guard=guard,
                dialect="xcore",
                endpoint=f"{sim.base_url}/data/core/xcore",
            )
        else:
            outcomes, engine = await chaos.run_in_process(sim, jobs, guard=guard)
        wall = time.monotonic() - started
        stats = await chaos.settle(sim)
        verdict = chaos.judge(sim, initial, jobs, [o.to_dict() for o in outcomes])
    run = engine.stats
    extra = (
        f"retries={run.retries} conflicts_rebased={run.conflicts_rebased} "
        f"requests/job={run.requests / len(jobs):.2f} jobs/s={len(jobs) / wall:.0f}"
    )
    return report(name, verdict, stats, wall, extra)


async def killed(jobs_n: int, offers: int, kills: int) -> bool:
    faults = FaultRates(
        error_503=0.03, drop_after=0.01, drop_before=0.01, late_answer=0.01, concurrent_writer=0.03
    )
    async with running(chaos.sim_config(faults=faults, offers=offers, latency_ms=1)) as sim:
        initial = chaos.initial_offers(sim)
        jobs = chaos_jobs(initial, jobs_n, seed=9)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="bulkpatch-chaos-") as workdir:
            done, records = await chaos.kill_and_resume(
                sim, jobs, Path(workdir), kills=kills, seed=21
            )
        wall = time.monotonic() - started
        stats = await chaos.settle(sim)
        verdict = chaos.judge(sim, initial, jobs, records)
    return report(
        "sigkill+resume", verdict, stats, wall, f"kills={done} receipt_lines={len(records)}"
    )


async def main(quick: bool, zombie_seeds: list[int]) -> int:
    jobs_n, offers = (2000, 200) if quick else (20_000, 2_000)
    zombie = FaultRates(
        **{
            k: getattr(chaos.ALL_FAULTS, k)
            for k in (
                "error_503",
                "throttle_429",
                "drop_before",
                "drop_after",
                "late_answer",
                "token_expiry",
                "concurrent_writer",
            )
        },
        zombie_write=0.01,
    )
    results = [
        await in_process("all faults, 409 server", jobs_n, offers, conflict_status=409),
        await in_process("all faults, 412 server", jobs_n, offers, conflict_status=412),
        *[
            await in_process(
                f"zombies, --guard always, fault seed {seed}",
                jobs_n, offers, faults=zombie, guard="always", fault_seed=seed,
            )
            for seed in zombie_seeds
        ],
        await in_process("all faults, xcore dialect", jobs_n, offers, xcore=True),
        await killed(jobs_n, offers, kills=5),
    ]
    print("verdict:", "PASS" if all(results) else "FAIL")
    return 0 if all(results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 jobs: check the script works")
    parser.add_argument(
        "--zombie-seeds", default="5", metavar="N,N",
        help="the fault draws the zombie phase runs under, comma-separated (default: 5)",
    )
    # Warnings only: the in-process phases would otherwise log every retry.
    configure_logging(-1, "console")
    args = parser.parse_args()
    seeds = [int(n) for n in args.zombie_seeds.split(",")]
    sys.exit(asyncio.run(main(args.quick, seeds)))
