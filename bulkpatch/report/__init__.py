"""``bulkpatch report``: one self-contained HTML page drawn from outcome lines.

Per run: headline figures, the three times (``ms``, ``server_ms``, ``wait_ms``), four
plots (throughput, 429s and retries, latency, outcomes by kind) and the failures grouped
by reason; several runs are sections of one page under their totals. The page loads nothing: styles are inline, there is
no script, and the plots are inline SVG, so it opens offline and can be mailed around.

Plotting needs the optional extra ``bulkpatch[report]`` (matplotlib); this package
imports it only when a report is drawn, so the rest of the CLI never pays for it.

``runs`` groups outcome lines by run, ``outcomes`` reads a run's lines into each line's
final figures, ``figures`` sums them up (``summarize``), ``plots`` draws them, ``page`` lays out the page (``render_html``);
``write_report`` does all of it between files.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

import structlog

from bulkpatch.errors import ReportError
from bulkpatch.report.figures import (
    EXAMPLE_LINES,
    MAX_POINTS,
    MEASURES,
    FailureRow,
    Report,
    Totals,
    summarize,
)
from bulkpatch.report.outcomes import DENSE_LINES, Finals, Reason, normalise_message, read_outcomes
from bulkpatch.report.page import render_html
from bulkpatch.report.plots import KIND_ORDER, PLOT_TITLES
from bulkpatch.report.runs import MAX_RUNS, RunGroup, Runs, merged_facts

INSTALL_HINT: Final = "pip install 'bulkpatch[report]'"


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
) -> Totals:
    """Read outcome files (``-`` is stdin), write the HTML page to ``out``; its figures,
    one ``Report`` a run (``Totals.runs``, in the order the runs were first met).

    Raises ``ReportError`` when matplotlib is missing, an input cannot be read or holds
    no outcome line, or the page cannot be written.
    """
    if matplotlib_missing():
        raise ReportError(
            "report.unavailable", error=f"bulkpatch report needs matplotlib: {INSTALL_HINT}"
        )
    if list(sources).count("-") > 1:
        raise ReportError("report.usage", error="'-' (stdin) can be given only once")
    runs = _read_all(sources, stdin)
    reports = _summaries(runs)
    page = render_html(reports, title, sources=sources, skipped=runs.skipped)
    total = Totals.of(reports)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError("report.unwritable", path=str(out), error=exc.strerror or str(exc)) from exc
    structlog.get_logger().info(
        "report.written",
        path=str(out),
        runs=len(reports),
        jobs=total.jobs,
        ok=total.ok,
        failed=total.failed,
        superseded=total.superseded,
        bytes=len(page.encode()),
    )
    return total


def _read_all(sources: Sequence[str], stdin: BinaryIO | None) -> Runs:
    """Every source in order into its run's group; ``ReportError`` when one cannot be
    read or none holds an outcome line."""
    runs = Runs()
    for name in sources:
        try:
            if name == "-":
                runs.read(name, stdin if stdin is not None else sys.stdin.buffer)
            else:
                with open(name, "rb") as stream:
                    runs.read(name, stream)
        except OSError as exc:
            raise ReportError("report.unreadable", path=name, error=exc.strerror or str(exc)) from exc
        runs.read_sidecar(name)
    if runs.skipped_lines:
        structlog.get_logger().warning(
            "report.skipped_lines", lines=runs.skipped_lines, why="not outcome lines"
        )
    if not any(group.finals.records for group in runs.groups.values()):
        raise ReportError(
            "report.empty", error="no outcome lines in the input", sources=list(sources)
        )
    return runs


def _summaries(runs: Runs) -> list[Report]:
    """One report per run that has outcome lines, its facts attached."""
    reports = []
    for group in runs.groups.values():
        if not group.finals.records:
            continue  # only lines that are not outcomes: counted as skipped
        report = summarize(group.finals, group.files)
        report.run = group.label
        report.facts = merged_facts(group.sidecars)
        reports.append(report)
    return reports


__all__ = [
    "DENSE_LINES",
    "EXAMPLE_LINES",
    "INSTALL_HINT",
    "KIND_ORDER",
    "MAX_POINTS",
    "MAX_RUNS",
    "MEASURES",
    "PLOT_TITLES",
    "FailureRow",
    "Finals",
    "Reason",
    "Report",
    "ReportError",
    "RunGroup",
    "Runs",
    "Totals",
    "normalise_message",
    "read_outcomes",
    "render_html",
    "summarize",
    "write_report",
]
