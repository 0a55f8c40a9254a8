"""Frozen settings of the simulator.

Every behaviour the real API leaves undocumented (see the API notes: create status,
conflict status, failed-``test`` status, ``Retry-After`` form, whether ``If-Match`` is
honoured) is a field here, so a client can be tested against each possibility.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final, Literal

from bulkpatch.errors import ConfigError

RetryAfterForm = Literal["seconds", "date", "none"]
ThrottleModel = Literal["bucket", "fixed", "sliding"]
FaultRetryAfterForm = Literal["seconds", "date", "none", "mixed"]

DEFAULT_TOKEN_TTL_S: Final = 86399.0
DEFAULT_BURST: Final = 10
# Both slow-answer faults default past the client's default 30 s timeout: the point of
# them is that the client gives up before the answer (or the write) comes.
DEFAULT_LATE_MS: Final = 40_000.0
DEFAULT_ZOMBIE_MS: Final = 40_000.0
# Statuses the settings below may choose (Decisioning notes §7: none is documented).
REFUSAL_STATUSES: Final = (400, 403, 409, 422)
PLACEMENT_DELETE_STATUSES: Final = (403, 404, 405)


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability between 0 and 1, got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Probability of each fault, drawn once per write (PATCH, POST, DELETE).

    The faults that replace the normal answer are mutually exclusive (one draw picks at
    most one of them); ``concurrent_writer`` is drawn on its own, since another writer can
    touch the offer whatever happens to this request afterwards.
    """

    error_500: float = 0.0
    error_502: float = 0.0
    error_503: float = 0.0
    throttle_429: float = 0.0
    late_answer: float = 0.0
    zombie_write: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    token_expiry: float = 0.0
    concurrent_writer: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_probability(f"fault {f.name}", getattr(self, f.name))
        if sum(p for _, p in self.exclusive()) > 1.0:
            raise ConfigError("the fault probabilities (other than concurrent_writer) sum past 1")

    def exclusive(self) -> tuple[tuple[str, float], ...]:
        """The mutually exclusive faults, in a fixed order so a seed replays exactly."""
        return tuple(
            (f.name, getattr(self, f.name)) for f in fields(self) if f.name != "concurrent_writer"
        )

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


def _token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How the simulator behaves. Secrets are kept out of ``repr``."""

    create_status: Literal[200, 201] = 201
    conflict_status: Literal[409, 412] = 409
    test_failed_status: Literal[400, 409, 422] = 409
    ignore_if_match: bool = False
    # List entries are summaries (``PARTIAL_FIELDS``), not whole entities, as some real
    # list endpoints answer: a client must not build a write on one.
    partial_list: bool = False

    api_key: str | None = None
    org_id: str | None = None
    access_token: str = field(default_factory=_token, repr=False)
    client_id: str = field(default_factory=lambda: "sim-" + secrets.token_hex(8))
    client_secret: str = field(default_factory=_token, repr=False)
    token_ttl_s: float = DEFAULT_TOKEN_TTL_S
    # The sandboxes that exist (empty: any name is one); a request naming another is
    # answered ``sandbox_status``, since Adobe does not document that answer.
    sandboxes: tuple[str, ...] = ()
    sandbox_status: Literal[400, 403, 404] = 403

    rate_limit: float | None = None
    burst: int = DEFAULT_BURST
    # (seconds from the first write, requests per second), sorted by time.
    rate_schedule: tuple[tuple[float, float], ...] = ()
    retry_after: RetryAfterForm = "seconds"
    # bucket: the token bucket above; fixed, sliding: the limits package's fixed and
    # moving windows of `throttle_window` whole seconds (its windows are whole seconds),
    # rate x window requests each.
    throttle: ThrottleModel = "bucket"
    throttle_window: int | None = None
    # The status of a throttled answer: some gateways say 503, not 429.
    throttle_status: Literal[429, 503] = 429
    # (seconds from the first write, length in seconds): every API request answered 503.
    outage: tuple[float, float] | None = None

    faults: FaultRates = field(default_factory=FaultRates)
    fault_seed: int | None = None
    fault_retry_after: FaultRetryAfterForm = "mixed"
    fault_retry_after_s: int = 1
    late_ms: float = DEFAULT_LATE_MS
    zombie_ms: float = DEFAULT_ZOMBIE_MS
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0

    offers: int = 0
    offer_size: int = 0  # bytes of JSON each seeded offer is padded to (0: as made)
    state_path: Path | None = None
    # Containers listed by the xcore home (0 lets a client's discovery fail); offers
    # live in the first one, the others are empty.
    xcore_containers: int = 1

    # Experience Decisioning (Decisioning notes §7 lists what its pages leave open).
    # x-schema-id on /offer-items: exactly this value, or any non-empty one when None.
    schema_id: str | None = None
    items: int = 0
    # The seed pages' example entities, under their documented ids (see ``examples``).
    examples: bool = False
    # A whole-object write naming a server-managed field: 422, instead of ignoring it.
    refuse_managed_fields: bool = False
    # A create past 10,000 decision items (the guardrails page's cap).
    item_limit_status: int = 400
    # Deleting an approved decision item (None: allowed).
    approved_delete_status: int | None = 400
    # DELETE on an exd-placement, which has no delete page (None: allowed).
    exd_placement_delete_status: int | None = 405
    # Under ``examples``, an xcore PATCH with no Content-Type or curl's form type is taken
    # as a JSON Patch (the legacy page's curl names none); this keeps it a 400.
    strict_xcore_content_type: bool = False

    def __post_init__(self) -> None:
        if self.create_status not in (200, 201):
            raise ConfigError("create_status must be 200 or 201")
        if self.conflict_status not in (409, 412):
            raise ConfigError("conflict_status must be 409 or 412")
        if self.test_failed_status not in (400, 409, 422):
            raise ConfigError("test_failed_status must be 400, 409 or 422")
        if not self.access_token:
            raise ConfigError("access_token must not be empty")
        if self.sandbox_status not in (400, 403, 404):
            raise ConfigError("must be 400, 403 or 404", setting="sandbox_status")
        if self.token_ttl_s <= 0:
            raise ConfigError("token_ttl_s must be > 0")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ConfigError("rate_limit must be > 0 (leave it unset for no limit)")
        if self.burst < 1:
            raise ConfigError("burst must be >= 1")
        last = -1.0
        for at, rate in self.rate_schedule:
            if at <= last:
                raise ConfigError("rate_schedule times must be increasing, starting at 0")
            if rate <= 0:
                raise ConfigError("rate_schedule rates must be > 0")
            last = at
        if self.rate_schedule and self.rate_schedule[0][0] != 0:
            raise ConfigError("rate_schedule must start at 0 (e.g. 0:300,20:150)")
        self._check_throttle()
        for name in ("late_ms", "zombie_ms", "latency_ms", "latency_jitter_ms"):
            _check_non_negative(name, getattr(self, name))
        _check_non_negative("fault_retry_after_s", self.fault_retry_after_s)
        _check_non_negative("offers", self.offers)
        _check_non_negative("offer_size", self.offer_size)
        _check_non_negative("xcore_containers", self.xcore_containers)
        self._check_decisioning()

    def _check_decisioning(self) -> None:
        _check_non_negative("items", self.items)
        if self.schema_id is not None and not self.schema_id.strip():
            raise ConfigError("must not be empty", setting="schema_id")
        if self.item_limit_status not in REFUSAL_STATUSES:
            raise ConfigError("must be 400, 403, 409 or 422", setting="item_limit_status")
        if self.approved_delete_status not in (None, *REFUSAL_STATUSES):
            raise ConfigError(
                "must be 400, 403, 409, 422 or allow", setting="approved_delete_status"
            )
        if self.exd_placement_delete_status not in (None, *PLACEMENT_DELETE_STATUSES):
            raise ConfigError(
                "must be 403, 404, 405 or allow", setting="exd_placement_delete_status"
            )

    @property
    def untyped_xcore_patch(self) -> bool:
        """Whether an xcore PATCH without its media type is read as a JSON Patch."""
        return self.examples and not self.strict_xcore_content_type

    def _check_throttle(self) -> None:
        if self.throttle not in ("bucket", "fixed", "sliding"):
            raise ConfigError("must be bucket, fixed or sliding", setting="throttle")
        if self.throttle_status not in (429, 503):
            raise ConfigError("must be 429 or 503", setting="throttle_status")
        if self.outage is not None and (self.outage[0] < 0 or not self.outage[1] > 0):
            raise ConfigError("must be START:SECONDS, START >= 0, SECONDS > 0", setting="outage")
        if self.throttle == "bucket":
            if self.throttle_window is not None:
                raise ConfigError(
                    "applies to --throttle fixed or sliding", setting="throttle_window"
                )
            return
        if not self.throttled:
            raise ConfigError(f"{self.throttle} needs a rate (--rate-limit)", setting="throttle")
        if self.throttle_window is not None and self.throttle_window < 1:
            raise ConfigError("must be a whole number of seconds >= 1", setting="throttle_window")
        rates = [rate for _, rate in self.rate_schedule] or [self.rate_limit or 0.0]
        for rate in rates:
            per_window = rate * self.window_s
            if round(per_window) < 1 or abs(per_window - round(per_window)) > 1e-6 * per_window:
                raise ConfigError(
                    f"{rate:g}/s x a {self.window_s} s window is {per_window:g} requests: "
                    "a window's limit must be a whole number >= 1",
                    setting="rate_schedule" if self.rate_schedule else "rate_limit",
                )

    @property
    def throttled(self) -> bool:
        return self.rate_limit is not None or bool(self.rate_schedule)

    @property
    def window_s(self) -> int:
        """The window of the fixed and sliding throttles, in seconds."""
        return self.throttle_window or 1

    def per_window(self, rate: float) -> int:
        """The requests a window of the fixed and sliding throttles lets through at ``rate``/s."""
        return round(rate * self.window_s)


def parse_outage(text: str) -> tuple[float, float]:
    """Parse ``START:SECONDS`` (seconds from the first write : the outage's length)."""
    start, sep, length = text.strip().partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return float(start), float(length)
    except ValueError:
        raise ConfigError(f"{text!r} is not START:SECONDS (e.g. 30:20)", setting="outage") from None


def parse_rate_schedule(text: str) -> tuple[tuple[float, float], ...]:
    """Parse ``0:300,20:150,40:300`` (seconds from the first write : requests/second)."""
    steps: list[tuple[float, float]] = []
    for part in text.split(","):
        at, sep, rate = part.strip().partition(":")
        try:
            if not sep:
                raise ValueError(part)
            steps.append((float(at), float(rate)))
        except ValueError:
            raise ConfigError(
                f"--rate-schedule: {part.strip()!r} is not SECONDS:RATE (e.g. 0:300,20:150)"
            ) from None
    return tuple(steps)
