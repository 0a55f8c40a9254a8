"""Settings: flags, then the environment, then a named profile, then the defaults."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bulkpatch.errors import ConfigError
from bulkpatch.settings import resolve
from bulkpatch.simulator import SimConfig, running
from tests.test_run_cli import CLI, WAIT_S, Finished, clean_env, ndjson, replace_name

PROFILES = """
[profiles.rehearsal]
endpoint = "http://127.0.0.1:9/data/core/dps"
org = "PROFILE@AdobeOrg"
sandbox = "profile-sandbox"
rate = 200
concurrency = 8
secrets = "rehearsal.env"
"""
SECRET = "s3cret-client-secret-value"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bulkpatch.toml"
    path.write_text(PROFILES)
    secrets = tmp_path / "rehearsal.env"
    secrets.write_text(f"# for the rehearsal\nADOBE_CLIENT_ID=profile-client\nADOBE_CLIENT_SECRET={SECRET}\n")
    secrets.chmod(0o600)
    return path


def test_a_flag_beats_the_environment_which_beats_the_profile(config: Path) -> None:
    settings = resolve(
        {"sandbox": "flag-sandbox"},
        {"ADOBE_SANDBOX_NAME": "env-sandbox", "ADOBE_ORG_ID": "ENV@AdobeOrg"},
        profile="rehearsal",
        config=config,
    )
    assert (settings["sandbox"].value, settings["sandbox"].source) == ("flag-sandbox", "flag --sandbox")
    assert (settings["org_id"].value, settings["org_id"].source) == ("ENV@AdobeOrg", "env ADOBE_ORG_ID")
    assert settings["rate"].value == 200
    assert settings["rate"].source.startswith("profile rehearsal")
    assert settings["client_secret"].value == SECRET
    assert settings["client_secret"].source.startswith("secrets ")
    assert settings["dialect"].source == "default"


def test_a_profile_applies_only_when_named(config: Path) -> None:
    unnamed = resolve({}, {}, config=config)
    assert unnamed["endpoint"].source == "default"
    assert unnamed["client_secret"].value is None
    by_env = resolve({}, {"BULKPATCH_PROFILE": "rehearsal"}, config=config)
    assert by_env["endpoint"].value == "http://127.0.0.1:9/data/core/dps"


def test_secrets_readable_by_others_are_refused(config: Path) -> None:
    (config.parent / "rehearsal.env").chmod(0o644)
    with pytest.raises(ConfigError, match="can be read by other users") as caught:
        resolve({}, {}, profile="rehearsal", config=config)
    assert SECRET not in str(caught.value)


def test_unknown_profiles_and_settings_are_named(config: Path) -> None:
    with pytest.raises(ConfigError, match=r"no profile 'prod'.*rehearsal"):
        resolve({}, {}, profile="prod", config=config)
    config.write_text('[profiles.x]\nclient_secret = "oops"\n')
    with pytest.raises(ConfigError, match=r"unknown setting.*client_secret") as caught:
        resolve({}, {}, profile="x", config=config)
    assert "oops" not in str(caught.value)


async def cli(*args: str, cwd: Path, env: dict[str, str], stdin: bytes | None = None) -> Finished:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), WAIT_S)
    assert proc.returncode is not None
    return Finished(proc.returncode, out, err)


async def test_config_show_says_where_each_setting_came_from_and_masks_secrets(config: Path) -> None:
    env = clean_env(ADOBE_SANDBOX_NAME="from-env", PYTHONPATH=os.getcwd())
    done = await cli("config", "show", "--profile", "rehearsal", cwd=config.parent, env=env)
    assert done.code == 0
    text = done.stdout.decode()
    rows = {line.split()[0]: line for line in text.splitlines()}
    assert "from-env" in rows["sandbox"]
    assert "env ADOBE_SANDBOX_NAME" in rows["sandbox"]
    assert "PROFILE@AdobeOrg" in rows["org_id"]
    assert "profile rehearsal" in rows["org_id"]
    assert "*** (26 chars)" in rows["client_secret"]
    assert SECRET not in text + done.stderr.decode()


async def test_a_run_takes_endpoint_and_credentials_from_the_named_profile(tmp_path: Path) -> None:
    async with running(SimConfig(offers=3)) as sim:
        (tmp_path / "bulkpatch.toml").write_text(
            f'[profiles.local]\nendpoint = "{sim.endpoint}"\norg = "P@AdobeOrg"\n'
            'sandbox = "prod"\nrate = 0\nsecrets = "local.env"\n'
        )
        secrets = tmp_path / "local.env"
        secrets.write_text(f"ADOBE_ACCESS_TOKEN={sim.config.access_token}\n")
        secrets.chmod(0o600)
        env = clean_env(ADOBE_API_KEY="k", PYTHONPATH=os.getcwd())
        jobs = ndjson([replace_name("personalizedOffer000001", "From profile")])
        unnamed = await cli("run", "-", cwd=tmp_path, env=env, stdin=jobs)
        named = await cli("run", "-", "--profile", "local", cwd=tmp_path, env=env, stdin=jobs)
    # Without --profile the file is ignored: no credentials, exit 2, nothing sent.
    assert unnamed.code == 2
    assert b"no credentials" in unnamed.stderr
    assert named.code == 0, named.stderr.decode()[-1500:]
    assert named.outcomes()[0]["ok"] is True
    assert sim.config.access_token.encode() not in named.stdout + named.stderr
