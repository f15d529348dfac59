"""The facts the risk checks weigh (`domain/risk.py`), counted in Redis.

- **Orders and failed payments per customer and per device**, in sliding windows: a
  sorted set of order ids by when, per party, in the party's own slot (`{c:<id>}`,
  `{d:<device>}`: `storage/keys.py`). A placement reads them (four counts in one
  pipelined round trip, before the merchant's lock is taken: reads only, so a refused
  placement changes nothing) and is counted by its own commit: the placement script's
  outbox entry adds it to its customer's and device's windows (and trims them), so an
  order is counted exactly when it exists, once. Failed payments are counted by the
  payment shard after it closes an order unpaid, by order id (so twice is once); a
  crash between the close and the count undercounts by one, as the operations'
  per-minute figures may.
- **Which device placed an order**, written with the order the same way and kept until
  well after its payment timeout, so the payment shard that closes it unpaid counts the
  failure for that device too.
- **A merchant's money of the day** (`captured_fen`, written with the capture's ledger
  posting; `refunded_fen`, with each refund asked and each held refund approved), in
  the merchant's shard beside its payments.
"""

from __future__ import annotations

from datetime import date, datetime

from domain.risk import Figures, PlacementCounts
from storage import keys
from storage.outbox import Remote
from storage.redis import RedisClient
from storage.settings import Settings

# How much longer than the payment timeout an order's device is remembered.
DEVICE_KEPT_BEYOND_S = 3600


def figures_of(settings: Settings) -> Figures:
    """The rules' figures from the settings (`O2O_RISK_*`)."""
    return Figures(
        orders_window_s=settings.risk_orders_window_s,
        max_orders_per_customer=settings.risk_max_orders_per_customer,
        max_orders_per_device=settings.risk_max_orders_per_device,
        failures_window_s=settings.risk_failures_window_s,
        max_failures_per_customer=settings.risk_max_failures_per_customer,
        max_failures_per_device=settings.risk_max_failures_per_device,
        refund_share_bp=settings.risk_refund_share_bp,
        refund_allowance_fen=settings.risk_refund_allowance_fen,
        rider_max_speed_kmh=settings.risk_rider_max_speed_kmh,
        rider_min_distance_m=settings.risk_rider_min_distance_m,
    )


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class RiskStore:
    def __init__(self, client: RedisClient, figures: Figures) -> None:
        self.client = client
        self.figures = figures

    async def placement(
        self, customer_id: str, device_id: str | None, at: datetime
    ) -> PlacementCounts:
        """What the customer (and device) did in the windows, this placement counted:
        reads only, one round trip."""
        f = self.figures
        now = _ms(at)
        parties = [("c", customer_id)] + ([("d", device_id)] if device_id else [])
        async with self.client.pipeline(transaction=False) as pipe:
            for party, owner in parties:
                pipe.zcount(keys.risk_orders(party, owner), now - f.orders_window_s * 1000, "+inf")
                pipe.zcount(
                    keys.risk_failures(party, owner), now - f.failures_window_s * 1000, "+inf"
                )
            counts = await pipe.execute()
        return PlacementCounts(
            customer_orders=int(counts[0]) + 1,
            customer_failures=int(counts[1]),
            device_orders=int(counts[2]) + 1 if device_id else None,
            device_failures=int(counts[3]) if device_id else None,
        )

    def count_placement(
        self,
        remote: Remote,
        customer_id: str,
        device_id: str | None,
        order_id: str,
        at: datetime,
        payment_timeout_s: int,
    ) -> None:
        """The placement's writes of its windows (and of its device), added to the outbox
        entry of the script that saves the order."""
        f = self.figures
        now = _ms(at)
        window_ms = f.orders_window_s * 1000
        parties = [("c", customer_id, f.max_orders_per_customer)]
        if device_id:
            parties.append(("d", device_id, f.max_orders_per_device))
            ttl_s = payment_timeout_s + DEVICE_KEPT_BEYOND_S
            remote.call("SET", keys.order_device(order_id), device_id, "EX", ttl_s)
        for party, owner, most in parties:
            key = keys.risk_orders(party, owner)
            remote.call("ZADD", key, "NX", now, order_id)
            remote.call("ZREMRANGEBYSCORE", key, "-inf", now - window_ms)
            # The rule asks only whether there are more than its maximum.
            remote.call("ZREMRANGEBYRANK", key, 0, -max(most, 0) - 2)
            remote.call("PEXPIRE", key, window_ms)

    async def count_failure(self, customer_id: str, order_id: str, at: datetime) -> None:
        """An order closed unpaid: a failed payment of its customer and of its device."""
        device_id = await self.client.get(keys.order_device(order_id))
        window_ms = self.figures.failures_window_s * 1000
        now = _ms(at)
        parties = [("c", customer_id)] + ([("d", device_id)] if device_id else [])
        async with self.client.pipeline(transaction=False) as pipe:
            for party, owner in parties:
                key = keys.risk_failures(party, owner)
                pipe.zadd(key, {order_id: now}, nx=True)
                pipe.zremrangebyscore(key, "-inf", now - window_ms)
                pipe.pexpire(key, window_ms)
            await pipe.execute()

    async def merchant_day(self, merchant_id: str, day: date) -> tuple[int, int]:
        """(captured, refunded) fen of a merchant's UTC day."""
        captured, refunded = await self.client.hmget(
            keys.merchant_day(merchant_id, day), "captured_fen", "refunded_fen"
        )
        return int(captured or 0), int(refunded or 0)
