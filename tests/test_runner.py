"""``run_jobs`` as a library call: the files ``bulkpatch run`` writes, without the CLI.

In process, against the simulator on this test's loop; no signal handlers, no exit
statuses: the caller gets a ``RunResult``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkpatch.config import RunConfig
from bulkpatch.errors import ConfigError
from bulkpatch.runner import RunOutputs, RunResult, journal_path, run_jobs
from bulkpatch.simulator import SimConfig, running
from tests.test_run_cli import OFFERS, count, ndjson, offers_of, replace_name, sim_stats
from tests.test_run_rules import run_config


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_run_jobs_writes_receipts_and_failures_and_returns_the_counts(
    tmp_path: Path,
) -> None:
    async with running(SimConfig(offers=4)) as sim:
        ids = sorted(offers_of(sim))
        jobs = [replace_name(oid, f"renamed {oid}") for oid in ids]
        jobs.append(replace_name("no-such-offer", "x"))  # a 404: fails for good
        jobs.append({"id": ids[0]})  # no patch: an input error, never sent
        source = tmp_path / "jobs.ndjson"
        source.write_bytes(ndjson(jobs))
        receipts_path = tmp_path / "receipts.ndjson"
        failures_path = tmp_path / "failures.ndjson"
        summary_path = tmp_path / "summary.json"
        outputs = RunOutputs(receipts=receipts_path, failures=failures_path, summary=summary_path)

        result = await run_jobs(run_config(sim), source, outputs)

        assert isinstance(result, RunResult)
        assert (result.jobs, result.ok, result.failed_before) == (6, 4, 0)
        assert not result.all_ok
        assert result.stop_reason is None
        assert result.systemic is None
        receipts = read_ndjson(receipts_path)
        assert sorted(r["line"] for r in receipts) == [1, 2, 3, 4, 5, 6]
        assert sorted(r["line"] for r in receipts if r["ok"]) == [1, 2, 3, 4]
        failures = read_ndjson(failures_path)
        assert sorted(f["line"] for f in failures) == [5, 6]
        summary = orjson.loads(summary_path.read_bytes())
        assert summary == result.summary
        assert summary["jobs"] == 6
        assert journal_path(receipts_path).exists()
        assert {d["name"] for d in sim.store.dump()[OFFERS]} == {f"renamed {i}" for i in ids}

        # Resumed: nothing is sent again, and the failures of the first run still count.
        patches = count(await sim_stats(sim.base_url), "PATCH")
        resumed = RunOutputs(receipts=receipts_path, failures=failures_path, resume=True)
        again = await run_jobs(run_config(sim), source, resumed)
        assert count(await sim_stats(sim.base_url), "PATCH") == patches
        assert again.jobs == 0
        assert again.failed_before == 2
        assert not again.all_ok


async def test_run_jobs_hands_over_the_engine_and_can_be_stopped(tmp_path: Path) -> None:
    async with running(SimConfig(offers=2)) as sim:
        source = tmp_path / "jobs.ndjson"
        source.write_bytes(ndjson(replace_name(oid, "x") for oid in offers_of(sim)))
        result = await run_jobs(
            run_config(sim),
            source,
            RunOutputs(receipts=tmp_path / "out.ndjson"),
            on_engine=lambda engine: engine.stop("told to"),
        )
    assert result.stop_reason == "told to"
    assert result.jobs == 0
    assert not (tmp_path / "out.ndjson").read_bytes()


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (RunOutputs(receipts=Path("same"), failures=Path("same")), "must be different files"),
        (RunOutputs(resume=True), "--resume needs --receipts"),
    ],
)
async def test_clashing_outputs_raise_a_config_error_and_send_nothing(
    tmp_path: Path, outputs: RunOutputs, message: str
) -> None:
    async with running(SimConfig(offers=1)) as sim:
        source = tmp_path / "jobs.ndjson"
        source.write_bytes(ndjson(replace_name(oid, "x") for oid in offers_of(sim)))
        with pytest.raises(ConfigError, match=message):
            await run_jobs(run_config(sim), source, outputs)
        assert count(await sim_stats(sim.base_url), "PATCH") == 0


async def test_an_unreadable_input_raises_a_config_error(tmp_path: Path) -> None:
    async with running(SimConfig(offers=1)) as sim:
        with pytest.raises(ConfigError, match="cannot read"):
            await run_jobs(run_config(sim), tmp_path / "absent.ndjson")


@pytest.mark.parametrize("flag", ["failures", "receipts", "summary"])
async def test_an_output_that_is_the_input_is_refused_and_the_input_left_whole(
    tmp_path: Path, flag: str
) -> None:
    jobs = tmp_path / "failed.ndjson"
    jobs.write_bytes(b'{"id": "o1", "patch": [{"op": "replace", "path": "/name", "value": "x"}]}\n')
    before = jobs.read_bytes()
    link = tmp_path / "same.ndjson"
    link.symlink_to(jobs)  # the same file under another name
    outputs = {
        "failures": RunOutputs(failures=link),
        "receipts": RunOutputs(receipts=link),
        "summary": RunOutputs(summary=link),
    }[flag]
    with pytest.raises(ConfigError, match="is the input"):
        await run_jobs(RunConfig(dry_run=True), jobs, outputs)
    assert jobs.read_bytes() == before


@pytest.mark.parametrize("plan", [False, True], ids=["dry-run", "plan"])
async def test_receipts_in_use_are_not_taken_by_a_symlink_nor_a_dry_run(tmp_path: Path, plan: bool) -> None:
    from bulkpatch.auth import Credentials
    from bulkpatch.journal import Journal

    receipts = tmp_path / "out.ndjson"
    receipts.write_bytes(b'{"line": 1, "ok": true}\n')
    link = tmp_path / "link.ndjson"
    link.symlink_to(receipts)
    jobs = tmp_path / "jobs.ndjson"
    jobs.write_bytes(b'{"id": "o1", "patch": [{"op": "replace", "path": "/name", "value": "x"}]}\n')
    config = RunConfig(
        credentials=Credentials(access_token="t"), api_key="k", org_id="O@AdobeOrg",
        sandbox="prod", dry_run=not plan, plan=plan,
    )
    live = Journal(journal_path(receipts))  # a run writing these receipts, still going
    try:
        with pytest.raises(ConfigError, match="in use by another bulkpatch run"):
            await run_jobs(config, jobs, RunOutputs(receipts=link))
        with pytest.raises(ConfigError, match="in use by another bulkpatch run"):
            await run_jobs(config, jobs, RunOutputs(receipts=receipts))
    finally:
        await live.close()
    assert receipts.read_bytes() == b'{"line": 1, "ok": true}\n'


@pytest.mark.parametrize("changed", ["sandbox", "endpoint"])
async def test_a_resume_against_another_target_is_refused_naming_it(tmp_path: Path, changed: str) -> None:
    async with running(SimConfig(offers=2)) as sim, running(SimConfig(offers=2)) as other:
        source = tmp_path / "jobs.ndjson"
        source.write_bytes(ndjson([replace_name(oid, "x") for oid in sorted(offers_of(sim))]))
        receipts = tmp_path / "out.ndjson"
        first = await run_jobs(run_config(sim), source, RunOutputs(receipts=receipts))
        assert first.ok == 2
        elsewhere = (
            run_config(sim, sandbox="stage")
            if changed == "sandbox"
            else run_config(sim, endpoint=other.endpoint)
        )
        with pytest.raises(ConfigError, match="records a run against"):
            await run_jobs(elsewhere, source, RunOutputs(receipts=receipts, resume=True))
        stats = await sim_stats(other.base_url)
    assert count(stats, "PATCH") == 0  # nothing went to the other target


async def test_a_file_with_cr_only_line_endings_is_refused_before_any_request(tmp_path: Path) -> None:
    async with running(SimConfig(offers=2)) as sim:
        lines = [orjson.dumps(replace_name(oid, "x")) for oid in sorted(offers_of(sim))]
        source = tmp_path / "mac.ndjson"
        source.write_bytes(b"\r".join(lines) + b"\r")
        with pytest.raises(ConfigError, match=r"CR only.*tr"):
            await run_jobs(run_config(sim), source)
        stats = await sim_stats(sim.base_url)
    assert count(stats, "PATCH") == 0
