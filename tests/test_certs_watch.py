"""The certs-directory watcher: mtime/size/inode polling sees an edit in place,
a replacement by rename, a new tenant and a removal, and calls for a reload."""

from __future__ import annotations

import asyncio
import os

import pytest

from poller.daemon.watch import CertsWatcher, watched_files

ACME = "acme-corp"


@pytest.fixture
async def watching(pki):
    changes: asyncio.Queue[None] = asyncio.Queue()

    async def on_change() -> None:
        changes.put_nowait(None)

    poller_cert = pki.layout.service_cert("poller")
    watcher = CertsWatcher(pki.layout, [poller_cert], on_change=on_change, interval=0.05, settle=0.02)
    task = asyncio.get_running_loop().create_task(watcher.run(baseline=watcher.signature()))  # before any change
    yield changes
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_it_watches_every_file_trust_is_read_from(pki):
    layout = pki.layout
    files = set(watched_files(layout, [layout.service_cert("poller")]))
    assert {layout.root_ca, layout.tenant_ca(ACME), layout.tenant_crl(ACME), layout.service_cert("poller")} <= files
    assert not any("components" in str(f) for f in files)  # agents' own files are no trust material


@pytest.mark.parametrize("change", ["edit", "rename", "remove", "new-crl"])
async def test_a_change_is_noticed(pki, watching, change):
    path = pki.layout.tenant_ca(ACME)
    async with asyncio.timeout(10):
        if change == "edit":
            path.write_bytes(path.read_bytes() + b"\n")
        elif change == "rename":
            tmp = path.with_name("ca.pem.new")
            tmp.write_bytes(path.read_bytes())
            os.replace(tmp, path)
        elif change == "remove":
            path.unlink()
        else:
            pki.revoke(ACME, pki.agent(ACME))
        await watching.get()
    assert watching.empty()
