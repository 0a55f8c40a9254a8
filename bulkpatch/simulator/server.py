"""Running the simulator: in-process for tests, the demo and benchmarks; as ``bulkpatch sim``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web

from bulkpatch.errors import ConfigError
from bulkpatch.simulator.app import Simulator
from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.examples import seed_examples
from bulkpatch.simulator.exd_seed import seed_items
from bulkpatch.simulator.seed import seed
from bulkpatch.simulator.store import Store
from bulkpatch.simulator.wire import DPS_BASE, IMS_PATH, XCORE_BASE

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """A simulator serving on a socket."""

    simulator: Simulator
    base_url: str
    runner: web.AppRunner

    @property
    def endpoint(self) -> str:
        return self.base_url + DPS_BASE

    @property
    def xcore_endpoint(self) -> str:
        """The legacy xcore API, over the same store as ``endpoint``."""
        return self.base_url + XCORE_BASE

    @property
    def ims_url(self) -> str:
        return self.base_url + IMS_PATH

    @property
    def store(self) -> Store:
        return self.simulator.store

    @property
    def config(self) -> SimConfig:
        return self.simulator.config

    def ready_line(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "event": "ready",
            "endpoint": self.endpoint,
            "xcore_endpoint": self.xcore_endpoint,
            "ims_url": self.ims_url,
            "access_token": cfg.access_token,
            "client_id": cfg.client_id,
            "client_secret": cfg.client_secret,
            "stats_url": self.base_url + "/_sim/stats",
            # The x-schema-id decision items require; null: any non-empty value.
            "schema_id": cfg.schema_id,
            "pid": os.getpid(),
        }

    async def close(self) -> None:
        await self.runner.cleanup()


def build_store(config: SimConfig) -> Store:
    """A store loaded from ``state_path`` when it exists, else seeded with ``offers``,
    ``items`` and, with ``examples``, the pages' example entities."""
    store = Store()
    if config.state_path is not None and config.state_path.exists():
        try:
            store.load(orjson.loads(config.state_path.read_bytes()))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # orjson's errors are ValueErrors; a document of another shape, the others.
            raise ConfigError(f"--state {config.state_path}: cannot be loaded ({exc})") from None
    else:
        seed(store, config.offers, size=config.offer_size)
        seed_items(store, config.items)
        if config.examples:
            seed_examples(store)
    return store


def save_state(store: Store, path: Path) -> None:
    # Write then rename, so an interrupted save never leaves half a state file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(store.dump(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    tmp.replace(path)


async def start(
    config: SimConfig, *, host: str = "127.0.0.1", port: int = 0, store: Store | None = None
) -> RunningSimulator:
    simulator = Simulator(config, store if store is not None else build_store(config))
    runner = web.AppRunner(simulator.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    sockname = runner.addresses[0]
    shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    return RunningSimulator(simulator, f"http://{shown}:{sockname[1]}", runner)


@contextlib.asynccontextmanager
async def running(
    config: SimConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    store: Store | None = None,
) -> AsyncIterator[RunningSimulator]:
    """Serve a simulator on an ephemeral loopback port for the ``async with`` body."""
    sim = await start(config or SimConfig(), host=host, port=port, store=store)
    try:
        yield sim
    finally:
        await sim.close()


async def serve(config: SimConfig, *, host: str, port: int) -> int:
    """``bulkpatch sim``: print the ready line, serve until SIGINT/SIGTERM, save, report.
    Raises ``ConfigError`` when it cannot listen (the port is taken, say)."""
    try:
        sim = await start(config, host=host, port=port)
    except OSError as exc:
        raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    sys.stdout.buffer.write(orjson.dumps(sim.ready_line(), option=orjson.OPT_APPEND_NEWLINE))
    sys.stdout.flush()
    log.info("sim.ready", endpoint=sim.endpoint, offers=sim.store.count("offers/personalized"))
    try:
        await stop.wait()
    finally:
        stats = sim.simulator.stats.as_dict(sim.store)
        await sim.close()
        if config.state_path is not None:
            save_state(sim.store, config.state_path)
            log.info("sim.state_saved", path=str(config.state_path))
        stats.pop("writes_by_second", None)
        log.info(
            "sim.stopped", signal=signal.Signals(received[0]).name if received else None, **stats
        )
    return 0
