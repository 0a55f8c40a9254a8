"""Did a write land? Pure checks that make a retry after an unknown outcome safe.

A PATCH is not idempotent (an append applied twice appends twice), so after a timeout,
a dropped connection or a 5xx the engine reads the entity and decides, before sending
again, whether this job's write already took effect. It compares only the locations the
patch changes, so another writer changing other fields does not fool it.

Two kinds of patch:

- **self-verifying**: only ``replace``/``add``/``remove`` of object members (plus
  ``test``), no location nested in another. The state after the write is known from the
  patch alone, so no read is needed before writing: a clean run costs one request a job.
- the rest (appends, array indices, ``copy``, ``move``, nested locations) need the
  entity as it was before the write (its *pre-image*), read before the first write and
  sent with its etag in ``If-Match``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Final

import jsonpatch
import jsonpointer
import orjson

from bulkpatch.errors import BulkpatchError

Doc = dict[str, Any]
_ABSENT: Final = object()
_MUTATING: Final = frozenset({"add", "remove", "replace", "move", "copy"})
_PLAIN_WRITES: Final = frozenset({"add", "replace", "remove"})


class Landed(enum.Enum):
    YES = "yes"
    NO = "no"
    UNCLEAR = "unclear"  # the same locations were also changed by someone else


def _tokens(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def _is_array_slot(token: str) -> bool:
    return token == "-" or token.isdigit()


def _location(pointer: str) -> str:
    """The location a change at ``pointer`` is observed at: the array for array slots."""
    tokens = pointer.split("/")
    if len(tokens) > 1 and _is_array_slot(tokens[-1].replace("~1", "/").replace("~0", "~")):
        return "/".join(tokens[:-1])
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


def _nested(a: str, b: str) -> bool:
    return a != b and (b.startswith(a + "/") or a.startswith(b + "/") or a == "" or b == "")


def self_verifying(patch: Sequence[Mapping[str, Any]]) -> bool:
    """True when the state after the write is known from the patch alone (see module doc)."""
    paths: list[str] = []
    for op in patch:
        name = op["op"]
        if name == "test":
            continue
        if name not in _PLAIN_WRITES:
            return False
        path = op["path"]
        # The last token decides; escapes (~0, ~1) never make an array slot of it.
        if not path or _is_array_slot(path.rsplit("/", 1)[1]):
            return False
        paths.append(path)
    if len(paths) < 2:
        return True
    return not any(_nested(a, b) for i, a in enumerate(paths) for b in paths[i + 1 :])


def resolve(doc: Any, pointer: str) -> Any:
    """The value at ``pointer``, or a sentinel when there is none."""
    value = doc
    for token in _tokens(pointer):
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


def expected_after(patch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """For a self-verifying patch: location → value after the write (or the sentinel)."""
    expected: dict[str, Any] = {}
    for op in patch:
        name = op["op"]
        if name in ("add", "replace"):
            expected[op["path"]] = op["value"]
        elif name == "remove":
            expected[op["path"]] = _ABSENT
    return expected


def _same(a: Any, b: Any) -> bool:
    if a is _ABSENT or b is _ABSENT:
        return a is b
    # Canonical JSON compares what the server stores: key order aside, and True != 1.
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS
    )


def apply(patch: Sequence[Mapping[str, Any]], doc: Doc) -> Doc:
    """Apply a patch to a copy of ``doc``; raises ``PatchDoesNotApply`` with the reason."""
    copied: Doc = orjson.loads(orjson.dumps(doc))
    try:
        result: Doc = jsonpatch.JsonPatch(list(patch)).apply(copied, in_place=True)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchDoesNotApply(str(exc)) from exc
    return result


class PatchDoesNotApply(BulkpatchError):
    """The patch cannot be applied to the current document (a test fails, a path is gone)."""


def landed(patch: Sequence[Mapping[str, Any]], current: Doc, pre: Doc | None) -> Landed:
    """Whether this job's write is in ``current``.

    With a pre-image, compare each touched location with its value before and after;
    without, compare with the values the patch sets.
    """
    if pre is None:
        matches = all(_same(resolve(current, p), v) for p, v in expected_after(patch).items())
        return Landed.YES if matches else Landed.NO
    if current.get("etag") == pre.get("etag"):
        return Landed.NO
    try:
        post = apply(patch, pre)
    except PatchDoesNotApply:
        return Landed.NO  # the server could not have applied it either
    locations = touched(patch)
    now = [resolve(current, loc) for loc in locations]
    if all(_same(c, resolve(post, loc)) for c, loc in zip(now, locations, strict=True)):
        return Landed.YES
    if all(_same(c, resolve(pre, loc)) for c, loc in zip(now, locations, strict=True)):
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
        if before is not _ABSENT:
            change["old"] = before
        if after is not _ABSENT:
            change["new"] = after
        out.append(change)
    return out
