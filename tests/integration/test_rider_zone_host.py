"""Waiting orders and the riders who free up, against a real Redis-protocol server (no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors import rider_zone
from actors.rider_zone import RiderZoneHost
from domain.dispatch import Dispatch
from domain.geo import Point, zone_of
from storage import keys
from storage.redis import connect
from storage.server import EmbeddedRedis
from storage.settings import Settings

KITCHEN = Point(30.25, 120.15)


@pytest.fixture
async def host(redis_server: EmbeddedRedis) -> AsyncIterator[RiderZoneHost]:
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_server.port}/0")
    client = connect(settings.effective_redis_url)
    await client.flushdb()
    zones = RiderZoneHost(settings)
    yield zones
    if zones._retry_loop is not None:
        zones._retry_loop.cancel()
    await client.flushdb()
    await client.aclose()
    await zones.close()


def request(order_id: str) -> Dispatch:
    return Dispatch(
        order_id=order_id,
        merchant_id="m_wait",
        pickup=KITCHEN,
        dropoff=Point(KITCHEN.lat + 0.005, KITCHEN.lng),
        version=3,
    )


async def settled(zones: RiderZoneHost) -> None:
    """Every follow-up the host posted to its mailboxes (`OfferWaiting`) is applied: an
    applied one is acknowledged and deleted (the retry round itself waits 5 s)."""
    mailboxes = [keys.mailbox("rider_zone", shard) for shard in range(keys.SHARDS)]
    for _ in range(200):
        while zones._background:
            await asyncio.gather(*zones._background)
        async with zones.redis.pipeline(transaction=False) as pipe:
            for mailbox in mailboxes:
                pipe.xlen(mailbox)
            if not any(await pipe.execute()):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("follow-ups left in the zones' mailboxes")


async def test_waiting_orders_go_to_a_rider_as_soon_as_one_is_free(host: RiderZoneHost) -> None:
    zone = zone_of(KITCHEN, host.settings.zone_resolution)
    await host.redis.hset(keys.order("o_wait"), mapping={"status": "accepted", "version": 3})
    waiting = await host.dispatch(zone, request("o_wait"))
    assert waiting["waiting"] is True  # nobody online

    # A rider comes online next to the kitchen: the nudge offers the order now, not at
    # the next retry round.
    await host.set_status(zone, "r_new", True, KITCHEN.lat, KITCHEN.lng)
    await settled(host)
    offer_id = await host.redis.get(keys.rider_offer("r_new"))
    assert offer_id is not None
    assert await host.redis.zcard(keys.dispatch_waiting(zone)) == 0

    # Declined: the order waits again, and a nudge does not ask the same rider twice.
    declined = await host.answer(zone, offer_id, "r_new", accept=False)
    await settled(host)
    assert declined["status"] == "declined"
    assert await host.redis.get(keys.rider_offer("r_new")) is None
    assert await host.redis.zcard(keys.dispatch_waiting(zone)) == 1


async def test_a_zone_is_listed_while_orders_wait_there_and_forgotten_after(
    host: RiderZoneHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rider_zone, "RETRY_WAITING_S", 0.05)
    zone = zone_of(KITCHEN, host.settings.zone_resolution)
    await host.redis.hset(keys.order("o_listed"), mapping={"status": "accepted", "version": 3})
    assert (await host.dispatch(zone, request("o_listed")))["waiting"] is True
    assert await host.redis.smembers(keys.waiting_zones_of(zone)) == {zone}

    # A rider comes online: the nudge offers the order at once and the retry round,
    # finding the zone's queue empty, forgets the zone.
    await host.set_status(zone, "r_late", True, KITCHEN.lat, KITCHEN.lng)
    await settled(host)
    assert await host.redis.get(keys.rider_offer("r_late")) is not None
    scans_before = await scans(host)
    for _ in range(100):
        if not await host.redis.smembers(keys.waiting_zones_of(zone)):
            break
        await asyncio.sleep(0.05)
    assert await host.redis.smembers(keys.waiting_zones_of(zone)) == set()
    assert await host.redis.zcard(keys.dispatch_waiting(zone)) == 0
    # The rounds found their zones without scanning the keyspace.
    assert await scans(host) == scans_before


async def scans(zones: RiderZoneHost) -> int:
    stats = await zones.redis.info("commandstats")
    return int(stats.get("cmdstat_scan", {}).get("calls", 0))
