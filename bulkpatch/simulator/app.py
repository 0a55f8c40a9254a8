"""The simulator's HTTP layer: the DPS API, the gateway in front of it, IMS, and faults.

It answers as the real service does where that is documented (the API notes and the
seed pages) and as its settings say where it is not. The order of checks follows a real
request's path: the throttle and the latency's jitter at the gateway, then credentials
and headers, then the service (content type, body, offer type), then the fault drawn for
a write, then the store; the answer leaves the latency after the request arrived.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Final
from urllib.parse import quote

import orjson
from aiohttp import web

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.store import (
    ENTITY_KINDS,
    OFFER_TYPES,
    Doc,
    Filter,
    NotFound,
    PatchRejected,
    PreconditionFailed,
    Store,
    collection_key,
    receipt,
)

DPS_BASE: Final = "/data/core/dps"
# The legacy API (bulkpatch.simulator.xcore), behind the same gateway as DPS.
XCORE_BASE: Final = "/data/core/xcore"
IMS_PATH: Final = "/ims/token/v3"
# The field the simulated concurrent writer changes: a test of the final state leaves it
# aside, everything else must match exactly.
CONCURRENT_FIELD: Final = "simConcurrentWriter"
JSON_TYPES: Final = frozenset({"application/json", "application/json-patch+json"})
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 20

_JSON_HEADERS: Final = {"Content-Type": "application/json"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- answers


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers={**_JSON_HEADERS, **(headers or {})}
    )


def gateway_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The API gateway's error shape (API notes §3)."""
    return _json({"error_code": code, "message": message}, status, headers)


def problem(status: int, title: str, detail: str, **report: Any) -> web.Response:
    """The service's problem-document shape (API notes §3)."""
    body = {
        "type": f"https://ns.adobe.com/aep/errors/ODM-{status}",
        "title": title,
        "status": status,
        "detail": detail,
        "report": report,
    }
    return _json(body, status)


class Dropped(Exception):
    """Raised after the connection was aborted on purpose, so no answer is written."""


class ClientGone(Exception):
    """The client went away before its answer was written: nobody is left to read it."""


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
    raise Dropped


# --------------------------------------------------------------------------- throttle


class TokenBucket:
    """A token bucket over all API requests, its rate optionally following a schedule.

    The schedule's clock starts at the first write, so a client's start-up reads do not
    eat into the first phase.
    """

    def __init__(self, config: SimConfig, clock: Callable[[], float]) -> None:
        self._schedule = config.rate_schedule or ((0.0, config.rate_limit or 0.0),)
        self._burst = float(config.burst)
        self._clock = clock
        self._tokens = self._burst
        self._last = clock()
        self.first_write: float | None = None

    def rate(self, now: float) -> float:
        elapsed = 0.0 if self.first_write is None else now - self.first_write
        current = self._schedule[0][1]
        for at, rate in self._schedule:
            if at <= elapsed:
                current = rate
        return current

    def take(self) -> float | None:
        """Take a token; None if granted, else the seconds until one is available."""
        now = self._clock()
        rate = self.rate(now)
        self._tokens = min(self._burst, self._tokens + (now - self._last) * rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rate


# --------------------------------------------------------------------------- stats


class Stats:
    """What the simulator saw; served at ``/_sim/stats`` and printed at exit."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[str] = Counter()
        self.throttled = 0
        self.client_gone = 0
        self.tokens_issued = 0
        self.pending_zombies = 0
        self.pending_late = 0
        # Applied writes per whole second since the first write: what a throttle
        # benchmark compares with the limit.
        self.writes_by_second: Counter[int] = Counter()
        self.started = time.monotonic()

    def as_dict(self, store: Store) -> dict[str, Any]:
        by_method: dict[str, dict[str, int]] = {}
        for (method, status), n in sorted(self.requests.items()):
            by_method.setdefault(method, {})[status] = n
        return {
            "requests": by_method,
            "requests_total": sum(self.requests.values()),
            "throttled_429": self.throttled,
            "client_gone": self.client_gone,
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "pending_delayed_writes": self.pending_zombies,
            "pending_late_answers": self.pending_late,
            "writes_applied": store.writes_applied,
            "writes_by_second": {str(k): v for k, v in sorted(self.writes_by_second.items())},
            "tokens_issued": self.tokens_issued,
            "entities": {key: store.count(key) for key in store.collections()},
            "uptime_s": round(time.monotonic() - self.started, 3),
        }


# --------------------------------------------------------------------------- simulator


class Simulator:
    """One simulated Offer Library: its store, its gateway state and its handlers."""

    def __init__(self, config: SimConfig, store: Store | None = None) -> None:
        self.config = config
        self.store = store if store is not None else Store()
        self.stats = Stats()
        self._rng = random.Random(config.fault_seed)
        self._latency_rng = random.Random(
            None if config.fault_seed is None else config.fault_seed + 1
        )
        self._bucket = TokenBucket(config, time.monotonic) if config.throttled else None
        self._issued: dict[str, float] = {}  # IMS token -> expiry (monotonic seconds)
        self._pending: set[asyncio.Task[Any]] = set()
        self._first_write: float | None = None
        # Called with the count of applied writes after each one: lets a test act at an
        # exact point of a run (stop a client, say) without polling.
        self.write_observers: list[Callable[[int], None]] = []
        # Drawn on every write: computed once, not from the dataclass fields each time.
        self._exclusive_faults = config.faults.exclusive()

    # -- app

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app[SIMULATOR] = self
        r = app.router
        r.add_post(IMS_PATH, self.ims_token)
        r.add_get("/_sim/stats", self.stats_handler)
        r.add_get("/_sim/settle", self.settle_handler)
        r.add_get("/_sim/dump", self.dump_handler)
        r.add_get(DPS_BASE + "/{kind}", self.list_entities)
        r.add_post(DPS_BASE + "/{kind}", self.create_entity)
        r.add_get(DPS_BASE + "/{kind}/{id}", self.get_entity)
        r.add_patch(DPS_BASE + "/{kind}/{id}", self.patch_entity)
        r.add_delete(DPS_BASE + "/{kind}/{id}", self.delete_entity)
        # Imported here: the xcore module builds on this one.
        from bulkpatch.simulator.xcore import add_routes

        add_routes(app)
        app.on_shutdown.append(self._cancel_pending)
        return app

    async def _cancel_pending(self, _app: web.Application) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        api = request.path.startswith((DPS_BASE, XCORE_BASE))
        try:
            if api:
                response = await self._api(request, handler)
            else:
                response = await handler(request)
        except Dropped:
            self.stats.requests[(request.method, "dropped")] += 1
            raise asyncio.CancelledError from None
        except ClientGone:
            # Quietly: a client that timed out (during --latency-ms, say) is routine, and
            # aiohttp would otherwise log a traceback for each one.
            self.stats.requests[(request.method, "client_gone")] += 1
            self.stats.client_gone += 1
            raise asyncio.CancelledError from None
        except web.HTTPException as exc:
            self.stats.requests[(request.method, str(exc.status))] += 1
            raise
        self.stats.requests[(request.method, str(response.status))] += 1
        request_id = request.headers.get("x-request-id")
        if request_id:
            response.headers["x-request-id"] = request_id
        return response

    # -- the gateway

    async def _api(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The gateway, then the service, then the network's latency on the way back.

        The answer leaves ``latency_ms`` (plus this request's jitter) after the request
        arrived, however long the work took within that: a fixed-latency network, as
        Little's law assumes. The work is done on arrival, not after the wait, because a
        server that sleeps first wakes every request that arrived together at the same
        instant and then works through them in one turn of its loop, and everything that
        arrives during that turn is read together again: the requests would travel in
        convoys, each one waiting for the whole convoy's work.

        The jitter is waited before the work: requests sent close together can overtake
        each other, as on a real network. A client that goes away during the jitter never
        has its request read; one that goes away during the latency has its write applied
        and misses the answer, the case a client cannot tell from a lost request.
        """
        if self._bucket is not None:
            wait = self._bucket.take()
            if wait is not None:
                self.stats.throttled += 1
                return self._too_many(self.config.retry_after, wait)
        cfg = self.config
        if not (cfg.latency_ms or cfg.latency_jitter_ms):
            return self._admit(request) or await handler(request)
        loop = asyncio.get_running_loop()
        jitter = self._latency_rng.random() * cfg.latency_jitter_ms / 1000
        due = loop.time() + cfg.latency_ms / 1000 + jitter
        if jitter:
            await asyncio.sleep(jitter)
        try:
            response = self._admit(request) or await handler(request)
        except web.HTTPException:
            await self._answer_at(request, due)
            raise
        await self._answer_at(request, due)
        return response

    @staticmethod
    async def _answer_at(request: web.Request, due: float) -> None:
        delay = due - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        if request.transport is None or request.transport.is_closing():
            raise ClientGone

    def _admit(self, request: web.Request) -> web.Response | None:
        """Credentials and the API's headers: None when the request may go on."""
        cfg = self.config
        headers = request.headers
        api_key = headers.get("x-api-key", "").strip()
        if not api_key:
            return gateway_error(403, "403000", "Api Key is required")
        if cfg.api_key is not None and api_key != cfg.api_key:
            return gateway_error(403, "403003", "Api Key is invalid")
        auth = headers.get("Authorization", "").strip()
        if not auth:
            return gateway_error(403, "403010", "Oauth token is missing.")
        scheme, _, token = auth.partition(" ")
        # The seed pages' curl sends "Bearer  {TOKEN}" (two spaces): tolerate whitespace.
        if scheme.lower() != "bearer" or not self._token_valid(token.strip()):
            return gateway_error(401, "401013", "Oauth token is not valid")
        org = headers.get("x-gw-ims-org-id", "").strip()
        if not org:
            return gateway_error(400, "400003", "Missing header: x-gw-ims-org-id")
        if cfg.org_id is not None and org != cfg.org_id:
            return gateway_error(403, "403003", "The organization is not valid for this API key")
        if not headers.get("x-sandbox-name", "").strip():
            return gateway_error(400, "400003", "Missing header: x-sandbox-name")
        return None

    def _token_valid(self, token: str) -> bool:
        if not token:
            return False
        if secrets.compare_digest(token, self.config.access_token):
            return True
        expiry = self._issued.get(token)
        return expiry is not None and expiry > time.monotonic()

    def _too_many(self, form: str, wait: float) -> web.Response:
        headers: dict[str, str] = {}
        if form == "seconds":
            headers["Retry-After"] = str(max(0, math.ceil(wait)))
        elif form == "date":
            when = datetime.now(UTC) + timedelta(seconds=wait)
            headers["Retry-After"] = format_datetime(when, usegmt=True)
        return gateway_error(429, "429050", "Too many requests", **headers)

    # -- IMS

    async def ims_token(self, request: web.Request) -> web.Response:
        """OAuth Server-to-Server client-credentials grant (API notes §4)."""
        try:
            form = await request.post()
        except ConnectionResetError:
            raise ClientGone from None
        if form.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, 400)
        client_id = str(form.get("client_id", ""))
        client_secret = str(form.get("client_secret", ""))
        if not secrets.compare_digest(client_id, self.config.client_id):
            return _json(
                {"error": "invalid_client", "error_description": "invalid client_id parameter"}, 400
            )
        if not secrets.compare_digest(client_secret, self.config.client_secret):
            return _json(
                {"error": "invalid_client", "error_description": "invalid client_secret parameter"},
                401,
            )
        token = "sim-ims-" + secrets.token_urlsafe(32)
        self._issued[token] = time.monotonic() + self.config.token_ttl_s
        self.stats.tokens_issued += 1
        return _json(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": int(self.config.token_ttl_s),
            }
        )

    def _expire_token(self, request: web.Request) -> None:
        token = request.headers.get("Authorization", "").partition(" ")[2].strip()
        if token in self._issued:
            self._issued[token] = 0.0

    # -- inspection

    async def stats_handler(self, _request: web.Request) -> web.Response:
        return _json(self.stats.as_dict(self.store))

    async def settle_handler(self, request: web.Request) -> web.Response:
        """Answer once no delayed write is pending (or after ``timeout`` seconds)."""
        timeout = float(request.query.get("timeout", "30"))
        deadline = time.monotonic() + timeout
        while self._pending and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._pending), timeout=left)
        return _json({"settled": not self._pending, **self.stats.as_dict(self.store)})

    async def dump_handler(self, _request: web.Request) -> web.Response:
        return _json(self.store.dump())

    # -- the DPS service

    def _collection(self, request: web.Request) -> str | web.Response:
        kind = request.match_info["kind"]
        if kind not in ENTITY_KINDS:
            return problem(404, "Not Found", f"unknown entity kind {kind!r}")
        if kind != "offers":
            return kind
        offer_type = request.query.get("offer-type", "").lower()
        if offer_type not in OFFER_TYPES:
            return problem(400, "Bad Request", "offer-type must be 'personalized' or 'fallback'")
        return collection_key(kind, offer_type)

    @staticmethod
    def _if_match(request: web.Request) -> int | web.Response | None:
        raw = request.headers.get("If-Match")
        if raw is None:
            return None
        value = raw.strip()
        if value.startswith("W/"):
            value = value[2:]
        value = value.strip('"')
        try:
            return int(value)
        except ValueError:
            return problem(400, "Bad Request", f"If-Match must be an etag number, got {raw!r}")

    async def _json_body(self, request: web.Request) -> Any | web.Response:
        if request.content_type not in JSON_TYPES:
            return problem(400, "Bad Request", "A valid content-type must be specified")
        try:
            raw = await request.read()
        except ConnectionResetError:
            raise ClientGone from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return problem(400, "Bad Request", f"The request body is not valid JSON: {exc}")

    async def get_entity(self, request: web.Request) -> web.Response:
        key = self._collection(request)
        if isinstance(key, web.Response):
            return key
        doc = self.store.get(key, request.match_info["id"])
        if doc is None:
            return problem(404, "Not Found", f"no entity with id {request.match_info['id']!r}")
        none_match = request.headers.get("If-None-Match")
        if none_match is not None and none_match.strip().strip('"') == str(doc["etag"]):
            return web.Response(status=304)
        return _json(doc)

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
            page = self.store.page(key, filters=filters, orderby=orderby, limit=limit, start=start)
        except (ValueError, TypeError):
            return problem(400, "Bad Request", "start is not a cursor this server issued")
        links: dict[str, Any] = {}
        if page.next_cursor is not None:
            links["next"] = {"href": self._next_href(request, limit, page.next_cursor)}
        return _json(
            {
                "results": page.results,
                "count": len(page.results),
                "total": page.total,
                "_links": links,
            }
        )

    @staticmethod
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

    # -- writes

    def _note_write(self) -> None:
        now = time.monotonic()
        if self._first_write is None:
            self._first_write = now
            if self._bucket is not None:
                self._bucket.first_write = now
        self.stats.writes_by_second[int(now - self._first_write)] += 1
        for observer in self.write_observers:
            observer(self.store.writes_applied)

    def _run(
        self, mutate: Callable[[], web.Response], conflict_status: int | None = None
    ) -> web.Response:
        """Apply a write now, mapping the store's refusals to answers.

        ``conflict_status`` overrides the configured one: xcore documents its 409.
        """
        cfg = self.config
        conflict = conflict_status or cfg.conflict_status
        try:
            response = mutate()
        except NotFound as exc:
            return problem(404, "Not Found", f"no entity with id {str(exc)!r}")
        except PreconditionFailed as exc:
            title = "Conflict" if conflict == 409 else "Precondition Failed"
            return problem(conflict, title, f"If-Match does not match the current etag of {exc}")
        except PatchRejected as exc:
            if exc.kind == "test":
                status = cfg.test_failed_status
            elif exc.kind in ("read-only", "unprocessable"):
                status = 422
            else:
                status = 400
            return problem(status, "Patch rejected", str(exc), operation=exc.index)
        self._note_write()
        return response

    async def _write(
        self,
        request: web.Request,
        mutate: Callable[[], web.Response],
        concurrent: Callable[[], None] | None = None,
        conflict_status: int | None = None,
    ) -> web.Response:
        """Draw this write's fault and carry it out, or apply the write plainly."""
        rng = self._rng
        draw = rng.random()
        fault: str | None = None
        for name, p in self._exclusive_faults:
            if draw < p:
                fault = name
                break
            draw -= p
        if rng.random() < self.config.faults.concurrent_writer and concurrent is not None:
            self.stats.faults["concurrent_writer"] += 1
            concurrent()
        if fault is None:
            return self._run(mutate, conflict_status)
        self.stats.faults[fault] += 1
        if fault in ("error_500", "error_502", "error_503"):
            return self._server_error(int(fault[-3:]))
        if fault == "throttle_429":
            form = self.config.fault_retry_after
            if form == "mixed":
                form = rng.choice(("seconds", "date", "none"))
            return self._too_many(form, float(self.config.fault_retry_after_s))
        if fault == "token_expiry":
            self._expire_token(request)
            return gateway_error(401, "401013", "Oauth token is not valid")
        if fault == "drop_before":
            _drop(request)
        if fault == "drop_after":
            self._run(mutate, conflict_status)
            _drop(request)
        if fault == "late_answer":
            response = self._run(mutate, conflict_status)
            self.stats.pending_late += 1
            try:
                await asyncio.sleep(self.config.late_ms / 1000)
            finally:
                self.stats.pending_late -= 1
            return response
        # zombie_write: the service holds the write and applies it after the client gave
        # up. It runs in its own task so the client's disconnect cannot cancel it.
        task = asyncio.create_task(self._zombie(mutate, conflict_status))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return await asyncio.shield(task)

    async def _zombie(
        self, mutate: Callable[[], web.Response], conflict_status: int | None = None
    ) -> web.Response:
        self.stats.pending_zombies += 1
        try:
            await asyncio.sleep(self.config.zombie_ms / 1000)
            return self._run(mutate, conflict_status)
        finally:
            self.stats.pending_zombies -= 1

    @staticmethod
    def _server_error(status: int) -> web.Response:
        if status == 500:
            return problem(
                500,
                "Internal Server Error",
                "If making many simultaneous calls, you may be reaching the API limit.",
            )
        reason = "Bad Gateway" if status == 502 else "Service Unavailable"
        return gateway_error(status, f"{status}000", reason)

    def _writer(self, request: web.Request) -> tuple[str, str]:
        client_id = request.headers.get("x-api-key", "").strip()
        return client_id, f"{client_id}@AdobeID"

    async def create_entity(self, request: web.Request) -> web.Response:
        key = self._collection(request)
        if isinstance(key, web.Response):
            return key
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body, dict):
            return problem(400, "Bad Request", "The request body must be a JSON object")
        client_id, user = self._writer(request)

        def mutate() -> web.Response:
            doc = self.store.create(key, body, client_id=client_id, user=user)
            return _json(receipt(doc), self.config.create_status)

        return await self._write(request, mutate)

    async def patch_entity(self, request: web.Request) -> web.Response:
        key = self._collection(request)
        if isinstance(key, web.Response):
            return key
        if_match = self._if_match(request)
        if isinstance(if_match, web.Response):
            return if_match
        ops = await self._json_body(request)
        if isinstance(ops, web.Response):
            return ops
        if self.config.ignore_if_match:
            if_match = None
        entity_id = request.match_info["id"]
        client_id, user = self._writer(request)

        def mutate() -> web.Response:
            doc = self.store.patch(
                key, entity_id, ops, if_match=if_match, client_id=client_id, user=user
            )
            return _json(receipt(doc))

        def concurrent() -> None:
            self._concurrent_write(key, entity_id)

        return await self._write(request, mutate, concurrent)

    def _concurrent_write(self, key: str, entity_id: str) -> None:
        """Another writer changes a field of its own on the same entity, bumping the etag."""
        doc = self.store.get(key, entity_id)
        if doc is None:
            return
        characteristics = doc.get("characteristics")
        count = 1
        if isinstance(characteristics, dict):
            count = int(characteristics.get(CONCURRENT_FIELD, "0")) + 1
            ops: list[Doc] = [
                {"op": "add", "path": f"/characteristics/{CONCURRENT_FIELD}", "value": str(count)}
            ]
        else:
            ops = [{"op": "add", "path": "/characteristics", "value": {CONCURRENT_FIELD: "1"}}]
        self.store.patch(
            key, entity_id, ops, if_match=None, client_id="sim-other", user="other-writer@AdobeID"
        )

    async def delete_entity(self, request: web.Request) -> web.Response:
        key = self._collection(request)
        if isinstance(key, web.Response):
            return key
        if_match = self._if_match(request)
        if isinstance(if_match, web.Response):
            return if_match
        if self.config.ignore_if_match:
            if_match = None
        entity_id = request.match_info["id"]

        def mutate() -> web.Response:
            self.store.delete(key, entity_id, if_match=if_match)
            return web.Response(status=200)

        return await self._write(request, mutate)


SIMULATOR: Final = web.AppKey("simulator", Simulator)


def create_app(config: SimConfig, store: Store | None = None) -> web.Application:
    """The simulator as an aiohttp application (its ``Simulator`` is ``app[SIMULATOR]``)."""
    return Simulator(config, store).app()
