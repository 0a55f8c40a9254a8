"""Jobs and outcomes: parsing and validating one input line, and what a job ended as.

Pure functions, no I/O. A line is a JSON object::

    {"id": "personalizedOffer1234", "patch": [{"op": "replace", "path": "/name", "value": "x"}]}

with optional ``type`` (personalized | fallback), ``entity`` (offers, placements, ...),
``etag`` (pin: sent as If-Match, never rebased) and ``ref`` (echoed). The keys ``line``,
``error`` and any key starting with ``_`` are ignored, so a failure log is valid input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import jsonpatch
import jsonpointer
import orjson

from bulkpatch import entities, exactjson, verify
from bulkpatch import pointer as json_pointer
from bulkpatch.entities import lane_type  # bound once: asked for every job built
from bulkpatch.errors import InputError

# The kinds and types a line may name are the registry's (``bulkpatch.entities``); named
# here too for the modules that read them from jobs.
ENTITIES: Final = entities.ENTITIES
OFFER_TYPES: Final = entities.OFFER_TYPES
OPS: Final = frozenset({"add", "remove", "replace", "move", "copy", "test"})
_KNOWN_KEYS: Final = frozenset(
    {"id", "patch", "create", "delete", "restore", "type", "entity", "etag", "ref", "line", "error"}
)
RAW_CUT: Final = 64 * 1024  # how much of a bad line an outcome carries
# Offer Library ids are short; an id of kilobytes is a mistake, and once percent-encoded
# it would pass the request-line limits of servers and proxies.
MAX_ID: Final = 512
# An etag is kept as a signed 64-bit integer (the journal's SQLite among others).
MAX_ETAG: Final = 2**63 - 1
# A plain patch job's keys (with what a failure log adds): nothing more to look at.
_PATCH_KEYS: Final = frozenset({"id", "patch", "type", "entity", "etag", "ref", "line", "error"})
_ID_AND_PATCH: Final = frozenset({"id", "patch"})
_BOM: Final = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Restore:
    """What a rollback puts back: the entity as a run first read it, for the fields the
    run changed, provided the entity is still at the etag that run left it at."""

    doc: dict[str, Any]
    etag: int | None  # None: the run's last etag is unknown; restore regardless
    fields: tuple[str, ...]
    # Archives an entity the run created, of a kind that cannot be deleted
    # (``entities.ARCHIVE``): ``doc`` holds the archived state; the outcome says "archived".
    archive: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = {"doc": self.doc, "etag": self.etag, "fields": list(self.fields)}
        if self.archive:
            out["archive"] = True
        return out


@dataclass(slots=True)
class Job:
    """One validated job. ``line`` is the 1-based physical line it came from.

    Nothing changes a job once parsed (``dataclasses.replace`` makes a new one), but it
    is not a frozen dataclass: one is built per input line, and a frozen one costs five
    times as much to build.
    """

    line: int
    id: str
    patch: list[dict[str, Any]]
    entity: str = entities.DEFAULT_ENTITY
    type: str = entities.DEFAULT_OFFER_TYPE
    etag: int | None = None
    ref: Any = None
    has_ref: bool = False
    restore: Restore | None = None  # a rollback job: its patch is computed when it runs
    create: dict[str, Any] | None = None  # a create job: POST this entity (id: the server's)
    delete: bool = False  # a delete job
    # A failure log's line re-run: the line of the earlier run it came from (its ``line``).
    source_line: int | None = None
    # The entity this job writes: jobs with one key run one at a time, in order. Kept,
    # not computed, since the engine asks for it several times per job.
    key: tuple[str, str, str] = field(init=False, repr=False, compare=False)
    # Whether the patch is idempotent and needs no pre-image (``verify.idempotent``),
    # when known: parsing finds it once per patch shape. None: ask ``verify``.
    idempotent: bool | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.id
        if self.create is not None:
            # A new entity has no id yet: its lane is its content's, so one create is never
            # held behind another, and a resumed run finds it under the same key.
            digest = hashlib.blake2b(orjson.dumps(self.create, option=orjson.OPT_SORT_KEYS), digest_size=12)
            name = "\x00create:" + digest.hexdigest()
        self.key = (self.entity, lane_type(self.entity, self.type), name)

    @property
    def action(self) -> str:
        """``patch``, ``create``, ``delete`` or ``restore``."""
        if self.create is not None:
            return "create"
        if self.delete:
            return "delete"
        return "restore" if self.restore is not None else "patch"

    def as_line(self) -> dict[str, Any]:
        """The job as an input line, so a failed job can be run again as it was."""
        out: dict[str, Any] = {} if self.create is not None else {"id": self.id}
        if self.restore is not None:
            out["restore"] = self.restore.as_dict()
        elif self.create is not None:
            out["create"] = self.create
        elif self.delete:
            out["delete"] = True
        else:
            out["patch"] = self.patch
        # Defaults are left out, so a failure log reads like the line that was written.
        if self.entity != entities.DEFAULT_ENTITY:
            out["entity"] = self.entity
        if entities.typed(self.entity) and self.type != entities.DEFAULT_OFFER_TYPE:
            out["type"] = self.type
        if self.etag is not None:
            out["etag"] = self.etag
        if self.has_ref:
            out["ref"] = self.ref
        return out


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a valid job, kept for its outcome and the failure log."""

    line: int
    error: InputError
    raw: bytes  # at most RAW_CUT bytes of the line
    size: int  # the line's full length in bytes
    id: str | None = None
    source_line: int | None = None  # a failure log's record: the earlier run's line

    def raw_text(self) -> str:
        return self.raw.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- validation


def _check_pointer(value: Any, *, index: int, member: str, line: int, syntax: bool) -> str:
    """A pointer member's type and the rules jsonpatch leaves open; with ``syntax``, also
    its RFC 6901 syntax (jsonpatch checks ``path`` itself, but not ``from``)."""
    if not isinstance(value, str):
        raise InputError(
            f"operation {index}: '{member}' must be a string", line=line, field="patch"
        )
    if syntax:
        try:
            jsonpointer.JsonPointer(value)
        except jsonpointer.JsonPointerException as exc:
            raise InputError(
                f"operation {index}: '{member}' {value!r} is not a JSON pointer: {exc}",
                line=line,
                field="patch",
            ) from None
    # RFC 6901's "-" names the element after the end of an array: it can only be the
    # last token (and only `add`, `move` and `copy` can target it).
    if "/-/" in value:
        raise InputError(
            f"operation {index}: '{member}' {value!r} has '-' before its last token",
            line=line,
            field="patch",
        )
    return value


def _touches_read_only(pointer: str) -> bool:
    if pointer == "":
        return True
    return entities.server_managed(json_pointer.head(pointer))


# Shapes of patches already found valid, with whether such a patch is idempotent (``verify.idempotent``).
# Both depend only on its shape (each op's name, pointers, and whether it has a value),
# and a bulk run repeats a few shapes with new values: jsonpatch's check and the verdict
# then run once per shape, not per job.
_VALID_SHAPES: dict[tuple[Any, ...], bool] = {}
_MAX_SHAPES: Final = 4096


def _shape(patch: list[Any]) -> tuple[Any, ...] | None:
    """What a patch's validity depends on; None if it is not even shaped like a patch."""
    if len(patch) == 1 and type(op := patch[0]) is dict:  # the usual patch: one operation
        return ((op.get("op"), op.get("path"), op.get("from"), "value" in op),)
    shape = []
    for op in patch:
        if type(op) is not dict:
            return None  # the full check says why
        shape.append((op.get("op"), op.get("path"), op.get("from"), "value" in op))
    return tuple(shape)


def validate_patch(patch: Any, *, line: int) -> list[dict[str, Any]]:
    """Check an RFC 6902 patch before it is sent; the error names the operation's index."""
    _validated(patch, line)
    return patch  # type: ignore[no-any-return]


def _validated(patch: Any, line: int) -> bool:
    """Check a patch (as ``validate_patch``); whether it is idempotent (``verify``)."""
    if not isinstance(patch, list):
        raise InputError("must be an array of operations", line=line, field="patch")
    if not patch:
        raise InputError("must not be empty", line=line, field="patch")
    shape = _shape(patch)
    try:
        verdict = None if shape is None else _VALID_SHAPES.get(shape)
    except TypeError:
        shape = verdict = None  # a pointer that is not a string: the full check says why
    if verdict is not None:
        return verdict
    _check_patch(patch, line)
    verdict = verify.idempotent(patch)
    if shape is not None:
        if len(_VALID_SHAPES) >= _MAX_SHAPES:
            _VALID_SHAPES.clear()
        _VALID_SHAPES[shape] = verdict
    return verdict


def _check_patch(patch: list[Any], line: int) -> None:
    for index, op in enumerate(patch):
        if not isinstance(op, dict):
            raise InputError(f"operation {index} is not an object", line=line, field="patch")
        name = op.get("op")
        if name not in OPS:
            raise InputError(
                f"operation {index}: unknown op {name!r} (expected one of {', '.join(sorted(OPS))})",
                line=line,
                field="patch",
            )
        path = _check_pointer(op.get("path"), index=index, member="path", line=line, syntax=False)
        if name in ("add", "replace", "test") and "value" not in op:
            raise InputError(f"operation {index}: {name} needs a 'value'", line=line, field="patch")
        if name != "test" and _touches_read_only(path):
            _read_only(index, path, line)
        if name in ("move", "copy"):
            source = _check_pointer(op.get("from"), index=index, member="from", line=line, syntax=True)
            if name == "move":
                if path.startswith(source + "/"):
                    raise InputError(
                        f"operation {index}: cannot move {source} into its own child",
                        line=line,
                        field="patch",
                    )
                if _touches_read_only(source):
                    _read_only(index, source, line)
    try:
        # jsonpatch's own structural check of every operation (pointer syntax included),
        # once for the whole patch; only a patch it refuses is looked at op by op.
        jsonpatch.JsonPatch(patch)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
        for index, op in enumerate(patch):
            _check_pointer(op["path"], index=index, member="path", line=line, syntax=True)
            try:
                jsonpatch.JsonPatch([op])
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise InputError(f"operation {index}: {exc}", line=line, field="patch") from None
        raise  # pragma: no cover - refused as a whole, accepted op by op: impossible


def _check_deep_managed(entity: str, patch: list[dict[str, Any]], line: int) -> None:
    """Refuse a patch that changes a member the server manages below the top level on
    ``entity`` (``entities.deep_managed``: an item's ``itemID``)."""
    for index, op in enumerate(patch):
        if op["op"] == "test":
            continue
        targets = [op["path"]] + ([op["from"]] if op["op"] == "move" else [])
        for target in targets:
            if entities.deep_managed(entity, target) is not None:
                _read_only(index, target, line)


def _read_only(index: int, target: str, line: int) -> NoReturn:
    raise InputError(
        f"operation {index}: {target or '/'} is server-managed and cannot be changed",
        line=line,
        field="patch",
    )


def parse_line(raw: bytes, line: int) -> Job:
    """Parse and validate one non-blank line (without its line ending).

    Raises ``InputError`` naming the line and, where one is at fault, the field.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise exactjson.explain(raw, line) or InputError(f"not valid JSON: {exc}", line=line) from None
    if not isinstance(obj, dict):
        raise InputError(f"a job must be a JSON object, not {type(obj).__name__}", line=line)
    exactjson.check(raw, obj, line)
    if obj.keys() == _ID_AND_PATCH:
        # Most lines are exactly this: the checks below, for these two keys only.
        entity_id = obj["id"]
        if type(entity_id) is str and entity_id and len(entity_id) <= MAX_ID and "\x00" not in entity_id:
            ops = obj["patch"]
            job = Job(line, entity_id, ops)
            job.idempotent = _validated(ops, line)
            return job
    return _parse_job(obj, line)


def _parse_job(obj: dict[str, Any], line: int) -> Job:
    """Any job object, every key checked, in the order the errors are reported."""
    create: dict[str, Any] | None = None
    if not obj.keys() <= _PATCH_KEYS:  # not a plain patch job: look at every key
        create = _check_action(obj, line)
    entity_id = _entity_id(obj, line, creating=create is not None)
    restore, patch, verifying = _change(obj, line, creating=create is not None)
    entity, offer_type, etag = _target(obj, line)
    if patch:
        _check_deep_managed(entity, patch, line)
    # Positional: once per line, and keywords cost as much again as the call itself.
    job = Job(
        line,
        entity_id,
        patch,
        entity,
        offer_type,
        etag,
        obj.get("ref"),
        "ref" in obj,
        restore,
        create,
        obj.get("delete") is True,
        earlier_line(obj),
    )
    job.idempotent = verifying
    return job


def earlier_line(obj: dict[str, Any]) -> int | None:
    """The ``line`` a failure log gives a job it holds (the earlier run's line), if any."""
    value = obj.get("line")
    return value if type(value) is int and value > 0 else None


UNMENDED: Final = "input error from the earlier run, not mended: "


def _unmended(obj: dict[str, Any], line: int) -> None:
    """A failure log's record of a line that was no job (``{"line", "error", "raw"}``),
    re-run as it is: raises ``InputError`` quoting the earlier run's error."""
    if "raw" not in obj or "error" not in obj or any(k in obj for k in ("patch", "create", "delete", "restore")):
        return
    error = obj["error"] if isinstance(obj["error"], dict) else {}
    # A record of a record (re-run twice unmended) still quotes the first run's words.
    original = str(error.get("message", "no message recorded")).split(UNMENDED, 1)[-1]
    raise InputError(UNMENDED + original, line=line)


def _entity_id(obj: dict[str, Any], line: int, *, creating: bool) -> str:
    """The job's ``id``: required but for a create (which has none yet: "")."""
    entity_id = obj.get("id", "" if creating else None)
    if not creating and (not isinstance(entity_id, str) or not entity_id):
        raise InputError("required, a non-empty string", line=line, field="id")
    assert isinstance(entity_id, str)
    if "\x00" in entity_id:
        raise InputError("must not contain NUL", line=line, field="id")
    if len(entity_id) > MAX_ID:
        raise InputError(f"longer than {MAX_ID} characters", line=line, field="id")
    return entity_id


def _change(
    obj: dict[str, Any], line: int, *, creating: bool
) -> tuple[Restore | None, list[dict[str, Any]], bool | None]:
    """``(restore, patch, idempotent)``: what the job does, when it is not a create or a
    delete (their own keys are checked by ``_check_action``)."""
    if "restore" in obj:
        return _read_restore(obj["restore"], line), [], None
    if creating or obj.get("delete") is True:
        return None, [], None
    if "patch" not in obj:
        raise InputError("required (or create, or delete)", line=line, field="patch")
    verifying = _validated(obj["patch"], line)
    return None, obj["patch"], verifying


def _target(obj: dict[str, Any], line: int) -> tuple[str, str, int | None]:
    """``(entity, offer type, etag)``, defaulted and checked."""
    entity = obj.get("entity", entities.DEFAULT_ENTITY)
    if entity not in ENTITIES:
        raise InputError(f"must be one of {', '.join(ENTITIES)}", line=line, field="entity")
    offer_type = obj.get("type", entities.DEFAULT_OFFER_TYPE)
    if offer_type not in OFFER_TYPES:
        raise InputError("must be 'personalized' or 'fallback'", line=line, field="type")
    if "type" in obj and not entities.typed(entity):
        raise InputError("applies to offers only", line=line, field="type")
    etag = obj.get("etag")
    if etag is not None and (
        not isinstance(etag, int) or isinstance(etag, bool) or not 0 <= etag <= MAX_ETAG
    ):
        raise InputError("must be an integer from 0 to 2^63-1", line=line, field="etag")
    return entity, offer_type, etag


def _check_action(obj: dict[str, Any], line: int) -> dict[str, Any] | None:
    """The keys beyond a patch job's: unknown ones, and which action the job is; its
    entity to create, if it is a create."""
    _unmended(obj, line)
    for key in obj:
        if key not in _KNOWN_KEYS and not key.startswith("_"):
            raise InputError(
                "unknown key (expected id, patch, type, entity, etag, ref)", line=line, field=key
            )
    actions = [k for k in ("patch", "create", "delete", "restore") if k in obj]
    if len(actions) > 1:
        raise InputError(
            f"a job is one of patch, create, delete or restore, not {' and '.join(actions)}",
            line=line,
            field=actions[1],
        )
    create: dict[str, Any] | None = None
    if "create" in obj:
        create = obj["create"]
        if not isinstance(create, dict) or not create:
            raise InputError("must be the entity to create, an object", line=line, field="create")
        if "id" in obj:
            raise InputError("a create job has no id: the server assigns it", line=line, field="id")
        touched = sorted(k for k in create if entities.server_managed(k))
        if touched:
            raise InputError(f"{touched[0]} is server-managed", line=line, field="create")
    if "delete" in obj and obj["delete"] is not True:
        raise InputError("must be true", line=line, field="delete")
    return create


def _read_restore(value: Any, line: int) -> Restore:
    """A rollback job's ``restore`` member (as ``bulkpatch rollback`` writes failed ones)."""
    if not isinstance(value, dict) or not isinstance(value.get("doc"), dict):
        raise InputError("must be an object with the entity as 'doc'", line=line, field="restore")
    etag = value.get("etag")
    if etag is not None and (not isinstance(etag, int) or isinstance(etag, bool)):
        raise InputError("'etag' must be an integer or null", line=line, field="restore")
    fields = value.get("fields")
    if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
        raise InputError("'fields' must be a list of field names", line=line, field="restore")
    for name in fields:
        if entities.server_managed(name):
            raise InputError(f"{name} is server-managed", line=line, field="restore")
    archive = value.get("archive", False)
    if not isinstance(archive, bool):
        raise InputError("'archive' must be true or false", line=line, field="restore")
    return Restore(value["doc"], etag, tuple(fields), archive)


def bad_line(raw: bytes, line: int, error: InputError, size: int | None = None) -> BadLine:
    """Keep what a person needs to mend a bad line: its start, its size, its id if any."""
    entity_id: str | None = None
    if error.field != "id" and len(raw) <= RAW_CUT:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            entity_id = obj["id"]
        if isinstance(obj, dict):
            earlier = earlier_line(obj)
            if earlier is not None and isinstance(obj.get("raw"), str) and error.detail.startswith(UNMENDED):
                # Kept as the earlier run's line, not this record of it: re-run again, the
                # failure log says the same thing, not a record of a record.
                raw = obj["raw"].encode()
                return BadLine(line, error, raw[:RAW_CUT], len(raw), entity_id, earlier)
            return BadLine(line, error, raw[:RAW_CUT], len(raw) if size is None else size, entity_id, earlier)
    return BadLine(line, error, raw[:RAW_CUT], len(raw) if size is None else size, entity_id)


def strip_line(raw: bytes, first: bool) -> bytes:
    """Drop the line ending (LF or CRLF) and, on the first line, a UTF-8 BOM."""
    if first and raw.startswith(_BOM):
        raw = raw[3:]
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw
