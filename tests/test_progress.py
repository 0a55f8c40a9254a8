"""The progress line, seen in a real terminal (a pty on stderr): it updates, it goes away,
and none of it reaches stdout."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import termios
from pathlib import Path

import orjson

from bulkpatch.simulator import SimConfig, running
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
