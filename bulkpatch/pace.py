"""Pacing: a fixed rate, or one found by watching the server's 429s (``--rate auto``).

The rate limiter itself is aiolimiter's. What this module adds is the controller that
chooses its rate when the server's limit is not known, not told, and may change:

- **Start** at ``start`` requests/s and double every tick while nothing is refused.
- **On a 429**, remember the rate that was refused (the ceiling) and drop to what the
  server actually accepted over the last second (a token-bucket server accepts exactly
  its limit while it refuses the rest), at most 0.9x the current rate. 429s that come
  within a tick of a decrease were caused by requests sent before it and change nothing.
- **Probe back** quickly (x1.25 a tick) to just under the ceiling, the last rate known to
  fail, then **past it** carefully: +1 % for the first clean tick, doubling each clean
  tick after (2 %, 4 %, ...; at most x1.25), so a limit that was raised is found in a few
  seconds, and one that was not costs a few refused requests per probe.
- Only a rate that is used is raised: while the client sends less than 80 % of the rate
  (too few jobs, too little concurrency), the rate stays where it is.

Several processes sharing one server's limit (``--shard``) each run this controller on
the 429s they see, and settle on shares of the limit without talking to each other, as
TCP flows share a link.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from aiolimiter import AsyncLimiter

TICK_S: Final = 0.5
_WINDOW_S: Final = 1.0  # how far back the accepted rate is measured


def limiter_for(rate: float) -> AsyncLimiter:
    """A limiter that keeps ``rate`` from the first second.

    aiolimiter lets a full bucket go at once; a bucket of a fiftieth of a second's
    requests (at least one) that drains at the rate keeps the pace without a burst.
    """
    burst = max(1.0, min(rate, rate / 50))
    return AsyncLimiter(burst, burst / rate)


@dataclass
class AutoRate:
    """The controller of ``--rate auto``: call ``sent``, ``answered`` and ``tick``."""

    start: float = 10.0
    max_rate: float = 1000.0
    min_rate: float = 0.5
    rate: float = field(init=False)
    ceiling: float | None = field(init=False, default=None)
    _clean: int = field(init=False, default=0)
    _sent: int = field(init=False, default=0)
    _refused: bool = field(init=False, default=False)
    _calm_until: float = field(init=False, default=-math.inf)
    _accepted: deque[float] = field(init=False, default_factory=deque)

    def __post_init__(self) -> None:
        self.rate = min(self.start, self.max_rate)

    def sent(self) -> None:
        self._sent += 1

    def answered(self, now: float, *, throttled: bool) -> bool:
        """Note one answer; True when the rate changed."""
        accepted = self._accepted
        if not throttled:
            accepted.append(now)
            while accepted[0] < now - _WINDOW_S:
                accepted.popleft()
            return False
        self._refused = True
        if now < self._calm_until:
            return False
        while accepted and accepted[0] < now - _WINDOW_S:
            accepted.popleft()
        self.ceiling = self.rate
        measured = len(accepted) / _WINDOW_S
        target = 0.9 * self.rate
        if measured > 0:
            target = min(target, 0.95 * measured)
        self.rate = max(self.min_rate, target)
        self._clean = 0
        self._calm_until = now + TICK_S
        return True

    def tick(self, now: float) -> bool:
        """Called every ``TICK_S``; True when the rate changed."""
        sent, refused = self._sent, self._refused
        self._sent, self._refused = 0, False
        if refused or now < self._calm_until or self.rate >= self.max_rate:
            self._clean = 0
            return False
        if sent < 0.8 * self.rate * TICK_S:
            return False  # the rate is not what holds the client back
        before = self.rate
        if self.ceiling is None:
            self.rate = min(self.max_rate, self.rate * 2)
        elif self.rate < 0.95 * self.ceiling:
            self.rate = min(0.95 * self.ceiling, self.rate * 1.25)
        else:
            self._clean += 1
            step = min(0.25, 0.01 * 2 ** (self._clean - 1))
            self.rate = min(self.max_rate, self.rate * (1 + step))
        return self.rate != before
