"""Start-up failures end in one clear line and exit 2, never a traceback (issue 18 item 5).

Real processes: `serviceradar-poller run`, `config check` and the demo as users start them.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys

from spawn import spawn_cli


async def _run(*args, env=None) -> tuple[int, str]:
    proc = await spawn_cli(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    return proc.returncode, err.decode()


def _config(tmp_path, pki, **top) -> str:
    path = tmp_path / "poller.json"
    path.write_text(
        json.dumps(
            {
                "poller_id": "p",
                "certs_dir": str(pki.directory),
                "sink": {"type": "file", "dir": str(tmp_path / "data")},
                "log_format": "json",
                "agents": {},
                **top,
            }
        )
    )
    return str(path)


async def test_a_metrics_port_in_use_is_one_line_and_exit_2(pki, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, err = await _run("run", "--config", _config(tmp_path, pki, metrics_listen=f"127.0.0.1:{port}"))
    assert rc == 2, err
    assert "Traceback" not in err
    # Once logging is set up the stderr is the JSON log: the line is an error event
    # (it was a plain print, relayed as a `native_stderr` warning).
    lines = [l for l in err.splitlines() if f"error: metrics_listen: cannot listen on 127.0.0.1:{port}" in l]
    assert len(lines) == 1, err
    event = json.loads(lines[0])
    assert (event["event"], event["level"]) == ("startup_error", "error"), event


async def test_config_check_refuses_a_certs_dir_without_the_pollers_certificate(pki, tmp_path):
    config = _config(tmp_path, pki)
    assert (await _run("config", "check", config))[0] == 0
    pki.layout.service_cert("poller").unlink()
    rc, err = await _run("config", "check", config)
    assert rc == 2 and "Traceback" not in err
    errors = [l for l in err.splitlines() if l.startswith("error: certs: ")]
    assert errors and "poller" in errors[0]
    assert (await _run("run", "--config", config, "--once"))[0] == 2  # what run says too


async def test_the_demo_without_a_working_nats_server_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "NATS_SERVER_BIN": "/bin/false"}  # found, but it does not start
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "poller.demo",
        "--certs",
        str(tmp_path / "certs"),
        "--workdir",
        str(tmp_path / "demo"),
        "--seconds",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    text = out.decode() + err.decode()
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    [line] = [l for l in text.splitlines() if l.startswith("error:")]
    assert "nats-server" in line and "--file-sink" in line
