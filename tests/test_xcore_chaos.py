"""The chaos suite again, in the xcore dialect: the same jobs, written against xcore paths,
through the simulator's xcore endpoints, judged on the shared store."""

from __future__ import annotations

from typing import Any

import pytest

from bulkpatch import chaos
from bulkpatch.demo import chaos_jobs
from bulkpatch.simulator import running


def xcore_path(pointer: str) -> str:
    """A DPS pointer as the same location in an xcore instance (``/name`` ->
    ``/_instance/xdm:name``); array positions stay as they are. Enough for the fields the
    chaos jobs touch (name, description, status, rank, tags); inside ``characteristics``
    and ``content`` keys keep no prefix, and ``format``/``language`` take ``dc:``."""
    tokens = pointer.split("/")[1:]
    mapped = [t if t == "-" or t.isdigit() else f"xdm:{t}" for t in tokens]
    return "/_instance/" + "/".join(mapped)


def as_xcore(job: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    patch = []
    for op in job["patch"]:
        op = {**op, "path": xcore_path(op["path"])}
        if "from" in op:
            op["from"] = xcore_path(op["from"])
        patch.append(op)
    return {"id": ids[job["id"]], "patch": patch}


@pytest.mark.parametrize("conflict_status", [409, 412])
async def test_every_fault_every_job_exactly_once_in_the_xcore_dialect(conflict_status: int) -> None:
    async with running(chaos.sim_config(conflict_status=conflict_status)) as sim:
        initial = chaos.initial_offers(sim)
        jobs = chaos_jobs(initial, 2000, seed=31)
        ids = await chaos.xcore_ids(sim)
        xcore_jobs = [as_xcore(job, ids) for job in jobs]
        outcomes, _ = await chaos.run_in_process(
            sim,
            xcore_jobs,
            dialect="xcore",
            endpoint=f"{sim.base_url}/data/core/xcore",
        )
        stats = await chaos.settle(sim)
        verdict = chaos.judge(sim, initial, jobs, [o.to_dict() for o in outcomes])
    assert stats["settled"]
    assert [o.to_dict() for o in outcomes if not o.ok] == []
    assert len(outcomes) == len(jobs)
    assert verdict.clean, verdict
