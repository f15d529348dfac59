"""A promotion's push against the real server: the scripts, the index and the cursor.

Customers registered to and connected in a cell are told once each, whoever pushes and
however often a page is worked again; those elsewhere (moved away, a presence that ran
out, another cell) are not; a pusher that dies mid-way is taken over from its cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import h3
import orjson
import pytest

from actors.promotions import Pusher
from domain.promotions import publish
from storage import keys
from storage.promotions import PromotionStore, ms
from storage.redis import RedisClient, connect
from storage.server import EmbeddedRedis

CELL = h3.latlng_to_cell(30.2590, 120.1490, 7)
OTHER = h3.latlng_to_cell(30.4090, 120.1490, 7)


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[RedisClient]:
    redis = connect(f"redis://127.0.0.1:{redis_server.port}/0")
    await redis.flushdb()
    yield redis
    await redis.flushdb()
    await redis.aclose()


def promotion_to(cells: list[str], minutes: int = 60, pid: str = "pr_test") -> object:
    now = datetime.now(UTC)
    return publish(
        promotion_id=pid,
        kind="banner",
        cells=cells,
        title="Lunch by the lake",
        body="",
        coupon_code=None,
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(minutes=minutes),
        now=now,
        resolution=7,
    )


async def promotions_in_inbox(client: RedisClient, customer: str) -> list[str]:
    entries = await client.xrange(keys.inbox("customer", customer))
    return [
        orjson.loads(f["e"])["data"]["promotion_id"]
        for _, f in entries
        if orjson.loads(f["e"])["type"] == "promotion"
    ]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def drive(pusher: Pusher, clock: Clock, steps: int) -> int:
    told = 0
    for _ in range(steps):
        told += await pusher.step()
        clock.t += 0.1
    return told


async def test_a_push_reaches_each_customer_of_its_cells_once(client: RedisClient) -> None:
    store = PromotionStore(client, 100, 3600, presence_s=600)
    now_ms = ms(datetime.now(UTC))
    homed = [f"c_home_{i}" for i in range(300)]
    for customer in homed:
        await store.set_home(customer, CELL)
    # Connected in the cell, registered elsewhere or nowhere.
    present = [f"c_here_{i}" for i in range(20)]
    for customer in present:
        await store.arrive(customer, CELL, now_ms)
    await store.set_home(present[0], OTHER)
    # Registered and connected there: one customer, told once.
    await store.arrive(homed[0], CELL, now_ms)
    # Moved away; a presence that ran out; another cell's.
    await store.set_home("c_moved", CELL)
    await store.set_home("c_moved", OTHER)
    await store.arrive("c_gone", CELL, now_ms - 700_000)
    await store.set_home("c_other", OTHER)

    promotion = promotion_to([CELL])
    assert await store.publish(promotion, now_ms)  # type: ignore[arg-type]
    assert not await store.publish(promotion, now_ms)  # type: ignore[arg-type]
    _, progress = await store.load("pr_test") or (None, {})
    # 300 homes + 20 presences + homed[0]'s presence; the run-out one does not count.
    assert int(progress["targeted"]) == 321

    clock = Clock()
    first = Pusher(store, "zone-0", per_s=300, clock=clock)
    told = await drive(first, clock, 10)
    assert 0 < told < 320
    # The first pusher dies here; its lease runs out; another host goes on.
    await client.delete(keys.PROMOTION_PUSHER)
    second = Pusher(store, "zone-1", per_s=300, clock=clock)
    # A page worked twice (the cursor moved back, as after a crash before it was
    # recorded) tells nobody twice.
    await client.hset(keys.promotion("pr_test"), mapping={"cell": 0, "scan": "0"})
    await drive(second, clock, 40)

    loaded = await store.load("pr_test")
    assert loaded is not None
    _, progress = loaded
    assert progress["finished"] == "done"
    assert int(progress["pushed"]) == 320
    for customer in [*homed, *present]:
        assert await promotions_in_inbox(client, customer) == ["pr_test"], customer
    for customer in ("c_moved", "c_gone", "c_other"):
        assert await promotions_in_inbox(client, customer) == [], customer
    assert await client.zcard(keys.PROMOTION_JOBS) == 0


async def test_arriving_in_a_cell_tells_of_what_is_active_there(client: RedisClient) -> None:
    store = PromotionStore(client, 100, 3600, presence_s=600)
    at = datetime.now(UTC)
    assert await store.publish(promotion_to([CELL]), ms(at))  # type: ignore[arg-type]
    await store.set_home("c_new", CELL)
    assert await store.tell_arrival("c_new", CELL, at) == 1
    assert await store.tell_arrival("c_new", CELL, at) == 0
    assert await promotions_in_inbox(client, "c_new") == ["pr_test"]
    home, here, _ = await store.place_of("c_new")
    assert (home, here) == (CELL, None)
    listed = await store.active_for("c_new", [CELL], at)
    assert [p.id for p in listed] == ["pr_test"]
    # After its end it is listed nowhere.
    assert await store.active_for("c_new", [CELL], at + timedelta(hours=2)) == []


async def test_a_pusher_without_the_lease_moves_nothing(client: RedisClient) -> None:
    store = PromotionStore(client, 100, 3600, presence_s=600)
    at = datetime.now(UTC)
    assert await store.publish(promotion_to([CELL]), ms(at))  # type: ignore[arg-type]
    assert await store.lead("zone-0:a", 5000)
    assert not await store.lead("zone-1:b", 5000)
    assert not await store.advance("zone-1:b", "pr_test", 1, "0", 5, 5, "done", at)
    _, progress = await store.load("pr_test") or (None, {})
    assert progress["cell"] == "0" and "finished" not in progress
    assert await store.keep("zone-0:a", 5000)
    await store.let_go("zone-0:a")
    assert await store.lead("zone-1:b", 5000)
