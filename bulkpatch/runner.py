"""``run_jobs``: a whole run as one library call, with the files the command line writes.

Where ``patch_all`` streams outcomes to its caller, ``run_jobs`` does what ``bulkpatch
run`` does around the engine: it reads the input (a job file, stdin, or a backup to
roll back), keeps the journal beside ``receipts`` so a run can be resumed, records each
entity before its first write with ``backup``, writes the outcome lines, the failure
log, the created ids and the summary, and returns the counts::

    result = await run_jobs(config, "jobs.ndjson", RunOutputs(receipts=Path("out.ndjson")))
    if not result.all_ok: ...

Signals and exit statuses are the caller's: ``on_engine`` hands over the engine so a
caller can ``stop`` the run or ``abort_in_flight`` (the command line does on SIGINT).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, TextIO

import orjson
import structlog

from bulkpatch import journal_check, runid
from bulkpatch.backup import Backup, rollback_jobs
from bulkpatch.client import Transport
from bulkpatch.config import RunConfig
from bulkpatch.engine import Engine
from bulkpatch.errors import ConfigError, RecordError
from bulkpatch.gateway import Clock
from bulkpatch.jobs import BadLine, Job
from bulkpatch.journal import Connect, Journal, connect
from bulkpatch.journal_check import lock_receipts
from bulkpatch.preflight import check_outputs
from bulkpatch.progress import Progress, count_lines
from bulkpatch.sink import LineWriter, Opener, Recorder, open_file
from bulkpatch.source import HEAD, read_jobs, refuse_head
from bulkpatch.summary import PlanTally, of_run
from bulkpatch.summary import render as render_summary

# The stop reason when the reader of stdout went away (`| head`).
STDOUT_GONE: Final = "stdout closed"
# Outcome lines leave in batches, at least this often (seconds).
FLUSH_S: Final = 0.1

Items = AsyncIterable[Job | BadLine] | list[Job | BadLine]


@dataclass(frozen=True, slots=True)
class RunOutputs:
    """Where a run writes, and how.

    ``receipts``: the outcome lines (None: stdout); the journal that makes the run
    resumable lives beside it, as ``<receipts>.journal``. ``failures``: failed jobs,
    re-runnable as input. ``summary``: the end-of-run summary as JSON. ``backup``: each
    entity before its first write. ``id_map``: ``{"key", "id"}`` of each created entity,
    appended. ``resume``: continue the run that wrote ``receipts``. ``durable``: fsync
    before relying on a file. ``progress``: a live progress line on stderr.
    ``summary_to``: where to print the summary for people (None: nowhere).
    ``summary_event``: log the summary as one ``run.summary`` info event (for logs read
    by machines); otherwise it is a debug event. ``run_id``: the run's id (None: the
    journal's on resume, else a new one; see ``runid``). ``overwrite``: replace the
    receipts of a finished run (else refused).
    """

    receipts: Path | None = None
    failures: Path | None = None
    summary: Path | None = None
    backup: Path | None = None
    id_map: Path | None = None
    resume: bool = False
    durable: bool = False
    progress: bool = False
    summary_to: TextIO | None = None
    summary_event: bool = False
    run_id: str | None = None
    overwrite: bool = False

    def check(self, source: str) -> None:
        """Refuse (``ConfigError``, naming the command line's flags) outputs that clash:
        two outputs in one file, or an output that is the input (it would be emptied
        before it is read: re-running a failure log into itself, say)."""
        named = {
            "--receipts": self.receipts,
            "--failures": self.failures,
            "--summary": self.summary,
            "--backup": self.backup,
            "--id-map": self.id_map,
        }
        paths = [(flag, path) for flag, path in named.items() if path is not None]
        for flag, path in paths:
            if source != "-" and _same_file(path, Path(source)):
                raise ConfigError(f"{flag} {path} is the input: it would be emptied before it is read")
        for n, (flag, path) in enumerate(paths):
            for other, other_path in paths[n + 1 :]:
                if _same_file(path, other_path):
                    raise ConfigError(f"{flag} and {other} must be different files")
        check_outputs(paths)  # each can be written: before the first request, not after
        if self.resume and self.receipts is None:
            raise ConfigError("--resume needs --receipts (the file the earlier run wrote)")
        if self.receipts is not None and not self.resume and not self.overwrite:
            journal_check.refuse_overwrite(self.receipts, journal_path(self.receipts))
        if self.resume and source == "-":
            raise ConfigError(
                "--resume needs INPUT as a file, not stdin: it reads it first, to check it "
                "against the run being resumed"
            )


def _same_file(a: Path, b: Path) -> bool:
    """One file, however named (links, relative paths)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()  # one of them does not exist yet


@dataclass(frozen=True, slots=True)
class RunSeams:
    """What a run talks to, when not the real thing (tests): ``transport`` and ``clock``
    as ``Engine`` takes them; ``opener`` opens the receipts and failure log
    (``sink.Opener``); ``connect`` opens the journal (``journal.Connect``)."""

    transport: Transport | None = None
    clock: Clock | None = None
    opener: Opener = open_file
    connect: Connect = connect


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run came to.

    ``jobs``: outcomes this run gave; ``ok``: of them, successes; ``failed_before``:
    lines a resumed run found failed by the run it continues. ``stop_reason``: why the
    run stopped before the end of its input (None: it did not); ``systemic``: set when
    that was a systemic failure. ``summary``: the summary as written to ``--summary``.
    """

    jobs: int
    ok: int
    failed_before: int
    stop_reason: str | None
    systemic: str | None
    summary: dict[str, Any]

    @property
    def all_ok(self) -> bool:
        """Every line of the whole run (a resumed one included) ended ok."""
        return self.jobs == self.ok and not self.failed_before


async def run_jobs(
    config: RunConfig,
    source: str | Path = "-",
    outputs: RunOutputs = RunOutputs(),
    *,
    rollback: bool = False,
    on_engine: Callable[[Engine], None] | None = None,
    seams: RunSeams = RunSeams(),
) -> RunResult:
    """Run the jobs of ``source`` (a job file; "-": stdin) and write ``outputs``.

    With ``rollback``, ``source`` is a backup file and the jobs put its entities back.
    ``on_engine`` is called with the engine before the first job is read. Raises
    ``ConfigError`` for clashing outputs, an unreadable input or unwritable output, a
    journal that cannot be trusted (``journal_check``), or a resumed input that does not
    match the run it continues; nothing is sent then. A journal, receipts or failure log
    that cannot be written later stops the run: ``systemic`` names the file and why.
    """
    name = str(source)
    outputs.check(name)
    async with contextlib.AsyncExitStack() as stack:
        backup = _open_backup(stack, outputs)
        journal, seq = await _open_journal(stack, config, outputs, seams.connect)
        run = journal.run if journal is not None else outputs.run_id or runid.new_id()
        if outputs.receipts is not None:
            facts = runid.facts(run, config, name, _command(config, rollback))
            runid.write_sidecar(outputs.receipts, facts, keep=outputs.resume)
        engine = Engine(
            config, journal=journal, backup=backup, transport=seams.transport, clock=seams.clock
        )
        _record_created(stack, engine, outputs.id_map)
        if on_engine is not None:
            on_engine(engine)
        return await _drive(engine, journal, name, outputs, (seams.opener, seq, run), rollback=rollback)


def _command(config: RunConfig, rollback: bool) -> str:
    return "rollback" if rollback else "plan" if config.plan else "run"


def _open_backup(stack: contextlib.AsyncExitStack, outputs: RunOutputs) -> Backup | None:
    if outputs.backup is None:
        return None
    backup = Backup(outputs.backup, durable=outputs.durable)
    stack.callback(backup.close)
    return backup


def journal_path(receipts: Path) -> Path:
    """The journal of the run whose outcome lines go to ``receipts``: beside the file
    itself, however it is named (a symlink to a live run's receipts finds that run's
    journal, and its lock)."""
    real = receipts.resolve()
    return real.with_name(real.name + ".journal")


async def _open_journal(
    stack: contextlib.AsyncExitStack, config: RunConfig, outputs: RunOutputs, connect: Connect
) -> tuple[Journal | None, int]:
    """The journal beside ``receipts``, reconciled with it on resume, and the ``seq`` of
    the run's first outcome line; no journal for a dry run or a plan, which write nothing
    to resume, but they too hold the receipts' lock: a live run's receipts are not theirs
    to truncate."""
    if outputs.receipts is None:
        return None, 1
    if config.dry_run or config.plan:
        stack.callback(lock_receipts(journal_path(outputs.receipts)).close)
        return None, 1
    api = config.api
    target = f"{api.endpoint} ({api.dialect}, org {api.org_id}, sandbox {api.sandbox}" + (
        f", container {api.container_id})" if api.container_id else ")"
    )
    journal = Journal(
        journal_path(outputs.receipts),
        durable=outputs.durable,
        resume=outputs.resume,
        target=target,
        connect=connect,
        run_id=outputs.run_id,
    )
    stack.push_async_callback(journal.close)
    if not outputs.resume:
        return journal, 1
    reconciled, seq = await journal.reconcile(outputs.receipts)
    structlog.get_logger().info(
        "run.resume", receipts=str(outputs.receipts), reported_before=reconciled
    )
    return journal, seq


def _record_created(
    stack: contextlib.AsyncExitStack, engine: Engine, path: Path | None
) -> None:
    """Append ``{"key", "id"}`` to ``path`` as each entity is created."""
    if path is None:
        return
    id_map = open_output(path, append=True)
    stack.callback(id_map.close)

    def record_id(key: Any, new_id: str) -> None:
        # Flushed at once: a resumed run does not create these again, so an id lost in
        # a buffer would be lost for good.
        id_map.write({"key": key, "id": new_id})
        id_map.flush()

    engine.on_created = record_id


async def _drive(
    engine: Engine,
    journal: Journal | None,
    source: str,
    outputs: RunOutputs,
    recording: tuple[Opener, int, str],
    *,
    rollback: bool,
) -> RunResult:
    """Read the input, run every job, write every outcome (``recording``: how output
    files are opened, the ``seq`` of the first line, the run's id); the result."""
    started = time.monotonic()
    tally = PlanTally() if engine.config.plan else None
    with contextlib.ExitStack() as stack:
        items = _items(stack, source, rollback=rollback, force=engine.config.force)
        if outputs.resume and journal is not None:
            await _check_resumed_input(journal, source, items)
        recorder = _recorder(stack, journal, outputs, *recording)
        progress = _progress(stack, source, engine, shown=outputs.progress)
        flusher = asyncio.get_running_loop().create_task(
            _flush_every(recorder, engine, FLUSH_S, progress)
        )
        stack.callback(flusher.cancel)
        await _record_all(engine, items, recorder, tally)
        await _flush(recorder, engine)
        if journal is not None and engine.stop_reason is None:
            journal.finished()
    return _result(engine, time.monotonic() - started, tally, outputs, source)


def _items(stack: contextlib.ExitStack, source: str, *, rollback: bool, force: bool) -> Items:
    """The jobs: read as they are needed from a job file, all at once from a backup."""
    if rollback:
        return rollback_jobs(Path(source), force=force)
    stream = open_input(source)
    if stream is not sys.stdin.buffer:
        stack.callback(stream.close)
    return read_jobs(stream, source)


async def _check_resumed_input(journal: Journal, source: str, items: Items) -> None:
    """Before any request: a resumed run's input must hold, at the same numbers, every
    line the run being resumed gave an outcome or sent (see ``Journal.check_input``)."""
    if isinstance(items, list):  # a rollback's: one job per entity, not in line order
        await journal.check_input(sorted(items, key=lambda item: item.line), source)
        return
    # A second reading: the first is the run's own, consumed as the jobs go out.
    with open_input(source) as stream:
        await journal.check_input(read_jobs(stream), source)


def _recorder(
    stack: contextlib.ExitStack,
    journal: Journal | None,
    outputs: RunOutputs,
    opener: Opener,
    seq: int,
    run: str,
) -> Recorder:
    """Outcomes to ``receipts`` (or stdout), failures to ``failures``; appended on resume.
    Written when the recorder says (after the journal), never on their own."""
    append = outputs.resume
    receipts = (
        LineWriter(sys.stdout.buffer, hold=True)
        if outputs.receipts is None
        else open_output(outputs.receipts, append=append, opener=opener, hold=True)
    )
    stack.callback(receipts.abandon)  # until the recorder owns it
    failures = None
    if outputs.failures is not None:
        failures = open_output(outputs.failures, append=append, opener=opener, hold=True)
        stack.callback(failures.abandon)
    recorder = Recorder(receipts, failures, journal, durable=outputs.durable, seq=seq, run=run)
    stack.callback(recorder.close)
    return recorder


def _progress(
    stack: contextlib.ExitStack, source: str, engine: Engine, *, shown: bool
) -> Progress | None:
    """The live progress line; its total is known for a whole file, not a shard or stdin."""
    if not shown:
        return None
    total = None
    if source != "-" and engine.config.shard is None:
        total = count_lines(Path(source))
    progress = Progress(total, sys.stderr)
    stack.callback(progress.close)
    return progress


async def _record_all(
    engine: Engine, items: Items, recorder: Recorder, tally: PlanTally | None
) -> None:
    async with contextlib.aclosing(engine.run_batches(items)) as batches:
        async for batch in batches:
            for outcome in batch:
                if tally is not None:
                    tally.add(outcome)
                recorder.record(outcome)
            if recorder.due:
                await _flush(recorder, engine)


async def _flush(recorder: Recorder, engine: Engine) -> None:
    """Write what was recorded. The stdout reader gone stops the run quietly; an output
    or the journal that cannot be written stops it as a systemic failure (exit 3)."""
    try:
        await recorder.flush()
    except BrokenPipeError:
        _stdout_gone(engine)
    except RecordError as exc:
        engine.halt(str(exc))
        if str(exc).startswith("cannot write stdout"):
            silence_stdout()  # the interpreter's last flush must not fail again


async def _flush_every(
    recorder: Recorder, engine: Engine, seconds: float, progress: Progress | None
) -> None:
    # One write per batch, not per outcome, and a slow run still shows its outcomes as
    # they come.
    while True:
        await asyncio.sleep(seconds)
        await _flush(recorder, engine)
        if progress is not None:
            progress.update(engine.stats)


def _stdout_gone(engine: Engine) -> None:
    """The reader of stdout went away (`| head`): stop quietly, as Unix tools do.

    Jobs in flight still finish (their outcomes reach the journal, for --resume); what
    is written from here on, the interpreter's last flush included, goes nowhere instead
    of raising again.
    """
    engine.stop(STDOUT_GONE)
    silence_stdout()


def silence_stdout() -> None:
    """Point stdout at /dev/null: what is written to it from here on goes nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _result(
    engine: Engine, wall: float, tally: PlanTally | None, outputs: RunOutputs, source: str
) -> RunResult:
    """The summary: logged, printed for people, written as JSON; and the result. An
    input with no job at all gets a warning instead of a summary of nothing: an empty
    file is most often an upstream step that failed."""
    summary = of_run(engine.stats, wall)
    log = structlog.get_logger()
    if outputs.summary_event:
        log.info("run.summary", **summary, **({"plan": dict(tally.kinds)} if tally else {}))
    else:
        log.debug("run.summary", **summary)
    if not summary["jobs"] and not summary["skipped"] and engine.stop_reason is None:
        shown = "stdin" if source == "-" else source
        log.warning("run.no_jobs", detail=f"no jobs in {shown}")
    elif outputs.summary_to is not None:
        text = render_summary(summary) if tally is None else tally.render(wall)
        print(text, file=outputs.summary_to, flush=True)
    if outputs.summary is not None:
        _write_summary(outputs.summary, summary)
    return RunResult(
        jobs=summary["jobs"],
        ok=summary["outcomes"].get("ok", 0),
        failed_before=summary["skipped_failed"],
        stop_reason=engine.stop_reason,
        systemic=engine.systemic,
        summary=summary,
    )


def _write_summary(path: Path, summary: dict[str, Any]) -> None:
    # Not a reason to fail the run: every outcome is already written.
    try:
        path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as exc:
        structlog.get_logger().error(
            "run.summary_not_written", path=str(path), error=exc.strerror
        )


def open_input(name: str) -> BinaryIO:
    """A job file to read ("-": stdin); ``ConfigError`` when it cannot be opened."""
    if name == "-":
        return sys.stdin.buffer
    try:
        stream = open(name, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}") from None
    _refuse_head(stream, name)
    return stream


def _refuse_head(stream: BinaryIO, name: str) -> None:
    """Refused before any request: a file with CR-only line endings (old Mac), which
    would read as one line (its jobs one bad line, or worse, one job), and one in
    another encoding than UTF-8 (``source.refuse_head``)."""
    head = stream.read(HEAD)
    stream.seek(0)
    try:
        refuse_head(head, name)
    except ConfigError:
        stream.close()
        raise
    if b"\r" in head and b"\n" not in head:
        stream.close()
        raise ConfigError(
            f"{name} ends its lines with CR only; convert it first: tr '\\r' '\\n' < {name} > jobs.ndjson"
        )


def open_output(
    path: Path, *, append: bool, opener: Opener = open_file, hold: bool = False
) -> LineWriter:
    """An NDJSON file to write; ``ConfigError`` when it cannot be opened."""
    try:
        return LineWriter(opener(path, append), close=True, hold=hold, name=str(path))
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


__all__ = [
    "STDOUT_GONE",
    "RunOutputs",
    "RunResult",
    "RunSeams",
    "journal_path",
    "open_input",
    "open_output",
    "run_jobs",
    "silence_stdout",
]
