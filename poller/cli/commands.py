"""The subcommands, in the order `--help` lists them; each module registers its own parser."""

from __future__ import annotations

from poller.cli import config, mock_agent, pki, probe, run, status

REGISTRARS = (probe.register, run.register, status.register, config.register, pki.register, mock_agent.register)
