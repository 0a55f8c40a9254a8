"""A journal that cannot be trusted is refused before any request, and never deleted.

A run is killed in-process: the receipts are opened through the ``opener`` seam with a
stream that, after each write, copies the journal files and the receipts aside, which is
what a ``kill -9`` at that moment would leave on disk (the journal still open, its
commits in the ``-wal`` file). The copy is then damaged as a disk or a person might, and
the run is resumed (or started afresh) over it, on the scripted transport.
"""

from __future__ import annotations

import asyncio
import errno
import io
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pytest

from bulkpatch.errors import ConfigError
from bulkpatch.runner import RunOutputs, RunResult, RunSeams, run_jobs
from bulkpatch.simulator import SimConfig, offer_id, running
from tests.test_engine_inprocess import ScriptedApi, VirtualClock, _config
from tests.test_run_cli import CLI, run_cli, sim_env, token_env

RECEIPTS = "out.ndjson"
JOURNAL = "out.ndjson.journal"


def job_file(path: Path, ids: list[str]) -> Path:
    path.write_bytes(
        b"".join(
            orjson.dumps({"id": i, "patch": [{"op": "add", "path": "/tags", "value": [n]}]}) + b"\n"
            for n, i in enumerate(ids, 1)
        )
    )
    return path


class Snapshotting(io.FileIO):
    """A receipts file that, after each write, calls ``after`` (which copies the files)."""

    def __init__(self, path: Path, mode: str, after: Callable[[], None]) -> None:
        super().__init__(path, mode)
        self._after = after

    def write(self, data: Any) -> int:
        written = super().write(data)
        self._after()
        return written


def copy_run(source: Path, into: Path) -> None:
    into.mkdir(exist_ok=True)
    for name in (RECEIPTS, JOURNAL, JOURNAL + "-wal"):
        if (source / name).exists():
            shutil.copyfile(source / name, into / name)
        else:
            (into / name).unlink(missing_ok=True)


async def run(
    workdir: Path, jobs: Path, api: ScriptedApi, *, resume: bool, opener: Any = None
) -> RunResult:
    outputs = RunOutputs(receipts=workdir / RECEIPTS, resume=resume)
    seams = RunSeams(transport=api, clock=api.clock)
    if opener is not None:
        seams = RunSeams(transport=api, clock=api.clock, opener=opener)
    return await asyncio.wait_for(run_jobs(_config(), jobs, outputs, seams=seams), 20)


async def killed_run(tmp_path: Path) -> tuple[Path, Path]:
    """(the job file, a directory holding what a kill -9 after the run's last receipts
    write leaves: receipts listing every line done, the journal with its -wal file)."""
    jobs = job_file(tmp_path / "jobs.ndjson", ["o1", "o2", "o3", "o4", "o5"])
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    live.mkdir()

    def opener(path: Path, append: bool) -> BinaryIO:
        return Snapshotting(path, "ab" if append else "wb", lambda: copy_run(live, crashed))

    result = await run(live, jobs, ScriptedApi(VirtualClock(), {}), resume=False, opener=opener)
    assert result.ok == 5
    assert (crashed / (JOURNAL + "-wal")).stat().st_size > 0
    assert len((crashed / RECEIPTS).read_bytes().splitlines()) == 5
    return jobs, crashed


async def test_an_intact_journal_of_a_killed_run_resumes_and_sends_nothing_again(
    tmp_path: Path,
) -> None:
    jobs, crashed = await killed_run(tmp_path)
    api = ScriptedApi(VirtualClock(), {})
    result = await run(crashed, jobs, api, resume=True)
    assert (result.jobs, api.log) == (0, [])
    seqs = [orjson.loads(line)["seq"] for line in (crashed / RECEIPTS).read_bytes().splitlines()]
    assert seqs == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("resume", [True, False])
@pytest.mark.parametrize("damage", ["cut the -wal file in half", "delete the -wal file"])
async def test_a_journal_that_lost_commits_the_receipts_list_is_refused_and_kept(
    tmp_path: Path, damage: str, resume: bool
) -> None:
    jobs, crashed = await killed_run(tmp_path)
    wal = crashed / (JOURNAL + "-wal")
    if damage.startswith("cut"):
        data = wal.read_bytes()
        wal.write_bytes(data[: len(data) // 2])
    else:
        wal.unlink()
    api = ScriptedApi(VirtualClock(), {})
    with pytest.raises(ConfigError) as refused:
        await run(crashed, jobs, api, resume=resume)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{JOURNAL} is damaged")
    assert "move it away to start over" in message
    assert api.log == []  # no request sent
    assert (crashed / JOURNAL).exists()  # kept, for inspection
    assert len((crashed / RECEIPTS).read_bytes().splitlines()) == 5  # receipts untouched


async def test_receipts_that_lost_lines_the_journal_recorded_are_refused(tmp_path: Path) -> None:
    jobs = job_file(tmp_path / "jobs.ndjson", ["o1", "o2"])
    api = ScriptedApi(VirtualClock(), {})
    await run(tmp_path, jobs, api, resume=False)
    receipts = tmp_path / RECEIPTS
    receipts.write_bytes(receipts.read_bytes().splitlines(keepends=True)[0])
    # A finished run: continue it with more lines, over receipts that lost line 2.
    job_file(jobs, ["o1", "o2", "o3"])
    with pytest.raises(ConfigError, match=r"ends at seq 1: lines were lost from out\.ndjson"):
        await run(tmp_path, jobs, ScriptedApi(VirtualClock(), {}), resume=True)


@pytest.mark.parametrize("resume", [True, False])
async def test_a_garbage_journal_is_refused_in_one_line_and_left_in_place(
    tmp_path: Path, resume: bool
) -> None:
    jobs = job_file(tmp_path / "jobs.ndjson", ["o1"])
    journal = tmp_path / JOURNAL
    garbage = b"this is not a database, whatever it was\n" * 100
    journal.write_bytes(garbage)
    (tmp_path / RECEIPTS).write_bytes(b"")
    done = await run_cli(
        jobs, "--receipts", tmp_path / RECEIPTS, *(["--resume"] if resume else []),
        "--endpoint", "http://127.0.0.1:9/data/core/dps", "--rate", "0",
        env=token_env("t"), wait_s=30,
    )  # fmt: skip
    stderr = done.stderr.decode()
    assert done.code == 2, stderr
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if "bulkpatch run: error:" in line]
    assert f"{JOURNAL} is damaged (file is not a database)" in line
    assert journal.read_bytes() == garbage


# --------------------------------------------------------------------------- write failures


class FailingFile(io.FileIO):
    """An output file whose ``fail_at``-th write raises ``error`` (and every one after)."""

    def __init__(self, path: Path, mode: str, fail_at: int, error: OSError) -> None:
        super().__init__(path, mode)
        self._left, self._error = fail_at, error

    def write(self, data: Any) -> int:
        self._left -= 1
        if self._left <= 0:
            raise self._error
        return super().write(data)


def failing_commit(fail_at: int) -> Callable[[Path], sqlite3.Connection]:
    """A journal connection whose ``fail_at``-th COMMIT fails as a full disk does."""
    left = [fail_at]

    class Failing(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql == "COMMIT":
                left[0] -= 1
                if left[0] == 0:
                    raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *args)

    return lambda path: sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, factory=Failing
    )


IDS = [f"o{n}" for n in range(1, 6)] * 8  # 40 lines, 8 per offer: order per offer matters


def tags_file(path: Path) -> Path:
    """40 jobs appending 1..40 to the tags of five offers: each applied once, in order.
    Each carries a 4 kB ``ref`` (echoed in its outcome), so outcome lines leave in several
    writes of 64 kB, whatever the timing."""
    ref = "r" * 4000
    path.write_bytes(
        b"".join(
            orjson.dumps({"id": i, "patch": [{"op": "add", "path": "/tags/-", "value": n}], "ref": ref})
            + b"\n"
            for n, i in enumerate(IDS, 1)
        )
    )
    return path


def tagged_api(clock: VirtualClock) -> ScriptedApi:
    api = ScriptedApi(clock, {})
    for doc in api.docs.values():
        doc["tags"] = []
    return api


@pytest.mark.parametrize(
    "failure",
    [
        "receipts: ENOSPC at the 2nd write",
        "receipts: EIO at the 3rd write",
        "journal: the 4th commit fails",
    ],
)
async def test_a_record_that_cannot_be_written_stops_the_run_and_resume_is_exact(
    tmp_path: Path, failure: str
) -> None:
    jobs = tags_file(tmp_path / "jobs.ndjson")
    clock = VirtualClock()
    api = tagged_api(clock)
    outputs = RunOutputs(receipts=tmp_path / RECEIPTS, failures=tmp_path / "failed.ndjson")
    seams = RunSeams(transport=api, clock=clock)
    if failure.startswith("receipts"):
        error = OSError(errno.ENOSPC, "No space left on device") if "ENOSPC" in failure else OSError(errno.EIO, "Input/output error")
        nth = 2 if "ENOSPC" in failure else 3

        def opener(path: Path, append: bool) -> BinaryIO:
            mode = "ab" if append else "wb"
            return FailingFile(path, mode, nth, error) if path.name == RECEIPTS else io.FileIO(path, mode)

        seams = RunSeams(transport=api, clock=clock, opener=opener)
        expected = f"cannot write {tmp_path / RECEIPTS}: {error.strerror}"
    else:
        seams = RunSeams(transport=api, clock=clock, connect=failing_commit(4))
        expected = f"cannot write {JOURNAL}: database or disk is full"
    config = _config(concurrency=4)
    first = await asyncio.wait_for(run_jobs(config, jobs, outputs, seams=seams), 20)
    assert first.systemic == expected
    assert first.stop_reason == expected
    written = len((tmp_path / RECEIPTS).read_bytes().splitlines())
    assert written < len(IDS)  # the rest were not written: the journal holds them
    # Resume with everything working: every job applied exactly once, in order per offer.
    resumed = RunOutputs(receipts=outputs.receipts, failures=outputs.failures, resume=True)
    again = await asyncio.wait_for(
        run_jobs(config, jobs, resumed, seams=RunSeams(transport=api, clock=clock)), 20
    )
    assert again.systemic is None
    for entity, doc in api.docs.items():
        assert doc["tags"] == [n for n, i in enumerate(IDS, 1) if i == entity]
    final: dict[int, dict[str, Any]] = {}
    for raw in (tmp_path / RECEIPTS).read_bytes().splitlines():
        record = orjson.loads(raw)
        assert not (record["ok"] and final.get(record["line"], {}).get("ok")), "ok twice"
        final[record["line"]] = record
    assert sorted(final) == list(range(1, 41))
    assert all(record["ok"] for record in final.values())


async def test_outcomes_to_a_full_disk_stop_the_run_with_exit_3_and_one_line(tmp_path: Path) -> None:
    jobs = job_file(tmp_path / "jobs.ndjson", [offer_id(n) for n in range(1, 21)])
    async with running(SimConfig(offers=20)) as sim:
        with Path("/dev/full").open("wb") as full:  # noqa: ASYNC230 - opening it never blocks
            proc = await asyncio.create_subprocess_exec(
                *CLI, "run", str(jobs), "--endpoint", sim.endpoint, "--rate", "0",
                stdin=asyncio.subprocess.DEVNULL, stdout=full, stderr=asyncio.subprocess.PIPE,
                env=sim_env(sim),
            )  # fmt: skip
            _, err = await asyncio.wait_for(proc.communicate(), 30)
    stderr = err.decode()
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert "Exception ignored" not in stderr
    errors = [line for line in stderr.splitlines() if "[error" in line]
    assert len(errors) == 1, stderr
    assert "cannot write stdout: No space left on device" in errors[0]
