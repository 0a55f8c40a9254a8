"""Adaptive rate: ``bulkpatch run --rate auto`` against a limit it is not told, that moves.

    python benchmarks/adaptive.py            # 9 runs of 60 s: limit 300 -> 150 -> 300 req/s
    python benchmarks/adaptive.py --quick    # one run of 12 s: 300 -> 150 -> 300 every 4 s
    python benchmarks/adaptive.py --throttle fixed --retry-after date   # one of the nine

The simulator (its own process) throttles all requests, its limit following
``0:300,20:150,40:300`` from the first write, with each one-second model it has: its token
bucket (burst 10), a fixed window and a sliding (moving) window of one second (the
``limits`` package's); each refuses with 429 and ``Retry-After`` as none, delay-seconds or
an HTTP-date. ``bulkpatch run --rate auto`` gets more jobs than it can finish in the time
and is stopped with SIGTERM at the end. From the simulator's own count of writes per
second, for each model and form:

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


MODELS = ("bucket", "fixed", "sliding")
FORMS = ("none", "seconds", "date")


def start_sim(phase_s: int, throttle: str, retry_after: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    schedule = f"0:300,{phase_s}:150,{2 * phase_s}:300"
    command = [
        sys.executable, "-m", "bulkpatch.cli", "sim", "--host", "127.0.0.1", "--port", "0",
        "--offers", str(OFFERS), "--rate-limit", "300", "--throttle", throttle,
        "--rate-schedule", schedule, "--retry-after", retry_after, "-q",
    ]  # fmt: skip
    if throttle == "bucket":
        command += ["--burst", "10"]
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


def run_one(phase_s: int, throttle: str, retry_after: str) -> dict[str, Any]:
    """One run against one model: the simulator's statistics at its end."""
    sim, ready = start_sim(phase_s, throttle, retry_after)
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
            return stats(ready["endpoint"])
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)


def report(seen: dict[str, Any], phase_s: int, settle_s: int, name: str) -> bool:
    """Print one run's figures; True when it met every bar."""
    limits = (300, 150, 300)
    per_second = {int(k): v for k, v in seen["writes_by_second"].items()}
    requests = seen["requests_total"]
    throttled = seen["throttled_429"]
    print(f"{name}: writes/s", [per_second.get(s, 0) for s in range(3 * phase_s)])
    ok = True
    ratios = []
    for n, limit in enumerate(limits):
        window = range(n * phase_s + settle_s, (n + 1) * phase_s)
        ratio = sum(per_second.get(s, 0) for s in window) / len(window) / limit
        ok &= ratio >= 0.9
        ratios.append(f"{ratio:.2f}")
    share = throttled / requests if requests else 0.0
    ok &= share <= 0.02
    print(f"{name}: phases {' / '.join(ratios)} x the limit (bar >= 0.90 each), 429s {share:.2%} (bar <= 2%)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one run, 4 s phases instead of 20 s")
    parser.add_argument("--throttle", choices=MODELS, help="only this model (default: each)")
    parser.add_argument("--retry-after", choices=FORMS, help="only this form (default: each)")
    args = parser.parse_args()
    phase_s = 4 if args.quick else 20
    settle_s = 1 if args.quick else 5
    models = [args.throttle] if args.throttle else (["bucket"] if args.quick else list(MODELS))
    forms = [args.retry_after] if args.retry_after else (["none"] if args.quick else list(FORMS))
    print(f"limit schedule 0:300,{phase_s}:150,{2 * phase_s}:300 req/s")
    met = 0
    for model in models:
        for form in forms:
            met += report(run_one(phase_s, model, form), phase_s, settle_s, f"{model:7} {form:7}")
    total = len(models) * len(forms)
    print(f"{met} of {total} runs met every bar")
    return 0 if met == total else 1


if __name__ == "__main__":
    sys.exit(main())
