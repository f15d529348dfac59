"""Resident memory of every process after 100,000 orders: it must level off, not climb.

Places orders with wrk (the same requests as the placement benchmark) and, at every
quarter of the target, records the resident memory of each process the run started,
Redis's memory, the longest inbox stream and what each host actor keeps (locks and
cached entities). Writes bench/memory.json.

    python -m loadtests.bench_memory [--orders 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import redis

from actors.directory import Directory
from loadtests.bench import memory
from loadtests.frontdoor import prepare, run_wrk, wrk_script
from loadtests.harness import fresh_platform
from storage import keys
from storage.settings import Settings


async def host_stats(settings: Settings) -> list[dict[str, int]]:
    hosts = await Directory(settings).all_hosts()
    return list(await asyncio.gather(*(h.stats.remote() for h in hosts)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("bench/memory.json"))
    args = parser.parse_args()
    checkpoints: list[dict[str, Any]] = []
    with fresh_platform("o2o-memory-") as platform:
        work = platform.run_dir
        settings = platform.settings
        store = redis.Redis.from_url(settings.effective_redis_url, decode_responses=True)
        try:
            token, bodies = prepare(platform.url)
            script = wrk_script(work / "place.lua", token, bodies)
            started = time.monotonic()
            targets = [args.orders * k // 4 for k in range(1, 5)]
            for target in targets:
                while store.zcard(keys.orders_of("customer", "c_bench")) < target:
                    run_wrk(platform.url, 20, 32, script)
                inboxes = list(store.scan_iter("inbox:*", count=1000))
                checkpoints.append(
                    {
                        "orders": store.zcard(keys.orders_of("customer", "c_bench")),
                        "elapsed_s": round(time.monotonic() - started),
                        "processes_mib": memory(os.getpid()),
                        "redis_used_mib": round(
                            int(store.info("memory")["used_memory"]) / 2**20, 1
                        ),
                        "longest_inbox": max((store.xlen(k) for k in inboxes), default=0),
                        "hosts": asyncio.run(host_stats(settings)),
                    }
                )
                print(json.dumps(checkpoints[-1]), flush=True)
        finally:
            store.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkpoints": checkpoints}, indent=2) + "\n")
    names = sorted({n for c in checkpoints for n in c["processes_mib"]})
    print("\n| process | " + " | ".join(f"{c['orders']:,} orders" for c in checkpoints) + " |")
    print("|---|" + "---|" * len(checkpoints))
    for name in names:
        cells = [str(c["processes_mib"].get(name, "-")) for c in checkpoints]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| Redis used | " + " | ".join(str(c["redis_used_mib"]) for c in checkpoints) + " |")


if __name__ == "__main__":
    main()
