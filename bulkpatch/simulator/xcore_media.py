"""xcore's media types and schemas, and the checks a request's headers must pass.

A schema (in ``Accept`` or ``Content-Type``) naming the other offer type is a 404, as
xcore looks an instance up within its schema; the schema's version is not compared.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from bulkpatch.simulator.wire import problem
from bulkpatch.simulator.xcore_ids import KINDS

HOME_TYPE: Final = "application/vnd.adobe.platform.xcore.home.hal+json"
HAL_TYPE: Final = "application/vnd.adobe.platform.xcore.hal+json"
PATCH_TYPE: Final = "application/vnd.adobe.platform.xcore.patch.hal+json"
CREATE_TYPE: Final = "application/schema-instance+json"
RECEIPT_TYPE: Final = "application/vnd.adobe.platform.xcore.xdm.receipt+json; version=1"

OM: Final = "https://ns.adobe.com/experience/offer-management/"
# The schemas of the legacy API (its versions, not DPS's), by store collection.
SCHEMAS: Final = {
    "offers/personalized": OM + "personalized-offer;version=0.5",
    "offers/fallback": OM + "fallback-offer;version=0.1",
}

_PARAM: Final = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """``type/sub; a=1; schema="x;version=0.5"`` → the type and its parameters.

    Written here because the schema parameter holds a ``;`` inside quotes, which a
    naive split (aiohttp's included) cuts in two.
    """
    head, sep, rest = header.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(sep + rest):
        value = match[2].strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match[1].lower()] = value
    return head.strip().lower(), params


def _schema_base(schema: str) -> str:
    return schema.partition(";")[0].strip()


def schema_key(schema: str) -> str | None:
    """The offer collection a schema URI names (its version aside), or None."""
    base = _schema_base(schema)
    for key, known in SCHEMAS.items():
        if _schema_base(known) == base:
            return key
    return None


def content_type(request: web.Request, expected: str) -> dict[str, str] | web.Response:
    """The parameters of the request's ``Content-Type`` when it is ``expected``, else a 400."""
    mtype, params = media_type(request.headers.get("Content-Type", ""))
    if mtype != expected:
        return problem(
            400,
            "Bad Request",
            "A valid content-type must be specified",
            expected=f'{expected}; version=1; schema="..."',
        )
    return params


def schema_mismatch(key: str, schema: str | None, iid: str) -> web.Response | None:
    """The 404 for a schema that is not the instance's own; None when it is (or is absent)."""
    if schema is None or schema_key(schema) == key:
        return None
    # xcore finds an instance within the schema asked for: another type is not there.
    return problem(
        404,
        "Not Found",
        f"instance {iid!r} is a {KINDS[key]}, not an instance of schema {schema!r}",
    )
