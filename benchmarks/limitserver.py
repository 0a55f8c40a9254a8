"""A stand-in DPS API whose throttle we did not write: pacing measured against strangers.

    python benchmarks/limitserver.py --model fixed --window 1 --limit 300 --port 0
    # prints {"endpoint": "http://127.0.0.1:N/data/core/dps", "stats_url": ..., "pid": ...}

The simulator's token bucket is the throttle bulkpatch's pacing was tuned against. This
server throttles with the window algorithms of the ``limits`` package instead (5.x, its
``MemoryStorage``), so a benchmark can show how the pacing fares against throttles it
was not tuned to:

- ``fixed``: ``FixedWindowRateLimiter``; ``--limit`` requests per window, the window
  starting at the first request after the previous one ended (refused requests count);
- ``moving``: ``MovingWindowRateLimiter``; at most ``--limit`` in any ``--window`` seconds;
- ``sliding``: ``SlidingWindowCounterRateLimiter``; the previous window's count weighted
  by how much of it is still inside the last ``--window`` seconds;
- ``bucket``: a plain token bucket, ``--limit / --window`` per second, burst 10.

Every API request (reads too) meets the throttle. It speaks just enough DPS for
``bulkpatch run`` on replace jobs: ``PATCH {endpoint}/offers/{id}`` answers the receipt
``{"id", "etag"}`` (the etag one higher per write to that id; the patch is not applied),
``GET`` the same path ``{"id", "etag", "name"}``, ``GET {endpoint}/offers`` a list page
of at most one; any credentials pass. A throttled
request is answered ``--status`` (429 or 503) with ``Retry-After`` per ``--retry-after``:
none; delay-seconds (RFC 9110 §10.2.3), the limiter's reset rounded up, at least 1; or an
HTTP-date (RFC 9110 §5.6.7), the reset rounded up to the next whole second, beside a
``Date`` taken from the same clock. ``--outage-at A --outage-for D`` answers every API
request 503 from A to A + D seconds after the first API request, with ``Retry-After``:
the whole seconds left (``--outage-retry-after left``, the default), a fixed number, or
``none``.

``GET /_stats`` (never throttled) serves every API request as ``[t, status, method]``,
``t`` monotonic seconds since the first one, a summary (see ``summarize``), and
``started_at``, the first one's epoch seconds (the ``limits`` package's sliding counter
begins its windows at multiples of their length in epoch time). SIGINT or SIGTERM stops
it, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

BASE: Final = "/data/core/dps"
BURST: Final = 10
STRATEGIES: Final[dict[str, type[RateLimiter]]] = {
    "fixed": FixedWindowRateLimiter,
    "moving": MovingWindowRateLimiter,
    "sliding": SlidingWindowCounterRateLimiter,
}


# --------------------------------------------------------------------------- throttles


class Throttle(Protocol):
    def refuse(self, now: float) -> float | None:
        """None to let a request through at ``now`` (epoch s), else when the limit resets."""


class WindowThrottle:
    """One of the ``limits`` package's window algorithms, in its in-memory storage."""

    def __init__(self, model: str, limit: int, window: int) -> None:
        self._limiter = STRATEGIES[model](MemoryStorage())
        self._item = RateLimitItemPerSecond(limit, window)

    def refuse(self, now: float) -> float | None:
        # The package reads its own clock (time.time); `now` is the same clock.
        if self._limiter.hit(self._item):
            return None
        return float(self._limiter.get_window_stats(self._item).reset_time)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; a refused request takes none."""

    def __init__(self, limit: int, window: int, burst: int = BURST) -> None:
        self._rate = limit / window
        self._burst = float(burst)
        self._tokens = self._burst
        self._last: float | None = None

    def refuse(self, now: float) -> float | None:
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return now + (1.0 - self._tokens) / self._rate


def make_throttle(model: str, limit: int, window: int) -> Throttle:
    if model == "bucket":
        return TokenBucket(limit, window)
    return WindowThrottle(model, limit, window)


# --------------------------------------------------------------------------- answers


def retry_after(form: str, reset: float, now: float) -> dict[str, str]:
    """The throttled answer's headers: ``Retry-After`` in ``form``, and ``Date`` with a date.

    ``reset`` and ``now`` are epoch seconds. Both are rounded up, so a client that waits
    as told never comes back before the limit has reset.
    """
    if form == "seconds":
        return {"Retry-After": str(max(1, math.ceil(reset - now)))}
    if form == "date":
        when = max(math.ceil(reset), math.floor(now) + 1)
        return {
            "Retry-After": formatdate(when, usegmt=True),
            "Date": formatdate(math.floor(now), usegmt=True),
        }
    return {}


def refusal(status: int, headers: dict[str, str]) -> web.Response:
    """The gateway's error shape: ``{"error_code", "message"}``."""
    message = "Too many requests" if status == 429 else "Service Unavailable"
    body = {"error_code": f"{status}050", "message": message}
    return web.json_response(body, status=status, headers=headers)


@dataclass(frozen=True)
class Outage:
    """From ``at`` to ``at + length`` seconds after the first API request, all is 503."""

    at: float
    length: float
    retry_after: str = "left"  # "left", "none", or whole seconds

    def answer(self, elapsed: float) -> web.Response | None:
        left = self.at + self.length - elapsed
        if elapsed < self.at or left <= 0:
            return None
        headers: dict[str, str] = {}
        if self.retry_after == "left":
            headers["Retry-After"] = str(max(1, math.ceil(left)))
        elif self.retry_after != "none":
            headers["Retry-After"] = self.retry_after
        return refusal(503, headers)


# --------------------------------------------------------------------------- the server


@dataclass
class LimitServer:
    throttle: Throttle
    status: int = 429
    form: str = "seconds"
    outage: Outage | None = None
    etags: dict[str, int] = field(default_factory=dict)
    records: list[tuple[float, int, str]] = field(default_factory=list)
    started: float | None = None  # the first API request: monotonic s
    started_at: float | None = None  # and epoch s, where clock-aligned windows are counted

    def gate(self, elapsed: float) -> web.Response | None:
        """The outage, then the throttle: None when the request may be served."""
        if self.outage is not None and (answer := self.outage.answer(elapsed)) is not None:
            return answer
        now = time.time()
        reset = self.throttle.refuse(now)
        if reset is None:
            return None
        return refusal(self.status, retry_after(self.form, reset, now))

    async def api(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        if self.started is None:
            self.started, self.started_at = arrived, time.time()
        elapsed = arrived - self.started
        response = self.gate(elapsed)
        if response is None:
            response = await self.serve(request)
        self.records.append((round(elapsed, 6), response.status, request.method))
        return response

    async def serve(self, request: web.Request) -> web.Response:
        if "id" not in request.match_info:
            # The list (bulkpatch's first request checks the settings with it): one page.
            results = [{"id": i, "etag": e} for i, e in itertools.islice(self.etags.items(), 1)]
            return web.json_response({"results": results, "count": len(results), "_links": {}})
        entity_id = request.match_info["id"]
        etag = self.etags.get(entity_id, 1)
        if request.method == "PATCH":
            await request.read()
            etag += 1
            self.etags[entity_id] = etag
            return web.json_response({"id": entity_id, "etag": etag})
        return web.json_response({"id": entity_id, "etag": etag, "name": f"Offer {entity_id}"})

    async def stats(self, _request: web.Request) -> web.Response:
        body = {
            "requests": self.records,
            "summary": summarize(self.records),
            "started_at": self.started_at,
        }
        return web.json_response(body)

    def app(self) -> web.Application:
        app = web.Application()
        path = BASE + "/offers/{id}"
        app.router.add_patch(path, self.api)
        app.router.add_get(path, self.api)
        app.router.add_get(BASE + "/offers", self.api)
        app.router.add_get("/_stats", self.stats)
        return app


def summarize(records: list[tuple[float, int, str]]) -> dict[str, Any]:
    """What a pacing benchmark reads off the requests ``[t, status, method]``.

    ``writes_landed``: 2xx PATCHes; ``landed_per_s``: those over the time from the first
    API request to the last of them; ``writes_by_second``: by whole second of ``t``;
    ``share_429`` / ``share_503``: of all API requests; ``longest_2xx_gap_s``: the longest
    time between two successive 2xx answers (None with fewer than two).
    """
    statuses = Counter(status for _, status, _ in records)
    landed = [t for t, status, method in records if method == "PATCH" and 200 <= status < 300]
    ok = [t for t, status, _ in records if 200 <= status < 300]
    total = len(records)
    gaps = [b - a for a, b in itertools.pairwise(ok)]
    return {
        "requests_total": total,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "writes_landed": len(landed),
        "landed_per_s": len(landed) / landed[-1] if landed and landed[-1] > 0 else None,
        "writes_by_second": {str(k): v for k, v in sorted(Counter(int(t) for t in landed).items())},
        "share_429": statuses[429] / total if total else 0.0,
        "share_503": statuses[503] / total if total else 0.0,
        "longest_2xx_gap_s": round(max(gaps), 6) if gaps else None,
    }


# --------------------------------------------------------------------------- the process


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not >= 1")
    return value


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value


def outage_retry_after(text: str) -> str:
    if text in ("left", "none") or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not left, none or whole seconds")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("fixed", "moving", "sliding", "bucket"), default="fixed")
    # Whole seconds: the limits package's windows are multiples of its one-second item.
    p.add_argument("--window", type=positive_int, default=1, help="seconds (default 1)")
    p.add_argument("--limit", type=positive_int, required=True, help="requests per window")
    p.add_argument("--retry-after", choices=("none", "seconds", "date"), default="seconds")
    p.add_argument("--status", type=int, choices=(429, 503), default=429)
    p.add_argument("--outage-at", type=non_negative, help="seconds after the first API request")
    p.add_argument("--outage-for", type=non_negative, help="its length in seconds")
    p.add_argument(
        "--outage-retry-after", type=outage_retry_after, default="left",
        help="Retry-After during the outage: left (seconds left), none, or N seconds",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    return p


def from_args(args: argparse.Namespace) -> LimitServer:
    outage = None
    if args.outage_at is not None:
        outage = Outage(args.outage_at, args.outage_for, args.outage_retry_after)
    throttle = make_throttle(args.model, args.limit, args.window)
    return LimitServer(throttle, args.status, args.retry_after, outage)


async def serve(server: LimitServer, host: str, port: int) -> None:
    """Print the ready line once listening; serve until SIGINT or SIGTERM."""
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    origin = f"http://{host}:{bound}"
    ready = {"endpoint": origin + BASE, "stats_url": origin + "/_stats", "pid": os.getpid()}
    print(json.dumps(ready), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def running(options: list[str], cpu: int | None = None) -> Iterator[dict[str, Any]]:
    """This server in a child process on ``cpu``; yields its ready line; stops it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness import READY_LIMIT_S, pin, read_ready, stop

    command = [sys.executable, __file__, "--port", "0", *options]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        pin(proc.pid, cpu)
        yield read_ready(proc, READY_LIMIT_S)
    finally:
        stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if (args.outage_at is None) != (args.outage_for is None):
        p.error("--outage-at and --outage-for go together")
    asyncio.run(serve(from_args(args), args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
