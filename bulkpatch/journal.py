"""The run journal: a record of intent written before every write, so a run can resume.

It lives beside the receipts file (``out.ndjson`` → ``out.ndjson.journal``), in SQLite in
WAL mode: crash-safe, and on disk rather than on the heap, so a million-job journal
costs no memory. A job is keyed by its identity, not its line: the entity, the job's
occurrence among that entity's jobs in the input, and a digest of the job. Out-of-order
completions, jobs appended to the input and edits to other entities' jobs therefore
resume correctly; reordering one entity's own jobs between runs does not.

States of a job:

- no row: never sent;
- ``intent``: a write was (or was about to be) sent; the row keeps what is needed to
  settle its fate on resume (the etag it carried and, for patches that need one, the
  entity as it was before the write);
- ``landed``: the write is confirmed (the row keeps the answer's status and etag); its
  ok outcome may not have reached the receipts file yet. Recorded before the entity's
  next job can send anything, so a resume never mistakes this job's effect for another
  writer's: on resume it is reported ok from the journal, not sent again;
- ``done``: its ok outcome is in the receipts file.

Promises: by default the intent is handed to the operating system before the write is
sent (a crash of bulkpatch, even ``kill -9``, loses nothing); with ``durable`` it is also
fsync'd first (a power loss loses nothing). Many intents share one commit (group commit),
so durability costs latency per write, not throughput.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import sqlite3
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from bulkpatch.errors import ConfigError
from bulkpatch.jobs import Job

Identity = tuple[str, int, bytes]  # (entity key, occurrence, digest)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    entity     TEXT    NOT NULL,
    occurrence INTEGER NOT NULL,
    digest     BLOB    NOT NULL,
    state      TEXT    NOT NULL,
    line       INTEGER NOT NULL,
    id         TEXT    NOT NULL,
    etag       INTEGER,
    pre        BLOB,
    status     INTEGER,
    PRIMARY KEY (entity, occurrence)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_line ON jobs (line);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def entity_key(job: Job) -> str:
    return "\x1f".join(job.key)


def digest(job: Job) -> bytes:
    """A digest of what the job does (and its ref), independent of its line number."""
    return hashlib.blake2b(
        orjson.dumps(job.as_line(), option=orjson.OPT_SORT_KEYS), digest_size=16
    ).digest()


@dataclass(frozen=True, slots=True)
class Landed:
    """A job whose write an earlier run confirmed, but perhaps did not report."""

    status: int | None
    etag: int | None
    id: str | None = None  # the entity's id (for a create: the one the server gave)


@dataclass(frozen=True, slots=True)
class Pending:
    """A job whose write was in flight when a previous run stopped."""

    etag: int | None
    pre: dict[str, Any] | None


class Journal:
    """One run's journal. Intents are group-committed from a single writer thread."""

    def __init__(self, path: Path, *, durable: bool = False, resume: bool = True) -> None:
        self.path = path
        self._lock = _lock(path.with_name(path.name + ".lock"), shown=self.shown)
        try:
            if not resume:
                self._start_afresh()
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="bulkpatch-journal")
            self._writer = self._connect(durable)
            self._writer.executescript(_SCHEMA)
            self._writer.execute("INSERT OR REPLACE INTO meta VALUES ('finished', '0')")
        except BaseException:
            self._lock.close()
            raise
        # Lookups come from the event loop's thread, on a connection of their own: WAL
        # lets them read while the writer thread commits.
        self._reader = sqlite3.connect(path, isolation_level=None)
        self._queue: list[tuple[str, tuple[Any, ...], asyncio.Future[None] | None]] = []
        self._wake: asyncio.Event | None = None
        self._committer: asyncio.Task[None] | None = None
        self._occurrences: dict[str, int] = {}
        self.commits = 0

    @property
    def shown(self) -> str:
        """The receipts file this journal belongs to, for messages."""
        return self.path.name.removesuffix(".journal")

    def _start_afresh(self) -> None:
        """Forget a finished earlier run; refuse to forget one that stopped half-way."""
        if not self.path.exists():
            return
        db = sqlite3.connect(self.path)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'finished'").fetchone()
        except sqlite3.DatabaseError:
            row = None
        finally:
            db.close()
        if row is not None and row[0] == "0":
            raise ConfigError(
                f"an earlier run writing {self.shown} did not finish: continue it with --resume, "
                f"or delete {self.path.name} to start over (jobs it sent may then run twice)"
            )
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    def finished(self) -> None:
        """Record that every input line was read and has its outcome."""
        self._enqueue("finished", (), None)

    def _connect(self, durable: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # OFF: a commit is written to the OS, not fsync'd (survives a crash of this
        # process). FULL: fsync'd at every commit (survives a power loss).
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        return db

    # -- identity

    def identify(self, job: Job) -> Identity:
        """The job's identity; call once per job, in input order."""
        key = entity_key(job)
        occurrence = self._occurrences.get(key, 0)
        self._occurrences[key] = occurrence + 1
        return (key, occurrence, digest(job))

    def lookup(self, identity: Identity) -> str | Landed | Pending | None:
        """``"done"``, ``Landed`` (report it), a ``Pending`` write to settle, or None (run it)."""
        row = self._reader.execute(
            "SELECT digest, state, etag, pre, status, id FROM jobs"
            " WHERE entity = ? AND occurrence = ?",
            identity[:2],
        ).fetchone()
        if row is None or row[0] != identity[2]:
            return None  # never sent, or the job at this place was edited: a new job
        if row[1] == "done":
            return "done"
        if row[1] == "landed":
            return Landed(row[4], row[2], row[5] or None)
        return Pending(row[2], orjson.loads(row[3]) if row[3] is not None else None)

    # -- writing

    async def intent(
        self, identity: Identity, job: Job, etag: int | None, pre: dict[str, Any] | None
    ) -> None:
        """Record that a write is about to be sent; returns once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        row = (
            identity[0],
            identity[1],
            identity[2],
            job.line,
            job.id,
            etag,
            orjson.dumps(pre) if pre is not None else None,
        )
        self._enqueue("intent", row, future)
        await future

    def landed(
        self,
        identity: Identity,
        status: int | None,
        etag: int | None,
        *,
        line: int,
        entity_id: str | None,
    ) -> None:
        """Record that the job is done (its write confirmed, or none was needed). Not
        awaited: the single writer commits it before any intent queued after it, so before
        the entity's next write is sent. An upsert: a job that never sent a write (a no-op,
        an adopted entity) has no intent row, and must not run again on resume either."""
        row = (identity[0], identity[1], identity[2], line, entity_id or "", etag, status)
        self._enqueue("landed", row, None)

    def done(self, identities: Iterable[Identity]) -> None:
        """Mark jobs done (their ok outcomes are written); committed with the next batch."""
        for identity in identities:
            self._enqueue("done", identity[:2], None)

    def _enqueue(
        self, kind: str, row: tuple[Any, ...], future: asyncio.Future[None] | None
    ) -> None:
        self._queue.append((kind, row, future))
        if self._committer is None:
            self._wake = asyncio.Event()
            self._committer = asyncio.create_task(self._commit_loop())
        assert self._wake is not None
        self._wake.set()

    async def _commit_loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            try:
                await loop.run_in_executor(self._executor, self._write, batch)
            except BaseException as exc:
                for _, _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(exc)
                raise
            for _, _, future in batch:
                if future is not None and not future.done():
                    future.set_result(None)

    def _write(self, batch: list[tuple[str, tuple[Any, ...], asyncio.Future[None] | None]]) -> None:
        db = self._writer
        db.execute("BEGIN")
        for kind, row, _ in batch:
            if kind == "intent":
                db.execute(
                    "INSERT INTO jobs (entity, occurrence, digest, state, line, id, etag, pre)"
                    " VALUES (?, ?, ?, 'intent', ?, ?, ?, ?)"
                    " ON CONFLICT (entity, occurrence) DO UPDATE SET digest = excluded.digest,"
                    " state = 'intent', line = excluded.line, id = excluded.id,"
                    " etag = excluded.etag, pre = excluded.pre",
                    row,
                )
            elif kind == "landed":
                db.execute(
                    "INSERT INTO jobs (entity, occurrence, digest, state, line, id, etag, status)"
                    " VALUES (?, ?, ?, 'landed', ?, ?, ?, ?)"
                    " ON CONFLICT (entity, occurrence) DO UPDATE SET digest = excluded.digest,"
                    " state = 'landed', line = excluded.line, id = excluded.id,"
                    " etag = excluded.etag, status = excluded.status, pre = NULL",
                    row,
                )
            elif kind == "done":
                db.execute(
                    "UPDATE jobs SET state = 'done' WHERE entity = ? AND occurrence = ?", row
                )
            elif kind == "finished":
                db.execute("INSERT OR REPLACE INTO meta VALUES ('finished', '1')")
        db.execute("COMMIT")
        self.commits += 1

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        if self._queue:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._enqueue("noop", (), future)
            await future

    async def reconcile(self, receipts: Path) -> int:
        """Mark done every job whose ok outcome an earlier run wrote; mend a torn last line.

        Between writing an ok outcome and marking it done a crash can fall; the receipts
        file is the truth for what was reported ok.
        """
        await self.flush()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._reconcile, receipts)

    def _reconcile(self, receipts: Path) -> int:
        if not receipts.exists():
            return 0
        _truncate_torn_tail(receipts)
        marked = 0
        db = self._writer
        db.execute("BEGIN")
        with receipts.open("rb") as f:
            for raw in f:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("ok") is True and "id" in record:
                    db.execute(
                        "UPDATE jobs SET state = 'done' WHERE line = ? AND id = ?",
                        (record.get("line"), record["id"]),
                    )
                    marked += 1
        db.execute("COMMIT")
        return marked

    async def close(self) -> None:
        await self.flush()
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        self._executor.shutdown(wait=True)
        self._writer.close()
        self._reader.close()
        self._lock.close()


def _truncate_torn_tail(path: Path) -> None:
    """Cut a last line that has no newline: what a kill in the middle of a write leaves."""
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        step = min(size, 1 << 16)
        position = size
        while position > 0:
            position = max(0, position - step)
            f.seek(position)
            chunk = f.read(size - position)
            newline = chunk.rfind(b"\n")
            if newline != -1:
                f.truncate(position + newline + 1)
                return
        f.truncate(0)


def _lock(path: Path, *, shown: str) -> BinaryIO:
    """An exclusive lock for the run's lifetime: two runs never share receipts or journal."""
    handle = path.open("a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().decode(errors="replace").strip() or "another process"
        handle.close()
        raise ConfigError(
            f"{shown} is in use by another bulkpatch run ({holder}); "
            "wait for it to finish or use other --receipts"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}".encode())
    handle.flush()
    return handle
