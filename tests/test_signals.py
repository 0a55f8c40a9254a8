"""SIGTERM ends ``bulkpatch run`` in every state: within the grace period plus a second
after the first signal, within a second of a second one, even while the run is blocked
writing outcomes to a pipe nobody reads.

The API is a small aiohttp server in the test that answers the preflight's list and every
PATCH at once, and says when the first PATCH arrived (the run is under way: its signal handlers are in place).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from bulkpatch.cli.run import GRACE_S
from tests.test_run_cli import CLI, token_env

FIRST = web.AppKey("first", asyncio.Event)
JOBS = 3_000
REF = "r" * 2_000  # echoed in each outcome: far more than a pipe holds


async def listing(request: web.Request) -> web.Response:
    """The preflight's list of one offer, before the first job."""
    return web.json_response({"results": [], "count": 0, "total": 0, "_links": {}})


async def patch(request: web.Request) -> web.Response:
    request.app[FIRST].set()
    return web.json_response({"id": request.match_info["id"], "etag": 2})


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, asyncio.Event]]:
    app = web.Application()
    app[FIRST] = asyncio.Event()
    app.router.add_get("/data/core/dps/offers", listing)
    app.router.add_patch("/data/core/dps/offers/{id}", patch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/data/core/dps", app[FIRST]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("signals", "within_s"), [(1, GRACE_S + 2.0), (2, 2.0)])
async def test_sigterm_ends_a_run_blocked_on_a_full_stdout_pipe(
    api: tuple[str, asyncio.Event], signals: int, within_s: float
) -> None:
    endpoint, first = api
    jobs = b"".join(
        orjson.dumps({"id": f"o{n}", "patch": [{"op": "replace", "path": "/name", "value": "x"}], "ref": REF})
        + b"\n"
        for n in range(JOBS)
    )
    # stdout is a pipe of the test's own that is never read (an asyncio pipe would keep
    # proc.wait() waiting for it to close).
    unread, stdout = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "run", "--endpoint", endpoint, "--rate", "0", "-q",
        stdin=asyncio.subprocess.PIPE, stdout=stdout,
        stderr=asyncio.subprocess.DEVNULL, env=token_env("t"),
    )  # fmt: skip
    os.close(stdout)
    assert proc.stdin is not None
    try:
        proc.stdin.write(jobs)  # not drained: stdin's own pipe may fill, and stays open
        await asyncio.wait_for(first.wait(), 30)
        proc.send_signal(signal.SIGTERM)
        if signals == 2:
            # Apart, as a person sends them: the kernel merges a signal sent while the
            # same one is still pending into it.
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        # stdout is never read: the run blocks writing its outcomes to the full pipe.
        await asyncio.wait_for(proc.wait(), within_s + 5)
        took = time.monotonic() - sent
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(unread)
    assert proc.returncode == 143
    assert took <= within_s
