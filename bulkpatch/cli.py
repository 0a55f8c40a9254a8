"""The command line: argparse → frozen config → the library. The only place logging is set up."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson
import structlog

from bulkpatch import entities, report, translate
from bulkpatch._version import __version__
from bulkpatch.api import DEFAULT_ENDPOINT
from bulkpatch.auth import DEFAULT_IMS_URL, Credentials
from bulkpatch.backup import Backup, rollback_jobs
from bulkpatch.engine import Engine, RunConfig
from bulkpatch.errors import ConfigError
from bulkpatch.export import ExportError, export_entities
from bulkpatch.jobs import ENTITIES, OFFER_TYPES, BadLine, Job
from bulkpatch.journal import Journal
from bulkpatch.progress import Progress, count_lines
from bulkpatch.settings import CONFIG_FILE, resolve
from bulkpatch.settings import show as show_settings
from bulkpatch.sink import LineWriter, Recorder
from bulkpatch.source import read_jobs
from bulkpatch.summary import PlanTally
from bulkpatch.summary import render as render_summary

EXIT_OK: Final = 0
EXIT_FAILED_ITEMS: Final = 1
EXIT_USAGE: Final = 2
EXIT_SYSTEMIC: Final = 3
# After SIGINT/SIGTERM, jobs in flight get this long to finish before they are aborted.
GRACE_S: Final = 10.0
FLUSH_S: Final = 0.1


def configure_logging(verbosity: int, fmt: str) -> None:
    """Logs are structlog events on stderr; stdout is kept for data."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    if verbosity < -1:
        level = logging.ERROR
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more logs (-vv: debug)")
    group.add_argument("-q", "--quiet", action="count", default=0, help="fewer logs")
    group.add_argument(
        "--log-format",
        choices=("console", "json"),
        default="console",
        help="log rendering on stderr",
    )


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability between 0 and 1")
    return value


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sim",
        help="serve the Offer Library simulator",
        description="Serve a local simulator of the Offer Library API (DPS) with IMS and faults. "
        "Prints one JSON 'ready' line on stdout when it serves.",
    )
    _common(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default 8765)")
    g.add_argument("--offers", type=int, default=0, help="seed N realistic personalized offers")
    g.add_argument("--state", type=Path, help="load entities from FILE at start, save them at exit")
    g.add_argument(
        "--xcore-containers",
        type=int,
        default=1,
        metavar="N",
        help="containers the legacy xcore home lists; offers live in the first (default 1)",
    )
    g = p.add_argument_group("undocumented behaviours of the real API")
    g.add_argument("--create-status", type=int, choices=(200, 201), default=201)
    g.add_argument("--conflict-status", type=int, choices=(409, 412), default=409)
    g.add_argument("--test-failed-status", type=int, choices=(400, 409, 422), default=409)
    g.add_argument("--ignore-if-match", action="store_true", help="no optimistic locking at all")
    g = p.add_argument_group("credentials")
    g.add_argument("--api-key", help="require exactly this x-api-key (default: any)")
    g.add_argument("--org-id", help="require exactly this x-gw-ims-org-id (default: any)")
    g.add_argument("--access-token", help="the static token accepted (default: random, printed)")
    g.add_argument("--client-id", help="IMS client id (default: random, printed)")
    g.add_argument("--client-secret", help="IMS client secret (default: random, printed)")
    g.add_argument("--token-ttl", type=float, default=86399.0, help="IMS expires_in seconds")
    g = p.add_argument_group("throttling")
    g.add_argument("--rate-limit", type=float, help="requests/second over all API requests")
    g.add_argument("--burst", type=int, default=10, help="token bucket size (default 10)")
    g.add_argument(
        "--rate-schedule",
        help="rate over time: SECONDS:RATE,... from the first write (0:300,20:150)",
    )
    g.add_argument(
        "--retry-after",
        choices=("seconds", "date", "none"),
        default="seconds",
        help="Retry-After form on throttled answers",
    )
    g = p.add_argument_group("faults (probabilities per write)")
    for name, help_text in (
        ("500", "answer 500"),
        ("502", "answer 502"),
        ("503", "answer 503"),
        ("429", "answer 429 (Retry-After per --fault-retry-after)"),
        ("late", "apply, then answer after --late-ms"),
        ("zombie", "apply after --zombie-ms, long after the client gave up"),
        ("drop-before", "drop the connection without applying"),
        ("drop-after", "apply, then drop the connection"),
        ("token-expiry", "expire the caller's token early"),
        ("concurrent", "another writer changes the entity just before the PATCH"),
    ):
        g.add_argument(
            f"--fault-{name}", type=_probability, default=0.0, metavar="P", help=help_text
        )
    g.add_argument("--fault-seed", type=int, help="seed for reproducible faults")
    g.add_argument(
        "--fault-retry-after", choices=("seconds", "date", "none", "mixed"), default="mixed"
    )
    g.add_argument("--fault-retry-after-s", type=int, default=1, help="its value (default 1)")
    g.add_argument("--late-ms", type=float, default=40_000.0)
    g.add_argument("--zombie-ms", type=float, default=40_000.0)
    g.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="each API answer leaves this long after its request arrived",
    )
    g.add_argument(
        "--latency-jitter-ms",
        type=float,
        default=0.0,
        help="plus 0 to this much more, waited before the request is handled",
    )
    p.set_defaults(func=_cmd_sim)


def _cmd_sim(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from bulkpatch.simulator import FaultRates, SimConfig, parse_rate_schedule, serve

    faults = FaultRates(
        error_500=args.fault_500,
        error_502=args.fault_502,
        error_503=args.fault_503,
        throttle_429=args.fault_429,
        late_answer=args.fault_late,
        zombie_write=args.fault_zombie,
        drop_before=args.fault_drop_before,
        drop_after=args.fault_drop_after,
        token_expiry=args.fault_token_expiry,
        concurrent_writer=args.fault_concurrent,
    )
    secrets_given = {
        k: v
        for k, v in (
            ("access_token", args.access_token),
            ("client_id", args.client_id),
            ("client_secret", args.client_secret),
        )
        if v
    }
    config = SimConfig(
        create_status=args.create_status,
        conflict_status=args.conflict_status,
        test_failed_status=args.test_failed_status,
        ignore_if_match=args.ignore_if_match,
        api_key=args.api_key,
        org_id=args.org_id,
        token_ttl_s=args.token_ttl,
        rate_limit=args.rate_limit,
        burst=args.burst,
        rate_schedule=parse_rate_schedule(args.rate_schedule) if args.rate_schedule else (),
        retry_after=args.retry_after,
        faults=faults,
        fault_seed=args.fault_seed,
        fault_retry_after=args.fault_retry_after,
        fault_retry_after_s=args.fault_retry_after_s,
        late_ms=args.late_ms,
        zombie_ms=args.zombie_ms,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        offers=args.offers,
        state_path=args.state,
        xcore_containers=args.xcore_containers,
        **secrets_given,
    )
    return serve(config, host=args.host, port=args.port)


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="apply NDJSON patch jobs",
        description="Apply one JSON Patch job per NDJSON line; write one outcome line per job.",
    )
    _common(p)
    p.add_argument("input", nargs="?", default="-", help="NDJSON job file; '-' or nothing: stdin")
    _api_and_pace(p, "run")
    g = p.add_argument_group("run")
    g.add_argument(
        "--guard",
        choices=("auto", "always"),
        default="auto",
        help="auto: If-Match whenever the etag is known; always: read first so every write has one",
    )
    g.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="run only slice K (0..N-1) of N, split by a stable hash of the entity",
    )
    g.add_argument(
        "--skip-noop",
        action="store_true",
        help="read each entity first and send no write that would leave it unchanged",
    )
    g.add_argument(
        "--backup",
        type=Path,
        help="record each entity before its first write (for bulkpatch rollback PATH)",
    )
    g.add_argument("--dry-run", action="store_true", help="validate every line, send nothing")
    g = p.add_argument_group("create and delete jobs")
    g.add_argument("--allow-delete", action="store_true", help="run delete jobs (else they fail)")
    g.add_argument(
        "--create-key",
        default="name",
        metavar="FIELD",
        help="the field that finds a create's entity after an unknown outcome (default name)",
    )
    g.add_argument(
        "--adopt-existing",
        action="store_true",
        help="a create whose key exists already reports that entity instead of a conflict",
    )
    g.add_argument("--id-map", type=Path, help='append {"key", "id"} of each created entity')
    _outputs(p, resumable=True)
    p.set_defaults(func=_cmd_run, force=False)


def _add_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="show what a job file would change, sending no write",
        description="Read each entity the jobs target, apply the jobs locally in input order, "
        "and say per job: change (old -> new), noop, or fail. Sends no write.",
    )
    _common(p)
    p.add_argument("input", nargs="?", default="-", help="NDJSON job file; '-' or nothing: stdin")
    _api_and_pace(p, "plan")
    g = p.add_argument_group("output")
    g.add_argument("--receipts", type=Path, help="write the plan lines to PATH instead of stdout")
    _progress_option(g)
    p.set_defaults(
        func=_cmd_plan,
        failures=None,
        resume=False,
        durable=False,
        summary=None,
        shard=None,
        guard="auto",
        dry_run=False,
        skip_noop=False,
        backup=None,
        force=False,
    )


def _add_rollback(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rollback",
        help="undo a run recorded with --backup",
        description="Put every entity of a backup back as the run found it, on the fields "
        "the run changed, guarded by If-Match; an entity changed since the run left it "
        "is reported as a conflict unless --force. A rollback is a run like any other.",
    )
    _common(p)
    p.add_argument("input", help="the backup file a run wrote with --backup")
    _api_and_pace(p, "rollback")
    p.add_argument(
        "--force",
        action="store_true",
        help="restore entities changed since the run left them as well",
    )
    _outputs(p, resumable=True)
    p.add_argument("--id-map", type=Path, help='append {"key", "id"} of each entity created again')
    p.set_defaults(
        func=_cmd_rollback,
        shard=None,
        guard="auto",
        dry_run=False,
        skip_noop=False,
        backup=None,
        allow_delete=True,
        create_key="name",
        adopt_existing=False,
    )


def _progress_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="a live progress line on stderr (default: only when stderr is a terminal)",
    )


def _outputs(p: argparse.ArgumentParser, *, resumable: bool) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--receipts", type=Path, help="write outcomes to PATH instead of stdout")
    g.add_argument("--failures", type=Path, help="write failed jobs to PATH, re-runnable as input")
    g.add_argument("--summary", type=Path, help="also write the end-of-run summary as JSON")
    _progress_option(g)
    if resumable:
        g.add_argument(
            "--resume",
            action="store_true",
            help="continue the run that wrote --receipts: lines with a final outcome are "
            "not sent again; those in flight are settled (INPUT must be a file)",
        )
        g.add_argument(
            "--durable",
            action="store_true",
            help="fsync the journal, receipts and backup before relying on them "
            "(survives a power loss)",
        )


def _profile_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("profile")
    g.add_argument(
        "--profile", help="apply this profile of bulkpatch.toml (env BULKPATCH_PROFILE)"
    )
    g.add_argument(
        "--config", type=Path, help=f"the profiles file (default ./{CONFIG_FILE})"
    )


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="write every entity of a kind as NDJSON, following the API's pages",
        description="Stream every entity (offers by default) as one NDJSON line each, with "
        "its etag (and, for offers, its type), following the API's next links.",
    )
    _common(p)
    g = p.add_argument_group("what")
    g.add_argument("--entity", choices=ENTITIES, default=entities.DEFAULT_ENTITY, help="(default offers)")
    g.add_argument(
        "--type", choices=OFFER_TYPES, default="personalized", help="offers only (default personalized)"
    )
    g.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FIELD==VALUE",
        help="the list API's property filter (also !=, <=, >=, <, >, ~); several are ANDed",
    )
    g.add_argument("--order", help="the list API's orderby, such as -modified")
    g.add_argument("--page-size", type=int, default=100, help="entities per page (default 100)")
    g.add_argument("--output", type=Path, help="write to PATH instead of stdout")
    _progress_option(g)
    _api_and_pace(p, "export")
    p.set_defaults(
        func=_cmd_export, dry_run=False, skip_noop=False, force=False, guard="auto", shard=None
    )


def _cmd_export(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    if not 1 <= args.page_size <= 1000:
        raise ConfigError("--page-size must be from 1 to 1000")
    config = _run_config(args)
    if config.dialect != "dps":
        raise ConfigError("export speaks the dps dialect only")
    return _export(config, args)


async def _export(config: RunConfig, args: argparse.Namespace) -> int:
    log = structlog.get_logger()
    out = LineWriter(sys.stdout.buffer) if args.output is None else _open_output(args.output, append=False)
    totals: list[int] = []
    count = 0
    bar: Any = None
    shown = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
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
            count += 1
            if shown and bar is None:
                from tqdm import tqdm

                bar = tqdm(total=totals[0] if totals else None, unit=" entities", file=sys.stderr, leave=False)
            if bar is not None:
                bar.update(1)
        out.flush()
    except ExportError as exc:
        with contextlib.suppress(BrokenPipeError):
            out.flush()  # what was exported is kept, for a look before the next try
        log.error("export.failed", error=str(exc), exported=count)
        return EXIT_SYSTEMIC if exc.systemic else EXIT_FAILED_ITEMS
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_FAILED_ITEMS
    finally:
        if bar is not None:
            bar.close()
        out.close()
    log.info("export.done", entities=count)
    return EXIT_OK


def _add_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config",
        help="show the settings a run would use, and where each comes from",
        description="Print the effective settings (flags, then the environment, then the "
        "named profile, then the defaults) and where each came from; secrets masked.",
    )
    _common(p)
    p.add_argument("action", choices=("show",))
    _profile_options(p)
    p.set_defaults(func=_cmd_config)


def _cmd_config(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    settings = resolve({}, os.environ, profile=args.profile, config=args.config)

    async def show() -> int:
        print(show_settings(settings))
        return EXIT_OK

    return show()


def _api_and_pace(p: argparse.ArgumentParser, command: str) -> None:
    _profile_options(p)
    g = p.add_argument_group("API")
    g.add_argument(
        "--endpoint",
        help=f"API base URL (env BULKPATCH_ENDPOINT; default {DEFAULT_ENDPOINT}, "
        "or .../data/core/xcore with --dialect xcore)",
    )
    g.add_argument(
        "--dialect",
        choices=("dps", "xcore"),
        help="dps (default) or the legacy xcore repository API",
    )
    g.add_argument(
        "--container-id",
        help="xcore: the container holding the offers (default: discover the decisioning one)",
    )
    g.add_argument("--api-key", help="x-api-key (env ADOBE_API_KEY; default: the client id)")
    g.add_argument("--org-id", help="x-gw-ims-org-id (env ADOBE_ORG_ID)")
    g.add_argument("--sandbox", help="x-sandbox-name (env ADOBE_SANDBOX_NAME)")
    g.add_argument(
        "--ims-url", help=f"IMS token URL (env ADOBE_IMS_URL; default {DEFAULT_IMS_URL})"
    )
    g.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    g.add_argument("--ca-bundle", type=Path, help="CA certificates to verify TLS with")
    g = p.add_argument_group("pace and retries")
    g.add_argument(
        "--rate",
        type=_rate,
        help="requests/second, all together; 0 = no limit; 'auto' = find it from the "
        "server's 429s (default 20)",
    )
    g.add_argument(
        "--max-rate",
        type=float,
        default=1000.0,
        help="with --rate auto: never above this (default 1000)",
    )
    g.add_argument(
        "--concurrency", type=int, help="requests in flight at most (default 16)"
    )
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per attempt (default 30)")
    g.add_argument(
        "--max-attempts",
        type=int,
        default=6,
        help="attempts per job on transient errors (default 6)",
    )
    g.add_argument(
        "--max-conflicts", type=int, default=5, help="etag-conflict rebases per job (default 5)"
    )
    g.add_argument("--max-failures", type=int, help="stop early once N jobs have failed (exit 3)")


def _run_config(args: argparse.Namespace) -> RunConfig:
    settings = resolve(vars(args), os.environ, profile=args.profile, config=args.config)
    value = {key: setting.value for key, setting in settings.items()}
    token, client_id, client_secret = (
        value["access_token"],
        value["client_id"],
        value["client_secret"],
    )
    credentials: Credentials | None = None
    if token or (client_id and client_secret):
        credentials = Credentials(
            access_token=token,
            client_id=client_id,
            client_secret=client_secret,
            scopes=value["scopes"],
            ims_url=value["ims_url"],
        )
    try:
        rate = _rate(str(value["rate"]))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"rate ({settings['rate'].source}): {exc}") from None
    try:
        concurrency = int(value["concurrency"])
    except ValueError:
        raise ConfigError(f"concurrency must be a whole number, got {value['concurrency']!r}") from None
    if args.insecure:
        structlog.get_logger().warning(
            "tls.unverified", detail="--insecure: TLS certificates are not checked"
        )
    return RunConfig(
        credentials=credentials,
        endpoint=value["endpoint"],
        api_key=value["api_key"] or client_id,
        org_id=value["org_id"] or "",
        sandbox=value["sandbox"] or "",
        rate=0.0 if rate == "auto" else float(rate),
        auto_rate=rate == "auto",
        max_rate=args.max_rate,
        shard=args.shard,
        concurrency=concurrency,
        timeout=args.timeout,
        max_attempts=args.max_attempts,
        max_conflicts=args.max_conflicts,
        max_failures=args.max_failures,
        guard=args.guard,
        dry_run=args.dry_run,
        plan=args.func is _cmd_plan,
        skip_noop=args.skip_noop,
        force=args.force,
        dialect=value["dialect"],
        container_id=value["container_id"],
        allow_delete=getattr(args, "allow_delete", False),
        create_key=getattr(args, "create_key", "name"),
        adopt_existing=getattr(args, "adopt_existing", False),
        verify_tls=not args.insecure,
        ca_bundle=args.ca_bundle,
    )


def _rate(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _shard(text: str) -> tuple[int, int]:
    index, slash, count = text.partition("/")
    try:
        if slash and 0 <= int(index) < int(count):
            return int(index), int(count)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")


def _open_input(name: str) -> BinaryIO:
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}") from None


def _open_output(path: Path, *, append: bool) -> LineWriter:
    try:
        return LineWriter(path.open("ab" if append else "wb"), close=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def journal_path(receipts: Path) -> Path:
    return receipts.with_name(receipts.name + ".journal")


def _cmd_run(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    config = _run_config(args)
    if args.receipts is not None and args.failures is not None and args.receipts == args.failures:
        raise ConfigError("--receipts and --failures must be different files")
    if args.resume and args.receipts is None:
        raise ConfigError("--resume needs --receipts (the file the earlier run wrote)")
    if args.resume and args.input == "-":
        raise ConfigError(
            "--resume needs INPUT as a file, not stdin: it reads it first, to check it "
            "against the run being resumed"
        )
    return _run(config, args)


def _cmd_plan(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    return _run(_run_config(args), args)


def _cmd_rollback(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    return _cmd_run(args)


async def _run(config: RunConfig, args: argparse.Namespace) -> int:
    log = structlog.get_logger()
    async with contextlib.AsyncExitStack() as stack:
        journal: Journal | None = None
        backup: Backup | None = None
        if args.backup is not None:
            if args.receipts is not None and args.backup.resolve() == args.receipts.resolve():
                raise ConfigError("--backup and --receipts must be different files")
            backup = Backup(args.backup, durable=args.durable)
            stack.callback(backup.close)
        if args.receipts is not None and not config.dry_run and not config.plan:
            journal = Journal(journal_path(args.receipts), durable=args.durable, resume=args.resume)
            stack.push_async_callback(journal.close)
            if args.resume:
                reconciled = await journal.reconcile(args.receipts)
                log.info("run.resume", receipts=str(args.receipts), reported_before=reconciled)
        engine = Engine(config, journal=journal, backup=backup)
        id_map_path = getattr(args, "id_map", None)
        if id_map_path is not None:
            id_map = _open_output(id_map_path, append=True)
            stack.callback(id_map.close)
            def record_id(key: Any, new_id: str) -> None:
                # Flushed at once: a resumed run does not create these again, so an id
                # lost in a buffer would be lost for good.
                id_map.write({"key": key, "id": new_id})
                id_map.flush()

            engine.on_created = record_id
        return await _run_with(engine, journal, args)


STDOUT_GONE: Final = "stdout closed"


def _stdout_gone(engine: Engine) -> None:
    """The reader of stdout went away (`| head`): stop quietly, as Unix tools do.

    Jobs in flight still finish (their outcomes reach the journal, for --resume); what
    is written from here on, the interpreter's last flush included, goes nowhere instead
    of raising again.
    """
    engine.stop(STDOUT_GONE)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


async def _flush_every(
    recorder: Recorder, engine: Engine, seconds: float, progress: Progress | None
) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            recorder.flush()
        except BrokenPipeError:
            _stdout_gone(engine)
        if progress is not None:
            progress.update(engine.stats)


def _progress(args: argparse.Namespace) -> Progress | None:
    """On a terminal (or with --progress), unless --no-progress or -q."""
    shown = args.progress
    if shown is None:
        shown = sys.stderr.isatty() and args.verbose - args.quiet >= 0
    if not shown:
        return None
    total = None
    if args.input != "-" and args.shard is None:
        total = count_lines(Path(args.input))
    return Progress(total, sys.stderr)


async def _check_resumed_input(
    journal: Journal, args: argparse.Namespace, items: AsyncIterable[Job | BadLine] | list[Job | BadLine]
) -> None:
    """Before any request: a resumed run's input must hold, at the same numbers, every
    line the run being resumed gave an outcome or sent (see ``Journal.check_input``)."""
    if isinstance(items, list):  # a rollback's: one job per entity, not in line order
        await journal.check_input(sorted(items, key=lambda item: item.line), args.input)
        return
    with _open_input(args.input) as source:
        await journal.check_input(read_jobs(source), args.input)


async def _run_with(engine: Engine, journal: Journal | None, args: argparse.Namespace) -> int:
    log = structlog.get_logger()
    loop = asyncio.get_running_loop()
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if len(signals) == 1:
            engine.stop(f"interrupted by {signal.Signals(signum).name}")
            loop.call_later(GRACE_S, engine.abort_in_flight)
        else:
            engine.abort_in_flight()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        items: AsyncIterable[Job | BadLine] | list[Job | BadLine]
        if args.func is _cmd_rollback:
            items = rollback_jobs(Path(args.input), force=args.force)
        else:
            source = _open_input(args.input)
            if source is not sys.stdin.buffer:
                stack.callback(source.close)
            items = read_jobs(source)
        if args.resume and journal is not None:
            await _check_resumed_input(journal, args, items)
        tally = PlanTally() if engine.config.plan else None
        append = bool(args.resume)
        receipts = (
            LineWriter(sys.stdout.buffer)
            if args.receipts is None
            else _open_output(args.receipts, append=append)
        )
        failures = None if args.failures is None else _open_output(args.failures, append=append)
        recorder = Recorder(receipts, failures, journal, durable=args.durable)
        stack.callback(recorder.close)
        # Outcome lines leave in batches, at least every FLUSH_S: one write per batch,
        # not per outcome, and a slow run still shows its outcomes as they come.
        progress = _progress(args)
        if progress is not None:
            stack.callback(progress.close)
        flusher = loop.create_task(_flush_every(recorder, engine, FLUSH_S, progress))
        stack.callback(flusher.cancel)
        async with contextlib.aclosing(engine.run_batches(items)) as batches:
            async for batch in batches:
                for outcome in batch:
                    if tally is not None:
                        tally.add(outcome)
                    try:
                        recorder.record(outcome)
                    except BrokenPipeError:
                        _stdout_gone(engine)
        try:
            recorder.flush()
        except BrokenPipeError:
            _stdout_gone(engine)
        if journal is not None and engine.stop_reason is None:
            journal.finished()
    wall = time.monotonic() - started
    stats = engine.stats.as_dict()
    jobs = sum(stats["outcomes"].values())
    summary = {
        "jobs": jobs,
        "wall_s": round(wall, 3),
        "jobs_per_s": round(jobs / wall, 1) if wall > 0 else None,
        **stats,
    }
    log.debug("run.summary", **summary)
    if args.verbose - args.quiet >= 0:
        text = render_summary(summary) if tally is None else tally.render(wall)
        print(text, file=sys.stderr, flush=True)
    if args.summary is not None:
        try:
            args.summary.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as exc:
            log.error("run.summary_not_written", path=str(args.summary), error=exc.strerror)
    if engine.systemic:
        log.error("run.stopped_early", reason=engine.systemic)
        return EXIT_SYSTEMIC
    if signals:
        return 128 + signals[0]
    if engine.stop_reason == STDOUT_GONE:
        return EXIT_FAILED_ITEMS  # lines left unread have no outcome
    # A resumed run answers for the whole run: lines that failed before fail still.
    failed_before = stats["skipped_failed"]
    return EXIT_OK if jobs == stats["outcomes"].get("ok", 0) and not failed_before else EXIT_FAILED_ITEMS


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run a mixed job file against an in-process simulator and check the result",
        description="Start a simulator with faults, seed offers, run a mixed job file "
        "(replaces, appends, test+replace) through the engine, and check the final state.",
    )
    _common(p)
    p.add_argument("--offers", type=int, default=200, help="offers to seed (default 200)")
    p.add_argument("--jobs-per-offer", type=int, default=5, help="jobs per offer (default 5)")
    p.add_argument(
        "--workdir", type=Path, help="where to write jobs and outcomes (default: a temp dir)"
    )
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from bulkpatch.demo import demo

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    return demo(offers=args.offers, per_offer=args.jobs_per_offer, workdir=args.workdir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulkpatch",
        description="Bulk JSON Patch for the Adobe Offer Library API.",
    )
    parser.add_argument("--version", action="version", version=f"bulkpatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_plan(sub)
    _add_rollback(sub)
    _add_export(sub)
    report.add_parser(sub, _common)
    translate.add_parser(sub, _common)
    _add_config(sub)
    _add_sim(sub)
    _add_demo(sub)
    return parser


def _run_async(make: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(make())
    return uvloop.run(make())


def _tune_gc() -> None:
    """Every request allocates hundreds of short-lived objects and almost no cycles: at
    the default threshold the collector walks the young generation every few requests.
    What is loaded by now (modules, the parser) lives for the whole run: never walk it."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose - args.quiet, args.log_format)
    _tune_gc()
    try:
        return _run_async(lambda: args.func(args))
    except ConfigError as exc:
        structlog.get_logger().error("config.invalid", error=str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
