"""Shared fixtures: a simulator on a loopback port and a client that speaks to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bulkpatch.simulator import RunningSimulator, SimConfig, running


def api_headers(sim: RunningSimulator, **extra: str) -> dict[str, str]:
    """The four headers every Offer Library call carries (API notes §1)."""
    return {
        "Authorization": f"Bearer {sim.config.access_token}",
        "x-api-key": "test-client",
        "x-gw-ims-org-id": "ABC123@AdobeOrg",
        "x-sandbox-name": "prod",
        **extra,
    }


def offer_url(sim: RunningSimulator, entity_id: str, offer_type: str = "personalized") -> str:
    return f"{sim.endpoint}/offers/{entity_id}?offer-type={offer_type}"


@pytest.fixture
def sim_config() -> SimConfig:
    """Override in a test module (or parametrize) to change the simulator's behaviour."""
    return SimConfig(offers=20, fault_seed=1)


@pytest.fixture
async def sim(sim_config: SimConfig) -> AsyncIterator[RunningSimulator]:
    async with running(sim_config) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def read_json(response: aiohttp.ClientResponse) -> Any:
    return await response.json(content_type=None)
