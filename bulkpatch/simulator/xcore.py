"""The legacy xcore API (API notes §5), served over the same store as DPS.

Legacy scripts still speak xcore, and the point of simulating it is to watch one offer
through both dialects: an xcore write is visible to a DPS read at once and vice versa.
So nothing here stores anything of its own. The store keeps DPS documents with DPS ids;
xcore instances are a *view* computed on every read (``xcore_view``), their ids are
derived from the DPS ids (``xcore_ids``), and the media types a request must carry are
in ``xcore_media``. This module holds the endpoints: the home (container listing),
reading an instance, and patching, creating and deleting one.

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

from typing import Any, Final

import orjson
from aiohttp import web

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.faults import Faults
from bulkpatch.simulator.store import (
    SANDBOX_ID,
    Doc,
    Filter,
    NotFound,
    PatchRejected,
    PreconditionFailed,
    Store,
)
from bulkpatch.simulator.wire import XCORE_BASE, if_match, problem, read_json, writer
from bulkpatch.simulator.writes import Writes
from bulkpatch.simulator.xcore_ids import (
    FIRST_CONTAINER,
    Ids,
    container_ids,
    instance_id,
)
from bulkpatch.simulator.xcore_media import (
    CREATE_TYPE,
    HAL_TYPE,
    HOME_TYPE,
    PATCH_TYPE,
    RECEIPT_TYPE,
    SCHEMAS,
    content_type,
    media_type,
    schema_key,
    schema_mismatch,
)
from bulkpatch.simulator.xcore_view import View, is_content
from bulkpatch.xcore_map import XCORE_ID

# The ids are named here too: the xcore tests reach them through this module.
__all__ = ["FIRST_CONTAINER", "XcoreService", "container_ids", "instance_id"]

CONTAINER_REL: Final = "https://ns.adobe.com/experience/xcore/container"
CONTAINER_SCHEMA: Final = "https://ns.adobe.com/experience/xcore/container;version=0.1"
# What curl sends with -d and no -H 'Content-Type: ...', and no type at all.
UNTYPED: Final = frozenset({"", "application/x-www-form-urlencoded"})


class XcoreService:
    """The handlers of the xcore endpoints, over one store and its fault machinery."""

    def __init__(self, config: SimConfig, store: Store, faults: Faults, writes: Writes) -> None:
        self._config = config
        self.store = store
        self._faults = faults
        self._writes = writes
        self.ids = Ids(store)
        self._view = View(store, self.ids)
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
        mismatch = schema_mismatch(key, params.get("schema"), request.match_info["instance"])
        if mismatch is not None:
            return mismatch
        none_match = request.headers.get("If-None-Match")
        if none_match is not None and _etag_text(none_match) == str(doc["etag"]):
            return web.Response(status=304)
        return _answer(
            self._view.instance(key, doc, container), f'{HAL_TYPE}; schema="{SCHEMAS[key]}"'
        )

    async def patch_instance(self, request: web.Request) -> web.Response:
        found = self._instance(request)
        if isinstance(found, web.Response):
            return found
        container, key, dps_id = found
        iid = request.match_info["instance"]
        params = self._patch_params(request)
        if isinstance(params, web.Response):
            return params
        mismatch = schema_mismatch(key, params.get("schema"), iid)
        if mismatch is not None:
            return mismatch
        etag = if_match(request, self._config.ignore_if_match)
        if isinstance(etag, web.Response):
            return etag
        ops = await read_json(request)
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
            fields = self._view.patch_view(self._view.instance(key, doc, container), ops)
            old = {k: v for k, v in doc.items() if is_content(k)}
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
            return _answer(self._view.receipt(key, updated), RECEIPT_TYPE)

        def concurrent() -> None:
            self._writes.concurrent_write(key, dps_id)

        return await self._faults.write(request, mutate, concurrent, conflict_status=409)

    def _patch_params(self, request: web.Request) -> dict[str, str] | web.Response:
        """The patch media type's parameters; under ``--examples``, a PATCH that names no
        type, or curl's default form type (the legacy page's curl names none), is taken
        as a JSON Patch."""
        if self._config.untyped_xcore_patch:
            mtype, _ = media_type(request.headers.get("Content-Type", ""))
            if mtype in UNTYPED:
                return {}
        return content_type(request, PATCH_TYPE)

    async def create_instance(self, request: web.Request) -> web.Response:
        container = self._container(request)
        if isinstance(container, web.Response):
            return container
        params = content_type(request, CREATE_TYPE)
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
        body = await read_json(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body, dict):
            return problem(400, "Bad Request", "The request body must be a JSON object")
        try:
            fields = self._view.to_dps(body, set(), None)
        except PatchRejected as exc:
            return problem(422, "Unprocessable Entity", str(exc))
        client_id, user = writer(request)

        def mutate() -> web.Response:
            doc = self.store.create(key, fields, client_id=client_id, user=user)
            self.ids.add(key, doc["id"])
            return _answer(self._view.receipt(key, doc), RECEIPT_TYPE, self._config.create_status)

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


def _answer(body: Any, media: str, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers={"Content-Type": media})
