"""The one place that touches aiohttp: a request in, a ``Response`` or a bulkpatch error out."""

from __future__ import annotations

import functools
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from yarl import URL

from bulkpatch._version import __version__
from bulkpatch.errors import TransportError

USER_AGENT = f"bulkpatch/{__version__}"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    retry_after: str | None

    def json(self) -> Any:
        """The body as JSON, or None when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def message(self) -> str:
        """A short human reason from an error body (gateway or problem document)."""
        data = self.json()
        if isinstance(data, dict):
            for key in ("detail", "message", "title", "error_description", "error"):
                if isinstance(data.get(key), str):
                    code = data.get("error_code")
                    return f"{code}: {data[key]}" if isinstance(code, str) else str(data[key])
        text = self.body[:200].decode("utf-8", errors="replace").strip()
        return text or f"HTTP {self.status}"


def ssl_context(*, verify: bool, ca_bundle: Path | None) -> ssl.SSLContext | bool:
    if not verify:
        return False
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=str(ca_bundle))
    return True


def make_session(
    *, concurrency: int, timeout: float, verify_tls: bool = True, ca_bundle: Path | None = None
) -> aiohttp.ClientSession:
    """One session for the whole run: pooled keep-alive connections, proxies from the env."""
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        ssl=ssl_context(verify=verify_tls, ca_bundle=ca_bundle),
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": USER_AGENT},
        # Not trust_env: it makes aiohttp read ~/.netrc in a thread for every request,
        # tripling the cost of one; proxies from the environment are resolved once below.
        trust_env=False,
        raise_for_status=False,
    )


@functools.lru_cache(maxsize=64)
def proxy_for(scheme: str, host: str) -> str | None:
    """The proxy HTTPS_PROXY / HTTP_PROXY / NO_PROXY name for a host (as curl reads them)."""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(scheme)


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: dict[str, str],
    body: bytes | None = None,
) -> Response:
    """Send one request. Transport failures become ``TransportError``.

    ``sent`` is False only when the connection could not be made at all: then the server
    surely saw nothing. A dropped connection or a timeout may come after the server
    applied the request, so those are ``sent=True``.
    """
    try:
        proxy = proxy_for(url.scheme, url.host or "")
        async with session.request(
            method, url, headers=headers, data=body, proxy=proxy
        ) as response:
            data = await response.read()
            return Response(response.status, data, response.headers.get("Retry-After"))
    except aiohttp.ClientConnectorError as exc:
        raise TransportError(
            f"cannot connect to {url.host}:{url.port}: {exc.os_error}", sent=False
        ) from exc
    except TimeoutError as exc:
        raise TransportError(
            f"no answer within the timeout ({method} {url.path})", sent=True
        ) from exc
    except aiohttp.ClientError as exc:
        raise TransportError(f"{type(exc).__name__}: {exc}", sent=True) from exc
