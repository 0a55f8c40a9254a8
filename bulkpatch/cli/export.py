"""``bulkpatch export``: every entity of a kind as NDJSON, following the API's pages."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Coroutine
from typing import Any

import structlog

from bulkpatch import entities
from bulkpatch.cli.exits import EXIT_FAILED_ITEMS, EXIT_OK, exit_code
from bulkpatch.cli.logs import add_logging_options
from bulkpatch.cli.options import add_api_and_pace, add_output, add_progress_option, run_config
from bulkpatch.cli.parser import EXITS_RUN, epilog, takes_dash_value
from bulkpatch.cli.run import ENV_RUN
from bulkpatch.config import RunConfig
from bulkpatch.errors import ConfigError
from bulkpatch.export import ExportError, check_filter, export_entities
from bulkpatch.jobs import ENTITIES, OFFER_TYPES
from bulkpatch.preflight import check_outputs
from bulkpatch.runner import open_output, silence_stdout
from bulkpatch.sink import LineWriter


def add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="write every entity of a kind as NDJSON, following the API's pages",
        description="Stream every entity (offers by default) as one NDJSON line each, with "
        "its etag (and, for offers, its type), following the API's next links.",
        epilog=epilog(
            ENV_RUN,
            [
                ("0", "every entity written"),
                ("1", "a page failed: the entities before it are written"),
                *EXITS_RUN[2:],
            ],
            [
                "bulkpatch export -o offers.ndjson --filter status==approved --order -modified",
                "bulkpatch export --entity placements | jq -c '{id, name}'",
                "bulkpatch export --entity offer-items --schema-id \"$SCHEMA\" -o items.ndjson",
            ],
        ),
    )
    add_logging_options(p)
    g = p.add_argument_group("what")
    g.add_argument(
        "--entity",
        choices=ENTITIES,
        default=entities.DEFAULT_ENTITY,
        metavar="KIND",
        help="Decision Management: offers, placements, offer-collections, tags, offer-rules, "
        "offer-decisions; Experience Decisioning: offer-items (needs --schema-id), "
        "item-collections, selection-strategies, ranking-formulas, eligibility-rules, "
        "exd-placements (default offers)",
    )
    g.add_argument(
        "--type", choices=OFFER_TYPES, default="personalized", help="offers only (default personalized)"
    )
    g.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FIELD==VALUE",
        help="the list API's property filter (also !=, <=, >=, <, >, ~); several are ANDed "
        "(default: none, every entity)",
    )
    g.add_argument(
        "--order",
        metavar="FIELD",
        help="the list API's orderby: FIELD ascending, -FIELD descending (--order -modified; "
        "default: the API's order)",
    )
    takes_dash_value(p, "--order")
    g.add_argument("--page-size", type=int, default=100, help="entities per page (default 100)")
    add_output(g, "the entities")
    add_progress_option(g)
    add_api_and_pace(p)
    p.set_defaults(
        func=cmd_export, dry_run=False, skip_noop=False, force=False, guard="auto", shard=None
    )


def cmd_export(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """The exit status; ``ConfigError`` for bad usage."""
    if not 1 <= args.page_size <= 1000:
        raise ConfigError("--page-size must be from 1 to 1000")
    for text in args.filter:
        check_filter(text)
    check_outputs([("--output", args.output)])
    config = run_config(args)
    if config.dialect != "dps":
        raise ConfigError("export speaks the dps dialect only")
    return _export(config, args)


async def _export(config: RunConfig, args: argparse.Namespace) -> int:
    log = structlog.get_logger()
    out = LineWriter(sys.stdout.buffer) if args.output is None else open_output(args.output, append=False)
    bar = _Bar(args.progress if args.progress is not None else sys.stderr.isatty())
    try:
        await _write_all(config, args, out, bar)
    except ExportError as exc:
        with contextlib.suppress(BrokenPipeError):
            out.flush()  # what was exported is kept, for a look before the next try
        log.error("export.failed", error=str(exc), exported=bar.count)
        return exit_code(exc)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_FAILED_ITEMS
    finally:
        bar.close()
        out.close()
    log.info("export.done", entities=bar.count)
    return EXIT_OK


async def _write_all(
    config: RunConfig, args: argparse.Namespace, out: LineWriter, bar: _Bar
) -> None:
    totals: list[int] = []
    async for doc in export_entities(
        config,
        entity=args.entity,
        offer_type=args.type if entities.typed(args.entity) else None,
        filters=args.filter,
        order=args.order,
        page_size=args.page_size,
        totals=totals,
    ):
        out.write(doc)
        bar.update(totals)
    out.flush()


class _Bar:
    """Entities written, and a tqdm bar of them once the first arrives (when shown):
    the first page says how many there are."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown
        self.count = 0
        self._bar: Any = None

    def update(self, totals: list[int]) -> None:
        self.count += 1
        if self.shown and self._bar is None:
            from tqdm import tqdm

            total = totals[0] if totals else None
            self._bar = tqdm(total=total, unit=" entities", file=sys.stderr, leave=False)
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
