"""Merchant profiles as the read path sees them: cached per replica until they change.

Profiles change rarely (onboarding, opening hours) and `nearby` reads hundreds per
request, so each replica keeps the parsed profile with its JSON wire form. Every
profile change bumps `merchants:version`; a replica reads it in the same round trip
as its search and drops its cache when it moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from domain.geo import Point
from domain.merchants import Merchant
from storage import keys
from storage.redis import RedisClient

CHUNK = 128


@dataclass(frozen=True)
class Profile:
    merchant: Merchant
    wire: dict[str, Any]
    reach_m: float


class ProfileCache:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._profiles: dict[str, Profile] = {}
        self._version: str | None = None

    async def get_many(self, merchant_ids: list[str]) -> dict[str, Profile]:
        found: dict[str, Profile] = {}
        missing = []
        for merchant_id in merchant_ids:
            cached = self._profiles.get(merchant_id)
            if cached is not None:
                found[merchant_id] = cached
            else:
                missing.append(merchant_id)
        if missing:
            async with self.redis.pipeline(transaction=False) as pipe:
                for merchant_id in missing:
                    pipe.hget(keys.merchant(merchant_id), "profile")
                raws = await pipe.execute()
            for merchant_id, raw in zip(missing, raws, strict=True):
                if raw is None:
                    continue
                merchant = Merchant.from_dict(orjson.loads(raw))
                profile = Profile(
                    merchant, merchant.as_dict(), merchant.delivery.reach_m(merchant.location)
                )
                self._profiles[merchant_id] = found[merchant_id] = profile
        return found

    async def nearby(
        self, lat: float, lng: float, radius_m: int, limit: int
    ) -> list[dict[str, Any]]:
        """Open merchants whose delivery range covers the point, nearest first."""
        point = Point(lat, lng)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.MERCHANTS_VERSION)
            pipe.zrevrange(keys.MERCHANT_MAX_REACH, 0, 0, withscores=True)
            version, widest = await pipe.execute()
        if version != self._version:
            self._profiles.clear()
            self._version = version
        # No merchant delivers further than the widest reach: search no wider than that.
        if not widest:
            return []
        radius = min(float(radius_m), float(widest[0][1]))
        merchants: list[dict[str, Any]] = []
        seen = 0
        count = max(4 * limit, CHUNK)
        # Nearest first, a page at a time: most near merchants reach the customer, so
        # the first page nearly always fills the answer without listing the whole city.
        while True:
            found = await self.redis.geosearch(
                keys.MERCHANT_GEO,
                longitude=lng,
                latitude=lat,
                radius=radius,
                unit="m",
                sort="ASC",
                withdist=True,
                count=count,
            )
            page = found[seen:]
            profiles = await self.get_many([merchant_id for merchant_id, _ in page])
            for merchant_id, dist in page:
                profile = profiles.get(merchant_id)
                if profile is None or not profile.merchant.open:
                    continue
                if float(dist) > profile.reach_m or not profile.merchant.delivers_to(point):
                    continue
                merchants.append({**profile.wire, "distance_m": round(float(dist), 1)})
                if len(merchants) >= limit:
                    return merchants
            if len(found) < count:
                return merchants
            seen, count = len(found), count * 4
