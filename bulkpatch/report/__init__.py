"""``bulkpatch report``: one self-contained HTML page drawn from outcome lines.

Four plots (throughput, 429s and retries, latency, outcomes by kind), headline figures
and the failures grouped by reason. The page loads nothing: styles are inline, there is
no script, and the plots are inline SVG, so it opens offline and can be mailed around.

Plotting needs the optional extra ``bulkpatch[report]`` (matplotlib); this package
imports it only when a report is drawn, so the rest of the CLI never pays for it.

``outcomes`` reads outcome lines into each line's final figures, ``figures`` sums them
up (``summarize``), ``plots`` draws them, ``page`` lays out the page (``render_html``);
``write_report`` does all of it between files.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

import structlog

from bulkpatch.errors import ConfigError
from bulkpatch.report.figures import EXAMPLE_LINES, MAX_POINTS, FailureRow, Report, summarize
from bulkpatch.report.outcomes import DENSE_LINES, Finals, Reason, normalise_message, read_outcomes
from bulkpatch.report.page import render_html
from bulkpatch.report.plots import KIND_ORDER, PLOT_TITLES

INSTALL_HINT: Final = "pip install 'bulkpatch[report]'"


class ReportError(ConfigError):
    """No report can be drawn from these files; nothing was written (exit 2).

    ``event`` names what went wrong as a log event (``report.unreadable``, ...) and
    ``fields`` are that event's fields, ``error`` (the message) among them.
    """

    def __init__(self, event: str, **fields: Any) -> None:
        super().__init__(str(fields.get("error", event)))
        self.event = event
        self.fields = fields


def matplotlib_missing() -> bool:
    try:
        import matplotlib  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        return True
    return False


def write_report(
    sources: Sequence[str],
    out: Path,
    *,
    title: str = "bulkpatch report",
    stdin: BinaryIO | None = None,
) -> Report:
    """Read outcome files (``-`` is stdin), write the HTML page to ``out``; its figures.

    Raises ``ReportError`` when matplotlib is missing, an input cannot be read or holds
    no outcome line, or the page cannot be written.
    """
    if matplotlib_missing():
        raise ReportError(
            "report.unavailable", error=f"bulkpatch report needs matplotlib: {INSTALL_HINT}"
        )
    if list(sources).count("-") > 1:
        raise ReportError("report.usage", error="'-' (stdin) can be given only once")
    finals = _read_all(sources, stdin)
    report = summarize(finals, sources)
    page = render_html(report, title)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError("report.unwritable", path=str(out), error=exc.strerror or str(exc)) from exc
    structlog.get_logger().info(
        "report.written",
        path=str(out),
        jobs=report.jobs,
        ok=report.ok,
        failed=report.failed,
        superseded=report.superseded,
        bytes=len(page.encode()),
    )
    return report


def _read_all(sources: Sequence[str], stdin: BinaryIO | None) -> Finals:
    """Every source in order, a later line winning; ``ReportError`` when one cannot be
    read or none holds an outcome line."""
    finals = Finals()
    for name in sources:
        try:
            if name == "-":
                read_outcomes([stdin if stdin is not None else sys.stdin.buffer], finals)
            else:
                with open(name, "rb") as stream:
                    read_outcomes([stream], finals)
        except OSError as exc:
            raise ReportError("report.unreadable", path=name, error=exc.strerror or str(exc)) from exc
    if finals.skipped:
        structlog.get_logger().warning(
            "report.skipped_lines", lines=finals.skipped, why="not outcome lines"
        )
    if not finals.records:
        raise ReportError(
            "report.empty", error="no outcome lines in the input", sources=list(sources)
        )
    return finals


__all__ = [
    "DENSE_LINES",
    "EXAMPLE_LINES",
    "INSTALL_HINT",
    "KIND_ORDER",
    "MAX_POINTS",
    "PLOT_TITLES",
    "FailureRow",
    "Finals",
    "Reason",
    "Report",
    "ReportError",
    "normalise_message",
    "read_outcomes",
    "render_html",
    "summarize",
    "write_report",
]
