"""`make run`'s demo: the commands its banner prints run as printed.

The demo runs as its own process (dev PKI, a real nats-server, four mock
agents, the daemon); the test reads the banner from its stdout, waits for the
first status table (the daemon answers /status), then runs every printed
command exactly as a user pasting it would (split by the shell's rules, no PATH
help, another working directory) and checks what each says. Synchronisation
is on the demo's own output, never on time.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import sys
from pathlib import Path

from poller.demo import _status_port

ROOT = Path(__file__).resolve().parent.parent


async def _read_until(stream: asyncio.StreamReader, seen: list[str], done) -> None:
    while not done(seen):
        raw = await stream.readline()
        assert raw, f"the demo ended early; it printed: {seen}"
        seen.append(raw.decode().rstrip("\n"))


async def test_the_banner_commands_run_as_printed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env["PATH"] = "/usr/bin:/bin"  # not the venv's bin: the printed commands must not need it
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "poller.demo",
        "--certs",
        str(tmp_path / "certs"),
        "--workdir",
        str(tmp_path / "demo"),
        "--seconds",
        "300",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )
    assert demo.stdout is not None
    out: list[str] = []
    try:
        async with asyncio.timeout(90):
            await _read_until(demo.stdout, out, lambda lines: "  Ctrl-C stops everything." in lines)
            commands = [shlex.split(l.strip()) for l in out if l.startswith("    ") and (" tail " in l or " status" in l)]
            tails = [c for c in commands if c[1] == "tail"]
            [status] = [c for c in commands if c[1] == "status"]
            assert len(tails) == 2 and all(Path(c[0]).is_absolute() for c in commands)
            # The first table under the log: the daemon serves /status now.
            await _read_until(demo.stdout, out, lambda lines: any(l.startswith("TENANT") or "impostor" in l for l in lines[-20:]))
            for argv in tails:
                tenant = argv[argv.index("--tenant") + 1]
                tail = await asyncio.create_subprocess_exec(
                    *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=env
                )
                got, err = await tail.communicate()
                assert tail.returncode == 0, err.decode()
                lines = got.decode().splitlines()
                assert len(lines) == 5 and all(f'"subject": "{tenant}.' in l or f'"subject":"{tenant}.' in l for l in lines), (
                    lines
                )
            shown = await asyncio.create_subprocess_exec(
                *status, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=env
            )
            table, err = await shown.communicate()
            assert shown.returncode == 3, err.decode()  # the impostor is refused: exit 3, as run --once
            assert "impostor" in table.decode() and "tenant_mismatch" in table.decode()
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(demo.wait(), 60) == 0


def test_the_status_port_is_free_again_while_the_last_run_is_in_time_wait():
    """After a run, 9464 sits in TIME-WAIT; the daemon binds with SO_REUSEADDR, so the
    demo's probe must too, or it falls back to a random port and `status` misses it."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its port goes to TIME-WAIT
    client.recv(1)
    client.close()
    server.close()
    assert _status_port(preferred=port) == port


async def test_push_agents_push_and_the_push_impostor_is_refused(tmp_path):
    # Issue 16 item 9: the demo's push agents (one per tenant) are proven on the table, and the push
    # impostor (xyz-inc's certificate claiming acme-corp) is refused by the gateway, in the daemon's log.
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "poller.demo", "--certs", str(tmp_path / "certs"), "--workdir", str(tmp_path / "demo"),
        "--seconds", "300", "--file-sink",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    assert demo.stdout is not None
    out: list[str] = []

    def seen(lines: list[str]) -> bool:
        proven = {name for name in ("acme-push-1", "xyz-push-1") for l in lines if name in l and " proven " in l}
        refused = any("server_call_refused" in l and "tenant_mismatch" in l for l in lines)
        return proven == {"acme-push-1", "xyz-push-1"} and refused

    try:
        async with asyncio.timeout(90):
            await _read_until(demo.stdout, out, seen)
        assert not any("push-impostor" in l and " proven " in l for l in out)
        assert not [l for l in out if "acme-push-1" in l and "xyz-inc" in l and " proven " in l]  # each under its own tenant
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(demo.wait(), 60) == 0
