"""The xcore ↔ DPS mapping of names, types and ids: pure data rules, shared on purpose.

``bulkpatch translate`` rewrites xcore job lines with it, and the simulator's xcore
endpoint reads xcore values with it, so both read an xcore value exactly alike (the
only code the simulator shares with the client side). The rules (API notes §5 against
§1): each key loses its ``xdm:`` or ``dc:`` prefix; a component's ``@type`` URI becomes
the DPS ``type`` named by its last segment; a string value starting ``xcore:`` is an id,
looked up in an id map. Whatever cannot be mapped with certainty raises ``Unmappable``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from bulkpatch import pointer
from bulkpatch.errors import BulkpatchError

INSTANCE: Final = "_instance"
# The only namespaces whose fields have a DPS twin of the same name. Any other
# (``repo:`` metadata, ``xcore:``, a custom tenant namespace) has no known counterpart.
PREFIXES: Final = frozenset({"xdm", "dc"})
XCORE_ID: Final = "xcore:"
# The four component types DPS knows, by the last segment of the xcore ``@type`` URI. The
# namespace is checked too: a look-alike URI from elsewhere is not an Offer Library type.
_COMPONENT_TYPE: Final = re.compile(
    r"https?://ns\.adobe\.com/experience/offer-management/content-component-"
    r"(text|html|imagelink|json)"
)
COMPONENTS: Final = "xdm:components"
# Fields whose keys are the user's own data, not schema: characteristics are free-form
# name/value pairs and a component's content is what the customer sees. Their keys are
# copied verbatim (a characteristic named "dc:x" stays "dc:x").
OPAQUE: Final = frozenset({"xdm:characteristics", "xdm:content"})
_INDEX: Final = re.compile(r"-|0|[1-9][0-9]*")


class Unmappable(BulkpatchError):
    """Raised deep in a value or pointer; the caller adds the operation and location."""




def _opaque(where: list[str]) -> bool:
    return any(token in OPAQUE for token in where)


def _in_component(where: list[str]) -> bool:
    """Whether ``where`` (the xcore tokens of an object) is one element of a components array."""
    return len(where) >= 2 and where[-2] == COMPONENTS and _INDEX.fullmatch(where[-1]) is not None


def _map_key(key: str, where: list[str]) -> str:
    """One xcore key (of the object at ``where``) as its DPS name."""
    if _opaque(where):
        return key
    if key == "@type":
        if _in_component(where):
            return "type"
        raise Unmappable("'@type' outside a component (an element of xdm:components) has no DPS field")
    if key.startswith("@"):
        raise Unmappable(f"{key!r} is a JSON-LD keyword with no DPS field")
    prefix, colon, name = key.partition(":")
    if not colon:
        raise Unmappable(f"{key!r} has no xdm: or dc: prefix, so its DPS name is unknown")
    if prefix not in PREFIXES:
        raise Unmappable(f"{key!r} is in namespace '{prefix}:', which has no DPS counterpart")
    if not name:
        raise Unmappable(f"{key!r} names no field")
    return name


def map_token(token: str, where: list[str]) -> str:
    # Array positions carry over as they are; everything else is a key.
    if not _opaque(where) and _INDEX.fullmatch(token):
        return token
    return _map_key(token, where)


def component_type(value: Any) -> str:
    """The DPS ``type`` of an xcore component ``@type`` URI."""
    match = _COMPONENT_TYPE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise Unmappable(
            f"component type {value!r} is not one of .../offer-management/"
            "content-component-text, -html, -imagelink or -json"
        )
    return match.group(1)


class IdMap:
    """Id look-ups for one job: the unmapped ones are gathered, not raised at once, so a
    refusal names every id the map lacks and one pass over a file lists them all."""

    def __init__(self, ids: Mapping[str, str]) -> None:
        self.ids = ids
        self.missing: list[str] = []  # "where: 'id'" for the message
        self.unmapped: list[str] = []  # each missing id once, in order

    def get(self, value: str, where: str) -> str:
        found = self.ids.get(value)
        if found is not None:
            return found
        self.missing.append(f"{where}: {value!r}")
        if value not in self.unmapped:
            self.unmapped.append(value)
        return value


def map_value(value: Any, where: list[str], ids: IdMap, at: str) -> Any:
    """An xcore value found at ``where`` (its xcore tokens below /_instance), as DPS's."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            try:
                name = _map_key(key, where)
            except Unmappable as exc:
                raise Unmappable(f"key {location([*where, key])} in the value: {exc}") from None
            if name in out:
                raise Unmappable(f"two keys of the object at {location(where)} map to {name!r}")
            out[name] = map_value(item, [*where, key], ids, at)
        return out
    if isinstance(value, list):
        return [map_value(item, [*where, str(n)], ids, at) for n, item in enumerate(value)]
    if where and where[-1] == "@type" and not _opaque(where):
        # _map_key only lets a component's @type through, whose value is the type URI.
        try:
            return component_type(value)
        except Unmappable as exc:
            raise Unmappable(f"{location(where)}: {exc}") from None
    if isinstance(value, str) and value.startswith(XCORE_ID):
        return ids.get(value, f"{at}, value at {location(where)}")
    return value


def location(where: list[str]) -> str:
    return "/" + INSTANCE + pointer.join(where)
