"""Connections and the Lua scripts, loaded once per process."""

from __future__ import annotations

import asyncio
import logging
from functools import cache
from importlib import resources
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
import redis.cluster
import redis.exceptions
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from storage.batching import Batcher

log = logging.getLogger(__name__)

# redis-py types every reply as `bytes | str` whatever `decode_responses` says; our
# clients always decode to str, so the client is typed loosely rather than cast at
# every call.
RedisClient: TypeAlias = Any


class QueueingPool(aioredis.ConnectionPool):
    """A bounded pool: a burst beyond `max_connections` waits (up to `timeout` seconds)
    for a connection instead of opening thousands or failing.

    redis-py's `BlockingConnectionPool` does the same, but it takes a condition and a
    timer on every command, a fifth of a command's CPU here; a semaphore costs nothing
    while a connection is free.
    """

    def __init__(self, *, timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self._slots = asyncio.Semaphore(self.max_connections)
        self._held: set[Any] = set()

    def free_slots(self) -> int:
        """Connections the pool may still hand out without anybody waiting."""
        return self._slots._value

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self.timeout)
            except TimeoutError:
                raise redis.exceptions.ConnectionError("no free Redis connection") from None
        else:
            await self._slots.acquire()
        try:
            connection = await super().get_connection(*args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        self._held.add(connection)
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:
            # Only a connection handed out holds a slot (the base class also releases
            # one it failed to connect, before handing it out).
            if connection in self._held:
                self._held.discard(connection)
                self._slots.release()


# No command may wait on a server that went away longer than a caller would: a request
# then answers 503 at once instead of hanging. Nothing of ours blocks on the server.
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 5.0

# What a caller sees while the server is down, restarting, or replaying its log; and
# on a cluster while a replica takes over a failed primary's slots.
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ReadOnlyError,
    ConnectionError,
    TimeoutError,
)


# `REDIS_URL` names a cluster by this scheme and its seed nodes:
# `redis+cluster://host:port,host:port,...`; the client finds the rest from any of them.
CLUSTER_SCHEME = "redis+cluster://"


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def cluster_seeds(url: str) -> list[tuple[str, int]]:
    """The seed nodes of a cluster URL (a path such as `/0` is allowed and ignored)."""
    hosts = url.removeprefix(CLUSTER_SCHEME).split("/", 1)[0]
    seeds = []
    for seed in hosts.split(","):
        host, _, port = seed.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a cluster seed must be host:port, not {seed!r}")
        seeds.append((host, int(port)))
    return seeds


def connect(url: str, max_connections: int = 64) -> RedisClient:
    """A client of the server or of the cluster (`redis+cluster://...`) the URL names.

    On a cluster every command goes to the primary of its key's slot, and a pipeline
    is split by slot; a script or MULTI keeps to one slot (`storage/keys.py`)."""
    if is_cluster(url):
        return aioredis.RedisCluster(
            startup_nodes=[aioredis.cluster.ClusterNode(h, p) for h, p in cluster_seeds(url)],
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S,
            max_connections=max_connections,
        )
    pool = QueueingPool.from_url(
        url,
        max_connections=max_connections,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=COMMAND_TIMEOUT_S,
    )
    return aioredis.Redis(connection_pool=pool)


def connect_blocking(url: str) -> Any:
    """A blocking client of the same server or cluster, for tools and tests."""
    if is_cluster(url):
        nodes = [redis.cluster.ClusterNode(h, p) for h, p in cluster_seeds(url)]
        return redis.cluster.RedisCluster(startup_nodes=nodes, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


_INCLUDE = "-- include: "


@cache
def _source(name: str) -> str:
    """A script's text, with each `-- include: <lib>` line replaced by `lua/lib/<lib>.lua`
    (Lua scripts cannot call each other, so shared steps are written once and pasted)."""
    text = resources.files("storage").joinpath("lua", f"{name}.lua").read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith(_INCLUDE):
            lib = line.removeprefix(_INCLUDE).strip()
            line = resources.files("storage").joinpath("lua", "lib", f"{lib}.lua").read_text()
        lines.append(line)
    return "\n".join(lines) + "\n"


class Scripts:
    """The platform's Lua scripts, registered on one client."""

    def __init__(self, client: RedisClient) -> None:
        self.apply_order: AsyncScript = client.register_script(_source("apply_order"))
        self.set_menu_item: AsyncScript = client.register_script(_source("set_menu_item"))
        self.claim_coupon: AsyncScript = client.register_script(_source("claim_coupon"))
        self.release_coupon: AsyncScript = client.register_script(_source("release_coupon"))
        self.append_event: AsyncScript = client.register_script(_source("append_event"))
        self.post_transaction: AsyncScript = client.register_script(_source("post_transaction"))
        self.free_rider: AsyncScript = client.register_script(_source("free_rider"))
        self.onboard_merchant: AsyncScript = client.register_script(_source("onboard_merchant"))
        self.forget_waiting_zone: AsyncScript = client.register_script(
            _source("forget_waiting_zone")
        )
        self.relay: AsyncScript = client.register_script(_source("relay"))
        self.apply_address_book: AsyncScript = client.register_script(_source("apply_address_book"))


def queue_eval(pipe: Any, script: AsyncScript, keys: list[Any], args: list[Any]) -> None:
    """Add a script call to a pipeline with its text (`EVAL`), so it never meets a server
    that does not know it (a restarted one, a replica just promoted): a pipelined call
    whose script is missing would fail while the calls after it succeed, out of order.
    Through `execute_command`, which a cluster pipeline routes by the call's keys."""
    source = script.script.decode() if isinstance(script.script, bytes) else script.script
    pipe.execute_command("EVAL", source, len(keys), *keys, *args)


class ScriptPipeline:
    """Script calls that concurrent entities make at the same moment, sent as one pipeline.

    While one pipeline is on its way the next calls gather, so a busy host pays one
    round trip for many orders and an idle one pays no wait. The pipeline is not a
    transaction: each script is atomic on its own and fails alone. A script the
    server does not know (it restarted or flushed its scripts) is loaded and its call
    made again on its own.
    """

    def __init__(
        self, client: RedisClient, wait_replicas: int = 0, wait_timeout_ms: int = 200
    ) -> None:
        """With `wait_replicas` on a cluster, each batch ends with a `WAIT` on every
        primary it wrote to, on the connection that carried the writes (see
        `Settings.redis_wait_replicas`)."""
        self._client = client
        self._wait = wait_replicas if is_cluster_client(client) else 0
        self._wait_timeout_ms = wait_timeout_ms
        self.unreplicated = 0
        self._batcher: Batcher[tuple[AsyncScript, list[Any], list[Any]], Any] = Batcher(
            self._send, max_in_flight=1, max_batch=256
        )

    async def __call__(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        return await self._batcher.submit((script, keys, args))

    async def _send(self, calls: list[tuple[AsyncScript, list[Any], list[Any]]]) -> list[Any]:
        if self._wait:
            return await self._send_and_wait(calls)
        if len(calls) == 1:
            script, keys, args = calls[0]
            return [await script(keys=keys, args=args)]
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
        for n, ((script, keys, args), reply) in enumerate(zip(calls, replies, strict=True)):
            if isinstance(reply, NoScriptError):
                replies[n] = await script(keys=keys, args=args)
        return list(replies)

    async def _send_and_wait(
        self, calls: list[tuple[AsyncScript, list[Any], list[Any]]]
    ) -> list[Any]:
        """The batch, then `WAIT` on each primary it wrote to. A cluster pipeline sends
        one node's commands on one connection, in order, so the `WAIT` covers them; and
        a primary replicates in order, so it covers whatever that primary wrote before
        (an order's capture and ledger posting are in the order's slot). The scripts go
        with their text: a replica just promoted knows none."""
        nodes = {}
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                queue_eval(pipe, script, keys, args)
                node = self._client.get_node_from_key(keys[0])
                nodes[node.name] = node
            for node in nodes.values():
                pipe.execute_command("WAIT", self._wait, self._wait_timeout_ms, target_nodes=node)
            replies = await pipe.execute(raise_on_error=False)
        acked = replies[len(calls) :]
        short = sum(1 for n in acked if not isinstance(n, int) or n < self._wait)
        if short:
            # Answered anyway: the write is on its primary, and a caller would rather
            # have its order than wait on a replica that is gone or behind.
            self.unreplicated += short
            log.warning("%d primaries had no replica acknowledge within the wait", short)
        return list(replies[: len(calls)])


def is_cluster_client(client: RedisClient) -> bool:
    return isinstance(client, aioredis.RedisCluster)


async def ping(client: RedisClient) -> None:
    """Raise unless the server answers."""
    await client.ping()
