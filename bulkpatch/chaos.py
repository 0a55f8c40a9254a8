"""Chaos drills: every fault at once, kills and resumes, checked against the reference model.

Shared by the test suite (small) and ``benchmarks/chaos.py`` (long). The verdict counts
what the product promises never happens: a line without an outcome, a job reported ok
twice, an entity whose final state is not every job applied once, in order.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from bulkpatch.auth import Credentials
from bulkpatch.client import fetch
from bulkpatch.config import RunConfig
from bulkpatch.demo import differences, expected_state
from bulkpatch.engine import Engine
from bulkpatch.outcomes import Outcome
from bulkpatch.simulator import FaultRates, RunningSimulator, SimConfig
from bulkpatch.source import read_jobs

ALL_FAULTS: Final = FaultRates(
    error_503=0.05,
    throttle_429=0.02,
    drop_before=0.01,
    drop_after=0.01,
    late_answer=0.01,
    token_expiry=0.005,
    concurrent_writer=0.05,
)


def sim_config(**overrides: Any) -> SimConfig:
    """A simulator with every fault on; slow answers come after the client's timeout."""
    settings: dict[str, Any] = {
        "offers": 200,
        "fault_seed": 5,
        "faults": ALL_FAULTS,
        "fault_retry_after_s": 0,  # both Retry-After forms, without whole-second pauses
        "late_ms": 600,
        "zombie_ms": 600,
    }
    settings.update(overrides)
    return SimConfig(**settings)


def run_config(sim: RunningSimulator, **overrides: Any) -> RunConfig:
    settings: dict[str, Any] = {
        # IMS credentials, so expiring tokens are renewed for real.
        "credentials": Credentials(
            client_id=sim.config.client_id,
            client_secret=sim.config.client_secret,
            ims_url=sim.ims_url,
        ),
        "endpoint": sim.endpoint,
        "org_id": "CHAOS@AdobeOrg",
        "sandbox": "chaos",
        "rate": 0,
        "concurrency": 32,
        "timeout": 0.3,
        "backoff_base": 0.01,
        "backoff_cap": 0.2,
        "max_attempts": 8,
        "seed": 1,
    }
    settings.update(overrides)
    return RunConfig(**settings)


def initial_offers(sim: RunningSimulator) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in sim.store.dump()["offers/personalized"]}


async def settle(sim: RunningSimulator, within_s: float = 30) -> dict[str, Any]:
    """Wait, through the simulator, until no delayed write is pending; its stats."""
    url = f"{sim.base_url}/_sim/settle?timeout={within_s}"
    stats: dict[str, Any] = (await fetch(url)).json()
    return stats


async def xcore_ids(sim: RunningSimulator) -> dict[str, str]:
    """DPS id -> xcore instance id of every offer, from the simulator's own map."""
    out: dict[str, str] = {}
    for line in (await fetch(f"{sim.base_url}/_sim/xcore-ids")).body.splitlines():
        pair = orjson.loads(line)
        if not pair["xcore"].startswith("xcore:"):
            out[pair["dps"]] = pair["xcore"]
    return out


def xcore_path(pointer: str) -> str:
    """A DPS pointer as the same location in an xcore instance (``/name`` ->
    ``/_instance/xdm:name``); array positions stay as they are. Enough for the fields the
    chaos jobs touch (name, description, status, rank, tags); inside ``characteristics``
    and ``content`` keys keep no prefix, and ``format``/``language`` take ``dc:``."""
    tokens = pointer.split("/")[1:]
    mapped = [t if t == "-" or t.isdigit() else f"xdm:{t}" for t in tokens]
    return "/_instance/" + "/".join(mapped)


def as_xcore(jobs: list[dict[str, Any]], ids: dict[str, str]) -> list[dict[str, Any]]:
    """The chaos jobs as an xcore job file: instance ids, ``/_instance/xdm:`` paths."""
    out = []
    for job in jobs:
        patch = []
        for op in job["patch"]:
            op = {**op, "path": xcore_path(op["path"])}
            if "from" in op:
                op["from"] = xcore_path(op["from"])
            patch.append(op)
        out.append({"id": ids[job["id"]], "patch": patch})
    return out


async def run_in_process(
    sim: RunningSimulator, jobs: list[dict[str, Any]], **config: Any
) -> tuple[list[Outcome], Engine]:
    data = b"".join(orjson.dumps(j, option=orjson.OPT_APPEND_NEWLINE) for j in jobs)
    engine = Engine(run_config(sim, **config))
    return [o async for o in engine.run(read_jobs(io.BytesIO(data)))], engine


@dataclass(frozen=True, slots=True)
class Verdict:
    lines: int
    lost: int  # lines without an ok outcome
    duplicated: int  # lines reported ok more than once
    wrong_entities: int  # final state differs from every job applied once, in order
    recovered: int

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicated == self.wrong_entities == 0


def judge(
    sim: RunningSimulator,
    initial: dict[str, dict[str, Any]],
    jobs: list[dict[str, Any]],
    outcomes: list[dict[str, Any]],
) -> Verdict:
    ok = Counter(o["line"] for o in outcomes if o["ok"])
    actual = {d["id"]: d for d in sim.store.dump()["offers/personalized"]}
    return Verdict(
        lines=len(jobs),
        lost=sum(1 for n in range(1, len(jobs) + 1) if n not in ok),
        duplicated=sum(1 for count in ok.values() if count > 1),
        wrong_entities=len(differences(expected_state(initial, jobs), actual)),
        recovered=sum(1 for o in outcomes if o.get("recovered")),
    )


async def kill_and_resume(
    sim: RunningSimulator,
    jobs: list[dict[str, Any]],
    workdir: Path,
    *,
    kills: int,
    seed: int,
    concurrency: int = 16,
    timeout_s: float = 600,
) -> tuple[int, list[dict[str, Any]]]:
    """Run ``bulkpatch run`` as a process, SIGKILL it ``kills`` times at random write
    counts, resume each time, then let it finish; the kills done and every receipt line.

    Raises ``RuntimeError`` when the final resumed run does not exit 0.
    """
    jobs_path = workdir / "jobs.ndjson"
    jobs_path.write_bytes(b"".join(orjson.dumps(j, option=orjson.OPT_APPEND_NEWLINE) for j in jobs))
    receipts = workdir / "out.ndjson"
    env = {
        **os.environ,
        "ADOBE_ACCESS_TOKEN": sim.config.access_token,
        "ADOBE_API_KEY": "chaos",
        "ADOBE_ORG_ID": "CHAOS@AdobeOrg",
        "ADOBE_SANDBOX_NAME": "chaos",
    }
    command = [
        sys.executable, "-m", "bulkpatch.cli", "run", str(jobs_path),
        "--endpoint", sim.endpoint, "--rate", "0", "--concurrency", str(concurrency),
        "--timeout", "0.3", "--receipts", str(receipts), "-q",
    ]  # fmt: skip
    start = sim.store.writes_applied
    points = sorted(random.Random(seed).sample(range(len(jobs) // 20, len(jobs)), kills))
    done_kills = 0
    for n, point in enumerate(points):
        run = [*command, *(["--resume"] if n else [])]
        if await _kill_at(sim, run, env, start + point, timeout_s):
            done_kills += 1
    sim.simulator.write_observers.clear()
    final = await asyncio.create_subprocess_exec(
        *command, "--resume", env=env, stdin=asyncio.subprocess.DEVNULL
    )
    code = await asyncio.wait_for(final.wait(), timeout_s)
    if code != 0:
        raise RuntimeError(f"the final resumed run exited {code}")
    records = [orjson.loads(raw) for raw in receipts.read_bytes().splitlines()]
    return done_kills, records


async def _kill_at(
    sim: RunningSimulator, command: list[str], env: dict[str, str], writes: int, timeout_s: float
) -> bool:
    """Run ``command``; SIGKILL it once the simulator has applied ``writes`` writes in
    all. True when it was killed, False when it finished first."""
    reached = asyncio.Event()

    def observe(count: int) -> None:
        if count >= writes:
            reached.set()

    sim.simulator.write_observers[:] = [observe]
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, stdin=asyncio.subprocess.DEVNULL
    )
    finished = asyncio.create_task(proc.wait())
    waiting = asyncio.create_task(reached.wait())
    await asyncio.wait([finished, waiting], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    killed = not finished.done()
    if killed:
        proc.kill()  # SIGKILL: no flush, no cleanup, writes in flight
    await asyncio.wait_for(finished, 60)
    return killed
