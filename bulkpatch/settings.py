"""Where each setting comes from: a flag, then the environment, then a named profile,
then the built-in default.

Profiles live in ``bulkpatch.toml`` (the current directory, or ``--config PATH``)::

    [profiles.rehearsal]
    endpoint = "http://127.0.0.1:8765/data/core/dps"
    org = "ABC123@AdobeOrg"
    sandbox = "prod"
    rate = 200
    concurrency = 32

    [profiles.prod]
    org = "ABC123@AdobeOrg"
    sandbox = "prod"
    rate = "auto"
    secrets = "~/.config/bulkpatch/prod.env"   # ADOBE_CLIENT_ID=... lines

A profile applies only when it is named (``--profile NAME`` or ``BULKPATCH_PROFILE``): a
file lying in a directory never redirects a run by itself. Secrets are never read from
``bulkpatch.toml``; they come from the environment or from the file a profile names,
which is refused when other users can read it.
"""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bulkpatch.api import DEFAULT_ENDPOINT, DEFAULT_XCORE_ENDPOINT
from bulkpatch.auth import DEFAULT_IMS_URL, DEFAULT_SCOPES
from bulkpatch.errors import ConfigError

CONFIG_FILE: Final = "bulkpatch.toml"
SECRET_NAMES: Final = ("ADOBE_ACCESS_TOKEN", "ADOBE_CLIENT_ID", "ADOBE_CLIENT_SECRET")


@dataclass(frozen=True, slots=True)
class Spec:
    flag: str | None  # the argparse dest, when a flag sets it
    env: str | None
    profile_key: str | None
    default: Any


# Name -> where it can come from. Order is the order `config show` prints.
SPECS: Final[dict[str, Spec]] = {
    "endpoint": Spec("endpoint", "BULKPATCH_ENDPOINT", "endpoint", DEFAULT_ENDPOINT),
    "org_id": Spec("org_id", "ADOBE_ORG_ID", "org", None),
    "sandbox": Spec("sandbox", "ADOBE_SANDBOX_NAME", "sandbox", None),
    "api_key": Spec("api_key", "ADOBE_API_KEY", "api_key", None),
    "ims_url": Spec("ims_url", "ADOBE_IMS_URL", "ims_url", DEFAULT_IMS_URL),
    "scopes": Spec(None, "ADOBE_SCOPES", "scopes", DEFAULT_SCOPES),
    "rate": Spec("rate", None, "rate", 20.0),
    "concurrency": Spec("concurrency", None, "concurrency", 16),
    "dialect": Spec("dialect", None, "dialect", "dps"),
    "container_id": Spec("container_id", None, "container", None),
    # Experience Decisioning (see ``RunConfig``).
    "schema_id": Spec("schema_id", "BULKPATCH_SCHEMA_ID", "schema_id", None),
    "update_verb": Spec("update_verb", None, "update_verb", "put"),
    "if_match": Spec("if_match", None, "if_match", "honoured"),
    "access_token": Spec(None, "ADOBE_ACCESS_TOKEN", None, None),
    "client_id": Spec(None, "ADOBE_CLIENT_ID", None, None),
    "client_secret": Spec(None, "ADOBE_CLIENT_SECRET", None, None),
}
SECRET_SETTINGS: Final = frozenset({"access_token", "client_secret"})
_PROFILE_KEYS: Final = frozenset(s.profile_key for s in SPECS.values() if s.profile_key) | {
    "secrets"
}


@dataclass(frozen=True, slots=True)
class Setting:
    value: Any
    source: str  # "flag --rate", "env ADOBE_ORG_ID", "profile prod", "secrets FILE", "default"


def _profile(name: str, path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"profile {name!r} named, but there is no {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    profiles = data.get("profiles")
    if not isinstance(profiles, dict) or not isinstance(profiles.get(name), dict):
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) else "none"
        raise ConfigError(f"no profile {name!r} in {path} (profiles: {known})")
    profile: dict[str, Any] = profiles[name]
    unknown = sorted(set(profile) - _PROFILE_KEYS)
    if unknown:
        raise ConfigError(
            f"profile {name!r} in {path}: unknown setting(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_PROFILE_KEYS))}; secrets go in the 'secrets' file)"
        )
    return profile


def _secrets(file: Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments allowed) from a file only its owner reads."""
    try:
        mode = file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{file} can be read by other users (mode {stat.filemode(mode)}): "
                f"refusing to take secrets from it; chmod 600 {file}"
            )
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the secrets file {file}: {exc.strerror}") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.removeprefix("export ").partition("=")
        if not eq or key.strip() not in SECRET_NAMES:
            # The message names the line, never its content: it may hold a secret.
            raise ConfigError(
                f"{file}, line {number}: expected one of {', '.join(SECRET_NAMES)}=VALUE"
            )
        out[key.strip()] = value.strip().strip("'\"")
    return out


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    profile: str | None = None,
    config: Path | None = None,
) -> dict[str, Setting]:
    """Every setting with its value and where it came from."""
    name = profile or environ.get("BULKPATCH_PROFILE", "").strip() or None
    chosen: dict[str, Any] = {}
    where = ""
    secrets: dict[str, str] = {}
    secrets_where = ""
    if name is not None:
        path = config or Path(CONFIG_FILE)
        chosen = _profile(name, path)
        where = f"profile {name} ({path})"
        if "secrets" in chosen:
            file = Path(str(chosen["secrets"])).expanduser()
            if not file.is_absolute():
                file = path.parent / file
            secrets = _secrets(file)
            secrets_where = f"secrets {file}"
    out: dict[str, Setting] = {}
    for key, spec in SPECS.items():
        value = flags.get(spec.flag) if spec.flag else None
        if value is not None:
            out[key] = Setting(value, f"flag --{spec.flag.replace('_', '-')}")  # type: ignore[union-attr]
            continue
        env_value = environ.get(spec.env, "").strip() if spec.env else ""
        if env_value:
            out[key] = Setting(env_value, f"env {spec.env}")
        elif spec.env in secrets:
            out[key] = Setting(secrets[spec.env], secrets_where)
        elif spec.profile_key is not None and spec.profile_key in chosen:
            out[key] = Setting(chosen[spec.profile_key], where)
        else:
            out[key] = Setting(spec.default, "default")
    for key in (
        "endpoint", "org_id", "sandbox", "api_key", "ims_url", "scopes", "container_id",
        "schema_id", "update_verb", "if_match",
    ):
        setting = out[key]
        if setting.value is not None and not isinstance(setting.value, str):
            # A TOML number or table where text is meant: say where it came from.
            raise ConfigError(f"{key} must be text, got {setting.value!r} ({setting.source})")
    if out["dialect"].value not in ("dps", "xcore"):
        raise ConfigError(f"dialect {out['dialect'].value!r} is not one of dps, xcore")
    for key, allowed in (("update_verb", ("put", "patch")), ("if_match", ("honoured", "ignored"))):
        if out[key].value not in allowed:
            raise ConfigError(
                f"{key} {out[key].value!r} is not one of {', '.join(allowed)} ({out[key].source})"
            )
    if out["dialect"].value == "xcore" and out["endpoint"].source == "default":
        out["endpoint"] = Setting(DEFAULT_XCORE_ENDPOINT, "default (xcore)")
    return out


def masked(value: Any) -> str:
    """A secret as ``config show`` prints it: that it is set, and nothing of it."""
    return f"*** ({len(str(value))} chars)"


def show(settings: Mapping[str, Setting]) -> str:
    width = max(map(len, settings))
    lines = []
    for key, setting in settings.items():
        value = setting.value
        if value is None:
            shown = "(not set)"
        elif key in SECRET_SETTINGS:
            shown = masked(value)
        else:
            shown = str(value)
        lines.append(f"{key:<{width}}  {shown:<48}  {setting.source}")
    return "\n".join(lines)

