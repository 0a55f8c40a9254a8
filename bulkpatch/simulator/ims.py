"""The IMS token endpoint and the tokens it issued (API notes §4).

The gateway asks it whether a bearer token is good; the ``token_expiry`` fault asks it to
expire the caller's token early.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from aiohttp import web

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.stats import Stats
from bulkpatch.simulator.wire import ClientGone, json_answer


class Tokens:
    """The configured access token and the IMS tokens issued since start, with expiries."""

    def __init__(self, config: SimConfig, stats: Stats, clock: Callable[[], float]) -> None:
        self._config = config
        self._stats = stats
        self._clock = clock
        self._issued: dict[str, float] = {}  # IMS token -> expiry (monotonic seconds)

    def valid(self, token: str) -> bool:
        if not token:
            return False
        if secrets.compare_digest(token, self._config.access_token):
            return True
        expiry = self._issued.get(token)
        return expiry is not None and expiry > self._clock()

    def expire(self, request: web.Request) -> None:
        """Expire the token the request carries, if IMS issued it."""
        token = request.headers.get("Authorization", "").partition(" ")[2].strip()
        if token in self._issued:
            self._issued[token] = 0.0

    async def ims_token(self, request: web.Request) -> web.Response:
        """OAuth Server-to-Server client-credentials grant (API notes §4)."""
        try:
            form = await request.post()
        except ConnectionResetError:
            raise ClientGone from None
        if form.get("grant_type") != "client_credentials":
            return json_answer({"error": "unsupported_grant_type"}, 400)
        config = self._config
        client_id = str(form.get("client_id", ""))
        client_secret = str(form.get("client_secret", ""))
        if not secrets.compare_digest(client_id, config.client_id):
            return json_answer(
                {"error": "invalid_client", "error_description": "invalid client_id parameter"}, 400
            )
        if not secrets.compare_digest(client_secret, config.client_secret):
            return json_answer(
                {"error": "invalid_client", "error_description": "invalid client_secret parameter"},
                401,
            )
        token = "sim-ims-" + secrets.token_urlsafe(32)
        self._issued[token] = self._clock() + config.token_ttl_s
        self._stats.tokens_issued += 1
        return json_answer(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": int(config.token_ttl_s),
            }
        )
