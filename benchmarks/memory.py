"""Memory: does ``bulkpatch run`` stay in bounded memory however long its input is?

    python benchmarks/memory.py            # 100,000 and 1,000,000 jobs, 3 repeats (~12 min)
    python benchmarks/memory.py --repeats 1    # the same, once (~4 min)
    python benchmarks/memory.py --quick    # 20,000 and 100,000 jobs, 1 repeat (~30 s)
    python benchmarks/memory.py --receipts # 30,000 and 300,000 jobs with --receipts, 1 repeat
    python benchmarks/memory.py --prefetch # --prefetch list of 1,000 and 10,000 offers of 1 KB

Each job replaces ``/name`` of a different offer (``personalizedOffer0000001`` ...), so
nothing per entity (etags, per-offer lanes) can be shared between jobs: whatever the client
keeps per entity shows as growth. The jobs are made on the fly by a thread of this process
and streamed into the child's stdin (``bulkpatch run - --rate 0 --concurrency 64 -q``), so
the input is never a file the client could map or measure. The raw asyncio receipt server
(``fastserver.py``, its own process, pinned to core 0) answers every PATCH with a 200
receipt; the client is pinned to another core and its outcomes go to /dev/null.

The figure is the child's own peak resident set size (``ru_maxrss`` from ``wait4`` on its
pid: that process alone, not its parent or siblings), for a small and a large run, the two
alternating in each repeat; medians over the repeats.

With ``--receipts`` each run keeps its receipts and journal (in a temporary directory),
as a resumable run does: the journal's per-line and per-entity records must live on disk,
not on the heap. Writing them costs time, so the minimum rate is lower then.

With ``--prefetch`` the server is the simulator (``bulkpatch sim``, its own process on
core 0), seeded with as many offers of ``--offer-size`` bytes (default 1,024) as the run
has jobs, and each job appends a tag to a different offer (a job that needs its
offer's state) under ``--prefetch list``: the client lists every offer, a page of 100 at
a time, and takes each job's pre-image from that listing. The listing must live on disk
(a temporary SQLite file: the run keeps no journal here), and each page must be let go
once stored: held on the heap, 10,000 offers of 1 KB would be tens of MB.

Bars: peak RSS at the large run <= 80 MB (80,000,000 bytes), and peak RSS(large) /
RSS(small) <= 1.2 (<= 1.1 with ``--prefetch``). Exit 0 when both are met, 1 when one is missed, 2 when the benchmark
could not measure (the client failed or overran its time limit). Each child has a hard time
limit, and so has the whole script.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fastserver  # noqa: E402
from harness import BenchError, simulator, time_limit  # noqa: E402

ENV: Final = {
    "ADOBE_ACCESS_TOKEN": "bench-token",
    "ADOBE_API_KEY": "bench",
    "ADOBE_ORG_ID": "BENCH@AdobeOrg",
    "ADOBE_SANDBOX_NAME": "bench",
}
SERVER_CPU: Final = 0
CONCURRENCY: Final = 64
RSS_BAR_BYTES: Final = 80_000_000
GROWTH_BAR: Final = 1.2
BATCH: Final = 2_000  # lines per write to the pipe
# The client does ~4,500 jobs/s on one core of the reference machine: a third of that,
# plus start-up, is broken rather than slow.
MIN_RATE: Final = 1_500
# With --receipts every job is recorded in the journal (SQLite) too.
MIN_RATE_RECEIPTS: Final = 500
# Against the simulator each job is a PATCH the simulator applies, after the listing.
MIN_RATE_PREFETCH: Final = 200
POLL_S: Final = 0.05
# Each job on its own offer (%d: the offer's number, then the job's).
REPLACE: Final = (
    b'{"id":"personalizedOffer%07d","patch":[{"op":"replace","path":"/name","value":"Offer %d"}]}\n'
)
APPEND: Final = (
    b'{"id":"personalizedOffer%06d","patch":[{"op":"add","path":"/tags/-","value":"m%d"}]}\n'
)


@dataclass(frozen=True)
class Load:
    """What is measured: the job line, the run's options beyond the common ones, the
    slowest rate (jobs/s) that is not broken, and the growth bar."""

    line: bytes
    options: tuple[str, ...] = ()
    min_rate: int = MIN_RATE
    growth_bar: float = GROWTH_BAR
    offer_size: int | None = None  # with the simulator as server: its offers' size


def load_of(args: argparse.Namespace, receipts: Path | None) -> Load:
    if args.prefetch:
        return Load(APPEND, ("--prefetch", "list"), MIN_RATE_PREFETCH, 1.1, args.offer_size)
    if receipts is not None:
        return Load(REPLACE, ("--receipts", str(receipts)), MIN_RATE_RECEIPTS)
    return Load(REPLACE)


def client_cpu() -> int | None:
    """A core other than the server's, when this process may use one."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    others = sorted(os.sched_getaffinity(0) - {SERVER_CPU})
    return others[0] if others else None


def feed(stdin: IO[bytes], count: int, line: bytes) -> None:
    """Write ``count`` jobs, each on its own offer, then close the pipe (end of input)."""
    try:
        for start in range(0, count, BATCH):
            stdin.write(
                b"".join(line % (n + 1, n) for n in range(start, min(count, start + BATCH)))
            )
        stdin.close()
    except (BrokenPipeError, ValueError):
        # The child died or was killed (time limit): its exit status tells what happened.
        pass


def read_all(stream: IO[bytes], into: bytearray) -> None:
    into += stream.read()


@dataclass(frozen=True)
class Run:
    jobs: int
    rss_kib: int  # ru_maxrss: KiB on Linux
    wall_s: float
    cpu_s: float

    @property
    def rss_bytes(self) -> int:
        return self.rss_kib * 1024


@contextlib.contextmanager
def serving(load: Load, count: int) -> Iterator[str]:
    """The endpoint ``count`` jobs of ``load`` go to: the receipt server, or a simulator
    seeded with ``count`` offers of ``load.offer_size`` bytes."""
    if load.offer_size is None:
        with fastserver.running(cpu=SERVER_CPU) as port:
            yield f"http://127.0.0.1:{port}/data/core/dps"
        return
    options = ["--offers", str(count), "--offer-size", str(load.offer_size)]
    with simulator([*options, "--access-token", ENV["ADOBE_ACCESS_TOKEN"]], SERVER_CPU) as ready:
        yield str(ready["endpoint"])


def run_client(endpoint: str, count: int, cpu: int | None, load: Load) -> Run:
    """One ``bulkpatch run -`` on ``count`` streamed jobs of ``load``; its own peak RSS
    from wait4."""
    limit_s = 60 + count / load.min_rate
    command = [
        sys.executable, "-m", "bulkpatch.cli", "run", "-", "--endpoint", endpoint,
        "--rate", "0", "--concurrency", str(CONCURRENCY), "-q", *load.options,
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        env={**os.environ, **ENV},
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stderr is not None
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, {cpu})
    feeder = threading.Thread(target=feed, args=(proc.stdin, count, load.line), daemon=True)
    feeder.start()
    # -q keeps stderr to a few lines; a thread drains it so a chatty failure cannot block.
    err = bytearray()
    drain = threading.Thread(target=read_all, args=(proc.stderr, err), daemon=True)
    drain.start()
    code: int | None = None
    try:
        # wait4 rather than Popen.wait: it reaps the child and hands back that child's own
        # resource usage, ru_maxrss included. WNOHANG in a loop keeps a time limit on it.
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() - started > limit_s:
                raise BenchError(
                    f"bulkpatch run on {count:,} jobs overran its {limit_s:.0f} s limit"
                )
            time.sleep(POLL_S)
        wall = time.perf_counter() - started
    finally:
        if code is None:  # not reaped: over the time limit, or interrupted
            proc.kill()
            os.wait4(proc.pid, 0)
            code = -signal.SIGKILL
        # Reaped behind Popen's back: tell it, so it never waits for the pid again.
        proc.returncode = code
        feeder.join(5)
        drain.join(5)
        proc.stderr.close()
    if code != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-15:]
        raise BenchError(f"bulkpatch run on {count:,} jobs exited {code}:\n" + "\n".join(tail))
    return Run(count, usage.ru_maxrss, wall, usage.ru_utime + usage.ru_stime)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, help="jobs of the small run (default 100,000)")
    parser.add_argument("--large", type=int, help="jobs of the large run (default 1,000,000)")
    parser.add_argument("--repeats", type=int, help="default 3")
    parser.add_argument("--quick", action="store_true", help="20,000 and 100,000 jobs, 1 repeat")
    parser.add_argument(
        "--receipts", action="store_true", help="with --receipts (and its journal): 30,000 and 300,000 jobs, 1 repeat"
    )
    parser.add_argument(
        "--prefetch", action="store_true",
        help="--prefetch list of as many simulator offers as jobs: 1,000 and 10,000 (--quick: 200 and 2,000)",
    )  # fmt: skip
    parser.add_argument("--offer-size", type=int, default=1024, help="with --prefetch (bytes)")
    args = parser.parse_args()
    # --quick, --receipts and --prefetch change the defaults; sizes given explicitly win.
    if args.prefetch:
        sizes = (200, 2_000, 1) if args.quick else (1_000, 10_000, 3)
    elif args.receipts:
        sizes = (30_000, 300_000, 1)
    else:
        sizes = (20_000, 100_000, 1) if args.quick else (100_000, 1_000_000, 3)
    args.small = args.small or sizes[0]
    args.large = args.large or sizes[1]
    args.repeats = args.repeats or sizes[2]
    return args


def measure(args: argparse.Namespace, tmp: Path) -> tuple[list[Run], list[Run]]:
    """The small and the large run, alternating, ``args.repeats`` times each."""
    cpu = client_cpu()
    small: list[Run] = []
    large: list[Run] = []
    for repeat in range(args.repeats):
        for runs, count in ((small, args.small), (large, args.large)):
            receipts = Path(tmp) / f"out-{repeat}-{count}.ndjson" if args.receipts else None
            load = load_of(args, receipts)
            with serving(load, count) as endpoint:
                runs.append(run_client(endpoint, count, cpu, load))
            r = runs[-1]
            print(
                f"repeat {repeat + 1}: {count:>9,} jobs: peak RSS {r.rss_kib:,} KiB "
                f"({r.rss_bytes / 1e6:.1f} MB), {count / r.wall_s:,.0f} jobs/s, "
                f"{r.cpu_s / count * 1e6:.0f} us CPU/job",
                flush=True,
            )
    return small, large


def main() -> int:
    args = parse_args()
    load = load_of(args, None)
    budget = args.repeats * (120 + (args.small + args.large) / load.min_rate) + 60
    try:
        with (
            time_limit(budget),
            tempfile.TemporaryDirectory(prefix="bulkpatch-memory-") as tmp,
        ):
            small, large = measure(args, Path(tmp))
    except BenchError as exc:
        print(f"memory benchmark failed: {exc}", file=sys.stderr)
        return 2
    rss_small = statistics.median(r.rss_bytes for r in small)
    rss_large = statistics.median(r.rss_bytes for r in large)
    growth = rss_large / rss_small
    what = ", with --receipts" if args.receipts else ""
    if args.prefetch:
        what = f", --prefetch list of as many offers of {args.offer_size:,} bytes"
    print(
        f"jobs={args.small:,}/{args.large:,} concurrency={CONCURRENCY} cores={os.cpu_count()} "
        f"repeats={args.repeats}, every job on a different offer{what}"
    )
    print(f"peak RSS at {args.small:>9,} jobs: {rss_small / 1e6:.1f} MB (median)")
    print(
        f"peak RSS at {args.large:>9,} jobs: {rss_large / 1e6:.1f} MB (median) = "
        f"{rss_large / RSS_BAR_BYTES:.2f}x of the bar {RSS_BAR_BYTES / 1e6:.0f} MB (bar <= 1.00)"
    )
    print(f"ratio large / small: {growth:.3f}x (bar <= {load.growth_bar:.2f})")
    return 0 if rss_large <= RSS_BAR_BYTES and growth <= load.growth_bar else 1


if __name__ == "__main__":
    sys.exit(main())
