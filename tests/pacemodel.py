"""A discrete-event model of a run's pace against a throttling server, in simulated time.

Workers book slots in the real ``pace.Schedule``, the real ``pace.RateControl`` hears
every answer and ticks, and a refused request waits what the gateway would make it wait
(``Retry-After``, or a backoff; everyone, when ``holds_everyone`` says so). The servers
are small throttle models: a token bucket, a fixed window, a moving window (a log of
the window's requests) and a sliding-window counter. The wire is tested elsewhere (with
the ``limits`` package's throttles, in ``benchmarks/pacing.py``); this model makes the
controller's behaviour a fast, deterministic test.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bulkpatch.pace import TICK_S, RateControl, Schedule

Limit = Callable[[float], float]  # requests/s allowed at a time
RetryAfter = Literal["none", "seconds", "date"]


class Throttle(Protocol):
    def hit(self, now: float) -> float | None:
        """None when the request is let through, else the seconds until it would be."""
        ...


class Bucket:
    def __init__(self, limit: Limit, window: float, burst: float = 10.0) -> None:
        self.limit, self.burst, self.tokens, self.last = limit, burst, burst, 0.0

    def hit(self, now: float) -> float | None:
        rate = self.limit(now)
        self.tokens = min(self.burst, self.tokens + (now - self.last) * rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / rate


class FixedWindow:
    def __init__(self, limit: Limit, window: float) -> None:
        self.limit, self.window, self.current, self.count = limit, window, -1, 0
        # Windows start at the first request, not on the second: a reset is rarely whole.
        self.offset = 0.37

    def hit(self, now: float) -> float | None:
        current = int((now - self.offset) // self.window)
        if current != self.current:
            self.current, self.count = current, 0
        if self.count < self.limit(now) * self.window:
            self.count += 1
            return None
        return (current + 1) * self.window + self.offset - now


class MovingWindow:
    def __init__(self, limit: Limit, window: float) -> None:
        self.limit, self.window, self.log = limit, window, deque[float]()

    def hit(self, now: float) -> float | None:
        log = self.log
        while log and log[0] <= now - self.window:
            log.popleft()
        if len(log) < self.limit(now) * self.window:
            log.append(now)
            return None
        return log[0] + self.window - now


class SlidingCounter:
    """The ``limits`` package's sliding-window counter: the previous window's count,
    weighted by how much of it is still inside the last ``window`` seconds, plus the
    current one's; the reset it gives is when the weighted count next drops by one."""

    def __init__(self, limit: Limit, window: float) -> None:
        self.limit, self.window, self.current, self.count, self.previous = limit, window, -1, 0, 0
        self.offset = 0.37

    def hit(self, now: float) -> float | None:
        window = self.window
        current, elapsed = divmod(now - self.offset, window)
        if current != self.current:
            self.previous = self.count if current == self.current + 1 else 0
            self.current, self.count = int(current), 0
        left = window - elapsed  # of the previous window, still inside the last ``window``
        if math.floor(self.previous * left / window + self.count) + 1 <= self.limit(now) * window:
            self.count += 1
            return None
        if self.previous:
            return left % (window / self.previous)
        return left


MODELS: dict[str, Callable[[Limit, float], Throttle]] = {
    "bucket": Bucket,
    "fixed": FixedWindow,
    "moving": MovingWindow,
    "sliding": SlidingCounter,
}


@dataclass
class Result:
    accepted: list[float] = field(default_factory=list)  # when each accepted answer came
    refused: int = 0
    refused_after: list[float] = field(default_factory=list)
    sent: int = 0

    def landed_per_s(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.accepted) / (end - start)

    def longest_gap(self) -> float:
        times = self.accepted
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def asked_wait(form: RetryAfter, wait: float, now: float) -> float | None:
    """What a ``Retry-After`` in ``form`` tells a client to wait: delay-seconds are whole
    (rounded up, at least 1); an HTTP-date is a whole second of the server's clock (rounded
    up), read where the server's seconds begin (``retry.ServerSeconds``): up to a second
    more."""
    if form == "none":
        return None
    if form == "seconds":
        return float(max(1, math.ceil(wait)))
    return max(0.0, math.ceil(now + wait) - now)


@dataclass
class Model:
    """One run: ``workers`` in flight at most, ``rtt`` seconds per answer."""

    throttle: Throttle
    control: RateControl
    retry_after: RetryAfter = "seconds"
    workers: int = 16
    rtt: float = 0.004
    seed: int = 1
    # The server's clock at the model's 0 s: its seconds, which an HTTP-date counts in, do
    # not begin where the run does (aligned, the 6 s windows' HTTP-dates read 0.92x of
    # the limit where the wire gave 0.88x).
    server_phase: float = 0.37
    result: Result = field(default_factory=Result)

    def run(self, seconds: float) -> Result:
        rng = random.Random(self.seed)
        schedule = Schedule(self.control.pace)
        events: list[tuple[float, int, str, int]] = []
        order = iter(range(10**9))

        def push(at: float, kind: str, throttled: int = 0) -> None:
            heapq.heappush(events, (at, next(order), kind, throttled))

        for _ in range(self.workers):
            push(0.0, "free")
        push(0.0, "tick")
        while events:
            now, _, kind, throttled = heapq.heappop(events)
            if now > seconds:
                break
            if kind == "tick":
                if self.control.tick(now) and self.control.pace is not None:
                    schedule.set_rate(self.control.pace, now)
                push(now + TICK_S, "tick")
            elif kind == "free" or (kind.startswith("send") and int(kind.split()[1]) != schedule.version):
                # Book a slot (again, after a hold or a slower rate), as ``Gateway._gate``.
                at, booked = schedule.reserve(now)
                push(at, f"send {schedule.version}" if booked else "free", throttled)
            elif kind.startswith("send"):
                self.control.sent += 1
                self.result.sent += 1
                wait = self.throttle.hit(now)
                push(now + self.rtt, "ok" if wait is None else f"refused {wait}", throttled)
            elif kind == "ok":
                self.control.accepted += 1
                if self.control.shut and self.control.reopened(now) and self.control.pace is not None:
                    schedule.set_rate(self.control.pace, now)
                self.result.accepted.append(now)
                push(now, "free")
            else:
                self._refused(now, float(kind.split()[1]), throttled, schedule, rng, push)
        return self.result

    def _refused(
        self,
        now: float,
        wait: float,
        throttled: int,
        schedule: Schedule,
        rng: random.Random,
        push: Callable[[float, str, int], None],
    ) -> None:
        result = self.result
        result.refused += 1
        result.refused_after.append(now)
        asked = asked_wait(self.retry_after, wait, now + self.server_phase)
        if self.control.refused(now, asked) and self.control.pace is not None:
            schedule.set_rate(self.control.pace, now)
        delay = (
            asked if asked is not None else rng.uniform(0, min(30.0, 0.5 * 2 ** min(throttled, 5)))
        )
        if self.control.holds_everyone(now, asked):
            schedule.hold(now + delay)
        push(now + delay, "free", throttled + 1)
