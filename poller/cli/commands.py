"""The list of subcommands; each module registers its own parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Registrar]:
    found: list[Registrar] = []
    # Imported lazily so that `--help` of one command does not pay for all.
    import importlib

    for name in ("probe", "pki", "mock_agent", "config", "run"):
        try:
            module = importlib.import_module(f"poller.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"poller.cli.{name}":
                raise
            continue
        found.append(module.register)
    return found


REGISTRARS = _registrars()
