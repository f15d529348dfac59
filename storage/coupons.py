"""Platform coupons: the definition, the remaining pool and per-customer claims."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from domain.errors import DomainError
from domain.pricing import Coupon
from storage import keys
from storage.redis import RedisClient, Scripts


def _coupon_from(d: dict[str, Any]) -> Coupon:
    return Coupon(
        code=d["code"],
        min_spend_fen=d["min_spend_fen"],
        starts_at=datetime.fromisoformat(d["starts_at"]),
        ends_at=datetime.fromisoformat(d["ends_at"]),
        discount_fen=d.get("discount_fen", 0),
        percent=d.get("percent", 0),
    )


class CouponStore:
    def __init__(self, client: RedisClient, scripts: Scripts) -> None:
        self.client = client
        self.scripts = scripts

    async def create(self, spec: dict[str, Any]) -> bool:
        """Store a new coupon; False when the code exists (codes are never reused)."""
        _coupon_from(spec)  # refuse a bad definition before anything is written
        created = await self.client.hsetnx(keys.coupon(spec["code"]), "json", orjson.dumps(spec))
        if created:
            await self.client.hset(
                keys.coupon(spec["code"]),
                mapping={
                    "remaining": spec["total"],
                    "per_customer_limit": spec["per_customer_limit"],
                },
            )
        return bool(created)

    async def load(self, code: str) -> Coupon:
        raw = await self.client.hget(keys.coupon(code), "json")
        if raw is None:
            raise DomainError("coupon_unavailable", "no such coupon", code=code)
        return _coupon_from(orjson.loads(raw))

    async def claim(self, code: str, customer_id: str, order_id: str) -> None:
        outcome = await self.scripts.claim_coupon(
            keys=[keys.coupon(code), keys.coupon_claims(code), keys.coupon_orders(code)],
            args=[customer_id, order_id],
        )
        if outcome != "ok":
            raise DomainError("coupon_unavailable", f"coupon cannot be used: {outcome}", code=code)

    async def release(self, code: str, customer_id: str, order_id: str) -> bool:
        """Give the order's use back; False if it holds none (it was given back before)."""
        released = await self.scripts.release_coupon(
            keys=[keys.coupon(code), keys.coupon_claims(code), keys.coupon_orders(code)],
            args=[customer_id, order_id],
        )
        return bool(released)
