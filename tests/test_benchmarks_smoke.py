"""The benchmark scripts run end to end: each one, with ``--quick``, prints its figures.

Whether a bar is met is not checked here: on a loaded machine a missed bar (exit 1) says
nothing about the script. A crash, a traceback, a time limit overrun (exit 2) or missing
figure lines does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# Script, extra arguments, lines its summary must contain. memory.py's --quick runs
# 20,000 and 100,000 jobs (~25 s alone); the smaller sizes keep this test short while
# going through the same code.
RUNS: list[tuple[str, list[str], list[str]]] = [
    ("latency.py", [], ["repeat 1:", "Little's-law bound", "ratio to the bound"]),
    ("throttle.py", [], ["repeat 1:", "landed rate", "highest bin", "429s / requests"]),
    (
        "memory.py",
        ["--small", "2000", "--large", "10000"],
        ["repeat 1:", "peak RSS at", "ratio large / small"],
    ),
    ("overhead.py", ["--jobs", "2000"], ["naive script", "bulkpatch run", "ratio CPU/job"]),
    ("sim_speed.py", ["--requests", "2000"], ["repeat 1:", "median:"]),
    ("export.py", ["--offers", "500"], ["exported", "peak RSS"]),
    (
        "export.py",
        ["--entity", "offer-items", "--entities", "500"],
        ["offer-items=500", "exported 500, distinct 500, duplicates 0", "peak RSS"],
    ),
    ("pacing.py", [], ["fixed-1s seconds auto", "outage 2s", "rows met their bar"]),
    ("requests.py", [], ["--prefetch get", "--prefetch auto", "plan:", "rollback:"]),
    # The offer phases run in tests/test_chaos.py; the Decisioning ones here go through
    # the script's own phase code.
    (
        "chaos.py",
        ["--only", "Decisioning", "--jobs", "600"],
        [
            "all faults, Decisioning: jobs=600",
            "server ignores If-Match",
            "overwritten=",
            "verdict:",
        ],
    ),
]
LIMIT_S = 120.0


def test_benchmarks_quick_print_their_figures() -> None:
    # All at once: most of each is waiting (the throttle, the simulated latency,
    # start-ups), so the test takes about as long as the slowest one.
    procs = {
        n: subprocess.Popen(
            [sys.executable, str(BENCHMARKS / script), "--quick", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n, (script, extra, _) in enumerate(RUNS)
    }
    deadline = time.monotonic() + LIMIT_S
    outputs: dict[int, tuple[int, str, str]] = {}
    try:
        for n, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs[n] = (proc.returncode, stdout.decode(), stderr.decode())
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                # SIGTERM first: the scripts then stop the servers and clients they started.
                proc.terminate()
                try:
                    proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
    for n, (script, _, expected) in enumerate(RUNS):
        code, out, err = outputs[n]
        assert code in (0, 1), f"{script} exited {code}\n{out}\n{err}"
        assert "Traceback" not in err, f"{script}:\n{err}"
        missing = [text for text in expected if text not in out]
        assert not missing, f"{script} did not print {missing}:\n{out}"
