"""What a run needs, frozen: the API, the pace, the retry policy, the mode and the limits.

``RunConfig`` speaks in the settings a user gives (one field each, validated there;
an error names the field as ``ConfigError.setting``, which the command line shows as
its flag); it builds the small objects each part of the engine
reads: ``api`` (``ApiSettings``), ``pacing`` (``gateway.Pacing``), ``retry_policy``
(``retry.RetryPolicy``), ``mode``, ``job_rules`` and ``capacity``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bulkpatch import entities
from bulkpatch.api import DEFAULT_ENDPOINT
from bulkpatch.auth import Credentials
from bulkpatch.client import DEFAULT_MAX_RESPONSE_BYTES
from bulkpatch.errors import ConfigError
from bulkpatch.gateway import Pacing
from bulkpatch.retry import RetryPolicy

Guard = Literal["auto", "always"]
UpdateVerb = Literal["put", "patch"]
IfMatch = Literal["honoured", "ignored"]
# Where the state of the entities jobs need comes from (``prefetch``).
PrefetchMode = Literal["auto", "list", "get"]
# Where each setting a kind's header takes its value from is given, for messages.
_SETTING_SOURCES: dict[str, str] = {
    "schema_id": "--schema-id, BULKPATCH_SCHEMA_ID or the profile's schema_id",
}


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """Where requests go and how they are made: the API's endpoint (``/data/core/dps`` or
    ``/data/core/xcore``), the headers every Offer Library call carries (API notes §1:
    ``x-api-key``, ``x-gw-ims-org-id``, ``x-sandbox-name``), TLS, and the limit on one
    request in seconds and on one answer in bytes (its headers and decompressed body)."""

    endpoint: str
    api_key: str
    org_id: str
    sandbox: str
    dialect: Literal["dps", "xcore"]
    container_id: str | None
    timeout_s: float
    max_response_bytes: int
    verify_tls: bool
    ca_bundle: Path | None

    @property
    def headers(self) -> dict[str, str]:
        """The API's constant headers."""
        return {"x-api-key": self.api_key, "x-gw-ims-org-id": self.org_id, "x-sandbox-name": self.sandbox}


@dataclass(frozen=True, slots=True)
class Mode:
    """What a run does with each job: send it, or only plan (read, apply locally) or dry
    run (nothing sent); ``skip_noop`` reads first and sends nothing that changes nothing;
    ``guard`` always: every write carries If-Match; ``force``: a rollback restores
    entities changed since."""

    dry_run: bool
    plan: bool
    skip_noop: bool
    guard: Guard
    force: bool
    preflight: bool = False
    prefetch: PrefetchMode = "get"
    page_size: int = 100


@dataclass(frozen=True, slots=True)
class JobRules:
    """Which jobs a run accepts and how creates are found again: deletes only with
    ``allow_delete``; ``create_key`` finds a create's entity after an unknown outcome;
    ``adopt_existing`` reports an entity that has the key instead of failing."""

    allow_delete: bool
    create_key: str
    adopt_existing: bool


@dataclass(frozen=True, slots=True)
class Capacity:
    """How much a run holds: requests in flight, jobs held (the window), entities whose
    etag is remembered, the shard it runs, and the failures it stops after."""

    concurrency: int
    held: int
    etag_memory: int
    shard: tuple[int, int] | None
    max_failures: int | None


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"must be > 0, got {value!r}", setting=name)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything a run needs. Secrets live in ``credentials`` and never in a repr."""

    credentials: Credentials | None = None
    endpoint: str = DEFAULT_ENDPOINT
    api_key: str | None = None
    org_id: str = ""
    sandbox: str = ""
    rate: float = 20.0  # requests per second, all requests together; 0 = no limit
    auto_rate: bool = False  # find the rate from the server's 429s (``rate`` is ignored)
    max_rate: float = 1000.0  # the most ``auto_rate`` goes to
    shard: tuple[int, int] | None = None  # (K, N): run only slice K of N (see ``shard_of``)
    concurrency: int = 16
    timeout: float = 30.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # one answer: headers + decompressed body
    max_attempts: int = 6
    max_conflicts: int = 5
    max_failures: int | None = None
    force: bool = False  # rollback: restore entities changed since the run being undone
    dialect: Literal["dps", "xcore"] = "dps"
    container_id: str | None = None  # xcore: None = discover the decisioning container
    allow_delete: bool = False  # delete jobs fail as input errors without it
    create_key: str = "name"  # the field that finds a create's entity after an unknown outcome
    adopt_existing: bool = False  # a create whose key exists reports that entity, not a conflict
    guard: Guard = "auto"
    dry_run: bool = False
    plan: bool = False  # read each entity, apply its jobs locally, write nothing
    skip_noop: bool = False  # read first; do not send a write that would change nothing
    # List the first job's collection before the first job (``preflight``): what the
    # command line does; a library caller may already know its settings are right.
    preflight: bool = False
    verify_tls: bool = True
    ca_bundle: Path | None = None
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_wait: float = 600.0  # seconds a server may ask to wait (Retry-After) before the run stops
    window: int = 0  # jobs held at once; 0 = max(1024, 8 x concurrency)
    etag_memory: int = 20_000  # entities whose etag is remembered (Adobe caps a sandbox at 10,000)
    seed: int | None = None  # backoff jitter, for reproducible tests
    # Experience Decisioning: the item catalog's schema, sent as x-schema-id on decision
    # items (Decisioning notes §1, GSD); the verb of a whole-object write (R-U, E-U, P-U say
    # PUT, their examples send PATCH); whether the server is known to ignore If-Match.
    schema_id: str | None = None
    update_verb: UpdateVerb = "put"
    if_match: IfMatch = "honoured"
    # Entities' state from list pages (``prefetch``; the command line's default is auto),
    # asking for ``page_size`` entities a page.
    prefetch: PrefetchMode = "get"
    page_size: int = 100

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ConfigError("must be >= 0 (0 means no limit)", setting="rate")
        _positive("max_rate", self.max_rate)
        if self.shard is not None:
            index, count = self.shard
            if count < 1 or not 0 <= index < count:
                raise ConfigError(f"must be K/N with 0 <= K < N, got {index}/{count}", setting="shard")
        _positive("concurrency", self.concurrency)
        _positive("timeout", self.timeout)
        cap = self.max_response_bytes
        if type(cap) is not int or cap <= 0:
            raise ConfigError(
                f"must be a positive whole number of bytes, got {cap!r}", setting="max_response_bytes"
            )
        _positive("max_attempts", self.max_attempts)
        _positive("max_wait", self.max_wait)
        if self.max_conflicts < 0:
            raise ConfigError("must be >= 0", setting="max_conflicts")
        if self.max_failures is not None:
            _positive("max_failures", self.max_failures)
        if self.guard not in ("auto", "always"):
            raise ConfigError("must be 'auto' or 'always'", setting="guard")
        if self.update_verb not in ("put", "patch"):
            raise ConfigError(f"must be 'put' or 'patch', got {self.update_verb!r}", setting="update_verb")
        if self.if_match not in ("honoured", "ignored"):
            raise ConfigError(f"must be 'honoured' or 'ignored', got {self.if_match!r}", setting="if_match")
        self._check_prefetch()
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"must be an http(s) URL, got {self.endpoint!r}", setting="endpoint")
        if self.dry_run:
            return
        if self.plan and self.skip_noop:
            raise ConfigError("is for run, not plan", setting="skip_noop")
        if self.credentials is None:
            raise ConfigError(
                "no credentials: set ADOBE_ACCESS_TOKEN, or ADOBE_CLIENT_ID and ADOBE_CLIENT_SECRET"
            )
        if not (self.api_key or self.credentials.client_id):
            raise ConfigError("no API key: set ADOBE_API_KEY or --api-key (or ADOBE_CLIENT_ID)")
        if not self.org_id:
            raise ConfigError(
                "no organization: set ADOBE_ORG_ID or --org-id (like ABC123@AdobeOrg)"
            )
        if not self.sandbox:
            raise ConfigError("no sandbox: set ADOBE_SANDBOX_NAME or --sandbox")
        ims = self.credentials.ims_url
        if not self.credentials.access_token and not ims.startswith(("http://", "https://")):
            raise ConfigError(f"must be an http(s) URL, got {ims!r}", setting="ims_url")

    def _check_prefetch(self) -> None:
        if self.prefetch not in ("auto", "list", "get"):
            raise ConfigError(f"must be auto, list or get, got {self.prefetch!r}", setting="prefetch")
        if type(self.page_size) is not int or self.page_size < 1:
            raise ConfigError(f"must be a whole number >= 1, got {self.page_size!r}", setting="page_size")
        if self.prefetch == "list" and self.dialect == "xcore":
            raise ConfigError(
                "list needs the dps dialect: the xcore API's list is not read for pre-images",
                setting="prefetch",
            )

    def kind_headers(self, entity: str) -> dict[str, str]:
        """The headers ``entity``'s calls carry beyond every call's (``EntityKind.headers``);
        ``ConfigError`` naming the setting when one is not set."""
        out: dict[str, str] = {}
        for header, setting in entities.kind(entity).headers:
            value = getattr(self, setting)
            if not value:
                raise ConfigError(
                    f"{entity} calls need {header}: set {_SETTING_SOURCES.get(setting, setting)}",
                    setting=setting,
                )
            out[header] = value
        return out

    @property
    def held(self) -> int:
        return self.window or max(1024, 8 * self.concurrency)

    @property
    def api(self) -> ApiSettings:
        return ApiSettings(
            endpoint=self.endpoint,
            api_key=self.api_key or (self.credentials.client_id if self.credentials else "") or "",
            org_id=self.org_id,
            sandbox=self.sandbox,
            dialect=self.dialect,
            container_id=self.container_id,
            timeout_s=self.timeout,
            max_response_bytes=self.max_response_bytes,
            verify_tls=self.verify_tls,
            ca_bundle=self.ca_bundle,
        )

    @property
    def mode(self) -> Mode:
        return Mode(
            self.dry_run,
            self.plan,
            self.skip_noop,
            self.guard,
            self.force,
            self.preflight,
            self.prefetch,
            self.page_size,
        )

    @property
    def job_rules(self) -> JobRules:
        return JobRules(self.allow_delete, self.create_key, self.adopt_existing)

    @property
    def capacity(self) -> Capacity:
        return Capacity(self.concurrency, self.held, self.etag_memory, self.shard, self.max_failures)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            max_conflicts=self.max_conflicts,
            backoff_base_s=self.backoff_base,
            backoff_cap_s=self.backoff_cap,
            max_wait_s=self.max_wait,
        )

    @property
    def pacing(self) -> Pacing:
        return Pacing(rate_per_s=self.rate, adaptive=self.auto_rate, max_rate_per_s=self.max_rate)
