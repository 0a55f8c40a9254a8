"""The wire rules against small hostile servers: redirects, header limits, status classes.

Each server is a few aiohttp handlers on a loopback port, written here so the rule under
test is the only thing it does wrong. A second server on another port stands for
"another origin": it counts whatever reaches it, which must be nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulkpatch import Credentials, RunConfig, patch_all
from bulkpatch.jobs import parse_line
from tests.test_run_cli import CLI, WAIT_S, ndjson, token_env

ENTITY = "offer-1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Seen:
    """What a server was sent: one ``(method, path)`` per request, and the bodies."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[bytes] = []

    def count(self, method: str | None = None) -> int:
        return sum(1 for m, _ in self.requests if method is None or m == method)


@asynccontextmanager
async def server(routes: dict[tuple[str, str], Handler]) -> AsyncIterator[tuple[TestServer, Seen]]:
    """A loopback server answering ``routes`` (method, path pattern) and recording all."""
    seen = Seen()

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.requests.append((request.method, request.path))
        seen.bodies.append(await request.read())
        return await handler(request)

    app = web.Application(middlewares=[record])
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    srv = TestServer(app, host="127.0.0.1")
    async with srv:
        yield srv, seen


@asynccontextmanager
async def elsewhere() -> AsyncIterator[tuple[TestServer, Seen]]:
    """Another origin (another port): answers anything with 200, records everything."""

    async def anything(request: web.Request) -> web.Response:
        return web.json_response({"id": ENTITY, "name": "elsewhere", "etag": 9, "results": []})

    async with server({("*", "/{tail:.*}"): anything}) as found:
        yield found


def document(name: str = "old", etag: int = 1) -> dict[str, Any]:
    return {"id": ENTITY, "name": name, "tags": [], "etag": etag}


async def entity(request: web.Request) -> web.Response:
    return web.json_response(document())


def config(api: TestServer, **overrides: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "credentials": Credentials(access_token="wire-token"),
        "endpoint": str(api.make_url("/dps")),
        "api_key": "wire-tests",
        "org_id": "WIRE000@AdobeOrg",
        "sandbox": "prod",
        "rate": 0,
        "concurrency": 2,
        "timeout": 5,
        "max_attempts": 3,
        "backoff_base": 0.001,
        "backoff_cap": 0.01,
        "seed": 1,
    }
    settings.update(overrides)
    return RunConfig(**settings)


async def run_one(job: dict[str, Any], run: RunConfig) -> dict[str, Any]:
    # A parsed job, not a stream: a run that stops early leaves no reader thread behind.
    outcomes = [o.to_dict() async for o in patch_all([parse_line(ndjson([job]), 1)], run)]
    assert len(outcomes) == 1
    return outcomes[0]


RENAME = {"id": ENTITY, "patch": [{"op": "replace", "path": "/name", "value": "new"}]}
# Not self-verifying: the entity is read before the write.
TAG = {"id": ENTITY, "patch": [{"op": "add", "path": "/tags/-", "value": "t"}]}
OFFER = "/dps/offers/{id}"


def message(outcome: dict[str, Any]) -> str:
    return str((outcome.get("error") or {}).get("message", ""))


# --------------------------------------------------------------------------- writes


async def test_a_patch_answered_303_is_not_followed_and_the_job_is_not_ok() -> None:
    """A 303 sends the client to GET elsewhere (RFC 9110 §15.4.4): that GET's 200 says
    nothing about the write, which this server never applies."""

    async def see_other(request: web.Request) -> web.Response:
        return web.Response(status=303, headers={"Location": str(request.rel_url)})

    async with server({("GET", OFFER): entity, ("PATCH", OFFER): see_other}) as (api, seen):
        outcome = await run_one(RENAME, config(api))
    assert not outcome["ok"], outcome
    assert outcome["error"]["kind"] == "exhausted"
    assert "303" in message(outcome)
    # Every PATCH was the engine's own attempt; each GET is a read that settled one.
    assert seen.count("PATCH") == 3
    assert seen.count("GET") <= seen.count("PATCH") + 1


async def test_a_patch_redirected_to_another_origin_sends_nothing_there() -> None:
    async with elsewhere() as (other, there):
        target = str(other.make_url("/dps/offers/offer-1"))

        async def moved(request: web.Request) -> web.Response:
            return web.Response(status=307, headers={"Location": target})

        async with server({("GET", OFFER): entity, ("PATCH", OFFER): moved}) as (api, _):
            outcome = await run_one(RENAME, config(api))
    assert there.requests == []
    assert not outcome["ok"], outcome
    assert target in message(outcome)


# --------------------------------------------------------------------------- reads


def chain(hops: int) -> dict[tuple[str, str], Handler]:
    """GET of the entity redirected ``hops`` times on the same origin, then answered."""

    async def hop(request: web.Request) -> web.Response:
        n = int(request.match_info.get("n", "0"))
        if n >= hops:
            return web.json_response(document())
        return web.Response(status=307, headers={"Location": f"/dps/moved/{n + 1}"})

    async def patched(request: web.Request) -> web.Response:
        return web.json_response(document("new", 2))

    return {("GET", OFFER): hop, ("GET", "/dps/moved/{n}"): hop, ("PATCH", OFFER): patched}


async def test_a_read_redirected_on_its_own_origin_is_followed() -> None:
    async with server(chain(2)) as (api, seen):
        outcome = await run_one(TAG, config(api))
    assert outcome["ok"], outcome
    assert seen.requests[:3] == [
        ("GET", "/dps/offers/offer-1"),
        ("GET", "/dps/moved/1"),
        ("GET", "/dps/moved/2"),
    ]
    assert seen.count("PATCH") == 1


async def test_a_read_redirected_more_than_three_times_fails() -> None:
    async with server(chain(4)) as (api, seen):
        outcome = await run_one(TAG, config(api))
    assert not outcome["ok"], outcome
    assert outcome["error"]["kind"] == "http"
    assert "/dps/moved/4" in message(outcome)
    assert seen.count("GET") == 4
    assert seen.count("PATCH") == 0


async def test_a_read_redirected_with_credentials_in_the_location_fails_that_job_only() -> None:
    async def moved(request: web.Request) -> web.Response:
        here = request.url.with_user("someone").with_password("secret")
        return web.Response(status=302, headers={"Location": str(here.with_path("/dps/x"))})

    async with server({("GET", OFFER): moved}) as (api, seen):
        outcome = await run_one(TAG, config(api))
    assert not outcome["ok"], outcome
    assert outcome["error"]["kind"] == "http"
    assert "/dps/x" in message(outcome)
    assert "secret" not in message(outcome)
    assert seen.count("GET") == 1


async def test_a_read_redirected_to_another_origin_fails_naming_it() -> None:
    async with elsewhere() as (other, there):
        target = str(other.make_url("/dps/offers/offer-1"))

        async def moved(request: web.Request) -> web.Response:
            return web.Response(status=307, headers={"Location": target})

        async with server({("GET", OFFER): moved}) as (api, seen):
            outcome = await run_one(TAG, config(api))
    assert there.requests == []
    assert not outcome["ok"], outcome
    assert outcome["error"]["kind"] == "http"
    assert target in message(outcome)
    assert seen.count("GET") == 1  # permanent: not asked again


# --------------------------------------------------------------------------- limits, statuses


@pytest.mark.parametrize("size", [20_000, 64 * 1024])
async def test_a_long_header_line_is_read(size: int) -> None:
    """Up to 64 KiB a line, ``X-Trace: `` included."""

    async def applied(request: web.Request) -> web.Response:
        value = "a" * (size - len("X-Trace: "))
        return web.json_response(document("new", 2), headers={"X-Trace": value})

    async with server({("GET", OFFER): entity, ("PATCH", OFFER): applied}) as (api, seen):
        outcome = await run_one(RENAME, config(api))
    assert outcome["ok"], outcome
    assert seen.count("PATCH") == 1


async def test_408_to_a_patch_is_retried() -> None:
    """RFC 9110 §15.5.9: the client may repeat the request."""
    answers = iter([408])

    async def slow_then_applied(request: web.Request) -> web.Response:
        status = next(answers, 200)
        if status != 200:
            return web.json_response({"detail": "request timeout"}, status=status)
        return web.json_response(document("new", 2))

    async with server({("GET", OFFER): entity, ("PATCH", OFFER): slow_then_applied}) as (api, seen):
        outcome = await run_one(RENAME, config(api))
    assert outcome["ok"], outcome
    assert seen.count("PATCH") == 2


# --------------------------------------------------------------------------- IMS


async def test_an_ims_redirect_to_another_origin_gets_no_client_secret() -> None:
    async with elsewhere() as (other, there):
        target = str(other.make_url("/ims/token/v3"))

        async def moved(request: web.Request) -> web.Response:
            return web.Response(status=307, headers={"Location": target})

        async with (
            server({("POST", "/ims/token/v3"): moved}) as (ims, asked),
            server({("GET", OFFER): entity}) as (api, seen),
        ):
            credentials = Credentials(
                client_id="wire-client",
                client_secret="wire-secret",
                ims_url=str(ims.make_url("/ims/token/v3")),
            )
            outcome = await run_one(RENAME, config(api, credentials=credentials, api_key=None))
    assert there.requests == []
    assert not any(b"wire-secret" in body for body in there.bodies)
    assert asked.count("POST") == 1
    assert seen.requests == []
    assert not outcome["ok"]
    assert target in message(outcome)


@pytest.mark.parametrize(("status", "asked"), [(408, 2), (501, 1)])
async def test_ims_answers_are_classed_like_the_apis(status: int, asked: int) -> None:
    """408 is asked again (RFC 9110 §15.5.9); 501 is not (§15.6.2)."""
    answers = iter([status])

    async def token(request: web.Request) -> web.Response:
        first = next(answers, 200)
        if first != 200:
            return web.json_response({"error": "not now"}, status=first)
        return web.json_response({"access_token": "wire-token", "expires_in": 86399})

    async def applied(request: web.Request) -> web.Response:
        return web.json_response(document("new", 2))

    async with (
        server({("POST", "/ims/token/v3"): token}) as (ims, seen_by_ims),
        server({("GET", OFFER): entity, ("PATCH", OFFER): applied}) as (api, _),
    ):
        credentials = Credentials(
            client_id="wire-client",
            client_secret="wire-secret",
            ims_url=str(ims.make_url("/ims/token/v3")),
        )
        outcome = await run_one(RENAME, config(api, credentials=credentials, api_key=None))
    assert seen_by_ims.count("POST") == asked
    assert outcome["ok"] is (status == 408), outcome


# --------------------------------------------------------------------------- export


async def export(endpoint: str) -> tuple[int, bytes, bytes]:
    env = token_env("wire-token")
    proc = await asyncio.create_subprocess_exec(
        *CLI, "export", "--endpoint", endpoint, "--rate", "0", "--page-size", "2",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode is not None
    return proc.returncode, out, err


def page(n: int, next_href: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"results": [{"id": f"offer-{n}", "etag": 1}]}
    if next_href is not None:
        body["_links"] = {"next": {"href": next_href}}
    return body


async def test_export_refuses_a_next_link_to_another_host() -> None:
    async with elsewhere() as (other, there):
        target = str(other.make_url("/dps/offers?start=2"))
        other_origin = str(other.make_url("/").origin())

        async def first(request: web.Request) -> web.Response:
            return web.json_response(page(1, target))

        async with server({("GET", "/dps/offers"): first}) as (api, _):
            code, out, err = await export(str(api.make_url("/dps")))
    assert there.requests == []
    assert code != 0
    assert other_origin in err.decode()
    assert [orjson.loads(line)["id"] for line in out.splitlines()] == ["offer-1"]


async def test_export_ends_with_an_error_when_a_next_link_repeats() -> None:
    """The server gives the same next link for ever (bounded here only in case the
    client loops: after 200 pages it gives none)."""

    async def pages(request: web.Request) -> web.Response:
        n = len(served)
        served.append(request.path_qs)
        return web.json_response(page(n, "/dps/offers?start=same" if n < 200 else None))

    served: list[str] = []
    async with server({("GET", "/dps/offers"): pages}) as (api, _):
        code, out, err = await export(str(api.make_url("/dps")))
    assert code != 0
    assert len(served) == 2, Counter(served)
    assert "start=same" in err.decode()
    assert len(out.splitlines()) == 2
