"""Merchants in Redis: profiles, menus, stock, the city's GEO index, and a profile cache.

Profiles change rarely (onboarding, opening hours) and `nearby` reads hundreds per
request, so each process keeps the parsed profile with its JSON wire form. Every
profile change bumps `merchants:version`; a reader reads it in the same round trip
as its search and drops its cache when it moved. Whether a merchant is within its
opening hours is worked out per request from the cached profile (a few comparisons).

A shop's menu may hold thousands of items, read a page at a time (`menu_page`): each
process keeps, per merchant, the menu's item ids in order with their folded names
(`MenuIndex`), read once per menu version; a page is then one round trip for its own
items and stock and the menu's version, and the index is read again only when that
version moved. No key is added for it, so menus written before paging existed page
as they are.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from domain.errors import DomainError, not_found
from domain.events import MenuChanged
from domain.geo import Point
from domain.merchants import MenuItem, MenuPage, Merchant, folded, menu_page
from storage import keys
from storage.outbox import Relay, Remote
from storage.redis import RedisClient, Scripts

CHUNK = 128
# Menu items a process keeps in its menu indexes, all merchants together (about 200
# bytes each: 100,000 are some 20 MB); the least recently read menus leave first.
MENU_INDEX_ITEMS = 100_000


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


@dataclass(frozen=True)
class MenuIndex:
    """A menu's items as paging and search need them: `(id, folded name)` by id."""

    version: int
    items: list[tuple[str, str]]


class MerchantStore:
    def __init__(self, client: RedisClient, scripts: Scripts, relay: Relay | None = None) -> None:
        """`relay` relays an onboarding's listing in the city before `onboard` returns."""
        self.client = client
        self.scripts = scripts
        self.relay = relay
        self._profiles: dict[str, Profile] = {}
        self._version: str | None = None
        self._menus: OrderedDict[str, MenuIndex] = OrderedDict()
        self._menu_items = 0

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

    async def menu_page(
        self, merchant_id: str, q: str | None, after: str | None, limit: int
    ) -> dict[str, Any]:
        """One page of a menu (`domain.merchants.menu_page`): its items with their
        stock, the menu's version, how many items match, and the cursor of the next
        page (None after the last)."""
        index = self._menus.get(merchant_id)
        if index is not None:
            self._menus.move_to_end(merchant_id)
            page = menu_page(index.items, q, after, limit)
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hget(keys.merchant(merchant_id), "menu_version")
                if page.item_ids:
                    pipe.hmget(keys.menu(merchant_id), page.item_ids)
                    pipe.hmget(keys.stock(merchant_id), page.item_ids)
                version, *read = await pipe.execute()
            if version is not None and int(version) == index.version:
                raws, stock = read or ([], [])
                return _page_of(merchant_id, index.version, page, raws, stock)
        # Not kept, or the menu moved since: read the whole menu once, then page.
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(keys.merchant(merchant_id), "menu_version")
            pipe.hgetall(keys.menu(merchant_id))
            version, items = await pipe.execute()
        if version is None:
            raise not_found("merchant", merchant_id)
        parsed = {item_id: orjson.loads(raw) for item_id, raw in items.items()}
        index = MenuIndex(
            int(version),
            sorted((item_id, folded(item["name"])) for item_id, item in parsed.items()),
        )
        self._keep_menu(merchant_id, index)
        page = menu_page(index.items, q, after, limit)
        stock = []
        if page.item_ids:
            stock = await self.client.hmget(keys.stock(merchant_id), page.item_ids)
        raws = [items[item_id] for item_id in page.item_ids]
        return _page_of(merchant_id, index.version, page, raws, stock)

    def _keep_menu(self, merchant_id: str, index: MenuIndex) -> None:
        old = self._menus.pop(merchant_id, None)
        if old is not None:
            self._menu_items -= len(old.items)
        if len(index.items) > MENU_INDEX_ITEMS:
            return
        self._menus[merchant_id] = index
        self._menu_items += len(index.items)
        while self._menu_items > MENU_INDEX_ITEMS:
            _, dropped = self._menus.popitem(last=False)
            self._menu_items -= len(dropped.items)

    async def keep_desk(self, desk: Merchant) -> None:
        """Write a courier desk's profile (`domain/errands.py`), as its host has it, so
        that the payment host splits its errands by the desk's plan. Only the profile:
        a desk is listed nowhere in the city, and has no menu."""
        await self.client.hset(keys.merchant(desk.id), "profile", orjson.dumps(desk.as_dict()))

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
        self,
        lat: float,
        lng: float,
        radius_m: int,
        limit: int,
        at: datetime,
        utc_offset_min: int,
        include_closed: bool = False,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """Merchants taking orders whose delivery range covers the point, nearest first,
        each with `open_now` and `next_opening_at` (None while open) at `at`. Those
        outside their opening hours are left out unless `include_closed`; with `kind`,
        only merchants of that kind."""
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
                if kind is not None and profile.merchant.kind != kind:
                    continue
                if float(dist) > profile.reach_m or not profile.merchant.delivers_to(point):
                    continue
                open_now = profile.merchant.open_at(at, utc_offset_min)
                if not open_now and not include_closed:
                    continue
                opening = None if open_now else profile.merchant.next_opening(at, utc_offset_min)
                merchants.append(
                    {
                        **profile.wire,
                        "distance_m": round(float(dist), 1),
                        "open_now": open_now,
                        "next_opening_at": opening.isoformat() if opening else None,
                    }
                )
                if len(merchants) >= limit:
                    return merchants
            if len(found) < count:
                return merchants
            seen, count = len(found), count * 4


def _page_of(
    merchant_id: str, version: int, page: MenuPage, raws: list[Any], stock: list[Any]
) -> dict[str, Any]:
    """A page as customers read it (the unpaged menu's shape, and where the next begins)."""
    return {
        "merchant_id": merchant_id,
        "menu_version": version,
        "items": [
            {**orjson.loads(raw), "stock": int(left or 0)}
            for raw, left in zip(raws, stock, strict=True)
            if raw is not None
        ],
        "total": page.total,
        "cursor": page.cursor,
    }
