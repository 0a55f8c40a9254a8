"""Requests per job: entities' state from list pages (``--prefetch auto``) against one
read per entity (``--prefetch get``), on a realistic mix.

The mix, on a simulator seeded with ``--offers`` offers of ``--offer-size`` bytes:
40 % replace, 30 % append to an array, 10 % ``test`` + ``replace``, 10 % ``remove`` of a
field, 5 % deletes, 5 % creates (an offer's second job, where there is one, is a
replace). Each figure comes from a fresh simulator, so every mode meets the same state.

Printed, per mode: requests per job (the run's own summary: every request, the
preflight, list pages, GETs, writes and 429s), list pages and GETs, wall time. Then
``plan`` of the same jobs (requests), ``rollback`` of a ``--backup`` run (requests per
entity restored), and with ``--limited`` both modes again under a simulator limit of
300 requests/s with ``--rate auto`` (wall time ratio).

Bars: auto ≤ 1.05 requests per job; plan ≤ 120 requests; rollback ≤ 1.05 requests per
entity restored; limited: auto's wall time ≤ 0.7 x get's. Exit 0 when every bar measured
is met, 1 when one is missed, 2 when a figure could not be measured.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ENV, BenchError, cores, pin, sim_stats, simulator, time_limit

LIMIT_S = 3600.0


def write_mix(path: Path, jobs: int, offers: int, seed: int) -> None:
    """The realistic mix (module docstring), one job a line."""
    rng = random.Random(seed)
    order = list(range(1, offers + 1))
    rng.shuffle(order)
    kinds = (
        ["replace"] * 40
        + ["append"] * 30
        + ["test"] * 10
        + ["remove"] * 10
        + ["delete"] * 5
        + ["create"] * 5
    )
    with path.open("wb") as f:
        for n in range(jobs):
            kind = rng.choice(kinds)
            oid = f"personalizedOffer{order[n % offers]:06d}"
            if n >= offers and kind != "create":
                kind = "replace"  # the offer's second job: whatever its first did, this applies
            f.write(orjson.dumps(_job(kind, oid, n), option=orjson.OPT_APPEND_NEWLINE))


def _job(kind: str, oid: str, n: int) -> dict[str, Any]:
    if kind == "create":
        return {
            "create": {
                "name": f"Bench created {n}",
                "status": "draft",
                "representations": [],
                "tags": [],
            }
        }
    if kind == "delete":
        return {"id": oid, "delete": True}
    patch: list[dict[str, Any]] = {
        "replace": [{"op": "replace", "path": "/name", "value": f"renamed {n}"}],
        "append": [{"op": "add", "path": "/tags/-", "value": f"tag{n}"}],
        "test": [
            {"op": "test", "path": "/id", "value": oid},
            {"op": "replace", "path": "/status", "value": "approved"},
        ],
        "remove": [{"op": "remove", "path": "/description"}],
    }[kind]
    return {"id": oid, "patch": patch}


def bulkpatch(args: list[str], ready: dict[str, Any], cpu: int | None, limit_s: float) -> float:
    """Run a bulkpatch command against the simulator; its wall time (s)."""
    env = {
        **ENV,
        "ADOBE_ACCESS_TOKEN": ready["access_token"],
        "BULKPATCH_ENDPOINT": ready["endpoint"],
    }
    env["PATH"] = "/usr/bin:/bin"
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkpatch.cli", *args, "-q"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        pin(proc.pid, cpu)
        try:
            code = proc.wait(limit_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"bulkpatch {args[0]} overran {limit_s:.0f} s") from None
        wall = time.perf_counter() - started
        if code not in (0, 1):  # 1: some jobs failed (a remove of a field another job removed, say)
            err.seek(0)
            raise BenchError(f"bulkpatch {args[0]} exited {code}: {err.read().decode()[-1500:]}")
    return wall


def one_run(
    sim_options: list[str],
    jobs: Path,
    mode: str,
    rate: str,
    work: Path,
    cpus: tuple[int | None, int | None],
) -> dict[str, Any]:
    """A run of ``jobs`` under ``--prefetch mode`` on a fresh simulator: its summary."""
    summary = work / f"summary-{mode}-{rate}.json"
    out = work / f"out-{mode}-{rate}.ndjson"
    with simulator(sim_options, cpus[0]) as ready:
        wall = bulkpatch(
            ["run", str(jobs), "--rate", rate, "--prefetch", mode, "--allow-delete", "--concurrency", "32",
             "-o", str(out), "--overwrite", "--summary", str(summary)],
            ready, cpus[1], LIMIT_S,
        )  # fmt: skip
    figures: dict[str, Any] = json.loads(summary.read_text())
    figures["wall"] = wall
    return figures


def plan_and_rollback(
    sim_options: list[str], jobs: Path, work: Path, cpus: tuple[int | None, int | None]
) -> tuple[int, float, int]:
    """(plan's requests, rollback's requests per entity restored, entities restored)."""
    with simulator(sim_options, cpus[0]) as ready:
        before = sim_stats(ready)["requests_total"]
        bulkpatch(
            ["plan", str(jobs), "--rate", "0", "-o", str(work / "plan.ndjson"), "--overwrite"],
            ready,
            cpus[1],
            LIMIT_S,
        )
        plan = sim_stats(ready)["requests_total"] - before
        backup = work / "backup.ndjson"
        backup.unlink(missing_ok=True)
        bulkpatch(
            ["run", str(jobs), "--rate", "0", "--allow-delete", "--backup", str(backup), "-o",
             str(work / "backed.ndjson"), "--overwrite"], ready, cpus[1], LIMIT_S,
        )  # fmt: skip
        before = sim_stats(ready)["requests_total"]
        bulkpatch(
            [
                "rollback",
                str(backup),
                "--rate",
                "0",
                "-o",
                str(work / "undone.ndjson"),
                "--overwrite",
            ],
            ready,
            cpus[1],
            LIMIT_S,
        )
        rollback = sim_stats(ready)["requests_total"] - before
    restored = sum(1 for _ in (work / "undone.ndjson").open("rb"))
    return plan, rollback / max(1, restored), restored


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--offers", type=int, default=9_500)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--offer-size", type=int, default=1024)
    parser.add_argument(
        "--limited",
        action="store_true",
        help="also both modes under a 300 req/s limit, --rate auto",
    )
    parser.add_argument("--quick", action="store_true", help="950 offers, 1,000 jobs")
    args = parser.parse_args()
    if args.quick:
        args.offers, args.jobs = 950, 1_000
    cpus = cores()
    sim_options = ["--offers", str(args.offers), "--offer-size", str(args.offer_size)]
    missed = []
    with tempfile.TemporaryDirectory() as tmp, time_limit(LIMIT_S):
        work = Path(tmp)
        jobs = work / "jobs.ndjson"
        write_mix(jobs, args.jobs, args.offers, seed=1)
        print(
            f"{args.jobs:,} jobs on {args.offers:,} offers of {args.offer_size:,} bytes (the realistic mix)"
        )
        figures = {
            mode: one_run(sim_options, jobs, mode, "0", work, cpus) for mode in ("get", "auto")
        }
        for mode, f in figures.items():
            print(
                f"  --prefetch {mode:<4}  {f['requests'] / f['jobs']:.3f} requests/job "
                f"({f['requests']:,}: {f['list_pages']:,} list pages, {f['reads']:,} GETs, {f['writes']:,} writes), "
                f"wall {f['wall']:.1f} s"
            )
        per_job = figures["auto"]["requests"] / figures["auto"]["jobs"]
        print(
            f"  bar: auto <= 1.05 requests/job: {per_job:.3f} ({'met' if per_job <= 1.05 else 'MISSED'})"
        )
        missed += [per_job > 1.05]
        plan, per_entity, restored = plan_and_rollback(sim_options, jobs, work, cpus)
        print(f"  plan: {plan:,} requests (bar <= 120: {'met' if plan <= 120 else 'MISSED'})")
        print(
            f"  rollback: {per_entity:.3f} requests per entity restored, {restored:,} restored "
            f"(bar <= 1.05: {'met' if per_entity <= 1.05 else 'MISSED'})"
        )
        missed += [plan > 120, per_entity > 1.05]
        if args.limited:
            limited = [*sim_options, "--rate-limit", "300"]
            runs = {
                mode: one_run(limited, jobs, mode, "auto", work, cpus) for mode in ("get", "auto")
            }
            for mode, f in runs.items():
                print(
                    f"  limit 300/s, --rate auto, --prefetch {mode:<4}: wall {f['wall']:.1f} s, "
                    f"{f['requests'] / f['jobs']:.3f} requests/job ({f['throttled']:,} 429s)"
                )
            ratio = runs["auto"]["wall"] / runs["get"]["wall"]
            print(
                f"  bar: wall(auto) <= 0.7 x wall(get): {ratio:.2f}x ({'met' if ratio <= 0.7 else 'MISSED'})"
            )
            missed += [ratio > 0.7]
    return 1 if any(missed) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"could not measure: {exc}", file=sys.stderr)
        sys.exit(2)
