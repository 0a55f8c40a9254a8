"""Where outcomes go: the outcome stream (stdout or ``--receipts``) and the failure log.

Lines are serialised with orjson and written in batches: a run of 100,000 jobs makes a
few hundred writes, not 100,000. The caller flushes whenever no further outcome is
waiting, so a slow run still shows each outcome as it happens.

Each outcome line gets its ``seq`` here, in the order lines are written. With a journal,
a batch of lines is written only once the journal has committed their final states, and
the lines are marked reported (with their ``seq``) only after: so the receipts never
list as done a line the journal does not hold, and a resume can tell damage from a crash
(``journal_check``). A file that cannot be written (a full disk, an I/O error) raises
``RecordError`` naming it; nothing is written to the outputs after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from bulkpatch.errors import RecordError
from bulkpatch.journal import Identity, Journal
from bulkpatch.outcomes import Outcome

FLUSH_BYTES: Final = 64 * 1024
_OPTS: Final = orjson.OPT_APPEND_NEWLINE

# How an output file is opened: (path, append) -> a binary stream. Tests give another,
# to make the Nth write fail as a full disk would.
Opener = Callable[[Path, bool], BinaryIO]


def open_file(path: Path, append: bool) -> BinaryIO:
    """An output file, unbuffered: ``LineWriter`` batches, so a failed write leaves no
    bytes behind in a buffer to turn up later."""
    return path.open("ab" if append else "wb", buffering=0)


class LineWriter:
    """Buffered NDJSON lines to a binary stream.

    ``hold``: never write on its own when the buffer fills (the caller flushes, after
    whatever must come first). ``name``: the file, for messages.
    """

    def __init__(
        self, stream: BinaryIO, *, close: bool = False, hold: bool = False, name: str = "stdout"
    ) -> None:
        self._stream = stream
        self._close = close
        self._hold = hold
        self.name = name
        self._buffer: list[bytes] = []
        self._size = 0
        self._unsynced = False

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record, option=_OPTS)
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES and not self._hold:
            self.flush()

    @property
    def pending(self) -> int:
        """Lines written to the buffer and not yet to the stream."""
        return len(self._buffer)

    @property
    def due(self) -> bool:
        """Whether the buffer holds a batch's worth."""
        return self._size >= FLUSH_BYTES

    def flush(self, count: int | None = None) -> None:
        """Write the first ``count`` buffered lines (all by default); ``RecordError`` if
        the stream refuses them (``BrokenPipeError`` is let through: a reader gone)."""
        lines = self._buffer if count is None else self._buffer[:count]
        if lines:
            data = b"".join(lines)
            del self._buffer[: len(lines)]
            self._size -= len(data)
            self._write_all(data)
            self._unsynced = True
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise RecordError(f"cannot write {self.name}: {exc.strerror or exc}") from None

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                # An unbuffered file may take part of it (a disk filling up): the rest is
                # written again, and the next write raises.
                written = self._stream.write(view)
                view = view[written if written is not None else 0 :]
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise RecordError(f"cannot write {self.name}: {exc.strerror or exc}") from None

    def drop(self) -> None:
        """Forget the buffered lines (they must not be written)."""
        self._buffer.clear()
        self._size = 0

    def sync(self, count: int | None = None) -> None:
        """Flush, then ask the OS to put the lines on disk (``--durable``)."""
        self.flush(count)
        if not self._unsynced:
            return
        self._unsynced = False
        # A pipe or a terminal has nothing to sync.
        with contextlib.suppress(OSError, ValueError):
            os.fsync(self._stream.fileno())

    def close(self) -> None:
        self.flush()
        if self._close:
            self._stream.close()

    def abandon(self) -> None:
        """Close without writing what is buffered (after a failure)."""
        self.drop()
        if self._close:
            with contextlib.suppress(OSError):
                self._stream.close()


class Recorder:
    """Writes each outcome, the failure log, and marks lines reported in the journal.

    A line is marked reported only after its final outcome has left this process (and,
    with ``durable``, reached the disk): the journal never claims more than the receipts
    show. ``seq``: the number of the first outcome line (a resumed run goes on from the
    receipts' last). ``run``: the run's id, given to every line.
    """

    def __init__(
        self,
        receipts: LineWriter,
        failures: LineWriter | None = None,
        journal: Journal | None = None,
        *,
        durable: bool = False,
        seq: int = 1,
        run: str | None = None,
    ) -> None:
        self._receipts = receipts
        self._run = run
        self._failures = failures
        self._journal = journal
        self._durable = durable
        self._seq = seq
        self._done: list[tuple[Identity, int]] = []
        self._lock = asyncio.Lock()
        # Set once an output or the journal failed: nothing more is written.
        self.failed = False

    def record(self, outcome: Outcome) -> None:
        outcome.seq = self._seq
        outcome.run = self._run
        self._seq += 1
        self._receipts.write(outcome.to_dict())
        if not outcome.ok and self._failures is not None:
            self._failures.write(failure_record(outcome))
        # Final outcomes only: an aborted job runs again on resume.
        if (
            self._journal is not None
            and outcome.identity is not None
            and (outcome.ok or outcome.kind != "aborted")
        ):
            self._done.append((outcome.identity, outcome.seq))

    @property
    def due(self) -> bool:
        """Whether a batch's worth of lines waits to be written."""
        return self._receipts.due or (self._failures is not None and self._failures.due)

    async def flush(self) -> None:
        """Write the lines recorded so far, once the journal holds their final states;
        then mark them reported. ``RecordError`` when the journal or a file fails: the
        lines not yet written are dropped (a resume reports them from the journal)."""
        async with self._lock:
            if self.failed:
                return
            counts = (self._receipts.pending, None if self._failures is None else self._failures.pending)
            done, self._done = self._done, []
            try:
                if self._journal is not None:
                    await self._journal.flush()
                self._write(*counts)
            except RecordError:
                self._give_up()
                raise
            if self._journal is not None and done:
                self._journal.done(done)

    def _write(self, receipts: int, failures: int | None) -> None:
        if self._durable:
            self._receipts.sync(receipts)
        else:
            self._receipts.flush(receipts)
        if self._failures is not None:
            self._failures.flush(failures)

    def _give_up(self) -> None:
        self.failed = True
        self._done = []
        self._receipts.drop()
        if self._failures is not None:
            self._failures.drop()

    def close(self) -> None:
        """Close the files; lines not flushed by now are not written."""
        self._receipts.abandon()
        if self._failures is not None:
            self._failures.abandon()


def failure_record(outcome: Outcome) -> dict[str, Any]:
    """A failed outcome as a failure-log line: a job line to re-run, or a line to mend.

    A failed job keeps its own keys plus ``line`` and ``error`` (which the reader ignores),
    so ``bulkpatch run failures.ndjson`` runs exactly the failed jobs again. A line that
    was not a job is kept as ``raw`` for a person to fix. ``line`` is the line of the
    first run (``source_line`` when this run was itself a failure log's re-run), so a
    failure re-run again and again still names the line it came from.
    """
    assert outcome.error is not None
    line = outcome.line if outcome.source_line is None else outcome.source_line
    if outcome.kind == "input":
        return {"line": line, "error": outcome.error, "raw": outcome.job}
    record: dict[str, Any] = dict(outcome.job) if isinstance(outcome.job, dict) else {}
    record["line"] = line
    record["error"] = outcome.error
    return record
