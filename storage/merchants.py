"""Merchants in Redis: profiles, menus, stock, the city's GEO index, and a profile cache.

Profiles change rarely (onboarding, opening hours) and `nearby` reads hundreds per
request, so each process keeps the parsed profile with its JSON wire form. Every
profile change bumps `merchants:version`; a reader reads it in the same round trip
as its search and drops its cache when it moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from domain.errors import DomainError, not_found
from domain.events import MenuChanged
from domain.geo import Point
from domain.merchants import MenuItem, Merchant
from storage import keys
from storage.outbox import Relay, Remote
from storage.redis import RedisClient, Scripts

CHUNK = 128


@dataclass
class MerchantState:
    """What the merchant host needs of a merchant to take its orders."""

    merchant: Merchant
    menu: dict[str, MenuItem]
    menu_version: int


@dataclass(frozen=True)
class Profile:
    merchant: Merchant
    wire: dict[str, Any]
    reach_m: float


class MerchantStore:
    def __init__(self, client: RedisClient, scripts: Scripts, relay: Relay | None = None) -> None:
        """`relay` relays an onboarding's listing in the city before `onboard` returns."""
        self.client = client
        self.scripts = scripts
        self.relay = relay
        self._profiles: dict[str, Profile] = {}
        self._version: str | None = None

    async def load(self, merchant_id: str) -> MerchantState:
        profile, version = await self.client.hmget(
            keys.merchant(merchant_id), "profile", "menu_version"
        )
        if profile is None:
            raise not_found("merchant", merchant_id)
        items = await self.client.hgetall(keys.menu(merchant_id))
        menu = {k: MenuItem(**orjson.loads(v)) for k, v in items.items()}
        return MerchantState(Merchant.from_dict(orjson.loads(profile)), menu, int(version or 0))

    async def onboard(self, merchant: Merchant) -> None:
        """Store a new merchant and list it in the city, in one step; `merchant_exists` if
        the id is taken (and then nothing is written)."""
        outbox = keys.outbox("merchant", keys.shard_of(merchant.id))
        listing = Remote(outbox)
        listing.call(
            "GEOADD", keys.MERCHANT_GEO, merchant.location.lng, merchant.location.lat, merchant.id
        )
        listing.call(
            "ZADD",
            keys.MERCHANT_MAX_REACH,
            merchant.delivery.reach_m(merchant.location),
            merchant.id,
        )
        listing.call("INCR", keys.MERCHANTS_VERSION)
        created = await self.scripts.onboard_merchant(
            keys=[keys.merchant(merchant.id), outbox],
            args=[orjson.dumps(merchant.as_dict()), listing.entry()],
        )
        if not created:
            raise DomainError("merchant_exists", "merchant already exists", id=merchant.id)
        if self.relay is not None:
            await self.relay.flush(outbox)

    async def set_menu_item(self, item: MenuItem, stock: int, change: MenuChanged) -> int:
        """Write an item, its stock and the menu's next version, and announce `change`.

        Returns the new version, or refuses with `stale_version` if the menu moved since
        the caller read it."""
        version = int(
            await self.scripts.set_menu_item(
                keys=[
                    keys.menu(change.merchant_id),
                    keys.stock(change.merchant_id),
                    keys.merchant(change.merchant_id),
                ],
                args=[
                    item.id,
                    orjson.dumps(item.as_dict()),
                    stock,
                    change.menu_version,
                    orjson.dumps(change.as_dict()),
                    keys.menu_channel(change.merchant_id),
                ],
            )
        )
        if version < 0:
            raise DomainError("stale_version", "the menu changed underneath", version=-version)
        return version

    async def menu(self, merchant_id: str) -> tuple[int, list[dict[str, Any]]]:
        """The menu version and every item with its stock, as customers read it."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(keys.merchant(merchant_id), "menu_version")
            pipe.hgetall(keys.menu(merchant_id))
            pipe.hgetall(keys.stock(merchant_id))
            version, items, stock = await pipe.execute()
        if version is None:
            raise not_found("merchant", merchant_id)
        menu = [
            {**orjson.loads(raw), "stock": int(stock.get(item_id, 0))}
            for item_id, raw in sorted(items.items())
        ]
        return int(version), menu

    async def profile_and_volume(self, merchant_id: str, month: str) -> tuple[dict[str, Any], int]:
        """A merchant's stored profile and its captured volume in a `YYYYMM` month."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(keys.merchant(merchant_id), "profile")
            pipe.hget(keys.merchant_volume(merchant_id), month)
            raw_profile, volume = await pipe.execute()
        return (orjson.loads(raw_profile) if raw_profile else {}), int(volume or 0)

    # -- the read path's cache ------------------------------------------------------

    async def profiles(self, merchant_ids: list[str]) -> dict[str, Profile]:
        found: dict[str, Profile] = {}
        missing = []
        for merchant_id in merchant_ids:
            cached = self._profiles.get(merchant_id)
            if cached is not None:
                found[merchant_id] = cached
            else:
                missing.append(merchant_id)
        if missing:
            async with self.client.pipeline(transaction=False) as pipe:
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
        async with self.client.pipeline(transaction=False) as pipe:
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
            found = await self.client.geosearch(
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
            profiles = await self.profiles([merchant_id for merchant_id, _ in page])
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
