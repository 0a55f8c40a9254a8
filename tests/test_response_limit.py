"""``--max-response-bytes``: no answer, however large or however well compressed, is read
past the cap; the request fails as a lost answer does, and a write's outcome is settled.

The servers are small aiohttp applications on loopback (``test_wire_rules.server``); the
bodies are tens of MiB against a 1 MiB cap.
"""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
from typing import Any

import pytest
from aiohttp import web

from tests.test_run_cli import clean_env, ndjson, run_cli
from tests.test_wire_rules import (
    OFFER,
    RENAME,
    TAG,
    Handler,
    config,
    document,
    entity,
    message,
    run_one,
    server,
)

CAP = 1024 * 1024
BIG = 40 * 1024 * 1024  # what the hostile answers hold, decompressed
CHUNK = 64 * 1024
SAYS = f"the answer exceeded --max-response-bytes ({CAP} bytes)"


class Flood:
    """A handler that streams ``BIG`` bytes of JSON whitespace, and how much of each
    answer it got to write before the client hung up (one entry per answer, on ``ended``)."""

    def __init__(self) -> None:
        self.ended: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "application/json"})
        answer.content_length = BIG
        written, whole = 0, False
        try:
            await answer.prepare(request)
            block = b" " * CHUNK
            while written < BIG:
                await answer.write(block)
                written += CHUNK
            await answer.write_eof()
            whole = True
        except ConnectionError:
            pass  # the client closed the connection: what the test is after
        finally:
            self.ended.put_nowait((written, whole))
        return answer

    async def answers(self, count: int) -> list[tuple[int, bool]]:
        return [await asyncio.wait_for(self.ended.get(), 10) for _ in range(count)]


@pytest.mark.parametrize(("method", "job"), [("PATCH", RENAME), ("GET", TAG)])
async def test_an_answer_larger_than_the_cap_is_not_read_and_the_job_is_not_ok(
    method: str, job: dict[str, Any]
) -> None:
    """A write's huge answer leaves its outcome unknown (settled by reading, then sent
    again under If-Match); a read's is retried like a lost answer. Either way the client
    stops reading a little past the cap, and the job is not ok on a body it never read."""
    flood = Flood()
    routes: dict[tuple[str, str], Handler] = {("GET", OFFER): entity, ("PATCH", OFFER): entity}
    routes[(method, OFFER)] = flood.handle
    async with server(routes) as (api, seen):
        outcome = await asyncio.wait_for(run_one(job, config(api, max_response_bytes=CAP)), 30)
        answers = await flood.answers(seen.count(method))
    assert not outcome["ok"], outcome
    assert outcome["error"]["kind"] == "exhausted"
    assert SAYS in message(outcome)
    assert seen.count(method) == 3  # every attempt (--max-attempts 3), no more
    # Socket buffers take a few MiB the client never reads; not the 40 MiB sent.
    assert not any(whole for _, whole in answers), answers
    assert all(written < BIG // 2 for written, _ in answers), answers
    if method == "PATCH":
        assert seen.count("GET") >= 1  # each unknown outcome was read before a resend


async def test_a_small_gzip_answer_that_inflates_past_the_cap_is_not_inflated() -> None:
    """40 KiB on the wire, 40 MiB inflated: the client stops inflating at the cap."""
    bomb = gzip.compress(b" " * BIG, 9)

    async def inflating(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    async with server({("GET", OFFER): entity, ("PATCH", OFFER): inflating}) as (api, seen):
        tracemalloc.start()
        try:
            outcome = await asyncio.wait_for(run_one(RENAME, config(api, max_response_bytes=CAP)), 30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(bomb) < CAP // 10
    assert not outcome["ok"], outcome
    assert SAYS in message(outcome)
    assert seen.count("PATCH") == 3
    assert peak < 8 * CAP, f"{peak:,} bytes at the peak"


async def test_headers_count_against_the_cap() -> None:
    async def padded(request: web.Request) -> web.Response:
        headers = {f"X-Pad-{n}": "p" * 60_000 for n in range(4)}
        return web.json_response(document(), headers=headers)

    async with server({("GET", OFFER): padded}) as (api, seen):
        outcome = await run_one(TAG, config(api, max_response_bytes=200_000))
    assert not outcome["ok"], outcome
    assert "the answer exceeded --max-response-bytes (200000 bytes)" in message(outcome)
    assert seen.count("PATCH") == 0


# --------------------------------------------------------------------------- IMS


async def test_an_ims_answer_over_the_cap_stops_the_run_with_one_line() -> None:
    """The token request is bounded too: the run stops (exit 3) saying why, in one line,
    with no traceback and no secret, and no job is sent to the API."""

    async def token(request: web.Request) -> web.Response:
        return web.json_response(
            {"access_token": "cap-token", "expires_in": 86399, "padding": "x" * (2 * CAP)}
        )

    async def applied(request: web.Request) -> web.Response:
        return web.json_response(document("new", 2))

    async with (
        server({("POST", "/ims/token/v3"): token}) as (ims, asked),
        server({("GET", OFFER): entity, ("PATCH", OFFER): applied}) as (api, seen),
    ):
        env = clean_env(
            ADOBE_CLIENT_ID="cap-client",
            ADOBE_CLIENT_SECRET="cap-secret-5e1f",
            ADOBE_IMS_URL=str(ims.make_url("/ims/token/v3")),
            ADOBE_ORG_ID="CAP0000@AdobeOrg",
            ADOBE_SANDBOX_NAME="prod",
        )
        done = await run_cli(
            "--endpoint", str(api.make_url("/dps")), "--rate", "0",
            "--max-response-bytes", str(CAP), env=env, stdin=ndjson([RENAME]),
        )  # fmt: skip
    stderr = done.stderr.decode()
    assert done.code == 3, stderr
    assert f"--max-response-bytes ({CAP} bytes)" in stderr
    assert "Traceback" not in stderr
    assert "cap-secret-5e1f" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr  # the command's one error line
    assert f"--max-response-bytes ({CAP} bytes)" in lines[0]
    assert asked.count("POST") >= 1
    assert seen.count("PATCH") == 0

