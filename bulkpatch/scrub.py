"""One scrubber for every text bulkpatch composes or copies from a server.

A server may echo a secret (IMS its client secret in an error description, the API the
``Authorization`` header in a 400 body), and a message built from such an answer would
carry it into outcome lines, the failure log, the logs and the report. Every secret of
the run (the static token, each IMS-issued token, the client secret) is registered here
once, and ``scrub`` replaces it wherever it appears: raw, JSON-escaped or
percent-encoded. The API key and the org are identifiers, not secrets.

Process-wide on purpose: the secrets of a run must be out of every text of that process,
whichever part composed it.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

import orjson

SHOWN: Final = "[secret]"
# Shorter values could be anything (and a token is never this short).
_MIN_SECRET: Final = 8

_needles: set[str] = set()
_pattern: re.Pattern[str] | None = None
_longest = 0  # the longest registered form, in characters


def register(*secrets: str | None) -> None:
    """Add the run's secrets (None and short values are ignored)."""
    global _pattern, _longest
    before = len(_needles)
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET:
            _needles.update(_forms(secret))
    if len(_needles) != before:
        # Longest first: a secret's escaped form is not cut short by its raw form.
        ordered = sorted(_needles, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(n) for n in ordered))
        _longest = len(ordered[0])


def _forms(secret: str) -> tuple[str, ...]:
    return (secret, orjson.dumps(secret).decode()[1:-1], quote(secret, safe=""))


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``[secret]``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(SHOWN, text)


def excerpt(text: str, limit: int, *, cut: bool = False) -> str:
    """At most the first ``limit`` characters of ``text``, scrubbed, with no part of a
    secret left where it is cut; ``cut``: ``text`` is itself the head of a longer text.

    Cutting first would leave the head of a secret that straddles the cut, which
    ``scrub`` no longer recognises (an IMS token is about a thousand characters: an
    error body that quotes an ``Authorization`` header is mostly token). So the scrub
    runs over the cut plus the longest secret, and when the text goes on past that,
    its last characters, which may hold a secret's head, are dropped.
    """
    window = text[: limit + _longest]
    shown = scrub(window)
    if cut or len(text) > len(window):
        shown = shown[: max(0, len(shown) - _longest)]
    return shown[:limit]
