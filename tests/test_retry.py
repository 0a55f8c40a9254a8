"""Classifying answers, Retry-After, and backoff: pure functions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bulkpatch.errors import TransportError
from bulkpatch.retry import (
    RetryPolicy,
    ServerSeconds,
    Verdict,
    backoff,
    classify_read,
    classify_status,
    classify_transport,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DONE),
        (201, Verdict.DONE),
        (409, Verdict.CONFLICT),
        (412, Verdict.CONFLICT),
        (429, Verdict.THROTTLED),
        (401, Verdict.UNAUTHORIZED),
        (500, Verdict.UNKNOWN),
        (502, Verdict.UNKNOWN),
        (503, Verdict.UNKNOWN),
        (504, Verdict.UNKNOWN),
        (408, Verdict.UNKNOWN),  # RFC 9110 §15.5.9: may be repeated
        (301, Verdict.UNKNOWN),  # a write's redirect is never followed: did it land?
        (303, Verdict.UNKNOWN),
        (307, Verdict.UNKNOWN),
        (308, Verdict.UNKNOWN),
        (501, Verdict.PERMANENT),
        (505, Verdict.PERMANENT),
        (400, Verdict.PERMANENT),
        (403, Verdict.PERMANENT),
        (404, Verdict.PERMANENT),
        (422, Verdict.PERMANENT),
    ],
)
def test_status_verdicts(status: int, verdict: Verdict) -> None:
    assert classify_status(status) is verdict


@pytest.mark.parametrize("status", [301, 302, 303, 304, 307, 308])
def test_a_redirect_that_reaches_a_read_is_permanent(status: int) -> None:
    assert classify_read(status) is Verdict.PERMANENT


@pytest.mark.parametrize("status", [200, 401, 408, 409, 429, 404, 503])
def test_a_read_is_otherwise_classified_like_a_write(status: int) -> None:
    assert classify_read(status) is classify_status(status)


def test_a_request_that_may_have_reached_the_server_has_an_unknown_outcome() -> None:
    assert classify_transport(TransportError("timeout", sent=True)) is Verdict.UNKNOWN
    assert classify_transport(TransportError("refused", sent=False)) is Verdict.TRANSIENT


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=5), usegmt=True), now=now) == 5.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0.0
    assert parse_retry_after("1.5") == 1.5


def test_the_servers_clock_is_read_as_far_into_its_second_as_its_answers_show_at_least() -> None:
    seconds = ServerSeconds()
    assert seconds.into("Mon, 23 Nov 2026 12:00:07 GMT", 10.0) == 0.0  # nothing followed yet
    seconds.heard("Mon, 23 Nov 2026 12:00:08 GMT", 10.2)  # the first answer dated :08
    assert seconds.into("Mon, 23 Nov 2026 12:00:08 GMT", 10.65) == pytest.approx(0.45)
    # An answer from the second before, or undated: nothing is known past its Date.
    assert seconds.into("Mon, 23 Nov 2026 12:00:07 GMT", 10.65) == 0.0
    assert seconds.into(None, 10.65) == 0.0
    # Never a second or more into it: an answer dated :08 was made before :09.
    assert seconds.into("Mon, 23 Nov 2026 12:00:08 GMT", 12.0) < 1.0
    # A wait read from it: the HTTP-date :10 is 1.55 s after 12:00:08.45.
    asked = RetryPolicy().asked_wait_s(
        "Mon, 23 Nov 2026 12:00:10 GMT", "Mon, 23 Nov 2026 12:00:08 GMT", 0.45
    )
    assert asked == pytest.approx(1.55)


def test_answers_dated_by_clocks_out_of_step_leave_waits_read_against_date_alone() -> None:
    seconds = ServerSeconds()
    seconds.heard("Mon, 23 Nov 2026 12:00:08 GMT", 10.0)
    # Sent before :08 began and answered a little after an answer dated :08: in step.
    seconds.heard("Mon, 23 Nov 2026 12:00:07 GMT", 10.02)
    assert seconds.into("Mon, 23 Nov 2026 12:00:08 GMT", 10.5) == pytest.approx(0.5)
    # Dated :07 a quarter of a second after :08 began: another clock dated it (a gateway
    # 0.3 s behind its origin), and how far into :08 the gateway is, nothing here says.
    seconds.heard("Mon, 23 Nov 2026 12:00:07 GMT", 10.25)
    assert seconds.into("Mon, 23 Nov 2026 12:00:08 GMT", 10.5) == 0.0
    seconds.heard("Mon, 23 Nov 2026 12:00:09 GMT", 11.0)
    assert seconds.into("Mon, 23 Nov 2026 12:00:09 GMT", 11.5) == 0.0


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "-3", "Mon, 99 Foo 2026", "inf", "Infinity", "nan", "1e3", "1_0", "+5", "\u0663"],
)
def test_unusable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_backoff_is_full_jitter_and_capped() -> None:
    rng = random.Random(5)
    for attempt in range(1, 12):
        delays = [backoff(attempt, base=0.5, cap=8.0, rng=rng) for _ in range(200)]
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # the whole range is used, not a fixed step
