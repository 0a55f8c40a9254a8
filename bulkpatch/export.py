"""``bulkpatch export``: every entity of a kind, one NDJSON line each, page by page.

The pages are followed by the ``_links.next.href`` the API gives (its cursor is the
server's: never computed here), under the same rate limit, retries and credentials as
``run``. One page is held at a time, so memory stays flat whatever the estate's size
(but for the links already followed: a few dozen bytes a page).

A ``next`` link must stay on the endpoint's origin (the credentials go with it), and one
that was followed already ends the export with an error rather than loop for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

import structlog
from aiolimiter import AsyncLimiter
from multidict import CIMultiDict
from yarl import URL

from bulkpatch import entities
from bulkpatch.auth import TokenProvider, provider
from bulkpatch.client import HttpClient, Response, make_session, origin, request_headers
from bulkpatch.engine import RunConfig
from bulkpatch.errors import BulkpatchError, RequestError, TransportError
from bulkpatch.pace import limiter_for
from bulkpatch.retry import Verdict, backoff, classify_read, parse_retry_after

log = structlog.get_logger()
MAX_THROTTLED = 50


class ExportError(BulkpatchError):
    """A page could not be read; ``systemic`` when no page of any kind could be."""

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
    parts.extend("property=" + quote(f, safe="") for f in filters)
    if typed := entities.type_query(entity, offer_type or entities.DEFAULT_OFFER_TYPE):
        parts.append(typed)
    return URL(f"{endpoint.rstrip('/')}/{entity}?" + "&".join(parts), encoded=True)


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
            f"(not {base.origin()}): refused ({href})"
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
    rng = random.Random(config.seed)
    limiter = limiter_for(config.rate) if config.rate > 0 else None
    base = {
        "x-api-key": config.api_key
        or (config.credentials.client_id if config.credentials else "")
        or "",
        "x-gw-ims-org-id": config.org_id,
        "x-sandbox-name": config.sandbox,
        "Accept": "application/json",
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
        url: URL | None = first_url(config.endpoint, entity, offer_type, filters, order, page_size)
        followed: set[str] = set()
        pages = 0
        while url is not None:
            page = await _get_page(client, auth, headers, url, limiter, config, rng)
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
                raise ExportError(f"page {pages} links back to a page already read ({href})")


async def _client(stack: contextlib.AsyncExitStack, config: RunConfig) -> HttpClient:
    session = await stack.enter_async_context(
        make_session(
            concurrency=1,
            timeout=config.timeout,
            verify_tls=config.verify_tls,
            ca_bundle=config.ca_bundle,
        )
    )
    client = HttpClient(session, config.timeout)
    stack.push_async_callback(client.close)
    return client


async def _get_page(
    client: HttpClient,
    auth: TokenProvider,
    headers: CIMultiDict[str],
    url: URL,
    limiter: AsyncLimiter | None,
    config: RunConfig,
    rng: random.Random,
) -> dict[str, Any]:
    attempts = throttled = refused = 0
    last = ""
    while True:
        if limiter is not None:
            await limiter.acquire()
        try:
            token = auth.current or await auth.token()
        except RequestError as exc:
            raise ExportError(f"no access token: {exc}", systemic=True) from exc
        request = headers.copy()
        request["Authorization"] = f"Bearer {token}"
        answer: Response | TransportError
        try:
            answer = await client.send("GET", url, request)
        except TransportError as exc:
            answer = exc
        if isinstance(answer, Response):
            # A redirect that comes back is one the client refused: it ends the export.
            verdict = classify_read(answer.status)
            if verdict is Verdict.DONE:
                body = answer.json()
                if isinstance(body, dict):
                    return body
                raise ExportError(f"the page at {url.path} is not a JSON object")
            if verdict is Verdict.THROTTLED:
                throttled += 1
                if throttled > MAX_THROTTLED:
                    raise ExportError("throttled (429) too many times", systemic=True)
                delay = parse_retry_after(answer.retry_after)
                if delay is None:
                    delay = backoff(
                        min(throttled, 6), base=config.backoff_base, cap=config.backoff_cap, rng=rng
                    )
                await asyncio.sleep(min(delay, config.backoff_cap * 4))
                continue
            if verdict is Verdict.UNAUTHORIZED:
                refused += 1
                if refused > 2:
                    raise ExportError("the credentials are rejected (401)", systemic=True)
                with contextlib.suppress(RequestError):
                    await auth.renew(token)
                continue
            if verdict is Verdict.PERMANENT:
                raise ExportError(f"HTTP {answer.status}: {answer.message()}")
            last = f"HTTP {answer.status}: {answer.message()}"
        else:
            last = str(answer)
        attempts += 1
        if attempts >= config.max_attempts:
            raise ExportError(
                f"reading {url.path} failed {attempts} times; last: {last}", systemic=True
            )
        log.debug("export.retry", attempt=attempts, error=last)
        await asyncio.sleep(
            backoff(attempts, base=config.backoff_base, cap=config.backoff_cap, rng=rng)
        )
