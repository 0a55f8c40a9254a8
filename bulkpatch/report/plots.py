"""The report's four plots, each drawn offline as inline SVG (needs matplotlib)."""

from __future__ import annotations

import html
import io
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from bulkpatch.report.figures import Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KIND_ORDER: Final = ("ok", "input", "http", "conflict", "test_failed", "exhausted", "aborted")

PLOT_TITLES: Final = {
    "throughput": "Throughput over time",
    "throttling": "429s and retries over time",
    "latency": "Times: ms, server_ms, wait_ms",
    "kinds": "Outcomes by kind",
}
_GREEN: Final = "#2e7d32"
_RED: Final = "#c62828"
_ORANGE: Final = "#ef6c00"
_BLUE: Final = "#1565c0"
# The outcome lines' three times, each drawn in its own colour.
_MEASURE_COLOURS: Final = {"ms": _BLUE, "server_ms": _GREEN, "wait_ms": _ORANGE}
_KIND_COLOURS: Final = {
    "ok": _GREEN,
    "input": "#6a1b9a",
    "http": _RED,
    "conflict": _ORANGE,
    "test_failed": "#f9a825",
    "exhausted": "#ad1457",
    "aborted": "#546e7a",
}


def _figure() -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # The object API with an Agg canvas: no pyplot, no GUI backend, no global state.
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _svg(fig: Figure, title: str) -> str:
    buffer = io.StringIO()
    # No metadata: matplotlib's names RDF namespaces by URL, and the page carries no URLs.
    fig.savefig(
        buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None}
    )
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline in HTML
    # The four plots share one document, so their ids share one namespace. Groups are
    # named by position ("axes_1", "xtick_3"), the same in every plot, and referenced by
    # nothing: drop those names. What is referenced (glyphs, markers, clip rectangles) is
    # named by a hash of what it defines, so an id two plots share means the same thing.
    text = re.sub(r'<g id="[^"]*"', "<g", text)
    # Inline SVG in HTML needs no namespace declarations (the parser supplies them).
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text, count=3)
    label = html.escape(title, quote=True)
    return text.replace("<svg", f'<svg role="img" aria-label="{label}"', 1).replace(
        ">", f"><title>{html.escape(title)}</title>", 1
    )


def _time_axis(ax: Any, report: Report, *tops: Any) -> None:
    assert report.start is not None
    began = datetime.fromtimestamp(report.start, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    ax.set_xlabel(f"seconds since {began}")
    ax.grid(True, alpha=0.3)
    top = max((float(t.max()) for t in tops if t.size), default=0.0)
    # Headroom above the highest point, so the legend in the corner hides no data.
    ax.set_ylim(0, top * 1.3 if top > 0 else 1.0)
    ax.set_xlim(0, float(report.series["t"][-1]) + report.bin_s)


def _steps(report: Report, values: Any) -> tuple[Any, Any]:
    """A bin's value held over its whole width: the last bin needs its right edge too."""
    import numpy as np

    t = report.series["t"]
    return np.append(t, t[-1] + report.bin_s), np.append(values, values[-1])


def _thousands(axis: Any) -> None:
    """1,000,000 rather than matplotlib's "1.0" with "1e6" in the corner."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v == int(v) else f"{v:,g}"))


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def per_second(report: Report) -> str:
    return "per second" if report.bin_s == 1 else f"per second, averaged over {report.bin_s} s"


def plot_throughput(report: Report) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    s = report.series
    if s:
        t, done = _steps(report, s["done"])
        ax.step(t, done, where="post", color=_BLUE, label="completed")
        ax.fill_between(t, done, step="post", color=_BLUE, alpha=0.15)
        if s["failed"].any():
            ax.step(*_steps(report, s["failed"]), where="post", color=_RED, label="failed")
        ax.set_ylabel("jobs / s")
        _thousands(ax.yaxis)
        ax.legend(loc="upper right", fontsize="small")
        _time_axis(ax, report, s["done"])
    else:
        _empty(ax, "no outcome line has a completion time (at)")
    return _svg(fig, PLOT_TITLES["throughput"])


def plot_throttling(report: Report) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    s = report.series
    if s:
        ax.step(*_steps(report, s["throttled"]), where="post", color=_ORANGE, label="429s met")
        ax.step(
            *_steps(report, s["retries"]),
            where="post",
            color=_BLUE,
            label="retries (attempts - 1)",
        )
        ax.set_ylabel("per second")
        _thousands(ax.yaxis)
        ax.legend(loc="upper right", fontsize="small")
        _time_axis(ax, report, s["throttled"], s["retries"])
    else:
        _empty(ax, "no outcome line has a completion time (at)")
    return _svg(fig, PLOT_TITLES["throttling"])


def plot_latency(report: Report) -> str:
    """The three times' histograms on shared log bins, each with its p50 dashed."""
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    # A log axis has no zero: a job that never waited is left out of the wait_ms curve.
    shown = {m: v[v > 0] for m, v in report.latencies.items() if v is not None}
    everything = np.concatenate(list(shown.values())) if shown else np.zeros(0)
    if everything.size:
        low, high = float(everything.min()), float(everything.max())
        if high <= low * 1.01:  # one value: a single visible bar around it
            low, high = low / 1.5, high * 1.5
        # Times span orders of magnitude (a 40 ms write, a 30 s backoff chain): log bins.
        edges = np.geomspace(low, high, 50).tolist()
        for name, colour in _MEASURE_COLOURS.items():
            values = shown.get(name)
            if values is None or not values.size:
                continue
            ax.hist(values, bins=edges, histtype="step", linewidth=1.4, color=colour, label=name)
            p50 = report.percentiles[name]["p50"]
            if p50 is not None and p50 > 0:
                ax.axvline(p50, color=colour, linestyle="--", label=f"{name} p50 {p50:,.1f} ms")
        _log_ms_axis(ax)
        ax.legend(loc="upper right", fontsize="small")
    else:
        _empty(ax, "no job sent a request")
    return _svg(fig, PLOT_TITLES["latency"])


def _log_ms_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    # Plain numbers (1, 10, 100) read faster than powers of ten.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
    ax.set_xlabel("ms, log scale")
    ax.set_ylabel("jobs")
    _thousands(ax.yaxis)
    ax.grid(True, alpha=0.3, which="both")


def plot_kinds(report: Report) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    kinds = [k for k in KIND_ORDER if k in report.kinds]
    kinds += sorted(k for k in report.kinds if k not in KIND_ORDER)
    if kinds:
        counts = [report.kinds[k] for k in kinds]
        y = list(range(len(kinds)))
        bars = ax.barh(y, counts, color=[_KIND_COLOURS.get(k, "#757575") for k in kinds])
        ax.set_yticks(y, kinds)
        ax.invert_yaxis()  # ok on top, in the README's order
        ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=3, fontsize="small")
        ax.set_xlabel("jobs (final outcome per line)")
        _thousands(ax.xaxis)
        ax.set_xlim(0, max(counts) * 1.15)
        ax.grid(True, axis="x", alpha=0.3)
    else:
        _empty(ax, "no outcomes")
    return _svg(fig, PLOT_TITLES["kinds"])
