"""What to do after an answer or an error: pure functions, tested without a loop.

The verdicts follow the API notes §2-3 and RFC 9110:

- 2xx: done.
- 409 / 412: the etag we sent is stale (the DPS API's status for it is unknown: both).
- 429: throttled by the gateway, never applied; wait ``Retry-After`` when given.
- 401: the token is no longer valid; renew it once, then retry.
- 408 (§15.5.9: the server gave up waiting for the request, which "may" be repeated),
  500, 502, 503, 504 and transport errors after the request was sent: transient, and a
  write's fate is **unknown** (a proxy may have reached the service, or the service
  applied the write and failed afterwards), so a write is checked before it is sent again.
- 3xx (§15.4): the client never follows a write's redirect (see ``client``), so a write
  met by one may or may not have been applied: **unknown** as well. A read's 3xx that
  reaches the caller is one the client refused to follow (another origin, too many
  hops): permanent (``classify_read``).
- Transport errors before sending (connection refused): transient, nothing was applied.
- 501 and 505 (§15.6.2, §15.6.6: the server cannot do this at all) and every other 4xx:
  permanent.
"""

from __future__ import annotations

import enum
import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

from bulkpatch.errors import ConfigError, TransportError

# Transient statuses whose request may have been applied (see the docstring).
UNKNOWN_OUTCOME: Final = frozenset({408, 500, 502, 503, 504})
_LATEST_INTO_S: Final = 0.999  # ``ServerSeconds.into``: within the second, whatever came late
# An answer dated a second before the last one, arriving this long after that second
# began, was dated by another clock (answers in flight together arrive a little apart).
_SKEW_S: Final = 0.05


class Verdict(enum.Enum):
    DONE = "done"
    CONFLICT = "conflict"
    THROTTLED = "throttled"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN = "unknown"  # transient, and a write may have been applied
    TRANSIENT = "transient"  # transient, nothing was applied
    PERMANENT = "permanent"


def classify_status(status: int) -> Verdict:
    if 200 <= status < 300:
        return Verdict.DONE
    if status in (409, 412):
        return Verdict.CONFLICT
    if status == 429:
        return Verdict.THROTTLED
    if status == 401:
        return Verdict.UNAUTHORIZED
    if status in UNKNOWN_OUTCOME or 300 <= status < 400:
        return Verdict.UNKNOWN
    return Verdict.PERMANENT


def classify_read(status: int) -> Verdict:
    """``classify_status`` for a read: its 3xx is a redirect the client refused."""
    if 300 <= status < 400:
        return Verdict.PERMANENT
    return classify_status(status)


def classify_transport(error: TransportError) -> Verdict:
    return Verdict.UNKNOWN if error.sent else Verdict.TRANSIENT


_DELAY_SECONDS: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 §10.2.3), None if unusable.

    Either delay-seconds (``1*DIGIT``, ASCII digits; a decimal fraction is taken too:
    some gateways send "1.5") or an HTTP-date in any of its three forms (§5.6.7); a date
    in the past means "now" (0). Anything else is no ``Retry-After``: "inf", "1e3",
    "1_0" or digits of another script read as numbers to Python's ``float``, and "inf"
    stopped a run as a wait longer than ``--max-wait``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff (AWS architecture blog, 2015): U(0, min(cap, base·2^n)).

    ``attempt`` counts from 1 (the first retry).
    """
    return rng.uniform(0.0, min(cap, base * (2 ** (attempt - 1))))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one request or job is tried; the one definition every retry loop reads.

    - ``max_attempts``: attempts at a request that may fail transiently (5xx, 408,
      transport errors); 429s and 401s are not attempts, they have limits of their own.
    - ``max_conflicts``: rebases after 409/412 before a job fails as ``conflict``.
    - ``max_throttled``: 429s one request may meet before it is given up (``exhausted``).
    - ``max_refusals``: 401s of one token, without an acceptance in between, before the
      credentials are declared rejected.
    - ``backoff_base_s`` / ``backoff_cap_s``: full-jitter exponential backoff, seconds.
    - ``max_wait_s``: the longest wait a server may ask for (``Retry-After``) before the
      run stops instead (``--max-wait``).
    """

    max_attempts: int = 6
    max_conflicts: int = 5
    max_throttled: int = 50
    max_wait_s: float = 600.0
    max_refusals: int = 3
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_attempts", "max_throttled", "max_refusals"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_conflicts < 0:
            raise ConfigError(f"max_conflicts must be >= 0, got {self.max_conflicts!r}")
        if self.max_wait_s <= 0:
            raise ConfigError(f"max_wait_s must be > 0, got {self.max_wait_s!r}")
        if not 0 < self.backoff_base_s <= self.backoff_cap_s:
            raise ConfigError("backoff_base_s must be > 0 and at most backoff_cap_s")

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry number ``attempt`` (from 1)."""
        return backoff(attempt, base=self.backoff_base_s, cap=self.backoff_cap_s, rng=rng)

    def throttle_delay_s(
        self,
        retry_after: str | None,
        count: int,
        rng: random.Random,
        *,
        date: str | None = None,
        into_s: float = 0.0,
    ) -> float:
        """How long a request waits after its ``count``-th 429: ``Retry-After`` when it is
        usable (RFC 6585 §4, RFC 9110 §10.2.3), an HTTP-date read against the answer's
        ``Date`` (``into_s`` seconds into it); without it, a backoff."""
        delay = parse_retry_after(retry_after, now=server_time(date, into_s))
        return self.backoff_s(min(count, 6), rng) if delay is None else delay

    def asked_wait_s(
        self, retry_after: str | None, date: str | None, into_s: float = 0.0
    ) -> float | None:
        """The wait a ``Retry-After`` asks for, if usable; None when absent or unreadable.
        An HTTP-date is read against ``date``, ``into_s`` seconds into it (``ServerSeconds``)."""
        return parse_retry_after(retry_after, now=server_time(date, into_s))


def server_time(date: str | None, into_s: float = 0.0) -> datetime | None:
    """The server's clock from an answer's ``Date`` (RFC 9110 §6.6.1), if readable, and
    ``into_s`` seconds into that second: an HTTP-date ``Retry-After`` is a moment on that
    clock, whatever ours says."""
    if date is None:
        return None
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return when + timedelta(seconds=into_s) if into_s else when


@dataclass(slots=True)
class ServerSeconds:
    """Where the server's clock stands within the second its answers are dated, on ours.

    ``Date`` is whole seconds (RFC 9110 §5.6.7): read against it alone, an HTTP-date
    ``Retry-After`` waits up to a second longer than the server asked, half a second on
    average. A 6 s window was then back in use up to 2 s before the client came back, its
    length read 0.45 s long, and its grant 7 % low (0.88x of the limit).

    The second an answer is dated began before the answer arrived: so ``now - began``,
    from the arrival of the first answer seen with a later ``date`` than any before, is
    how far into that second the server's clock is at least. The bound errs late, never
    early, and is tight when answers come often, as long as one clock dates them all.
    Answers dated by clocks out of step (a gateway's 429s and its origin's 2xx) show it:
    one dated a second earlier comes more than ``_SKEW_S`` after a later second began.
    From then on nothing is followed, and waits are read against ``Date`` alone.
    """

    date: str | None = None
    began: float = 0.0  # our clock when the first answer dated ``date`` arrived (s)
    second: float = -math.inf  # ``date``, in seconds since the epoch
    in_step: bool = True  # no answer yet from a clock out of step with the others

    def heard(self, date: str, now: float) -> None:
        """An answer dated ``date``, another date than ``self.date``, arrived at ``now``."""
        when = server_time(date) if self.in_step else None
        second = math.nan if when is None else when.timestamp()
        if when is None or second == self.second:
            # Compared, not parsed, for the answers after it: the gateway calls this when
            # the text changes, which out of step or unreadable was at every answer.
            self.date = date
        elif second > self.second:
            self.date, self.second, self.began = date, second, now
        elif now - self.began > _SKEW_S:
            self.in_step = False

    def into(self, date: str | None, now: float) -> float:
        """Seconds past ``date`` the server's clock is at least at ``now``: in [0, 1), 0
        unless ``date`` is the second last seen to begin (an answer from an earlier one,
        or from a server whose clock we have not followed)."""
        if date is None or date != self.date or not self.in_step:
            return 0.0
        return min(max(0.0, now - self.began), _LATEST_INTO_S)
