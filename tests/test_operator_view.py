"""The operator's view against a real daemon: GET /status, the targets page /
and `serviceradar-poller status`, with real mock agents that are proven,
refused (an impostor, a CN with markup in it), unreachable and pending.

The HTTP client is urllib over real loopback sockets; the CLI runs as its own
process. Synchronisation is on published results and accepted connections,
never on time.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from spawn import spawn_cli

from poller.config import parse_config
from poller.daemon.daemon import PollerDaemon
from poller.testing.forge import ForgePki
from poller.testing.memory_sink import MemorySink

ACME, XYZ, GLOBEX = "acme-corp", "xyz-inc", "globex"
SCRIPT_CN = '<script>alert("cn")</script>.p.acme-corp.serviceradar'
CHECK = [{"service_type": "process", "service_name": "nginx", "details": "nginx"}]


@dataclass
class RunningDaemon:
    daemon: PollerDaemon
    sink: MemorySink

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.daemon.metrics_port}"


def _get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(_get, url, method)


async def get_json(url: str) -> list[dict]:
    status, headers, body = await get(url)
    assert status == 200 and headers["Content-Type"] == "application/json"
    return json.loads(body)


@pytest.fixture
def pki(tmp_path: Path) -> ForgePki:
    """The shared fixture's PKI with a third tenant (conftest's `serve` uses this one)."""
    return ForgePki.create(tmp_path / "certs", tenants=(ACME, XYZ, GLOBEX))


@pytest.fixture
async def fleet(pki, serve, unused_tcp_port) -> AsyncIterator[RunningDaemon]:
    """A daemon polling: acme good (cert expiring in 5 days), acme impostor (xyz's CA),
    acme agent whose CN carries markup, xyz good, globex good and globex unreachable."""
    good = await serve(pki.agent(ACME, "agent-001", days=5))
    impostor = await serve(pki.agent(ACME, "agent-666", issuer_tenant=XYZ, dns=[]))
    scripted = await serve(pki.agent(ACME, "agent-777", cn=SCRIPT_CN, dns=[]))
    xyz = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    globex = await serve(pki.agent(GLOBEX, "agent-100"))
    agents = {
        "acme-good": {"address": good.address, "tenant": ACME, "checks": CHECK},
        "acme-impostor": {"address": impostor.address, "tenant": ACME, "checks": CHECK},
        "acme-scripted": {"address": scripted.address, "tenant": ACME, "checks": CHECK},
        "xyz-good": {"address": xyz.address, "tenant": XYZ, "checks": CHECK},
        "globex-good": {"address": globex.address, "tenant": GLOBEX, "checks": CHECK},
        "globex-down": {"address": f"127.0.0.1:{unused_tcp_port}", "tenant": GLOBEX, "checks": CHECK},
    }
    settings = parse_config(
        {
            "poller_id": "poller-ops",
            "poll_interval": "30s",
            "call_timeout": "2s",
            "certs_dir": str(pki.directory),
            "metrics_listen": "127.0.0.1:0",
            "agents": agents,
        }
    )
    sink = MemorySink()
    daemon = PollerDaemon(settings, sink=sink)
    task = asyncio.ensure_future(daemon.run(install_signals=False))
    try:
        async with asyncio.timeout(30):
            await sink.wait_for(lambda rs: {r.agent for r in rs} == set(agents))
        yield RunningDaemon(daemon, sink)
    finally:
        daemon.request_stop()
        assert await task == 0


async def test_status_json_names_each_agents_state_reason_and_identity(fleet):
    agents = {a["name"]: a for a in await get_json(f"{fleet.base}/status")}
    assert set(agents) == {"acme-good", "acme-impostor", "acme-scripted", "xyz-good", "globex-good", "globex-down"}
    assert {n: a["state"] for n, a in agents.items()} == {
        "acme-good": "proven",
        "acme-impostor": "refused",
        "acme-scripted": "refused",
        "xyz-good": "proven",
        "globex-good": "proven",
        "globex-down": "unreachable",
    }

    good = agents["acme-good"]
    assert (good["tenant"], good["reason"], good["consecutive_failures"]) == (ACME, None, 0)
    assert good["identity"]["cn"] == "agent-001.partition-1.acme-corp.serviceradar"
    assert good["identity"]["serial"] and good["identity"]["not_after"].endswith("Z")
    assert 4 < good["identity"]["days_left"] <= 5
    datetime.fromisoformat(good["last_poll"])
    assert good["last_latency"] > 0
    [check] = good["checks"]
    assert {k: v for k, v in check.items() if k != "last_poll"} == {
        "service_name": "nginx",
        "service_type": "process",
        "kind": "status",
        "outcome": "ok",
    }
    datetime.fromisoformat(check["last_poll"])

    impostor = agents["acme-impostor"]
    assert (impostor["reason"], impostor["identity"], impostor["consecutive_failures"]) == ("tenant_mismatch", None, 1)
    assert "tenant-xyz-inc.ca.serviceradar" in impostor["detail"]
    assert impostor["checks"][0]["outcome"] == "tenant_mismatch"
    assert agents["acme-scripted"]["reason"] == "invalid_cn"
    scripted = agents["acme-scripted"]
    assert '<script>alert("cn")</script>' in scripted["detail"]  # JSON carries it as data
    assert scripted["peer"]["subject"].startswith("CN=") and scripted["peer"]["serial"]

    down = agents["globex-down"]
    assert (down["reason"], down["identity"], down["checks"][0]["outcome"]) == ("unreachable", None, "unreachable")
    assert down["address"].startswith("127.0.0.1:")


async def test_status_filters_by_tenant_and_refuses_bad_requests(fleet):
    only_xyz = await get_json(f"{fleet.base}/status?tenant={XYZ}")
    assert [(a["name"], a["tenant"]) for a in only_xyz] == [("xyz-good", XYZ)]
    assert await get_json(f"{fleet.base}/status?tenant=no-such-tenant") == []
    status, _, body = await get(f"{fleet.base}/status?tenant=ACME%20CORP")
    assert status == 400 and b"tenant" in body
    assert (await get(f"{fleet.base}/status?tenant={ACME}&tenant={XYZ}"))[0] == 400
    assert (await get(f"{fleet.base}/nowhere"))[0] == 404
    status, headers, _ = await get(f"{fleet.base}/status", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = await get(f"{fleet.base}/status", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


async def test_metrics_are_served_beside_status(fleet):
    status, headers, body = await get(f"{fleet.base}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert 'poller_certificate_expiry_timestamp_seconds{kind="agent",name="acme-good",tenant="acme-corp"}' in text
    assert 'poller_identity_refusals_total{reason="invalid_cn",tenant="acme-corp"}' in text


class StrictPage(HTMLParser):
    """Collects text and checks that every non-void element is closed in order."""

    VOID = frozenset({"meta", "br", "link", "img", "input", "hr", "col", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_page(body: bytes) -> StrictPage:
    page = StrictPage()
    page.feed(body.decode("utf-8"))
    page.close()
    assert page.doctype and not page.errors and page.stack == [], (page.errors, page.stack)
    return page


async def test_targets_page_is_valid_html_grouped_by_tenant_with_problems_first(fleet):
    status, headers, body = await get(f"{fleet.base}/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src" not in headers["Content-Security-Policy"] and "default-src 'none'" in headers["Content-Security-Policy"]
    page = parse_page(body)

    # No outside asset, no script; it refreshes itself.
    assert not [t for t, a in page.tags if t in ("script", "link", "img", "iframe")]
    assert any(t == "meta" and a.get("http-equiv") == "refresh" for t, a in page.tags)
    sections = [a["id"] for t, a in page.tags if t == "section"]
    assert sections == ["this-poller", "attention", f"tenant-{ACME}", f"tenant-{GLOBEX}", f"tenant-{XYZ}"]
    # First, across tenants: refused, then unreachable, then the certificate about to expire.
    attention = [a["class"] for t, a in page.tags if t == "tr" and a.get("class", "").startswith("attention-")]
    assert attention == ["attention-refused", "attention-refused", "attention-unreachable", "attention-proven"]

    rows = [a["class"] for t, a in page.tags if t == "tr" and a.get("class", "").startswith("row-")]
    # acme: two refused, then proven; globex: unreachable, then proven; xyz: proven.
    assert rows == ["row-refused", "row-refused", "row-proven", "row-unreachable", "row-proven", "row-proven"]
    text = " ".join(page.text)
    assert "1 proven" in text and "2 refused" in text and "tenant_mismatch" in text and "unreachable" in text
    # The counts read apart as text too (they ran together: "2 refused1 proven").
    assert "2 refused, 1 proven" in "".join(page.text) and "1 unreachable, 1 proven" in "".join(page.text)
    assert [a for t, a in page.tags if t == "td" and a.get("class") == "expiring"]  # acme-good: 5 days left
    assert re.search(r"certificate expires in [45]\.\d days", text)


async def test_targets_page_says_how_this_poller_is_doing(fleet):
    import poller

    _, _, body = await get(f"{fleet.base}/")
    page = parse_page(body)
    text = "".join(page.text)
    panel = text.split("This poller", 1)[1].split("Needs attention", 1)[0]
    assert f"Version{poller.__version__}" in panel
    assert re.search(r"Uptime\d+ (s|min)", panel)
    assert "NATSnot used (file sink)" in panel and "Gatewaynot configured" in panel
    assert re.search(r"Own certificate.*expires \d{4}-\d\d-\d\dT.*\(\d+\.\d days\)", panel)


async def test_targets_page_shows_certificate_markup_as_text(fleet):
    _, _, body = await get(f"{fleet.base}/")
    page = parse_page(body)
    assert not [t for t, _ in page.tags if t == "script"]
    assert b"<script>" not in body
    text = "".join(page.text)
    assert '<script>alert("cn")</script>' in text  # shown, as text, where the refused certificate is described


async def test_targets_page_filters_by_tenant(fleet):
    _, _, body = await get(f"{fleet.base}/?tenant={XYZ}")
    page = parse_page(body)
    assert [a["id"] for t, a in page.tags if t == "section"] == ["this-poller", f"tenant-{XYZ}"]  # nothing needs attention there
    assert (await get(f"{fleet.base}/?tenant=%3Cx%3E"))[0] == 400


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await spawn_cli("status", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_command_table_json_and_exit_codes(fleet, unused_tcp_port):
    url = fleet.base
    code, out, _ = await run_cli("--url", url)
    assert code == 3  # refused agents win over the unreachable one
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["TENANT", "AGENT", "STATE"]
    assert lines[1].split()[:4] == [ACME, "acme-impostor", "refused", "tenant_mismatch"]
    assert "6 agents: 2 refused, 1 unreachable, 3 proven" in out
    assert "\x1b" not in out

    assert (await run_cli("--url", url, "--tenant", XYZ))[0] == 0
    code, out, _ = await run_cli("--url", url, "--tenant", GLOBEX)
    assert code == 4 and "globex-down" in out and "unreachable" in out

    code, out, _ = await run_cli("--url", f"{url}/status", "--tenant", ACME, "--json")
    assert code == 3
    assert [a["name"] for a in json.loads(out)] == ["acme-good", "acme-impostor", "acme-scripted"]

    code, out, err = await run_cli("--url", f"http://127.0.0.1:{unused_tcp_port}")
    assert (code, out) == (2, "") and "cannot read" in err
    code, _, err = await run_cli("--url", url, "--tenant", "Not A Slug")
    assert code == 2 and "--tenant" in err
    assert (await run_cli("--url", "ftp://127.0.0.1/"))[0] == 2


async def test_an_agent_whose_first_dial_is_outstanding_is_pending(pki, serve):
    accepted, release = asyncio.Event(), asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await release.wait()  # never answers the TLS handshake until the test is done
        writer.close()

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    good = await serve(pki.agent(ACME))
    settings = parse_config(
        {
            "poller_id": "poller-ops",
            "poll_interval": "30s",
            "call_timeout": "20s",  # the silent agent stays pending at least this long
            "certs_dir": str(pki.directory),
            "metrics_listen": "127.0.0.1:0",
            "agents": {
                "good": {"address": good.address, "tenant": ACME, "checks": CHECK},
                "silent": {"address": f"127.0.0.1:{silent_port}", "tenant": ACME, "checks": CHECK},
            },
        }
    )
    sink = MemorySink()
    daemon = PollerDaemon(settings, sink=sink)
    task = asyncio.ensure_future(daemon.run(install_signals=False))
    try:
        async with asyncio.timeout(30):
            await accepted.wait()
            await sink.wait_for(lambda rs: any(r.agent == "good" for r in rs))
        states = {a["name"]: a["state"] for a in await get_json(f"http://127.0.0.1:{daemon.metrics_port}/status")}
        assert states == {"good": "proven", "silent": "pending"}
        code, _, _ = await run_cli("--url", f"http://127.0.0.1:{daemon.metrics_port}")
        assert code == 4  # not every agent is proven yet
    finally:
        release.set()
        daemon.request_stop()
        assert await task == 0
        silent.close()
