"""The report page: per run, headline figures, times, four plots and failures; one HTML file.

The page itself is ``bulkpatch/templates/report.html`` (a ``string.Template``: styles
inline, no script, nothing fetched); this module fills in its parts, escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from string import Template
from typing import Final

from bulkpatch.report.figures import MEASURES, PERCENTILES, FailureRow, Report, Totals
from bulkpatch.report.plots import (
    PLOT_TITLES,
    per_second,
    plot_kinds,
    plot_latency,
    plot_throttling,
    plot_throughput,
)
from bulkpatch.report.runs import FACT_KEYS

MAX_MESSAGE: Final = 300  # characters of a message shown in the table
# The README's words for the outcome lines' three times (Outcomes).
MEASURE_MEANINGS: Final = {
    "ms": "each job, from a worker taking it up to its outcome",
    "server_ms": "with the server: each request, sent to answer read, summed (reads included)",
    "wait_ms": "waiting on bulkpatch's own pace: the limiter, pauses, the entity's lane",
}
esc = html.escape


@cache
def _template() -> Template:
    text = resources.files("bulkpatch").joinpath("templates/report.html").read_text("utf-8")
    return Template(text)


def render_html(
    reports: Sequence[Report],
    title: str = "bulkpatch report",
    *,
    sources: Sequence[str] = (),
    skipped: int = 0,
) -> str:
    """The page of one or several runs (one ``Report`` each); needs matplotlib.

    One run fills the page; several are each a section under their totals, which add up
    to the sum of the sections. ``sources`` are the files read and ``skipped`` the lines
    in them that are not JSON objects, both for the notes under the title.
    """
    notes = _read_notes(reports, sources, skipped)
    if len(reports) == 1:
        only = reports[0]
        notes = [f"run <code>{esc(only.run)}</code>", *notes, *_run_notes(only)]
        body = _facts(only.facts) + _run_body(only, prefix="", heading="h2", headline=True)
    else:
        body = _totals(reports) + "".join(_section(n, r) for n, r in enumerate(reports, 1))
    return _template().substitute(title=esc(title), notes=" · ".join(notes), body=body)


def _run_body(report: Report, *, prefix: str, heading: str, headline: bool) -> str:
    """A run's cards, times, plots and failures; ids start with ``prefix``."""
    cards_id = ' id="headline"' if headline else ""
    return (
        f'<div class="cards"{cards_id}>{_cards(_run_cards(report))}</div>'
        f"{_latency(report)}"
        f'<div class="plots">{_figures(report, prefix)}</div>'
        f"<section><{heading}>Failures by reason</{heading}>"
        '<div class="sub">Grouped by error kind, status and message (quoted values and '
        "numbers folded), most frequent first.</div>"
        f"{_failures(report.failures, prefix)}</section>"
    )


def _section(number: int, report: Report) -> str:
    """One run of several: its id, files and facts, then its body."""
    return (
        f'<section class="run" id="run-{number}" data-run="{esc(report.run)}">'
        f"<h2>Run {number}: <code>{esc(report.run)}</code></h2>"
        f'<div class="sub">{" · ".join(_section_notes(report))}</div>'
        f"{_facts(report.facts)}"
        f"{_run_body(report, prefix=f'run-{number}-', heading='h3', headline=False)}"
        "</section>"
    )


def _totals(reports: Sequence[Report]) -> str:
    """The cards of all runs added up, and one row a run linking to its section."""
    total = Totals.of(reports)
    cards = [
        ("runs", f"{len(reports):,}", ""),
        ("jobs", f"{total.jobs:,}", ""),
        ("ok", f"{total.ok:,}", "good"),
        ("failed", f"{total.failed:,}", "bad" if total.failed else ""),
        ("retries", f"{total.retries:,}", ""),
        ("429s", f"{total.throttled:,}", ""),
    ]
    rows = "".join(_run_row(n, r) for n, r in enumerate(reports, 1))
    return (
        f'<div class="cards" id="headline">{_cards(cards)}</div>'
        '<table id="runs"><thead><tr><th>run</th><th>started</th><th>files</th>'
        f"<th>jobs</th><th>ok</th><th>failed</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _run_row(number: int, report: Report) -> str:
    """A run in the table of runs; ``data-failed`` holds its failures for scraping."""
    cls = ' class="bad"' if report.failed else ""
    return (
        f'<tr{cls}><td><a href="#run-{number}"><code>{esc(report.run)}</code></a></td>'
        f"<td>{esc(report.facts.get('started', ''))}</td>"
        f"<td>{esc(', '.join(report.sources))}</td>"
        f'<td class="n">{report.jobs:,}</td><td class="n">{report.ok:,}</td>'
        f'<td class="n" data-failed="{report.failed}">{report.failed:,}</td></tr>'
    )


def _run_cards(report: Report) -> list[tuple[str, str, str]]:
    rate = report.jobs_per_s
    return [
        ("jobs", f"{report.jobs:,}", ""),
        ("ok", f"{report.ok:,}", "good"),
        ("failed", f"{report.failed:,}", "bad" if report.failed else ""),
        ("wall span", _fmt_s(report.wall_s), ""),
        ("mean jobs/s", "n/a" if rate is None else f"{rate:,.1f}", ""),
        ("retries", f"{report.retries:,}", ""),
        ("429s", f"{report.throttled:,}", ""),
    ]


def _cards(cards: list[tuple[str, str, str]]) -> str:
    """Headline figures, each ``data-figure`` named for the tests and for scraping."""
    return "".join(
        f'<div class="card {cls}" data-figure="{esc(key)}"><div class="v">{esc(value)}</div>'
        f'<div class="k">{esc(key)}</div></div>'
        for key, value, cls in cards
    )


def _latency(report: Report) -> str:
    """The outcome lines' three times, by their names there: p50, p90, p99 of each."""
    rows = "".join(
        f"<tr><th><code>{name}</code></th>"
        + "".join(
            f'<td class="n" data-figure="{name} {p}">{_fmt_ms(report.percentiles[name][p])}</td>'
            for p in PERCENTILES
        )
        + f"<td>{esc(MEASURE_MEANINGS[name])}</td></tr>"
        for name in MEASURES
    )
    return (
        '<table class="latency"><thead><tr><th>time (ms)</th>'
        + "".join(f"<th>{p}</th>" for p in PERCENTILES)
        + f"<th>what it measures</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _facts(facts: dict[str, str]) -> str:
    """A run's sidecar facts, a row each, its settings together in the last row; nothing
    when it has no sidecar."""
    if not facts:
        return ""
    named = ("started", *FACT_KEYS)
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts.items() if k in named
    )
    settings = " ".join(
        f'<span class="setting">{esc(k)}={esc(v)}</span>'
        for k, v in facts.items()
        if k not in named
    )
    if settings:
        rows += f"<tr><th>settings</th><td>{settings}</td></tr>"
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def _read_notes(reports: Sequence[Report], sources: Sequence[str], skipped: int) -> list[str]:
    """What was read, and what was left out of the figures."""
    total = Totals.of(reports)
    notes = [
        f"{total.records:,} outcome lines read from {len(sources) or 1} "
        f"source{'s' if len(sources) > 1 else ''}"
        + (f" ({esc(', '.join(sources))})" if sources else ""),
    ]
    if len(reports) > 1:
        notes.append(f"{len(reports)} runs, each its own section below")
    if total.superseded:
        notes.append(f"{total.superseded:,} superseded by a later line for the same input line")
    skipped += sum(r.skipped for r in reports)
    if skipped:
        notes.append(f"{skipped:,} lines skipped (not outcome lines)")
    return notes


def _run_notes(report: Report) -> list[str]:
    """What of one run is not in its time plots, and when it began."""
    notes = []
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


def _section_notes(report: Report) -> list[str]:
    notes = [f"{report.records:,} outcome lines from {esc(', '.join(report.sources))}"]
    if report.superseded:
        notes.append(f"{report.superseded:,} superseded by a later line for the same input line")
    return notes + _run_notes(report)


def _figures(report: Report, prefix: str) -> str:
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
        f'<figure id="{prefix}plot-{key}"><h2>{esc(PLOT_TITLES[key])}</h2>{svg}'
        f"<figcaption>{esc(captions[key])}</figcaption></figure>"
        for key, svg in plots.items()
    )


def _captions(report: Report) -> dict[str, str]:
    per = per_second(report)
    return {
        "throughput": f"Jobs completed {per}, from each outcome's completion time.",
        "throttling": f"429 answers met and retries (attempts - 1) of the jobs completing, {per}.",
        "latency": "Each job's ms (taken up to outcome), server_ms (with the server) and "
        "wait_ms (waiting on bulkpatch's own pace), zeros left out; dashed lines at each p50.",
        "kinds": "The final outcome of each input line: ok, or the error kind.",
    }


def _failures(rows: list[FailureRow], prefix: str) -> str:
    """The failures table, or a line saying there were none."""
    if not rows:
        return "<p>No failures.</p>"
    body = "".join(_failure_row(row) for row in rows)
    return (
        f'<table class="failures" id="{prefix}failures"><thead><tr><th>kind</th><th>status</th><th>reason</th>'
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
