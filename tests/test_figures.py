"""Figures that tell the truth: time with the server apart from time waiting on the run's
own pace, a failed `test` as its own kind, re-sends by cause, rates of finished jobs.

In-process: the engine on a scripted transport whose answers take virtual time.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkpatch.engine import Engine
from bulkpatch.jobs import parse_line
from bulkpatch.runner import RunOutputs, RunSeams, run_jobs
from tests.test_engine_inprocess import ScriptedApi, VirtualClock, _config, _jobs


async def _outcomes(engine: Engine, jobs: list[Any]) -> list[dict[str, Any]]:
    lines = [o.to_dict() async for o in engine.run(jobs)]
    return sorted(lines, key=lambda line: line["line"])


async def test_waiting_on_the_rate_is_wait_ms_not_server_ms() -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {})
    api.latency_s = 0.05
    engine = Engine(_config(rate=2, concurrency=4), transport=api, clock=clock)
    lines = await asyncio.wait_for(_outcomes(engine, _jobs("o1", "o2", "o3", "o4")), 10)
    assert [line["server_ms"] for line in lines] == [50.0] * 4
    # Slots half a second apart: the fourth job waited 1.5 s for its own rate, not the API.
    assert max(line["wait_ms"] for line in lines) >= 1400.0
    for line in lines:
        assert abs(line["ms"] - line["server_ms"] - line["wait_ms"]) < 1.0
    figures = engine.stats.as_dict()
    assert figures["server_ms"]["p99"] == pytest.approx(50.0, rel=0.02)
    assert figures["wait_ms"]["max"] >= 1400.0


async def test_a_job_held_behind_its_entity_counts_that_wait() -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {})
    api.latency_s = 0.05
    engine = Engine(_config(concurrency=2), transport=api, clock=clock)
    lines = await asyncio.wait_for(_outcomes(engine, _jobs("o1", "o1")), 10)
    assert [line["server_ms"] for line in lines] == [50.0, 50.0]
    assert [line["wait_ms"] for line in lines] == [0.0, 50.0]


async def test_a_pause_for_a_429_is_waiting_and_a_re_send_for_429() -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {2: "429 30"})
    engine = Engine(_config(), transport=api, clock=clock)
    lines = await asyncio.wait_for(_outcomes(engine, _jobs("o1", "o2")), 10)
    assert lines[1]["wait_ms"] >= 30000.0
    assert lines[1]["server_ms"] < 1.0
    assert engine.stats.as_dict()["resends"] == {"429": 1, "5xx": 0, "transport": 0, "conflict": 0}


def _tested(entity: str, expected: str) -> Any:
    line = {
        "id": entity,
        "patch": [
            {"op": "test", "path": "/name", "value": expected},
            {"op": "replace", "path": "/name", "value": "new"},
        ],
    }
    return parse_line(orjson.dumps(line), 1)


@pytest.mark.parametrize("status", [400, 409, 422])
async def test_a_failed_test_is_its_own_kind_whatever_the_status(status: int) -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {})
    api.test_status = status
    engine = Engine(_config(), transport=api, clock=clock)
    [line] = await asyncio.wait_for(_outcomes(engine, [_tested("o1", "approved")]), 10)
    assert line["error"] == {
        "kind": "test_failed",
        "status": status,
        "message": 'expected "approved" at /name, found "n"',
    }
    assert engine.stats.conflicts_rebased == 0
    assert engine.stats.as_dict()["resends"]["conflict"] == 0


async def test_a_test_failing_after_another_writer_moved_the_etag_is_no_rebase() -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {})
    job = _tested("o1", "n")
    engine = Engine(_config(), transport=api, clock=clock)
    # Another writer renames the entity between the job's read and its write.
    real_send = api.send

    async def send(method: str, url: Any, headers: Any, body: bytes | None = None) -> Any:
        if method == "PATCH" and api.docs["o1"]["etag"] == 1:
            api.docs["o1"] = {"id": "o1", "etag": 2, "name": "someone else's"}
        return await real_send(method, url, headers, body)

    api.send = send  # type: ignore[method-assign]
    [line] = await asyncio.wait_for(_outcomes(engine, [job]), 10)
    assert line["error"]["kind"] == "test_failed"
    assert line["error"]["message"] == 'expected "n" at /name, found "someone else\'s"'
    assert engine.stats.conflicts_rebased == 0


async def test_the_rate_counts_finished_jobs_not_aborted_ones(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {})
    api.latency_s = 1.0
    source = tmp_path / "jobs.ndjson"
    source.write_bytes(b"".join(
        orjson.dumps({"id": f"o{n}", "patch": [{"op": "replace", "path": "/name", "value": "x"}]}) + b"\n"
        for n in range(1, 6)
    ))

    real_send = api.send
    engines: list[Engine] = []

    async def send(method: str, url: Any, headers: Any, body: bytes | None = None) -> Any:
        # The first job is in flight and the others wait behind it: stop the run now.
        engines[0].stop("interrupted by SIGINT")
        return await real_send(method, url, headers, body)

    api.send = send  # type: ignore[method-assign]
    shown = io.StringIO()
    result = await asyncio.wait_for(run_jobs(
        _config(),
        source,
        RunOutputs(summary_to=shown),  # on stdout: every line admitted at once
        on_engine=engines.append,
        seams=RunSeams(transport=api, clock=clock),
    ), 10)
    summary = result.summary
    assert summary["outcomes"] == {"ok": 1, "aborted": 4}
    assert summary["finished"] == 1
    # One job's worth of rate, not five.
    assert 0.5 < summary["jobs_per_s"] * summary["wall_s"] < 2.0
    assert "5 jobs (4 aborted)" in shown.getvalue()
