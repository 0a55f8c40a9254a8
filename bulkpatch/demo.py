"""``bulkpatch demo``: a whole run against an in-process simulator, checked at the end.

Also the reference model the tests use: the final state a run must leave is the initial
state with every job applied once, in input order, per entity.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import orjson
import structlog

from bulkpatch import verify
from bulkpatch.auth import Credentials
from bulkpatch.config import RunConfig
from bulkpatch.engine import Engine
from bulkpatch.entities import DEFAULT_ENTITY
from bulkpatch.simulator import CONCURRENT_FIELD, CONCURRENT_HOMES, FaultRates, SimConfig, running
from bulkpatch.source import read_jobs
from bulkpatch.summary import of_run, render

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


@dataclass(frozen=True, slots=True)
class Shape:
    """Where an entity kind keeps what the chaos jobs change (JSON Pointers): two strings,
    an integer (None: the kind has none), a list, and a status the jobs flip between
    ``approved`` and ``draft`` under a ``test`` (None: the name is tested and replaced)."""

    name: str = "/name"
    description: str = "/description"
    number: str | None = "/rank/priority"
    tags: str = "/tags"
    status: str | None = "/status"


_ITEM: Final = "/_experience/decisioning/decisionitem"
# Per job ``entity``: an offer's fields, a decision item's (Decisioning notes §2.1) and a
# ranking formula's (§2.4, which has no number, status or list of its own: ``/labels``
# is made by the first job that appends to it).
SHAPES: Final = {
    DEFAULT_ENTITY: Shape(),
    "offer-items": Shape(
        f"{_ITEM}/itemName",
        f"{_ITEM}/itemDescription",
        f"{_ITEM}/itemPriority",
        f"{_ITEM}/itemLabels",
        "/_experience/decisioning/offeritem/lifecycleStatus",
    ),
    "ranking-formulas": Shape(number=None, tags="/labels", status=None),
}


def chaos_jobs(
    offers: Mapping[str, Mapping[str, Any]],
    count: int,
    *,
    seed: int = 13,
    kinds: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """``count`` jobs over ``offers`` mixing replace, append, test+replace, remove and copy.

    ``kinds`` names the kind (a job's ``entity``, a key of ``SHAPES``) of each entity
    that is not an offer. Each job is checked against a model of the entities as the jobs
    before it leave them, so every job applies when the jobs run once, in order: any
    failure is the engine's.
    """
    rng = random.Random(seed)
    model = {k: orjson.loads(orjson.dumps(v)) for k, v in offers.items()}
    ids = list(offers)
    jobs: list[dict[str, Any]] = []
    for n in range(count):
        oid = rng.choice(ids)
        entity = kinds.get(oid, DEFAULT_ENTITY) if kinds else DEFAULT_ENTITY
        patch = _chaos_patch(rng, SHAPES[entity], model[oid], n)
        model[oid] = verify.apply(patch, model[oid])
        job: dict[str, Any] = {"id": oid, "patch": patch}
        if entity != DEFAULT_ENTITY:
            job["entity"] = entity
        jobs.append(job)
    return jobs


def _chaos_patch(rng: random.Random, shape: Shape, doc: Any, n: int) -> list[dict[str, Any]]:
    """One chaos job's patch, valid on ``doc`` (the entity as the jobs before leave it)."""
    kind = rng.choice(("replace", "append", "test+replace", "remove", "copy"))
    tags = verify.resolve(doc, shape.tags)
    if kind == "replace":
        fields = (shape.name, shape.description, *((shape.number,) if shape.number else ()))
        field = rng.choice(fields)
        value: Any = rng.randrange(100) if field == shape.number else f"{_tail(field)}-{n}"
        return [{"op": "replace", "path": field, "value": value}]
    if kind in ("append", "remove") and tags is verify.ABSENT:
        return [{"op": "add", "path": shape.tags, "value": [f"t{n}"]}]
    if kind == "append":
        return [{"op": "add", "path": f"{shape.tags}/-", "value": f"t{n}"}]
    if kind == "test+replace":
        path = shape.status or shape.name
        old = verify.resolve(doc, path)
        new = f"name-{n}" if shape.status is None else "approved" if old != "approved" else "draft"
        return [
            {"op": "test", "path": path, "value": old},
            {"op": "replace", "path": path, "value": new},
        ]
    if kind == "remove" and tags:
        return [{"op": "remove", "path": f"{shape.tags}/0"}]
    if kind == "remove":
        return [{"op": "add", "path": f"{shape.tags}/0", "value": f"first{n}"}]
    return [{"op": "copy", "from": shape.name, "path": shape.description}]


def _tail(path: str) -> str:
    """The last member a JSON Pointer names (``/rank/priority``: ``priority``)."""
    return path.rsplit("/", 1)[1]


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
    """A document without the fields the server or the simulated other writer change
    (in an offer's ``characteristics``; in a member of its own on a Decisioning entity,
    left out whole once that field is gone from it)."""
    out = {k: v for k, v in doc.items() if k not in SERVER_FIELDS}
    for home in CONCURRENT_HOMES:
        holder = out.get(home)
        if isinstance(holder, dict) and CONCURRENT_FIELD in holder:
            out[home] = {k: v for k, v in holder.items() if k != CONCURRENT_FIELD}
            if home != "characteristics" and not out[home]:
                del out[home]
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


@dataclass(frozen=True, slots=True)
class Checked:
    """What the demo's run came to: its summary (as ``bulkpatch run`` prints it), the
    jobs that failed, and the offers whose final state is not the expected one."""

    summary: dict[str, Any]
    failed: int
    wrong: list[str]
    offers: int
    faults: int  # injected by the simulator

    def verdict(self) -> str:
        """The state check, in one sentence."""
        if not (self.failed or self.wrong):
            return (
                f"Check passed: all {self.offers:,} offers are as the jobs say, each job "
                f"applied exactly once and in input order, through {self.faults:,} "
                "injected faults."
            )
        first = f" (first: {', '.join(self.wrong[:3])})" if self.wrong else ""
        return (
            f"Check failed: {len(self.wrong):,} of {self.offers:,} offers differ from every "
            f"job applied once, in input order{first}, and {self.failed:,} jobs failed."
        )


async def demo(
    *,
    offers: int = 200,
    per_offer: int = 5,
    workdir: Path | None = None,
    out: TextIO | None = None,
    as_event: bool = False,
) -> int:
    """Seed a simulator, run a mixed job file through the engine, check the final state.

    Prints on ``out`` (default stdout) the summary ``bulkpatch run`` prints, then the
    check's verdict in one sentence; with ``as_event``, logs both as one ``demo.summary``
    event instead. The files go to ``workdir`` (kept), else to a temporary directory,
    removed at the end. 0 when the check passes, else 1.
    """
    if workdir is not None:
        checked = await _run_checked(offers, per_offer, workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bulkpatch-demo-") as temp:
            checked = await _run_checked(offers, per_offer, Path(temp))
    if as_event:
        log.info("demo.summary", **checked.summary, verdict=checked.verdict())
    else:
        stream = out if out is not None else sys.stdout
        kept = f"\nThe jobs and outcomes are in {workdir}." if workdir is not None else ""
        print(f"{render(checked.summary)}\n\n{checked.verdict()}{kept}", file=stream, flush=True)
    return 1 if checked.failed or checked.wrong else 0


async def _run_checked(offers: int, per_offer: int, base: Path) -> Checked:
    """The demo's run, its files in ``base``, and its check."""
    faults = FaultRates(error_503=0.02, drop_after=0.01, throttle_429=0.01, concurrent_writer=0.02)
    sim_config = SimConfig(
        offers=offers, fault_seed=11, faults=faults, fault_retry_after_s=0, latency_ms=2
    )
    async with running(sim_config) as sim:
        initial = {d["id"]: d for d in sim.store.dump()["offers/personalized"]}
        jobs = make_jobs(initial, per_offer)
        jobs_path = base / "jobs.ndjson"
        jobs_path.write_bytes(
            b"".join(orjson.dumps(j, option=orjson.OPT_APPEND_NEWLINE) for j in jobs)
        )
        engine = Engine(_config(sim.config.access_token, sim.endpoint))
        started = time.monotonic()
        failed = 0
        with jobs_path.open("rb") as source, (base / "outcomes.ndjson").open("wb") as outcomes:
            async for outcome in engine.run(read_jobs(source)):
                outcomes.write(orjson.dumps(outcome.to_dict(), option=orjson.OPT_APPEND_NEWLINE))
                failed += not outcome.ok
        wall = time.monotonic() - started
        actual = {d["id"]: d for d in sim.store.dump()["offers/personalized"]}
        injected = int(sim.simulator.stats.as_dict(sim.store)["faults_total"])
    wrong = differences(expected_state(initial, jobs), actual)
    return Checked(of_run(engine.stats, wall), failed, wrong, len(actual), injected)


def _config(token: str, endpoint: str) -> RunConfig:
    """No limit on the pace, short waits: the simulator is local, its faults quick."""
    return RunConfig(
        credentials=Credentials(access_token=token),
        endpoint=endpoint,
        api_key="bulkpatch-demo",
        org_id="DEMO0000@AdobeOrg",
        sandbox="demo",
        rate=0,
        concurrency=32,
        timeout=5,
        backoff_base=0.01,
        seed=1,
    )
