"""``bulkpatch report``: one self-contained HTML page drawn from outcome lines.

Four plots (throughput, 429s and retries, latency, outcomes by kind), headline figures
and the failures grouped by reason. The page loads nothing: styles are inline, there is
no script, and the plots are inline SVG, so it opens offline and can be mailed around.

Plotting needs the optional extra ``bulkpatch[report]`` (matplotlib); this module
imports it only when a report is drawn, so the rest of the CLI never pays for it.

Memory stays bounded on a million-line outcome file: an outcome file appended across
resumes may hold several lines for one input line and the last one wins, so each line's
final figures are kept, but in flat typed arrays indexed by line number (about 30 bytes
a line) rather than a dict of objects; failure reasons are interned and capped.
"""

from __future__ import annotations

import argparse
import html
import io
import math
import re
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import orjson
import structlog

if TYPE_CHECKING:
    import numpy.typing as npt
    from matplotlib.figure import Figure

EXIT_OK: Final = 0
EXIT_USAGE: Final = 2  # the values of cli.EXIT_*; not imported, so cli can import this module
INSTALL_HINT: Final = "pip install 'bulkpatch[report]'"

KIND_ORDER: Final = ("ok", "input", "http", "conflict", "exhausted", "aborted")
MAX_REASONS: Final = 1000  # distinct failure reasons kept; the rest share one row per kind
EXAMPLE_LINES: Final = 5
MAX_MESSAGE: Final = 300  # characters of a message shown in the table
# Lines above this go to a dict: a garbage line number must not allocate gigabytes.
DENSE_LINES: Final = 1 << 24
MAX_POINTS: Final = 1500  # time-series points drawn; longer runs are averaged over wider bins

_OK: Final = 1  # code for an ok line; 0 is "no outcome", 2 and up index failure reasons
_FIRST_REASON: Final = 2

# Messages name the entity, the line or the attempt count: fold quoted strings and
# numbers so that 10,000 "no entity with id '...'" are one reason. Numbers after
# "HTTP " are status codes, and the field an input error names is a reason of its own:
# both stay. A quote that follows a letter is an apostrophe ("can't"), not a value.
_QUOTED = re.compile(r"(?<!field )(?<!\w)'[^']*'(?!\w)|\"[^\"]*\"")
_NUMBER = re.compile(r"(?<!HTTP )(?<![\w.])\d+(?:\.\d+)?(?!\w|\.\d)")


def normalise_message(message: str) -> str:
    return _NUMBER.sub("N", _QUOTED.sub("'…'", message))


@dataclass(frozen=True, slots=True)
class Reason:
    kind: str
    status: int | None
    message: str  # normalised
    example: str  # the first raw message seen for it


class Finals:
    """Each input line's last outcome, as a few numbers: the only per-line state kept."""

    def __init__(self) -> None:
        self.code = array("i")  # 0 absent, 1 ok, >= 2: failure reason index + 2
        self.at = array("d")  # completion, epoch seconds; NaN when the line had no `at`
        self.ms = array("d")
        self.attempts = array("I")
        self.throttled = array("I")
        self.sparse: dict[int, tuple[int, float, float, int, int]] = {}
        self.reasons: list[Reason] = []
        self._reason_ids: dict[tuple[str, int | None, str], int] = {}
        self.records = 0  # outcome lines read
        self.skipped = 0  # lines that are not outcome lines (torn by a kill, foreign)
        self.superseded = 0  # outcome lines replaced by a later one for the same line
        self._last_second = ""
        self._last_epoch = 0.0

    # ------------------------------------------------------------------ reading

    def add_bytes(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.skipped += 1
            return
        if not isinstance(record, dict):
            self.skipped += 1
            return
        self.add(record)

    def add(self, record: dict[str, Any]) -> None:
        line = record.get("line")
        if type(line) is not int or line < 1:
            self.skipped += 1
            return
        self.records += 1
        code = _OK if record.get("ok") is True else self._reason(record.get("error"))
        ms = _number(record.get("ms"))
        attempts = _count(record.get("attempts"))
        throttled = _count(record.get("throttled"))
        at = self._epoch(record.get("at"))
        if line < DENSE_LINES:
            if line >= len(self.code):
                self._grow(line + 1)
            if self.code[line]:
                self.superseded += 1
            self.code[line] = code
            self.at[line] = at
            self.ms[line] = ms
            self.attempts[line] = attempts
            self.throttled[line] = throttled
        else:
            if line in self.sparse:
                self.superseded += 1
            self.sparse[line] = (code, at, ms, attempts, throttled)

    def _grow(self, size: int) -> None:
        target = max(size, 2 * len(self.code), 1024)
        extra = target - len(self.code)
        for arr in (self.code, self.at, self.ms, self.attempts, self.throttled):
            arr.frombytes(bytes(extra * arr.itemsize))

    def _reason(self, error: Any) -> int:
        if not isinstance(error, dict):
            error = {}
        kind = error.get("kind")
        kind = kind if isinstance(kind, str) else "unknown"
        status = error.get("status")
        status = status if type(status) is int else None
        raw = error.get("message")
        raw = raw if isinstance(raw, str) else ""
        message = normalise_message(raw)
        key = (kind, status, message)
        index = self._reason_ids.get(key)
        if index is None:
            if len(self.reasons) >= MAX_REASONS:
                key = (kind, None, "(other reasons: too many distinct messages to list)")
                index = self._reason_ids.get(key)
            if index is None:
                index = len(self.reasons)
                self._reason_ids[key] = index
                self.reasons.append(Reason(kind, key[1], key[2], raw))
        return index + _FIRST_REASON

    def _epoch(self, at: Any) -> float:
        if not isinstance(at, str) or len(at) < 19:
            return math.nan
        # The engine writes "YYYY-MM-DDTHH:MM:SS.mmmZ"; the date part changes once a
        # second, so it is parsed once a second and the milliseconds added.
        second = at[:19]
        rest = at[19:]
        if rest.endswith("Z") and (rest == "Z" or rest[0] == "."):
            if second != self._last_second:
                try:
                    self._last_epoch = (
                        datetime.fromisoformat(second).replace(tzinfo=UTC).timestamp()
                    )
                except ValueError:
                    return math.nan
                self._last_second = second
            try:
                fraction = float(rest[:-1]) if len(rest) > 2 else 0.0
            except ValueError:
                return math.nan
            return self._last_epoch + fraction
        try:  # any other ISO 8601 form; naive times are taken as UTC
            parsed = datetime.fromisoformat(at)
        except ValueError:
            return math.nan
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _count(value: Any) -> int:
    if type(value) is int:
        return min(max(value, 0), 0xFFFF_FFFF)
    return 0


def read_outcomes(streams: Iterable[BinaryIO], finals: Finals | None = None) -> Finals:
    """Stream outcome lines into ``Finals``, in order: a later line for the same input
    line (a resumed run appending to the same file, or a later file) wins."""
    finals = finals if finals is not None else Finals()
    for stream in streams:
        for raw in stream:
            finals.add_bytes(raw)
    return finals


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True, slots=True)
class FailureRow:
    reason: Reason
    count: int
    lines: tuple[int, ...]


@dataclass(slots=True)
class Report:
    jobs: int
    ok: int
    kinds: Counter[str]
    wall_s: float | None
    start: float | None  # epoch seconds of the first completion
    percentiles: dict[str, float | None]
    retries: int
    throttled: int
    undated: int  # lines without a usable `at`: counted, not in the time plots
    failures: list[FailureRow]
    records: int
    superseded: int
    skipped: int
    sources: list[str] = field(default_factory=list)
    # Plot data (numpy arrays), filled by ``summarize``.
    bin_s: int = 1
    series: dict[str, Any] = field(default_factory=dict)
    latencies: Any = None

    @property
    def failed(self) -> int:
        return self.jobs - self.ok

    @property
    def jobs_per_s(self) -> float | None:
        return self.jobs / self.wall_s if self.wall_s else None


def summarize(finals: Finals, sources: Sequence[str] = ()) -> Report:
    """The figures and plot data from each line's final outcome (needs numpy)."""
    import numpy as np

    def column(arr: array[Any], dtype: Any, extra: list[Any]) -> npt.NDArray[Any]:
        dense = np.frombuffer(arr, dtype=dtype) if len(arr) else np.zeros(0, dtype=dtype)
        return np.concatenate([dense, np.asarray(extra, dtype=dtype)]) if extra else dense

    sparse = sorted(finals.sparse.items())
    sparse_lines = [k for k, _ in sparse]
    code_all = column(finals.code, np.int32, [v[0] for _, v in sparse])
    present = code_all > 0
    # The usual case is every line from 1 to the last present: then the columns are
    # views of the arrays already held, not copies (a million lines: 30 MB less).
    where = np.flatnonzero(present)
    select: slice | npt.NDArray[np.bool_] = present
    if where.size and where[-1] - where[0] + 1 == where.size:
        select = slice(int(where[0]), int(where[-1]) + 1)
    del where
    code = code_all[select]
    at = column(finals.at, np.float64, [v[1] for _, v in sparse])[select]
    ms = column(finals.ms, np.float64, [v[2] for _, v in sparse])[select]
    attempts = column(finals.attempts, np.uint32, [v[3] for _, v in sparse])[select]
    throttled = column(finals.throttled, np.uint32, [v[4] for _, v in sparse])[select]

    jobs = int(code.size)
    ok = int(np.count_nonzero(code == _OK))
    reason_counts = np.bincount(code, minlength=len(finals.reasons) + _FIRST_REASON)
    kinds: Counter[str] = Counter()
    if ok:
        kinds["ok"] = ok
    rows: list[FailureRow] = []
    examples: dict[int, list[int]] = {}
    # Positions in the full column are line numbers (the dense part is indexed by line,
    # the sparse part follows it in line order), so the first few found are the lowest.
    dense_n = len(finals.code)
    for i in np.flatnonzero(code_all >= _FIRST_REASON):
        found = examples.setdefault(int(code_all[i]), [])
        if len(found) < EXAMPLE_LINES:
            found.append(int(i) if i < dense_n else sparse_lines[i - dense_n])
    for index, reason in enumerate(finals.reasons):
        count = int(reason_counts[index + _FIRST_REASON])
        if count:
            kinds[reason.kind] += count
            rows.append(FailureRow(reason, count, tuple(examples[index + _FIRST_REASON])))
    rows.sort(key=lambda r: (-r.count, r.lines[0] if r.lines else 0))

    spent = ms[(attempts > 0) & np.isfinite(ms)]  # as the run summary: jobs that sent a request
    percentiles: dict[str, float | None] = {
        f"p{p}": (
            round(float(np.percentile(spent, p, method="inverted_cdf")), 1) if spent.size else None
        )
        for p in (50, 90, 99)
    }

    # Retries per job: write requests past the first (an input error sent none).
    retried = np.maximum(attempts.astype(np.int64) - 1, 0)
    dated = np.isfinite(at)
    undated = int(jobs - np.count_nonzero(dated))
    # Every line usually has a time: then take views, not copies.
    pick: slice | npt.NDArray[np.bool_] = slice(None) if not undated else dated
    wall_s: float | None = None
    start: float | None = None
    series: dict[str, Any] = {}
    bin_s = 1
    if undated < jobs:
        at_d = at[pick]
        ms_d = ms[pick]
        began = float(np.nanmin(at_d - np.nan_to_num(ms_d, nan=0.0) / 1000.0))
        wall_s = float(at_d.max()) - began
        start = float(math.floor(at_d.min()))
        span = int(math.floor(at_d.max()) - start) + 1
        bin_s = max(1, math.ceil(span / MAX_POINTS))
        bins = ((at_d - start) // bin_s).astype(np.int64)
        n = int(bins.max()) + 1
        series = {
            "t": np.arange(n) * bin_s,
            "done": np.bincount(bins, minlength=n) / bin_s,
            "failed": np.bincount(bins[code[pick] != _OK], minlength=n) / bin_s,
            "throttled": np.bincount(bins, weights=throttled[pick], minlength=n) / bin_s,
            "retries": np.bincount(bins, weights=retried[pick], minlength=n) / bin_s,
        }
    return Report(
        jobs=jobs,
        ok=ok,
        kinds=kinds,
        wall_s=wall_s,
        start=start,
        percentiles=percentiles,
        retries=int(retried.sum()),
        throttled=int(throttled.sum()),
        undated=undated,
        failures=rows,
        records=finals.records,
        superseded=finals.superseded,
        skipped=finals.skipped,
        sources=list(sources),
        bin_s=bin_s,
        series=series,
        latencies=spent,
    )


# --------------------------------------------------------------------------- plots

PLOT_TITLES: Final = {
    "throughput": "Throughput over time",
    "throttling": "429s and retries over time",
    "latency": "Latency histogram",
    "kinds": "Outcomes by kind",
}
_GREEN: Final = "#2e7d32"
_RED: Final = "#c62828"
_ORANGE: Final = "#ef6c00"
_BLUE: Final = "#1565c0"
_KIND_COLOURS: Final = {
    "ok": _GREEN,
    "input": "#6a1b9a",
    "http": _RED,
    "conflict": _ORANGE,
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


def _per(report: Report) -> str:
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
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    fig = _figure()
    ax = fig.add_subplot()
    ms = report.latencies
    positive = ms[ms > 0] if ms is not None else np.zeros(0)
    if positive.size:
        low, high = float(positive.min()), float(positive.max())
        if high <= low * 1.01:  # one value: a single visible bar around it
            low, high = low / 1.5, high * 1.5
        # Latencies span orders of magnitude (a 40 ms write, a 30 s backoff chain): log bins.
        edges = np.geomspace(low, high, 50)
        ax.hist(positive, bins=edges.tolist(), color=_BLUE, alpha=0.8)
        ax.set_xscale("log")
        # Plain numbers (1, 10, 100) read faster than powers of ten.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
        ax.set_xlabel("job latency (ms, log scale), first request to outcome")
        ax.set_ylabel("jobs")
        _thousands(ax.yaxis)
        ax.grid(True, alpha=0.3, which="both")
        for name, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            value = report.percentiles[name]
            if value is not None and value > 0:
                ax.axvline(value, color=_RED, linestyle=style, label=f"{name} {value:,.1f} ms")
        ax.legend(loc="upper right", fontsize="small")
    else:
        _empty(ax, "no job sent a request")
    return _svg(fig, PLOT_TITLES["latency"])


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


# --------------------------------------------------------------------------- page

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:24px auto;max-width:1360px;padding:0 16px;color:#212121;background:#fafafa}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.1em;margin:0 0 6px}
.sub{color:#616161;font-size:.9em;margin-bottom:16px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(118px,1fr));gap:10px;
margin-bottom:18px}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px 14px}
.card .v{font-size:1.2em;font-weight:600;white-space:nowrap}.card .k{color:#616161;font-size:.8em}
.card.bad .v{color:#c62828}.card.good .v{color:#2e7d32}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:10px}
figure svg{width:100%;height:auto}figcaption{color:#616161;font-size:.8em}
table{border-collapse:collapse;width:100%;background:#fff;margin-top:8px;font-size:.9em}
th,td{border:1px solid #e0e0e0;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.95em;word-break:break-word}
section{margin-top:22px}
"""


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


def render_html(report: Report, title: str = "bulkpatch report") -> str:
    """The page; needs matplotlib."""
    import matplotlib

    esc = html.escape
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
    card_html = "".join(
        f'<div class="card {cls}" data-figure="{esc(key)}"><div class="v">{esc(value)}</div>'
        f'<div class="k">{esc(key)}</div></div>'
        for key, value, cls in cards
    )
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

    with matplotlib.rc_context(
        {
            "svg.hashsalt": "bulkpatch",  # stable element ids: the same outcomes, the same page
            "svg.fonttype": "path",  # glyphs as paths: looks the same without the font installed
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        captions = {
            "throughput": f"Jobs completed {_per(report)}, from each outcome's completion time.",
            "throttling": f"429 answers met and retries (attempts - 1) of the jobs completing, {_per(report)}.",
            "latency": "Time from a job's first request to its outcome; lines at p50, p90, p99.",
            "kinds": "The final outcome of each input line: ok, or the error kind.",
        }
        plots = {
            "throughput": plot_throughput(report),
            "throttling": plot_throttling(report),
            "latency": plot_latency(report),
            "kinds": plot_kinds(report),
        }
    figures = "".join(
        f'<figure id="plot-{key}"><h2>{esc(PLOT_TITLES[key])}</h2>{svg}'
        f"<figcaption>{esc(captions[key])}</figcaption></figure>"
        for key, svg in plots.items()
    )
    if report.failures:
        rows = "".join(
            "<tr>"
            f"<td>{esc(row.reason.kind)}</td>"
            f'<td class="n">{"" if row.reason.status is None else row.reason.status}</td>'
            f"<td><code>{esc(_cut(row.reason.message))}</code>"
            + (
                f"<br><small>e.g. <code>{esc(_cut(row.reason.example))}</code></small>"
                if row.reason.example and row.reason.example != row.reason.message
                else ""
            )
            + "</td>"
            f'<td class="n">{row.count:,}</td>'
            f"<td>{esc(', '.join(str(n) for n in row.lines))}</td>"
            "</tr>"
            for row in report.failures
        )
        failures = (
            '<table id="failures"><thead><tr><th>kind</th><th>status</th><th>reason</th>'
            f"<th>count</th><th>example lines</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    else:
        failures = "<p>No failures.</p>"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        f'<div class="sub">{" · ".join(notes)}</div>'
        f'<div class="cards" id="headline">{card_html}</div>'
        f'<div class="plots">{figures}</div>'
        f"<section><h2>Failures by reason</h2>"
        '<div class="sub">Grouped by error kind, status and message (quoted values and '
        "numbers folded), most frequent first.</div>"
        f"{failures}</section>"
        "</body></html>\n"
    )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


# --------------------------------------------------------------------------- command


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
) -> int:
    """Read outcome files (``-`` is stdin), write the HTML page; the exit code."""
    log = structlog.get_logger()
    if matplotlib_missing():
        log.error(
            "report.unavailable",
            error=f"bulkpatch report needs matplotlib: {INSTALL_HINT}",
        )
        return EXIT_USAGE
    if list(sources).count("-") > 1:
        log.error("report.usage", error="'-' (stdin) can be given only once")
        return EXIT_USAGE
    finals = Finals()
    for name in sources:
        try:
            if name == "-":
                read_outcomes([stdin if stdin is not None else sys.stdin.buffer], finals)
            else:
                with open(name, "rb") as stream:
                    read_outcomes([stream], finals)
        except OSError as exc:
            log.error("report.unreadable", path=name, error=exc.strerror or str(exc))
            return EXIT_USAGE
    if finals.skipped:
        log.warning("report.skipped_lines", lines=finals.skipped, why="not outcome lines")
    if not finals.records:
        log.error("report.empty", error="no outcome lines in the input", sources=list(sources))
        return EXIT_USAGE
    report = summarize(finals, sources)
    page = render_html(report, title)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        log.error("report.unwritable", path=str(out), error=exc.strerror or str(exc))
        return EXIT_USAGE
    log.info(
        "report.written",
        path=str(out),
        jobs=report.jobs,
        ok=report.ok,
        failed=report.failed,
        superseded=report.superseded,
        bytes=len(page.encode()),
    )
    return EXIT_OK


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "report",
        help="draw an HTML report from outcome lines",
        description="Read outcome lines (files or '-' for stdin; shards and resumed files "
        "merge, the last line for an input line wins) and write one self-contained HTML "
        f"page: throughput, 429s and retries, latency, outcomes by kind, failures by "
        f"reason. Needs the optional extra: {INSTALL_HINT}",
    )
    common(p)
    p.add_argument(
        "outcomes", nargs="+", metavar="OUTCOMES", help="outcome files ('-' reads stdin)"
    )
    p.add_argument("--html", type=Path, required=True, metavar="PATH", help="the page to write")
    p.add_argument("--title", default="bulkpatch report", help="the page's title")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    async def report() -> int:
        # CPU-bound and alone on the loop: nothing else to schedule meanwhile.
        return write_report(args.outcomes, args.html, title=args.title)

    return report()


__all__ = [
    "INSTALL_HINT",
    "Finals",
    "Report",
    "add_parser",
    "normalise_message",
    "read_outcomes",
    "render_html",
    "summarize",
    "write_report",
]
