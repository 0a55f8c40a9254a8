"""JSON Pointer (RFC 6901) tokens: the one place a pointer is split, escaped or joined.

A pointer is ``""`` (the whole document) or ``"/"`` followed by tokens separated by
``"/"``; inside a token ``~1`` stands for ``/`` and ``~0`` for ``~`` (§3).
"""

from __future__ import annotations

from collections.abc import Iterable


def unescape(token: str) -> str:
    """A token as the member name it stands for. RFC 6901 §4: ``~1`` first, then ``~0``,
    so ``~01`` is the two characters ``~1``."""
    return token.replace("~1", "/").replace("~0", "~")


def escape(name: str) -> str:
    """A member name as a pointer token (RFC 6901 §3): ``~`` first, then ``/``."""
    return name.replace("~", "~0").replace("/", "~1")


def tokens(pointer: str) -> list[str]:
    """The unescaped tokens of ``pointer`` (``[]`` for the whole document)."""
    return [unescape(t) for t in pointer.split("/")[1:]]


def join(names: Iterable[str]) -> str:
    """The pointer to the location named by ``names`` (each escaped)."""
    return "".join("/" + escape(name) for name in names)


def head(pointer: str) -> str:
    """The first token of a non-empty pointer, unescaped: the top-level member it is in."""
    return unescape(pointer[1:].split("/", 1)[0])


def last(pointer: str) -> str:
    """The last token of a non-empty pointer, unescaped."""
    return unescape(pointer.rsplit("/", 1)[1])
