"""Entities as list pages showed them, held on disk until their jobs take them.

A ``Snapshot`` is two tables in SQLite: in the run's journal when it keeps one (beside
the journal's own, on a connection of its own: WAL lets both write), else in a
temporary file removed at close. Never in memory: 10,000 offers of 1 KB are 10 MB on
disk and a page cache of SQLite's default size on the heap.

- ``snapshot``: the entity (its lane key, ``entity \\x1f type \\x1f id``) and its
  document as listed, etag included. A job takes it once (``take``): after this run's
  first write the entity is no longer as listed, so a later job of it reads it again.
- ``snapshot_keys``: each listed entity's create key (its JSON), to find a create's
  entity without a look-up; matched exactly, case included, as the list API's
  ``property`` filter matches ``==`` (API notes §1).
- ``snapshot_written``: entities this run wrote while their collection was being
  listed: a page read before such a write shows the entity as it no longer is, so its
  entry is not kept. (An entry listed before a write of this run is dropped at the
  write: a later job of the entity reads it afresh.)

Both are emptied when opened (an earlier run's entries are stale) and at close.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import orjson

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS snapshot (entity TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot_keys (collection TEXT NOT NULL, key BLOB NOT NULL, id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS snapshot_keys_key ON snapshot_keys (collection, key);
CREATE TABLE IF NOT EXISTS snapshot_written (entity TEXT PRIMARY KEY);
DELETE FROM snapshot;
DELETE FROM snapshot_keys;
DELETE FROM snapshot_written;
"""

# One listed entity: (lane key, document as JSON, create key as JSON or None, id).
Row = tuple[str, bytes, bytes | None, str]


class Snapshot:
    """The listed entities of one run (module docstring). ``path``: the journal's file,
    or None for a temporary one."""

    def __init__(self, path: Path | None) -> None:
        self._temporary: Path | None = None
        if path is None:
            handle, name = tempfile.mkstemp(prefix="bulkpatch-snapshot-", suffix=".sqlite")
            os.close(handle)
            path = self._temporary = Path(name)
        # A journal's writer may hold the database for a commit: wait for it.
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        if self._temporary is not None:
            # Nothing here needs to survive a crash: the next run lists again.
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        self.stored = 0

    def put(self, collection: str, rows: Iterable[Row]) -> None:
        """Keep one page's entities (``collection``: the lane key's entity and type)."""
        db = self._db
        db.execute("BEGIN")
        try:
            for key, doc, create_key, entity_id in rows:
                db.execute(
                    "INSERT OR REPLACE INTO snapshot SELECT ?, ?"
                    " WHERE NOT EXISTS (SELECT 1 FROM snapshot_written WHERE entity = ?)",
                    (key, doc, key),
                )
                if create_key is not None:
                    db.execute(
                        "INSERT INTO snapshot_keys VALUES (?, ?, ?)",
                        (collection, create_key, entity_id),
                    )
                self.stored += 1
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def take(self, key: str, *, keep: bool = False) -> dict[str, Any] | None:
        """The entity as listed, once (a second ``take`` of it is None) unless ``keep``
        (a plan writes nothing: the entity stays as listed)."""
        row = self._db.execute("SELECT doc FROM snapshot WHERE entity = ?", (key,)).fetchone()
        if row is None:
            return None
        if not keep:
            self._db.execute("DELETE FROM snapshot WHERE entity = ?", (key,))
        doc: dict[str, Any] = orjson.loads(row[0])
        return doc

    def written(self, key: str, *, listing: bool) -> None:
        """This run is writing the entity: its entry, if any, is no longer the entity
        as it is; while ``listing``, a page read before the write must not bring it
        back either."""
        self._db.execute("DELETE FROM snapshot WHERE entity = ?", (key,))
        if listing:
            self._db.execute("INSERT OR IGNORE INTO snapshot_written VALUES (?)", (key,))

    def find(self, collection: str, value: Any) -> list[str]:
        """Ids of the listed entities of ``collection`` whose create key is ``value``."""
        rows = self._db.execute(
            "SELECT id FROM snapshot_keys WHERE collection = ? AND key = ? LIMIT 2",
            (collection, orjson.dumps(value)),
        ).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.executescript(
                "DELETE FROM snapshot; DELETE FROM snapshot_keys; DELETE FROM snapshot_written;"
            )
        self._db.close()
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
