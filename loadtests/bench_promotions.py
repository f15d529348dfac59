"""`make bench-promotions`: order events' latency with and without a 10,000-customer
regional promotion in flight.

One platform of its own (`fresh_platform`, the default pace `O2O_PROMOTION_BATCH_PER_S`
unless `--batch-per-s`). `--customers` customers (10,000) are registered to one h3 cell
directly through the store (`PromotionStore.set_home`, what `PUT /v1/me/home` does);
`--ordering` of them (20) each hold a WebSocket, as the app does, and place orders at
`--merchants` merchants in that cell at `--rate` orders a second (an open loop: an
order leaves on schedule whether or not the last one came back), each paid at the
sandbox at once. So the orders' events and the promotion share the same inboxes
(the ordering customers get the promotion too), the same hub and the same Redis.

Measured for every order event that reaches its customer's socket (`order_placed`
and `order_paid`): the time from its `at` (when the host decided it, just before the
script that writes it) to the frame, "write -> socket"; and for each placement, from
the request leaving to its `order_placed` frame. Rounds of `--seconds` are quiet or
run with a promotion to the 10,000 published as the round starts (at 500 a second its
push lasts 20 s, the length of a round), in pairs ordered quiet-push, push-quiet,
quiet-push... so that a drift of the machine weighs on both kinds alike. Printed: each
round's p50 / p99 / max, the cores each process used, the machine's load average, each
push's customers told, its duration and rate, and the percentiles of all rounds of a
kind together.

The load generator is this one process, on the same cores as the platform.
Writes bench/promotions.json.

    python -m loadtests.bench_promotions [--customers 10000] [--rate 20] [--seconds 20]
        [--rounds 4] [--batch-per-s 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import h3
import orjson
import psutil
from websockets.asyncio.client import ClientConnection, connect

from cluster.launcher import Platform
from loadtests.full_loop import percentile
from loadtests.harness import cpu_by_label, fresh_platform
from serve_app.auth import issue
from storage.promotions import PromotionStore
from storage.redis import connect as redis_connect

# Hangzhou's north: a cell of the city, nobody else's in this fresh platform.
CENTRE = (30.3200, 120.1500)
ORDER_EVENTS = ("order_placed", "order_paid")


def cores_between(
    before: dict[str, float], after: dict[str, float], wall: float
) -> dict[str, float]:
    return {
        label: round((after[label] - before.get(label, 0.0)) / wall, 3)
        for label in sorted(after)
        if after[label] - before.get(label, 0.0) > 0.01 * wall
    }


def share_of(cores: dict[str, float], *names: str) -> float:
    return round(sum(v for k, v in cores.items() if any(n in k for n in names)), 2)


class Terminal:
    """One ordering customer's socket: when each event of each order arrived."""

    def __init__(self, customer_id: str, token: str, socket: ClientConnection) -> None:
        self.customer_id = customer_id
        self.token = token
        self.socket = socket
        # (type, order id) -> (arrived at, the event's `at`)
        self.arrivals: dict[tuple[str, str], tuple[float, float]] = {}
        self.promotions: list[float] = []

    async def read(self) -> None:
        try:
            async for frame in self.socket:
                arrived = time.time()
                event = orjson.loads(frame)
                kind = event.get("type")
                if kind in ORDER_EVENTS:
                    at = datetime.fromisoformat(event["at"]).timestamp()
                    self.arrivals[(kind, event["order_id"])] = (arrived, at)
                elif kind == "promotion":
                    self.promotions.append(arrived)
        except Exception:
            return


class Bench:
    def __init__(self, platform: Platform, args: argparse.Namespace) -> None:
        self.platform = platform
        self.args = args
        self.url = platform.url
        self.secret = platform.settings.jwt_secret
        self.cell = str(h3.latlng_to_cell(*CENTRE, platform.settings.zone_resolution))
        self.merchants: list[str] = []
        self.terminals: list[Terminal] = []
        self.admin = self.token("admin", "ops_bench")
        # Every round's write -> socket latencies, by kind of round.
        self.samples: dict[str, list[float]] = {"quiet": [], "with promotion": []}
        self.http: aiohttp.ClientSession

    def token(self, role: str, sub: str) -> str:
        return issue(self.secret, role, sub, 24 * 3600)[0]

    async def call(self, method: str, url: str, token: str | None, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
            headers["Idempotency-Key"] = uuid.uuid4().hex
        target = url if url.startswith("http") else self.url + url
        data = orjson.dumps(body) if body is not None else None
        async with self.http.request(method, target, data=data, headers=headers) as answer:
            raw = await answer.read()
            if answer.status >= 300:
                raise RuntimeError(f"{method} {url}: {answer.status} {raw[:200]!r}")
            return orjson.loads(raw) if raw and raw[:1] in (b"{", b"[") else raw

    # -- the city -------------------------------------------------------------------

    async def register(self) -> float:
        """The customers registered to the cell through the store; how long it took."""
        client = redis_connect(self.platform.settings.effective_redis_url, 64)
        store = PromotionStore(client, 1000, 3600, self.platform.settings.promotion_presence_s)
        started = time.monotonic()
        ids = [f"c_bench_{i}" for i in range(self.args.customers)]
        for first in range(0, len(ids), 500):
            await asyncio.gather(*(store.set_home(c, self.cell) for c in ids[first : first + 500]))
        await client.aclose()
        return time.monotonic() - started

    async def setup(self) -> None:
        for i in range(self.args.merchants):
            merchant_id = f"m_bench_{i}"
            await self.call(
                "POST",
                "/v1/merchants",
                self.admin,
                {
                    "id": merchant_id,
                    "name": f"Bench {i}",
                    "lat": CENTRE[0] + 0.001 * i,
                    "lng": CENTRE[1],
                    "delivery": {"radius_m": 5000},
                    "accept_mode": "manual",
                },
            )
            await self.call(
                "PUT",
                f"/v1/merchants/{merchant_id}/menu/items/rice",
                self.token("merchant", merchant_id),
                {"name": "Rice", "price_fen": 1500, "stock": 1_000_000_000},
            )
            self.merchants.append(merchant_id)
        base = self.url.replace("http", "ws", 1) + "/v1/sync/ws?token="
        for i in range(self.args.ordering):
            customer_id = f"c_bench_{i}"
            token = self.token("customer", customer_id)
            socket = await connect(base + token, ping_interval=None, max_queue=None)
            self.terminals.append(Terminal(customer_id, token, socket))

    # -- a round --------------------------------------------------------------------

    async def order(self, terminal: Terminal, n: int, sent: dict[str, float]) -> str | None:
        body = {
            "merchant_id": self.merchants[n % len(self.merchants)],
            "items": [{"item_id": "rice", "qty": 1}],
            "delivery": {"lat": CENTRE[0] + 0.005, "lng": CENTRE[1], "address": "1 Bench Rd"},
        }
        started = time.time()
        try:
            placed = await self.call("POST", "/v1/orders", terminal.token, body)
        except (RuntimeError, aiohttp.ClientError, TimeoutError):
            return None
        sent[placed["id"]] = started
        with contextlib.suppress(RuntimeError, aiohttp.ClientError, TimeoutError):
            await self.call("POST", placed["payment"]["pay_url"], None)
        return str(placed["id"])

    async def orders(self, seconds: float) -> tuple[list[str], dict[str, float], int]:
        gap = 1.0 / self.args.rate
        sent: dict[str, float] = {}
        tasks = []
        start = time.perf_counter()
        n = 0
        while (due := start + n * gap) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            terminal = self.terminals[n % len(self.terminals)]
            tasks.append(asyncio.create_task(self.order(terminal, n, sent)))
            n += 1
        placed = [o for o in await asyncio.gather(*tasks) if o]
        return placed, sent, n

    async def publish(self) -> str:
        now = datetime.now(UTC)
        promotion = await self.call(
            "POST",
            "/v1/admin/promotions",
            self.admin,
            {
                "cells": [self.cell],
                "kind": "banner",
                "title": "Lunch in the north",
                "starts_at": (now - timedelta(minutes=1)).isoformat(),
                "ends_at": (now + timedelta(hours=1)).isoformat(),
            },
        )
        return str(promotion["id"])

    async def progress(self, promotion_id: str) -> dict[str, Any]:
        view: dict[str, Any] = await self.call(
            "GET", f"/v1/admin/promotions/{promotion_id}", self.admin
        )
        return view

    async def round(self, label: str, with_push: bool) -> dict[str, Any]:
        for t in self.terminals:
            t.arrivals.clear()
            t.promotions.clear()
        promotion_id = await self.publish() if with_push else None
        window_start = time.time()
        cpu_before, load_before = cpu_by_label(me="bench client"), psutil.getloadavg()[0]
        placed, sent, asked = await self.orders(self.args.seconds)
        window_end = time.time()
        cpu_after = cpu_by_label(me="bench client")
        cores = cores_between(cpu_before, cpu_after, window_end - window_start)
        push: dict[str, Any] = {}
        if promotion_id:
            deadline = time.monotonic() + 10 * self.args.customers / self.args.batch_per_s
            while time.monotonic() < deadline:
                view = await self.progress(promotion_id)
                if view["status"] in ("done", "expired"):
                    break
                await asyncio.sleep(0.5)
            started = datetime.fromisoformat(view["progress"]["started_at"]).timestamp()
            finished = datetime.fromisoformat(view["progress"]["finished_at"]).timestamp()
            push = {
                "status": view["status"],
                "targeted": view["progress"]["targeted"],
                "pushed": view["progress"]["pushed"],
                "push_s": round(finished - started, 1),
                "push_per_s": round(view["progress"]["pushed"] / max(finished - started, 1e-9)),
                "overlap_s": round(min(finished, window_end) - max(started, window_start), 1),
            }
        await asyncio.sleep(3)  # the last frames
        write_to_socket: list[float] = []
        placement_to_event: list[float] = []
        missing = Counter[str]()
        for t in self.terminals:
            for (kind, order_id), (arrived, at) in t.arrivals.items():
                if order_id in sent:
                    write_to_socket.append((arrived - at) * 1000)
                    if kind == "order_placed":
                        placement_to_event.append((arrived - sent[order_id]) * 1000)
        self.samples["with promotion" if with_push else "quiet"] += write_to_socket
        received = {o for t in self.terminals for (_, o) in t.arrivals}
        missing["order_placed"] = len([o for o in placed if o not in received])
        result = {
            "round": label,
            "orders_asked": asked,
            "orders_placed": len(placed),
            "order_events": len(write_to_socket),
            "events_missing": dict(missing),
            "write_to_socket_p50_ms": round(percentile(write_to_socket, 0.50), 1),
            "write_to_socket_p99_ms": round(percentile(write_to_socket, 0.99), 1),
            "write_to_socket_max_ms": round(max(write_to_socket, default=0.0), 1),
            "placement_to_event_p99_ms": round(percentile(placement_to_event, 0.99), 1),
            "promotion_frames_on_ordering_sockets": sum(len(t.promotions) for t in self.terminals),
            # Cores each process used while the orders ran, and the machine's load then
            # (other work on the same cores moves every latency here).
            "cores": cores,
            "redis_cores": share_of(cores, "valkey", "redis"),
            "rider_zone_host_cores": share_of(cores, "RiderZoneHost"),
            "load_average": round((load_before + psutil.getloadavg()[0]) / 2, 1),
            **({"push": push} if push else {}),
        }
        print(json.dumps(result), flush=True)
        return result

    async def run(self) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=timeout
        ) as self.http:
            registered_s = await self.register()
            print(f"{self.args.customers} customers registered in {registered_s:.1f} s", flush=True)
            await self.setup()
            readers = [asyncio.create_task(t.read()) for t in self.terminals]
            await asyncio.sleep(1)
            # A warm-up round, not counted: the first orders load every merchant.
            await self.orders(3)
            await asyncio.sleep(2)
            rounds = []
            # Quiet, push, push, quiet, quiet, push...: a drift of the machine over the
            # run weighs on both kinds alike.
            for i in range(self.args.rounds):
                for push in (False, True) if i % 2 == 0 else (True, False):
                    label = f"{'with promotion' if push else 'quiet'} {i + 1}"
                    rounds.append(await self.round(label, with_push=push))
            for t in self.terminals:
                await t.socket.close()
            for task in readers:
                task.cancel()
        pooled = {
            kind: {
                "p50_ms": round(percentile(self.samples[kind], 0.50), 1),
                "p99_ms": round(percentile(self.samples[kind], 0.99), 1),
                "events": len(self.samples[kind]),
            }
            for kind in ("quiet", "with promotion")
        }
        return {"registered_s": round(registered_s, 1), "rounds": rounds, "pooled": pooled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--ordering", type=int, default=20)
    parser.add_argument("--merchants", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=4, help="pairs of rounds")
    parser.add_argument("--batch-per-s", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("bench/promotions.json"))
    args = parser.parse_args()
    with fresh_platform(
        "o2o-promotions-",
        promotion_batch_per_s=args.batch_per_s,
        # Nobody answers the orders in this run: no platform rejection mid-run.
        merchant_accept_timeout_s=3600,
    ) as platform:
        results = asyncio.run(Bench(platform, args).run())
    settings = {k: getattr(args, k) for k in ("customers", "ordering", "rate", "seconds")}
    out = {"batch_per_s": args.batch_per_s, **settings, **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"\n{args.rate:.0f} orders/s for {args.seconds:.0f} s a round, {args.ordering} ordering "
        f"customers on sockets, {args.customers} registered to the cell, push at "
        f"{args.batch_per_s}/s\n"
    )
    print(
        "| round | orders | order events | write -> socket p50 ms | p99 ms | max ms "
        "| placement -> event p99 ms | push: told, s, per s, overlap s "
        "| Redis cores | rider-zone host cores | load average |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["rounds"]:
        push = r.get("push")
        told = (
            f"{push['pushed']} / {push['targeted']}, {push['push_s']}, {push['push_per_s']}, "
            f"{push['overlap_s']}"
            if push
            else "-"
        )
        print(
            f"| {r['round']} | {r['orders_placed']} | {r['order_events']} "
            f"| {r['write_to_socket_p50_ms']} | {r['write_to_socket_p99_ms']} "
            f"| {r['write_to_socket_max_ms']} | {r['placement_to_event_p99_ms']} | {told} "
            f"| {r['redis_cores']} | {r['rider_zone_host_cores']} | {r['load_average']} |"
        )
    print("\nall rounds of a kind together, write -> socket:")
    for kind, figures in results["pooled"].items():
        print(
            f"  {kind}: {figures['events']} order events, p50 {figures['p50_ms']} ms, "
            f"p99 {figures['p99_ms']} ms"
        )


if __name__ == "__main__":
    main()
