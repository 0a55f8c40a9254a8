"""``bulkpatch export``: every entity of a kind, one NDJSON line each, page by page.

The pages are followed by the ``_links.next.href`` the API gives (its cursor is the
server's: never computed here), each read through the request path ``run`` uses
(``gateway.Gateway``: its pace, retries, pauses after a 429, token renewal after a 401,
with the run's retry policy and seed). One page is held at a time, so memory stays flat whatever the estate's size
(but for the links already followed: a few dozen bytes a page).

A ``next`` link must stay on the endpoint's origin (the credentials go with it), and one
that was followed already ends the export with an error rather than loop for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final, NoReturn
from urllib.parse import quote

import structlog
from yarl import URL

from bulkpatch import entities
from bulkpatch.auth import TokenProvider, provider
from bulkpatch.client import HttpClient, make_session, origin, request_headers
from bulkpatch.config import RunConfig
from bulkpatch.errors import BulkpatchError, ConfigError
from bulkpatch.gateway import Gateway, Halted
from bulkpatch.preflight import refused
from bulkpatch.repeat import Given, Tally
from bulkpatch.summary import Traffic

log = structlog.get_logger()


class ExportError(BulkpatchError):
    """A page could not be read; ``systemic`` when the export cannot go on: no page of
    any kind could be read, or a ``next`` link leads off the endpoint's origin or back to
    a page already read (every later page is out of reach: README "Exit status", 3)."""

    def __init__(self, message: str, *, systemic: bool = False) -> None:
        super().__init__(message)
        self.systemic = systemic


def first_url(
    endpoint: str,
    entity: str,
    offer_type: str | None,
    filters: Sequence[str],
    order: str | None,
    page_size: int,
) -> URL:
    parts = [f"limit={page_size}"]
    if order:
        parts.append("orderby=" + quote(order, safe="-"))
    own = entities.marker_filter(entity)
    parts.extend("property=" + quote(f, safe="") for f in (*filters, *([own] if own else [])))
    if typed := entities.type_query(entity, offer_type or entities.DEFAULT_OFFER_TYPE):
        parts.append(typed)
    return URL(f"{endpoint.rstrip('/')}/{entities.collection(entity)}?" + "&".join(parts), encoded=True)


def next_url(endpoint: str, href: str) -> URL:
    """Where a ``next`` link points. Its base is not documented, so: an absolute URL as is;
    a path that starts with the endpoint's own path, on the endpoint's host; any other
    path, under the endpoint. A link to another origin is refused (``ExportError``)."""
    base = URL(endpoint.rstrip("/"))
    link = URL(href, encoded=True)
    if link.is_absolute():
        url = base.join(link)  # as is, or with the endpoint's scheme when it has none
    elif href.startswith(base.raw_path + "/"):
        url = base.join(link)
    else:
        url = URL(
            f"{endpoint.rstrip('/')}{href if href.startswith('/') else '/' + href}", encoded=True
        )
    # The credentials go with the request: it stays where they were meant for.
    if origin(url) != origin(base):
        raise ExportError(
            f"the next page's link leads to another origin, {url.origin()} "
            f"(not {base.origin()}): refused ({href})",
            systemic=True,
        )
    return url


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
        url: URL | None = first_url(config.endpoint, entity, offer_type, filters, order, page_size)
        followed: set[str] = set()
        pages = 0
        while url is not None:
            page = await _get_page(gateway, headers, url, first=not pages)
            pages += 1
            followed.add(str(url))
            if totals is not None and isinstance(page.get("total"), int) and not totals:
                totals.append(page["total"])
            results = page.get("results")
            if not isinstance(results, list):
                raise ExportError(f"page {pages} has no results list ({url.path})")
            for doc in results:
                if isinstance(doc, dict):
                    if entities.typed(entity):
                        # A typed kind's documents do not say their type: the export does,
                        # so a line can be run again as a job on the same entity.
                        doc.setdefault("type", offer_type or entities.DEFAULT_OFFER_TYPE)
                    yield doc
            href = ((page.get("_links") or {}).get("next") or {}).get("href")
            url = next_url(config.endpoint, href) if isinstance(href, str) and href else None
            if url is not None and str(url) in followed:
                raise ExportError(
                    f"page {pages} links back to a page already read ({href})", systemic=True
                )


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


async def _get_page(
    gateway: Gateway, headers: Mapping[str, str], url: URL, *, first: bool
) -> dict[str, Any]:
    """One page, read through the gateway (429s, 401s, backoff and retries are its);
    what it gives up on, as export's own error. The ``first`` page is the preflight
    (``preflight.refused``: a ``PreflightError`` naming the setting likely wrong)."""
    try:
        answer = await gateway.read(Tally(), url, headers, f"reading {url.path}")
    except (Halted, Given) as exc:
        if first:
            raise refused(exc, url, gateway.traffic.statuses) from None
        _page_failed(exc)
    body = answer.json()
    if isinstance(body, dict):
        return body
    raise ExportError(f"the page at {url.path} is not a JSON object")


def _page_failed(exc: Halted | Given) -> NoReturn:
    """A page after the first could not be read: export's own error."""
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
