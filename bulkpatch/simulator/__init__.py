"""A faithful local stand-in for the Offer Library API, served by aiohttp.

Tests, the demo and benchmarks start it in-process::

    async with running(SimConfig(offers=100)) as sim:
        ...  # sim.endpoint, sim.access_token via sim.config, sim.store

``bulkpatch sim`` serves it for rehearsals.
"""

from bulkpatch.simulator.app import SIMULATOR, Simulator, create_app
from bulkpatch.simulator.config import FaultRates, SimConfig, parse_outage, parse_rate_schedule
from bulkpatch.simulator.seed import offer_id
from bulkpatch.simulator.server import RunningSimulator, running, save_state, serve, start
from bulkpatch.simulator.store import Store, apply_patch, receipt
from bulkpatch.simulator.wire import DPS_BASE
from bulkpatch.simulator.writes import CONCURRENT_FIELD, CONCURRENT_HOMES

__all__ = [
    "CONCURRENT_FIELD",
    "CONCURRENT_HOMES",
    "DPS_BASE",
    "SIMULATOR",
    "FaultRates",
    "RunningSimulator",
    "SimConfig",
    "Simulator",
    "Store",
    "apply_patch",
    "create_app",
    "offer_id",
    "parse_outage",
    "parse_rate_schedule",
    "receipt",
    "running",
    "save_state",
    "serve",
    "start",
]
