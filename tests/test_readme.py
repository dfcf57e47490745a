"""Every Python block of README.md runs as written, so the README cannot drift.

Each block runs in a fresh interpreter, in a directory holding a real `certs/`
(ForgePki), with a real mock agent's address as its first argument; it must
exit 0 without writing to stderr (no unclosed channel warnings, no stray logs).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
# The pytest plugin's example is a test module, not a script: test_pytest_plugin runs it under pytest.
_SCRIPTS = re.sub(r"<!-- plugin-example -->.*?<!-- /plugin-example -->", "", README.read_text(), flags=re.DOTALL)
BLOCKS = re.findall(r"^```python\n(.*?)^```", _SCRIPTS, flags=re.DOTALL | re.MULTILINE)


def test_the_readme_has_python_blocks() -> None:
    assert BLOCKS, "no ```python block found: the test below would prove nothing"


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block-{i}" for i in range(len(BLOCKS))])
async def test_readme_block_runs_as_written(code: str, tmp_path: Path, pki, serve) -> None:
    import asyncio

    assert pki.directory == tmp_path / "certs"  # the README's TrustStore("certs"), relative to cwd
    agent = await serve(pki.agent("acme-corp", "agent-001"))
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        # ResourceWarnings (an unclosed channel or file) become visible. Not
        # `-X dev`: its asyncio debug mode reports slow steps, which depends on
        # the machine's load, not on the README's code.
        "-W",
        "always::ResourceWarning",
        str(script),
        agent.address,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert err.decode() == ""
    if "dial_agent" in code:  # the blocks that poll the agent print what its proven identity says
        assert out.decode() == "acme-corp agent-001 True\n"
    else:
        assert out.decode().strip()
