"""The one retry loop of a request that may be sent again as it is: a read, a token request.

``repeated`` sends until a 2xx: a 429, a 401 or a 503 with ``Retry-After`` is the
caller's to absorb (the gateway slows or pauses requests, or renews the token) and costs no
attempt; 408, 5xx and transport
errors are retried with the policy's backoff up to its attempts; anything else ends it.
A job's writes are not repeated as they are (an unknown outcome must be settled first):
their loop is ``perform.Performer.drive``, which reads through this one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple, assert_never

from bulkpatch.client import Response
from bulkpatch.errors import BulkpatchError, ErrorKind, TransportError
from bulkpatch.retry import RetryPolicy, Verdict


class Given(BulkpatchError):
    """A request given up on: ``kind`` (``exhausted`` or ``http``), the message, the
    status of the last answer, if any, and its gateway ``error_code`` (API notes §3)."""

    def __init__(
        self, kind: str, message: str, status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.code = code


@dataclass(slots=True)
class Tally:
    """What one request, or one job's requests, went through so far."""

    attempts: int = 0
    throttled: int = 0
    request_id: str | None = None
    last_error: str = ""
    connect_failures: int = 0  # transport errors before anything was sent
    server_s: float = 0.0  # time with the server: each request from sent to answer read
    wait_s: float = 0.0  # time waiting on the run's pace: schedule, pauses, backoffs
    # Why the next request of this method would be a re-send: (method, cause).
    resend: tuple[str, str] | None = None


class Exchange(NamedTuple):
    """One request's answer (or transport error), what it means, and the token it used."""

    answer: Response | TransportError
    verdict: Verdict
    token: str


async def repeated(
    send: Callable[[], Awaitable[Exchange]],
    *,
    tally: Tally,
    policy: RetryPolicy,
    absorb: Callable[[Exchange, Tally], Awaitable[bool]],
    back_off: Callable[[int], Awaitable[None]],
    what: str,
) -> Response:
    """Send until a 2xx and return it. Raises ``Given``: ``http`` for an answer no retry
    mends, ``exhausted`` after ``policy.max_attempts`` transient failures (``what``
    names the request in the message; ``tally.last_error`` says the last)."""
    tries = 0
    while True:
        exchange = await send()
        answer = exchange.answer
        match exchange.verdict:
            case Verdict.DONE:
                assert isinstance(answer, Response)
                return answer
            case Verdict.THROTTLED | Verdict.UNAUTHORIZED:
                await absorb(exchange, tally)
            case Verdict.TRANSIENT | Verdict.UNKNOWN:
                if await absorb(exchange, tally):
                    continue  # the server said how long to wait (503 + Retry-After)
                # (A transport error's own words: the IMS token request has no gateway
                # to note them.)
                tally.last_error = (
                    f"HTTP {answer.status}: {answer.message()}"
                    if isinstance(answer, Response)
                    else str(answer)
                )
                tries += 1
                if tries >= policy.max_attempts:
                    raise Given(ErrorKind.EXHAUSTED, f"{what} failed {tries} times; last: {tally.last_error}")
                await back_off(tries)
            case Verdict.PERMANENT | Verdict.CONFLICT:
                assert isinstance(answer, Response)
                raise Given(ErrorKind.HTTP, answer.message(), answer.status, answer.error_code())
            case _:
                assert_never(exchange.verdict)
