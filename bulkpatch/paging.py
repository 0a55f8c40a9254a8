"""The list API's pages, followed: what ``export`` and the prefetch of ``run`` share.

The pages are followed by the ``_links.next.href`` the API gives (its cursor is the
server's: never computed here), each read through the run's request path
(``gateway.Gateway``: its pace, retries, pauses after a 429, token renewal after a
401). A server that caps ``limit`` or ignores it is followed the same way: only the
link says whether a page follows. A 400 to a page asks for half as many entries and
reads it again (the page size a server accepts is not documented, API notes §1); a page
size of 1 refused is the page's failure.

A ``next`` link must stay on the endpoint's origin (the credentials go with it), and one
that was followed already ends the paging with an error rather than loop for ever.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, Final, NoReturn
from urllib.parse import quote

import structlog
from yarl import URL

from bulkpatch import entities
from bulkpatch.client import origin
from bulkpatch.errors import BulkpatchError
from bulkpatch.gateway import Gateway, Halted
from bulkpatch.repeat import Given, Tally

log = structlog.get_logger()

_LIMIT: Final = re.compile(r"(?<=[?&])limit=(\d+)")


class PagingError(BulkpatchError):
    """A page could not be read; ``systemic`` when no page after it can be: a ``next``
    link off the endpoint's origin or back to a page already read, or the service not
    answering reads (README "Exit status", 3)."""

    def __init__(self, message: str, *, systemic: bool = False) -> None:
        super().__init__(message)
        self.systemic = systemic


# What becomes of a page that could not be read: (the error, its URL, whether it was
# the first page).
OnFailure = Callable[[Halted | Given, URL, bool], NoReturn]


def first_url(
    endpoint: str,
    entity: str,
    offer_type: str | None,
    filters: Sequence[str],
    order: str | None,
    page_size: int,
) -> URL:
    """The first page of ``entity``'s collection: ``limit``, the order, the filters (and
    the filter that keeps ``entity``'s own on a shared path), ``offer-type``."""
    parts = [f"limit={page_size}"]
    if order:
        parts.append("orderby=" + quote(order, safe="-"))
    own = entities.marker_filter(entity)
    parts.extend("property=" + quote(f, safe="") for f in (*filters, *([own] if own else [])))
    if typed := entities.type_query(entity, offer_type or entities.DEFAULT_OFFER_TYPE):
        parts.append(typed)
    url = f"{endpoint.rstrip('/')}/{entities.collection(entity)}?" + "&".join(parts)
    return URL(url, encoded=True)


def next_url(endpoint: str, href: str) -> URL:
    """Where a ``next`` link points. Its base is not documented, so: an absolute URL as is;
    a path that starts with the endpoint's own path, on the endpoint's host; any other
    path, under the endpoint. A link to another origin is refused (``PagingError``)."""
    base = URL(endpoint.rstrip("/"))
    link = URL(href, encoded=True)
    if link.is_absolute() or href.startswith(base.raw_path + "/"):
        url = base.join(link)  # as is, or with the endpoint's scheme when it has none
    else:
        url = URL(
            f"{endpoint.rstrip('/')}{href if href.startswith('/') else '/' + href}", encoded=True
        )
    # The credentials go with the request: it stays where they were meant for.
    if origin(url) != origin(base):
        raise PagingError(
            f"the next page's link leads to another origin, {url.origin()} "
            f"(not {base.origin()}): refused ({href})",
            systemic=True,
        )
    return url


def next_href(page: dict[str, Any]) -> str | None:
    """The page's ``_links.next.href`` (API notes §1); None when it links no next page.
    ``PagingError`` when the link is of another shape: read as the end, it would cut a
    listing short."""
    links = page.get("_links")
    link = links.get("next") if isinstance(links, dict) else links
    if link is None:
        return None
    href = link.get("href") if isinstance(link, dict) else None
    if not isinstance(href, str):
        raise PagingError(f"a page's next link is not an object with an href: {str(link)[:80]}")
    return href


def halved(url: URL) -> URL | None:
    """``url`` asking for half its ``limit`` (at least 1); None when it asks for one, or
    names no limit."""
    match = _LIMIT.search(str(url))
    if match is None or int(match.group(1)) <= 1:
        return None
    text = str(url)
    smaller = int(match.group(1)) // 2
    return URL(f"{text[: match.start(1)]}{smaller}{text[match.end(1) :]}", encoded=True)


async def pages(
    gateway: Gateway,
    headers: Mapping[str, str],
    url: URL,
    endpoint: str,
    failed: OnFailure,
) -> AsyncGenerator[dict[str, Any], None]:
    """Every page from ``url`` on, as the JSON object each is; ``failed`` is told of a
    page that could not be read (and raises). ``PagingError``: a page that is no object,
    has no results list, or links off the origin or back."""
    followed: set[str] = set()
    number = 0
    next_page: URL | None = url
    while next_page is not None:
        page, next_page = await _read(gateway, headers, next_page, failed, first=not number)
        number += 1
        followed.add(str(next_page))
        if not isinstance(page.get("results"), list):
            raise PagingError(f"page {number} has no results list ({next_page.path})")
        yield page
        href = next_href(page)
        next_page = next_url(endpoint, href) if href else None
        if next_page is not None and str(next_page) in followed:
            raise PagingError(
                f"page {number} links back to a page already read ({href})", systemic=True
            )


async def _read(
    gateway: Gateway, headers: Mapping[str, str], url: URL, failed: OnFailure, *, first: bool
) -> tuple[dict[str, Any], URL]:
    """One page (and the URL it was read at), a 400 asked again for half as many."""
    while True:
        try:
            answer = await gateway.read(Tally(), url, headers, f"reading {url.path}")
        except Given as exc:
            smaller = halved(url) if exc.status == 400 else None
            if smaller is None:
                failed(exc, url, first)
            log.warning("list.page_size_halved", url=str(smaller), detail=str(exc))
            url = smaller
            continue
        except Halted as exc:
            failed(exc, url, first)
        body = answer.json()
        if isinstance(body, dict):
            return body, url
        raise PagingError(f"the page at {url.path} is not a JSON object")
