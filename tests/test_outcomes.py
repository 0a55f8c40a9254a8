"""One outcome schema: the line format of every kind, pinned key by key."""

from __future__ import annotations

from typing import Any

import pytest

from bulkpatch import outcomes
from bulkpatch.errors import ErrorKind, InputError
from bulkpatch.jobs import BadLine, parse_line
from bulkpatch.journal import Failed, Landed

JOB = parse_line(b'{"id":"o1","patch":[{"op":"replace","path":"/name","value":"x"}],"ref":7}', 3)


def _keys(outcome: outcomes.Outcome) -> list[str]:
    return list(outcome.to_dict())


def test_an_ok_write_line() -> None:
    line = outcomes.succeeded(JOB, 200, 5, ms=1.5, request_id="r-1").to_dict()
    assert list(line) == ["line", "id", "ok", "status", "etag", "attempts", "conflicts", "ms", "server_ms", "wait_ms", "at", "request_id", "ref"]
    assert (line["line"], line["id"], line["ok"], line["status"], line["etag"], line["ref"]) == (3, "o1", True, 200, 5, 7)


def test_a_recovered_line_says_so() -> None:
    line = outcomes.finished(
        JOB, ok=True, attempts=2, conflicts=0, throttled=1, ms=9.0, request_id="r-2", status=200, etag=6, recovered=True
    ).to_dict()
    assert list(line) == ["line", "id", "ok", "status", "etag", "attempts", "conflicts", "throttled", "recovered", "ms", "server_ms", "wait_ms", "at", "request_id", "ref"]


@pytest.mark.parametrize("kind", [ErrorKind.HTTP, ErrorKind.CONFLICT, ErrorKind.EXHAUSTED, ErrorKind.ABORTED])
def test_a_failed_line_carries_its_error_and_the_job_to_run_again(kind: ErrorKind) -> None:
    line = outcomes.finished(
        JOB, ok=False, attempts=1, conflicts=0, throttled=0, ms=2.0, request_id=None,
        status=422, error=outcomes.error(kind, "why", 422),
    ).to_dict()
    assert list(line) == ["line", "id", "ok", "status", "attempts", "ms", "server_ms", "wait_ms", "at", "ref", "error", "job"]
    assert line["error"] == {"kind": kind.value, "status": 422, "message": "why"}
    assert line["job"] == JOB.as_line()


def test_a_bad_line_carries_its_raw_text_and_size() -> None:
    bad = BadLine(4, InputError("must be an array", line=4, field="patch"), b'{"id":"o1","patch":1}', 21)
    line = outcomes.bad_line(bad).to_dict()
    assert list(line) == ["line", "ok", "attempts", "ms", "server_ms", "wait_ms", "at", "error", "job", "bytes"]
    assert line["error"] == {"kind": "input", "field": "patch", "message": str(bad.error)}
    assert (line["job"], line["bytes"]) == ('{"id":"o1","patch":1}', 21)


@pytest.mark.parametrize(
    ("ended", "expected"),
    [
        (Landed(200, 9, "o1"), {"ok": True, "etag": 9, "recovered": True}),
        (Failed(409, {"kind": "conflict", "message": "m"}, "o1"), {"ok": False, "error": {"kind": "conflict", "message": "m"}}),
    ],
)
def test_an_outcome_an_earlier_run_decided(ended: Any, expected: dict[str, Any]) -> None:
    line = outcomes.from_journal(JOB, None, ended).to_dict()
    assert expected.items() <= line.items()


def test_the_error_kinds_are_the_documented_ones() -> None:
    assert [k.value for k in ErrorKind] == ["input", "http", "conflict", "test_failed", "exhausted", "aborted"]


def test_a_written_line_carries_its_seq_after_at() -> None:
    outcome = outcomes.succeeded(JOB, 200, 5, ms=1.5, request_id="r-1")
    outcome.seq = 12
    line = outcome.to_dict()
    assert list(line) == ["line", "id", "ok", "status", "etag", "attempts", "conflicts", "ms", "server_ms", "wait_ms", "at", "seq", "request_id", "ref"]
    assert line["seq"] == 12


def test_the_three_times_are_floats_in_every_kind_of_line() -> None:
    lines = [
        outcomes.succeeded(JOB, 200, 5, ms=1.5, request_id="r", server_ms=1.0, wait_ms=0.5).to_dict(),
        outcomes.bad_line(BadLine(4, InputError("x", line=4), b"{", 1)).to_dict(),
        outcomes.refused(JOB, "no").to_dict(),
        outcomes.from_journal(JOB, None, Landed(200, 9, "o1")).to_dict(),
    ]
    for line in lines:
        assert [type(line[k]) for k in ("ms", "server_ms", "wait_ms")] == [float, float, float]


def test_a_re_run_line_carries_its_source_line_after_line() -> None:
    job = parse_line(b'{"id":"o1","patch":[{"op":"replace","path":"/name","value":"x"}],"line":41,"error":{}}', 2)
    outcome = outcomes.succeeded(job, 200, 5, ms=1.5, request_id="r")
    outcome.run = "r-1"
    line = outcome.to_dict()
    assert list(line)[:3] == ["line", "source_line", "id"]
    assert (line["line"], line["source_line"], line["run"]) == (2, 41, "r-1")
