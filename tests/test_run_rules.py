"""The engine's rules, each against the simulator misbehaving in one way.

The engine runs as a library (``patch_all``) on this test's loop and speaks HTTP over
loopback to an in-process simulator; counts come from the simulator's ``/_sim/stats``.
Percent-encoding of odd ids is covered by ``test_hostile_input.py``.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from typing import Any, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulkpatch import Credentials, RunConfig, patch_all, read_jobs
from bulkpatch.demo import differences, expected_state
from bulkpatch.simulator import (
    CONCURRENT_FIELD,
    FaultRates,
    RunningSimulator,
    SimConfig,
    offer_id,
    running,
)
from bulkpatch.simulator.config import FaultRetryAfterForm
from tests.test_run_cli import OFFERS, count, ndjson, offers_of, replace_name, sim_stats


def run_config(sim: RunningSimulator, **overrides: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "credentials": Credentials(access_token=sim.config.access_token),
        "endpoint": sim.endpoint,
        "api_key": "rules-tests",
        "org_id": "RULES00@AdobeOrg",
        "sandbox": "prod",
        "rate": 0,
        "concurrency": 8,
        "timeout": 5,
        "backoff_base": 0.01,
        "backoff_cap": 0.1,
        "seed": 1,
    }
    settings.update(overrides)
    return RunConfig(**settings)


async def run_jobs(
    sim: RunningSimulator, jobs: list[dict[str, Any]], **overrides: Any
) -> dict[int, dict[str, Any]]:
    """Every outcome, by line; no line reported twice, every line reported."""
    config = run_config(sim, **overrides)
    outcomes = [o.to_dict() async for o in patch_all(read_jobs(io.BytesIO(ndjson(jobs))), config)]
    lines = Counter(o["line"] for o in outcomes)
    assert sorted(lines) == list(range(1, len(jobs) + 1)), lines
    assert max(lines.values()) == 1
    return {o["line"]: o for o in outcomes}


def mixed_jobs(ids: list[str], per_offer: int) -> list[dict[str, Any]]:
    """Replaces and appends, several per offer, interleaved."""
    jobs: list[dict[str, Any]] = []
    for round_ in range(per_offer):
        for n, oid in enumerate(ids):
            if (n + round_) % 2:
                jobs.append(
                    {"id": oid, "patch": [{"op": "add", "path": "/tags/-", "value": f"t{round_}"}]}
                )
            else:
                jobs.append(replace_name(oid, f"{oid} r{round_}"))
    return jobs


# --------------------------------------------------------------------------- conflicts


async def test_conflicts_from_another_writer_are_rebased_and_its_change_survives() -> None:
    # Another writer changes the offer just before half the writes. (At 1.0 it would get
    # in before every write, so a write with If-Match could never succeed.)
    config = SimConfig(offers=20, fault_seed=2, faults=FaultRates(concurrent_writer=0.5))
    async with running(config) as sim:
        initial = offers_of(sim)
        jobs = mixed_jobs(list(initial), per_offer=4)
        outcomes = await run_jobs(sim, jobs, max_conflicts=20)
        stats = await sim_stats(sim.base_url)
        final = offers_of(sim)
    assert [o for o in outcomes.values() if not o["ok"]] == []
    assert sum(o["conflicts"] for o in outcomes.values()) >= 1
    assert count(stats, "PATCH", "409") >= 1
    # Every job applied once, in order; the other writer's field aside ...
    assert differences(expected_state(initial, jobs), final) == []
    # ... and the other writer's own change survived every rebase, on every offer.
    other_writes = sum(
        int(doc.get("characteristics", {}).get(CONCURRENT_FIELD, "0")) for doc in final.values()
    )
    assert other_writes == stats["faults"]["concurrent_writer"] > 0


@pytest.mark.parametrize("conflict_status", [409, 412])
async def test_a_stale_pinned_etag_fails_as_conflict_and_is_not_rebased(
    conflict_status: Literal[409, 412],
) -> None:
    async with running(SimConfig(offers=2, conflict_status=conflict_status)) as sim:
        # Someone else writes after the job file was made: the offer is now at etag 2.
        sim.store.patch(
            OFFERS,
            offer_id(1),
            [{"op": "replace", "path": "/description", "value": "changed meanwhile"}],
            if_match=None,
            client_id="other",
            user="other@AdobeID",
        )
        jobs = [
            replace_name(offer_id(1), "pinned", etag=1),
            {
                "id": offer_id(1),
                "etag": 2,
                "patch": [{"op": "add", "path": "/tags/-", "value": "x"}],
            },
        ]
        outcomes = await run_jobs(sim, jobs)
        stats = await sim_stats(sim.base_url)
        final = offers_of(sim)
    stale = outcomes[1]
    assert stale["ok"] is False
    assert stale["error"]["kind"] == "conflict"
    assert stale["error"]["status"] == conflict_status
    assert stale["attempts"] == 1
    assert stale["job"]["etag"] == 1  # re-runnable as it was
    assert outcomes[2]["ok"] is True  # the job that pins the current etag goes through
    # One refused write, no re-read and second try for the stale one.
    assert count(stats, "PATCH", str(conflict_status)) == 1
    assert final[offer_id(1)]["name"] != "pinned"
    assert final[offer_id(1)]["tags"] == ["x"]


# --------------------------------------------------------------------------- throttling


@pytest.mark.parametrize(("form", "after_s"), [("seconds", 1), ("date", 2)])
async def test_429_retry_after_is_honoured_in_both_forms(
    form: FaultRetryAfterForm, after_s: int
) -> None:
    config = SimConfig(
        offers=16,
        fault_seed=4,
        faults=FaultRates(throttle_429=0.3),
        fault_retry_after=form,
        fault_retry_after_s=after_s,
    )
    async with running(config) as sim:
        jobs = [replace_name(offer_id(n), f"t{n}") for n in range(1, 17)]
        started = time.monotonic()
        # backoff_cap 1: the engine caps a Retry-After pause at 4 x the backoff cap.
        outcomes = await run_jobs(sim, jobs, concurrency=16, backoff_cap=1.0)
        wall = time.monotonic() - started
        stats = await sim_stats(sim.base_url)
        final = offers_of(sim)
    throttled = stats["faults"].get("throttle_429", 0)
    assert throttled >= 1
    assert all(o["ok"] for o in outcomes.values())
    assert sum(o.get("throttled", 0) for o in outcomes.values()) == throttled
    # A 429 is not an attempt at the write: each job wrote once.
    assert {o["attempts"] for o in outcomes.values()} == {1}
    assert all(final[offer_id(n)]["name"] == f"t{n}" for n in range(1, 17))
    # The pause lasted what Retry-After said (the backoff alone is ~0.01 s): at least
    # one second, whichever form (an HTTP date is whole seconds: 2 s ahead is >= 1 s).
    assert wall >= 1.0


# --------------------------------------------------------------------------- 5xx


async def test_500_502_503_are_retried_with_backoff_until_every_job_is_ok() -> None:
    faults = FaultRates(error_500=0.1, error_502=0.1, error_503=0.1)
    async with running(SimConfig(offers=20, fault_seed=6, faults=faults)) as sim:
        initial = offers_of(sim)
        jobs = mixed_jobs(list(initial), per_offer=5)
        outcomes = await run_jobs(sim, jobs, max_attempts=10)
        stats = await sim_stats(sim.base_url)
        final = offers_of(sim)
    assert {"error_500", "error_502", "error_503"} <= set(stats["faults"])
    assert [o for o in outcomes.values() if not o["ok"]] == []
    assert any(o["attempts"] > 1 for o in outcomes.values())
    assert differences(expected_state(initial, jobs), final) == []


async def test_a_job_failing_503_every_time_ends_exhausted_after_max_attempts() -> None:
    config = SimConfig(offers=3, fault_seed=7, faults=FaultRates(error_503=1.0))
    async with running(config) as sim:
        before = offers_of(sim)
        jobs = [replace_name(offer_id(n), "never") for n in range(1, 4)]
        outcomes = await run_jobs(sim, jobs, max_attempts=2)
        stats = await sim_stats(sim.base_url)
        after = offers_of(sim)
    for o in outcomes.values():
        assert o["ok"] is False
        assert o["error"]["kind"] == "exhausted"
        assert o["attempts"] == 2
        assert "503" in o["error"]["message"]
    assert count(stats, "PATCH", "503") == 2 * len(jobs)
    assert after == before


@pytest.mark.parametrize(
    ("job", "status"),
    [
        (replace_name("no-such-offer", "x"), 404),
        ({"id": offer_id(1), "patch": [{"op": "replace", "path": "/nope", "value": 1}]}, 400),
    ],
)
async def test_a_permanent_4xx_fails_at_once_without_a_retry(
    job: dict[str, Any], status: int
) -> None:
    async with running(SimConfig(offers=2)) as sim:
        outcomes = await run_jobs(sim, [job, replace_name(offer_id(2), "fine")])
        stats = await sim_stats(sim.base_url)
    failed = outcomes[1]
    assert failed["ok"] is False
    assert failed["error"]["kind"] == "http"
    assert failed["error"]["status"] == status
    assert failed["attempts"] == 1
    assert failed["job"] == job
    assert outcomes[2]["ok"] is True
    assert count(stats, "PATCH", str(status)) == 1


# --------------------------------------------------------------------------- order


async def test_jobs_for_one_offer_take_effect_in_input_order_under_latency_jitter() -> None:
    config = SimConfig(offers=4, fault_seed=8, latency_ms=1, latency_jitter_ms=25)
    async with running(config) as sim:
        ids = [offer_id(n) for n in range(1, 5)]
        jobs = [
            {"id": ids[n % 4], "patch": [{"op": "add", "path": "/tags/-", "value": str(n)}]}
            for n in range(80)
        ]
        outcomes = await run_jobs(sim, jobs, concurrency=16)
        final = offers_of(sim)
    assert all(o["ok"] for o in outcomes.values())
    for k, oid in enumerate(ids):
        assert final[oid]["tags"] == [str(n) for n in range(80) if n % 4 == k]


async def test_the_token_request_to_ims_carries_none_of_the_apis_headers() -> None:
    """The API's headers ride on the API's session; IMS, a different service, gets its own
    session and sees only what a client-credentials grant needs."""
    seen: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return web.json_response(
            {"access_token": sim.config.access_token, "token_type": "bearer", "expires_in": 86399}
        )

    ims = web.Application()
    ims.router.add_post("/ims/token/v3", token)
    async with TestServer(ims, host="127.0.0.1") as server, running(SimConfig(offers=20)) as sim:
        credentials = Credentials(
            client_id="rules-client",
            client_secret="rules-secret",
            ims_url=str(server.make_url("/ims/token/v3")),
        )
        jobs = [replace_name(offer_id(n), f"via IMS {n}") for n in range(1, 21)]
        outcomes = await run_jobs(sim, jobs, credentials=credentials, api_key=None)
    # The API took every write with the session's headers...
    assert all(o["ok"] for o in outcomes.values())
    # ...and IMS saw none of them.
    assert len(seen) == 1
    assert not {"x-api-key", "x-gw-ims-org-id", "x-sandbox-name", "authorization"} & seen[0].keys()
    assert seen[0]["content-type"] == "application/x-www-form-urlencoded"


async def test_express_writes_hand_every_fault_to_the_retry_loop_in_order() -> None:
    """Replaces that need no read go out on the express path; none of 503s, connections
    dropped before or after the write, or another writer's changes may lose, repeat or
    reorder one (no 429s here: after one, the run leaves the express path)."""
    faults = FaultRates(error_503=0.1, drop_before=0.05, drop_after=0.08, concurrent_writer=0.1)
    async with running(SimConfig(offers=20, fault_seed=5, faults=faults)) as sim:
        ids = [offer_id(n) for n in range(1, 21)]
        jobs = [replace_name(ids[n % 20], f"name {n}") for n in range(400)]
        # A write faults one time in four here, and a lost answer costs a resend: ten
        # attempts make a job that faults every time unlikely (0.23^10 x 400 < 1e-3).
        outcomes = await run_jobs(sim, jobs, concurrency=16, max_attempts=10)
        stats = await sim_stats(sim.base_url)
        final = offers_of(sim)
    assert all(o["ok"] for o in outcomes.values()), [o for o in outcomes.values() if not o["ok"]]
    faulted = stats["faults"]
    assert faulted.get("drop_after", 0) > 0
    assert faulted.get("error_503", 0) > 0
    # Each job's write landed: the server applied the 400 and the other writer's own, plus
    # at most one resend of a replace whose answer was lost after it applied (the resend
    # under If-Match of the etag read back proves it; a replace applied twice is applied).
    applied = stats["writes_applied"] - 400 - faulted.get("concurrent_writer", 0)
    assert 0 <= applied <= faulted["drop_after"]
    # A write repeated after its successor, or the two swapped, would leave an older name.
    for k, oid in enumerate(ids):
        assert final[oid]["name"] == f"name {380 + k}"
