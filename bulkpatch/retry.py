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
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

from bulkpatch.errors import TransportError

# Transient statuses whose request may have been applied (see the docstring).
UNKNOWN_OUTCOME: Final = frozenset({408, 500, 502, 503, 504})


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


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 §10.2.3), None if unusable.

    Either delay-seconds or an HTTP-date; a date in the past means "now" (0).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        # Not RFC-conformant, but some gateways send "1.5": take it rather than ignore it.
        return seconds if seconds >= 0 else None
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
