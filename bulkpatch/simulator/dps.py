"""The DPS service's endpoints: list, read, create, patch, put and delete entities.

What a request meets once the gateway let it through: the entity kind and offer type in
its URL (and a decision item's ``x-schema-id``), its ``If-Match`` and body, then (for a
write) the fault drawn for it and the store. Decision Management's kinds and
Experience Decisioning's share these endpoints; what sets the latter apart is ``exd``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.exd import WHOLE_OBJECT_KINDS, Decisioning
from bulkpatch.simulator.faults import Faults
from bulkpatch.simulator.store import (
    ENTITY_KINDS,
    OFFER_TYPES,
    Filter,
    Store,
    collection_key,
)
from bulkpatch.simulator.wire import DPS_BASE, if_match, json_answer, problem, read_json, writer
from bulkpatch.simulator.writes import Writes

JSON_TYPES: Final = frozenset({"application/json", "application/json-patch+json"})
MAX_LIMIT: Final = 1000
# What a list entry keeps with ``partial_list``: a summary, as some list endpoints
# answer (the Decisioning pages say only "list envelope" for several kinds), its
# kind's marker members included so a filter on them still means the same.
PARTIAL_FIELDS: Final = frozenset(
    {"id", "etag", "name", "status", "created", "modified", "exdRule", "exdFunction"}
)
DEFAULT_LIMIT: Final = 20


class DpsService:
    """The handlers of the DPS endpoints, over one store and its fault machinery."""

    def __init__(self, config: SimConfig, store: Store, faults: Faults, writes: Writes) -> None:
        self._config = config
        self._store = store
        self._faults = faults
        self._writes = writes
        self._exd = Decisioning(config, store)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(DPS_BASE + "/{kind}", self.list_entities)
        router.add_post(DPS_BASE + "/{kind}", self.create_entity)
        router.add_get(DPS_BASE + "/{kind}/{id}", self.get_entity)
        router.add_patch(DPS_BASE + "/{kind}/{id}", self.patch_entity)
        router.add_put(DPS_BASE + "/{kind}/{id}", self.put_entity)
        router.add_delete(DPS_BASE + "/{kind}/{id}", self.delete_entity)

    # -- reading a request

    def _collection(self, request: web.Request) -> str | web.Response:
        kind = request.match_info["kind"]
        if kind not in ENTITY_KINDS:
            return problem(404, "Not Found", f"unknown entity kind {kind!r}")
        if kind != "offers":
            return self._exd.schema_refusal(request, kind) or kind
        offer_type = request.query.get("offer-type", "").lower()
        if offer_type not in OFFER_TYPES:
            return problem(400, "Bad Request", "offer-type must be 'personalized' or 'fallback'")
        return collection_key(kind, offer_type)

    # -- reads

    async def get_entity(self, request: web.Request) -> web.Response:
        key = self._collection(request)
        if isinstance(key, web.Response):
            return key
        doc = self._store.get(key, request.match_info["id"])
        if doc is None:
            return problem(404, "Not Found", f"no entity with id {request.match_info['id']!r}")
        none_match = request.headers.get("If-None-Match")
        if none_match is not None and none_match.strip().strip('"') == str(doc["etag"]):
            return web.Response(status=304)
        return json_answer(doc)

    async def list_entities(self, request: web.Request) -> web.Response:
        key = self._collection(request)
        if isinstance(key, web.Response):
            return key
        query = request.query
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError
        except ValueError:
            return problem(400, "Bad Request", f"limit must be an integer from 1 to {MAX_LIMIT}")
        try:
            filters = [Filter.parse(p) for p in query.getall("property", [])]
        except ValueError as exc:
            return problem(400, "Bad Request", str(exc))
        orderby = query.get("orderby")
        start = query.get("start")
        try:
            page = self._store.page(key, filters=filters, orderby=orderby, limit=limit, start=start)
        except (ValueError, TypeError):
            return problem(400, "Bad Request", "start is not a cursor this server issued")
        results = page.results
        if self._config.partial_list:
            results = [{k: v for k, v in doc.items() if k in PARTIAL_FIELDS} for doc in results]
        links: dict[str, Any] = {}
        if page.next_cursor is not None:
            links["next"] = {"href": _next_href(request, limit, page.next_cursor)}
        return json_answer(
            {
                "results": results,
                "count": len(results),
                "total": page.total,
                "_links": links,
            }
        )

    # -- writes

    async def create_entity(self, request: web.Request) -> web.Response:
        key = self._collection(request)
        if isinstance(key, web.Response):
            return key
        body = await read_json(request, JSON_TYPES)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body, dict):
            return problem(400, "Bad Request", "The request body must be a JSON object")
        client_id, user = writer(request)

        def mutate() -> web.Response:
            self._exd.check_create(key, body)
            doc = self._store.create(key, body, client_id=client_id, user=user)
            self._exd.finish_create(key, doc)
            return json_answer(self._exd.receipt(key, doc), self._config.create_status)

        return await self._faults.write(request, mutate)

    async def patch_entity(self, request: web.Request) -> web.Response:
        key = self._collection(request)
        if isinstance(key, web.Response):
            return key
        etag = if_match(request, self._config.ignore_if_match)
        if isinstance(etag, web.Response):
            return etag
        ops = await read_json(request, JSON_TYPES)
        if isinstance(ops, web.Response):
            return ops
        if isinstance(ops, dict) and key in WHOLE_OBJECT_KINDS:
            # The pages' own curl for a whole-object kind sends PATCH with the object.
            return await self._replace(request, key, ops, etag)
        entity_id = request.match_info["id"]
        client_id, user = writer(request)

        def mutate() -> web.Response:
            doc = self._store.patch(
                key, entity_id, ops, if_match=etag, client_id=client_id, user=user
            )
            return json_answer(self._exd.receipt(key, doc))

        return await self._faults.write(request, mutate, self._concurrent(key, entity_id))

    async def put_entity(self, request: web.Request) -> web.Response:
        """A whole-object write (ranking formulas, eligibility rules, exd-placements)."""
        key = self._collection(request)
        if isinstance(key, web.Response):
            return key
        if key not in WHOLE_OBJECT_KINDS:
            answer = problem(405, "Method Not Allowed", f"{key} are updated by PATCH")
            answer.headers["Allow"] = "GET, PATCH, DELETE"
            return answer
        etag = if_match(request, self._config.ignore_if_match)
        if isinstance(etag, web.Response):
            return etag
        body = await read_json(request, JSON_TYPES)
        if isinstance(body, web.Response):
            return body
        return await self._replace(request, key, body, etag)

    async def _replace(
        self, request: web.Request, key: str, body: Any, etag: int | None
    ) -> web.Response:
        refused = self._exd.body_refusal(body)
        if refused is not None:
            return refused
        entity_id = request.match_info["id"]
        client_id, user = writer(request)

        def mutate() -> web.Response:
            doc = self._store.replace(
                key, entity_id, body, if_match=etag, client_id=client_id, user=user
            )
            return json_answer(self._exd.receipt(key, doc))

        return await self._faults.write(request, mutate, self._concurrent(key, entity_id))

    def _concurrent(self, key: str, entity_id: str) -> Callable[[], None]:
        def concurrent() -> None:
            self._writes.concurrent_write(key, entity_id)

        return concurrent

    async def delete_entity(self, request: web.Request) -> web.Response:
        key = self._collection(request)
        if isinstance(key, web.Response):
            return key
        etag = if_match(request, self._config.ignore_if_match)
        if isinstance(etag, web.Response):
            return etag
        refused = self._exd.delete_refusal(key)
        if refused is not None:
            return refused
        entity_id = request.match_info["id"]

        def mutate() -> web.Response:
            self._exd.check_delete(key, self._store.get(key, entity_id))
            self._store.delete(key, entity_id, if_match=etag)
            return web.Response(status=200)

        return await self._faults.write(request, mutate)


def _next_href(request: web.Request, limit: int, cursor: str) -> str:
    # Written as Adobe documents it: relative to the DPS base, offer-type in upper case
    # and last, e.g. /offers?orderby=-modified&limit=2&start=...&offer-type=PERSONALIZED
    kind = request.match_info["kind"]
    query = request.query
    parts = []
    if "orderby" in query:
        parts.append("orderby=" + quote(query["orderby"], safe="-"))
    parts.append(f"limit={limit}")
    parts.append("start=" + quote(cursor, safe=""))
    parts.extend("property=" + quote(p, safe="") for p in query.getall("property", []))
    if kind == "offers":
        parts.append("offer-type=" + query["offer-type"].upper())
    return f"/{kind}?" + "&".join(parts)
