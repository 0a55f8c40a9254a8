"""Throttle fidelity: does ``bulkpatch run --rate 285`` land 285 writes/s under a 300/s limit?

    python benchmarks/throttle.py            # 6,000 jobs, 3 repeats (median), ~25 s each
    python benchmarks/throttle.py --quick    # 600 jobs, 1 repeat: checks the script works

The simulator (``bulkpatch sim --rate-limit 300 --burst 10``: a token bucket over all API
requests, its 429s carrying ``Retry-After`` in seconds) runs in its own process pinned to
one core; ``bulkpatch run --rate 285 --concurrency 64`` runs as a child process pinned to
the other, on replace jobs spread over 2,000 seeded offers. A fresh simulator serves each
repeat. Every figure is the simulator's own count:

- landed rate: writes applied / the run's duration, timed from the first write the
  simulator applied (seen by polling its statistics while the client starts) to the
  client's exit, so Python's start-up is left out and the client's shutdown is not.
  Bar: median >= 0.97 x 285/s;
- the per-second bins of applied writes (``writes_by_second``, whole seconds from the first
  write): their mean over whole seconds, and the highest one. Bar: no bin, in any repeat,
  above the limit of 300;
- throttled 429s / API requests (the statistics polls left out). Bar: median <= 0.5 %.

Every job must land. Exit 0 when every bar is met, 1 when one is missed, 2 when the
benchmark could not measure (a child failed or overran its time limit). Each child has a
hard time limit, and so has the whole script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

import orjson

ENV: Final = {
    "ADOBE_API_KEY": "bench",
    "ADOBE_ORG_ID": "BENCH@AdobeOrg",
    "ADOBE_SANDBOX_NAME": "bench",
}
LIMIT: Final = 300  # the simulator's requests/s
BURST: Final = 10
RATE: Final = 285  # the client's --rate: 5 % under the limit
CONCURRENCY: Final = 64
OFFERS: Final = 2_000
RATE_BAR: Final = 0.97
SHARE_BAR: Final = 0.005
READY_LIMIT_S: Final = 60.0  # seeding the offers and binding the port
STOP_LIMIT_S: Final = 15.0
POLL_S: Final = 0.01


class BenchError(Exception):
    """The benchmark could not measure (as opposed to a missed bar): exit status 2."""


# --------------------------------------------------------------------------- processes


def cores() -> tuple[int | None, int | None]:
    """(server core, client core): two different cores when this process may use two."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def pin(pid: int, cpu: int | None) -> None:
    # Pinned right after the fork: the child is still importing, nothing ran elsewhere
    # that matters, and its later threads inherit the mask.
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the simulator's clean stop), then SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_ready(proc: subprocess.Popen[bytes], limit_s: float) -> dict[str, Any]:
    """The simulator's JSON ready line, or BenchError after ``limit_s``."""
    assert proc.stdout is not None
    # select() before readline(): a simulator that hangs before printing must not hang us.
    readable, _, _ = select.select([proc.stdout], [], [], limit_s)
    if not readable:
        raise BenchError(f"the simulator printed no ready line within {limit_s:.0f} s")
    line = proc.stdout.readline()
    if not line:
        raise BenchError(f"the simulator exited ({proc.wait()}) before its ready line")
    ready: dict[str, Any] = json.loads(line)
    return ready


@contextlib.contextmanager
def simulator(options: list[str], cpu: int | None) -> Iterator[dict[str, Any]]:
    """``bulkpatch sim`` in a child process on ``cpu``; yields its ready line; stops it."""
    command = [
        sys.executable, "-m", "bulkpatch.cli", "sim", "--host", "127.0.0.1", "--port", "0",
        *options, "-q",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        pin(proc.pid, cpu)
        yield read_ready(proc, READY_LIMIT_S)
    finally:
        stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def sim_stats(ready: dict[str, Any]) -> dict[str, Any]:
    with urllib.request.urlopen(ready["stats_url"], timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return data


def stderr_tail(stream: IO[bytes]) -> str:
    stream.seek(0)
    lines = stream.read().decode(errors="replace").strip().splitlines()
    return "\n".join(lines[-15:]) or "(nothing on stderr)"


@dataclass(frozen=True)
class ClientRun:
    wall_s: float  # Popen to exit: includes the interpreter's start-up
    first_write_s: float  # Popen to the first write the server applied (a lower bound)
    polls: int  # statistics requests made meanwhile (the simulator counts them too)


def run_client(
    command: list[str], env: dict[str, str], ready: dict[str, Any], cpu: int | None, limit_s: float
) -> ClientRun:
    """Run ``bulkpatch run`` to its end, noting when the server applied its first write."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            pin(proc.pid, cpu)
            # Poll the (idle) server while the client starts up. The first write came after
            # the last poll that saw none was sent: taking that moment errs towards a
            # longer run, so a lower rate, by at most one poll interval.
            before = started
            first = None
            polls = 0
            while first is None and proc.poll() is None:
                if time.perf_counter() - started > limit_s:
                    break
                sent = time.perf_counter()
                polls += 1
                if sim_stats(ready)["writes_applied"] > 0:
                    first = before - started
                before = sent
                time.sleep(POLL_S)
            remaining = limit_s - (time.perf_counter() - started)
            try:
                code = proc.wait(max(0.0, remaining))
            except subprocess.TimeoutExpired:
                raise BenchError(f"bulkpatch run overran its {limit_s:.0f} s limit") from None
            wall = time.perf_counter() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            raise BenchError(f"bulkpatch run exited {code}:\n{stderr_tail(err)}")
        if first is None:
            raise BenchError("bulkpatch run exited 0, but the simulator applied no write")
        return ClientRun(wall, first, polls)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise BenchError in the main thread after ``seconds``, SystemExit on SIGTERM.

    The ``finally`` blocks then stop every child, so even a hang the per-step limits
    missed, or a kill from outside, ends the script without leaving processes behind.
    """

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise BenchError(f"the benchmark overran its {seconds:.0f} s limit")

    def terminated(_signum: int, _frame: FrameType | None) -> None:
        # SIGTERM's default would end this process at once and orphan its children.
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGALRM, expired)
    previous_term = signal.signal(signal.SIGTERM, terminated)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        signal.signal(signal.SIGTERM, previous_term)


# --------------------------------------------------------------------------- the benchmark


def write_jobs(path: Path, count: int, offers: int) -> None:
    """Replace jobs over the seeded offers in turn, written as they are made."""
    with path.open("wb") as f:
        for n in range(count):
            job = {
                "id": f"personalizedOffer{n % offers + 1:06d}",  # seeded ids are 1-based
                "patch": [{"op": "replace", "path": "/name", "value": f"Throttle {n}"}],
            }
            f.write(orjson.dumps(job, option=orjson.OPT_APPEND_NEWLINE))


@dataclass(frozen=True)
class Result:
    landed: float  # writes/s from the first write to the client's exit
    bins_mean: float  # mean of the whole-second bins (NaN when the run is under 2 s)
    bins_max: int
    throttled: int
    requests: int

    @property
    def share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0


def one_repeat(jobs: Path, count: int, limit_s: float) -> Result:
    server_cpu, client_cpu = cores()
    options = [
        "--offers", str(OFFERS), "--rate-limit", str(LIMIT), "--burst", str(BURST),
        "--retry-after", "seconds",
    ]  # fmt: skip
    with simulator(options, server_cpu) as ready:
        command = [
            sys.executable, "-m", "bulkpatch.cli", "run", str(jobs), "--endpoint", ready["endpoint"],
            "--rate", str(RATE), "--concurrency", str(CONCURRENCY), "-q",
        ]  # fmt: skip
        env = {**os.environ, **ENV, "ADOBE_ACCESS_TOKEN": ready["access_token"]}
        run = run_client(command, env, ready, client_cpu, limit_s)
        seen = sim_stats(ready)
    writes = int(seen["writes_applied"])
    if writes != count:
        raise BenchError(f"{writes} writes applied, not {count}")
    bins = [int(v) for _, v in sorted(seen["writes_by_second"].items(), key=lambda kv: int(kv[0]))]
    # The last second is cut short by the end of the jobs: the mean takes whole seconds only.
    full = bins[:-1]
    return Result(
        landed=writes / (run.wall_s - run.first_write_s),
        bins_mean=sum(full) / len(full) if full else float("nan"),
        bins_max=max(bins),
        throttled=int(seen["throttled_429"]),
        # Each statistics poll was counted as a request; the last read does not count itself.
        requests=int(seen["requests_total"]) - run.polls,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, help="default 6,000")
    parser.add_argument("--repeats", type=int, help="default 3")
    parser.add_argument("--quick", action="store_true", help="600 jobs, 1 repeat")
    args = parser.parse_args()
    # --quick changes the defaults; values given explicitly win over it.
    defaults = (600, 1) if args.quick else (6_000, 3)
    args.jobs = args.jobs or defaults[0]
    args.repeats = args.repeats or defaults[1]
    # Three times the paced duration: a run that slow is broken, not throttled.
    limit_s = 60 + 3 * args.jobs / RATE
    results: list[Result] = []
    try:
        with (
            time_limit(args.repeats * (limit_s + READY_LIMIT_S + 2 * STOP_LIMIT_S) + 60),
            tempfile.TemporaryDirectory(prefix="bulkpatch-throttle-") as tmp,
        ):
            jobs = Path(tmp) / "jobs.ndjson"
            write_jobs(jobs, args.jobs, OFFERS)
            for repeat in range(args.repeats):
                results.append(one_repeat(jobs, args.jobs, limit_s))
                r = results[-1]
                print(
                    f"repeat {repeat + 1}: landed {r.landed:.1f} writes/s, "
                    f"bins mean {r.bins_mean:.1f} max {r.bins_max}, "
                    f"429s {r.throttled} of {r.requests} requests ({r.share:.2%})",
                    flush=True,
                )
    except BenchError as exc:
        print(f"throttle benchmark failed: {exc}", file=sys.stderr)
        return 2
    landed = statistics.median(r.landed for r in results)
    whole = [r.bins_mean for r in results if r.bins_mean == r.bins_mean]  # not NaN
    share = statistics.median(r.share for r in results)
    worst = max(r.bins_max for r in results)
    landed_ratio, worst_ratio = landed / RATE, worst / LIMIT
    print(
        f"jobs={args.jobs} limit={LIMIT}/s burst={BURST} rate={RATE}/s "
        f"concurrency={CONCURRENCY} cores={os.cpu_count()} repeats={args.repeats}"
    )
    print(
        f"landed rate      : {landed:.1f} writes/s (median) = {landed_ratio:.3f}x of {RATE} (bar >= {RATE_BAR:.2f})"
    )
    if whole:
        mean = statistics.median(whole)
        print(
            f"whole-second bins: mean {mean:.1f} writes/s (median) = {mean / RATE:.3f}x of {RATE}"
        )
    else:
        print("whole-second bins: none (the run was under 2 s)")
    print(
        f"highest bin      : {worst} writes = {worst_ratio:.3f}x of the limit {LIMIT} (bar <= 1.00)"
    )
    print(f"429s / requests  : {share:.3%} (median; bar <= {SHARE_BAR:.1%})")
    ok = landed_ratio >= RATE_BAR and worst <= LIMIT and share <= SHARE_BAR
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
