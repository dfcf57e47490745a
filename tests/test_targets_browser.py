"""The targets page in a real browser (headless Chromium, Debian's `chromium`),
at 1000 px and 1400 px, served by a real daemon (the operator-view fleet:
proven, refused, unreachable and pending agents, a CN full of markup).

Screenshots are taken of the page as served. The width check loads the same
bytes from a file with one measuring script appended (the served page's
Content-Security-Policy forbids scripts, as it should), and reads the page's
scroll width back from the dumped DOM: no horizontal overflow. Skipped where
Chromium is not installed; `.ci/run` installs it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from test_operator_view import fleet, get, pki  # noqa: F401 - its fixtures: a daemon with every kind of agent, 3 tenants

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")

WIDTHS = (1000, 1400)
_MEASURE = '<script>document.title = document.documentElement.scrollWidth + "x" + window.innerWidth;</script>'


def chromium(profile: Path, width: int, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",  # a fresh profile each time
        "--hide-scrollbars",
        f"--window-size={width},900",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("width", WIDTHS)
async def test_the_targets_page_fits_the_window_in_a_real_browser(fleet, tmp_path, width):  # noqa: F811
    status, _, body = await get(f"{fleet.base}/")
    assert status == 200
    page = tmp_path / "targets.html"
    page.write_bytes(body.replace(b"</body>", _MEASURE.encode() + b"</body>"))
    dumped = await asyncio.to_thread(chromium, tmp_path / "profile-dom", width, "--dump-dom", page.as_uri())
    measured = re.search(r"<title>(\d+)x(\d+)</title>", dumped.stdout)
    assert measured, dumped.stderr[-2000:]
    scroll, inner = map(int, measured.groups())
    assert inner == width and scroll <= inner, f"the page is {scroll} px wide in a {inner} px window"

    shot = tmp_path / f"targets-{width}.png"
    taken = await asyncio.to_thread(chromium, tmp_path / "profile-shot", width, f"--screenshot={shot}", f"{fleet.base}/")
    assert shot.is_file(), taken.stderr[-2000:]
    assert png_size(shot) == (width, 900)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
