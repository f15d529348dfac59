"""What one Ray actor call costs on this machine, in CPU, caller and host together.

One async actor calls another's `calls` method (a list in, a list out, as the hosts'
batches do) 3,000 times at each of: one call at a time; eight at once; eight at once
carrying eight items each. Prints calls per second and CPU milliseconds per call in
the caller and in the host, read from /proc by psutil.

    python -m loadtests.bench_actor_call
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import psutil
import ray

from loadtests.harness import cpu_seconds

CALLS = 3000


@ray.remote(num_cpus=0, max_concurrency=1000, enable_task_events=False)
class Host:
    def pid(self) -> int:
        return os.getpid()

    async def calls(self, batch: list[Any]) -> list[Any]:
        return [("ok", item) for item in batch]


@ray.remote(num_cpus=0, max_concurrency=1000, enable_task_events=False)
class Caller:
    def __init__(self, host: Any) -> None:
        self.host = host

    def pid(self) -> int:
        return os.getpid()

    async def run(self, calls: int, at_once: int, items: int) -> float:
        gate = asyncio.Semaphore(at_once)

        async def one(i: int) -> None:
            async with gate:
                batch = [{"order_id": f"o_{i}_{j}", "lines": list(range(10))} for j in range(items)]
                await self.host.calls.remote(batch)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return time.perf_counter() - started


def main() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        host = Host.remote()  # type: ignore[attr-defined]
        caller = Caller.remote(host)  # type: ignore[attr-defined]
        host_proc = psutil.Process(ray.get(host.pid.remote()))
        caller_proc = psutil.Process(ray.get(caller.pid.remote()))
        print(
            "| calls at once | items per call | calls/s | caller CPU ms/call | host CPU ms/call |"
        )
        print("|---|---|---|---|---|")
        for at_once, items in ((1, 1), (8, 1), (8, 8)):
            host_before, caller_before = cpu_seconds(host_proc), cpu_seconds(caller_proc)
            wall = ray.get(caller.run.remote(CALLS, at_once, items))
            host_ms = 1000 * (cpu_seconds(host_proc) - host_before) / CALLS
            caller_ms = 1000 * (cpu_seconds(caller_proc) - caller_before) / CALLS
            print(f"| {at_once} | {items} | {CALLS / wall:.0f} | {caller_ms:.2f} | {host_ms:.2f} |")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
