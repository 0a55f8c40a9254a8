"""Runs have identities, and re-runs keep their history: the run id in every line and
its sidecar, a failure log re-run naming the earlier lines, finished receipts kept.

In-process: ``run_jobs`` on a scripted transport and a virtual clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkpatch import Credentials
from bulkpatch.errors import ConfigError
from bulkpatch.runner import RunOutputs, RunSeams, run_jobs
from tests.test_engine_inprocess import ScriptedApi, VirtualClock, _config

SECRET = "tok-3f9a7c1e5b2d"


def _lines(path: Path) -> list[dict[str, Any]]:
    return sorted((orjson.loads(raw) for raw in path.read_bytes().splitlines()), key=lambda r: r["line"])


def _write(path: Path, *jobs: Any) -> Path:
    path.write_bytes(b"".join((j if isinstance(j, bytes) else orjson.dumps(j)) + b"\n" for j in jobs))
    return path


def _rename(entity: str, name: str = "x") -> dict[str, Any]:
    return {"id": entity, "patch": [{"op": "replace", "path": "/name", "value": name}]}


async def _run(source: Path, outputs: RunOutputs) -> Any:
    clock = VirtualClock()
    config = _config(credentials=Credentials(access_token=SECRET))
    return await asyncio.wait_for(
        run_jobs(config, source, outputs, seams=RunSeams(transport=ScriptedApi(clock, {}), clock=clock)), 10
    )


async def test_every_line_carries_the_run_id_its_sidecar_records(tmp_path: Path) -> None:
    source = _write(tmp_path / "jobs.ndjson", _rename("o1"), _rename("o2"))
    receipts = tmp_path / "r.ndjson"
    await _run(source, RunOutputs(receipts=receipts))
    runs = {line["run"] for line in _lines(receipts)}
    sidecar = orjson.loads((tmp_path / "r.ndjson.run.json").read_bytes())
    assert runs == {sidecar["run"]}
    assert (sidecar["input"], sidecar["dialect"], sidecar["org"], sidecar["sandbox"]) == (
        str(source), "dps", "O@AdobeOrg", "prod"
    )
    assert sidecar["settings"]["concurrency"] == 1
    assert SECRET not in (tmp_path / "r.ndjson.run.json").read_text()


async def test_a_given_run_id_is_kept_and_a_resume_goes_on_under_it(tmp_path: Path) -> None:
    source = _write(tmp_path / "jobs.ndjson", _rename("o1"))
    receipts = tmp_path / "r.ndjson"
    await _run(source, RunOutputs(receipts=receipts, run_id="spring-2026"))
    assert [line["run"] for line in _lines(receipts)] == ["spring-2026"]
    with pytest.raises(ConfigError, match="the run being resumed is spring-2026"):
        await _run(source, RunOutputs(receipts=receipts, resume=True, run_id="other"))


async def test_runs_without_receipts_get_ids_of_their_own(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    source = _write(tmp_path / "jobs.ndjson", _rename("o1"))
    await _run(source, RunOutputs())
    await _run(source, RunOutputs())
    out = capfdbinary.readouterr().out.splitlines()
    runs = [orjson.loads(raw)["run"] for raw in out if raw.startswith(b"{")]
    assert len(runs) == 2
    assert runs[0] != runs[1]


async def test_a_finished_runs_receipts_are_not_overwritten_without_overwrite(tmp_path: Path) -> None:
    source = _write(tmp_path / "jobs.ndjson", _rename("o1"))
    receipts = tmp_path / "r.ndjson"
    await _run(source, RunOutputs(receipts=receipts))
    before = receipts.read_bytes()
    with pytest.raises(ConfigError, match="holds the outcomes of a finished run: pass --overwrite"):
        await _run(source, RunOutputs(receipts=receipts))
    assert receipts.read_bytes() == before
    await _run(source, RunOutputs(receipts=receipts, overwrite=True))
    assert len(_lines(receipts)) == 1


async def test_a_failure_log_re_run_names_the_earlier_lines(tmp_path: Path) -> None:
    failing = {
        "id": "o2",
        "patch": [{"op": "test", "path": "/name", "value": "approved"}, {"op": "remove", "path": "/name"}],
    }
    source = _write(tmp_path / "jobs.ndjson", _rename("o1"), b"", b'{"id": "o3", "pacth": []}', failing)
    failures = tmp_path / "failed.ndjson"
    await _run(source, RunOutputs(receipts=tmp_path / "r1.ndjson", failures=failures))
    assert [record["line"] for record in _lines(failures)] == [3, 4]

    again = tmp_path / "failed-again.ndjson"
    await _run(failures, RunOutputs(receipts=tmp_path / "r2.ndjson", failures=again))
    first, second = _lines(tmp_path / "r2.ndjson")
    assert (first["line"], first["source_line"]) == (1, 3)
    assert first["error"]["message"].startswith(
        "line 1: input error from the earlier run, not mended: line 3, field 'pacth': unknown key"
    )
    assert (second["line"], second["source_line"], second["error"]["kind"]) == (2, 4, "test_failed")
    # Re-run once more: still the first run's lines and words, not a record of a record.
    records = _lines(again)
    assert [r["line"] for r in records] == [3, 4]
    assert records[0]["raw"] == '{"id": "o3", "pacth": []}'
