"""Did a write land? Pure checks that make a retry after an unknown outcome safe.

A PATCH is not idempotent in general (an append applied twice appends twice), so after a
timeout, a dropped connection, a 3xx or a 5xx the engine must learn whether this job's
write took effect before it sends anything again. An outcome says ``ok`` only on proof
that the server applied *this* write; a read that finds the values already set proves
nothing (they may have been there before, or put there by another writer).

Two kinds of patch:

- **idempotent**: only ``add``/``replace`` of object members, no location nested in
  another. Applied twice it leaves what applying it once leaves, so after an unknown
  outcome the entity is read and the patch sent again with ``If-Match`` of the etag just
  read: the 2xx to that resend is the proof. No read is needed before the first write,
  so a clean run costs one request a job.
- the rest (``test``, ``remove``, appends, array indices, ``copy``, ``move``, nested
  locations) need the entity as it was before the write (its *pre-image*), read before
  the first write and sent with its etag in ``If-Match``. After an unknown outcome, the
  write is proven only by a read whose etag moved and whose touched locations equal the
  pre-image with the patch applied (``landed``).

Equality is JSON equality (RFC 6902 §4.6): ``1`` equals ``1.0``, ``true`` does not
equal ``1``, object members compare regardless of order.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Final

import jsonpatch
import jsonpointer
import orjson

from bulkpatch import pointer as json_pointer
from bulkpatch.errors import BulkpatchError

Doc = dict[str, Any]
_ABSENT: Final = object()
ABSENT: Final = _ABSENT  # what ``resolve`` answers for a location that is not there
_MUTATING: Final = frozenset({"add", "remove", "replace", "move", "copy"})
_IDEMPOTENT_OPS: Final = frozenset({"add", "replace"})


class Landed(enum.Enum):
    YES = "yes"
    NO = "no"
    UNCLEAR = "unclear"  # the etag moved, and the locations cannot tell whose write moved it


def _is_array_slot(token: str) -> bool:
    return token == "-" or token.isdigit()


def _location(pointer: str) -> str:
    """The location a change at ``pointer`` is observed at: the array for array slots."""
    if pointer and _is_array_slot(json_pointer.last(pointer)):
        return pointer.rsplit("/", 1)[0]
    return pointer


def touched(patch: Sequence[Mapping[str, Any]]) -> list[str]:
    """The locations a patch changes, in first-seen order."""
    seen: dict[str, None] = {}
    for op in patch:
        name = op["op"]
        if name not in _MUTATING:
            continue
        seen[_location(op["path"])] = None
        if name == "move":
            seen[_location(op["from"])] = None
    return list(seen)


def idempotent(patch: Sequence[Mapping[str, Any]]) -> bool:
    """True when applying ``patch`` twice leaves what applying it once leaves, and a resend
    can prove it landed: only ``add``/``replace`` of object members (RFC 6902 §4.1, §4.3),
    none nested in another. ``test`` makes a resend's 2xx prove nothing about the first
    attempt and ``remove`` is refused the second time, so both need a pre-image."""
    paths: list[str] = []
    for op in patch:
        if op["op"] not in _IDEMPOTENT_OPS:
            return False
        path = op["path"]
        # The last token decides; escapes (~0, ~1) never make an array slot of it.
        if not path or _is_array_slot(path.rsplit("/", 1)[1]):
            return False
        paths.append(path)
    return not _any_nested(paths)


def _any_nested(paths: list[str]) -> bool:
    """Whether one of ``paths`` lies inside another: each path's enclosing locations are
    looked up in a set, work linear in the patch's length (a patch of 20,000 ops is
    checked at once, not in 20,000² comparisons)."""
    if len(paths) < 2:
        return False
    seen = set(paths)
    for path in paths:
        cut = path.rfind("/")
        while cut > 0:
            path = path[:cut]
            if path in seen:
                return True
            cut = path.rfind("/")
    return False


def resolve(doc: Any, pointer: str) -> Any:
    """The value at ``pointer``, or a sentinel when there is none."""
    value = doc
    for token in json_pointer.tokens(pointer):
        if isinstance(value, Mapping):
            if token not in value:
                return _ABSENT
            value = value[token]
        elif isinstance(value, list):
            if not token.isdigit() or int(token) >= len(value):
                return _ABSENT
            value = value[int(token)]
        else:
            return _ABSENT
    return value


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality (RFC 6902 §4.6): numbers by value whatever their spelling (``1`` equals
    ``1.0``), ``true``/``false`` only equal themselves (never ``1``/``0``), objects by
    members regardless of order, arrays element by element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _same(a: Any, b: Any) -> bool:
    if a is _ABSENT or b is _ABSENT:
        return a is b
    return json_equal(a, b)


def apply(patch: Sequence[Mapping[str, Any]], doc: Doc) -> Doc:
    """Apply a patch to a copy of ``doc``; raises ``PatchDoesNotApply`` with the reason."""
    copied: Doc = orjson.loads(orjson.dumps(doc))
    try:
        result: Doc = jsonpatch.JsonPatch(list(patch)).apply(copied, in_place=True)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchDoesNotApply(str(exc)) from exc
    return result


def has_test(patch: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the patch holds a ``test`` operation (RFC 6902 §4.6)."""
    return any(op.get("op") == "test" for op in patch)


def failed_test(patch: Sequence[Mapping[str, Any]], doc: Doc) -> str | None:
    """The first ``test`` operation that does not hold on ``doc`` with the operations before
    it applied (RFC 6902 §4.6, JSON equality), as ``expected X at /path, found Y`` (values as
    JSON; ``found nothing`` for a missing location); None when every test holds, or an
    operation before it fails otherwise."""
    current: Any = orjson.loads(orjson.dumps(doc))
    for op in patch:
        if op.get("op") == "test":
            found = resolve(current, op["path"])
            if not _same(op.get("value"), found):
                shown = "nothing" if found is _ABSENT else _json(found)
                return f"expected {_json(op.get('value'))} at {op['path']}, found {shown}"
        try:
            current = jsonpatch.JsonPatch([dict(op)]).apply(current, in_place=True)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
            return None
    return None


def _json(value: Any) -> str:
    """A value as JSON text, cut to 200 characters (a message, not a copy)."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= 200 else text[:197] + "..."


class PatchDoesNotApply(BulkpatchError):
    """The patch cannot be applied to the current document (a test fails, a path is gone)."""


def landed(patch: Sequence[Mapping[str, Any]], current: Doc, pre: Doc) -> Landed:
    """Whether this job's write is in ``current``, read after a write of unknown outcome
    that was sent with ``If-Match`` of ``pre``'s etag.

    - ``NO``: the etag did not move (nothing was written); or the patch changes its
      locations and they hold what they held before (another writer changed other
      fields): a resend is then safe unless another writer put back the very values the
      write replaced in between, which no read can tell; or the patch leaves its
      locations as they were, so that whether it landed or not, a resend changes
      nothing and its 2xx is the proof.
    - ``YES``: the etag moved, the patch changes its locations, and they hold what the
      patch makes of ``pre``.
    - ``UNCLEAR`` otherwise: the locations hold something else (another writer on the
      same locations).
    """
    if current.get("etag") == pre.get("etag"):
        return Landed.NO
    try:
        post = apply(patch, pre)
    except PatchDoesNotApply:
        return Landed.NO  # the server could not have applied it either
    locations = touched(patch)
    now = [resolve(current, loc) for loc in locations]
    before = [resolve(pre, loc) for loc in locations]
    after = [resolve(post, loc) for loc in locations]
    if all(_same(b, a) for b, a in zip(before, after, strict=True)):
        return Landed.NO
    if all(_same(c, a) for c, a in zip(now, after, strict=True)):
        return Landed.YES
    if all(_same(c, b) for c, b in zip(now, before, strict=True)):
        return Landed.NO
    return Landed.UNCLEAR


def changes(old: Doc, new: Doc) -> list[dict[str, Any]]:
    """What differs from ``old`` to ``new``, as ``{"path", "old", "new"}`` (a side that has
    no value there is left out), in the order of a JSON Patch that turns one into the other."""
    out: list[dict[str, Any]] = []
    for op in jsonpatch.make_patch(old, new).patch:
        path = op["path"]
        change: dict[str, Any] = {"path": path}
        before, after = resolve(old, path), resolve(new, path)
        if _same(before, after):
            continue  # equal as JSON (1 and 1.0): a difference of spelling, not of value
        if before is not _ABSENT:
            change["old"] = before
        if after is not _ABSENT:
            change["new"] = after
        out.append(change)
    return out
