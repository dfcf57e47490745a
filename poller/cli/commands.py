"""The subcommands, in the order `--help` lists them; each module registers its own parser."""

from __future__ import annotations

from poller.cli import cluster, config, mock_agent, pki, probe, run

REGISTRARS = (probe.register, run.register, config.register, cluster.register, pki.register, mock_agent.register)
