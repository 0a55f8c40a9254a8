"""``benchmarks/limitserver.py``: the throttles of the ``limits`` package, as a process.

Each model lets ``--limit`` requests through in a window and refuses the next one with the
configured status and ``Retry-After`` form; the outage answers every API request 503. The
windows are a day long, so no window ends (and no sliding window's boundary passes)
between a test's requests.
"""

from __future__ import annotations

import json
import math
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

SERVER = Path(__file__).resolve().parent.parent / "benchmarks" / "limitserver.py"
WAIT_S = 20.0
DAY = 86_400


@contextmanager
def limitserver(*args: str) -> Iterator[str]:
    """The server in a child process; yields its endpoint; stops it."""
    command = [sys.executable, str(SERVER), "--port", "0", *args]
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            assert proc.stdout is not None
            readable, _, _ = select.select([proc.stdout], [], [], WAIT_S)
            assert readable, "no ready line within the wait"
            ready = json.loads(proc.stdout.readline())
            assert ready["pid"] == proc.pid
            yield str(ready["endpoint"])
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=WAIT_S)
            assert proc.returncode == 0, err.decode()
            assert b"Traceback" not in err


def call(method: str, url: str) -> tuple[int, Any, dict[str, str]]:
    data = b'[{"op": "replace", "path": "/name", "value": "x"}]' if method == "PATCH" else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


def stats(endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(endpoint.replace("/data/core/dps", "/_stats"), timeout=WAIT_S) as r:
        body: dict[str, Any] = json.loads(r.read())
    return body


@pytest.mark.parametrize(
    ("model", "form", "status"),
    [
        ("fixed", "seconds", 429),
        ("moving", "date", 503),
        ("sliding", "none", 429),
        ("bucket", "seconds", 503),
    ],
)
def test_each_model_refuses_the_request_past_its_limit(model: str, form: str, status: int) -> None:
    limit = 10
    options = ["--model", model, "--limit", str(limit), "--window", str(DAY)]
    with limitserver(*options, "--retry-after", form, "--status", str(status)) as endpoint:
        url = endpoint + "/offers/personalizedOffer000001"
        for n in range(limit - 1):
            assert call("PATCH", url)[:2] == (200, {"id": "personalizedOffer000001", "etag": n + 2})
        code, body, _ = call("GET", url)
        assert (code, body["etag"]) == (200, limit)
        code, body, headers = call("PATCH", url)
        assert code == status, body
        assert body["error_code"] == f"{status}050"
        check_retry_after(form, headers)
        summary = stats(endpoint)["summary"]
    assert summary["writes_landed"] == limit - 1
    assert summary[f"share_{status}"] == pytest.approx(1 / (limit + 1))


def check_retry_after(form: str, headers: dict[str, str]) -> None:
    if form == "none":
        assert "Retry-After" not in headers
    elif form == "seconds":
        # The bucket refills 10 a day: one token is 8,640 s away; a window resets in a day.
        assert 1 <= int(headers["Retry-After"]) <= DAY
    else:
        wait = parsedate_to_datetime(headers["Retry-After"]) - parsedate_to_datetime(
            headers["Date"]
        )
        assert 1 <= wait.total_seconds() <= DAY + 1


def test_outage_answers_every_request_503_with_the_seconds_left() -> None:
    options = ["--model", "bucket", "--limit", "1000", "--outage-at", "0", "--outage-for", "600"]
    with limitserver(*options) as endpoint:
        url = endpoint + "/offers/personalizedOffer000001"
        for method in ("PATCH", "GET"):
            code, body, headers = call(method, url)
            assert (code, body["error_code"]) == (503, "503050")
            assert 590 <= int(headers["Retry-After"]) <= 600
        body = stats(endpoint)
    assert [record[1:] for record in body["requests"]] == [[503, "PATCH"], [503, "GET"]]
    assert body["summary"]["share_503"] == 1.0
    assert math.isclose(body["requests"][0][0], 0.0)


def test_stats_give_the_epoch_time_of_the_first_request() -> None:
    # The sliding counter's windows begin at multiples of their length in epoch time:
    # pacing.py reads from this where a run met the first edge.
    with limitserver("--model", "sliding", "--limit", "10") as endpoint:
        assert stats(endpoint)["started_at"] is None
        url = endpoint + "/offers/personalizedOffer000001"
        before = time.time()
        call("GET", url)
        after = time.time()
        call("GET", url)
        started_at = stats(endpoint)["started_at"]
    assert before <= started_at <= after


def test_bad_setting_is_one_line_naming_it() -> None:
    command = [sys.executable, str(SERVER), "--model", "fixed", "--limit", "0"]
    result = subprocess.run(command, capture_output=True, timeout=WAIT_S, check=False)
    assert result.returncode == 2
    assert b"--limit" in result.stderr
    assert b"Traceback" not in result.stderr
