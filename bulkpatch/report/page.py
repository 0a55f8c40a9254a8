"""The report page: headline figures, the four plots and the failures, in one HTML file.

The page itself is ``bulkpatch/templates/report.html`` (a ``string.Template``: styles
inline, no script, nothing fetched); this module fills in its parts, escaped.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from string import Template
from typing import Final

from bulkpatch.report.figures import FailureRow, Report
from bulkpatch.report.plots import (
    PLOT_TITLES,
    per_second,
    plot_kinds,
    plot_latency,
    plot_throttling,
    plot_throughput,
)

MAX_MESSAGE: Final = 300  # characters of a message shown in the table
esc = html.escape


@cache
def _template() -> Template:
    text = resources.files("bulkpatch").joinpath("templates/report.html").read_text("utf-8")
    return Template(text)


def render_html(report: Report, title: str = "bulkpatch report") -> str:
    """The page; needs matplotlib."""
    return _template().substitute(
        title=esc(title),
        notes=" · ".join(_notes(report)),
        cards=_cards(report),
        figures=_figures(report),
        failures=_failures(report.failures),
    )


def _cards(report: Report) -> str:
    """The headline figures, each ``data-figure`` named for the tests and for scraping."""
    rate = report.jobs_per_s
    cards = [
        ("jobs", f"{report.jobs:,}", ""),
        ("ok", f"{report.ok:,}", "good"),
        ("failed", f"{report.failed:,}", "bad" if report.failed else ""),
        ("wall span", _fmt_s(report.wall_s), ""),
        ("mean jobs/s", "n/a" if rate is None else f"{rate:,.1f}", ""),
        ("p50 latency", _fmt_ms(report.percentiles["p50"]), ""),
        ("p90 latency", _fmt_ms(report.percentiles["p90"]), ""),
        ("p99 latency", _fmt_ms(report.percentiles["p99"]), ""),
        ("retries", f"{report.retries:,}", ""),
        ("429s", f"{report.throttled:,}", ""),
    ]
    return "".join(
        f'<div class="card {cls}" data-figure="{esc(key)}"><div class="v">{esc(value)}</div>'
        f'<div class="k">{esc(key)}</div></div>'
        for key, value, cls in cards
    )


def _notes(report: Report) -> list[str]:
    """What was read, and what was left out of the figures."""
    notes = [
        f"{report.records:,} outcome lines read from {len(report.sources) or 1} "
        f"source{'s' if len(report.sources) > 1 else ''}"
        + (f" ({esc(', '.join(report.sources))})" if report.sources else ""),
    ]
    if report.superseded:
        notes.append(f"{report.superseded:,} superseded by a later line for the same input line")
    if report.skipped:
        notes.append(f"{report.skipped:,} lines skipped (not outcome lines)")
    if report.undated:
        notes.append(
            f"{report.undated:,} jobs without a completion time, left out of the time plots"
        )
    if report.start is not None:
        notes.append(
            "first completion "
            + datetime.fromtimestamp(report.start, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        )
    return notes


def _figures(report: Report) -> str:
    """The four plots, each with its title and caption."""
    import matplotlib

    with matplotlib.rc_context(
        {
            "svg.hashsalt": "bulkpatch",  # stable element ids: the same outcomes, the same page
            "svg.fonttype": "path",  # glyphs as paths: looks the same without the font installed
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        plots = {
            "throughput": plot_throughput(report),
            "throttling": plot_throttling(report),
            "latency": plot_latency(report),
            "kinds": plot_kinds(report),
        }
    captions = _captions(report)
    return "".join(
        f'<figure id="plot-{key}"><h2>{esc(PLOT_TITLES[key])}</h2>{svg}'
        f"<figcaption>{esc(captions[key])}</figcaption></figure>"
        for key, svg in plots.items()
    )


def _captions(report: Report) -> dict[str, str]:
    per = per_second(report)
    return {
        "throughput": f"Jobs completed {per}, from each outcome's completion time.",
        "throttling": f"429 answers met and retries (attempts - 1) of the jobs completing, {per}.",
        "latency": "Time from a job's first request to its outcome; lines at p50, p90, p99.",
        "kinds": "The final outcome of each input line: ok, or the error kind.",
    }


def _failures(rows: list[FailureRow]) -> str:
    """The failures table, or a line saying there were none."""
    if not rows:
        return "<p>No failures.</p>"
    body = "".join(_failure_row(row) for row in rows)
    return (
        '<table id="failures"><thead><tr><th>kind</th><th>status</th><th>reason</th>'
        f"<th>count</th><th>example lines</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _failure_row(row: FailureRow) -> str:
    reason = row.reason
    # The first raw message too, when folding changed it: the values say which entity.
    example = (
        f"<br><small>e.g. <code>{esc(_cut(reason.example))}</code></small>"
        if reason.example and reason.example != reason.message
        else ""
    )
    return (
        "<tr>"
        f"<td>{esc(reason.kind)}</td>"
        f'<td class="n">{"" if reason.status is None else reason.status}</td>'
        f"<td><code>{esc(_cut(reason.message))}</code>{example}</td>"
        f'<td class="n">{row.count:,}</td>'
        f"<td>{esc(', '.join(str(n) for n in row.lines))}</td>"
        "</tr>"
    )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:,.1f} s"
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(int(minutes), 60)
    return f"{hours}h {m:02d}m {s:04.1f}s" if hours else f"{m}m {s:04.1f}s"


def _fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} ms"
