"""Chaos drills: every fault at once, kills and resumes, checked against the reference model.

Shared by the test suite (small) and ``benchmarks/chaos.py`` (long). The verdict counts
what the product promises never happens: a line without an outcome, a job reported ok
twice, an entity whose final state is not every job applied once, in order. A drill runs
over offers (``OFFERS``) or over Decisioning's decision items and ranking formulas
(``DECISIONING``: a JSON Patch kind and a whole-object kind).
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from bulkpatch.auth import Credentials
from bulkpatch.client import fetch
from bulkpatch.config import RunConfig
from bulkpatch.demo import chaos_jobs, differences, expected_state
from bulkpatch.engine import Engine
from bulkpatch.entities import DEFAULT_ENTITY
from bulkpatch.outcomes import Outcome
from bulkpatch.simulator import (
    CONCURRENT_FIELD,
    CONCURRENT_HOMES,
    FaultRates,
    RunningSimulator,
    SimConfig,
)
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


# The simulator's collections a drill writes to, each with the kind (a job's ``entity``)
# of its entities.
OFFERS: Final = {"offers/personalized": DEFAULT_ENTITY}
DECISIONING: Final = {"offer-items": "offer-items", "ranking-formulas": "ranking-formulas"}
# The x-schema-id of a Decisioning drill's item jobs (the simulator takes any by default).
SCHEMA_ID: Final = "https://ns.adobe.com/chaos/schemas/offer-items"


def decisioning_sim_config(entities: int, **overrides: Any) -> SimConfig:
    """``sim_config`` with no offers and half of ``entities`` decision items; the other
    half are ranking formulas, which ``seed_formulas`` adds once it runs."""
    return sim_config(**{"offers": 0, "items": entities - entities // 2, **overrides})


def seed_formulas(sim: RunningSimulator, entities: int) -> None:
    """Add the ranking formulas of ``decisioning_sim_config(entities)`` to the store."""
    for n in range(1, entities // 2 + 1):
        sim.store.put("ranking-formulas", formula(n))


def formula(n: int) -> dict[str, Any]:
    """A Decisioning ranking formula as a lookup returns it (Decisioning notes §2.4)."""
    stamp = "2026-01-01T00:00:00.000Z"
    return {
        "id": f"rankingFormula{n:06d}",
        "etag": 1,
        "created": stamp,
        "modified": stamp,
        "createdBy": "seed@AdobeID",
        "lastModifiedBy": "seed@AdobeID",
        "name": f"Formula {n}",
        "description": f"Priority plus {n % 10}",
        "exdFunction": True,
        "returnType": {"type": "INTEGER"},
        "expression": {
            "type": "PQL",
            "format": "pql/text",
            "value": f"offer._experience.decisioning.decisionitem.itemPriority + {n % 10}",
        },
        "definedOn": {"offer": {"schema": {"altId": "_xdm.context.offer", "version": "1"}}},
        "schemas": [
            "https://ns.adobe.com/experience/offer-management/ranking-function;version=0.3"
        ],
    }


def entities_of(
    sim: RunningSimulator, target: dict[str, str] = OFFERS
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The entities of ``target``'s collections by id, and each one's kind."""
    dump = sim.store.dump()
    docs = {d["id"]: d for key in target for d in dump.get(key, ())}
    kinds = {d["id"]: kind for key, kind in target.items() for d in dump.get(key, ())}
    return docs, kinds


def initial_offers(sim: RunningSimulator) -> dict[str, dict[str, Any]]:
    return entities_of(sim)[0]


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
    target: dict[str, str] = OFFERS,
) -> Verdict:
    ok = Counter(o["line"] for o in outcomes if o["ok"])
    actual = entities_of(sim, target)[0]
    return Verdict(
        lines=len(jobs),
        lost=sum(1 for n in range(1, len(jobs) + 1) if n not in ok),
        duplicated=sum(1 for count in ok.values() if count > 1),
        wrong_entities=len(differences(expected_state(initial, jobs), actual)),
        recovered=sum(1 for o in outcomes if o.get("recovered")),
    )


def overwritten(sim: RunningSimulator, stats: dict[str, Any], target: dict[str, str]) -> int:
    """The simulated other writer's changes a later write undid: it counts its changes in
    each entity (``CONCURRENT_FIELD``), so the count it made (``stats``) less the counts
    left. A whole-object write to a server that ignores If-Match can undo one; a JSON
    Patch never does (it names only the fields it changes)."""
    left = 0
    for doc in entities_of(sim, target)[0].values():
        for home in CONCURRENT_HOMES:
            holder = doc.get(home)
            if isinstance(holder, dict):
                left += int(holder.get(CONCURRENT_FIELD, 0))
    made: int = stats["faults"].get("concurrent_writer", 0)
    return made - left


@dataclass(frozen=True, slots=True)
class Drill:
    """A drill's results: the verdict, every outcome, the simulator's counters once
    settled, the engine (its ``stats``), the run's wall time and ``overwritten``."""

    verdict: Verdict
    outcomes: list[Outcome]
    stats: dict[str, Any]
    engine: Engine
    wall_s: float
    overwritten: int


async def drill(
    sim: RunningSimulator,
    jobs_n: int,
    *,
    target: dict[str, str] = OFFERS,
    seed: int = 13,
    rewrite: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    **config: Any,
) -> Drill:
    """``jobs_n`` chaos jobs over ``target``'s entities, run in-process with ``config``
    (``run_config``'s overrides), settled and judged. ``rewrite`` makes the jobs sent of
    the jobs made (the xcore dialect's, ``as_xcore``); they are judged as the jobs made."""
    initial, kinds = entities_of(sim, target)
    jobs = chaos_jobs(initial, jobs_n, seed=seed, kinds=kinds)
    if "offer-items" in target:
        config.setdefault("schema_id", SCHEMA_ID)
    started = time.monotonic()
    sent = jobs if rewrite is None else rewrite(jobs)
    outcomes, engine = await run_in_process(sim, sent, **config)
    wall = time.monotonic() - started
    stats = await settle(sim)
    verdict = judge(sim, initial, jobs, [o.to_dict() for o in outcomes], target)
    return Drill(verdict, outcomes, stats, engine, wall, overwritten(sim, stats, target))


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
