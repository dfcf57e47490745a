"""The nats-server harness: a real server, ready when it answers, same port and store after a restart."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from poller.testing.nats_server import NatsServer, NatsServerError, find_nats_server


def test_the_binary_is_found_from_the_package() -> None:
    binary = find_nats_server()
    assert binary.name == "nats-server" and binary.is_file()


async def test_restart_keeps_port_and_jetstream_store(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "js").start()
    try:
        url = server.url
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="kept", subjects=["kept.>"])
        await js.publish("kept.one", b"1")
        await nc.close()

        server.restart(kill=True)  # a crash, not a clean stop
        assert server.url == url
        nc = await nats.connect(url)
        info = await nc.jetstream().stream_info("kept")
        await nc.close()
        assert info.state.messages == 1
    finally:
        server.stop()
    assert not server.running


def test_a_config_the_server_refuses_is_an_error_with_its_log(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("this is { not a config\n")
    with pytest.raises(NatsServerError, match="did not become ready"):
        NatsServer(config=bad).start()


def test_a_nats_server_bin_that_is_not_a_file_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the lookup is played here: the package cannot be uninstalled for one test.
    monkeypatch.setenv("NATS_SERVER_BIN", str(tmp_path / "nope"))
    assert find_nats_server() != tmp_path / "nope"  # falls through to the package's binary
