"""The long chaos run: 20,000 jobs on 2,000 entities, every fault, kills and resumes.

    python benchmarks/chaos.py            # the full drill (a few minutes)
    python benchmarks/chaos.py --quick    # 2,000 jobs, to check the script works
    python benchmarks/chaos.py --only Decisioning    # the phases so named
    python benchmarks/chaos.py --prefetch list       # pre-images from list pages
    python benchmarks/chaos.py --jobs 5000 --entities 500    # another size
    python benchmarks/chaos.py --zombie-seeds 5,8,9   # phase 2 under three fault draws

Phases, each against a fresh simulator and checked against the reference model (every
job applied once, in input order, per entity):

1. every fault at once, in-process, a 409 server, then a 412 server;
2. zombie writes added, under ``--guard always`` (once per ``--zombie-seeds`` fault draw);
3. every fault again, in the legacy xcore dialect;
4. the CLI killed with SIGKILL at 5 random moments and resumed each time;
5. every fault on Decisioning's decision items (JSON Patch) and ranking formulas (written
   whole, with If-Match), half each;
6. the same against a server that ignores If-Match, the client told so (``--if-match
   ignored``): nothing lost or duplicated, wrong entities reported, not judged;
7. another writer changing 20 % of the entities written, alone: each change rebased on,
   none overwritten.

``--prefetch auto|list|get`` (default ``get``) is the client's in every in-process phase
(the xcore phase, where only ``get`` exists, aside): with ``list`` each takes its
pre-images from list pages, read before the other writer's changes.

Prints per phase: jobs, faults injected by kind, retries, recovered writes, requests per
job, wall time, the other writer's changes a later write undid, and the verdict (lost /
duplicated / wrong entities: all must be 0, but for phase 6's wrong entities).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bulkpatch import chaos
from bulkpatch.cli import configure_logging
from bulkpatch.demo import chaos_jobs
from bulkpatch.simulator import FaultRates, running


def report(
    name: str,
    verdict: chaos.Verdict,
    stats: dict[str, Any],
    wall: float,
    extra: str = "",
    *,
    exact: bool = True,
) -> bool:
    """Print a phase's line; whether it passed: nothing lost or duplicated and, when
    ``exact``, no entity wrong."""
    print(
        f"{name}: jobs={verdict.lines} wall={wall:.1f}s lost={verdict.lost} "
        f"duplicated={verdict.duplicated} wrong_entities={verdict.wrong_entities} "
        f"recovered={verdict.recovered} {extra}".rstrip()
    )
    print(f"  faults injected: {stats['faults']} (total {stats['faults_total']})")
    if exact:
        return verdict.clean
    return verdict.lost == verdict.duplicated == 0


async def in_process(name: str, jobs_n: int, entities: int, **settings: Any) -> bool:
    """One phase in-process: ``settings`` are the simulator's, but for ``guard``,
    ``if_match``, ``prefetch`` (the client's), ``xcore``, ``decisioning`` (half decision items, half
    ranking formulas, instead of offers) and ``judged`` (False: wrong entities are
    reported, not failed)."""
    client: dict[str, Any] = {
        k: settings.pop(k) for k in ("guard", "if_match", "prefetch") if k in settings
    }
    judged = settings.pop("judged", True)
    xcore = settings.pop("xcore", False)
    decisioning = settings.pop("decisioning", False)
    config = (
        chaos.decisioning_sim_config(entities, **settings)
        if decisioning
        else chaos.sim_config(offers=entities, **settings)
    )
    async with running(config) as sim:
        target = chaos.DECISIONING if decisioning else chaos.OFFERS
        if decisioning:
            chaos.seed_formulas(sim, entities)
        if xcore:
            ids = await chaos.xcore_ids(sim)
            client.update(dialect="xcore", endpoint=f"{sim.base_url}/data/core/xcore")
            client.pop("prefetch", None)  # xcore has no list pages to take pre-images from
            done = await chaos.drill(
                sim, jobs_n, rewrite=lambda jobs: chaos.as_xcore(jobs, ids), **client
            )
        else:
            done = await chaos.drill(sim, jobs_n, target=target, **client)
    run = done.engine.stats
    extra = (
        f"retries={run.retries} conflicts_rebased={run.conflicts_rebased} "
        f"requests/job={run.requests / jobs_n:.2f} jobs/s={jobs_n / done.wall_s:.0f} "
        f"other_writer_changes_overwritten={done.overwritten} "
        f"list_pages={run.list_pages} reads={run.reads}"
    )
    return report(name, done.verdict, done.stats, done.wall_s, extra, exact=judged)


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


def phases(
    jobs_n: int, offers: int, prefetch: str = "get", zombie_seeds: tuple[int, ...] = (5,)
) -> list[tuple[str, Callable[[], Awaitable[bool]]]]:
    """Each phase's name, and what runs it (whether it passed); ``prefetch``: the
    client's ``--prefetch`` in the in-process phases; the zombie phase once per fault
    draw of ``zombie_seeds``."""
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
    # The last: a server that ignores If-Match. Each job still once, but the state may be
    # wrong (a whole-object write can undo a change made since its read): not judged.
    zombies: list[tuple[str, dict[str, Any]]] = [
        (
            f"zombies, --guard always, fault seed {seed}",
            {"faults": zombie, "guard": "always", "fault_seed": seed},
        )
        for seed in zombie_seeds
    ]
    settings: list[tuple[str, dict[str, Any]]] = [
        ("all faults, 409 server", {"conflict_status": 409}),
        ("all faults, 412 server", {"conflict_status": 412}),
        *zombies,
        ("all faults, xcore dialect", {"xcore": True}),
        ("sigkill+resume", {}),
        ("all faults, Decisioning", {"decisioning": True}),
        (
            "all faults, Decisioning, server ignores If-Match, --if-match ignored",
            {"decisioning": True, "ignore_if_match": True, "if_match": "ignored", "judged": False},
        ),
        ("another writer at 20 %", {"faults": FaultRates(concurrent_writer=0.2)}),
    ]
    out: list[tuple[str, Callable[[], Awaitable[bool]]]] = []
    for name, each in settings:
        if name == "sigkill+resume":
            out.append((name, functools.partial(killed, jobs_n, offers, kills=5)))
        else:
            each = {"prefetch": prefetch, **each}
            out.append((name, functools.partial(in_process, name, jobs_n, offers, **each)))
    return out


async def main(
    jobs_n: int, offers: int, only: list[str], prefetch: str, zombie_seeds: tuple[int, ...]
) -> int:
    chosen = [
        run
        for name, run in phases(jobs_n, offers, prefetch, zombie_seeds)
        if not only or any(o in name for o in only)
    ]
    results = [await run() for run in chosen]
    print("verdict:", "PASS" if all(results) else "FAIL")
    return 0 if all(results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 jobs: check the script works")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="only the phases whose name holds TEXT (may be given more than once)",
    )
    parser.add_argument("--jobs", type=int, help="jobs per phase (default 20,000; --quick 2,000)")
    parser.add_argument(
        "--entities", type=int, help="entities per phase (default a tenth of the jobs)"
    )
    parser.add_argument(
        "--prefetch",
        choices=("auto", "list", "get"),
        default="get",
        help="the client's --prefetch in the in-process phases (default get)",
    )
    parser.add_argument(
        "--zombie-seeds",
        default="5",
        metavar="N,N",
        help="the fault draws the zombie phase runs under, comma-separated (default: 5)",
    )
    args = parser.parse_args()
    jobs = args.jobs or (2000 if args.quick else 20_000)
    # Warnings only: the in-process phases would otherwise log every retry.
    configure_logging(-1, "console")
    entities = args.entities or max(2, jobs // 10)
    seeds = tuple(int(n) for n in args.zombie_seeds.split(","))
    sys.exit(asyncio.run(main(jobs, entities, args.only, args.prefetch, seeds)))
