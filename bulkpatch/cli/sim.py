"""``bulkpatch sim``: serve the Offer Library simulator, with IMS, throttling and faults."""

from __future__ import annotations

import argparse
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bulkpatch.cli.logs import add_logging_options
from bulkpatch.cli.parser import ENV_LOCAL, epilog
from bulkpatch.errors import ConfigError
from bulkpatch.preflight import check_output

if TYPE_CHECKING:
    from bulkpatch.simulator import FaultRates, SimConfig

# The --fault-NAME options: the FaultRates field each sets, and its help.
FAULTS: Final = (
    ("500", "error_500", "answer 500"),
    ("502", "error_502", "answer 502"),
    ("503", "error_503", "answer 503"),
    ("429", "throttle_429", "answer 429 (Retry-After per --fault-retry-after)"),
    ("late", "late_answer", "apply, then answer after --late-ms"),
    ("zombie", "zombie_write", "apply after --zombie-ms, long after the client gave up"),
    ("drop-before", "drop_before", "drop the connection without applying"),
    ("drop-after", "drop_after", "apply, then drop the connection"),
    ("token-expiry", "token_expiry", "expire the caller's token early"),
    (
        "concurrent",
        "concurrent_writer",
        "another writer changes the entity just before the PATCH or PUT",
    ),
)


def probability(text: str) -> float:
    """A number from 0 to 1, for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability between 0 and 1")
    return value


def add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sim",
        help="serve the Offer Library simulator",
        description="Serve a local simulator of the Offer Library API (DPS) with IMS and faults. "
        "Prints one JSON 'ready' line on stdout when it serves.",
        epilog=epilog(
            ENV_LOCAL,
            [("0", "stopped by SIGINT or SIGTERM (--state saved)"), ("2", "bad usage: nothing was served")],
            [
                "bulkpatch sim --port 8765 --offers 1000 --state rehearsal.json > sim.json &",
                "bulkpatch sim --port 0 --rate-limit 50 --fault-503 0.02 --fault-seed 1",
            ],
        ),
    )
    add_logging_options(p)
    _add_server(p)
    _add_behaviours(p)
    _add_decisioning(p)
    _add_credentials(p)
    _add_throttling(p)
    _add_faults(p)
    p.set_defaults(func=cmd_sim)


def _add_server(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default 8765)")
    g.add_argument("--offers", type=int, default=0, help="seed N realistic personalized offers")
    g.add_argument(
        "--offer-size",
        type=int,
        default=0,
        metavar="BYTES",
        help="pad each seeded offer to about BYTES of JSON (default: as seeded, about 900)",
    )
    g.add_argument(
        "--items", type=int, default=0, metavar="N", help="seed N realistic decision items"
    )
    g.add_argument(
        "--examples",
        action="store_true",
        help="serve the API pages' example entities under their documented ids",
    )
    g.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help="load entities from FILE at start, save them at exit (default: in memory only)",
    )
    g.add_argument(
        "--xcore-containers",
        type=int,
        default=1,
        metavar="N",
        help="containers the legacy xcore home lists; offers live in the first (default 1)",
    )


def _add_behaviours(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("undocumented behaviours of the real API")
    g.add_argument(
        "--create-status", type=int, choices=(200, 201), default=201, help="status of a create"
    )
    g.add_argument(
        "--conflict-status",
        type=int,
        choices=(409, 412),
        default=409,
        help="status of a write whose If-Match is stale",
    )
    g.add_argument(
        "--test-failed-status",
        type=int,
        choices=(400, 409, 422),
        default=409,
        help="status of a patch whose test op fails",
    )
    g.add_argument("--ignore-if-match", action="store_true", help="no optimistic locking at all")
    g.add_argument(
        "--partial-list",
        action="store_true",
        help="list entries are summaries (id, etag, name, status, dates), not whole entities",
    )


def _status_or_allow(choices: tuple[int, ...]) -> Any:
    """An argparse type: one of ``choices`` as an int, or ``allow`` as None."""

    def parse(text: str) -> int | None:
        if text == "allow":
            return None
        if text.isdigit() and int(text) in choices:
            return int(text)
        shown = ", ".join(map(str, choices))
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {shown} or allow")

    return parse


def _add_decisioning(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Experience Decisioning (undocumented behaviours)")
    g.add_argument(
        "--schema-id", help="require exactly this x-schema-id on /offer-items (default: any)"
    )
    g.add_argument(
        "--refuse-managed-fields",
        action="store_true",
        help="a whole-object write naming a server-managed field is 422 (default: ignored)",
    )
    g.add_argument(
        "--item-limit-status",
        type=int,
        choices=(400, 403, 409, 422),
        default=400,
        help="status of a create past 10,000 decision items (default 400)",
    )
    g.add_argument(
        "--approved-delete-status",
        type=_status_or_allow((400, 403, 409, 422)),
        default=400,
        metavar="STATUS|allow",
        help="status of deleting an approved decision item (default 400)",
    )
    g.add_argument(
        "--exd-placement-delete-status",
        type=_status_or_allow((403, 404, 405)),
        default=405,
        metavar="STATUS|allow",
        help="status of deleting an exd-placement (default 405)",
    )
    g.add_argument(
        "--strict-xcore-content-type",
        action="store_true",
        help="with --examples, still refuse an xcore PATCH without its media type",
    )


def _add_credentials(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("credentials")
    g.add_argument("--api-key", help="require exactly this x-api-key (default: any)")
    g.add_argument("--org-id", help="require exactly this x-gw-ims-org-id (default: any)")
    g.add_argument("--access-token", help="the static token accepted (default: random, printed)")
    g.add_argument("--client-id", help="IMS client id (default: random, printed)")
    g.add_argument("--client-secret", help="IMS client secret (default: random, printed)")
    g.add_argument(
        "--sandboxes",
        metavar="NAMES",
        help="the sandboxes that exist, comma-separated (default: any name); another is "
        "answered --sandbox-status",
    )
    g.add_argument(
        "--sandbox-status",
        type=int,
        choices=(400, 403, 404),
        default=403,
        help="status of a request naming a sandbox not in --sandboxes (undocumented; default 403)",
    )
    g.add_argument("--token-ttl", type=float, default=86399.0, help="IMS expires_in seconds")


def _add_throttling(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("throttling")
    g.add_argument(
        "--rate-limit",
        type=float,
        metavar="R",
        help="requests/second over all API requests (default: no limit)",
    )
    g.add_argument(
        "--throttle",
        choices=("bucket", "fixed", "sliding"),
        default="bucket",
        help="token bucket, or a fixed or sliding window (default bucket)",
    )
    g.add_argument(
        "--throttle-window",
        type=int,
        metavar="S",
        help="window of --throttle fixed|sliding, whole seconds (default 1)",
    )
    g.add_argument(
        "--throttle-status",
        type=int,
        choices=(429, 503),
        default=429,
        help="status of a throttled answer (default 429)",
    )
    g.add_argument("--burst", type=int, default=10, help="token bucket size (default 10)")
    g.add_argument(
        "--rate-schedule",
        help="rate over time: SECONDS:RATE,... from the first write (0:300,20:150; "
        "default: --rate-limit throughout)",
    )
    g.add_argument(
        "--retry-after",
        choices=("seconds", "date", "none"),
        default="seconds",
        help="Retry-After form on throttled answers",
    )
    g.add_argument(
        "--outage",
        metavar="START:SECONDS",
        help="every API request answered 503 from START s after the first write, for SECONDS "
        "(default: none)",
    )


def _add_faults(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("faults (probabilities per write)")
    for name, _, help_text in FAULTS:
        g.add_argument(
            f"--fault-{name}", type=probability, default=0.0, metavar="P", help=help_text
        )
    g.add_argument(
        "--fault-seed", type=int, help="seed for reproducible faults (default: random)"
    )
    g.add_argument(
        "--fault-retry-after",
        choices=("seconds", "date", "none", "mixed"),
        default="mixed",
        help="Retry-After of --fault-429 (mixed: drawn each time)",
    )
    g.add_argument("--fault-retry-after-s", type=int, default=1, help="its value (default 1)")
    _add_timing(g)


def _add_timing(g: argparse._ArgumentGroup) -> None:
    # In the faults group, as they always were: --late-ms and --zombie-ms time two faults.
    g.add_argument("--late-ms", type=float, default=40_000.0, help="delay of --fault-late")
    g.add_argument("--zombie-ms", type=float, default=40_000.0, help="delay of --fault-zombie")
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


def _fault_rates(args: argparse.Namespace) -> FaultRates:
    from bulkpatch.simulator import FaultRates

    rates = {field: getattr(args, "fault_" + name.replace("-", "_")) for name, field, _ in FAULTS}
    return FaultRates(**rates)


def cmd_sim(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """Serve until interrupted; exit 0."""
    # Imported here: only this command loads the simulator.
    from bulkpatch.simulator import serve

    # Before serving: a port that cannot be, and a state file that could not be saved
    # at exit (the whole rehearsal's state would be lost then).
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be from 0 to 65535, got {args.port}")
    if args.state is not None:
        check_output("--state", args.state)
    return serve(_sim_config(args), host=args.host, port=args.port)


def _sim_config(args: argparse.Namespace) -> SimConfig:
    """The simulator's settings as the command line gives them."""
    from bulkpatch.simulator import SimConfig, parse_outage, parse_rate_schedule

    secrets_given = {
        k: v
        for k, v in (
            ("access_token", args.access_token),
            ("client_id", args.client_id),
            ("client_secret", args.client_secret),
        )
        if v
    }
    return SimConfig(
        create_status=args.create_status,
        conflict_status=args.conflict_status,
        test_failed_status=args.test_failed_status,
        ignore_if_match=args.ignore_if_match,
        partial_list=args.partial_list,
        api_key=args.api_key,
        org_id=args.org_id,
        sandboxes=tuple(name.strip() for name in (args.sandboxes or "").split(",") if name.strip()),
        sandbox_status=args.sandbox_status,
        token_ttl_s=args.token_ttl,
        rate_limit=args.rate_limit,
        burst=args.burst,
        rate_schedule=parse_rate_schedule(args.rate_schedule) if args.rate_schedule else (),
        retry_after=args.retry_after,
        throttle=args.throttle,
        throttle_window=args.throttle_window,
        throttle_status=args.throttle_status,
        outage=parse_outage(args.outage) if args.outage else None,
        faults=_fault_rates(args),
        fault_seed=args.fault_seed,
        fault_retry_after=args.fault_retry_after,
        fault_retry_after_s=args.fault_retry_after_s,
        late_ms=args.late_ms,
        zombie_ms=args.zombie_ms,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        offers=args.offers,
        offer_size=args.offer_size,
        state_path=args.state,
        xcore_containers=args.xcore_containers,
        schema_id=args.schema_id,
        items=args.items,
        examples=args.examples,
        refuse_managed_fields=args.refuse_managed_fields,
        item_limit_status=args.item_limit_status,
        approved_delete_status=args.approved_delete_status,
        exd_placement_delete_status=args.exd_placement_delete_status,
        strict_xcore_content_type=args.strict_xcore_content_type,
        **secrets_given,
    )
