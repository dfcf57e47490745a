"""Configuration from the command line and the environment (issue 20).

Precedence: flag > environment > config file > default, for the config path
(--config, SERVICERADAR_POLLER_CONFIG, /etc/serviceradar/poller.json), the
poller id (--poller-id, SERVICERADAR_POLLER_ID, poller_id), the log level
(--log-level, SERVICERADAR_POLLER_LOG_LEVEL, log_level) and the log format
(--log-format, SERVICERADAR_POLLER_LOG_FORMAT, log_format). The process
tests run `serviceradar-poller run --once` for real against a mock agent.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from spawn import spawn_cli
from test_daemon_process import write_config

from poller.config import ConfigError, parse_config
from poller.config.overrides import DEFAULT_CONFIG_PATH, Overrides, config_path

ACME = "acme-corp"
BASE = {"poller_id": "from-file", "agents": {"a": {"address": "h:1", "tenant": ACME}}}


def test_flag_beats_environment_beats_file():
    config = parse_config(BASE)
    env = {"SERVICERADAR_POLLER_ID": "from-env", "SERVICERADAR_POLLER_LOG_LEVEL": "warning"}
    assert Overrides.gather(environ={}).apply(config).poller_id == "from-file"
    from_env = Overrides.gather(environ=env).apply(config)
    assert (from_env.poller_id, from_env.log_level) == ("from-env", "warning")
    from_flag = Overrides.gather(poller_id="from-flag", log_level="debug", environ=env).apply(config)
    assert (from_flag.poller_id, from_flag.log_level) == ("from-flag", "debug")
    assert Overrides.gather(environ={"SERVICERADAR_POLLER_ID": ""}).apply(config).poller_id == "from-file"  # empty: unset


def test_config_path_precedence():
    assert config_path(None, {}) == DEFAULT_CONFIG_PATH == Path("/etc/serviceradar/poller.json")
    assert config_path(None, {"SERVICERADAR_POLLER_CONFIG": "/srv/p.json"}) == Path("/srv/p.json")
    assert config_path("mine.json", {"SERVICERADAR_POLLER_CONFIG": "/srv/p.json"}) == Path("mine.json")


def test_a_bad_override_names_where_it_came_from():
    config = parse_config(BASE)
    with pytest.raises(ConfigError) as info:
        Overrides.gather(environ={"SERVICERADAR_POLLER_LOG_LEVEL": "loud", "SERVICERADAR_POLLER_ID": " p "}).apply(config)
    assert [str(i) for i in info.value.issues] == [
        "SERVICERADAR_POLLER_ID: must be a non-empty string without surrounding spaces",
        'SERVICERADAR_POLLER_LOG_LEVEL: "loud" is not one of debug, info, warning, error',
    ]


def test_log_level_is_a_config_key():
    assert parse_config(BASE).log_level == "info"
    assert parse_config({**BASE, "log_level": "error"}).log_level == "error"
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "log_level": "verbose"})
    assert [str(i) for i in info.value.issues] == ['log_level: "verbose" is not one of debug, info, warning, error']


async def run_once(*args: str, env: dict[str, str]) -> tuple[int, list[str]]:
    proc = await spawn_cli(
        "run", "--once", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env={**os.environ, **env}
    )
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode().splitlines()


def events(lines: list[str]) -> list[dict]:
    return [json.loads(l) for l in lines if l.startswith("{")]


async def test_run_takes_its_config_and_id_from_the_environment_and_flags(pki, serve, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    config, data = tmp_path / "poller.json", tmp_path / "data"
    write_config(config, pki, {"a": agent}, data)
    env = {"SERVICERADAR_POLLER_CONFIG": str(config), "SERVICERADAR_POLLER_ID": "poller-env"}
    code, err = await run_once(env=env)
    assert code == 0, err
    [line] = [json.loads(l) for l in (data / ACME / "results.jsonl").read_text().splitlines()]
    assert line["poller_id"] == "poller-env"
    code, err = await run_once("--poller-id", "poller-flag", env=env)
    assert code == 0, err
    assert json.loads((data / ACME / "results.jsonl").read_text().splitlines()[-1])["poller_id"] == "poller-flag"


async def test_log_level_and_format_from_flags_and_environment(pki, serve, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    config, data = tmp_path / "poller.json", tmp_path / "data"
    write_config(config, pki, {"a": agent}, data)  # log_format json in the file
    env = {"SERVICERADAR_POLLER_CONFIG": str(config)}
    _, err = await run_once(env=env)
    levels = {e["level"] for e in events(err)}
    assert "info" in levels and "debug" not in levels  # the default level
    _, err = await run_once("--log-level", "error", env=env)
    assert not [e for e in events(err) if e["level"] in ("debug", "info", "warning")]
    _, err = await run_once(env={**env, "SERVICERADAR_POLLER_LOG_LEVEL": "debug"})
    assert "debug" in {e["level"] for e in events(err)}
    _, err = await run_once("--log-format", "console", env=env)
    assert err and not events(err)  # console lines, not JSON
    assert any(" INFO " in l for l in err)


async def test_without_a_config_run_names_the_default_path(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICERADAR_POLLER_")}
    assert not DEFAULT_CONFIG_PATH.exists()  # this machine has no installed poller
    proc = await spawn_cli("run", "--once", stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "/etc/serviceradar/poller.json: cannot read: no such file" in err.decode()
    assert "SERVICERADAR_POLLER_CONFIG" in err.decode()


async def test_a_reload_keeps_the_overrides(pki, serve, tmp_path):
    from poller.config import load_config
    from poller.daemon.daemon import PollerDaemon
    from poller.testing.memory_sink import MemorySink

    agent = await serve(pki.agent(ACME, "agent-001"))
    config, data = tmp_path / "poller.json", tmp_path / "data"
    write_config(config, pki, {"a": agent}, data)
    overrides = Overrides.gather(poller_id="poller-flag", environ={})
    daemon = PollerDaemon(overrides.apply(load_config(config)), sink=MemorySink(), overrides=overrides)
    assert await daemon.reload()
    assert daemon.settings.poller_id == "poller-flag"  # not the file's poller-proc
    await daemon.shutdown()
