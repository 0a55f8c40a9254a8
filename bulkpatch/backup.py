"""``run --backup PATH`` and ``bulkpatch rollback PATH``.

The backup file is NDJSON, appended to (across resumes too):

- ``{"before": KEY, "doc": {...}}``: the entity as read just before this run's first write
  to it, on disk (fsync'd with ``--durable``) before that write is sent;
- ``{"after": KEY, "etag": N, "fields": [...]}``: after each confirmed write, the etag it
  left the entity at and the top-level fields the job changed.

``KEY`` is ``{"entity", "type", "id"}``. For rollback the first ``before`` of an entity
wins (a resumed run may back an entity up again, mid-way) and the last ``after``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from bulkpatch import pointer
from bulkpatch.entities import ARCHIVE, DEFAULT_OFFER_TYPE, lane_type, server_managed, typed
from bulkpatch.errors import ConfigError, InputError
from bulkpatch.jobs import BadLine, Job, Restore

_OPTS = orjson.OPT_APPEND_NEWLINE


def _key(job: Job) -> dict[str, str]:
    return {"entity": job.entity, "type": job.type, "id": job.id}


def _job_type(key: dict[str, str]) -> str:
    """The type a job on a backed-up entity carries: its own for a typed kind; for the
    others, the default a job line would have given it."""
    if typed(key["entity"]):
        return key["type"]
    return DEFAULT_OFFER_TYPE


def changed_fields(patch: list[dict[str, Any]]) -> list[str]:
    """The top-level fields a patch changes (``test`` changes nothing)."""
    out: dict[str, None] = {}
    for op in patch:
        if op["op"] == "test":
            continue
        for member in ("path", "from") if op["op"] == "move" else ("path",):
            head = pointer.head(op[member])
            out[head] = None
    return list(out)


class Backup:
    """The backup file of one run."""

    def __init__(self, path: Path, *, durable: bool) -> None:
        try:
            self._file: BinaryIO = path.open("ab")
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
        self._durable = durable
        # Entities backed up by this process; bounded by the entities a run touches
        # (Adobe caps a sandbox at 10,000 offers).
        self._done: set[tuple[str, str, str]] = set()

    def needs(self, job: Job) -> bool:
        return job.key not in self._done

    def before(self, job: Job, doc: dict[str, Any]) -> None:
        """Record the entity as read; on disk before the caller sends its write."""
        self._file.write(orjson.dumps({"before": _key(job), "doc": doc}, option=_OPTS))
        self._file.flush()
        if self._durable:
            os.fsync(self._file.fileno())
        self._done.add(job.key)

    def after(self, job: Job, etag: int | None) -> None:
        """Record where this run's write left the entity (buffered: losing one only makes
        a rollback more careful, since the entity then looks changed by someone else)."""
        record = {"after": _key(job), "etag": etag, "fields": changed_fields(job.patch)}
        self._file.write(orjson.dumps(record, option=_OPTS))

    def created(self, job: Job, new_id: str) -> None:
        """A create confirmed: rollback deletes the entity (or archives it, ``ARCHIVE``)."""
        key = {"entity": job.entity, "type": job.type, "id": new_id}
        self._file.write(orjson.dumps({"after": key, "created": True}, option=_OPTS))
        self._file.flush()

    def deleted(self, job: Job) -> None:
        """A delete confirmed: rollback creates the entity again (with a new id)."""
        self._file.write(orjson.dumps({"after": _key(job), "deleted": True}, option=_OPTS))
        self._file.flush()

    def close(self) -> None:
        # A backup that could not be written has already stopped the run (no write goes
        # out without its record); closing it must not raise the same error again.
        with contextlib.suppress(OSError):
            self._file.flush()
        with contextlib.suppress(OSError):
            self._file.close()


@dataclass
class _Entity:
    line: int
    key: dict[str, str]
    doc: dict[str, Any]
    etag: int | None = None
    fields: dict[str, None] = field(default_factory=dict)
    confirmed: bool = False
    created: bool = False  # by the run: rollback deletes (or archives) it
    deleted: bool = False  # by the run: rollback creates it again


def rollback_jobs(path: Path, *, force: bool = False) -> list[Job | BadLine]:
    """The jobs that put every entity in a backup back as the run found it, in the
    order of the backup's lines; a line that is not a backup record is a ``BadLine``.

    An entity with a confirmed write is restored on the fields that run changed, if it is
    still at the etag the run left it at. One whose writes were never confirmed is
    expected at the etag it had before, on all its fields. ``force`` drops the etag check.
    Raises ``ConfigError`` when the file cannot be read.
    """
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    entities: dict[tuple[str, str, str], _Entity] = {}
    items: list[Job | BadLine] = []
    for number, raw in enumerate(raw_lines, 1):
        if raw.strip():
            bad = _read_record(raw, number, entities)
            if bad is not None:
                items.append(bad)
    items.extend(_undo_job(entity, force=force) for entity in entities.values())
    items.sort(key=lambda item: item.line)
    return items


def _read_record(
    raw: bytes, number: int, entities: dict[tuple[str, str, str], _Entity]
) -> BadLine | None:
    """Fold one backup line into ``entities``; a ``BadLine`` when it is not a record."""
    try:
        record = orjson.loads(raw)
        kind = "before" if "before" in record else "after"
        k = record[kind]
        key = (k["entity"], lane_type(k["entity"], k["type"]), k["id"])
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        error = InputError(f"not a backup record ({exc})", line=number)
        return BadLine(number, error, raw[:4096], len(raw))
    entity = entities.get(key)
    if kind == "before":
        # The first "before" of an entity is how the run found it.
        if entity is None and isinstance(record.get("doc"), dict):
            entities[key] = _Entity(number, k, record["doc"])
    elif record.get("created") is True:
        entities.setdefault(key, _Entity(number, k, {}, created=True))
    elif entity is not None and record.get("deleted") is True:
        entity.deleted = True
    elif entity is not None:
        entity.etag = record.get("etag")
        entity.confirmed = True
        entity.fields.update(dict.fromkeys(record.get("fields") or ()))
    return None


def _undo_job(entity: _Entity, *, force: bool) -> Job:
    """Delete what the run created (archive it, for a kind the API cannot delete), create
    again what it deleted, restore the rest."""
    doc = entity.doc
    kind = entity.key["entity"]
    offer_type = _job_type(entity.key)
    if entity.created and kind in ARCHIVE:
        # No delete in the API (an exd-placement): archived instead, whatever was written
        # to it since (as a delete would be).
        member, value = ARCHIVE[kind]
        archived = Restore({member: value}, None, (member,), archive=True)
        return Job(entity.line, entity.key["id"], [], kind, offer_type, restore=archived)
    if entity.created:
        return Job(entity.line, entity.key["id"], [], kind, offer_type, delete=True)
    if entity.deleted:
        again = {f: v for f, v in doc.items() if not server_managed(f)}
        return Job(entity.line, "", [], kind, offer_type, create=again)
    if entity.confirmed:
        etag, fields = entity.etag, tuple(entity.fields)
    else:
        etag = doc.get("etag") if isinstance(doc.get("etag"), int) else None
        fields = tuple(f for f in doc if not server_managed(f))
    return Job(
        line=entity.line,
        id=entity.key["id"],
        patch=[],
        entity=kind,
        type=offer_type,
        restore=Restore(doc, None if force else etag, fields),
    )
