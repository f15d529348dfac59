"""The Lua scripts against the real Redis-protocol server: all or nothing, never oversold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from redis.exceptions import ResponseError

from domain import commands as c
from domain.errors import DomainError
from domain.geo import Point
from domain.orders import decide, evolve, place
from domain.pricing import Amounts, Line
from storage import keys
from storage.coupons import CouponStore
from storage.orders import OrderStore
from storage.outbox import Relay
from storage.redis import RedisClient, Scripts, connect
from storage.server import EmbeddedRedis
from storage.settings import Settings


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[RedisClient]:
    redis = connect(f"redis://127.0.0.1:{redis_server.port}/0")
    await redis.flushdb()
    yield redis
    await redis.flushdb()
    await redis.aclose()


def order_store(client: RedisClient) -> OrderStore:
    scripts = Scripts(client)
    return OrderStore(
        client,
        scripts,
        inbox_maxlen=100,
        retention_s=3600,
        payment_check_after_s=5,
        relay=Relay(client, scripts, inbox_maxlen=100, retention_s=3600),
    )


def placing(order_id: str, qty: int) -> c.PlaceOrder:
    return c.PlaceOrder(
        at=datetime.now(UTC),
        order_id=order_id,
        customer_id="c1",
        merchant_id="m1",
        lines=(Line("rice", "Rice", qty, 300),),
        amounts=Amounts(300 * qty, 300, 0, 300 * qty + 300),
        pickup=Point(30.25, 120.15),
        dropoff=Point(30.26, 120.15),
        address="here",
    )


async def test_server_keeps_an_append_only_file(client: RedisClient) -> None:
    assert (await client.config_get("appendonly"))["appendonly"] == "yes"


async def test_the_log_is_not_rewritten_before_it_reaches_the_settings_floor(
    client: RedisClient,
) -> None:
    floor = Settings().redis_aof_rewrite_min_mb
    assert floor == 1024
    answer = await client.config_get("auto-aof-rewrite-min-size")
    assert int(answer["auto-aof-rewrite-min-size"]) == floor * 2**20


async def test_placing_reserves_stock_writes_indexes_and_events_in_one_go(
    client: RedisClient,
) -> None:
    store = order_store(client)
    await client.hset(keys.stock("m1"), "rice", 3)
    order_id = keys.new_order_id("m1", "o1")
    command = placing(order_id, 2)
    (event,) = decide(None, command)
    await store.commit(None, place(command), event)
    assert await client.hget(keys.stock("m1"), "rice") == "1"
    assert await client.zrange(keys.orders_of("customer", "c1"), 0, -1) == [order_id]
    for party in (("customer", "c1"), ("merchant", "m1"), ("ops", "all")):
        (entry,) = await client.xrange(keys.inbox(*party))
        assert orjson.loads(entry[1]["e"])["type"] == "order_placed"
    loaded = await store.load(order_id)
    assert loaded == place(command)
    # The other slots' part was relayed, and the outbox holds nothing more.
    assert await client.xlen(keys.outbox("merchant", keys.order_shard(order_id))) == 0


async def test_out_of_stock_changes_nothing(client: RedisClient) -> None:
    store = order_store(client)
    await client.hset(keys.stock("m1"), "rice", 1)
    command = placing(keys.new_order_id("m1", "o2"), 2)
    (event,) = decide(None, command)
    with pytest.raises(DomainError) as refused:
        await store.commit(None, place(command), event)
    assert refused.value.code == "out_of_stock"
    assert refused.value.details == {"item_id": "rice", "available": 1}
    assert sorted(await client.keys("*")) == [keys.stock("m1")]
    assert await client.hget(keys.stock("m1"), "rice") == "1"


async def test_a_write_from_a_stale_version_is_refused(client: RedisClient) -> None:
    store = order_store(client)
    await client.hset(keys.stock("m1"), "rice", 5)
    order_id = keys.new_order_id("m1", "o3")
    command = placing(order_id, 1)
    (placed,) = decide(None, command)
    order = place(command)
    await store.commit(None, order, placed)
    (paid,) = decide(order, c.MarkPaid(at=datetime.now(UTC), intent_id="pi", amount_fen=600))
    after = evolve(order, paid)
    await store.commit(order, after, paid)
    with pytest.raises(DomainError) as refused:
        await store.commit(order, after, paid)  # a second writer still holding version 1
    assert refused.value.code == "stale_version"
    assert (await store.load(order_id)) == after
    assert await client.xlen(keys.inbox("customer", "c1")) == 2


async def test_concurrent_coupon_claims_never_exceed_the_pool(client: RedisClient) -> None:
    coupons = CouponStore(client, Scripts(client))
    created = await coupons.create(
        {
            "code": "POOL",
            "discount_fen": 100,
            "min_spend_fen": 0,
            "total": 100,
            "per_customer_limit": 1,
            "starts_at": "2020-01-01T00:00:00+00:00",
            "ends_at": "2099-01-01T00:00:00+00:00",
        },
    )
    assert created

    async def claim(customer: str, order: str) -> bool:
        try:
            await coupons.claim("POOL", customer, order)
        except DomainError:
            return False
        return True

    # 1,000 claims at once from 500 customers (each tries twice) on a pool of 100.
    outcomes = await asyncio.gather(*(claim(f"c{i % 500}", f"o{i}") for i in range(1000)))
    assert sum(outcomes) == 100
    assert await client.hget(keys.coupon("POOL"), "remaining") == "0"
    claims = await client.hgetall(keys.coupon_claims("POOL"))
    assert sorted(set(claims.values())) == ["1"]
    holder = next(iter(claims))
    held = [o for o in await client.smembers(keys.coupon_orders("POOL"))]
    order = next(f"o{i}" for i in range(1000) if f"c{i % 500}" == holder and f"o{i}" in held)
    assert await coupons.release("POOL", holder, order) is True
    assert await client.hget(keys.coupon("POOL"), "remaining") == "1"
    # Given back once: the same order gives nothing more, however often it asks.
    assert await coupons.release("POOL", holder, order) is False
    assert await client.hget(keys.coupon("POOL"), "remaining") == "1"


async def test_inboxes_are_trimmed_by_length_and_by_age(client: RedisClient) -> None:
    scripts = Scripts(client)
    body = orjson.dumps({"type": "order_paid"})
    for _ in range(600):
        await scripts.append_event(
            keys=["inbox:customer:long"], args=[200, 3_600_000, body, "notify:"]
        )
    # Approximate trimming drops whole stream nodes, never below the bound.
    assert 200 <= await client.xlen("inbox:customer:long") <= 300

    for _ in range(350):
        await scripts.append_event(
            keys=["inbox:customer:old"], args=[10_000, 3_600_000, body, "notify:"]
        )
    await asyncio.sleep(0.05)
    await scripts.append_event(keys=["inbox:customer:old"], args=[10_000, 20, body, "notify:"])
    remaining = await client.xlen("inbox:customer:old")
    assert remaining <= 100, "entries older than the retention stayed"
    assert remaining >= 1


async def test_every_appended_event_is_announced_with_its_stream_id(
    client: RedisClient,
) -> None:
    scripts = Scripts(client)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("notify:inbox:rider:r9")
    await scripts.append_event(
        keys=["inbox:rider:r9"],
        args=[100, 3_600_000, orjson.dumps({"type": "offer"}), "notify:"],
    )
    message = None
    for _ in range(50):
        message = await pubsub.get_message(timeout=0.1)
        if message:
            break
    assert message is not None
    stream_id, _, payload = message["data"].partition(" ")
    (entry,) = await client.xrange("inbox:rider:r9")
    assert stream_id == entry[0]
    assert orjson.loads(payload) == {"type": "offer"}
    await pubsub.aclose()


async def test_concurrent_commits_share_a_pipeline_and_each_keeps_its_own_answer(
    client: RedisClient,
) -> None:
    from storage.redis import ScriptPipeline

    pipeline = ScriptPipeline(client)
    sent: list[int] = []
    send = pipeline._send

    async def counting(calls: list[tuple[object, list[object], list[object]]]) -> list[object]:
        sent.append(len(calls))
        return await send(calls)  # type: ignore[arg-type]

    pipeline._batcher._send = counting  # type: ignore[assignment]
    scripts = Scripts(client)
    store = OrderStore(
        client,
        scripts,
        inbox_maxlen=100,
        retention_s=3600,
        payment_check_after_s=5,
        run_script=pipeline,
        relay=Relay(client, scripts, inbox_maxlen=100, retention_s=3600),
    )
    await client.hset(keys.stock("m1"), "rice", 7)
    commands = [placing(keys.new_order_id("m1", f"p{i}"), 1) for i in range(8)]
    commands.append(placing(keys.new_order_id("m1", "too-many"), 5))
    results = await asyncio.gather(
        *(store.commit(None, place(cmd), decide(None, cmd)[0]) for cmd in commands),
        return_exceptions=True,
    )
    # The first went alone, the rest waited for it and went together.
    assert sent == [1, 8]
    refused = [r for r in results if isinstance(r, DomainError)]
    # Seven units of stock: seven of the eight single orders and none of the five.
    assert sorted(r.code for r in refused) == ["out_of_stock", "out_of_stock"]
    assert await client.hget(keys.stock("m1"), "rice") == "0"
    assert await client.zcard(keys.orders_of("customer", "c1")) == 7


async def test_pipelined_scripts_the_server_forgot_are_loaded_and_run(client: RedisClient) -> None:
    from storage.redis import ScriptPipeline

    scripts = Scripts(client)
    await client.script_flush()
    calls = [(scripts.append_event, ["inbox:ops:all"], [100, 3_600_000, b"{}", "notify:"])] * 2
    assert await ScriptPipeline(client)._send(calls) == [1, 1]  # type: ignore[arg-type]
    assert await client.xlen("inbox:ops:all") == 2


async def test_new_orders_are_counted_per_minute_zone_and_customer(client: RedisClient) -> None:
    from storage.metrics import MetricsStore

    metrics = MetricsStore(client)
    at = datetime(2026, 11, 29, 12, 0, 30, tzinfo=UTC)
    # Customer a's first three orders arrive in one batch, b's first with them.
    batch = [(at, "z1", "a"), (at, "z1", "a"), (at, "z2", "b"), (at, "z1", "a")]
    await metrics.count_new_orders(batch)
    await metrics.count_new_orders([(at, "z2", "b"), (at, "z2", "c")])
    totals, zones = await metrics.window(at, 1)
    assert totals["orders"] == 6
    assert zones == {"z1": 3, "z2": 3}
    # Three customers ordered; a and b came back for a second order.
    assert await client.get("metrics:customers") == "3"
    assert await client.get("metrics:repeat_customers") == "2"
    summary = await metrics.summary(at, 1)
    assert summary["repeat_purchase_rate"] == round(2 / 3, 3)


async def test_a_burst_beyond_the_pool_waits_for_connections_and_gives_them_back(
    redis_server: EmbeddedRedis,
) -> None:
    from storage.redis import QueueingPool

    small = connect(f"redis://127.0.0.1:{redis_server.port}/0", max_connections=3)
    pool: QueueingPool = small.connection_pool
    await small.set("burst", "x")
    answers = await asyncio.gather(*(small.get("burst") for _ in range(300)))
    assert answers == ["x"] * 300
    assert len(pool._available_connections) + len(pool._in_use_connections) <= 3
    assert pool.free_slots() == 3
    await small.delete("burst")
    await small.aclose()


async def test_a_connection_that_cannot_connect_gives_its_slot_back() -> None:
    import redis.exceptions

    from storage.redis import QueueingPool
    from storage.server import free_port

    nowhere = connect(f"redis://127.0.0.1:{free_port()}/0", max_connections=1)
    pool: QueueingPool = nowhere.connection_pool
    for _ in range(3):
        with pytest.raises(redis.exceptions.ConnectionError):
            await nowhere.get("anything")
    assert pool.free_slots() == 1
    await nowhere.aclose()


async def test_a_capture_raises_the_merchant_volume_once_with_its_posting(
    client: RedisClient,
) -> None:
    from domain import ledger
    from storage.ledger import LedgerStore

    store = LedgerStore(client, Scripts(client))
    order_id = keys.new_order_id("m1", "o1")
    txn = ledger.capture(order_id, "c1", 2_500, datetime(2026, 11, 29, 12, tzinfo=UTC))
    assert await store.post(txn, "m1", volume_fen=2_500) is True
    # A retry of the same capture (a repeated notification, a poll) changes nothing.
    assert await store.post(txn, "m1", volume_fen=2_500) is False
    assert await client.hget(keys.merchant_volume("m1"), "202611") == "2500"
    balances = await store.balances()
    assert balances and sum(balances.values()) == 0
    assert len(await store.of_order(order_id)) == 1


async def test_an_outbox_left_by_a_dead_host_is_relayed_once_by_the_next(
    client: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = Scripts(client)
    # A host that died right after its commit: the change is stored, nothing relayed.
    dead = OrderStore(client, scripts, inbox_maxlen=100, retention_s=3600, payment_check_after_s=5)
    await client.hset(keys.stock("m1"), "rice", 5)
    order_id = keys.new_order_id("m1", "stranded")
    command = placing(order_id, 1)
    await dead.commit(None, place(command), decide(None, command)[0])
    outbox = keys.outbox("merchant", keys.order_shard(order_id))
    assert await client.xlen(outbox) == 1
    assert await client.xlen(keys.inbox("customer", "c1")) == 0
    assert await client.xlen(keys.inbox("merchant", "m1")) == 1  # its own slot: at once

    relay = Relay(client, scripts, inbox_maxlen=100, retention_s=3600)
    # The next host relays it, and dies before deleting it: relayed again, applied once.
    with monkeypatch.context() as dying:

        async def dies_first(*ids: str) -> int:
            return 0

        dying.setattr(client, "xdel", dies_first)
        assert await relay._pass(outbox) == 1
    assert await client.xlen(outbox) == 1
    assert await relay.sweep([outbox]) == 1
    assert await relay.sweep([outbox]) == 0
    assert await client.xlen(outbox) == 0
    assert await client.zrange(keys.orders_of("customer", "c1"), 0, -1) == [order_id]
    for party in (("customer", "c1"), ("ops", "all")):
        (entry,) = await client.xrange(keys.inbox(*party))
        assert orjson.loads(entry[1]["e"])["order_id"] == order_id


async def test_a_script_across_slots_is_refused_as_a_cluster_refuses_it(
    client: RedisClient,
) -> None:
    # The embedded server checks the one-slot rule of every script and transaction.
    with pytest.raises(ResponseError, match="same slot"):
        await client.eval(
            "redis.call('SET', KEYS[1], 1) redis.call('SET', KEYS[2], 1)",
            2,
            keys.order(keys.new_order_id("m1", "a")),
            keys.inbox("customer", "c1"),
        )
    assert await client.exists(keys.order(keys.new_order_id("m1", "a"))) == 0
