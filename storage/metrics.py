"""Operational counters in per-minute buckets, kept two days, summed over a window."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from storage import keys
from storage.redis import RedisClient

KEEP_S = 2 * 24 * 3600


def minute_of(at: datetime) -> int:
    return int(at.timestamp() // 60)


class MetricsStore:
    def __init__(self, client: RedisClient) -> None:
        self.client = client

    def queue_count(self, pipe: Any, at: datetime, **fields: int) -> None:
        """Add the counters to a pipeline the caller sends anyway: no round trip of their own."""
        key = keys.metrics_minute(minute_of(at))
        for name, amount in fields.items():
            pipe.hincrby(key, name, amount)
        pipe.expire(key, KEEP_S)

    async def count(self, at: datetime, **fields: int) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            self.queue_count(pipe, at, **fields)
            await pipe.execute()

    async def count_new_orders(self, new_orders: list[tuple[datetime, str, str]]) -> None:
        """Count new orders, each `(at, zone, customer_id)`, in one round trip.

        A customer's first and second orders also move the customer and repeat counters.
        A busy host places many orders per call, so the counts are summed here first: one
        increment per minute, per zone and per customer, not one per order.
        """
        if not new_orders:
            return
        per_minute: Counter[int] = Counter()
        per_zone: Counter[tuple[int, str]] = Counter()
        per_customer: Counter[str] = Counter()
        for at, zone, customer_id in new_orders:
            minute = minute_of(at)
            per_minute[minute] += 1
            per_zone[minute, zone] += 1
            per_customer[customer_id] += 1
        async with self.client.pipeline(transaction=False) as pipe:
            for minute, orders in per_minute.items():
                pipe.hincrby(keys.metrics_minute(minute), "orders", orders)
                pipe.expire(keys.metrics_minute(minute), KEEP_S)
                pipe.expire(keys.metrics_zones(minute), KEEP_S)
            for (minute, zone), orders in per_zone.items():
                pipe.hincrby(keys.metrics_zones(minute), zone, orders)
            for customer_id, orders in per_customer.items():
                pipe.hincrby(keys.METRICS_CUSTOMER_ORDERS, customer_id, orders)
            replies = await pipe.execute()
        new_customers = repeat_customers = 0
        for total, orders in zip(replies[-len(per_customer) :], per_customer.values(), strict=True):
            before = total - orders
            new_customers += before == 0
            # The customer's second order is among these.
            repeat_customers += before <= 1 < total
        if new_customers or repeat_customers:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.incrby(keys.METRICS_CUSTOMERS, new_customers)
                pipe.incrby(keys.METRICS_REPEAT_CUSTOMERS, repeat_customers)
                await pipe.execute()

    async def window(self, now: datetime, minutes: int) -> tuple[Counter[str], Counter[str]]:
        last = minute_of(now)
        async with self.client.pipeline(transaction=False) as pipe:
            for minute in range(last - minutes + 1, last + 1):
                pipe.hgetall(keys.metrics_minute(minute))
                pipe.hgetall(keys.metrics_zones(minute))
            rows = await pipe.execute()
        totals: Counter[str] = Counter()
        zones: Counter[str] = Counter()
        for i in range(0, len(rows), 2):
            totals.update({k: int(v) for k, v in rows[i].items()})
            zones.update({k: int(v) for k, v in rows[i + 1].items()})
        return totals, zones

    async def summary(self, now: datetime, minutes: int) -> dict[str, Any]:
        totals, zones = await self.window(now, minutes)
        customers = int(await self.client.get(keys.METRICS_CUSTOMERS) or 0)
        repeaters = int(await self.client.get(keys.METRICS_REPEAT_CUSTOMERS) or 0)
        day_totals, _ = await self.window(now, 24 * 60)
        delivered = totals.get("delivered", 0)
        offers = totals.get("offers", 0)
        return {
            "window_minutes": minutes,
            "orders": totals.get("orders", 0),
            "orders_per_min": round(totals.get("orders", 0) / minutes, 2),
            "gmv_fen": totals.get("gmv_fen", 0),
            "delivered": delivered,
            "avg_delivery_minutes": (
                round(totals.get("delivery_seconds", 0) / delivered / 60, 1) if delivered else None
            ),
            "offers": offers,
            "dispatch_success_rate": (
                round(totals.get("offers_accepted", 0) / offers, 3) if offers else None
            ),
            "merchants_onboarded_24h": day_totals.get("onboarded", 0),
            "merchant_onboarding_per_hour": round(day_totals.get("onboarded", 0) / 24, 2),
            "repeat_purchase_rate": round(repeaters / customers, 3) if customers else None,
            "zone_orders": dict(zones.most_common(20)),
        }

    async def per_minute(self, now: datetime, minutes: int) -> list[tuple[int, dict[str, int]]]:
        """Each minute's counters over the last `minutes` minutes, oldest first; a quiet
        minute has an empty row, so a chart of them has no gaps."""
        last = minute_of(now)
        span = range(last - minutes + 1, last + 1)
        async with self.client.pipeline(transaction=False) as pipe:
            for minute in span:
                pipe.hgetall(keys.metrics_minute(minute))
            rows = await pipe.execute()
        return [
            (minute, {k: int(v) for k, v in row.items()})
            for minute, row in zip(span, rows, strict=True)
        ]
