"""Settings from the command line and the environment, over the config file.

Precedence, highest first: command-line flag, environment variable, the
config file's key, the default. A container or a unit file sets the poller's
identity per replica without rewriting the file:

| Flag | Environment | Config key | Default |
|---|---|---|---|
| `--config FILE` | `SERVICERADAR_POLLER_CONFIG` | - | `/etc/serviceradar/poller.json` |
| `--poller-id ID` | `SERVICERADAR_POLLER_ID` | `poller_id` | - (required) |
| `--log-level LEVEL` | `SERVICERADAR_POLLER_LOG_LEVEL` | `log_level` | `info` |
| `--log-format FORMAT` | `SERVICERADAR_POLLER_LOG_FORMAT` | `log_format` | `auto` |

An override is checked as the file's key is; a bad one is a ConfigError
naming the flag or the variable. The daemon applies the same overrides to
the file it re-reads on SIGHUP.

>>> o = Overrides.gather(poller_id=None, environ={"SERVICERADAR_POLLER_ID": "poller-7"})
>>> o.poller_id, o.source["poller_id"]
('poller-7', 'SERVICERADAR_POLLER_ID')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from poller.config.engine import ConfigError, ConfigIssue, show
from poller.config.model import LOG_FORMATS, LOG_LEVELS, LogFormat, LogLevel, PollerConfig

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_CONFIG",
    "ENV_LOG_FORMAT",
    "ENV_LOG_LEVEL",
    "ENV_POLLER_ID",
    "Overrides",
    "config_path",
]

DEFAULT_CONFIG_PATH = Path("/etc/serviceradar/poller.json")
ENV_CONFIG = "SERVICERADAR_POLLER_CONFIG"
ENV_POLLER_ID = "SERVICERADAR_POLLER_ID"
ENV_LOG_LEVEL = "SERVICERADAR_POLLER_LOG_LEVEL"
ENV_LOG_FORMAT = "SERVICERADAR_POLLER_LOG_FORMAT"

_FLAGS = {"poller_id": "--poller-id", "log_level": "--log-level", "log_format": "--log-format"}
_ENV = {"poller_id": ENV_POLLER_ID, "log_level": ENV_LOG_LEVEL, "log_format": ENV_LOG_FORMAT}


def config_path(flag: str | Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """The config file to read: `--config`, else $SERVICERADAR_POLLER_CONFIG, else /etc/serviceradar/poller.json.

    >>> config_path(None, {}), config_path("p.json", {ENV_CONFIG: "q.json"})
    (PosixPath('/etc/serviceradar/poller.json'), PosixPath('p.json'))
    """
    env = os.environ if environ is None else environ
    if flag:
        return Path(flag)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    return DEFAULT_CONFIG_PATH


@dataclass(frozen=True, slots=True)
class Overrides:
    """Values that win over the config file's (None: keep the file's); `source`
    names where each came from (a flag or a variable), for error messages."""

    poller_id: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    source: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def gather(
        cls,
        *,
        poller_id: str | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Overrides:
        """The flags given (not None), else the environment's variables (set and not empty)."""
        env = os.environ if environ is None else environ
        flags = {"poller_id": poller_id, "log_level": log_level, "log_format": log_format}
        values: dict[str, str] = {}
        source: dict[str, str] = {}
        for key, flag_value in flags.items():
            if flag_value is not None:
                values[key], source[key] = flag_value, _FLAGS[key]
            elif env.get(_ENV[key]):
                values[key], source[key] = env[_ENV[key]], _ENV[key]
        return cls(**values, source=source)

    def apply(self, config: PollerConfig) -> PollerConfig:
        """`config` with these values in place of the file's; ConfigError naming the flag or variable."""
        issues: list[ConfigIssue] = []
        changes: dict[str, object] = {}
        if self.poller_id is not None:
            if self.poller_id.strip() != self.poller_id or not self.poller_id:
                issues.append(ConfigIssue(self._where("poller_id"), "must be a non-empty string without surrounding spaces"))
            changes["poller_id"] = self.poller_id
        if self.log_level is not None:
            level = self.log_level.lower()
            if level not in LOG_LEVELS:
                issues.append(
                    ConfigIssue(self._where("log_level"), f"{show(self.log_level)} is not one of {', '.join(LOG_LEVELS)}")
                )
            changes["log_level"] = cast(LogLevel, level)
        if self.log_format is not None:
            if self.log_format not in LOG_FORMATS:
                issues.append(
                    ConfigIssue(self._where("log_format"), f"{show(self.log_format)} is not one of {', '.join(LOG_FORMATS)}")
                )
            changes["log_format"] = cast(LogFormat, self.log_format)
        if issues:
            raise ConfigError(issues)
        return replace(config, **changes) if changes else config  # type: ignore[arg-type]

    def _where(self, key: str) -> str:
        return self.source.get(key, _FLAGS[key])
