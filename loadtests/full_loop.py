"""The whole order loop at a fixed concurrency, from one lean asyncio process.

`concurrency` customers each walk one order at a time: place it (`POST /v1/orders`
with an Idempotency-Key), pay at its link in the payment sandbox, and wait for the
door. Merchants read their events over a WebSocket, as the back office does, accept
each paid order and mark it ready at once. Riders wait online beside the kitchens,
read their events over a WebSocket too, accept every offer, pick the food up, report
their position at the door and deliver. Nobody thinks or travels, so the figure is
what the platform can do, not how fast people are. The platform's own work (the
provider's notification, dispatch, settlement) happens between the steps.

Every HTTP step's latency is recorded, and each loop's time from placement to the
delivery's answer. Every loop is bounded: customers stop placing after `duration`,
an open order is waited for at most a minute, and a pickup is retried for at most
30 s.

    python -m loadtests.full_loop --url http://127.0.0.1:8000 [--concurrency 64]
        [--duration 60] [--merchants 16] [--riders 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

# Far from the demo city and the tests' worlds, so these riders see only these orders.
ORIGIN = (30.05, 120.55)
ORDER_DEADLINE_S = 60.0
PICKUP_DEADLINE_S = 30.0


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class FullLoop:
    def __init__(
        self, url: str, concurrency: int, duration_s: float, merchants: int, riders: int
    ) -> None:
        self.url = url.rstrip("/")
        self.concurrency = concurrency
        self.duration_s = duration_s
        self.merchant_count = merchants
        self.rider_count = riders
        self.run = uuid.uuid4().hex[:6]
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.loops: list[float] = []
        # Every order the platform acknowledged (201), for checks after the run.
        self.acknowledged: list[str] = []
        self.delivered_at: list[float] = []
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.spots: list[tuple[str, float, float]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.http: aiohttp.ClientSession

    # -- HTTP ---------------------------------------------------------------------

    async def call(
        self,
        method: str,
        target: str,
        step: str,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> tuple[int, Any]:
        sent = {**(headers or {})}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            sent["Content-Type"] = "application/json"
        url = target if target.startswith("http") else self.url + target
        started = time.perf_counter()
        try:
            async with self.http.request(method, url, data=data, headers=sent) as answer:
                raw = await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as err:
            self.errors[f"{step}: {type(err).__name__}"] += 1
            return 0, None
        self.samples[step].append((time.perf_counter() - started) * 1000)
        if status not in ok:
            self.errors[f"{step}: {status}"] += 1
        try:
            return status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return status, None

    async def token(self, role: str, sub: str) -> str:
        _, answer = await self.call(
            "POST", "/v1/auth/dev-token", "setup", body={"role": role, "sub": sub}
        )
        return str(answer["token"])

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- the city -------------------------------------------------------------------

    async def setup(self) -> tuple[list[str], list[tuple[str, str]], list[str]]:
        admin = await self.token("admin", f"fl_{self.run}")
        merchant_tokens = []
        for i in range(self.merchant_count):
            merchant_id = f"m_fl_{self.run}_{i}"
            lat, lng = ORIGIN[0] + 0.001 * (i % 8), ORIGIN[1] + 0.001 * (i // 8)
            status, answer = await self.call(
                "POST",
                "/v1/merchants",
                "setup",
                admin,
                {
                    "id": merchant_id,
                    "name": f"Loop {i}",
                    "lat": lat,
                    "lng": lng,
                    "delivery": {"radius_m": 5000},
                },
            )
            if status != 201:
                raise RuntimeError(f"cannot onboard {merchant_id}: {status} {answer}")
            token = await self.token("merchant", merchant_id)
            status, answer = await self.call(
                "PUT",
                f"/v1/merchants/{merchant_id}/menu/items/rice",
                "setup",
                token,
                {"name": "Rice", "price_fen": 1500, "stock": 1_000_000_000},
            )
            if status not in (200, 201):
                raise RuntimeError(f"cannot stock {merchant_id}: {status} {answer}")
            self.spots.append((merchant_id, lat, lng))
            merchant_tokens.append(token)
        riders = []
        for i in range(self.rider_count):
            rider_id = f"r_fl_{self.run}_{i}"
            token = await self.token("rider", rider_id)
            _, lat, lng = self.spots[i % len(self.spots)]
            status, answer = await self.call(
                "POST",
                "/v1/riders/me/status",
                "setup",
                token,
                {"online": True, "lat": lat, "lng": lng},
            )
            if status != 200:
                raise RuntimeError(f"rider {rider_id} cannot go online: {status} {answer}")
            riders.append((rider_id, token))
        customers = [
            await self.token("customer", f"c_fl_{self.run}_{i}") for i in range(self.concurrency)
        ]
        return merchant_tokens, riders, customers

    async def events(self, token: str) -> AsyncIterator[dict[str, Any]]:
        """Every event of this terminal over its WebSocket, reconnecting from the last
        cursor if the socket drops, until the run stops."""
        base = self.url.replace("http", "ws", 1) + f"/v1/sync/ws?token={token}"
        cursor: str | None = None
        while not self.stopping:
            url = base + (f"&cursor={cursor}" if cursor else "")
            try:
                async with self.http.ws_connect(url, heartbeat=20) as socket:
                    async for message in socket:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            break
                        event = orjson.loads(message.data)
                        cursor = event.get("cursor") or cursor
                        yield event
            except (aiohttp.ClientError, TimeoutError) as err:
                self.errors[f"websocket: {type(err).__name__}"] += 1
            if not self.stopping:
                self.errors["websocket: reconnect"] += 1
                await asyncio.sleep(0.2)

    # -- the people -----------------------------------------------------------------

    async def merchant(self, token: str) -> None:
        async for event in self.events(token):
            if event.get("type") == "order_paid":
                self.spawn(self.cook(token, event["order_id"]))

    async def cook(self, token: str, order_id: str) -> None:
        status, _ = await self.call(
            "POST",
            f"/v1/merchant/orders/{order_id}/accept",
            "POST /v1/merchant/orders/{id}/accept",
            token,
            {"prep_minutes": 5},
        )
        if status == 200:
            await self.call(
                "POST",
                f"/v1/merchant/orders/{order_id}/ready",
                "POST /v1/merchant/orders/{id}/ready",
                token,
            )

    async def rider(self, token: str) -> None:
        async for event in self.events(token):
            if event.get("type") == "offer":
                self.spawn(self.carry(token, event["order_id"], event["data"]))

    async def carry(self, token: str, order_id: str, offer: dict[str, Any]) -> None:
        status, _ = await self.call(
            "POST",
            f"/v1/rider/offers/{offer['offer_id']}/accept",
            "POST /v1/rider/offers/{id}/accept",
            token,
        )
        if status != 200:
            return
        deadline = time.monotonic() + PICKUP_DEADLINE_S
        while time.monotonic() < deadline:
            # The food may not be ready yet (409): a rider at the counter asks again.
            status, _ = await self.call(
                "POST",
                f"/v1/rider/orders/{order_id}/pickup",
                "POST /v1/rider/orders/{id}/pickup",
                token,
                ok=(200, 409),
            )
            if status != 409:
                break
            await asyncio.sleep(0.05)
        if status != 200:
            return
        await self.call(
            "POST",
            "/v1/riders/me/location",
            "POST /v1/riders/me/location",
            token,
            {"lat": offer["dropoff"]["lat"], "lng": offer["dropoff"]["lng"]},
        )
        status, _ = await self.call(
            "POST",
            f"/v1/rider/orders/{order_id}/deliver",
            "POST /v1/rider/orders/{id}/deliver",
            token,
        )
        waiter = self.waiting.get(order_id)
        if status == 200 and waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def customer(self, index: int, token: str, until: float) -> None:
        _, lat, lng = self.spots[index % len(self.spots)]
        merchant_id = self.spots[index % len(self.spots)][0]
        body = {
            "merchant_id": merchant_id,
            "items": [{"item_id": "rice", "qty": 1}],
            "delivery": {"lat": lat + 0.005, "lng": lng, "address": f"{index} Loop Rd"},
        }
        while time.monotonic() < until:
            started = time.perf_counter()
            status, order = await self.call(
                "POST",
                "/v1/orders",
                "POST /v1/orders",
                token,
                body,
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            if status != 201:
                await asyncio.sleep(0.2)
                continue
            self.acknowledged.append(order["id"])
            waiter = self.waiting[order["id"]] = asyncio.get_running_loop().create_future()
            status, _ = await self.call(
                "POST", order["payment"]["pay_url"], "POST /pay/{intent_id} (sandbox)"
            )
            try:
                if status == 200:
                    await asyncio.wait_for(waiter, ORDER_DEADLINE_S)
                    self.loops.append((time.perf_counter() - started) * 1000)
                    self.delivered_at.append(time.monotonic())
            except TimeoutError:
                self.errors["order not delivered in time"] += 1
            finally:
                self.waiting.pop(order["id"], None)

    # -- the run --------------------------------------------------------------------

    async def go(self) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as self.http:
            merchants, riders, customers = await self.setup()
            self.samples.clear()
            for token in merchants:
                self.spawn(self.merchant(token))
            for _, token in riders:
                self.spawn(self.rider(token))
            await asyncio.sleep(0.5)  # every stream is being read before the first order
            me = psutil.Process()
            cpu_before, started = sum(me.cpu_times()[:2]), time.monotonic()
            until = started + self.duration_s
            await asyncio.gather(
                *(self.customer(i, token, until) for i, token in enumerate(customers))
            )
            wall = time.monotonic() - started
            cpu = sum(me.cpu_times()[:2]) - cpu_before
            self.stopping = True
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for _, token in riders:
                with contextlib.suppress(Exception):
                    await self.call(
                        "POST", "/v1/riders/me/status", "teardown", token, {"online": False}
                    )
        # Throughput counts deliveries inside the placing window only.
        delivered = sum(1 for at in self.delivered_at if at <= until)
        steps = {
            name: {
                "count": len(values),
                "p50_ms": round(percentile(values, 0.50), 1),
                "p99_ms": round(percentile(values, 0.99), 1),
            }
            for name, values in sorted(self.samples.items())
            if name not in ("setup", "teardown")
        }
        http_steps = steps
        return {
            "concurrency": self.concurrency,
            "merchants": self.merchant_count,
            "riders": self.rider_count,
            "duration_s": self.duration_s,
            "delivered": delivered,
            "delivered_per_s": round(delivered / self.duration_s, 1),
            "loop_p50_ms": round(percentile(self.loops, 0.50), 1),
            "loop_p99_ms": round(percentile(self.loops, 0.99), 1),
            "worst_step": max(http_steps, key=lambda k: http_steps[k]["p99_ms"], default=None),
            "worst_step_p99_ms": max((v["p99_ms"] for v in http_steps.values()), default=None),
            "failures": dict(self.errors),
            "steps": steps,
            "driver_cpu_share": round(cpu / wall / (psutil.cpu_count() or 1), 3),
            "merchant_ids": [merchant_id for merchant_id, _, _ in self.spots],
            "acknowledged_orders": self.acknowledged,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--merchants", type=int, default=16)
    parser.add_argument("--riders", type=int, default=0, help="default: one per customer")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    loop = FullLoop(
        args.url, args.concurrency, args.duration, args.merchants, args.riders or args.concurrency
    )
    report = asyncio.run(loop.go())
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
