"""The subcommands, in the order `--help` lists them; each module registers its own parser."""

from __future__ import annotations

from poller.cli import cluster, config, mock_agent, nats_config, onboard, pki, probe, run, status, tail

REGISTRARS = (
    probe.register,
    run.register,
    status.register,
    config.register,
    cluster.register,
    pki.register,
    onboard.register,
    mock_agent.register,
    nats_config.register,
    tail.register,
)
