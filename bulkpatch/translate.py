"""``bulkpatch translate``: rewrite job lines written for the legacy xcore API as DPS jobs.

An xcore job is a DPS-format job line whose ``id`` is an xcore instance id and whose
patch paths start with ``/_instance/``::

    {"id": "0f4bc230-...", "patch": [{"op": "replace", "path": "/_instance/xdm:name", "value": "x"}]}

becomes, given an id map that knows the offer's DPS id::

    {"id": "personalizedOffer1234", "patch": [{"op": "replace", "path": "/name", "value": "x"}]}

The rules (API notes §5 against §1): the ``/_instance`` token goes; each pointer token and
each key inside a value loses its ``xdm:`` or ``dc:`` prefix; a component's ``@type`` URI
becomes the DPS ``type`` named by its last segment; every id (the job's own, and any
string value starting ``xcore:``) is looked up in the id map, since DPS ids cannot be
derived from xcore ones. Whatever cannot be mapped with certainty is refused, line by
line, with the reason: a wrong translation would be sent to production as a valid patch,
while a refusal costs a person one look.

``translate_job`` is pure; ``translate_stream`` reads a job file in bounded memory (only
the id map is held) and writes the translated lines and the refusals as it goes;
``translate_files`` does so between files. ``bulkpatch translate`` is in ``bulkpatch.cli``.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson
import structlog

from bulkpatch import entities, pointer
from bulkpatch.errors import BulkpatchError, ConfigError, InputError
from bulkpatch.jobs import OPS, RAW_CUT, parse_line, strip_line
from bulkpatch.sink import LineWriter
from bulkpatch.source import MAX_LINE, read_lines
from bulkpatch.xcore_map import INSTANCE, XCORE_ID, IdMap, Unmappable, map_token, map_value

_BAD_ESCAPE: Final = re.compile(r"~(?![01])")
_PASS_THROUGH: Final = ("type", "etag", "ref")


class TranslateError(BulkpatchError):
    """A job that cannot be mapped to DPS with certainty.

    ``field`` is the job key at fault (``id`` or ``patch``); ``unmapped`` lists the ids
    missing from the id map, so a refusal file says exactly what to add to it.
    """

    def __init__(
        self, message: str, *, field: str | None = None, unmapped: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.field = field
        self.unmapped = unmapped


# --------------------------------------------------------------------------- mapping


def _map_pointer(where: Any, member: str, index: int) -> tuple[str, list[str]]:
    """A ``path`` or ``from`` under /_instance/ as the DPS pointer, and its xcore tokens."""
    at = f"operation {index}: {member} {where!r}"
    if not isinstance(where, str):
        raise TranslateError(f"operation {index}: '{member}' must be a string", field="patch")
    if not where.startswith("/" + INSTANCE + "/"):
        raise TranslateError(
            f"{at} is not under /{INSTANCE}/: an xcore patch changes the instance's content",
            field="patch",
        )
    raw_tokens = where.split("/")[2:]
    if any(_BAD_ESCAPE.search(t) for t in raw_tokens):
        raise TranslateError(f"{at} has a '~' that is not ~0 or ~1 (RFC 6901)", field="patch")
    tokens = [pointer.unescape(t) for t in raw_tokens]
    mapped: list[str] = []
    for n, token in enumerate(tokens):
        try:
            mapped.append(map_token(token, tokens[:n]))
        except Unmappable as exc:
            raise TranslateError(f"{at}: {exc}", field="patch") from None
    return pointer.join(mapped), tokens


def translate_job(obj: dict[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    """One xcore job (a parsed job line) as a DPS job line; raises ``TranslateError``.

    Only what the job means is carried over: ``id``, ``patch``, ``type``, ``etag``,
    ``ref`` (and ``entity`` when it says offers). Ignored keys (``line``, ``error``,
    ``_...``) are dropped, since they may hold xcore ids nobody maps. Members of an
    operation that RFC 6902 does not define for it are dropped for the same reason.
    """
    for action in ("create", "delete", "restore"):
        if action in obj:
            raise TranslateError(
                "only patch jobs are translated: write create and delete jobs for DPS anew",
                field=action,
            )
    entity = obj.get("entity", entities.DEFAULT_ENTITY)
    if not isinstance(entity, str) or not entities.translatable(entity):
        # Placements and the rest have xcore schemas of their own (a placement's
        # component type, a rule's condition) that these rules were not written for.
        raise TranslateError(f"only offers are translated, not {entity!r}", field="entity")
    job_id = obj.get("id")
    if not isinstance(job_id, str) or not job_id:
        raise TranslateError("required, a non-empty string", field="id")
    patch = obj.get("patch")
    if not isinstance(patch, list) or not patch:
        raise TranslateError("required, a non-empty array of operations", field="patch")
    found = IdMap(ids)
    out: dict[str, Any] = {"id": found.get(job_id, "id")}
    ops: list[dict[str, Any]] = []
    for index, op in enumerate(patch):
        if not isinstance(op, dict) or op.get("op") not in OPS:
            raise TranslateError(f"operation {index} is not a JSON Patch operation", field="patch")
        name = op["op"]
        path, tokens = _map_pointer(op.get("path"), "path", index)
        new: dict[str, Any] = {"op": name, "path": path}
        if name in ("move", "copy"):
            new["from"], _ = _map_pointer(op.get("from"), "from", index)
        if name in ("add", "replace", "test") and "value" in op:
            try:
                new["value"] = map_value(op["value"], tokens, found, f"operation {index}")
            except Unmappable as exc:
                raise TranslateError(
                    f"operation {index} (path {op['path']!r}): {exc}", field="patch"
                ) from None
        ops.append(new)
    out["patch"] = ops
    if "entity" in obj:
        out["entity"] = entity
    for key in _PASS_THROUGH:
        if key in obj:
            out[key] = obj[key]
    if found.missing:
        field = "id" if found.missing == [f"id: {job_id!r}"] else "patch"
        raise TranslateError(
            "not in the id map: " + "; ".join(found.missing),
            field=field,
            unmapped=tuple(found.unmapped),
        )
    return out


# --------------------------------------------------------------------------- lines


@dataclass(frozen=True, slots=True)
class Refusal:
    """A line not translated; ``record`` is its line in the refusal file."""

    line: int
    kind: str  # "input": not a valid job; "translate": a job with no certain DPS twin
    field: str | None
    message: str
    raw: bytes
    unmapped: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        # The shape of bulkpatch's failure log for a line that is not a job, so the same
        # jq filters read both; "unmapped" is what to add to the id map.
        out: dict[str, Any] = {
            "line": self.line,
            "error": {"kind": self.kind, "field": self.field, "message": self.message},
            "raw": self.raw[:RAW_CUT].decode("utf-8", errors="replace"),
        }
        if self.unmapped:
            out["unmapped"] = list(self.unmapped)
        return out


def _where(line: int, field: str | None) -> str:
    # The same prefix as InputError's, so every message reads alike.
    return f"line {line}" + (f", field {field!r}" if field else "")


def translate_line(raw: bytes, line: int, ids: Mapping[str, str]) -> dict[str, Any] | Refusal:
    """One non-blank job line (without its line ending): the DPS job, or why not."""
    try:
        parse_line(raw, line)  # the xcore line must be a valid job in its own right
        obj = orjson.loads(raw)
    except InputError as exc:
        return Refusal(line, "input", exc.field, str(exc), raw)
    try:
        job = translate_job(obj, ids)
    except TranslateError as exc:
        message = f"{_where(line, exc.field)}: {exc}"
        return Refusal(line, "translate", exc.field, message, raw, exc.unmapped)
    except RecursionError:
        return Refusal(
            line, "translate", "patch", f"{_where(line, 'patch')}: nested too deeply", raw
        )
    try:
        parse_line(orjson.dumps(job), line)
    except InputError as exc:
        # e.g. a "-" that is fine mid-path for xcore's docs but not for RFC 6901.
        message = (
            f"{_where(line, exc.field)}: the translated job is not a valid DPS job: {exc.detail}"
        )
        return Refusal(line, "translate", exc.field, message, raw)
    return job


def _one(
    number: int, raw: bytes, size: int, ids: Mapping[str, str]
) -> dict[str, Any] | Refusal | None:
    if size > MAX_LINE:
        message = f"line {number}: line is {size} bytes, over the {MAX_LINE}-byte limit"
        return Refusal(number, "input", None, message, raw[:RAW_CUT])
    line = strip_line(raw, number == 1)
    if not line.strip():
        return None
    return translate_line(line, number, ids)


@dataclass(slots=True)
class Counts:
    lines: int = 0  # non-blank lines read
    translated: int = 0
    refused: int = 0
    complete: bool = True  # False when stdout's reader left before the end


async def translate_stream(
    source: BinaryIO,
    ids: Mapping[str, str],
    out: BinaryIO,
    refused: BinaryIO | None = None,
) -> Counts:
    """Translate a job file as it is read; memory does not grow with it.

    Translated jobs go to ``out``, in input order; refusals to ``refused`` as NDJSON, or,
    without it, to the log (one error event each). ``out`` and ``refused`` are flushed,
    not closed.
    """
    log = structlog.get_logger()
    counts = Counts()
    jobs = LineWriter(out)
    refusals = None if refused is None else LineWriter(refused)
    try:
        async for number, raw, size in read_lines(source):
            item = _one(number, raw, size, ids)
            if item is None:
                continue
            counts.lines += 1
            if isinstance(item, Refusal):
                counts.refused += 1
                if refusals is not None:
                    refusals.write(item.record())
                else:
                    log.error("translate.refused", line=item.line, error=item.message)
            else:
                counts.translated += 1
                jobs.write(item)
        jobs.flush()
    except BrokenPipeError:
        counts.complete = False  # `| head`: stop quietly, as Unix tools do
    finally:
        if refusals is not None:
            refusals.flush()
    return counts


# --------------------------------------------------------------------------- id map


def load_id_map(path: Path) -> dict[str, str]:
    """``{"xcore": ..., "dps": ...}`` lines; a bad line is a ``ConfigError`` naming it."""
    ids: dict[str, str] = {}
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read the id map {path}: {exc.strerror}") from None
    with stream:
        for number, raw in enumerate(stream, 1):
            line = strip_line(raw, number == 1)
            if not line.strip():
                continue
            where = f"id map {path} line {number}"
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not valid JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise ConfigError(f'{where}: must be an object {{"xcore": ..., "dps": ...}}')
            extra = sorted(k for k in obj if k not in ("xcore", "dps") and not k.startswith("_"))
            if extra:
                raise ConfigError(f"{where}: unknown key {extra[0]!r} (expected xcore, dps)")
            old, new = obj.get("xcore"), obj.get("dps")
            if not isinstance(old, str) or not old:
                raise ConfigError(f"{where}: 'xcore' must be a non-empty string")
            if not isinstance(new, str) or not new:
                raise ConfigError(f"{where}: 'dps' must be a non-empty string")
            if new.startswith(XCORE_ID):
                raise ConfigError(f"{where}: 'dps' {new!r} is an xcore id, not a DPS one")
            if ids.get(old, new) != new:
                raise ConfigError(
                    f"{where}: {old!r} is mapped twice, to {ids[old]!r} and to {new!r}"
                )
            ids[old] = new
    return ids


# --------------------------------------------------------------------------- files


async def translate_files(
    source: str,
    *,
    id_map: Path | None = None,
    output: Path | None = None,
    refused: Path | None = None,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
) -> Counts:
    """Translate the job file ``source`` ("-": ``stdin``, by default the process's).

    DPS jobs go to ``output`` (None: ``stdout``, by default the process's), refusals to
    ``refused`` (None: the log). Without ``id_map`` every line is refused naming its
    ids. Raises ``ConfigError`` for an unreadable input or id map, or an unwritable
    output; the caller keeps outputs apart from the input (opening one truncates it).
    """
    ids = load_id_map(id_map) if id_map is not None else {}
    with contextlib.ExitStack() as stack:
        if source == "-":
            stream = stdin if stdin is not None else sys.stdin.buffer
        else:
            stream = stack.enter_context(_open_input(source))
        out = stdout if stdout is not None else sys.stdout.buffer
        if output is not None:
            out = stack.enter_context(_open_output(output))
        refusals = None if refused is None else stack.enter_context(_open_output(refused))
        return await translate_stream(stream, ids, out, refusals)


def _open_input(name: str) -> BinaryIO:
    try:
        return open(name, "rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}") from None


def _open_output(path: Path) -> BinaryIO:
    try:
        return path.open("wb")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


__all__ = [
    "Counts",
    "Refusal",
    "TranslateError",
    "load_id_map",
    "translate_files",
    "translate_job",
    "translate_line",
    "translate_stream",
]
