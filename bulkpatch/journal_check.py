"""Whether a journal can be trusted: it opens, it is intact, and it knows every line the
receipts list as done. A journal that fails any of these is refused, never repaired and
never deleted: it alone says which writes were sent, so a guess could apply a job twice.

What is refused (``ConfigError``, exit 2, before any request), and why:

- a file SQLite cannot open (``file is not a database``), or one whose ``PRAGMA
  integrity_check`` is not ``ok`` (https://sqlite.org/pragma.html#pragma_integrity_check):
  its rows cannot be believed;
- receipts that list a line as done (ok, or failed for good) with a sequence number
  (``seq``) the journal never recorded, nor holds the outcome of: the journal lost
  commits (its ``-wal`` file cut short or deleted, https://sqlite.org/wal.html), so lines
  it shows as unsent may have been sent;
- a journal that records a reported line with a higher ``seq`` than the receipts hold:
  the receipts lost lines, whose outcomes a resume would never report again.

The run keeps the order that makes these checks exact: a line's final state is
committed in the journal before its outcome line is written to the receipts, and the
line is marked reported (with its ``seq``) only after.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from bulkpatch.errors import ConfigError

# The columns a journal written before them lacks (added in place when it is opened).
_ADDED_COLUMNS: Final = {"seq": "INTEGER"}


def damaged(path: Path, detail: str) -> ConfigError:
    """The refusal of a journal that cannot be trusted."""
    return ConfigError(
        f"{path.name} is damaged ({detail}): it cannot say which jobs were sent, so the run is "
        f"not started; keep it for inspection and move it away to start over (jobs it sent "
        f"may then run twice)"
    )


def error_blob(error: dict[str, Any] | None) -> bytes:
    """How an outcome's ``error`` is stored, to compare with a receipts line's."""
    return orjson.dumps(error, option=orjson.OPT_SORT_KEYS)


def check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a journal whose ``PRAGMA integrity_check`` finds anything wrong."""
    rows = db.execute("PRAGMA integrity_check(1)").fetchall()
    if rows != [("ok",)]:
        raise damaged(path, f"integrity check: {rows[0][0] if rows else 'no answer'}")


def refuse_old_format(db: sqlite3.Connection, path: Path) -> None:
    """A journal that keyed jobs by their occurrence per entity cannot be read by line."""
    old = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone()
    if old is not None:
        raise ConfigError(
            f"{path.name} was written by an earlier bulkpatch: finish that run with it, "
            f"or delete {path.name} to start over (jobs it sent may then run twice)"
        )


def add_columns(db: sqlite3.Connection) -> None:
    """Give a journal written before a column was added that column (empty)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(lines)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in have:
            db.execute(f"ALTER TABLE lines ADD COLUMN {name} {kind}")


def forget_finished(path: Path, receipts: Path) -> None:
    """Before a fresh start: delete the journal of a finished earlier run; refuse one that
    stopped half-way, one that cannot be read, and one that records nothing while the
    receipts list lines as done (its records were lost)."""
    if not path.exists():
        return
    try:
        finished, has_lines = _state(path)
    except sqlite3.DatabaseError as exc:
        raise damaged(path, str(exc)) from None
    if finished == "0" or (finished is None and has_lines):
        raise ConfigError(
            f"an earlier run writing {receipts.name} did not finish: continue it with --resume, "
            f"or delete {path.name} to start over (jobs it sent may then run twice)"
        )
    if finished is None and _lists_done(receipts):
        raise damaged(path, f"it records none of the lines {receipts.name} lists as done")
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def finished_mark(path: Path) -> str | None:
    """The journal's ``finished`` mark ("1" finished, "0" not), None without one (or
    without a readable journal: opening it says why)."""
    try:
        return _state(path)[0] if path.exists() else None
    except sqlite3.DatabaseError:
        return None


def refuse_overwrite(receipts: Path, journal: Path) -> None:
    """Before a fresh start into ``receipts``: ``ConfigError`` when they hold a finished
    run's outcomes (a second run would truncate them and send every write again). One
    that did not finish, or is running, is left to the journal's lock and
    ``forget_finished``, with their own advice."""
    if journal.exists() and finished_mark(journal) != "1":
        return
    if _lists_done(receipts):
        raise ConfigError(
            f"{receipts} holds the outcomes of a finished run: pass --overwrite to replace "
            "them, --resume to go on with that run, or other --receipts"
        )


def _state(path: Path) -> tuple[str | None, bool]:
    """(the ``finished`` mark or None, whether any line is recorded)."""
    db = sqlite3.connect(path)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finished = None
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key = 'finished'").fetchone()
            finished = None if row is None else str(row[0])
        has_lines = "lines" in tables and db.execute("SELECT 1 FROM lines LIMIT 1").fetchone() is not None
        return finished, has_lines
    finally:
        db.close()


def _lists_done(receipts: Path) -> bool:
    """Whether the receipts hold any final outcome line."""
    try:
        with receipts.open("rb") as f:
            return any(_final(raw) is not None for raw in f)
    except OSError:
        return False


def _final(raw: bytes) -> dict[str, Any] | None:
    """A receipts line that is a final outcome (ok, or failed but not aborted), parsed."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("line"), int):
        return None
    if record.get("ok") is True:
        return record
    error = record.get("error")
    if isinstance(error, dict) and error.get("kind") != "aborted":
        return record
    return None


def reconcile(db: sqlite3.Connection, receipts: Path, journal: Path) -> tuple[int, int]:
    """Mark reported every line whose final outcome the receipts hold; mend a torn last
    line; refuse (``damaged``) receipts and journal that disagree (see the module).
    Returns (lines marked, the next ``seq``). One transaction: a refusal changes nothing."""
    if not receipts.exists():
        return 0, _next_seq(db, 0, journal, receipts)
    truncate_torn_tail(receipts)
    marked = last_seq = 0
    db.execute("BEGIN")
    try:
        with receipts.open("rb") as f:
            for raw in f:
                record = _final(raw)
                seq = record.get("seq") if record is not None else None
                if isinstance(seq, int):
                    last_seq = max(last_seq, seq)
                if record is not None:
                    marked += _mark_reported(db, record, journal, receipts)
        next_seq = _next_seq(db, last_seq, journal, receipts)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return marked, next_seq


def _next_seq(db: sqlite3.Connection, last_seq: int, journal: Path, receipts: Path) -> int:
    """The ``seq`` after the receipts' last; refused if the journal recorded a later one."""
    recorded = db.execute("SELECT MAX(seq) FROM lines").fetchone()[0]
    if recorded is not None and recorded > last_seq:
        raise ConfigError(
            f"{journal.name} records outcome lines up to seq {recorded} as written, but "
            f"{receipts.name} ends at seq {last_seq}: lines were lost from {receipts.name}; "
            "restore it, or move both away to start over (jobs it sent may then run twice)"
        )
    return last_seq + 1


def _mark_reported(db: sqlite3.Connection, record: dict[str, Any], journal: Path, receipts: Path) -> int:
    """Mark the line of one final receipts line reported, if it is the line's recorded
    final outcome (a receipt from before a bad line was mended is not the mended job's).
    A line with a ``seq`` the journal neither recorded nor holds the outcome of is
    refused: the journal lost it."""
    line, seq = record["line"], record.get("seq")
    if record.get("ok") is True:
        cursor = db.execute(
            "UPDATE lines SET reported = 1, seq = coalesce(?, seq) WHERE line = ? AND state = 'landed'"
            " AND (seq IS NULL OR ? IS NULL OR seq <= ?)",
            (seq, line, seq, seq),
        )
    else:
        cursor = db.execute(
            "UPDATE lines SET reported = 1, seq = coalesce(?, seq) WHERE line = ? AND state = 'failed'"
            " AND error = ? AND (seq IS NULL OR ? IS NULL OR seq <= ?)",
            (seq, line, error_blob(record["error"]), seq, seq),
        )
    if cursor.rowcount > 0:
        return 1
    if isinstance(seq, int):
        known = db.execute("SELECT seq FROM lines WHERE line = ?", (line,)).fetchone()
        if known is None or known[0] is None or known[0] < seq:
            raise damaged(
                journal,
                f"{receipts.name} lists line {line} as done (seq {seq}) and the journal does not "
                "record it: records were lost, its -wal file cut short or deleted",
            )
    return 0


def truncate_torn_tail(path: Path) -> None:
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


def lock_receipts(journal: Path) -> BinaryIO:
    """The lock a run holds on its receipts (beside ``journal``), for a run that keeps no
    journal (a dry run, a plan); raises ``ConfigError`` when another run holds it."""
    return lock(journal.with_name(journal.name + ".lock"), shown=journal.name.removesuffix(".journal"))


def lock(path: Path, *, shown: str) -> BinaryIO:
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
