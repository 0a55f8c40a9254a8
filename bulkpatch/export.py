"""``bulkpatch export``: every entity of a kind, one NDJSON line each, page by page.

The pages are followed as ``paging.pages`` follows them (the server's cursor, a 400 to
the page size halving it, a ``next`` link kept on the endpoint's origin and never
followed twice), each read through the request path ``run`` uses (``gateway.Gateway``,
with the run's retry policy and seed). One page is held at a time, so memory stays flat
whatever the estate's size (but for the links already followed: a few dozen bytes a page).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final, NoReturn

import structlog
from yarl import URL

from bulkpatch import entities
from bulkpatch.auth import TokenProvider, provider
from bulkpatch.client import HttpClient, make_session, request_headers
from bulkpatch.config import RunConfig
from bulkpatch.errors import ConfigError
from bulkpatch.gateway import Gateway, Halted
from bulkpatch.paging import PagingError, first_url, pages
from bulkpatch.paging import next_url as next_url  # where the tests and older callers find it
from bulkpatch.preflight import refused
from bulkpatch.repeat import Given
from bulkpatch.summary import Traffic

log = structlog.get_logger()


# export's errors are the pager's (a name kept for its callers).
ExportError = PagingError


async def export_entities(
    config: RunConfig,
    *,
    entity: str = entities.DEFAULT_ENTITY,
    offer_type: str | None = entities.DEFAULT_OFFER_TYPE,
    filters: Sequence[str] = (),
    order: str | None = None,
    page_size: int = 100,
    totals: list[int] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Every entity, in the API's order; ``totals`` gets the API's ``total`` when it says."""
    base = {
        "x-api-key": config.api_key
        or (config.credentials.client_id if config.credentials else "")
        or "",
        "x-gw-ims-org-id": config.org_id,
        "x-sandbox-name": config.sandbox,
        "Accept": "application/json",
        **config.kind_headers(entity),
    }
    headers = request_headers(base)
    assert config.credentials is not None
    async with contextlib.AsyncExitStack() as stack:
        client = await _client(stack, config)
        # IMS gets a session of its own, as in ``run``: the API's connections are not its.
        auth = provider(
            client if config.credentials.access_token else await _client(stack, config),
            config.credentials,
        )
        gateway = _gateway(client, auth, config)
        # ``--rate auto``: the rate rises while the pages come, as in ``run``.
        stack.push_async_callback(_stop, asyncio.create_task(gateway.adapt()))
        url = first_url(config.endpoint, entity, offer_type, filters, order, page_size)
        failed = functools.partial(_failed, gateway.traffic.statuses)
        async for page in pages(gateway, headers, url, config.endpoint, failed):
            if totals is not None and isinstance(page.get("total"), int) and not totals:
                totals.append(page["total"])
            for doc in page["results"]:
                if isinstance(doc, dict):
                    if entities.typed(entity):
                        # A typed kind's documents do not say their type: the export does,
                        # so a line can be run again as a job on the same entity.
                        doc.setdefault("type", offer_type or entities.DEFAULT_OFFER_TYPE)
                    yield doc


async def _client(stack: contextlib.AsyncExitStack, config: RunConfig) -> HttpClient:
    session = await stack.enter_async_context(
        make_session(
            concurrency=1,
            timeout=config.timeout,
            verify_tls=config.verify_tls,
            ca_bundle=config.ca_bundle,
        )
    )
    client = HttpClient(session, config.timeout, config.max_response_bytes)
    stack.push_async_callback(client.close)
    return client


def _gateway(client: HttpClient, auth: TokenProvider, config: RunConfig) -> Gateway:
    """The run's request path, as ``run`` builds it: its retries, its pace, its seed."""

    def halted(reason: str) -> None:
        # The ``Halted`` that follows ends the export, with the reason; this only notes it.
        log.debug("export.halted", reason=reason)

    return Gateway(
        client,
        auth,
        policy=config.retry_policy,
        pacing=config.pacing,
        traffic=Traffic(),
        rng=random.Random(config.seed),
        on_halt=halted,
    )


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _failed(statuses: Mapping[int, int], exc: Halted | Given, url: URL, first: bool) -> NoReturn:
    """A page could not be read. The first is the preflight (``preflight.refused``: a
    ``PreflightError`` naming the setting likely wrong); a later one, export's own error."""
    if first:
        raise refused(exc, url, statuses) from None
    if isinstance(exc, Halted):
        # The credentials, the token or the endpoint: no page of any kind can be read.
        raise ExportError(str(exc), systemic=True) from exc
    if exc.kind == "http":
        # A 4xx (or a redirect refused) is this page's, not the service's.
        raise ExportError(f"HTTP {exc.status}: {exc}") from exc
    # Out of tries, or of 429s: the service is not answering reads.
    raise ExportError(str(exc), systemic=True) from exc


# The list API's property filter (API notes §1): FIELD, an operator, a value.
_FILTER: Final = re.compile(r"([^=!<>~]+)(==|!=|<=|>=|<|>|~)(.*)", re.DOTALL)


def check_filter(text: str) -> None:
    """Refuse (``ConfigError``) a ``--filter`` that is not FIELD==VALUE, or FIELD and
    one of !=, <=, >=, <, >, ~ and VALUE (API notes §1): sent, it would cost a request
    and come back a 400."""
    match = _FILTER.fullmatch(text)
    if match is None or not match.group(1).strip():
        raise ConfigError(
            f"--filter {text!r} is not FIELD==VALUE (or FIELD!=VALUE, <=, >=, <, >, ~): "
            "equality is '==', two signs"
        )
