"""Where outcomes go: the outcome stream (stdout or ``--receipts``) and the failure log.

Lines are serialised with orjson and written in batches: a run of 100,000 jobs makes a
few hundred writes, not 100,000. The caller flushes whenever no further outcome is
waiting, so a slow run still shows each outcome as it happens.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, BinaryIO, Final

import orjson

from bulkpatch.journal import Identity, Journal
from bulkpatch.outcomes import Outcome

FLUSH_BYTES: Final = 64 * 1024
_OPTS: Final = orjson.OPT_APPEND_NEWLINE


class LineWriter:
    """Buffered NDJSON lines to a binary stream."""

    def __init__(self, stream: BinaryIO, *, close: bool = False) -> None:
        self._stream = stream
        self._close = close
        self._buffer: list[bytes] = []
        self._size = 0
        self._unsynced = False

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record, option=_OPTS)
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._stream.write(b"".join(self._buffer))
            self._buffer.clear()
            self._size = 0
            self._unsynced = True
        self._stream.flush()

    def sync(self) -> None:
        """Flush, then ask the OS to put the lines on disk (``--durable``)."""
        self.flush()
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


class Recorder:
    """Writes each outcome, the failure log, and marks lines reported in the journal.

    A line is marked reported only after its final outcome has left this process (and,
    with ``durable``, reached the disk): the journal never claims more than the receipts
    show.
    """

    def __init__(
        self,
        receipts: LineWriter,
        failures: LineWriter | None = None,
        journal: Journal | None = None,
        *,
        durable: bool = False,
    ) -> None:
        self._receipts = receipts
        self._failures = failures
        self._journal = journal
        self._durable = durable
        self._done: list[Identity] = []

    def record(self, outcome: Outcome) -> None:
        self._receipts.write(outcome.to_dict())
        if not outcome.ok and self._failures is not None:
            self._failures.write(failure_record(outcome))
        # Final outcomes only: an aborted job runs again on resume.
        if (
            self._journal is not None
            and outcome.identity is not None
            and (outcome.ok or outcome.kind != "aborted")
        ):
            self._done.append(outcome.identity)

    def flush(self) -> None:
        if self._durable:
            self._receipts.sync()
        else:
            self._receipts.flush()
        if self._failures is not None:
            self._failures.flush()
        if self._journal is not None and self._done:
            self._journal.done(self._done)
            self._done = []

    def close(self) -> None:
        self.flush()
        self._receipts.close()
        if self._failures is not None:
            self._failures.close()


def failure_record(outcome: Outcome) -> dict[str, Any]:
    """A failed outcome as a failure-log line: a job line to re-run, or a line to mend.

    A failed job keeps its own keys plus ``line`` and ``error`` (which the reader ignores),
    so ``bulkpatch run failures.ndjson`` runs exactly the failed jobs again. A line that
    was not a job is kept as ``raw`` for a person to fix.
    """
    assert outcome.error is not None
    if outcome.kind == "input":
        return {"line": outcome.line, "error": outcome.error, "raw": outcome.job}
    record: dict[str, Any] = dict(outcome.job) if isinstance(outcome.job, dict) else {}
    record["line"] = outcome.line
    record["error"] = outcome.error
    return record
