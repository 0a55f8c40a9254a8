"""Latency hiding: does ``bulkpatch run`` keep its requests in flight on a slow server?

    python benchmarks/latency.py            # 20,000 jobs, 3 repeats (median)
    python benchmarks/latency.py --quick    # 2,000 jobs, 1 repeat: checks the script works

The simulator (``bulkpatch sim --latency-ms 100``, 2,000 seeded offers, no throttle, no
faults) runs in its own process pinned to one core; ``bulkpatch run --concurrency 200
--rate 0`` runs as a child process pinned to the other, on replace jobs spread over the
seeded offers in turn (consecutive jobs never share an offer, so per-offer ordering never
holds a job back). Every request spends 100 ms in the server, so by Little's law the most
any client can do is concurrency / latency = 200 / 0.1 s = 2,000 jobs/s.

jobs/s is timed from the first request reaching the server (the first write the simulator
applies, seen by polling its statistics while the client starts, minus the 100 ms the
simulator holds every request) to the client's exit: Python's start-up, identical for any
job count, is left out; it is printed apart as the end-to-end rate. Every job must land
(the simulator's own count of applied writes). A fresh simulator serves each repeat.

Bar: median jobs/s >= 0.9 x 2,000/s. Exit 0 when met, 1 when missed, 2 when the benchmark
could not measure (a child failed or overran its time limit). Each child has a hard time
limit, and so has the whole script.
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
LATENCY_MS: Final = 100.0
CONCURRENCY: Final = 200
BAR: Final = 0.9
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
                "patch": [{"op": "replace", "path": "/name", "value": f"Latency {n}"}],
            }
            f.write(orjson.dumps(job, option=orjson.OPT_APPEND_NEWLINE))


@dataclass(frozen=True)
class Result:
    rate: float  # jobs/s from the first request's arrival to the client's exit
    end_to_end: float  # jobs/s over the child's whole life, start-up included
    sustained: float  # the simulator's applied writes per whole second (full seconds only)


def one_repeat(jobs: Path, count: int, offers: int, limit_s: float) -> Result:
    server_cpu, client_cpu = cores()
    options = ["--offers", str(offers), "--latency-ms", f"{LATENCY_MS:g}"]
    with simulator(options, server_cpu) as ready:
        command = [
            sys.executable, "-m", "bulkpatch.cli", "run", str(jobs), "--endpoint", ready["endpoint"],
            "--rate", "0", "--concurrency", str(CONCURRENCY), "-q",
        ]  # fmt: skip
        env = {**os.environ, **ENV, "ADOBE_ACCESS_TOKEN": ready["access_token"]}
        run = run_client(command, env, ready, client_cpu, limit_s)
        seen = sim_stats(ready)
    if seen["writes_applied"] != count:
        raise BenchError(f"{seen['writes_applied']} writes applied, not {count}")
    # The first write landed one latency after the first request arrived.
    duration = run.wall_s - (run.first_write_s - LATENCY_MS / 1000)
    bins = [int(v) for _, v in sorted(seen["writes_by_second"].items(), key=lambda kv: int(kv[0]))]
    # The last second is cut short by the end of the jobs: whole seconds only.
    full = bins[:-1]
    sustained = sum(full) / len(full) if full else float("nan")
    return Result(count / duration, count / run.wall_s, sustained)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, help="default 20,000")
    parser.add_argument("--offers", type=int, default=2_000, help="seeded offers (default 2,000)")
    parser.add_argument("--repeats", type=int, help="default 3")
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 1 repeat")
    args = parser.parse_args()
    # --quick changes the defaults; values given explicitly win over it.
    defaults = (2_000, 1) if args.quick else (20_000, 3)
    args.jobs = args.jobs or defaults[0]
    args.repeats = args.repeats or defaults[1]
    bound = CONCURRENCY / (LATENCY_MS / 1000)
    # A run at a tenth of the bound is broken, not slow: that is each client's limit.
    limit_s = 60 + 10 * args.jobs / bound
    results: list[Result] = []
    try:
        with (
            time_limit(args.repeats * (limit_s + READY_LIMIT_S + 2 * STOP_LIMIT_S) + 60),
            tempfile.TemporaryDirectory(prefix="bulkpatch-latency-") as tmp,
        ):
            jobs = Path(tmp) / "jobs.ndjson"
            write_jobs(jobs, args.jobs, args.offers)
            for repeat in range(args.repeats):
                results.append(one_repeat(jobs, args.jobs, args.offers, limit_s))
                r = results[-1]
                print(
                    f"repeat {repeat + 1}: {r.rate:,.0f} jobs/s "
                    f"(end to end {r.end_to_end:,.0f}/s, simulator {r.sustained:,.0f} writes/s)",
                    flush=True,
                )
    except BenchError as exc:
        print(f"latency benchmark failed: {exc}", file=sys.stderr)
        return 2
    rate = statistics.median(r.rate for r in results)
    end_to_end = statistics.median(r.end_to_end for r in results)
    whole = [r.sustained for r in results if r.sustained == r.sustained]  # not NaN
    sustained = f"{statistics.median(whole):,.0f}" if whole else "n/a (no whole second)"
    ratio = rate / bound
    print(
        f"jobs={args.jobs} offers={args.offers} latency={LATENCY_MS:g} ms "
        f"concurrency={CONCURRENCY} cores={os.cpu_count()} repeats={args.repeats}"
    )
    print(f"Little's-law bound : {bound:,.0f} jobs/s (concurrency / latency)")
    print(f"bulkpatch run      : {rate:,.0f} jobs/s (median)")
    print(f"end to end         : {end_to_end:,.0f} jobs/s (median, Python start-up included)")
    print(f"simulator's count  : {sustained} writes/s (median of whole-second means)")
    print(f"ratio to the bound : {ratio:.3f}x (bar >= {BAR:.2f})")
    return 0 if ratio >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
