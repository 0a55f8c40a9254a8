"""How the Offer Library API is spoken: URLs, headers, etags. Pure, no I/O.

The DPS dialect is the current API (API notes §1). A dialect is a small frozen object the
engine asks questions of, so a second one (the legacy xcore API) slots in without a
branch in every function.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import orjson
from yarl import URL

from bulkpatch import entities
from bulkpatch.jobs import Job

DEFAULT_ENDPOINT: Final = "https://platform.adobe.io/data/core/dps"
DEFAULT_XCORE_ENDPOINT: Final = "https://platform.adobe.io/data/core/xcore"


# Ids that need no encoding: unreserved characters only, and not made only of dots.
_PLAIN_ID: Final = re.compile(r"(?!\.*$)[A-Za-z0-9._~-]+")


def quote_id(entity_id: str) -> str:
    """Percent-encode an id as one path segment.

    Everything outside the unreserved set is encoded, ``/`` included; ids made only of
    dots are encoded too, since ``.`` and ``..`` would otherwise be removed as dot-segments
    (RFC 3986 §5.2.4) and the request would reach another resource.
    """
    if _PLAIN_ID.fullmatch(entity_id):
        return entity_id
    encoded = quote(entity_id, safe="")
    if encoded.strip(".") == "":
        encoded = encoded.replace(".", "%2E")
    return encoded


@functools.lru_cache(maxsize=8)
def _parts(endpoint: str) -> tuple[str, str, str]:
    """An endpoint's scheme, authority (as written, already encoded) and path."""
    url = URL(endpoint.rstrip("/"))
    return url.scheme, url.raw_authority, url.raw_path.rstrip("/")


@dataclass(frozen=True, slots=True)
class DpsDialect:
    """``{endpoint}/{entity}/{id}?offer-type=...``, JSON bodies, ``etag`` in the receipt."""

    endpoint: str
    name: str = "dps"

    def entity_url(self, job: Job) -> URL:
        scheme, authority, path = _parts(self.endpoint)
        # Built from parts, not parsed: a URL is made for every request, and parsing one
        # costs more than the rest of preparing the request. encoded=True: the id is
        # already encoded exactly as it must go on the wire.
        return URL.build(
            scheme=scheme,
            authority=authority,
            path=f"{path}/{entities.collection(job.entity)}/{quote_id(job.id)}",
            query_string=entities.type_query(job.entity, job.type),
            encoded=True,
        )

    def collection_url(self, job: Job, query: str = "") -> URL:
        """``{endpoint}/{entity}?...``: where a create is POSTed and a list is read."""
        scheme, authority, path = _parts(self.endpoint)
        parts = [query] if query else []
        if typed := entities.type_query(job.entity, job.type):
            parts.append(typed)
        return URL.build(
            scheme=scheme,
            authority=authority,
            path=f"{path}/{entities.collection(job.entity)}",
            query_string="&".join(parts),
            encoded=True,
        )

    @staticmethod
    def receipt_id(body: Any) -> str | None:
        value = body.get("id") if isinstance(body, dict) else None
        return value if isinstance(value, str) and value else None

    @staticmethod
    def patch_headers(offer_type: str = "personalized") -> dict[str, str]:
        return {"Content-Type": "application/json"}

    @staticmethod
    def read_headers(offer_type: str = "personalized") -> dict[str, str]:
        return {"Accept": "application/json"}

    @staticmethod
    def if_match(etag: int) -> str:
        # RFC 9110 §8.8.3: an entity-tag is a quoted string.
        return f'"{etag}"'

    @staticmethod
    def receipt_etag(body: Any) -> int | None:
        etag = body.get("etag") if type(body) is dict else None
        return etag if type(etag) is int else None  # not a bool, nor anything else

    @staticmethod
    def document(body: Any) -> dict[str, Any] | None:
        """The entity a GET answered, or None if the body is not one."""
        return body if isinstance(body, dict) and "etag" in body else None


# xcore (API notes §5): the legacy repository API, spoken for job files written for it.
XCORE_SCHEMAS: Final = {
    "personalized": "https://ns.adobe.com/experience/offer-management/personalized-offer;version=0.5",
    "fallback": "https://ns.adobe.com/experience/offer-management/fallback-offer;version=0.1",
}
XCORE_HOME_ACCEPT: Final = "application/vnd.adobe.platform.xcore.home.hal+json"
XCORE_CONTAINER_REL: Final = "https://ns.adobe.com/experience/xcore/container"


@dataclass(frozen=True, slots=True)
class XcoreDialect:
    """``{endpoint}/{container}/instances/{id}``, schema-typed media types, ``repo:etag``.

    Documents read back carry their ``repo:etag`` also as ``etag``, so the engine's etag
    logic is the same for both dialects; patch paths (``/_instance/...``) apply to the
    document as read.
    """

    endpoint: str
    container: str
    name: str = "xcore"

    def entity_url(self, job: Job) -> URL:
        scheme, authority, path = _parts(self.endpoint)
        return URL.build(
            scheme=scheme,
            authority=authority,
            path=f"{path}/{quote_id(self.container)}/instances/{quote_id(job.id)}",
            encoded=True,
        )

    def collection_url(self, job: Job, query: str = "") -> URL:
        scheme, authority, path = _parts(self.endpoint)
        return URL.build(
            scheme=scheme,
            authority=authority,
            path=f"{path}/{quote_id(self.container)}/instances",
            query_string=query,
            encoded=True,
        )

    @staticmethod
    def patch_headers(offer_type: str = "personalized") -> dict[str, str]:
        schema = XCORE_SCHEMAS[offer_type]
        return {
            "Content-Type": "application/vnd.adobe.platform.xcore.patch.hal+json; version=1; "
            f'schema="{schema}"',
            "Accept": "application/vnd.adobe.platform.xcore.xdm.receipt+json; version=1",
        }

    @staticmethod
    def read_headers(offer_type: str = "personalized") -> dict[str, str]:
        schema = XCORE_SCHEMAS[offer_type]
        return {"Accept": f'application/vnd.adobe.platform.xcore.hal+json; schema="{schema}"'}

    @staticmethod
    def if_match(etag: int) -> str:
        return f'"{etag}"'

    @staticmethod
    def receipt_etag(body: Any) -> int | None:
        etag = body.get("repo:etag") if isinstance(body, dict) else None
        return etag if isinstance(etag, int) and not isinstance(etag, bool) else None

    @staticmethod
    def receipt_id(body: Any) -> str | None:
        value = body.get("instanceId") if isinstance(body, dict) else None
        return value if isinstance(value, str) and value else None

    @classmethod
    def document(cls, body: Any) -> dict[str, Any] | None:
        etag = cls.receipt_etag(body)
        if etag is None or not isinstance(body, dict):
            return None
        return {**body, "etag": etag}


def home_url(endpoint: str) -> URL:
    """Where xcore lists its containers, narrowed to decisioning ones."""
    return URL(
        f"{endpoint.rstrip('/')}/?product=acp&property=_instance.containerType%3D%3Ddecisioning",
        encoded=True,
    )


def containers(body: Any) -> list[str]:
    """The container ids a home document lists."""
    embedded = body.get("_embedded") if isinstance(body, dict) else None
    found = embedded.get(XCORE_CONTAINER_REL) if isinstance(embedded, dict) else None
    if not isinstance(found, list):
        return []
    return [c["instanceId"] for c in found if isinstance(c, dict) and isinstance(c.get("instanceId"), str)]


Dialect = DpsDialect | XcoreDialect


# What a write's 2xx proves: the etag the write left (None for a delete) and the entity's
# id (None when the receipt does not name it). A plain tuple: one is made per write, and
# a named tuple costs ten times as much to build.
Receipt = tuple[int | None, str | None]
_DELETED: Final[Receipt] = (None, None)


def _is_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


def receipt(dialect: Dialect, method: str, status: int, body: bytes, entity_id: str) -> Receipt | None:
    """The one rule of what a 2xx to a write proves (API notes §1): its ``Receipt``
    ``(etag, id)``, or None when it is no receipt of the write, and so proves nothing.

    - PATCH or PUT: a JSON object with the dialect's etag (DPS ``etag``, xcore
      ``repo:etag``, an integer) and, if it names an id, ``entity_id``.
    - POST (a create): a JSON object with a non-empty id and an etag.
    - DELETE: a 204, or a 200 whose body is empty or JSON.

    Anything else (a proxy's HTML login page answered 200, say) leaves the write's outcome
    unknown: the caller settles it by reading, as it does a lost answer.
    """
    if method == "DELETE":
        if status == 204 or (status == 200 and (not body.strip() or _is_json(body))):
            return _DELETED
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    etag = dialect.receipt_etag(data)
    if etag is None:
        return None
    named = dialect.receipt_id(data)
    if method == "POST":
        return None if named is None else (etag, named)
    return (etag, named) if named in (None, entity_id) else None
