"""The chaos suite again, in the xcore dialect: the same jobs, written against xcore paths,
through the simulator's xcore endpoints, judged on the shared store."""

from __future__ import annotations

import pytest

from bulkpatch import chaos
from bulkpatch.demo import chaos_jobs
from bulkpatch.simulator import running


@pytest.mark.parametrize("conflict_status", [409, 412])
async def test_every_fault_every_job_exactly_once_in_the_xcore_dialect(conflict_status: int) -> None:
    async with running(chaos.sim_config(conflict_status=conflict_status)) as sim:
        initial = chaos.initial_offers(sim)
        jobs = chaos_jobs(initial, 2000, seed=31)
        ids = await chaos.xcore_ids(sim)
        xcore_jobs = chaos.as_xcore(jobs, ids)
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
