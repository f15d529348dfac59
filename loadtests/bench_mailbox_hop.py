"""What one request to an entity host costs in CPU: a Ray actor call beside a mailbox hop.

The measure behind entities' mailboxes (DESIGN, "Actors, shards and mailboxes"). A
caller process sends a request (one small order-like item) to a host process and
awaits the reply, in two ways:

- ray call: an async caller actor awaits `bench_actor_call.Host.calls` with a list of
  one item, as the hosts' batches are called today;
- mailbox: the caller XADDs the request, orjson-encoded with its id and `reply_to`, to
  its shard's mailbox stream and awaits a future; the host actor reads its shards
  with XREADGROUP (consumer group, BLOCK, COUNT), and per batch sends in one pipeline
  the XACK, the XDEL and the replies, either appended to the caller's reply stream
  (which one reader task in the caller follows with XREAD BLOCK) or PUBLISHed on the
  caller's channel (which it SUBSCRIBEs).

Each is run with 1 and with 16 requests in flight, `--messages` requests each (at
most `--seconds`), against the embedded Valkey on the platform's durability settings
(append-only file on). Caller and host are separate Ray actors (processes), as a Serve
replica and a host are. Prints messages per second, p50/p99 latency and CPU
milliseconds per message of the caller, the host, the Redis server and the rest of
Ray (raylet, GCS, agents, idle workers), read from /proc by psutil.

    python -m loadtests.bench_mailbox_hop [--messages 3000] [--seconds 10] [--shards 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import psutil
import ray
import redis.exceptions

from loadtests.harness import cpu_seconds
from storage import keys
from storage.redis import RedisClient, connect
from storage.server import EmbeddedRedis, free_port
from storage.settings import Settings

GROUP = "hosts"
READ_COUNT = 64
# Short enough that a reader notices it should stop soon, far below the client's
# socket timeout (`storage.redis.COMMAND_TIMEOUT_S`), which a blocking read must not reach.
BLOCK_MS = 500
REPLY_MAXLEN = 1000
WARM_UP = 200
IN_FLIGHT = (1, 16)

# `bench_actor_call`'s host, the very one its figures are of. Imported by name: mypy
# would otherwise check that module too, whose actor options lack the ignores below.
RayHost: Any = importlib.import_module("loadtests.bench_actor_call").Host


def mailbox(shard: int) -> str:
    # The platform's own key: each shard has its own hash tag, so on a cluster shards
    # sit in different slots and one XREADGROUP reads one shard (a reader per shard).
    return keys.mailbox("merchant", shard)


def item(i: int) -> dict[str, Any]:
    """What one request carries, the same both ways (the item `bench_actor_call` sends)."""
    return {"order_id": f"o_{i}", "lines": list(range(10))}


async def drive(
    send: Callable[[int], Awaitable[object]], messages: int, in_flight: int, seconds: float
) -> tuple[float, list[float]]:
    """`in_flight` senders, each awaiting its reply before its next request, until
    `messages` are answered or `seconds` have passed: wall seconds and every latency."""
    numbers = itertools.count()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def sender() -> None:
        for i in numbers:
            if i >= messages or time.perf_counter() > deadline:
                return
            began = time.perf_counter()
            await send(i)
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(in_flight)))
    return time.perf_counter() - started, latencies


# Ray's stubs know no actor options (max_concurrency...): hence the ignores below.
@ray.remote(num_cpus=0, max_concurrency=1000, enable_task_events=False)  # type: ignore[call-overload]
class RayCaller:
    """`bench_actor_call`'s caller, driven as the mailbox caller is (and timing each call)."""

    def __init__(self, host: Any) -> None:
        self.host = host

    def pid(self) -> int:
        return os.getpid()

    async def run(self, messages: int, in_flight: int, seconds: float) -> tuple[float, list[float]]:
        async def send(i: int) -> object:
            return await self.host.calls.remote([item(i)])

        return await drive(send, messages, in_flight, seconds)


@ray.remote(num_cpus=0, max_concurrency=1000, enable_task_events=False)  # type: ignore[call-overload]
class MailboxHost:
    def __init__(self, url: str, shards: int) -> None:
        self.url = url
        self.shards = shards
        self.client: RedisClient = None
        self.readers: list[asyncio.Task[None]] = []
        self.stopping = False
        self.handled = 0
        self.batches = 0

    def pid(self) -> int:
        return os.getpid()

    def stats(self) -> tuple[int, int]:
        return self.handled, self.batches

    async def start(self) -> None:
        self.client = connect(self.url)
        self.stopping = False
        for shard in range(self.shards):
            try:
                await self.client.xgroup_create(mailbox(shard), GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
            self.readers.append(asyncio.create_task(self.read(mailbox(shard))))

    async def read(self, stream: str) -> None:
        while not self.stopping:
            got = await self.client.xreadgroup(
                GROUP, "host-0", {stream: ">"}, count=READ_COUNT, block=BLOCK_MS
            )
            for _name, entries in got or ():
                await self.handle(stream, entries)

    async def handle(self, stream: str, entries: list[tuple[str, dict[str, str]]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        ids = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            message = orjson.loads(fields["m"])
            reply = orjson.dumps({"id": message["id"], "result": ["ok", message["item"]]})
            if message["via"] == "stream":
                pipe.xadd(message["reply_to"], {"m": reply}, maxlen=REPLY_MAXLEN, approximate=True)
            else:
                pipe.publish(message["reply_to"], reply)
        # The entity's effect would be stored here (its script, in this same round
        # trip); a Ray call's host would store the same, so neither way pays for it.
        pipe.xack(stream, GROUP, *ids)
        pipe.xdel(stream, *ids)
        await pipe.execute()
        self.handled += len(ids)
        self.batches += 1

    async def stop(self) -> None:
        self.stopping = True
        # A reader that failed raises here rather than leaving the caller waiting unseen.
        await asyncio.gather(*self.readers)
        self.readers = []
        await self.client.aclose()


@ray.remote(num_cpus=0, max_concurrency=1000, enable_task_events=False)  # type: ignore[call-overload]
class MailboxCaller:
    """A Serve replica's side: requests onto mailboxes, replies back to futures."""

    def __init__(self, url: str, shards: int, name: str) -> None:
        self.url = url
        self.shards = shards
        self.stream = f"bench:reply:{{r:{name}}}"
        self.channel = f"bench:reply:{name}"
        self.via = "stream"
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count()
        self.client: RedisClient = None
        self.pubsub: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.listening = False

    def pid(self) -> int:
        return os.getpid()

    async def open(self, via: str) -> None:
        """Connect and start the one reply reader (`via` "stream" or "pubsub"), then warm up."""
        self.client = connect(self.url)
        self.via = via
        self.listening = True
        if via == "stream":
            await self.client.delete(self.stream)
            self.reader = asyncio.create_task(self.read_stream())
        else:
            self.pubsub = self.client.pubsub()
            await self.pubsub.subscribe(self.channel)
            self.reader = asyncio.create_task(self.read_channel())
        await self.run(WARM_UP, max(IN_FLIGHT), 10.0)

    async def close(self) -> None:
        self.listening = False
        if self.pubsub is not None:
            # The reader's `listen` ends once the server confirms.
            await self.pubsub.unsubscribe(self.channel)
        if self.reader is not None:
            await self.reader
        if self.pubsub is not None:
            await self.pubsub.aclose()
            self.pubsub = None
        await self.client.aclose()

    async def read_stream(self) -> None:
        last = "0-0"
        while self.listening:
            got = await self.client.xread({self.stream: last}, count=256, block=BLOCK_MS)
            for _name, entries in got or ():
                for entry_id, fields in entries:
                    last = entry_id
                    self.resolve(orjson.loads(fields["m"]))

    async def read_channel(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] == "message":
                self.resolve(orjson.loads(message["data"]))

    def resolve(self, reply: dict[str, Any]) -> None:
        future = self.pending.pop(reply["id"], None)
        if future is not None and not future.done():
            future.set_result(reply["result"])

    async def send(self, i: int) -> object:
        request_id = next(self.ids)
        # Registered before the append: the reply may come back before XADD returns.
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        reply_to = self.stream if self.via == "stream" else self.channel
        body = orjson.dumps(
            {"id": request_id, "reply_to": reply_to, "via": self.via, "item": item(i)}
        )
        await self.client.xadd(mailbox(i % self.shards), {"m": body})
        return await future

    async def run(self, messages: int, in_flight: int, seconds: float) -> tuple[float, list[float]]:
        return await drive(self.send, messages, in_flight, seconds)


@dataclass
class Row:
    way: str
    in_flight: int
    messages: int
    per_s: float
    caller_ms: float
    host_ms: float
    redis_ms: float
    rest_ms: float
    p50_ms: float
    p99_ms: float
    batch: float | None

    @property
    def total_ms(self) -> float:
        return self.caller_ms + self.host_ms + self.redis_ms


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cpu_by_pid(procs: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            seconds[proc.pid] = cpu_seconds(proc)
    return seconds


class Meter:
    """CPU of the caller, the host, the server, and every other process of our Ray."""

    def __init__(self, redis_proc: psutil.Process, seconds: float) -> None:
        self.redis_proc = redis_proc
        self.seconds = seconds

    def measure(
        self,
        way: str,
        in_flight: int,
        caller: Any,
        host: Any,
        run: Callable[[], Any],
        host_stats: Callable[[], tuple[int, int]] | None = None,
    ) -> Row:
        caller_proc = psutil.Process(ray.get(caller.pid.remote()))
        host_proc = psutil.Process(ray.get(host.pid.remote()))
        mine = {caller_proc.pid, host_proc.pid, self.redis_proc.pid}
        # The driver only waits; what else of Ray works for a call (raylet, GCS) is here.
        rest = [p for p in psutil.Process().children(recursive=True) if p.pid not in mine]
        stats_before = host_stats() if host_stats else (0, 0)
        before = (cpu_seconds(caller_proc), cpu_seconds(host_proc), cpu_seconds(self.redis_proc))
        rest_before = cpu_by_pid(rest)
        wall, latencies = ray.get(run(), timeout=self.seconds + 60)
        after = (cpu_seconds(caller_proc), cpu_seconds(host_proc), cpu_seconds(self.redis_proc))
        rest_after = cpu_by_pid(rest)
        stats_after = host_stats() if host_stats else (0, 0)
        n = len(latencies)
        rest_s = sum(rest_after[pid] - rest_before[pid] for pid in rest_after if pid in rest_before)
        batches = stats_after[1] - stats_before[1]
        return Row(
            way=way,
            in_flight=in_flight,
            messages=n,
            per_s=n / wall,
            caller_ms=1000 * (after[0] - before[0]) / n,
            host_ms=1000 * (after[1] - before[1]) / n,
            redis_ms=1000 * (after[2] - before[2]) / n,
            rest_ms=1000 * rest_s / n,
            p50_ms=1000 * percentile(latencies, 0.50),
            p99_ms=1000 * percentile(latencies, 0.99),
            batch=(stats_after[0] - stats_before[0]) / batches if batches else None,
        )


def measure_all(url: str, redis_proc: psutil.Process, args: argparse.Namespace) -> list[Row]:
    meter = Meter(redis_proc, args.seconds)
    messages, seconds = args.messages, args.seconds
    rows = []

    ray_host = RayHost.remote()
    ray_caller = RayCaller.remote(ray_host)  # type: ignore[attr-defined]
    for in_flight in IN_FLIGHT:
        ray.get(ray_caller.run.remote(WARM_UP, in_flight, seconds))
        rows.append(
            meter.measure(
                "ray call",
                in_flight,
                ray_caller,
                ray_host,
                partial(ray_caller.run.remote, messages, in_flight, seconds),
            )
        )

    host = MailboxHost.remote(url, args.shards)  # type: ignore[attr-defined]
    caller = MailboxCaller.remote(url, args.shards, "replica-0")  # type: ignore[attr-defined]
    ray.get(host.start.remote())
    try:
        for via in ("stream", "pubsub"):
            ray.get(caller.open.remote(via))
            try:
                for in_flight in IN_FLIGHT:
                    rows.append(
                        meter.measure(
                            f"mailbox({via} reply)",
                            in_flight,
                            caller,
                            host,
                            partial(caller.run.remote, messages, in_flight, seconds),
                            lambda: ray.get(host.stats.remote()),
                        )
                    )
            finally:
                ray.get(caller.close.remote())
    finally:
        ray.get(host.stop.remote())
    return rows


def print_table(rows: list[Row], shards: int) -> None:
    print(f"CPU in ms per message; mailbox host reads {shards} shard stream(s)")
    print(
        "| way | in flight | msgs | msgs/s | caller | host | redis | total | rest of Ray "
        "| p50 ms | p99 ms | batch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        batch = f"{r.batch:.1f}" if r.batch is not None else "-"
        print(
            f"| {r.way} | {r.in_flight} | {r.messages} | {r.per_s:,.0f} | {r.caller_ms:.3f} "
            f"| {r.host_ms:.3f} | {r.redis_ms:.3f} | {r.total_ms:.3f} | {r.rest_ms:.3f} "
            f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {batch} |"
        )
    ray_total = {r.in_flight: r.total_ms for r in rows if r.way == "ray call"}
    for r in rows:
        if r.way != "ray call":
            ratio = ray_total[r.in_flight] / r.total_ms
            print(f"{r.way} @{r.in_flight}: a ray call costs {ratio:.1f}x its total CPU")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=3000, help="per measurement")
    parser.add_argument("--seconds", type=float, default=10.0, help="at most, per measurement")
    parser.add_argument("--shards", type=int, default=4, help="mailbox streams of the host")
    args = parser.parse_args(argv)
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="o2o-hop-") as tmp:
        server = EmbeddedRedis(
            Path(tmp), free_port(), settings.appendfsync, settings.redis_aof_rewrite_min_mb
        )
        server.start()
        try:
            assert server.process is not None
            redis_proc = psutil.Process(server.process.pid)
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                rows = measure_all(server.url, redis_proc, args)
            finally:
                ray.shutdown()
        finally:
            server.stop()
    print_table(rows, args.shards)


if __name__ == "__main__":
    main()
