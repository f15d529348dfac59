"""The risk checks' counts and the review queue against the real Redis-protocol server
(a one-node cluster: every script and MULTI keeps to one slot or is refused)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from domain import commands as c
from domain import risk
from domain.errors import DomainError
from domain.geo import Point
from domain.orders import decide, evolve, place
from domain.pricing import Amounts, Line
from storage import keys
from storage.orders import OrderStore
from storage.outbox import Relay
from storage.redis import RedisClient, Scripts, connect
from storage.reviews import ReviewStore
from storage.risk import RiskStore
from storage.server import EmbeddedRedis

FIGURES = risk.Figures(
    orders_window_s=60,
    max_orders_per_customer=3,
    max_orders_per_device=2,
    failures_window_s=600,
    max_failures_per_customer=2,
    max_failures_per_device=1,
)


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[RedisClient]:
    redis = connect(f"redis://127.0.0.1:{redis_server.port}/0")
    await redis.flushdb()
    yield redis
    await redis.flushdb()
    await redis.aclose()


# Order ids name their merchant's shard, as placement makes them.
OID = {name: keys.new_order_id("m1", name) for name in ("o1_a", "o1_b", "o1_x", "o2_a")}


def placing(order_id: str, customer_id: str, at: datetime, qty: int = 1) -> c.PlaceOrder:
    return c.PlaceOrder(
        at=at,
        order_id=order_id,
        customer_id=customer_id,
        merchant_id="m1",
        lines=(Line("rice", "Rice", qty, 300),),
        amounts=Amounts(300 * qty, 300, 0, 300 * qty + 300),
        pickup=Point(30.25, 120.15),
        dropoff=Point(30.26, 120.15),
        address="here",
    )


async def commit_placed(
    client: RedisClient, risks: RiskStore, command: c.PlaceOrder, device: str | None
) -> None:
    """Save a new order as the merchant host does, its risk counts with it."""
    scripts = Scripts(client)
    orders = OrderStore(client, scripts, 100, 3600, 5, relay=Relay(client, scripts, 100, 3600))
    (event,) = decide(None, command)
    counted = partial(
        risks.count_placement,
        customer_id=command.customer_id,
        device_id=device,
        order_id=command.order_id,
        at=command.at,
        payment_timeout_s=900,
    )
    await orders.commit(None, place(command), event, beside=counted)


async def test_orders_are_counted_with_their_commit_once_each(client: RedisClient) -> None:
    risks = RiskStore(client, FIGURES)
    await client.hset(keys.stock("m1"), "rice", 10)
    now = datetime.now(UTC)
    first = await risks.placement("c1", "dev-1", now)
    assert (first.customer_orders, first.device_orders) == (1, 1)  # this one counted
    await commit_placed(client, risks, placing(OID["o1_a"], "c1", now), "dev-1")
    second = await risks.placement("c1", "dev-1", now)
    assert (second.customer_orders, second.device_orders) == (2, 2)
    # The same order again (a retried placement) is refused by its version: no count.
    with pytest.raises(DomainError):
        await commit_placed(client, risks, placing(OID["o1_a"], "c1", now), "dev-1")
    # A placement refused (out of stock) counts nothing either.
    with pytest.raises(DomainError):
        await commit_placed(client, risks, placing(OID["o1_x"], "c1", now, qty=50), "dev-1")
    assert (await risks.placement("c1", "dev-1", now)).customer_orders == 2
    # Another customer on the same device: the device counts both.
    await commit_placed(client, risks, placing(OID["o1_b"], "c2", now), "dev-1")
    other = await risks.placement("c3", "dev-1", now)
    assert (other.customer_orders, other.device_orders) == (1, 3)
    hit = risk.placement(other, FIGURES)
    assert hit is not None and hit.reason == risk.TOO_MANY_ORDERS
    # Past the window they are forgotten.
    later = await risks.placement("c1", "dev-1", now + timedelta(seconds=61))
    assert (later.customer_orders, later.device_orders) == (1, 1)
    # No device named: only the customer's counts.
    alone = await risks.placement("c4", None, now)
    assert (alone.device_orders, alone.device_failures) == (None, None)
    assert await client.get(keys.order_device(OID["o1_a"])) == "dev-1"


async def test_failed_payments_count_for_the_customer_and_its_device(client: RedisClient) -> None:
    risks = RiskStore(client, FIGURES)
    await client.hset(keys.stock("m1"), "rice", 10)
    now = datetime.now(UTC)
    await commit_placed(client, risks, placing(OID["o2_a"], "c1", now), "dev-9")
    await risks.count_failure("c1", OID["o2_a"], now)
    await risks.count_failure("c1", OID["o2_a"], now)  # seen twice, counted once
    counts = await risks.placement("c5", "dev-9", now)
    assert (counts.customer_failures, counts.device_failures) == (0, 1)
    hit = risk.placement(counts, FIGURES)
    assert hit is not None and hit.reason == risk.TOO_MANY_FAILED_PAYMENTS
    mine = await risks.placement("c1", None, now)
    assert mine.customer_failures == 1 and risk.placement(mine, FIGURES) is None


async def test_a_hold_opens_its_review_and_its_decision_closes_it(client: RedisClient) -> None:
    scripts = Scripts(client)
    orders = OrderStore(client, scripts, 100, 3600, 5, relay=Relay(client, scripts, 100, 3600))
    order_id = keys.new_order_id("m1", "held")
    hold = risk.Hold(risk.TOO_MANY_ORDERS, risk.order_review_id(order_id, "placed"), hidden=True)
    now = datetime.now(UTC)
    command = c.PlaceOrder(
        at=now,
        order_id=order_id,
        customer_id="c1",
        merchant_id="m1",
        lines=(Line("rice", "Rice", 1, 300),),
        amounts=Amounts(300, 300, 0, 600),
        pickup=Point(30.25, 120.15),
        dropoff=Point(30.26, 120.15),
        address="here",
        hold=hold,
    )
    await client.hset(keys.stock("m1"), "rice", 5)
    (placed_event,) = decide(None, command)
    order = place(command)
    await orders.commit(None, order, placed_event)
    reviews = ReviewStore(client)
    review = await reviews.get(hold.review_id)
    assert review is not None and review["status"] == risk.OPEN
    assert (review["order_id"], review["reason"]) == (order_id, risk.TOO_MANY_ORDERS)
    # Its merchant neither lists it nor hears of it; its customer and operations do.
    assert await client.zcard(keys.orders_of("merchant", "m1")) == 0
    assert await client.xlen(keys.inbox("merchant", "m1")) == 0
    assert await client.xlen(keys.inbox("customer", "c1")) == 1
    assert await client.xlen(keys.OPS_INBOX) == 1
    page, cursor = await reviews.page(risk.OPEN, 0, 10)
    assert [r["id"] for r in page] == [hold.review_id] and cursor is None

    decision = c.Review(at=now, review_id=hold.review_id, approve=True, by="ops-2")
    (released,) = decide(order, decision)
    after = evolve(order, released)
    await orders.commit(order, after, released)
    review = await reviews.get(hold.review_id)
    assert review is not None
    assert (review["status"], review["decided_by"]) == (risk.APPROVED, "ops-2")
    assert await reviews.page(risk.OPEN, 0, 10) == ([], None)
    assert [r["id"] for r in (await reviews.page(None, 0, 10))[0]] == [hold.review_id]
    # Released: its merchant lists it and hears of it now.
    assert await client.zcard(keys.orders_of("merchant", "m1")) == 1
    assert await client.xlen(keys.inbox("merchant", "m1")) == 1
