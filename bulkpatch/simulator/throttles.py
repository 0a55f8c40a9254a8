"""The gateway's throttles and its planned outage.

Three throttles over all API requests, reads included (``--throttle``): the simulator's
own token bucket, and two window algorithms of the ``limits`` package (5.x, in memory):
``fixed`` (``FixedWindowRateLimiter``: a window opens at the first request after the
last one closed, and refused requests count in it) and ``sliding``
(``MovingWindowRateLimiter``: at most the limit in any window's length). Each follows
the rate schedule; its clock starts at the first write, so a client's start-up reads do
not eat into the first phase. The outage answers every API request 503 for a while.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import web
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.stats import Stats
from bulkpatch.simulator.wire import gateway_error


class Throttle(Protocol):
    """What the gateway asks of a throttle; ``Writes`` sets ``first_write``."""

    first_write: float | None

    def take(self) -> float | None:
        """Let one request through: None, or the seconds until one would be let through."""


def _rate(schedule: tuple[tuple[float, float], ...], first: float | None, now: float) -> float:
    """The schedule's rate (requests/s) at ``now``; its first phase until the first write."""
    elapsed = 0.0 if first is None else now - first
    current = schedule[0][1]
    for at, rate in schedule:
        if at <= elapsed:
            current = rate
    return current


class TokenBucket:
    """A token bucket, its rate optionally following a schedule; refusals take no token."""

    def __init__(self, config: SimConfig, clock: Callable[[], float]) -> None:
        self._schedule = config.rate_schedule or ((0.0, config.rate_limit or 0.0),)
        self._burst = float(config.burst)
        self._clock = clock
        self._tokens = self._burst
        self._last = clock()
        self.first_write: float | None = None

    def rate(self, now: float) -> float:
        return _rate(self._schedule, self.first_write, now)

    def take(self) -> float | None:
        now = self._clock()
        rate = self.rate(now)
        self._tokens = min(self._burst, self._tokens + (now - self._last) * rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rate


class _Limit(RateLimitItemPerSecond):
    """One storage key whatever the amount, so a window's count carries across a step of
    the schedule (the package's own key names the amount: each step would start afresh)."""

    def key_for(self, *identifiers: bytes | str | int | float) -> str:
        return "bulkpatch-sim/api"


class WindowLimit:
    """A ``limits`` window algorithm: ``rate x window`` requests a window of ``window`` s.

    The package reads its own wall clock (``time.time``); the schedule's phase is read
    from the simulator's clock, like the bucket's.
    """

    def __init__(self, config: SimConfig, clock: Callable[[], float]) -> None:
        strategy = FixedWindowRateLimiter if config.throttle == "fixed" else MovingWindowRateLimiter
        self._limiter: RateLimiter = strategy(MemoryStorage())
        self._schedule = config.rate_schedule or ((0.0, config.rate_limit or 0.0),)
        self._window = config.window_s
        self._clock = clock
        # One item per step of the schedule (the amount is fixed at construction).
        self._items = {
            rate: _Limit(config.per_window(rate), self._window) for _, rate in self._schedule
        }
        self.first_write: float | None = None

    def take(self) -> float | None:
        item = self._items[_rate(self._schedule, self.first_write, self._clock())]
        if self._limiter.hit(item):
            return None
        reset = self._limiter.get_window_stats(item).reset_time
        return max(0.0, reset - time.time())


def make_throttle(config: SimConfig, clock: Callable[[], float]) -> Throttle | None:
    """The throttle ``config`` asks for, or None when it sets no rate."""
    if not config.throttled:
        return None
    if config.throttle == "bucket":
        return TokenBucket(config, clock)
    return WindowLimit(config, clock)


class Outage:
    """Every API request answered 503 from ``start`` to ``start + seconds`` after the first
    write, with ``Retry-After``: the whole seconds left, rounded up (RFC 9110 §10.2.3)."""

    def __init__(self, outage: tuple[float, float], stats: Stats, clock: Callable[[], float]):
        self._start, self._seconds = outage
        self._stats = stats
        self._clock = clock

    def answer(self) -> web.Response | None:
        """The outage's 503 now, or None outside it."""
        first = self._stats.first_write
        if first is None:
            return None
        elapsed = self._clock() - first
        left = self._start + self._seconds - elapsed
        if elapsed < self._start or left <= 0:
            return None
        self._stats.outage += 1
        return gateway_error(
            503, "503000", "Service Unavailable", **{"Retry-After": str(math.ceil(left))}
        )
