"""The package's public surface and its layers, as a user of the library meets them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import bulkpatch

PACKAGE = Path(bulkpatch.__file__).parent


def test_the_exported_names_are_pinned_and_each_resolves() -> None:
    assert bulkpatch.__all__ == [
        "BadLine",
        "BulkpatchError",
        "ConfigError",
        "Credentials",
        "Engine",
        "InputError",
        "Job",
        "Outcome",
        "RunConfig",
        "__version__",
        "parse_line",
        "patch_all",
        "read_jobs",
    ]
    for name in bulkpatch.__all__:
        assert getattr(bulkpatch, name) is not None


def test_importing_a_pure_module_loads_no_http_stack() -> None:
    probe = (
        "import sys, bulkpatch.retry, bulkpatch.verify, bulkpatch.jobs\n"
        "loaded = sorted(m for m in ('aiohttp', 'bulkpatch.engine', 'structlog') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == ""


def _configures_structlog(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.Attribute) and node.attr == "configure" and isinstance(node.value, ast.Name)
        and node.value.id == "structlog"
        for node in ast.walk(tree)
    )


def test_only_the_cli_configures_logging() -> None:
    configuring = sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if _configures_structlog(p)
    )
    assert configuring == ["cli/logs.py"]


def test_run_config_builds_the_small_objects_the_parts_read() -> None:
    from bulkpatch.auth import Credentials
    from bulkpatch.config import RunConfig

    config = RunConfig(
        credentials=Credentials(access_token="t"), api_key="k", org_id="O@AdobeOrg", sandbox="prod",
        rate=0, concurrency=4, max_attempts=3, backoff_base=0.1, backoff_cap=2, guard="always",
        allow_delete=True, create_key="externalId",
    )
    assert config.api.headers == {"x-api-key": "k", "x-gw-ims-org-id": "O@AdobeOrg", "x-sandbox-name": "prod"}
    assert config.api.timeout_s == 30.0
    assert (config.retry_policy.max_attempts, config.retry_policy.backoff_cap_s) == (3, 2)
    assert not config.pacing.paced
    assert config.mode.guard == "always"
    assert (config.job_rules.allow_delete, config.job_rules.create_key) == (True, "externalId")
    assert (config.capacity.concurrency, config.capacity.held) == (4, 1024)


def test_a_config_error_names_the_setting_for_a_library_and_the_flag_for_the_cli() -> None:
    import pytest

    from bulkpatch.config import RunConfig
    from bulkpatch.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        RunConfig(max_attempts=0, dry_run=True)
    assert str(caught.value) == "max_attempts must be > 0, got 0"
    assert caught.value.flag_message() == "--max-attempts must be > 0, got 0"
