"""What one Redis command costs the client, with redis-py's blocking pool and with ours.

Starts the embedded server, then for each pool sends 20,000 `HGET`s, 8 at a time, from
one asyncio client, twice, and prints commands per second and the client's and the
server's CPU microseconds per command (psutil). Both pools are bounded and make a
burst wait for a connection; `storage.redis.QueueingPool` takes no lock per command.

    python -m loadtests.bench_redis_pool
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis

from loadtests.harness import cpu_seconds
from storage.redis import connect
from storage.server import EmbeddedRedis, free_port
from storage.settings import Settings

COMMANDS = 20_000
AT_ONCE = 8


async def measure(client: Any, server: psutil.Process) -> dict[str, float]:
    await client.ping()
    me = psutil.Process()
    client_before, server_before = cpu_seconds(me), cpu_seconds(server)
    started = time.perf_counter()

    async def sender() -> None:
        for _ in range(COMMANDS // AT_ONCE):
            await client.hget("bench:pool", "field")

    await asyncio.gather(*(sender() for _ in range(AT_ONCE)))
    wall = time.perf_counter() - started
    await client.aclose()
    return {
        "commands_per_s": round(COMMANDS / wall),
        "client_us": round((cpu_seconds(me) - client_before) * 1e6 / COMMANDS, 1),
        "server_us": round((cpu_seconds(server) - server_before) * 1e6 / COMMANDS, 1),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="o2o-pool-") as tmp:
        settings = Settings()
        server = EmbeddedRedis(
            Path(tmp), free_port(), settings.appendfsync, settings.redis_aof_rewrite_min_mb
        )
        server.start()
        try:
            assert server.process is not None
            proc = psutil.Process(server.process.pid)
            print("| pool | commands/s | client µs/command | server µs/command |")
            print("|---|---|---|---|")
            for _ in range(2):
                blocking = aioredis.Redis(
                    connection_pool=aioredis.BlockingConnectionPool.from_url(
                        server.url, max_connections=64, timeout=10, decode_responses=True
                    )
                )
                for name, client in (
                    ("redis-py BlockingConnectionPool", blocking),
                    ("storage.redis.QueueingPool", connect(server.url, max_connections=64)),
                ):
                    row = asyncio.run(measure(client, proc))
                    print(
                        f"| {name} | {row['commands_per_s']:,} | {row['client_us']} | "
                        f"{row['server_us']} |"
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
