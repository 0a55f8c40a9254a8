"""The run journal: a record of intent written before every write, so a run can resume.

It lives beside the receipts file (``out.ndjson`` → ``out.ndjson.journal``), in SQLite in
WAL mode: crash-safe, and on disk rather than on the heap, so a million-job journal
costs no memory. A row is keyed by the input's line number and keeps a digest of the
job (or, for a line that is not one, of its bytes). Before a resumed run sends anything,
``check_input`` reads the input once and refuses it if a line with a recorded outcome or
intent is not the line it was (edited, or moved by a line inserted or deleted above it):
only lines with no outcome yet, or an ``input`` one, may differ or be new.

States of a line:

- no row: never sent, no outcome;
- ``intent``: a write was (or was about to be) sent; the row keeps what is needed to
  settle its fate on resume (the etag it carried and, for patches that need one, the
  entity as it was before the write);
- ``landed``: the job is ok (its write confirmed, or none was needed); the row keeps the
  answer's status and etag;
- ``failed``: the job failed for good (any kind but ``aborted``, which is not an end):
  the row keeps the error, so a resume neither sends it again nor loses its outcome.

``reported`` says the outcome is in the receipts file. A final outcome is recorded
before the entity's next job can send anything, so a resume never mistakes this job's
effect for another writer's, nor runs it again after a later job of its entity.

Promises: by default the intent is handed to the operating system before the write is
sent (a crash of bulkpatch, even ``kill -9``, loses nothing); with ``durable`` it is also
fsync'd first (a power loss loses nothing). Many intents share one commit (group commit),
so durability costs latency per write, not throughput.

A journal that cannot be trusted (unreadable, failing its integrity check, missing lines
the receipts list as done) is refused, never deleted (``journal_check``). A commit that
fails (a full disk, an I/O error) commits nothing after it: what waits for it gets
``RecordError``, and ``on_failure`` stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from collections.abc import AsyncIterable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from bulkpatch import journal_check, runid
from bulkpatch.errors import ConfigError, RecordError
from bulkpatch.jobs import BadLine, Job
from bulkpatch.journal_check import damaged, error_blob, lock

Identity = tuple[str, int, bytes]  # (entity key, line number, digest)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS lines (
    line     INTEGER PRIMARY KEY,
    digest   BLOB    NOT NULL,
    entity   TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    reported INTEGER NOT NULL DEFAULT 0,
    id       TEXT    NOT NULL DEFAULT '',
    etag     INTEGER,
    pre      BLOB,
    status   INTEGER,
    kind     TEXT,
    error    BLOB,
    seq      INTEGER
);
CREATE INDEX IF NOT EXISTS lines_entity ON lines (entity, line);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# What a line's outcome was, in the words of a refusal to resume.
_WAS: Final = {"intent": "had sent", "landed": "applied", "failed": "reported failed"}


def entity_key(job: Job) -> str:
    return "\x1f".join(job.key)


def digest(job: Job) -> bytes:
    """A digest of what the job does (and its ref), independent of its line number."""
    return hashlib.blake2b(
        orjson.dumps(job.as_line(), option=orjson.OPT_SORT_KEYS), digest_size=16
    ).digest()


def item_digest(item: Job | BadLine) -> bytes:
    """``digest`` for a job; for a line that is not one, a digest of its bytes."""
    if isinstance(item, Job):
        return digest(item)
    return hashlib.blake2b(
        item.raw + b"\x00" + str(item.size).encode(), digest_size=16, person=b"bad line"
    ).digest()


Connect = Callable[[Path], sqlite3.Connection]


def connect(path: Path) -> sqlite3.Connection:
    """The journal's writer connection: autocommit (every transaction is explicit), used
    from the writer thread. Tests give ``Journal`` another, to make a commit fail."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


@dataclass(frozen=True, slots=True)
class Landed:
    """A job whose write an earlier run confirmed, but perhaps did not report."""

    status: int | None
    etag: int | None
    id: str | None = None  # the entity's id (for a create: the one the server gave)


@dataclass(frozen=True, slots=True)
class Failed:
    """A job an earlier run saw fail for good, but perhaps did not report."""

    status: int | None
    error: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """A job whose write was in flight when a previous run stopped."""

    etag: int | None
    pre: dict[str, Any] | None


# ``lookup``'s answers for a line whose outcome is in the receipts already.
DONE: Final = "done"
DONE_FAILED: Final = "done, failed"


class Journal:
    """One run's journal. Intents are group-committed from a single writer thread."""

    def __init__(
        self,
        path: Path,
        *,
        durable: bool = False,
        resume: bool = True,
        target: str = "",
        connect: Connect = connect,
        run_id: str | None = None,
    ) -> None:
        """``target``: what the run writes to (endpoint, dialect, org, sandbox, container);
        a resume against another is refused (``ConfigError``), since the lines the journal
        holds as done were done there, not here. A journal that cannot be trusted is
        refused too (``ConfigError``, see ``journal_check``), and never deleted. ``run``:
        the run's id, kept here from its start (``runid.kept``; ``run_id`` when given)."""
        self.path = path
        self._lock = lock(path.with_name(path.name + ".lock"), shown=self.shown)
        try:
            self._open(durable, resume, target, connect)
            self.run = runid.kept(self._writer, run_id)
        except sqlite3.DatabaseError as exc:
            self._lock.close()
            raise damaged(path, str(exc)) from None
        except BaseException:
            self._lock.close()
            raise
        self._queue: list[tuple[str, tuple[Any, ...], asyncio.Future[None] | None]] = []
        self._wake: asyncio.Event | None = None
        self._committer: asyncio.Task[None] | None = None
        self._committing = False
        # The run is marked unfinished with its first record, not at opening: a resume
        # refused before it sends anything leaves a finished run finished.
        self._marked_unfinished = False
        # Whether an earlier run left lines here: if not, nothing needs looking up.
        self._earlier = self._reader.execute("SELECT 1 FROM lines LIMIT 1").fetchone() is not None
        self.commits = 0
        # Set once a commit fails: nothing is committed after it (see _commit_loop).
        self.failure: str | None = None
        # Told of that failure once (the engine stops the run for it).
        self.on_failure: Callable[[str], None] | None = None

    def _open(self, durable: bool, resume: bool, target: str, connect: Connect) -> None:
        if not resume:
            journal_check.forget_finished(self.path, self.receipts)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="bulkpatch-journal")
        self._writer = self._connect(durable, connect)
        if resume:
            journal_check.check_integrity(self._writer, self.path)
        journal_check.refuse_old_format(self._writer, self.path)
        self._writer.executescript(_SCHEMA)
        journal_check.add_columns(self._writer)
        self._same_target(target)
        # Lookups come from the event loop's thread, on a connection of their own: WAL
        # lets them read while the writer thread commits.
        self._reader = sqlite3.connect(self.path, isolation_level=None)

    def _same_target(self, target: str) -> None:
        row = self._writer.execute("SELECT value FROM meta WHERE key = 'target'").fetchone()
        if row is not None and row[0] != target:
            raise ConfigError(
                f"{self.shown} records a run against {row[0]}; this one is against {target}: "
                "resume it with the same endpoint, dialect, organization and sandbox, or use "
                "other --receipts"
            )
        if row is None:
            self._writer.execute("INSERT INTO meta VALUES ('target', ?)", (target,))

    @property
    def shown(self) -> str:
        """The receipts file this journal belongs to, for messages."""
        return self.path.name.removesuffix(".journal")

    @property
    def receipts(self) -> Path:
        """The receipts file beside this journal."""
        return self.path.with_name(self.shown)

    def finished(self) -> None:
        """Record that every input line was read and has its outcome."""
        self._enqueue("finished", (), None)

    def _connect(self, durable: bool, connect: Connect) -> sqlite3.Connection:
        db = connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        # OFF: a commit is written to the OS, not fsync'd (survives a crash of this
        # process). FULL: fsync'd at every commit (survives a power loss).
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        return db

    # -- identity

    @staticmethod
    def identify(item: Job | BadLine) -> Identity:
        """The line's identity: its entity, its number and its digest."""
        key = entity_key(item) if isinstance(item, Job) else ""
        return (key, item.line, item_digest(item))

    def lookup(self, identity: Identity) -> str | Landed | Failed | Pending | None:
        """``DONE`` or ``DONE_FAILED`` (reported: skip it), ``Landed`` or ``Failed`` (report
        it), a ``Pending`` write to settle, or None (run it: never sent, or a mended line)."""
        if not self._earlier:
            return None
        row = self._reader.execute(
            "SELECT digest, state, reported, etag, pre, status, id, error FROM lines"
            " WHERE line = ?",
            identity[1:2],
        ).fetchone()
        if row is None or row[0] != identity[2]:
            return None  # check_input let it differ: it had no final outcome but `input`
        state, reported, etag, pre, status, entity_id, error = row[1:]
        if state == "landed":
            return DONE if reported else Landed(status, etag, entity_id or None)
        if state == "failed":
            return DONE_FAILED if reported else Failed(status, orjson.loads(error), entity_id or None)
        return Pending(etag, orjson.loads(pre) if pre is not None else None)

    def applied_after(self, identity: Identity) -> int | None:
        """The first later line of the same entity that an earlier run applied (or sent:
        it may have landed), if any: a job run now would take effect out of order."""
        if not self._earlier:
            return None
        row = self._reader.execute(
            "SELECT line FROM lines WHERE entity = ? AND line > ?"
            " AND state IN ('landed', 'intent') ORDER BY line LIMIT 1",
            identity[:2],
        ).fetchone()
        return None if row is None else int(row[0])

    async def check_input(
        self, items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine], shown: str
    ) -> None:
        """Refuse (ConfigError) an input in which a line that has an outcome or an intent is
        not the line it was; ``items`` in line order. Lines with no outcome, or an ``input``
        one, may differ or be new."""
        # A cursor, not a list: read as the input is, so a million lines cost no memory.
        rows = self._reader.execute(
            "SELECT line, digest, state FROM lines"
            " WHERE NOT (state = 'failed' AND kind = 'input') ORDER BY line"
        )
        try:
            row = rows.fetchone()
            async for item in _each(items):
                if row is None or row[0] < item.line:
                    break  # all checked; or the recorded line is blank now, or gone
                if row[0] == item.line:
                    if row[1] != item_digest(item):
                        raise ConfigError(_changed(row[0], row[2], shown))
                    row = rows.fetchone()
            if row is not None:
                raise ConfigError(_changed(row[0], row[2], shown))
        finally:
            rows.close()

    # -- writing

    async def intent(
        self, identity: Identity, job: Job, etag: int | None, pre: dict[str, Any] | None
    ) -> None:
        """Record that a write is about to be sent; returns once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        row = (
            identity[1],
            identity[2],
            identity[0],
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
        row = (line, identity[2], identity[0], entity_id or "", etag, status)
        self._enqueue("landed", row, None)

    def failed(
        self, identity: Identity, status: int | None, error: dict[str, Any], entity_id: str | None
    ) -> None:
        """Record that the job failed for good (not ``aborted``): a resume reports it, and
        never sends it again. Committed, like ``landed``, before the entity's next write."""
        row = (
            identity[1],
            identity[2],
            identity[0],
            entity_id or "",
            status,
            str(error.get("kind")),
            error_blob(error),
        )
        self._enqueue("failed", row, None)

    def done(self, reported: Iterable[tuple[Identity, int]]) -> None:
        """Mark lines reported: (identity, the ``seq`` of its outcome line) of final
        outcomes written to the receipts; committed with the next batch."""
        for identity, seq in reported:
            self._enqueue("done", (seq, *identity[1:]), None)

    def _enqueue(
        self, kind: str, row: tuple[Any, ...], future: asyncio.Future[None] | None
    ) -> None:
        if self.failure is not None:
            # Nothing is committed after a failed commit: what waits for it hears so now.
            if future is not None:
                future.set_exception(RecordError(self.failure))
            return
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
            self._committing = True
            try:
                await loop.run_in_executor(self._executor, self._write, batch)
            except Exception as exc:
                self._give_up(exc, batch)
                return
            finally:
                self._committing = False
            for _, _, future in batch:
                if future is not None and not future.done():
                    future.set_result(None)

    def _give_up(
        self, exc: Exception, batch: list[tuple[str, tuple[Any, ...], asyncio.Future[None] | None]]
    ) -> None:
        """A commit failed (a full disk, an I/O error, a value SQLite cannot hold): commit
        nothing more. Whoever waits for a commit gets ``RecordError``; the run is told once
        (``on_failure``), and stops: an intent that is not on record must not be sent."""
        self.failure = f"cannot write {self.path.name}: {_reason(exc)}"
        error = RecordError(self.failure)
        for _, _, future in [*batch, *self._queue]:
            if future is not None and not future.done():
                future.set_exception(error)
        self._queue = []
        if self.on_failure is not None:
            self.on_failure(self.failure)

    def _write(self, batch: list[tuple[str, tuple[Any, ...], asyncio.Future[None] | None]]) -> None:
        db = self._writer
        db.execute("BEGIN")
        try:
            if not self._marked_unfinished:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('finished', '0')")
            for kind, row, _ in batch:
                if kind == "finished":
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('finished', '1')")
                elif kind != "noop":
                    db.execute(_STATEMENTS[kind], row)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self._marked_unfinished = True
        self.commits += 1

    async def flush(self) -> None:
        """Wait until everything queued so far is committed; ``RecordError`` if a commit
        failed (what was queued is not on record)."""
        if self.failure is not None:
            raise RecordError(self.failure)
        # A batch being committed right now counts too: its records are not on disk yet.
        if self._queue or self._committing:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._enqueue("noop", (), future)
            await future

    async def reconcile(self, receipts: Path) -> tuple[int, int]:
        """Mark reported every line whose final outcome an earlier run wrote; mend a torn
        last line; refuse (``ConfigError``) receipts the journal does not account for.
        Returns (lines marked, the ``seq`` of the next outcome line).

        Between writing an outcome and marking it reported a crash can fall; the receipts
        file is the truth for what was reported (``journal_check.reconcile``).
        """
        await self.flush()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, journal_check.reconcile, self._writer, receipts, self.path
        )

    async def close(self) -> None:
        if self.failure is None:  # else the run was told, and stopped for it
            await self.flush()
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        self._executor.shutdown(wait=True)
        self._writer.close()
        self._reader.close()
        self._lock.close()


_STATEMENTS: Final = {
    # Each upsert replaces the line's row whole: a mended line is a new job.
    "intent": "INSERT INTO lines (line, digest, entity, state, id, etag, pre)"
    " VALUES (?, ?, ?, 'intent', ?, ?, ?)"
    " ON CONFLICT (line) DO UPDATE SET digest = excluded.digest, entity = excluded.entity,"
    " state = 'intent', reported = 0, id = excluded.id, etag = excluded.etag,"
    " pre = excluded.pre, status = NULL, kind = NULL, error = NULL",
    "landed": "INSERT INTO lines (line, digest, entity, state, id, etag, status)"
    " VALUES (?, ?, ?, 'landed', ?, ?, ?)"
    " ON CONFLICT (line) DO UPDATE SET digest = excluded.digest, entity = excluded.entity,"
    " state = 'landed', reported = 0, id = excluded.id, etag = excluded.etag,"
    " pre = NULL, status = excluded.status, kind = NULL, error = NULL",
    "failed": "INSERT INTO lines (line, digest, entity, state, id, status, kind, error)"
    " VALUES (?, ?, ?, 'failed', ?, ?, ?, ?)"
    " ON CONFLICT (line) DO UPDATE SET digest = excluded.digest, entity = excluded.entity,"
    " state = 'failed', reported = 0, id = excluded.id, etag = NULL, pre = NULL,"
    " status = excluded.status, kind = excluded.kind, error = excluded.error",
    "done": "UPDATE lines SET reported = 1, seq = ? WHERE line = ? AND digest = ?",
}


def _reason(exc: Exception) -> str:
    """Why a commit failed, in one line: the OS's or SQLite's words."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, sqlite3.Error):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


async def _each(
    items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine],
) -> AsyncIterable[Job | BadLine]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _changed(line: int, state: str, shown: str) -> str:
    return (
        f"line {line} of {shown} is not the line {line} the run being resumed "
        f"{_WAS.get(state, 'recorded')}: a line with an outcome cannot change, nor move "
        "(a line inserted or deleted above it); undo the change, or put new jobs in a file "
        "of their own"
    )
