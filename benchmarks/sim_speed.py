"""Simulator speed: how many replace PATCHes a second one simulator process answers.

    python benchmarks/sim_speed.py                # 20,000 PATCHes, 3 repeats
    python benchmarks/sim_speed.py --quick        # 5,000 PATCHes, 1 repeat
    python benchmarks/sim_speed.py --profile sim.prof   # also cProfile the simulator

The simulator (``bulkpatch.simulator``, no faults, no throttle) runs in a child process
pinned to core 0; this process pins itself to core 1 and drives it with a small aiohttp
client: a fixed number of workers, each sending its next PATCH as soon as the last one is
answered, each PATCH replacing ``/name`` of one of the seeded offers in turn. Every answer
must be a 200 receipt, so a fast wrong answer cannot pass. Prints PATCH requests/s per
repeat, the median, its ratio to the bar of 3,000/s, and the simulator's CPU use during
the measurement (near 100% means the simulator, not the client, set the pace). Exit 1 when
the median is below the bar.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final

import aiohttp

BAR: Final = 3_000.0
TOKEN: Final = "bench-token"
HEADERS: Final = {
    "Authorization": f"Bearer {TOKEN}",
    "x-api-key": "bench",
    "x-gw-ims-org-id": "BENCH@AdobeOrg",
    "x-sandbox-name": "bench",
    "Content-Type": "application/json",
}
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from the kernel's accounting."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# --------------------------------------------------------------------------- the server


async def _serve(offers: int, ready: Connection, profile: str | None) -> None:
    from bulkpatch.simulator import SimConfig, start

    sim = await start(SimConfig(offers=offers, access_token=TOKEN))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    ready.send(sim.base_url)
    try:
        await stop.wait()
    finally:
        if profiler is not None and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        await sim.close()


def _child(offers: int, ready: Connection, cpu: int | None, profile: str | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(_serve(offers, ready, profile))
    else:
        uvloop.run(_serve(offers, ready, profile))


@dataclass(frozen=True, slots=True)
class Server:
    base_url: str
    pid: int


@contextlib.contextmanager
def simulator(offers: int, cpu: int | None, profile: str | None) -> Iterator[Server]:
    """The simulator in a child process; stopped (and its profile written) at the end."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(offers, child, cpu, profile), daemon=True)
    proc.start()
    try:
        if not parent.poll(60) or proc.pid is None:
            raise RuntimeError("the simulator did not start within 60 s")
        yield Server(str(parent.recv()), proc.pid)
    finally:
        if proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(10)


# --------------------------------------------------------------------------- the client


async def drive(base_url: str, offers: int, count: int, concurrency: int) -> float:
    """Send ``count`` replace PATCHes with ``concurrency`` workers; the wall seconds."""
    endpoint = base_url + "/data/core/dps/offers/"
    urls = [
        f"{endpoint}personalizedOffer{i:06d}?offer-type=personalized" for i in range(1, offers + 1)
    ]
    bodies = [
        b'[{"op":"replace","path":"/name","value":"Bench name %d"}]' % n for n in range(count)
    ]
    issued = iter(range(count))
    failures: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for n in issued:
            async with session.patch(urls[n % offers], data=bodies[n]) as response:
                body = await response.read()
                if response.status != 200 or b'"etag"' not in body:
                    failures.append(f"{response.status} {body[:200]!r}")
                    return

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, headers=HEADERS, timeout=timeout
    ) as session:
        # One unmeasured round opens the connections, so the figure is steady state.
        async with session.get(base_url + "/_sim/stats") as response:
            await response.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} PATCH(es) failed, first: {failures[0]}")
    return wall


def run_client(base_url: str, offers: int, count: int, concurrency: int) -> float:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(drive(base_url, offers, count, concurrency))
    return uvloop.run(drive(base_url, offers, count, concurrency))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000, help="PATCHes per repeat")
    parser.add_argument("--offers", type=int, default=1_000, help="seeded offers (default 1,000)")
    parser.add_argument("--concurrency", type=int, default=32, help="workers (default 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5,000 PATCHes, 1 repeat")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the simulator into FILE")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.repeats = 5_000, 1
    cores = sorted(os.sched_getaffinity(0))
    server_cpu = cores[0] if len(cores) >= 2 else None
    if len(cores) >= 2:
        os.sched_setaffinity(0, {cores[1]})
    else:
        print("warning: one core only; client and simulator share it", file=sys.stderr)
    rates: list[float] = []
    with simulator(args.offers, server_cpu, args.profile) as server:
        for repeat in range(args.repeats):
            cpu_before = _cpu_seconds(server.pid)
            wall = run_client(server.base_url, args.offers, args.requests, args.concurrency)
            busy = (_cpu_seconds(server.pid) - cpu_before) / wall
            rates.append(args.requests / wall)
            print(
                f"repeat {repeat + 1}: {rates[-1]:,.0f} PATCH/s "
                f"({args.requests:,} in {wall:.2f} s; simulator CPU {busy:.0%})",
                flush=True,
            )
    median = statistics.median(rates)
    print(
        f"requests={args.requests} offers={args.offers} concurrency={args.concurrency} "
        f"repeats={args.repeats} cores={len(cores)}"
    )
    print(f"median: {median:,.0f} PATCH/s; ratio to the bar of {BAR:,.0f}/s: {median / BAR:.2f}x")
    return 0 if median >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
