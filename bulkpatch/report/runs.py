"""Outcome lines grouped by run: one run's lines merge across files, runs stay apart.

A run is known by the ``run`` each outcome line carries (``bulkpatch.runid``). The
shards of one run (one ``--run-id``) and its resumes (the id kept in the journal) are one
``RunGroup``, in which the last line read for an input line wins. Another run is another
group: its lines never replace this one's, so a failure stays on the page whatever
another run did with the same line number. Lines without a ``run`` (written before runs
had ids, or by another tool) are a run of their own, one per file.

Each file's sidecar ``<file>.run.json`` (``runid.sidecar_path``), when there is one,
gives the facts of the run its lines belong to: input, endpoint, dialect, org, sandbox
and settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from bulkpatch.errors import ReportError
from bulkpatch.report.outcomes import Finals
from bulkpatch.runid import read_sidecar, sidecar_path

# Runs one page shows. Each keeps its own per-line arrays and draws four plots, so a file
# whose every line names another run must be refused rather than exhaust memory.
MAX_RUNS: Final = 50
# A sidecar's facts shown, in this order; then its settings.
FACT_KEYS: Final = ("command", "input", "endpoint", "dialect", "org", "sandbox", "container")


@dataclass(slots=True)
class RunGroup:
    """One run's lines: ``run`` is their id, or None for the lines without one of the
    single file ``files[0]``; ``sidecars`` are the facts read beside its files."""

    run: str | None
    files: list[str]
    finals: Finals = field(default_factory=Finals)
    sidecars: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.run if self.run is not None else f"{self.files[0]} (lines without a run id)"


class Runs:
    """The groups of every source read, in the order their first line was met."""

    def __init__(self) -> None:
        self.groups: dict[str | tuple[str], RunGroup] = {}
        self.skipped = 0  # lines that are not JSON objects (torn by a kill, foreign)

    def read(self, name: str, stream: Iterable[bytes]) -> None:
        """Every line of ``stream`` (the source ``name``) into its run's group.

        ``ReportError`` (``report.too_many_runs``) naming the line that starts run
        ``MAX_RUNS + 1``.
        """
        for number, raw in enumerate(stream, 1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.skipped += 1
                continue
            if not isinstance(record, dict):
                self.skipped += 1
                continue
            self._group(record.get("run"), name, number).finals.add(record)

    def _group(self, run: Any, name: str, number: int) -> RunGroup:
        key: str | tuple[str] = run if isinstance(run, str) and run else (name,)
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= MAX_RUNS:
                raise ReportError(
                    "report.too_many_runs",
                    path=name,
                    line=number,
                    error=f"{name}, line {number}, field 'run': more than {MAX_RUNS} runs "
                    "in the input; report fewer files at once",
                )
            group = RunGroup(key if isinstance(key, str) else None, [name])
            self.groups[key] = group
        elif group.files[-1] != name and name not in group.files:
            group.files.append(name)
        return group

    def read_sidecar(self, name: str) -> None:
        """Attach ``name``'s sidecar, if it has one, to the run it names (else to the
        file's lines without a run id). Stdin (``-``) has none."""
        if name == "-":
            return
        facts = read_sidecar(sidecar_path(Path(name)))
        if facts is None:
            return
        run = facts.get("run")
        group = self.groups.get(run) if isinstance(run, str) else None
        if group is None or name not in group.files:
            group = self.groups.get((name,))
        if group is not None:
            group.sidecars.append(facts)

    @property
    def skipped_lines(self) -> int:
        return self.skipped + sum(g.finals.skipped for g in self.groups.values())


def merged_facts(sidecars: list[dict[str, Any]]) -> dict[str, str]:
    """What a run's sidecars say, as text: each fact's distinct values joined (shards
    differ in ``shard``); ``started`` is the earliest start."""
    if not sidecars:
        return {}
    merged: dict[str, list[str]] = {}

    def put(key: str, value: Any) -> None:
        if value is None or isinstance(value, dict | list):
            return
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        seen = merged.setdefault(key, [])
        if text not in seen:
            seen.append(text)

    starts = [s["started"] for s in sidecars if isinstance(s.get("started"), str)]
    if starts:
        put("started", min(starts))
    for sidecar in sidecars:
        for key in FACT_KEYS:
            put(key, sidecar.get(key))
    for sidecar in sidecars:
        settings = sidecar.get("settings")
        if isinstance(settings, dict):
            for key, value in settings.items():
                put(str(key), value)
    return {key: ", ".join(values) for key, values in merged.items()}

