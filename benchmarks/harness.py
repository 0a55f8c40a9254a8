"""What the simulator-driven benchmarks share: cores, child processes with time limits,
the simulator's ready line and statistics, and job files.

A child that outlives its limit, or a benchmark that overruns its own, is stopped, and
``BenchError`` says the figure could not be measured (exit status 2, not a missed bar).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
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


def write_jobs(path: Path, count: int, offers: int, label: str) -> None:
    """Replace jobs over the seeded offers in turn, written as they are made."""
    with path.open("wb") as f:
        for n in range(count):
            job = {
                "id": f"personalizedOffer{n % offers + 1:06d}",  # seeded ids are 1-based
                "patch": [{"op": "replace", "path": "/name", "value": f"{label} {n}"}],
            }
            f.write(orjson.dumps(job, option=orjson.OPT_APPEND_NEWLINE))
