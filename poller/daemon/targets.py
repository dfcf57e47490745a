"""The targets page: `GET /`, in the manner of Prometheus's /targets.

Server-rendered from the same objects as `GET /status`, with no script and no
outside asset (the machines it runs on may have no internet); it refreshes
itself. A "needs attention" table comes first: every tenant's refused and
unreachable agents with their reasons, and certificates expiring in under
EXPIRY_WARNING_DAYS (14). Then agents grouped by tenant with counts by state,
refused and unreachable first, expiry under 14 days highlighted. Every string
that comes from a certificate or the configuration is HTML-escaped: a
certificate's subject is chosen by whoever made it.

>>> page = render_targets_page(to_json(board.snapshot(agents)), poller_id="poller-1")  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

from poller.daemon.status import EXPIRY_WARNING_DAYS, AgentState
from poller.identity import certinfo
from poller.identity.context import format_time

_ORDER = {state.value: i for i, state in enumerate(AgentState)}  # refused, unreachable, pending, proven

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.4em 0 .4em}
.meta{color:#555;margin:0 0 1em}.counts span{margin-right:.8em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top;overflow-wrap:anywhere}
table.about{width:auto;margin-bottom:1em}table.about th{font-weight:normal;color:#555;background:#f7f7f7}
th{background:#f0f0f0}small{color:#666}code{font-size:.9em;word-break:break-all}
.state{font-weight:600;border-radius:3px;padding:0 .4em;color:#fff;white-space:nowrap}
.s-proven{background:#2e7d32}.s-refused{background:#c62828}.s-unreachable{background:#ef6c00}.s-pending{background:#757575}
tr.row-refused td{background:#fdecea}tr.row-unreachable td{background:#fff4e5}
td.expiring{background:#fff3cd;font-weight:600}td.expired{background:#f8d7da;font-weight:600}
.bad{color:#c62828}
""".strip()


def render_targets_page(
    agents: Sequence[dict[str, Any]],
    *,
    poller_id: str,
    tenant: str | None = None,
    refresh_seconds: float = 10.0,
    now: datetime | None = None,
    about: dict[str, Any] | None = None,
) -> str:
    """The whole page as a string (agents are `GET /status` objects; `about` is
    PollerDaemon.about(): the "this poller" panel, left out when None)."""
    now = now or certinfo.utcnow()
    refresh = max(2, round(refresh_seconds))
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for agent in agents:
        by_tenant.setdefault(agent["tenant"], []).append(agent)
    title = "serviceradar-poller targets" + (f" · {tenant}" if tenant else "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{refresh}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Targets of poller {_e(poller_id)}</h1>",
        f'<p class="meta">{len(agents)} agent{"" if len(agents) == 1 else "s"} in {len(by_tenant)} '
        f"tenant{'' if len(by_tenant) == 1 else 's'}: {_counts(agents)} · "
        f"as of {_e(format_time(now))} · refreshes every {refresh} s · "
        f'<a href="/status{_query(tenant)}">JSON</a> · <a href="/metrics">metrics</a>'
        + (' · <a href="/">all tenants</a>' if tenant else "")
        + "</p>",
    ]
    if about is not None:
        parts.append(_about(about))
    if not agents:
        parts.append("<p>No agents" + (f" of tenant {_e(tenant)}" if tenant else " configured") + ".</p>")
    parts.append(_attention(agents))
    for slug in sorted(by_tenant):
        rows = sorted(by_tenant[slug], key=lambda a: (_ORDER.get(a["state"], 99), a["name"]))
        parts.append(
            f'<section id="tenant-{_e(slug)}"><h2><a href="/{_query(slug)}">{_e(slug)}</a> '
            f'<small class="counts">{_counts(rows)}</small></h2>'
        )
        parts.append(
            "<table><thead><tr><th>Agent</th><th>State</th><th>Reason</th><th>Identity</th>"
            "<th>Certificate expiry</th><th>Last poll / push</th><th>Latency</th><th>Failures</th><th>Checks</th>"
            "</tr></thead><tbody>"
        )
        parts.extend(_row(agent, now) for agent in rows)
        parts.append("</tbody></table></section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _about(about: dict[str, Any]) -> str:
    """This poller: version, uptime, NATS connected, outbox depth, own certificate, gateway."""
    uptime = about.get("uptime_seconds")
    nats = about.get("nats_connected")
    pending = about.get("outbox_pending")
    cert = about.get("certificate") or {}
    gateway = about.get("gateway")
    days = cert.get("days_left")
    expiry_css = "" if days is None or days >= EXPIRY_WARNING_DAYS else (' class="expired"' if days < 0 else ' class="expiring"')
    rows = [
        ("Version", _e(about.get("version", "?"))),
        ("Uptime", "not started" if uptime is None else _duration(float(uptime))),
        ("NATS", "not used (file sink)" if nats is None else ("connected" if nats else '<b class="bad">not connected</b>')),
        ("Outbox", "-" if pending is None else f"{int(pending)} waiting for a JetStream ack"),
        (
            "Own certificate",
            f"<code>{_e(cert.get('cn', ''))}</code><br><small>expires {_e(cert.get('not_after', '?'))}"
            + ("" if days is None else f" ({float(days):.1f} days)")
            + "</small>",
        ),
        (
            "Gateway",
            "not configured"
            if gateway is None
            else (_e(gateway["detail"]) if gateway["ok"] else f'<b class="bad">{_e(gateway["detail"])}</b>'),
        ),
    ]
    cells = "".join(
        f"<tr><th>{name}</th><td{expiry_css if name == 'Own certificate' else ''}>{value}</td></tr>" for name, value in rows
    )
    return f'<section id="this-poller"><h2>This poller</h2><table class="about"><tbody>{cells}</tbody></table></section>'


def _duration(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _attention(agents: Sequence[dict[str, Any]]) -> str:
    """Every tenant's refused and unreachable agents, and certificates about to expire, at the top."""
    problems = sorted(
        (a for a in agents if a["state"] in (AgentState.REFUSED, AgentState.UNREACHABLE) or _expiring(a)),
        key=lambda a: (_ORDER.get(a["state"], 99), a["tenant"], a["name"]),
    )
    if not problems:
        return ""
    rows = []
    for a in problems:
        state = str(a["state"])
        why = _reason_cell(a) if a.get("reason") else f"certificate expires in {_days_left(a):.1f} days"
        rows.append(
            f'<tr class="attention-{_e(state)}"><td>{_e(a["tenant"])}</td><td>{_e(a["name"])}</td>'
            f'<td><span class="state s-{_e(state)}">{_e(state)}</span></td><td>{why}</td></tr>'
        )
    return (
        f'<section id="attention"><h2>Needs attention <small>({len(problems)})</small></h2>'
        "<table><thead><tr><th>Tenant</th><th>Agent</th><th>State</th><th>Why</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _days_left(agent: dict[str, Any]) -> float:
    identity = agent.get("identity") or {}
    return float(identity.get("days_left", "inf"))


def _expiring(agent: dict[str, Any]) -> bool:
    return _days_left(agent) < EXPIRY_WARNING_DAYS


def _row(agent: dict[str, Any], now: datetime) -> str:
    state = str(agent["state"])
    identity = agent.get("identity")
    cells = [
        f"{_e(agent['name'])}<br><small>{_where(agent)}</small>",
        f'<span class="state s-{_e(state)}">{_e(state)}</span>',
        _reason_cell(agent),
        (f"<code>{_e(identity['cn'])}</code><br><small>serial {_e(identity['serial'])}</small>" if identity else "-"),
        _expiry_cell(identity),
        _age(agent.get("last_poll"), now),
        f"{agent['last_latency'] * 1000:.0f} ms" if agent.get("last_latency") is not None else "-",
        str(int(agent.get("consecutive_failures", 0))),
        _checks(agent.get("checks") or []),
    ]
    tds = "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells)
    return f'<tr class="row-{_e(state)}">{tds}</tr>'


def _where(agent: dict[str, Any]) -> str:
    """A polled agent's address; a push agent's mode and where it last pushed from."""
    if agent.get("mode") == "push":
        peer = agent.get("peer_address")
        return "push" + (f" from {_e(peer)}" if peer else ", no push yet")
    return _e(agent["address"])


def _reason_cell(agent: dict[str, Any]) -> str:
    if not agent.get("reason"):
        return "-"
    text = f'<b class="bad">{_e(agent["reason"])}</b>'
    if agent.get("detail"):
        text += f"<br><small>{_e(agent['detail'])}</small>"
    peer = agent.get("peer") or {}
    if peer.get("subject"):
        text += f"<br><small>presented <code>{_e(peer['subject'])}</code>"
        if peer.get("issuer"):
            text += f" issued by <code>{_e(peer['issuer'])}</code>"
        text += "</small>"
    return text


def _expiry_cell(identity: dict[str, Any] | None) -> str:
    if not identity:
        return "<td>-</td>"
    days = float(identity["days_left"])
    css = ' class="expired"' if days < 0 else (' class="expiring"' if days < EXPIRY_WARNING_DAYS else "")
    label = "expired" if days < 0 else f"{days:.1f} days"
    return f"<td{css}>{_e(label)}<br><small>{_e(identity['not_after'])}</small></td>"


def _checks(checks: Sequence[dict[str, Any]]) -> str:
    if not checks:
        return "-"
    items = []
    for c in checks:
        outcome = str(c["outcome"])
        css = "" if outcome == "ok" else ' class="bad"'
        items.append(f"{_e(c['service_type'])}/{_e(c['service_name'])}: <span{css}>{_e(outcome)}</span>")
    return "<br>".join(items)


def _counts(agents: Sequence[dict[str, Any]]) -> str:
    counts = Counter(str(a["state"]) for a in agents)
    shown = [f"<span>{counts[s.value]} {s.value}</span>" for s in AgentState if counts[s.value]]
    return ", ".join(shown) or "<span>none</span>"  # read as text too: "1 refused, 3 proven"


def _age(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "never"
    try:
        seconds = (now - datetime.fromisoformat(stamp)).total_seconds()
    except ValueError:
        return _e(stamp)
    ago = f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"
    return f'<span title="{_e(stamp)}">{ago}</span>'


def _query(tenant: str | None) -> str:
    return f"?tenant={_e(tenant)}" if tenant else ""


def _e(value: object) -> str:
    return escape(str(value), quote=True)
