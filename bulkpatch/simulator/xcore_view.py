"""The xcore view of a stored DPS document, and an xcore patch converted back.

Nothing of xcore is stored: an instance is a *view* computed on every read, and an
xcore PATCH is applied to that view and converted back to DPS fields.

The conversion back (xcore → DPS) is ``bulkpatch.translate``'s own (``map_value``), so an
xcore job sent here and the same job translated and sent to DPS cannot drift apart; the
view (DPS → xcore) is written as its exact inverse: keys gain ``xdm:`` (``format`` and
``language`` gain ``dc:``), a component's ``type`` becomes its ``@type`` URI, keys under
``characteristics`` and ``content`` stay verbatim, and the ids of referenced placements
and tags become their xcore ``@id``.

A patch may write only under ``/_instance/``: every other top-level member is
server-managed (``test`` alone may look anywhere), and every write is converted back at
once, so a refusal names the operation that caused it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import jsonpatch
import jsonpointer

from bulkpatch.simulator.store import PATCH_OPS, READ_ONLY_FIELDS, Doc, PatchRejected, Store
from bulkpatch.simulator.wire import XCORE_BASE
from bulkpatch.simulator.xcore_ids import Ids, at_id, instance_id
from bulkpatch.simulator.xcore_media import OM, SCHEMAS

# The mapping is shared on purpose: the xcore endpoint must read an xcore value exactly
# as `bulkpatch translate` does, and sharing the code guarantees it.
from bulkpatch.xcore_map import (
    COMPONENTS,
    INSTANCE,
    OPAQUE,
    XCORE_ID,
    IdMap,
    Unmappable,
    component_type,
    map_value,
)

COMPONENT_URI: Final = OM + "content-component-"
DC_KEYS: Final = frozenset({"format", "language"})
# DPS names of the fields whose keys are user data (translate's OPAQUE, unprefixed).
OPAQUE_DPS: Final = frozenset(key.partition(":")[2] for key in OPAQUE)
DPS_COMPONENTS: Final = COMPONENTS.partition(":")[2]
INSTANCE_PREFIX: Final = "/" + INSTANCE + "/"
# Top-level members of an instance other than its content: all server-managed.
_READ_ONLY_TOP: Final = "read-only (server-managed); an xcore patch changes /_instance/ only"


def _reference(where: list[str]) -> str | None:
    """The collection a DPS string at ``where`` refers to, if it is an entity reference."""
    if len(where) == 3 and where[0] == "representations" and where[2] == "placement":
        return "placements"
    if len(where) == 2 and where[0] == "tags":
        return "tags"
    return None


def _to_xcore(value: Any, where: list[str], refer: Callable[[str, str], str]) -> Any:
    """A DPS value found at ``where`` (its DPS tokens) as xcore shows it."""
    if isinstance(value, dict):
        if any(token in OPAQUE_DPS for token in where):
            return value
        in_component = len(where) >= 2 and where[-2] == DPS_COMPONENTS
        out: dict[str, Any] = {}
        for key, item in value.items():
            if in_component and key == "type" and _known_component(item):
                out["@type"] = COMPONENT_URI + item
                continue
            # A component type translate cannot read back as @type (not one of the four,
            # or not a string) is shown as xdm:type, which translate maps back to `type`.
            name = ("dc:" if key in DC_KEYS else "xdm:") + key
            out[name] = _to_xcore(item, [*where, key], refer)
        return out
    if isinstance(value, list):
        if any(token in OPAQUE_DPS for token in where):
            return value
        return [_to_xcore(item, [*where, str(n)], refer) for n, item in enumerate(value)]
    if isinstance(value, str):
        key = _reference(where)
        if key is not None:
            return refer(key, value)
    return value


def _known_component(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return component_type(COMPONENT_URI + value) == value
    except Unmappable:
        return False


def is_content(key: str) -> bool:
    """Whether a DPS field is content (in ``_instance``) rather than server-managed."""
    return key not in READ_ONLY_FIELDS and not key.endswith("ClientId")


def _xcore_strings(value: Any) -> set[str]:
    """Every string starting ``xcore:`` in a value (the ones already there before a patch)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item.startswith(XCORE_ID):
            found.add(item)
    return found


class View:
    """Both directions between a stored DPS document and its xcore instance."""

    def __init__(self, store: Store, ids: Ids) -> None:
        self.store = store
        self.ids = ids

    def _refer(self, key: str, dps_id: str) -> str:
        # Only a reference to a live entity becomes an @id: a dangling one stays as the
        # DPS id it is, since no xcore id could be read back from it.
        if self.store.get(key, dps_id) is None:
            return dps_id
        self.ids.add(key, dps_id)
        return at_id(key, dps_id)

    def content(self, doc: Doc) -> Doc:
        """The ``_instance`` of a stored DPS document."""
        fields = {k: v for k, v in doc.items() if is_content(k)}
        converted: Doc = _to_xcore(fields, [], self._refer)
        return converted

    def to_dps(self, content: Any, before: set[str], index: int | None) -> Doc:
        """An ``_instance`` as DPS fields; PatchRejected (422) naming the op when it cannot.

        ``before`` holds the xcore-looking strings the instance had before the patch: one
        the id map does not know is left as it was (it came from DPS data), while a new
        one is refused, as translate refuses it.
        """
        at = "the body" if index is None else f"operation {index}"
        if not isinstance(content, dict):
            raise PatchRejected(index, "/_instance must stay a JSON object", "unprocessable")
        ids = IdMap(self.ids.as_mapping())
        try:
            fields: Doc = map_value(content, [], ids, at)
        except Unmappable as exc:
            raise PatchRejected(index, str(exc), "unprocessable") from None
        except RecursionError:
            raise PatchRejected(index, "nested too deeply", "unprocessable") from None
        unknown = [x for x in ids.unmapped if x not in before]
        if unknown:
            raise PatchRejected(
                index, "unknown xcore id(s): " + ", ".join(map(repr, unknown)), "unprocessable"
            )
        for key in fields:
            if not is_content(key):
                raise PatchRejected(
                    index, f"{key!r} is a read-only (server-managed) DPS field", "read-only"
                )
        return fields

    def instance(self, key: str, doc: Doc, container: str) -> Doc:
        """The xcore instance of a stored DPS document, as served from ``container``."""
        iid = instance_id(doc["id"])
        return {
            "instanceId": iid,
            "@id": at_id(key, doc["id"]),
            "schemas": [SCHEMAS[key]],
            **self._repo(doc),
            "_instance": self.content(doc),
            "_links": {"self": {"href": f"{XCORE_BASE}/{container}/instances/{iid}"}},
        }

    @staticmethod
    def _repo(doc: Doc) -> Doc:
        return {
            "repo:etag": doc["etag"],
            "repo:createdDate": doc.get("created"),
            "repo:lastModifiedDate": doc.get("modified"),
            "repo:createdBy": doc.get("createdBy"),
            "repo:lastModifiedBy": doc.get("lastModifiedBy"),
            "repo:createdByClientId": doc.get("createdByClientId"),
            "repo:lastModifiedByClientId": doc.get("lastModifiedByClientId"),
        }

    def receipt(self, key: str, doc: Doc) -> Doc:
        return {
            "instanceId": instance_id(doc["id"]),
            "@id": at_id(key, doc["id"]),
            **self._repo(doc),
        }

    def patch_view(self, view: Doc, ops: Any) -> Doc:
        """Apply an xcore patch to an instance view; the new DPS fields, or PatchRejected.

        Every write is converted back at once, so a refusal names the operation that
        caused it, as a DPS refusal does.
        """
        if not isinstance(ops, list):
            raise PatchRejected(None, "the body must be a JSON array of operations", "invalid")
        before = _xcore_strings(view["_instance"])
        result = view
        fields: Doc | None = None
        for index, op in enumerate(ops):
            name, path = _checked(index, op, view)
            try:
                result = jsonpatch.JsonPatch([op]).apply(result, in_place=False)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise PatchRejected(index, f"test failed at {path}: {exc}", "test") from exc
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise PatchRejected(index, f"{name} {path}: {exc}", "invalid") from exc
            except (KeyError, TypeError, ValueError) as exc:
                # jsonpatch raises these for an op missing its value, for instance.
                raise PatchRejected(index, f"{name} {path}: malformed ({exc})", "invalid") from exc
            if name != "test":
                fields = self.to_dps(result["_instance"], before, index)
        if fields is None:  # only tests (or nothing): the content is unchanged
            fields = self.to_dps(result["_instance"], before, None)
        return fields


def _checked(index: int, op: Any, view: Doc) -> tuple[str, str]:
    """(op name, path) of a well-formed operation that writes only under ``/_instance/``."""
    if not isinstance(op, dict):
        raise PatchRejected(index, "an operation must be a JSON object", "invalid")
    name = op.get("op")
    if name not in PATCH_OPS:
        raise PatchRejected(index, f"unknown op {name!r}", "invalid")
    path = op.get("path")
    if not isinstance(path, str):
        raise PatchRejected(index, "'path' must be a string", "invalid")
    # `test` only reads, so it may look anywhere (at repo:etag, say); every place
    # an op writes or moves from must be inside the content.
    targets = [] if name == "test" else [("path", path)]
    if name in ("move", "copy"):
        source = op.get("from")
        if not isinstance(source, str):
            raise PatchRejected(index, "'from' must be a string", "invalid")
        targets.append(("from", source))
    for member, target in targets:
        if not target.startswith(INSTANCE_PREFIX):
            head = target[1:].split("/", 1)[0] if target.startswith("/") else target
            kind = "read-only" if head in view else "unprocessable"
            reason = _READ_ONLY_TOP if head in view else "is outside /_instance/"
            raise PatchRejected(index, f"{member} {target or '/'!r}: {reason}", kind)
    return name, path
