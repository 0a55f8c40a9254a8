"""Options several subcommands share: the API and its pace, the outputs, the profile.

``run_config`` turns the parsed options (flags, then the environment, then the profile,
then the defaults; see ``bulkpatch.settings``) into the engine's frozen ``RunConfig``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import structlog

from bulkpatch.api import DEFAULT_ENDPOINT
from bulkpatch.auth import DEFAULT_IMS_URL, Credentials
from bulkpatch.client import DEFAULT_MAX_RESPONSE_BYTES
from bulkpatch.config import RunConfig
from bulkpatch.errors import ConfigError
from bulkpatch.settings import CONFIG_FILE, Setting, resolve


def rate(text: str) -> float | str:
    """``--rate``: a number of requests per second, or "auto"."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def shard(text: str) -> tuple[int, int]:
    """``--shard K/N``: ``(K, N)`` with 0 <= K < N."""
    index, slash, count = text.partition("/")
    try:
        if slash and 0 <= int(index) < int(count):
            return int(index), int(count)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")


def add_progress_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="a live progress line on stderr (default: only when stderr is a terminal)",
    )


def add_output(g: argparse._ArgumentGroup, what: str, *, alias: str | None = None, dest: str = "output") -> None:
    """``-o/--output PATH``: where a command's main output goes (default stdout), the one
    name for it in every subcommand. ``alias``: an older spelling, still accepted but not
    shown."""
    g.add_argument(
        "-o", "--output", dest=dest, type=Path, metavar="PATH", help=f"write {what} to PATH (default: stdout)"
    )
    if alias is not None:
        g.add_argument(alias, dest=dest, type=Path, help=argparse.SUPPRESS)


def add_outputs(p: argparse.ArgumentParser, *, resumable: bool) -> None:
    """``-o/--output`` (alias ``--receipts``), ``--failures``, ``--summary``,
    ``--progress``; ``--resume`` and ``--durable`` when the command keeps a journal."""
    g = p.add_argument_group("output")
    g.add_argument(
        "-o",
        "--output",
        "--receipts",
        dest="receipts",
        type=Path,
        metavar="PATH",
        help="write outcomes to PATH (default: stdout); its journal, PATH.journal, is what "
        "--resume continues from",
    )
    g.add_argument(
        "--failures",
        type=Path,
        metavar="PATH",
        help="write failed jobs to PATH, re-runnable as input (default: none written)",
    )
    g.add_argument(
        "--summary",
        type=Path,
        metavar="PATH",
        help="also write the end-of-run summary as JSON (default: stderr only)",
    )
    add_progress_option(g)
    add_run_id_options(g)
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


def add_run_id_options(g: argparse._ArgumentGroup) -> None:
    """``--run-id`` and ``--overwrite`` (see ``bulkpatch.runid``)."""
    g.add_argument(
        "--run-id",
        metavar="ID",
        help="the run's id in every outcome line (env BULKPATCH_RUN_ID; default: the "
        "journal's on --resume, else a new one); give every shard of one run the same",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the receipts of a finished run (else refused)",
    )


def add_profile_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("profile")
    g.add_argument(
        "--profile",
        help="apply this profile of bulkpatch.toml (env BULKPATCH_PROFILE; default: none)",
    )
    g.add_argument(
        "--config", type=Path, help=f"the profiles file (default ./{CONFIG_FILE})"
    )


def add_api_and_pace(p: argparse.ArgumentParser) -> None:
    """The profile, the API (endpoint, dialect, ids, TLS) and the pace and retries."""
    add_profile_options(p)
    _add_api(p)
    _add_pace(p)


def _add_api(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--org-id", help="x-gw-ims-org-id (env ADOBE_ORG_ID; no default: required)")
    g.add_argument(
        "--sandbox", help="x-sandbox-name (env ADOBE_SANDBOX_NAME; no default: required)"
    )
    g.add_argument(
        "--ims-url", help=f"IMS token URL (env ADOBE_IMS_URL; default {DEFAULT_IMS_URL})"
    )
    g.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    d = p.add_argument_group("Experience Decisioning")
    d.add_argument(
        "--schema-id",
        metavar="ID",
        help="x-schema-id of decision items, the item catalog's schema (env BULKPATCH_SCHEMA_ID; "
        "no default: required for offer-items)",
    )
    d.add_argument(
        "--update-verb",
        choices=("put", "patch"),
        help="the verb of a whole-object write (ranking-formulas, eligibility-rules, "
        "exd-placements; default put)",
    )
    d.add_argument(
        "--if-match",
        choices=("honoured", "ignored"),
        help="whether the server honours If-Match; 'ignored' warns that a whole-object write "
        "can overwrite a change made since it was read (default honoured)",
    )
    g.add_argument(
        "--ca-bundle", type=Path, help="CA certificates to verify TLS with (default: the system's)"
    )


def _add_pace(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pace and retries")
    g.add_argument(
        "--rate",
        type=rate,
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
        "--max-response-bytes",
        metavar="N",
        default=str(DEFAULT_MAX_RESPONSE_BYTES),
        help="the most one answer may take, headers and decompressed body: a larger one "
        f"is not read on, and fails as a lost answer would (default {DEFAULT_MAX_RESPONSE_BYTES})",
    )
    g.add_argument(
        "--max-attempts",
        type=int,
        default=6,
        help="attempts per job on transient errors (default 6)",
    )
    g.add_argument(
        "--max-conflicts", type=int, default=5, help="etag-conflict rebases per job (default 5)"
    )
    g.add_argument(
        "--max-failures",
        type=int,
        metavar="N",
        help="stop early once N jobs have failed (exit 3; default: no limit)",
    )
    g.add_argument(
        "--max-wait",
        type=float,
        default=600.0,
        help="stop (exit 3) rather than wait longer than S seconds when the server asks to (default 600)",
    )


def run_config(args: argparse.Namespace) -> RunConfig:
    """The engine's configuration from the options of run, plan, rollback or export.

    Raises ``ConfigError`` (a bad profile, rate or concurrency; messages as the user
    wrote the setting).
    """
    settings = resolve(vars(args), os.environ, profile=args.profile, config=args.config)
    value = {key: setting.value for key, setting in settings.items()}
    credentials = _credentials(value)
    pace = _pace(settings, value)
    if args.insecure:
        structlog.get_logger().warning(
            "tls.unverified", detail="--insecure: TLS certificates are not checked"
        )
    return RunConfig(
        credentials=credentials,
        endpoint=value["endpoint"],
        api_key=value["api_key"] or value["client_id"],
        org_id=value["org_id"] or "",
        sandbox=value["sandbox"] or "",
        **pace,
        max_rate=args.max_rate,
        shard=args.shard,
        timeout=args.timeout,
        max_response_bytes=_whole(args.max_response_bytes, "max_response_bytes"),
        max_attempts=args.max_attempts,
        max_wait=args.max_wait,
        max_conflicts=args.max_conflicts,
        max_failures=args.max_failures,
        guard=args.guard,
        dry_run=args.dry_run,
        plan=getattr(args, "plan", False),
        skip_noop=args.skip_noop,
        force=args.force,
        dialect=value["dialect"],
        container_id=value["container_id"],
        schema_id=value["schema_id"],
        update_verb=value["update_verb"],
        if_match=value["if_match"],
        prefetch=getattr(args, "prefetch", "get"),
        page_size=getattr(args, "page_size", 100),
        allow_delete=getattr(args, "allow_delete", False),
        create_key=getattr(args, "create_key", "name"),
        adopt_existing=getattr(args, "adopt_existing", False),
        verify_tls=not args.insecure,
        ca_bundle=args.ca_bundle,
        preflight=True,
    )


def _whole(text: str, setting: str) -> int:
    """A whole number given as text; ``ConfigError`` naming ``setting`` (one line, not
    argparse's usage) when it is not one. ``RunConfig`` checks its range."""
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"must be a whole number, got {text!r}", setting=setting) from None


def _credentials(value: dict[str, Any]) -> Credentials | None:
    """A static token, or a client id and secret for IMS; None when neither is set."""
    token, client_id, client_secret = (
        value["access_token"],
        value["client_id"],
        value["client_secret"],
    )
    if not (token or (client_id and client_secret)):
        return None
    return Credentials(
        access_token=token,
        client_id=client_id,
        client_secret=client_secret,
        scopes=value["scopes"],
        ims_url=value["ims_url"],
    )


def _pace(settings: dict[str, Setting], value: dict[str, Any]) -> dict[str, Any]:
    """``rate``, ``auto_rate`` and ``concurrency``; raises ``ConfigError`` naming where
    a bad value came from (a profile or the environment is text, not a parsed flag)."""
    try:
        given = rate(str(value["rate"]))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"rate ({settings['rate'].source}): {exc}") from None
    try:
        concurrency = int(value["concurrency"])
    except ValueError:
        raise ConfigError(f"concurrency must be a whole number, got {value['concurrency']!r}") from None
    return {
        "rate": 0.0 if given == "auto" else float(given),
        "auto_rate": given == "auto",
        "concurrency": concurrency,
    }
