"""Static sharding in the daemon config: `shard: {"index": i, "count": n}`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from poller.cli.main import main
from poller.config import ConfigError, ShardConfig, parse_config


def _config(shard: object, agents: int = 40) -> dict[str, Any]:
    return {
        "poller_id": "poller-1",
        "shard": shard,
        "agents": {f"edge-{i}": {"address": f"10.0.0.{i + 1}:50051", "tenant": "acme-corp"} for i in range(agents)},
    }


def test_two_shards_split_the_agents_without_overlap() -> None:
    first = parse_config(_config({"index": 0, "count": 2}))
    second = parse_config(_config({"index": 1, "count": 2}))
    assert first.shard == ShardConfig(index=0, count=2)
    mine = {a.name for a in first.polled_agents}
    theirs = {a.name for a in second.polled_agents}
    assert mine and theirs
    assert not mine & theirs
    assert mine | theirs == {a.name for a in first.agents}


def test_the_shard_is_computed_once_per_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 14: the scheduler reads polled_agents once per agent, so
    hashing the whole fleet on each read made start-up quadratic."""
    import poller.config.model as model

    calls: list[int] = []
    real = model.shard_of

    def counting(names: Any, count: int) -> Any:
        calls.append(count)
        return real(names, count)

    monkeypatch.setattr(model, "shard_of", counting)
    config = parse_config(_config({"index": 0, "count": 3}))
    first = config.polled_agents
    assert all(config.polled_agents is first for _ in range(100))
    assert calls == [3]
    other = replace(config, shard=ShardConfig(index=1, count=3))  # new settings: a new share
    assert not {a.name for a in other.polled_agents} & {a.name for a in first}
    assert calls == [3, 3]


def test_without_shard_every_agent_is_polled() -> None:
    config = parse_config({k: v for k, v in _config(None).items() if k != "shard"})
    assert config.shard is None
    assert config.polled_agents == config.agents


@pytest.mark.parametrize(
    ("shard", "path", "message"),
    [
        ({"index": 2, "count": 2}, "shard.index", "not below shard.count"),
        ({"index": -1, "count": 2}, "shard.index", "out of range"),
        ({"index": 0, "count": 0}, "shard.count", "out of range"),
        ({"count": 2}, "shard.index", "required"),
        ({"index": 0, "count": 2, "cuont": 3}, "shard.cuont", "did you mean"),
        ({"index": "0", "count": 2}, "shard.index", "expected an integer"),
        ([0, 2], "shard", "expected an object"),
    ],
)
def test_bad_shard_settings_are_named_with_their_path(shard: object, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(shard))
    assert any(issue.path == path and message in issue.message for issue in info.value.issues), info.value.issues


def test_config_check_shows_the_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "poller.json"
    path.write_text(json.dumps(_config({"index": 1, "count": 3}, agents=30)))
    assert main(["config", "check", "--no-files", str(path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("shard ")]
    assert len(lines) == 3
    assert sum(int(line.split(": ")[1].split()[0]) for line in lines) == 30
    assert lines[1].endswith("<- this replica")
