"""What orjson leaves unchecked in a line it parses: names given twice, integers beyond 64 bits.

RFC 8259 §4: "The names within an object SHOULD be unique"; when they are not, "many
implementations report the last name/value pair only", orjson among them, and silently. A
job whose ``delete`` is given as false and then as true is not a job anyone can be sure of,
so a name given twice, at any depth, refuses the line.

RFC 8259 §6 leaves the range of numbers to implementations. orjson holds an integer in
[-2**63, 2**64 - 1]; beyond that it gives the nearest double without a word (and beyond
about 10**308 it calls the line not JSON). An integer the service would receive rounded is
refused instead, naming where it is; a decimal stays a decimal, sent as the nearest double.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Final

import orjson

from bulkpatch.errors import InputError

INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
# The longest integers in range, 2**64 - 1 and -2**63, are 20 characters (JSON writes no
# leading zeros): a longer one is out of range without converting it.
_INT_CHARS: Final = 20
_WHITESPACE: Final = b" \t\r\n"  # RFC 8259 §2
_SHOWN: Final = 24  # characters of an out-of-range integer an error shows
# orjson parses objects and arrays nested up to 1024 deep; the standard parser spends the
# interpreter's recursion limit on them, which a caller's frames may leave too little of.
_NESTING: Final = 1024
# The deepest a line may nest objects and arrays: orjson reads 1,024 levels but writes
# about 254, and a job nested past what can be written back (its request body, its
# failure-log line) would stop the whole run. No Offer Library entity comes near this.
MAX_DEPTH: Final = 128


class _Refused(Exception):
    """Raised by the checking parse at the first fault: where it is comes after."""


@dataclass(frozen=True, slots=True)
class _Twice:
    """Stands for an object that gives ``name`` twice."""

    name: str


@dataclass(frozen=True, slots=True)
class _Huge:
    """Stands for an integer outside orjson's range, as written."""

    text: str


def check(raw: bytes, obj: Any, line: int) -> None:
    """Refuse ``raw``, which orjson parsed as ``obj``, if an object in it gives a name twice
    (RFC 8259 §4) or an integer in it is outside the 64-bit range (RFC 8259 §6).

    Most lines are settled by comparing them with orjson's compact form of ``obj``, with
    every whitespace byte taken out of both. Taking whitespace out of valid JSON leaves
    its shape as it was: the same objects with the same number of members, the same
    arrays, the same number tokens (only the strings' contents can change; no escape is
    ever followed by a space). So if the two agree, the line has the shape of orjson's
    text, in which each object has as many members as the dict it was written from has
    keys, and every integer token is an int orjson held, in range (it writes a float
    with a '.' or an exponent). Then no name was given twice: a name given twice makes
    an object of the line one member longer than its dict. Any other line gets the
    standard parser's exact look.
    """
    # Brackets in strings count too, so this only ever asks for the exact measure.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(obj) > MAX_DEPTH:
        raise InputError(f"nests objects and arrays deeper than {MAX_DEPTH} levels", line=line)
    compact = orjson.dumps(obj)
    if compact == raw:
        return  # written compactly (jq -c, orjson, JSON.stringify)
    if compact.translate(None, _WHITESPACE) == raw.translate(None, _WHITESPACE):
        return  # spaced (Python's json.dumps), its strings ASCII or written as they are
    text = raw.decode()  # orjson has found it UTF-8
    try:
        _deep(_CHECKING, text)
        return
    except _Refused:
        pass
    except (ValueError, RecursionError) as exc:  # pragma: no cover - it reads all orjson does
        raise InputError(f"cannot be checked for names given twice: {exc}", line=line) from None
    error = _fault_error(_deep(_MARKING, text), line)
    assert error is not None, "the marking parse finds what the checking one did"
    raise error


def _depth(obj: Any) -> int:
    """How deep objects and arrays nest in ``obj`` (a scalar: 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def explain(raw: bytes, line: int) -> InputError | None:
    """For a line orjson refused: the error for an integer beyond even a double, if it
    holds one, rather than orjson's "number is infinity"."""
    try:
        tree = _HUGE_ONLY.decode(raw.decode())
    except (ValueError, RecursionError):
        return None
    return _fault_error(tree, line)


def _fault_error(tree: Any, line: int) -> InputError | None:
    """The input error for the first fault the marking parse left in ``tree``, if any."""
    found = _first_fault(tree)
    if found is None:
        return None
    where, fault = found
    if isinstance(fault, _Twice):
        return InputError("given twice in one object", line=line, field=field_name((*where, fault.name)))
    text = fault.text
    shown = text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"
    return InputError(f"integer {shown} is outside the 64-bit range", line=line, field=field_name(where) or None)


def _first_fault(tree: Any) -> tuple[tuple[str | int, ...], _Twice | _Huge] | None:
    """The first marker in ``tree``, in the line's order, with the steps to it."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(tree, ())]
    while stack:
        node, where = stack.pop()
        if isinstance(node, (_Twice, _Huge)):
            return where, node
        if type(node) is dict:
            stack.extend((value, (*where, key)) for key, value in reversed(node.items()))
        elif type(node) is list:
            stack.extend((node[i], (*where, i)) for i in range(len(node) - 1, -1, -1))
    return None


def field_name(where: tuple[str | int, ...]) -> str:
    """Steps into a line as a field name: ``patch[0].value``, ``ref["a b"]``."""
    out = ""
    for step in where:
        if isinstance(step, int):
            out += f"[{step}]"
        elif step.isidentifier():
            out += f".{step}" if out else step
        else:
            out += f"[{json.dumps(step, ensure_ascii=False)}]"
    return out


def _deep(decoder: json.JSONDecoder, text: str) -> Any:
    """``decoder.decode(text)``, with room for as deep a nesting as orjson takes."""
    try:
        return decoder.decode(text)
    except RecursionError:
        pass
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 2 * _NESTING)
    try:
        return decoder.decode(text)
    finally:
        sys.setrecursionlimit(limit)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Refused
    return obj


def _int64(text: str) -> int:
    if len(text) <= _INT_CHARS:
        value = int(text)
        if INT_MIN <= value <= INT_MAX:
            return value
    raise _Refused


def _mark_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Twice:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            return _Twice(name)
        obj[name] = value
    return obj


def _mark_huge(text: str) -> int | _Huge:
    if len(text) <= _INT_CHARS and INT_MIN <= (value := int(text)) <= INT_MAX:
        return value
    return _Huge(text)


# strict=False: control characters in strings are orjson's to refuse, not these parsers'.
_CHECKING: Final = json.JSONDecoder(object_pairs_hook=_unique, parse_int=_int64, strict=False)
_MARKING: Final = json.JSONDecoder(object_pairs_hook=_mark_twice, parse_int=_mark_huge, strict=False)
_HUGE_ONLY: Final = json.JSONDecoder(parse_int=_mark_huge, strict=False)
