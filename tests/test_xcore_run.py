"""bulkpatch run --dialect xcore against the simulator's xcore endpoints, and translate's
round trip: an xcore job file run as xcore and, translated, as DPS leaves the same offers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bulkpatch.demo import comparable
from bulkpatch.simulator import RunningSimulator, SimConfig, running
from tests.test_run_cli import CLI, WAIT_S, Finished, ndjson, offers_of, sim_env
from tests.test_sim_xcore import OFFER1, SEED_PATCH, SEED_PLACEMENT


async def id_map(sim: RunningSimulator) -> dict[str, str]:
    """DPS id -> xcore id (the instance id for offers, the @id for the rest)."""
    async with aiohttp.ClientSession() as http, http.get(f"{sim.base_url}/_sim/xcore-ids") as r:
        pairs = [orjson.loads(line) for line in (await r.read()).splitlines()]
    out: dict[str, str] = {}
    for pair in pairs:
        if pair["dps"] not in out or not pair["xcore"].startswith("xcore:"):
            out[pair["dps"]] = pair["xcore"]
    return out


async def cli(sim: RunningSimulator, *args: str | Path, stdin: bytes | None = None) -> Finished:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *map(str, args),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=sim_env(sim),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), WAIT_S)
    assert proc.returncode is not None
    return Finished(proc.returncode, out, err)


async def test_the_seed_request_runs_through_bulkpatch_run_dialect_xcore() -> None:
    async with running(SimConfig(offers=3)) as sim:
        ids = await id_map(sim)
        before = offers_of(sim)[OFFER1]
        patch = orjson.loads(
            orjson.dumps(SEED_PATCH).replace(SEED_PLACEMENT.encode(), ids["offerPlacement0001"].encode())
        )
        job = {"id": ids[OFFER1], "patch": patch}
        # No --container-id: the decisioning container is discovered.
        done = await cli(
            sim, "run", "-", "--dialect", "xcore", "--endpoint", f"{sim.base_url}/data/core/xcore",
            "--rate", "0", stdin=ndjson([job]),
        )  # fmt: skip
        after = offers_of(sim)[OFFER1]
    assert done.code == 0, done.stderr.decode()[-1500:]
    outcome = done.outcomes()[0]
    assert outcome["ok"]
    assert outcome["etag"] == before["etag"] + 1  # read from the receipt's repo:etag
    added = after["representations"][-1]
    assert added["placement"] == "offerPlacement0001"
    assert added["components"][0]["type"] == "text"
    assert len(after["representations"]) == len(before["representations"]) + 1


def xcore_jobs(ids: dict[str, str], offers: list[str]) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    for n, oid in enumerate(offers):
        jobs.append({"id": ids[oid], "patch": [
            {"op": "replace", "path": "/_instance/xdm:name", "value": f"Renamed {n}"},
            {"op": "replace", "path": "/_instance/xdm:rank/xdm:priority", "value": n},
        ]})  # fmt: skip
        jobs.append({"id": ids[oid], "patch": [
            {"op": "add", "path": "/_instance/xdm:representations/-", "value": {
                "xdm:placement": ids["offerPlacement0002"],
                "xdm:components": [{
                    "@type": "https://ns.adobe.com/experience/offer-management/content-component-html",
                    "dc:format": "text/html", "dc:language": ["en-us"], "xdm:content": f"<b>{n}</b>",
                }],
            }},
        ]})  # fmt: skip
    return jobs


async def test_translate_round_trips_an_xcore_job_file(tmp_path: Path) -> None:
    finals = []
    for dialect in ("xcore", "dps"):
        async with running(SimConfig(offers=8, fault_seed=1)) as sim:
            ids = await id_map(sim)
            offers = sorted(offers_of(sim))[:6]
            source = tmp_path / "xcore.ndjson"
            source.write_bytes(ndjson(xcore_jobs(ids, offers)))
            if dialect == "xcore":
                done = await cli(
                    sim, "run", source, "--dialect", "xcore", "--rate", "0",
                    "--endpoint", f"{sim.base_url}/data/core/xcore",
                )  # fmt: skip
            else:
                mapping = tmp_path / "ids.ndjson"
                async with aiohttp.ClientSession() as http, http.get(
                    f"{sim.base_url}/_sim/xcore-ids"
                ) as r:
                    mapping.write_bytes(await r.read())
                translated = tmp_path / "dps.ndjson"
                moved = await cli(
                    sim, "translate", source, "--from", "xcore", "--to", "dps",
                    "--id-map", mapping, "--output", translated,
                )  # fmt: skip
                assert moved.code == 0, moved.stderr.decode()[-1500:]
                done = await cli(sim, "run", translated, "--endpoint", sim.endpoint, "--rate", "0")
            assert done.code == 0, done.stderr.decode()[-1500:]
            assert len(done.outcomes()) == 12
            finals.append({k: comparable(v) for k, v in offers_of(sim).items()})
    as_xcore, as_dps = finals
    assert as_xcore == as_dps


async def test_plan_and_rollback_speak_xcore_too(tmp_path: Path) -> None:
    backup = tmp_path / "before.ndjson"
    async with running(SimConfig(offers=6)) as sim:
        ids = await id_map(sim)
        start = {k: comparable(v) for k, v in offers_of(sim).items()}
        offers = sorted(offers_of(sim))[:4]
        jobs = ndjson(xcore_jobs(ids, offers))
        xcore = ("--dialect", "xcore", "--endpoint", f"{sim.base_url}/data/core/xcore", "--rate", "0")
        plan = await cli(sim, "plan", "-", *xcore, stdin=jobs)
        assert {k: comparable(v) for k, v in offers_of(sim).items()} == start  # plan wrote nothing
        run = await cli(sim, "run", "-", *xcore, "--backup", backup, stdin=jobs)
        changed = {k: comparable(v) for k, v in offers_of(sim).items()}
        undone = await cli(sim, "rollback", backup, *xcore)
        end = {k: comparable(v) for k, v in offers_of(sim).items()}
    assert plan.code == 0, plan.stderr.decode()[-1500:]
    assert [o["plan"] for o in plan.outcomes()].count("change") == 8
    assert any(c["path"] == "/_instance/xdm:name" for o in plan.outcomes() for c in o.get("changes", []))
    assert run.code == 0, run.stderr.decode()[-1500:]
    assert changed != start
    assert undone.code == 0, undone.stderr.decode()[-1500:]
    assert end == start
