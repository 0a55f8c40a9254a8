"""Access tokens: a static one, or IMS client credentials fetched once for all workers.

IMS (OAuth Server-to-Server, API notes §4) gives no refresh token: a new token is asked
for before the old one expires, and once on a 401. One worker asks; the others wait for
its answer rather than all asking at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import urlencode

import structlog
from yarl import URL

from bulkpatch import scrub
from bulkpatch.client import Response, Transport
from bulkpatch.errors import ConfigError, ErrorKind, HTTPStatusError, RequestError, TransportError
from bulkpatch.repeat import Exchange, Given, Tally, repeated
from bulkpatch.retry import RetryPolicy, Verdict, classify_read, classify_transport

DEFAULT_IMS_URL: Final = "https://ims-na1.adobelogin.com/ims/token/v3"
DEFAULT_SCOPES: Final = (
    "openid,session,AdobeID,read_organizations,additional_info.projectedProductContext"
)
# Renew when less than this share of the token's life is left (and at least a minute).
_RENEW_AT: Final = 0.1
# The token request's retries: a few quick ones, then the run stops (exit 3).
IMS_POLICY: Final = RetryPolicy(max_attempts=4, max_throttled=4, backoff_base_s=0.4, backoff_cap_s=3.2)

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Credentials:
    """A static access token, or an IMS client id and secret. Never shown in a repr."""

    access_token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scopes: str = DEFAULT_SCOPES
    ims_url: str = DEFAULT_IMS_URL

    def __post_init__(self) -> None:
        if not self.access_token and not (self.client_id and self.client_secret):
            raise ConfigError(
                "no credentials: set ADOBE_ACCESS_TOKEN, or ADOBE_CLIENT_ID and ADOBE_CLIENT_SECRET"
            )

    def secrets(self) -> tuple[str, ...]:
        """Values that must never be printed (used by log scrubbing and tests)."""
        return tuple(s for s in (self.access_token, self.client_secret) if s)


class TokenProvider(Protocol):
    # Whether ``renew`` can give another token (a static one cannot).
    renewable: bool

    async def token(self) -> str: ...

    async def renew(self, stale: str) -> str:
        """A token other than ``stale`` if one can be had (one fetch for many callers)."""
        ...

    @property
    def current(self) -> str | None:
        """The token ``token()`` would give now without fetching, if any."""
        ...


class StaticToken:
    renewable = False

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    async def renew(self, stale: str) -> str:
        return self._token

    @property
    def current(self) -> str | None:
        return self._token


class ImsToken:
    """Client-credentials tokens from IMS, renewed before expiry and on demand."""

    renewable = True

    def __init__(
        self,
        client: Transport,
        credentials: Credentials,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert credentials.client_id
        assert credentials.client_secret
        self._client = client
        self._credentials = credentials
        self._clock = clock
        self._rng = random.Random()
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._stale = False  # the current token was refused: callers wait for the renewal
        self._renew_after = 0.0
        # Why the last fetch failed, for the callers that waited for it: asking IMS
        # again, once per waiting worker, would only be refused again.
        self._failure: RequestError | None = None
        self.fetches = 0

    @property
    def current(self) -> str | None:
        if self._stale or self._clock() >= self._renew_after:
            return None
        return self._token

    async def token(self) -> str:
        if self._token is not None and not self._stale and self._clock() < self._renew_after:
            return self._token
        async with self._lock:
            if self._token is None or self._stale or self._clock() >= self._renew_after:
                await self._fetch_once()
            assert self._token is not None
            return self._token

    async def renew(self, stale: str) -> str:
        if self._token == stale:
            self._stale = True
        async with self._lock:
            if self._token == stale or self._token is None:
                await self._fetch_once()
            assert self._token is not None
            return self._token

    async def _fetch_once(self) -> None:
        if self._failure is not None:
            raise self._failure
        try:
            await self._fetch()
        except RequestError as exc:
            self._failure = exc
            raise

    async def _fetch(self) -> None:
        creds = self._credentials
        form = {
            "grant_type": "client_credentials",
            "client_id": creds.client_id or "",
            "client_secret": creds.client_secret or "",
            "scope": creds.scopes,
        }
        try:
            response = await repeated(
                lambda: self._post(urlencode(form).encode()),
                tally=Tally(),
                policy=IMS_POLICY,
                absorb=self._throttled,
                back_off=lambda attempt: asyncio.sleep(IMS_POLICY.backoff_s(attempt, self._rng)),
                what="the IMS token request",
            )
        except Given as exc:
            # The message names the IMS error, never the secret that was sent.
            if exc.kind == ErrorKind.EXHAUSTED:
                raise HTTPStatusError(exc.status or 503, f"IMS did not answer: {exc}") from None
            raise HTTPStatusError(exc.status or 502, f"IMS refused the client credentials: {exc}") from None
        self._accept(response)

    async def _post(self, body: bytes) -> Exchange:
        """One token request, classified as a read is (it may be sent again as it is): a
        redirect is never followed, so the secret goes to the IMS URL's origin only (RFC
        9110 §15.4); a 401 is the credentials' refusal, not a token to renew."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            response = await self._client.send("POST", URL(self._credentials.ims_url), headers, body)
        except TransportError as exc:
            return Exchange(exc, classify_transport(exc), "")
        verdict = classify_read(response.status)
        if verdict is Verdict.UNAUTHORIZED:
            verdict = Verdict.PERMANENT
        return Exchange(response, verdict, "")

    async def _throttled(self, exchange: Exchange, tally: Tally) -> bool:
        """IMS's 429: wait its Retry-After (or a backoff); IMS requests are not paced."""
        answer = exchange.answer
        if exchange.verdict is not Verdict.THROTTLED:
            return False
        tally.throttled += 1
        retry_after = answer.retry_after if isinstance(answer, Response) else None
        date = answer.date if isinstance(answer, Response) else None
        if tally.throttled > IMS_POLICY.max_throttled:
            raise Given(ErrorKind.EXHAUSTED, "throttled (429) too many times", 429)
        await asyncio.sleep(IMS_POLICY.throttle_delay_s(
            retry_after, tally.throttled, self._rng, date=date
        ))
        return True

    def _accept(self, response: Response) -> None:
        data = response.json()
        if response.status != 200 or not isinstance(data, dict) or "access_token" not in data:
            raise HTTPStatusError(
                response.status if response.status != 200 else 502,
                f"IMS refused the client credentials: {response.message()}",
            )
        ttl = _lifetime(data.get("expires_in"))
        if ttl is None:
            # A token said to be over already (or of no stated lifetime) would cost one
            # token request per API request: the run stops instead.
            raise HTTPStatusError(
                502, f"IMS gave a token with no usable lifetime (expires_in {data.get('expires_in')!r})"
            )
        if ttl < 60:
            log.warning("auth.short_lived_token", expires_in=ttl)
        self._token = str(data["access_token"])
        scrub.register(self._token)
        self._stale = False
        renew_in = ttl - max(60.0, min(ttl * _RENEW_AT, 3600.0))
        if renew_in <= 0:
            renew_in = ttl / 2
        self._renew_after = self._clock() + renew_in
        self.fetches += 1
        log.info("auth.token", source="ims", expires_in=ttl)


def _lifetime(expires_in: object) -> float | None:
    """A token's lifetime in seconds from IMS's ``expires_in``: None unless a positive
    number."""
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        return float(expires_in)
    return None


def provider(client: Transport, credentials: Credentials) -> TokenProvider:
    """The tokens of ``credentials``; their secrets are registered with the scrubber
    first, so that no command (``export`` as much as ``run``) shows one a server echoes."""
    scrub.register(*credentials.secrets())
    if credentials.access_token:
        return StaticToken(credentials.access_token)
    return ImsToken(client, credentials)
