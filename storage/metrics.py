"""Operational counters in per-minute buckets, kept two days, summed over a window."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from typing import Any

from storage.redis import RedisClient

KEEP_S = 2 * 24 * 3600


def minute_of(at: datetime) -> int:
    return int(at.timestamp() // 60)


def _bucket(minute: int) -> str:
    return f"metrics:m:{minute}"


def _zones(minute: int) -> str:
    return f"metrics:zones:{minute}"


def queue_count(pipe: Any, at: datetime, **fields: int) -> None:
    """Add the counters to a pipeline the caller sends anyway: no round trip of their own."""
    key = _bucket(minute_of(at))
    for name, amount in fields.items():
        pipe.hincrby(key, name, amount)
    pipe.expire(key, KEEP_S)


async def count(client: RedisClient, at: datetime, **fields: int) -> None:
    async with client.pipeline(transaction=False) as pipe:
        queue_count(pipe, at, **fields)
        await pipe.execute()


async def orders_placed(client: RedisClient, placed: list[tuple[datetime, str, str]]) -> None:
    """Count new orders, each `(at, zone, customer_id)`, in one round trip.

    A customer's first and second orders also move the customer and repeat counters.
    A busy host places many orders per call, so the counts are summed here first: one
    increment per minute, per zone and per customer, not one per order.
    """
    if not placed:
        return
    per_minute: Counter[int] = Counter()
    per_zone: Counter[tuple[int, str]] = Counter()
    per_customer: Counter[str] = Counter()
    for at, zone, customer_id in placed:
        minute = minute_of(at)
        per_minute[minute] += 1
        per_zone[minute, zone] += 1
        per_customer[customer_id] += 1
    async with client.pipeline(transaction=False) as pipe:
        for minute, orders in per_minute.items():
            pipe.hincrby(_bucket(minute), "orders", orders)
            pipe.expire(_bucket(minute), KEEP_S)
            pipe.expire(_zones(minute), KEEP_S)
        for (minute, zone), orders in per_zone.items():
            pipe.hincrby(_zones(minute), zone, orders)
        for customer_id, orders in per_customer.items():
            pipe.hincrby("metrics:customer_orders", customer_id, orders)
        replies = await pipe.execute()
    new_customers = repeat_customers = 0
    for total, orders in zip(replies[-len(per_customer) :], per_customer.values(), strict=True):
        before = total - orders
        new_customers += before == 0
        # The customer's second order is among these.
        repeat_customers += before <= 1 < total
    if new_customers or repeat_customers:
        async with client.pipeline(transaction=False) as pipe:
            pipe.incrby("metrics:customers", new_customers)
            pipe.incrby("metrics:repeat_customers", repeat_customers)
            await pipe.execute()


async def window(
    client: RedisClient, now: datetime, minutes: int
) -> tuple[Counter[str], Counter[str]]:
    last = minute_of(now)
    async with client.pipeline(transaction=False) as pipe:
        for minute in range(last - minutes + 1, last + 1):
            pipe.hgetall(_bucket(minute))
            pipe.hgetall(_zones(minute))
        rows = await pipe.execute()
    totals: Counter[str] = Counter()
    zones: Counter[str] = Counter()
    for i in range(0, len(rows), 2):
        totals.update({k: int(v) for k, v in rows[i].items()})
        zones.update({k: int(v) for k, v in rows[i + 1].items()})
    return totals, zones


def riders_needed(orders_in_window: int, window_minutes: int, idle: int) -> int:
    """Riders a zone lacks: a rider completes about one order per 20 minutes at lunch."""
    demand = math.ceil(orders_in_window * 20 / max(window_minutes, 1))
    return max(0, demand - idle)


async def summary(client: RedisClient, now: datetime, minutes: int) -> dict[str, Any]:
    totals, zones = await window(client, now, minutes)
    customers = int(await client.get("metrics:customers") or 0)
    repeaters = int(await client.get("metrics:repeat_customers") or 0)
    day_totals, _ = await window(client, now, 24 * 60)
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
