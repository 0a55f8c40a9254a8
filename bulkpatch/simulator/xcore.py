"""The legacy xcore API (API notes §5), served over the same store as DPS.

Legacy scripts still speak xcore, and the point of simulating it is to watch one offer
through both dialects: an xcore write is visible to a DPS read at once and vice versa.
So nothing here stores anything of its own. The store keeps DPS documents with DPS ids;
xcore instances are a *view* computed on every read, and an xcore PATCH is applied to
that view and converted back.

The conversion back (xcore → DPS) is ``bulkpatch.translate``'s own (``map_value``), so an
xcore job sent here and the same job translated and sent to DPS cannot drift apart; the
view (DPS → xcore) is written as its exact inverse: keys gain ``xdm:`` (``format`` and
``language`` gain ``dc:``), a component's ``type`` becomes its ``@type`` URI, keys under
``characteristics`` and ``content`` stay verbatim, and the ids of referenced placements
and tags become their xcore ``@id``.

Ids: an entity's xcore instance id is derived from its DPS id (16 hex characters of
blake2b), so it is stable across restarts and state files; ``/_sim/xcore-ids`` lists the
pairs in the ``--id-map`` format of ``bulkpatch translate``.

Decisions where the real service is silent or the simulator is simpler:

- a stale ``If-Match`` is always 409 here, whatever ``conflict_status`` says: 409 is what
  the legacy API documents, ``conflict_status`` exists for DPS, where it is unknown;
- a schema (in ``Accept`` or ``Content-Type``) naming the other offer type is a 404, as
  xcore looks an instance up within its schema; the schema's version is not compared;
- offers live in the first container only; other containers are empty, and a create in
  one of them is a 403;
- only offers are served as instances; placements and tags exist in xcore only as the
  ``@id`` values offers refer to.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import jsonpatch
import jsonpointer
import orjson
from aiohttp import web

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.faults import Faults
from bulkpatch.simulator.store import (
    PATCH_OPS,
    READ_ONLY_FIELDS,
    SANDBOX_ID,
    Doc,
    Filter,
    NotFound,
    PatchRejected,
    PreconditionFailed,
    Store,
)
from bulkpatch.simulator.wire import XCORE_BASE, ClientGone, if_match, problem, writer
from bulkpatch.simulator.writes import Writes

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

CONTAINER_REL: Final = "https://ns.adobe.com/experience/xcore/container"
CONTAINER_SCHEMA: Final = "https://ns.adobe.com/experience/xcore/container;version=0.1"
# The container id of the legacy page's own example, so its curl URL works as written.
FIRST_CONTAINER: Final = "e0bd8463-0913-4ca1-bd84-6309134ca1f6"

HOME_TYPE: Final = "application/vnd.adobe.platform.xcore.home.hal+json"
HAL_TYPE: Final = "application/vnd.adobe.platform.xcore.hal+json"
PATCH_TYPE: Final = "application/vnd.adobe.platform.xcore.patch.hal+json"
CREATE_TYPE: Final = "application/schema-instance+json"
RECEIPT_TYPE: Final = "application/vnd.adobe.platform.xcore.xdm.receipt+json; version=1"

_OM: Final = "https://ns.adobe.com/experience/offer-management/"
# The schemas of the legacy API (its versions, not DPS's), by store collection.
SCHEMAS: Final = {
    "offers/personalized": _OM + "personalized-offer;version=0.5",
    "offers/fallback": _OM + "fallback-offer;version=0.1",
}
# The middle part of an entity's @id, by store collection.
KINDS: Final = {
    "offers/personalized": "personalized-offer",
    "offers/fallback": "fallback-offer",
    "placements": "offer-placement",
    "tags": "tag",
}
COMPONENT_URI: Final = _OM + "content-component-"
DC_KEYS: Final = frozenset({"format", "language"})
# DPS names of the fields whose keys are user data (translate's OPAQUE, unprefixed).
OPAQUE_DPS: Final = frozenset(key.partition(":")[2] for key in OPAQUE)
DPS_COMPONENTS: Final = COMPONENTS.partition(":")[2]
INSTANCE_PREFIX: Final = "/" + INSTANCE + "/"
# Top-level members of an instance other than its content: all server-managed.
_READ_ONLY_TOP: Final = "read-only (server-managed); an xcore patch changes /_instance/ only"


def instance_id(dps_id: str) -> str:
    """The xcore instance id of a DPS entity: derived, so it needs no table to persist."""
    return hashlib.blake2b(dps_id.encode(), digest_size=8).hexdigest()


def at_id(key: str, dps_id: str) -> str:
    """``xcore:personalized-offer:<instanceId>`` and the like."""
    return f"{XCORE_ID}{KINDS[key]}:{instance_id(dps_id)}"


def container_ids(count: int) -> list[str]:
    """Deterministic container ids: the documented example first, then derived ones."""
    ids = [FIRST_CONTAINER][:count]
    for index in range(1, count):
        digest = hashlib.blake2b(f"sim-xcore-container-{index}".encode(), digest_size=16)
        ids.append(str(uuid.UUID(bytes=digest.digest())))
    return ids


# --------------------------------------------------------------------------- media types

_PARAM: Final = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """``type/sub; a=1; schema="x;version=0.5"`` → the type and its parameters.

    Written here because the schema parameter holds a ``;`` inside quotes, which a
    naive split (aiohttp's included) cuts in two.
    """
    head, sep, rest = header.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(sep + rest):
        value = match[2].strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match[1].lower()] = value
    return head.strip().lower(), params


def _schema_base(schema: str) -> str:
    return schema.partition(";")[0].strip()


def schema_key(schema: str) -> str | None:
    """The offer collection a schema URI names (its version aside), or None."""
    base = _schema_base(schema)
    for key, known in SCHEMAS.items():
        if _schema_base(known) == base:
            return key
    return None


# --------------------------------------------------------------------------- the view


def _reference(where: list[str]) -> str | None:
    """The collection a DPS string at ``where`` refers to, if it is an entity reference."""
    if len(where) == 3 and where[0] == "representations" and where[2] == "placement":
        return "placements"
    if len(where) == 2 and where[0] == "tags":
        return "tags"
    return None


class Ids:
    """Both directions between xcore ids (instance ids and ``@id`` values) and DPS ids.

    DPS → xcore is a hash. xcore → DPS needs a table: it is rebuilt from the store on a
    miss, because entities also come and go through the DPS endpoints, which do not
    tell this module.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._known: dict[str, tuple[str, str]] = {}

    def add(self, key: str, dps_id: str) -> None:
        self._known[instance_id(dps_id)] = (key, dps_id)
        self._known[at_id(key, dps_id)] = (key, dps_id)

    def _rebuild(self) -> None:
        for key in KINDS:
            for doc in self._store.page(key, limit=max(1, self._store.count(key))).results:
                self.add(key, doc["id"])

    def resolve(self, xcore: str) -> tuple[str, str] | None:
        """The (collection, DPS id) of a live entity, or None."""
        for attempt in range(2):
            found = self._known.get(xcore)
            if found is not None and self._store.get(*found) is not None:
                return found
            if attempt == 0:
                self._rebuild()
        return None

    def entries(self) -> Iterator[tuple[str, str, str]]:
        """(xcore id, DPS id, collection) of every entity that has an xcore id."""
        for key in KINDS:
            for doc in self._store.page(key, limit=max(1, self._store.count(key))).results:
                if key.startswith("offers/"):
                    yield instance_id(doc["id"]), doc["id"], key
                yield at_id(key, doc["id"]), doc["id"], key

    def as_mapping(self) -> Mapping[str, str]:
        return _DpsIds(self)


class _DpsIds(Mapping[str, str]):
    """The id map translate's ``IdMap`` reads, resolved from the live store."""

    def __init__(self, ids: Ids) -> None:
        self._ids = ids

    def __getitem__(self, xcore: str) -> str:
        found = self._ids.resolve(xcore) if xcore.startswith(XCORE_ID) else None
        if found is None:
            raise KeyError(xcore)
        return found[1]

    def __iter__(self) -> Iterator[str]:
        return (xcore for xcore, _, _ in self._ids.entries())

    def __len__(self) -> int:
        return sum(1 for _ in self._ids.entries())


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


def _is_content(key: str) -> bool:
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


class XcoreService:
    """The handlers of the xcore endpoints, over one store and its fault machinery."""

    def __init__(self, config: SimConfig, store: Store, faults: Faults, writes: Writes) -> None:
        self._config = config
        self.store = store
        self._faults = faults
        self._writes = writes
        self.ids = Ids(store)
        self.containers = container_ids(config.xcore_containers)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the xcore endpoints (and ``/_sim/xcore-ids``)."""
        router.add_get("/_sim/xcore-ids", self.ids_handler)
        router.add_get(XCORE_BASE, self.home)
        router.add_get(XCORE_BASE + "/", self.home)
        router.add_post(XCORE_BASE + "/{container}/instances", self.create_instance)
        base = XCORE_BASE + "/{container}/instances/{instance}"
        router.add_get(base, self.get_instance)
        router.add_patch(base, self.patch_instance)
        router.add_delete(base, self.delete_instance)

    # -- conversion

    def _refer(self, key: str, dps_id: str) -> str:
        # Only a reference to a live entity becomes an @id: a dangling one stays as the
        # DPS id it is, since no xcore id could be read back from it.
        if self.store.get(key, dps_id) is None:
            return dps_id
        self.ids.add(key, dps_id)
        return at_id(key, dps_id)

    def content(self, doc: Doc) -> Doc:
        """The ``_instance`` of a stored DPS document."""
        fields = {k: v for k, v in doc.items() if _is_content(k)}
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
            if not _is_content(key):
                raise PatchRejected(
                    index, f"{key!r} is a read-only (server-managed) DPS field", "read-only"
                )
        return fields

    def view(self, key: str, doc: Doc, container: str) -> Doc:
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

    # -- requests

    def _container(self, request: web.Request) -> str | web.Response:
        container = request.match_info["container"]
        if container not in self.containers:
            return problem(404, "Not Found", f"no container {container!r}")
        return container

    def _instance(self, request: web.Request) -> tuple[str, str, str] | web.Response:
        """(container, collection, DPS id) of the instance a URL names, or a 404."""
        container = self._container(request)
        if isinstance(container, web.Response):
            return container
        iid = request.match_info["instance"]
        found = self.ids.resolve(iid) if container == self.containers[0] else None
        if found is None or not found[0].startswith("offers/") or iid.startswith(XCORE_ID):
            return problem(404, "Not Found", f"no instance {iid!r} in container {container!r}")
        return container, found[0], found[1]

    @staticmethod
    def _schema_mismatch(key: str, schema: str | None, iid: str) -> web.Response | None:
        if schema is None or schema_key(schema) == key:
            return None
        # xcore finds an instance within the schema asked for: another type is not there.
        return problem(
            404,
            "Not Found",
            f"instance {iid!r} is a {KINDS[key]}, not an instance of schema {schema!r}",
        )

    @staticmethod
    async def _body(request: web.Request) -> Any | web.Response:
        try:
            raw = await request.read()
        except ConnectionResetError:
            raise ClientGone from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return problem(400, "Bad Request", f"The request body is not valid JSON: {exc}")

    @staticmethod
    def _content_type(request: web.Request, expected: str) -> dict[str, str] | web.Response:
        mtype, params = media_type(request.headers.get("Content-Type", ""))
        if mtype != expected:
            return problem(
                400,
                "Bad Request",
                "A valid content-type must be specified",
                expected=f'{expected}; version=1; schema="..."',
            )
        return params

    async def home(self, request: web.Request) -> web.Response:
        """The container listing a client reads its container id from."""
        try:
            filters = [Filter.parse(p) for p in request.query.getall("property", [])]
        except ValueError as exc:
            return problem(400, "Bad Request", str(exc))
        product = request.query.get("product")
        sandbox = request.headers.get("x-sandbox-name", "").strip()
        containers = [
            {
                "instanceId": cid,
                "schemas": [CONTAINER_SCHEMA],
                "productContexts": ["acp"],
                "repo:sandboxId": SANDBOX_ID,
                "repo:sandboxName": sandbox,
                "_instance": {
                    "containerType": "decisioning",
                    "dc:title": f"Decisioning container {n}",
                    "dc:description": "holds the offers"
                    if n == 1
                    else "empty (the simulator keeps offers in the first container)",
                },
                "_links": {"self": {"href": f"{XCORE_BASE}/{cid}"}},
            }
            for n, cid in enumerate(self.containers, 1)
        ]
        chosen = [
            c
            for c in containers
            if (product is None or product in c["productContexts"])
            and all(f.matches(c) for f in filters)
        ]
        self_href = XCORE_BASE + "/" + (f"?{request.query_string}" if request.query_string else "")
        return _answer(
            {"_embedded": {CONTAINER_REL: chosen}, "_links": {"self": {"href": self_href}}},
            HOME_TYPE,
        )

    async def get_instance(self, request: web.Request) -> web.Response:
        found = self._instance(request)
        if isinstance(found, web.Response):
            return found
        container, key, dps_id = found
        doc = self.store.get(key, dps_id)
        if doc is None:  # deleted since resolve: only a zombie write could do that
            return problem(404, "Not Found", f"no instance {request.match_info['instance']!r}")
        _, params = media_type(request.headers.get("Accept", ""))
        mismatch = self._schema_mismatch(key, params.get("schema"), request.match_info["instance"])
        if mismatch is not None:
            return mismatch
        none_match = request.headers.get("If-None-Match")
        if none_match is not None and _etag_text(none_match) == str(doc["etag"]):
            return web.Response(status=304)
        return _answer(self.view(key, doc, container), f'{HAL_TYPE}; schema="{SCHEMAS[key]}"')

    async def patch_instance(self, request: web.Request) -> web.Response:
        found = self._instance(request)
        if isinstance(found, web.Response):
            return found
        container, key, dps_id = found
        iid = request.match_info["instance"]
        params = self._content_type(request, PATCH_TYPE)
        if isinstance(params, web.Response):
            return params
        mismatch = self._schema_mismatch(key, params.get("schema"), iid)
        if mismatch is not None:
            return mismatch
        etag = if_match(request, self._config.ignore_if_match)
        if isinstance(etag, web.Response):
            return etag
        ops = await self._body(request)
        if isinstance(ops, web.Response):
            return ops
        client_id, user = writer(request)

        def mutate() -> web.Response:
            # Read, convert and write in one synchronous step: atomic like a DPS write.
            doc = self.store.get(key, dps_id)
            if doc is None:
                raise NotFound(iid)
            if etag is not None and doc["etag"] != etag:
                raise PreconditionFailed(iid)
            fields = self.patch_view(self.view(key, doc, container), ops)
            old = {k: v for k, v in doc.items() if _is_content(k)}
            # Top-level replaces: whole values, so no list-diff subtleties can creep in.
            dps_ops: list[Doc] = [{"op": "remove", "path": _ptr(k)} for k in old if k not in fields]
            dps_ops += [
                {"op": "replace" if k in old else "add", "path": _ptr(k), "value": v}
                for k, v in fields.items()
                if k not in old or old[k] != v
            ]
            updated = self.store.patch(
                key, dps_id, dps_ops, if_match=None, client_id=client_id, user=user
            )
            return _answer(self.receipt(key, updated), RECEIPT_TYPE)

        def concurrent() -> None:
            self._writes.concurrent_write(key, dps_id)

        return await self._faults.write(request, mutate, concurrent, conflict_status=409)

    async def create_instance(self, request: web.Request) -> web.Response:
        container = self._container(request)
        if isinstance(container, web.Response):
            return container
        params = self._content_type(request, CREATE_TYPE)
        if isinstance(params, web.Response):
            return params
        schema = params.get("schema", "")
        key = schema_key(schema)
        if key is None:
            return problem(
                400,
                "Bad Request",
                f"schema {schema!r} is not one this simulator creates "
                f"(expected {SCHEMAS['offers/personalized']} or {SCHEMAS['offers/fallback']})",
            )
        if container != self.containers[0]:
            return problem(
                403, "Forbidden", f"container {container!r} holds no offers in this simulator"
            )
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body, dict):
            return problem(400, "Bad Request", "The request body must be a JSON object")
        try:
            fields = self.to_dps(body, set(), None)
        except PatchRejected as exc:
            return problem(422, "Unprocessable Entity", str(exc))
        client_id, user = writer(request)

        def mutate() -> web.Response:
            doc = self.store.create(key, fields, client_id=client_id, user=user)
            self.ids.add(key, doc["id"])
            return _answer(self.receipt(key, doc), RECEIPT_TYPE, self._config.create_status)

        return await self._faults.write(request, mutate, conflict_status=409)

    async def delete_instance(self, request: web.Request) -> web.Response:
        found = self._instance(request)
        if isinstance(found, web.Response):
            return found
        _, key, dps_id = found
        iid = request.match_info["instance"]
        etag = if_match(request, self._config.ignore_if_match)
        if isinstance(etag, web.Response):
            return etag

        def mutate() -> web.Response:
            doc = self.store.get(key, dps_id)
            if doc is None:
                raise NotFound(iid)
            if etag is not None and doc["etag"] != etag:
                raise PreconditionFailed(iid)
            self.store.delete(key, dps_id, if_match=None)
            return web.Response(status=200)

        return await self._faults.write(request, mutate, conflict_status=409)

    async def ids_handler(self, _request: web.Request) -> web.Response:
        """NDJSON ``{"xcore", "dps"}`` lines: ``bulkpatch translate --id-map`` reads it as is."""
        body = b"".join(
            orjson.dumps({"xcore": xcore, "dps": dps}, option=orjson.OPT_APPEND_NEWLINE)
            for xcore, dps, _ in self.ids.entries()
        )
        return web.Response(body=body, headers={"Content-Type": "application/x-ndjson"})


def _ptr(key: str) -> str:
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _etag_text(header: str) -> str:
    value = header.strip()
    return value.removeprefix("W/").strip('"')


def _answer(body: Any, content_type: str, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers={"Content-Type": content_type}
    )
