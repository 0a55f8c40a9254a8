"""The progress line, seen in a real terminal (a pty on stderr): it updates, it goes away,
and none of it reaches stdout."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import termios
import time
from pathlib import Path

import orjson

from bulkpatch.progress import Progress
from bulkpatch.simulator import SimConfig, running
from bulkpatch.summary import RunStats
from tests.test_run_cli import CLI, WAIT_S, ndjson, replace_name, sim_env

JOBS = 600


def read_terminal(fd: int) -> bytes:
    """Everything written to the pty until its last writer closes it."""
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child is gone and the terminal closed
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def test_progress_updates_on_a_terminal_then_disappears(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.ndjson"
    jobs.write_bytes(ndjson(replace_name(f"personalizedOffer{n % 50 + 1:06d}", f"v{n}") for n in range(JOBS)))
    master, slave = pty.openpty()
    # A terminal of 30 rows by 160 columns, as a user's would be.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 160, 0, 0))
    async with running(SimConfig(offers=50)) as sim:
        # --rate 300: the run lasts about two seconds, long enough to redraw several times.
        proc = await asyncio.create_subprocess_exec(
            *CLI, "run", str(jobs), "--endpoint", sim.endpoint, "--rate", "300",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=slave,
            env=sim_env(sim),
        )  # fmt: skip
        os.close(slave)
        terminal = asyncio.create_task(asyncio.to_thread(read_terminal, master))
        stdout, _ = await asyncio.wait_for(proc.communicate(), WAIT_S)
        shown = (await asyncio.wait_for(terminal, WAIT_S)).decode(errors="replace")
    os.close(master)
    assert proc.returncode == 0
    # stdout: outcome lines and nothing else.
    outcomes = [orjson.loads(line) for line in stdout.splitlines()]
    assert len(outcomes) == JOBS
    assert all(o["ok"] for o in outcomes)
    # The terminal saw the line redrawn with growing counts against the file's total...
    counts = [int(n) for n in re.findall(rf"(\d+)/{JOBS} ", shown)]
    assert len(set(counts)) >= 3, shown[-2000:]
    assert counts == sorted(counts)
    assert "ok " in shown
    assert "429s" in shown
    # ...then erased (tqdm's leave=False clears its line) before the summary is printed.
    bar_end = shown.rindex(f"/{JOBS} ")
    summary = shown.index(f"bulkpatch: {JOBS} jobs in")
    assert bar_end < summary
    assert "\r" in shown[bar_end:summary]
    assert f"/{JOBS} " not in shown[summary:]


async def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.ndjson"
    jobs.write_bytes(ndjson(replace_name(f"personalizedOffer{n % 5 + 1:06d}", f"v{n}") for n in range(20)))
    async with running(SimConfig(offers=5)) as sim:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "run", str(jobs), "--endpoint", sim.endpoint, "--rate", "0",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=sim_env(sim),
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0
    assert b"/20 " not in err
    assert b"jobs/s" not in err.split(b"bulkpatch: 20 jobs in")[0]


# --------------------------------------------------------------------------- narrow, off a terminal, Ctrl-C

BAR_CELLS = re.compile("[\u2588\u2589\u258a\u258b\u258c\u258d\u258e\u258f]|\\|[ #]")
COUNTERS = re.compile(r"ok [\d,]+ failed [\d,]+ 429s [\d,]+ retries [\d,]+")


def stats_of(ok: int, failed: int, throttled: int = 0) -> RunStats:
    stats = RunStats()
    stats.outcomes.update({"ok": ok, "conflict": failed})
    stats.traffic.throttled = throttled
    return stats


def drawn(columns: int, steps: int) -> list[str]:
    """The frames a progress line of 100,000 jobs draws on a terminal ``columns`` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    terminal = os.fdopen(slave, "w", encoding="utf-8")
    progress = Progress(100_000, terminal)
    for step in range(1, steps + 1):
        progress._bar.last_print_t = 0.0  # due for a redraw (mininterval) at every step
        progress.update(stats_of(step * 9_000, step * 10, throttled=step * 3))
    terminal.flush()
    shown = read_until(master, re.compile(rb"(?!)"), seconds=0.5).decode()  # all there is
    progress.close()
    terminal.close()
    os.close(master)
    return [frame for frame in shown.split("\r") if "/100000" in frame]


def test_at_80_columns_the_counters_stay_whole_and_the_bar_goes() -> None:
    frames = drawn(80, steps=5)
    assert frames
    for frame in frames:
        assert len(frame.rstrip()) <= 80, frame
        assert COUNTERS.search(frame), frame
        assert not BAR_CELLS.search(frame), frame
    assert "ok 45,000 failed 50 429s 15 retries 0" in frames[-1]
    # Where there is room, the bar is drawn beside them (the first frame, before any
    # count, is the narrow one whatever the width).
    _first, *wide = drawn(160, steps=3)
    assert wide
    assert all(COUNTERS.search(f) and BAR_CELLS.search(f) for f in wide), wide


def test_off_a_terminal_one_plain_line_every_10_s_and_no_carriage_returns() -> None:
    stream = io.StringIO()
    now = [0.0]
    progress = Progress(600, stream, clock=lambda: now[0])
    for t, done in [(1, 10), (9.9, 90), (10.0, 100), (15, 150), (20.5, 205), (25, 250)]:
        now[0] = t
        progress.update(stats_of(done - 1, 1))
    progress.close()
    assert "\r" not in stream.getvalue()
    assert stream.getvalue().splitlines() == [
        "bulkpatch: 100/600 jobs, ok 99 failed 1 429s 0 retries 0, 10.0 jobs/s, 10 s",
        "bulkpatch: 205/600 jobs, ok 204 failed 1 429s 0 retries 0, 10.0 jobs/s, 20 s",
    ]


async def test_progress_asked_for_off_a_terminal_writes_no_carriage_returns(
    tmp_path: Path,
) -> None:
    jobs = tmp_path / "jobs.ndjson"
    jobs.write_bytes(ndjson(replace_name(f"personalizedOffer{n % 5 + 1:06d}", f"v{n}") for n in range(20)))
    async with running(SimConfig(offers=5)) as sim:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "run", str(jobs), "--endpoint", sim.endpoint, "--rate", "0", "--progress",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=sim_env(sim),
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0
    assert b"\r" not in err
    assert b"bulkpatch: 20 jobs in" in err


def read_until(fd: int, pattern: re.Pattern[bytes], seconds: float) -> bytes:
    """What the pty shows, read until ``pattern`` appears or ``seconds`` pass."""
    out = bytearray()
    deadline = time.monotonic() + seconds
    while not pattern.search(out) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def test_ctrl_c_erases_the_progress_line_before_the_warning(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.ndjson"
    jobs.write_bytes(ndjson(replace_name(f"personalizedOffer{n % 50 + 1:06d}", f"v{n}") for n in range(JOBS)))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 80, 0, 0))
    async with running(SimConfig(offers=50)) as sim:
        # --rate 40: 15 s for every job, so the run is surely mid-way when interrupted.
        proc = await asyncio.create_subprocess_exec(
            *CLI, "run", str(jobs), "--endpoint", sim.endpoint, "--rate", "40",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=slave,
            env=sim_env(sim, NO_COLOR="1"),
        )  # fmt: skip
        os.close(slave)
        # Two frames drawn (the second shows a count): the line is there to be erased.
        first = await asyncio.to_thread(read_until, master, re.compile(rb"\r[^\r]*[1-9]\d*/600"), WAIT_S)
        assert re.search(rb"[1-9]\d*/600", first), first
        proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(asyncio.to_thread(read_terminal, master), WAIT_S)
        await asyncio.wait_for(proc.wait(), WAIT_S)
    os.close(master)
    shown = (first + rest).decode(errors="replace")
    assert proc.returncode == 130
    warning = re.search(r"\d{4}-\d\d-\d\dT[^\n]*run\.stopping", shown)
    assert warning, shown[-2000:]
    assert shown[: warning.start()].endswith("\r\x1b[K"), repr(shown[warning.start() - 200 : warning.start()])
