"""``bulkpatch demo``: a whole run against an in-process simulator, checked at the end.

Also the reference model the tests use: the final state a run must leave is the initial
state with every job applied once, in input order, per entity.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

from bulkpatch import verify
from bulkpatch.auth import Credentials
from bulkpatch.config import RunConfig
from bulkpatch.engine import Engine
from bulkpatch.simulator import CONCURRENT_FIELD, FaultRates, SimConfig, running
from bulkpatch.source import read_jobs

log = structlog.get_logger()

# Fields the server sets on every write: a state comparison leaves them aside.
SERVER_FIELDS: Final = frozenset({"etag", "modified", "lastModifiedBy", "lastModifiedByClientId"})


def make_jobs(
    offers: Mapping[str, Mapping[str, Any]], per_offer: int, *, seed: int = 7
) -> list[dict[str, Any]]:
    """Job lines mixing replaces, appends and test+replace, several per offer, interleaved."""
    rng = random.Random(seed)
    jobs: list[dict[str, Any]] = []
    status: dict[str, str] = {oid: str(doc.get("status")) for oid, doc in offers.items()}
    for round_ in range(per_offer):
        ids = list(offers)
        rng.shuffle(ids)
        for oid in ids:
            kind = rng.choice(("rename", "append", "priority", "approve", "describe"))
            patch: list[dict[str, Any]]
            if kind == "rename":
                patch = [
                    {"op": "replace", "path": "/name", "value": f"{offers[oid]['name']} r{round_}"}
                ]
            elif kind == "append":
                patch = [
                    {"op": "add", "path": "/tags/-", "value": f"tag{round_}-{rng.randrange(1000)}"}
                ]
            elif kind == "priority":
                patch = [{"op": "replace", "path": "/rank/priority", "value": rng.randrange(100)}]
            elif kind == "approve":
                # A guarded edit: only flip the status the job expects to find.
                new = "approved" if status[oid] != "approved" else "draft"
                patch = [
                    {"op": "test", "path": "/status", "value": status[oid]},
                    {"op": "replace", "path": "/status", "value": new},
                ]
                status[oid] = new
            else:
                patch = [{"op": "add", "path": "/characteristics/note", "value": f"n{round_}"}]
            jobs.append({"id": oid, "patch": patch, "ref": f"{kind}-{round_}"})
    return jobs


def chaos_jobs(
    offers: Mapping[str, Mapping[str, Any]], count: int, *, seed: int = 13
) -> list[dict[str, Any]]:
    """``count`` jobs over ``offers`` mixing replace, append, test+replace, remove and copy.

    Each job is checked against a model of the offers as the jobs before it leave them,
    so every job applies when the jobs run once, in order: any failure is the engine's.
    """
    rng = random.Random(seed)
    model = {k: orjson.loads(orjson.dumps(v)) for k, v in offers.items()}
    ids = list(offers)
    jobs: list[dict[str, Any]] = []
    for n in range(count):
        oid = rng.choice(ids)
        doc = model[oid]
        kind = rng.choice(("replace", "append", "test+replace", "remove", "copy"))
        patch: list[dict[str, Any]]
        if kind == "replace":
            field = rng.choice(("/name", "/description", "/rank/priority"))
            value: Any = rng.randrange(100) if field == "/rank/priority" else f"{field[1:]}-{n}"
            patch = [{"op": "replace", "path": field, "value": value}]
        elif kind == "append":
            patch = [{"op": "add", "path": "/tags/-", "value": f"t{n}"}]
        elif kind == "test+replace":
            new = "approved" if doc["status"] != "approved" else "draft"
            patch = [
                {"op": "test", "path": "/status", "value": doc["status"]},
                {"op": "replace", "path": "/status", "value": new},
            ]
        elif kind == "remove" and doc["tags"]:
            patch = [{"op": "remove", "path": "/tags/0"}]
        elif kind == "remove":
            patch = [{"op": "add", "path": "/tags/0", "value": f"first{n}"}]
        else:
            patch = [{"op": "copy", "from": "/name", "path": "/description"}]
        model[oid] = verify.apply(patch, doc)
        jobs.append({"id": oid, "patch": patch})
    return jobs


def expected_state(
    initial: Mapping[str, Mapping[str, Any]], jobs: Iterable[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Apply every job once, in input order, to a copy of the initial entities."""
    state: dict[str, dict[str, Any]] = {
        k: orjson.loads(orjson.dumps(v)) for k, v in initial.items()
    }
    for job in jobs:
        state[job["id"]] = verify.apply(job["patch"], state[job["id"]])
    return state


def comparable(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A document without the fields the server or the simulated other writer change."""
    out = {k: v for k, v in doc.items() if k not in SERVER_FIELDS}
    characteristics = out.get("characteristics")
    if isinstance(characteristics, dict) and CONCURRENT_FIELD in characteristics:
        out["characteristics"] = {k: v for k, v in characteristics.items() if k != CONCURRENT_FIELD}
    return out


def differences(
    expected: Mapping[str, Mapping[str, Any]], actual: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Ids whose final state is not the expected one (server-managed fields aside)."""
    return sorted(
        oid
        for oid in set(expected) | set(actual)
        if oid not in expected
        or oid not in actual
        or comparable(expected[oid]) != comparable(actual[oid])
    )


async def demo(*, offers: int = 200, per_offer: int = 5, workdir: Path | None = None) -> int:
    """Seed a simulator, run a mixed job file through the engine, check the final state."""
    faults = FaultRates(error_503=0.02, drop_after=0.01, throttle_429=0.01, concurrent_writer=0.02)
    sim_config = SimConfig(
        offers=offers, fault_seed=11, faults=faults, fault_retry_after_s=0, latency_ms=2
    )
    base = workdir or Path(tempfile.mkdtemp(prefix="bulkpatch-demo-"))
    async with running(sim_config) as sim:
        initial = {d["id"]: d for d in sim.store.dump()["offers/personalized"]}
        jobs = make_jobs(initial, per_offer)
        jobs_path = base / "jobs.ndjson"
        jobs_path.write_bytes(
            b"".join(orjson.dumps(j, option=orjson.OPT_APPEND_NEWLINE) for j in jobs)
        )
        config = RunConfig(
            credentials=Credentials(access_token=sim.config.access_token),
            endpoint=sim.endpoint,
            api_key="bulkpatch-demo",
            org_id="DEMO0000@AdobeOrg",
            sandbox="demo",
            rate=0,
            concurrency=32,
            timeout=5,
            backoff_base=0.01,
            seed=1,
        )
        log.info(
            "demo.start", offers=offers, jobs=len(jobs), file=str(jobs_path), endpoint=sim.endpoint
        )
        engine = Engine(config)
        started = time.monotonic()
        outcomes_path = base / "outcomes.ndjson"
        failed = 0
        with jobs_path.open("rb") as source, outcomes_path.open("wb") as out:
            async for outcome in engine.run(read_jobs(source)):
                out.write(orjson.dumps(outcome.to_dict(), option=orjson.OPT_APPEND_NEWLINE))
                failed += not outcome.ok
        wall = time.monotonic() - started
        actual = {d["id"]: d for d in sim.store.dump()["offers/personalized"]}
        wrong = differences(expected_state(initial, jobs), actual)
        sim_stats = sim.simulator.stats.as_dict(sim.store)
    log.info(
        "demo.summary",
        jobs=len(jobs),
        wall_s=round(wall, 2),
        jobs_per_s=round(len(jobs) / wall, 1),
        failed=failed,
        faults_injected=sim_stats["faults"],
        **engine.stats.as_dict(),
    )
    log.info("demo.files", jobs=str(jobs_path), outcomes=str(outcomes_path))
    if failed or wrong:
        log.error("demo.check_failed", failed_jobs=failed, wrong_offers=len(wrong), first=wrong[:5])
        return 1
    log.info(
        "demo.check_passed",
        offers=len(actual),
        detail="final state == every job applied once, in order",
    )
    return 0
