"""An ok outcome is proof that the server applied this job's write, and nothing less.

Each test runs the engine as a library against a server that applies nothing (the
simulator answering every write 503) or that answers in a way that proves nothing (a
409 for a failed ``test``, values that were already there), and checks what the outcome
claims against what the server did.
"""

from __future__ import annotations

from typing import Any

import pytest

from bulkpatch.simulator import FaultRates, SimConfig, offer_id, running
from tests.test_run_cli import OFFERS, count, offers_of, sim_stats
from tests.test_run_rules import run_jobs

NOTHING_APPLIES = SimConfig(offers=6, fault_seed=1, faults=FaultRates(error_503=1.0))


def _set(sim: Any, entity_id: str, path: str, value: Any) -> None:
    """Put ``value`` at ``path`` as another writer would, before the run."""
    sim.store.patch(
        OFFERS,
        entity_id,
        [{"op": "add", "path": path, "value": value}],
        if_match=None,
        client_id="other",
        user="other@AdobeID",
    )


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param([{"op": "remove", "path": "/nosuchfield"}], id="remove-of-an-absent-member"),
        pytest.param(
            [
                {"op": "test", "path": "/status", "value": "draft"},
                {"op": "replace", "path": "/status", "value": "approved"},
            ],
            id="test-that-fails-then-replace-with-the-current-value",
        ),
        pytest.param(
            [{"op": "replace", "path": "/status", "value": "approved"}],
            id="replace-with-the-current-value",
        ),
        pytest.param(
            [{"op": "add", "path": "/characteristics/flag", "value": 1}],
            id="add-of-the-current-value",
        ),
        pytest.param(
            [
                {"op": "copy", "from": "/name", "path": "/description"},
            ],
            id="copy-onto-an-equal-value",
        ),
    ],
)
async def test_a_server_that_applies_nothing_yields_no_ok(patch: list[dict[str, Any]]) -> None:
    async with running(NOTHING_APPLIES) as sim:
        target = offer_id(2)
        _set(sim, target, "/status", "approved")
        _set(sim, target, "/characteristics/flag", 1)
        _set(sim, target, "/description", offers_of(sim)[target]["name"])
        before = offers_of(sim)[target]
        outcomes = await run_jobs(sim, [{"id": target, "patch": patch}], max_attempts=3)
        assert offers_of(sim)[target] == before  # nothing applied
    outcome = outcomes[1]
    assert outcome["ok"] is False, outcome
    assert "recovered" not in outcome


async def test_a_landed_write_met_by_a_lost_answer_is_proven_by_its_resend() -> None:
    # Every answer to a write is lost after the write applied: the replace is idempotent,
    # so its resend under If-Match of the etag just read is what proves it.
    config = SimConfig(offers=2, fault_seed=3, faults=FaultRates(drop_after=0.5))
    async with running(config) as sim:
        jobs = [
            {"id": offer_id(1), "patch": [{"op": "replace", "path": "/name", "value": f"n{i}"}]}
            for i in range(8)
        ]
        outcomes = await run_jobs(sim, jobs, max_attempts=10)
        final = offers_of(sim)
    assert all(o["ok"] for o in outcomes.values()), outcomes
    assert final[offer_id(1)]["name"] == "n7"


async def test_a_409_at_the_etag_sent_is_the_servers_refusal_not_a_stale_etag() -> None:
    # The simulator answers a failed `test` with 409 here: the entity read back is at the
    # etag the write carried and shows the test failing, so no rebase can help.
    config = SimConfig(offers=2, test_failed_status=409)
    async with running(config) as sim:
        target = offer_id(1)
        _set(sim, target, "/status", "approved")
        job = {
            "id": target,
            "patch": [
                {"op": "test", "path": "/status", "value": "draft"},
                {"op": "replace", "path": "/name", "value": "never"},
            ],
        }
        outcomes = await run_jobs(sim, [job])
        stats = await sim_stats(sim.base_url)
    outcome = outcomes[1]
    assert outcome["ok"] is False
    assert outcome["error"]["kind"] == "test_failed"
    assert outcome["error"]["message"] == 'expected "draft" at /status, found "approved"'
    assert outcome["status"] == 409
    assert count(stats, "PATCH") == 1


@pytest.mark.parametrize(
    ("before", "value", "noop"),
    [(1, True, False), (0, False, False), (1, 1.0, True), ({"a": [1]}, {"a": [1.0]}, True)],
)
async def test_skip_noop_and_plan_compare_as_json(before: Any, value: Any, noop: bool) -> None:
    """RFC 6902 §4.6: ``true`` is not ``1``, ``1.0`` is ``1``; a no-op is skipped only then."""
    job = {"id": offer_id(1), "patch": [{"op": "replace", "path": "/characteristics/v", "value": value}]}
    async with running(SimConfig(offers=2)) as sim:
        _set(sim, offer_id(1), "/characteristics/v", before)
        planned = (await run_jobs(sim, [job], plan=True))[1]
        ran = (await run_jobs(sim, [job], skip_noop=True))[1]
        final = offers_of(sim)[offer_id(1)]["characteristics"]["v"]
    assert planned["plan"] == ("noop" if noop else "change")
    assert ran["ok"] is True
    assert ran.get("noop", False) is noop
    assert type(final) is type(before if noop else value)


async def test_a_pinned_write_whose_answer_was_lost_is_not_claimed() -> None:
    # The write applied and its answer was lost: the entity moved off the pinned etag, by
    # this write or by another writer's; nothing can tell which, so no ok is claimed.
    config = SimConfig(offers=2, fault_seed=1, faults=FaultRates(drop_after=1.0))
    async with running(config) as sim:
        job = {"id": offer_id(1), "etag": 1, "patch": [{"op": "replace", "path": "/name", "value": "x"}]}
        outcome = (await run_jobs(sim, [job]))[1]
    assert outcome["ok"] is False
    assert outcome["error"]["kind"] == "conflict"
    assert "cannot tell" in outcome["error"]["message"]
