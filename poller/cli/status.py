"""`serviceradar-poller status`: a running daemon's agents as a terminal table.

Reads the daemon's `GET /status` (served on metrics_listen) and prints one
row per agent, refused and unreachable ones first, with the reason below the
table. `--json` prints the daemon's JSON as is. Exit status, as `run --once`:
0 every agent proven (or none configured), 3 any refused, 4 any unreachable or
still pending (and none refused), 2 bad usage or no answer from the daemon.

>>> format_table(json.loads(urlopen("http://127.0.0.1:9464/status").read()))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from poller.cli.common import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from poller.daemon.status import EXPIRY_WARNING_DAYS, AgentState
from poller.identity.names import is_label
from poller.identity.reasons import PollerError
from poller.logs import printable

DEFAULT_URL = "http://127.0.0.1:9464"
_ORDER = {state.value: i for i, state in enumerate(AgentState)}  # refused, unreachable, pending, proven
# LAST POLL of a push agent is its last push; ADDRESS its peer ("push from HOST:PORT").
_COLUMNS = ("TENANT", "AGENT", "STATE", "REASON", "CERT DAYS", "LAST POLL", "LATENCY", "FAILS", "CHECKS", "ADDRESS")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="show a running daemon's agents (proven, refused, unreachable, pending)",
        description=(
            "Ask a running daemon (its metrics_listen address) for the state of every agent and "
            "print a compact table. Exit status: 0 every agent proven, 3 any refused, 4 any "
            "unreachable or pending and none refused, 2 bad usage or the daemon cannot be reached."
        ),
    )
    p.add_argument("--url", default=DEFAULT_URL, help=f"the daemon's metrics_listen base URL (default {DEFAULT_URL})")
    p.add_argument("--tenant", metavar="SLUG", help="only this tenant's agents")
    p.add_argument("--json", action="store_true", help="print the daemon's JSON instead of a table")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="HTTP timeout (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.tenant is not None and not is_label(args.tenant):
        return _usage(f"--tenant {args.tenant!r} is not a lowercase DNS label")
    if not args.timeout > 0:
        return _usage("--timeout must be positive")
    url = status_url(args.url, args.tenant)
    if url is None:
        return _usage(f"--url {args.url!r} is not an http:// or https:// URL")
    try:
        agents = fetch_status(url, timeout=args.timeout)
    except StatusUnavailable as exc:
        return _usage(str(exc))
    if args.json:
        sys.stdout.write(json.dumps(agents, indent=1) + "\n")
    else:
        sys.stdout.write(format_table(agents))
    sys.stdout.flush()
    return exit_code(agents)


class StatusUnavailable(PollerError):
    """The daemon's /status could not be read (no answer, an HTTP error, not the expected JSON)."""


def status_url(base: str, tenant: str | None = None) -> str | None:
    """The /status URL under base (which may already end in /status); None if base is not http(s)."""
    parts = urlsplit(base if "://" in base else f"http://{base}")  # "127.0.0.1:9464" is fine too
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    path = parts.path.rstrip("/")
    if not path.endswith("/status"):
        path += "/status"
    query = f"?{urlencode({'tenant': tenant})}" if tenant else ""
    return f"{parts.scheme}://{parts.netloc}{path}{query}"


def fetch_status(url: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The agent objects of a daemon's /status; StatusUnavailable names what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            body = reply.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace").strip()
        raise StatusUnavailable(f"{url} answered {exc.code} {exc.reason}: {_clean(detail)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusUnavailable(f"cannot read {url}: {reason} (is the daemon running with metrics_listen set?)") from None
    try:
        agents = json.loads(body)
    except ValueError:
        raise StatusUnavailable(f"{url} did not answer JSON") from None
    if not isinstance(agents, list) or not all(isinstance(a, dict) and "state" in a for a in agents):
        raise StatusUnavailable(f"{url} did not answer a list of agent objects")
    return agents


def exit_code(agents: Sequence[dict[str, Any]]) -> int:
    """3 if any agent is refused, else 4 if any is not proven, else 0."""
    states = {a.get("state") for a in agents}
    if AgentState.REFUSED in states:
        return EXIT_REFUSED
    if states - {AgentState.PROVEN}:
        return EXIT_UNREACHABLE
    return EXIT_OK


def format_table(agents: Sequence[dict[str, Any]], *, now: datetime | None = None) -> str:
    """A compact table, worst state first, then the reasons and a count line."""
    now = now or datetime.now(UTC)
    ordered = sorted(agents, key=lambda a: (_ORDER.get(str(a.get("state")), 9), str(a.get("tenant")), str(a.get("name"))))
    rows = [_COLUMNS, *(_row(a, now) for a in ordered)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    notes = [
        f"  {_clean(a.get('tenant'))}/{_clean(a.get('name'))}: {_clean(a.get('reason'))}: {_clean(a.get('detail'))}"
        for a in ordered
        if a.get("reason") and a.get("detail")
    ]
    if notes:
        lines += ["", "why:", *notes]
    counts = Counter(str(a.get("state")) for a in agents)
    summary = ", ".join(f"{counts[s]} {s}" for s in _ORDER if counts[s]) or "no agents"
    lines += ["", f"{len(agents)} agent{'' if len(agents) == 1 else 's'}: {summary}"]
    return "\n".join(lines) + "\n"


def _row(agent: dict[str, Any], now: datetime) -> tuple[str, ...]:
    identity = agent.get("identity") or {}
    days = identity.get("days_left")
    cert = "-" if days is None else (f"{days:.0f}!" if days < EXPIRY_WARNING_DAYS else f"{days:.0f}")
    latency = agent.get("last_latency")
    checks = agent.get("checks") or []
    ok = sum(1 for c in checks if c.get("outcome") == "ok")
    push = agent.get("mode") == "push"
    if push:
        peer = agent.get("peer_address")
        address = f"push from {_clean(peer)}" if peer else "push (none yet)"
    else:
        address = _clean(agent.get("address") or "-")
    return (
        _clean(agent.get("tenant")),
        _clean(agent.get("name")) + (" (push)" if push else ""),
        _clean(agent.get("state")),
        _clean(agent.get("reason") or "-"),
        cert,
        _age(agent.get("last_push") if push else agent.get("last_poll"), now),
        "-" if latency is None else f"{latency * 1000:.0f}ms",
        str(agent.get("consecutive_failures", 0)),
        f"{ok}/{len(checks)} ok" if checks else "-",
        address,
    )


def _age(stamp: Any, now: datetime) -> str:
    if not isinstance(stamp, str):
        return "never"
    try:
        seconds = (now - datetime.fromisoformat(stamp)).total_seconds()
    except ValueError:
        return _clean(stamp)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _clean(value: Any) -> str:
    """Printable text only: a certificate's strings must not drive the terminal (escape sequences)."""
    return printable("" if value is None else str(value))


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE
