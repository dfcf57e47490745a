"""A library that behaves: `import poller` and dialing print nothing, logs go to
the standard logging module, and the CLI/daemon configuration renders them."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from poller.dial.dialer import dial_agent
from poller.identity.reasons import IdentityRefused
from poller.logs import LineLimiter, configure_logging
from poller.testing import ManualClock

ACME = "acme-corp"

# A user's program: proves one agent, is refused by an impostor, polls, closes.
_LIBRARY_USER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from poller import AgentClient, IdentityRefused, TrustStore, dial_agent
    from poller.testing import ForgePki, MockAgent

    async def main() -> None:
        pki = ForgePki.create(Path(sys.argv[1]), tenants=("acme-corp", "xyz-inc"))
        trust = TrustStore(pki.directory)
        good, bad = pki.agent("acme-corp"), pki.agent("acme-corp", issuer_tenant="xyz-inc")
        async with MockAgent(cert_chain_pem=good.chain_pem, key_pem=good.key_pem, client_ca_pem=pki.root_pem) as a, \\
                MockAgent(cert_chain_pem=bad.chain_pem, key_pem=bad.key_pem, client_ca_pem=pki.root_pem) as b:
            async with await dial_agent(a.address, tenant="acme-corp", trust=trust) as conn:
                await AgentClient(conn).get_status("ping", "icmp")
            try:
                await dial_agent(b.address, tenant="acme-corp", trust=trust)
            except IdentityRefused:
                pass
            else:
                raise SystemExit("impostor accepted")

    asyncio.run(main())
    """
)


def test_a_program_using_the_library_prints_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LIBRARY_USER, str(tmp_path / "certs")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    # Not even the refusal warning: an unconfigured application sees nothing (NullHandler on "poller").
    assert done.stderr == ""


def test_with_plain_logging_the_events_arrive_as_readable_records(tmp_path: Path) -> None:
    program = "import logging, sys\nlogging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(name)s %(message)s')\n"
    done = subprocess.run(
        [sys.executable, "-c", program + _LIBRARY_USER, str(tmp_path / "certs")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("poller.audit identity_accepted ") and "tenant=acme-corp" in line for line in lines), lines
    assert any(line.startswith("poller.audit identity_refused ") and "reason=tenant_mismatch" in line for line in lines)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


async def test_configured_json_lines_carry_the_events_fields(pki, trust, serve, restore_logging, capsys) -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    good = await serve(pki.agent(ACME, "agent-001"))
    bad = await serve(pki.agent(ACME, "agent-666", issuer_tenant="xyz-inc", dns=[]))
    async with await dial_agent(good.address, tenant=ACME, trust=trust):
        pass
    with pytest.raises(IdentityRefused):
        await dial_agent(bad.address, tenant=ACME, trust=trust)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    accepted = [e for e in events if e["event"] == "identity_accepted"]
    refused = [e for e in events if e["event"] == "identity_refused"]
    assert len(accepted) == 1 and len(refused) == 1
    assert accepted[0]["tenant"] == ACME and accepted[0]["component"] == "agent-001"
    assert accepted[0]["level"] == "info" and accepted[0]["timestamp"].endswith("Z")
    assert refused[0]["reason"] == "tenant_mismatch" and refused[0]["level"] == "warning"
    assert capsys.readouterr().out == ""


def test_configuring_twice_keeps_one_handler(restore_logging) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", stream=first)
    configure_logging("json", stream=second)
    logging.getLogger("poller.test").warning("once")
    assert first.getvalue() == "" and json.loads(second.getvalue())["event"] == "once"


def test_logged_exceptions_keep_their_traceback(restore_logging) -> None:
    from poller.logs import get_logger

    stream = io.StringIO()
    configure_logging("json", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("poller.test").exception("agent_loop_failed", agent="a")
    line = json.loads(stream.getvalue())
    assert line["event"] == "agent_loop_failed" and line["agent"] == "a"
    assert "RuntimeError: boom" in line["exception"] and "Traceback" in line["exception"]


def test_console_lines_fit_120_columns_and_json_keeps_the_audit_detail(restore_logging) -> None:
    from poller.logs import CONSOLE_WIDTH, get_logger

    audit = {
        "audit": True,
        "tenant": "acme-corp",
        "agent": "impostor",
        "reason": "tenant_mismatch",
        "detail": "issued by tenant-xyz-inc.ca.serviceradar, not by tenant-acme-corp.ca.serviceradar",
        "fingerprint": "e0" * 32,
        "serial": "7a" * 20,
        "subject": "CN=agent-666.partition-1.acme-corp.serviceradar",
        "address": "127.0.0.1:35965",
    }
    console, as_json = io.StringIO(), io.StringIO()
    configure_logging("console", stream=console)
    get_logger("poller.audit").warning("identity_refused", **audit)
    configure_logging("json", stream=as_json)
    get_logger("poller.audit").warning("identity_refused", **audit)

    [line] = console.getvalue().splitlines()
    assert len(line) <= CONSOLE_WIDTH
    assert " WARN " in line and "identity_refused" in line
    assert line.index("tenant=acme-corp") < line.index("agent=impostor") < line.index("reason=tenant_mismatch")
    assert "fingerprint" not in line and "serial" not in line
    full = json.loads(as_json.getvalue())
    assert {key: full[key] for key in audit} == audit  # every field, uncut


def test_the_startup_error_that_explains_exit_2_is_whole_on_the_console(restore_logging) -> None:
    # It was cut at 120 columns, losing why: "... is not for serving: its extended key usage has no serverAuth".
    from poller.cli.run import _cannot_start
    from poller.logs import CONSOLE_WIDTH, get_logger

    problem = (
        "gateway.cert: /tmp/x/good.pem: certificate CN=agent-001.partition-1.acme-corp.serviceradar "
        "is not for serving: its extended key usage has no serverAuth"
    )
    console = io.StringIO()
    configure_logging("console", stream=console)
    assert _cannot_start([problem]) == 2
    get_logger("poller.test").error("other_error", line=f"error: {problem}")  # any other event is still cut
    whole, other = console.getvalue().splitlines()
    assert " ERROR startup_error " in whole and whole.endswith(f'line="error: {problem}"')
    assert len(other) == CONSOLE_WIDTH and other.endswith("…")


@pytest.mark.parametrize(
    "value",
    [
        "\x1b[2J\x1b]0;owned\x07",  # clear screen, set the terminal title
        "edge\u202e1",  # right-to-left override
        "a\rb",  # carriage return over the line
        b"\x1b[31m".decode(),
    ],
    ids=["csi-osc", "bidi", "cr", "colour"],
)
def test_console_lines_escape_what_an_agent_reports(restore_logging, value) -> None:
    """Issue 18 item 9: agent-reported labels reach the console log escaped, as `status` shows them."""
    from poller.logs import get_logger

    console = io.StringIO()
    configure_logging("console", stream=console)
    log = get_logger("poller.test")
    log.warning("identity_refused", agent=value, detail=f"agent {value} said", extra={value: value}, other=ValueError(value))
    try:
        raise RuntimeError(value)
    except RuntimeError:
        log.exception(value, tenant="acme-corp")
    text = console.getvalue()
    assert all(c.isprintable() or c == "\n" for c in text), repr(text)
    assert "\\x1b" in text or "\\u202e" in text or "\\r" in text
    assert text.count("\n") >= 4  # the traceback keeps its own lines


def test_a_line_limiter_holds_back_per_key_and_says_how_many_it_held():
    limiter = LineLimiter(10.0)
    assert [limiter.due("a", now=100.0), limiter.due("a", now=101.0), limiter.due("b", now=101.0)] == [0, None, 0]
    assert limiter.due("a", now=109.9) is None  # still inside a's window
    assert limiter.due("a", now=110.0) == 2  # the two held back since a's last line


def test_a_line_limiter_says_the_count_of_a_flood_that_stopped_inside_its_window():
    clock = ManualClock(now=1000.0)
    said: list[tuple[str, int]] = []
    limiter = LineLimiter(10.0, clock=clock, on_held_back=lambda key, held: said.append((key, held)))
    assert [limiter.due("a"), limiter.due("a"), limiter.due("a"), limiter.due("b")] == [0, None, None, 0]
    clock.advance(10.0)
    assert said == []  # the window has closed: a flood going on would say it on its next line
    clock.advance(9.9)
    assert said == []
    clock.advance(0.1)
    assert said == [("a", 2)]  # a whole window without one: said now; b held nothing back
    assert limiter.due("a") == 0  # the count was said: the next line starts afresh, written in full
    assert limiter.due("a") is None
    clock.advance(20.0)
    assert said == [("a", 2), ("a", 1)]


def test_a_line_limiter_leaves_a_going_floods_count_to_its_next_line():
    clock = ManualClock(now=0.0)
    said: list[tuple[str, int]] = []
    limiter = LineLimiter(10.0, clock=clock, on_held_back=lambda key, held: said.append((key, held)))
    lines = []
    for _ in range(40):  # a refusal every second for 40 s
        lines.append(limiter.due("a"))
        clock.advance(1.0)
    clock.advance(30.0)
    assert [n for n in lines if n is not None] == [0, 9, 9, 9]  # one line per window, each with its count
    assert said == [("a", 9)]  # and the last window's, once the flood has stopped


def test_a_line_limiter_keeps_a_key_whose_timer_will_say_its_count_past_its_key_bound():
    clock = ManualClock(now=0.0)
    said: list[tuple[str, int]] = []
    limiter = LineLimiter(10.0, max_keys=2, clock=clock, on_held_back=lambda key, held: said.append((key, held)))
    limiter.due("a"), limiter.due("a")  # a holds one back
    clock.now = 10.0
    for key in ("b", "c", "d"):  # past the bound, with a's window closed but its timer not yet run
        limiter.due(key)
    clock.advance(10.0)
    assert said == [("a", 1)]


def test_a_line_limiter_without_a_running_loop_arms_nothing_and_stays_bounded():
    limiter = LineLimiter(10.0, max_keys=2, on_held_back=lambda key, held: pytest.fail("no timer without a loop"))
    assert [limiter.due("a"), limiter.due("a")] == [0, None]  # no running loop: nothing armed
    now = limiter.clock.time() + 20
    for key in ("b", "c", "d"):
        limiter.due(key, now=now)
    assert limiter.due("a", now=now) == 0  # a was forgotten with the other closed windows


def test_a_line_limiter_is_not_silenced_by_a_step_of_the_wall_clock(monkeypatch):
    limiter = LineLimiter(10.0)
    assert limiter.due("a") == 0
    monkeypatch.setattr(time, "time", lambda: 0.0)  # the wall clock steps back to 1970
    assert limiter.due("a", now=limiter.clock.time() + 10) == 0  # the window is monotonic seconds


def test_a_line_limiter_forgets_closed_windows_past_its_key_bound():
    limiter = LineLimiter(10.0, max_keys=3)
    for n in range(3):
        limiter.due(f"old-{n}", now=0.0)
    assert limiter.due("new", now=20.0) == 0  # a fourth key: the three closed windows go
    assert limiter.due("old-0", now=20.5) == 0 and limiter.due("new", now=21.0) is None
