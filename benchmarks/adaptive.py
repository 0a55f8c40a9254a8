"""Adaptive rate: ``bulkpatch run --rate auto`` against a limit it is not told, that moves.

    python benchmarks/adaptive.py            # 60 s, limit 300 -> 150 -> 300 req/s
    python benchmarks/adaptive.py --quick    # 12 s, limit 300 -> 150 -> 300 every 4 s

The simulator (its own process) throttles all requests with a token bucket (burst 10)
whose rate follows ``0:300,20:150,40:300`` from the first write, and its 429s carry no
``Retry-After`` (``--retry-after seconds`` to send one). ``bulkpatch run --rate auto``
gets more jobs than it can finish in the time and is stopped with SIGTERM at the end.
From the simulator's own count of writes per second:

- per phase, the mean of its last 15 s (the first 5 s are for finding the new limit),
  and its ratio to the phase's limit (bar: >= 0.90 each);
- 429s as a share of all requests (bar: <= 2 %).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

ENV = {"ADOBE_API_KEY": "bench", "ADOBE_ORG_ID": "BENCH@AdobeOrg", "ADOBE_SANDBOX_NAME": "bench"}
OFFERS = 2000


def start_sim(phase_s: int, retry_after: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    schedule = f"0:300,{phase_s}:150,{2 * phase_s}:300"
    command = [
        sys.executable, "-m", "bulkpatch.cli", "sim", "--host", "127.0.0.1", "--port", "0",
        "--offers", str(OFFERS), "--rate-limit", "300", "--burst", "10",
        "--rate-schedule", schedule, "--retry-after", retry_after, "-q",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    return proc, ready


def stats(endpoint: str) -> dict[str, Any]:
    base = endpoint.removesuffix("/data/core/dps")
    with urllib.request.urlopen(f"{base}/_sim/stats", timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return data


def write_jobs(path: Path, count: int) -> None:
    with path.open("wb") as f:
        for n in range(count):
            job = {
                "id": f"personalizedOffer{n % OFFERS + 1:06d}",
                "patch": [{"op": "replace", "path": "/name", "value": f"Adaptive {n}"}],
            }
            f.write(orjson.dumps(job, option=orjson.OPT_APPEND_NEWLINE))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 s phases instead of 20 s")
    parser.add_argument("--retry-after", choices=("none", "seconds", "date"), default="none")
    args = parser.parse_args()
    phase_s = 4 if args.quick else 20
    settle_s = 1 if args.quick else 5
    limits = (300, 150, 300)
    sim, ready = start_sim(phase_s, args.retry_after)
    try:
        with tempfile.TemporaryDirectory(prefix="bulkpatch-adaptive-") as tmp:
            jobs = Path(tmp) / "jobs.ndjson"
            write_jobs(jobs, 400 * 3 * phase_s)  # more than the limits let through
            command = [
                sys.executable, "-m", "bulkpatch.cli", "run", str(jobs),
                "--endpoint", ready["endpoint"], "--rate", "auto", "--concurrency", "64", "-q",
            ]  # fmt: skip
            env = {**os.environ, **ENV, "ADOBE_ACCESS_TOKEN": ready["access_token"]}
            client = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
            # The schedule's clock starts at the first write, a moment after the client's.
            time.sleep(3 * phase_s + 0.5)
            client.send_signal(signal.SIGTERM)
            client.wait(timeout=60)
            seen = stats(ready["endpoint"])
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)
    per_second = {int(k): v for k, v in seen["writes_by_second"].items()}
    requests = seen["requests_total"]
    throttled = seen["throttled_429"]
    print(f"limit schedule 0:300,{phase_s}:150,{2 * phase_s}:300 req/s, burst 10, Retry-After {args.retry_after}")
    print("writes/s:", [per_second.get(s, 0) for s in range(3 * phase_s)])
    ok = True
    for n, limit in enumerate(limits):
        window = range(n * phase_s + settle_s, (n + 1) * phase_s)
        mean = sum(per_second.get(s, 0) for s in window) / len(window)
        ratio = mean / limit
        ok &= ratio >= 0.9
        print(f"phase {n + 1} (limit {limit}/s): last {len(window)} s at {mean:.0f}/s = {ratio:.2f}x (bar >= 0.90)")
    share = throttled / requests if requests else 0.0
    ok &= share <= 0.02
    print(f"429s: {throttled} of {requests} requests = {share:.2%} (bar <= 2%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
