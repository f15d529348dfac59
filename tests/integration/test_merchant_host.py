"""The merchant host's kept orders against a real Redis-protocol server (no Ray).

The host keeps the orders under way in memory to save a read per command; another
writer (a second host after a move or a restart) must never make it act on old state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from actors.merchant import MerchantHost
from domain import commands as c
from domain.errors import DomainError
from storage import keys
from storage.redis import connect
from storage.server import EmbeddedRedis
from storage.settings import Settings

MERCHANT = "m_kept"
ORDER = keys.new_order_id(MERCHANT, "kept")
AS_MERCHANT = ("merchant", MERCHANT)


@pytest.fixture
async def hosts(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[MerchantHost, MerchantHost]]:
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_server.port}/0")
    client = connect(settings.effective_redis_url)
    await client.flushdb()
    first, second = MerchantHost(settings), MerchantHost(settings)
    yield first, second
    await client.flushdb()
    await client.aclose()
    for host in (first, second):
        await host.close()


async def placed_order(host: MerchantHost) -> dict[str, Any]:
    onboarded = await host.onboard(
        {
            "id": MERCHANT,
            "name": "Kept",
            "lat": 30.25,
            "lng": 120.15,
            "delivery": {"radius_m": 5000},
        }
    )
    assert not isinstance(onboarded, DomainError), onboarded
    item = {"id": "rice", "name": "Rice", "price_fen": 1500}
    assert not isinstance(await host.set_menu_item(MERCHANT, item, 10), DomainError)
    reply = await host.place_order(
        {
            "order_id": ORDER,
            "customer_id": "c_kept",
            "merchant_id": MERCHANT,
            "items": [{"item_id": "rice", "qty": 1}],
            "delivery": {"lat": 30.255, "lng": 120.15, "address": "here"},
        }
    )
    assert isinstance(reply, dict), reply
    order: dict[str, Any] = reply["order"]
    return order


async def test_a_kept_order_behind_redis_is_read_again_not_acted_on(
    hosts: tuple[MerchantHost, MerchantHost],
) -> None:
    first, second = hosts
    order = await placed_order(first)
    now = datetime.now(UTC)
    paid = c.MarkPaid(at=now, intent_id=f"pi_{ORDER}", amount_fen=order["amounts"]["total_fen"])
    assert (await first.act(MERCHANT, ORDER, paid, ("system", "payments")))["version"] == 2

    # Another host accepts it: the first host's copy still says "paid".
    accepted = await second.act(MERCHANT, ORDER, c.AcceptOrder(at=now, prep_minutes=5), AS_MERCHANT)
    assert accepted["status"] == "accepted"

    ready = await first.act(MERCHANT, ORDER, c.MarkReady(at=now), AS_MERCHANT)
    assert isinstance(ready, dict), ready
    assert (ready["status"], ready["version"]) == ("ready", 4)
    stored = orjson.loads(await first.redis.hget(keys.order(ORDER), "json"))
    assert (stored["status"], stored["version"]) == ("ready", 4)

    # A command that is wrong on the fresh state is still refused, and changes nothing.
    again = await first.act(MERCHANT, ORDER, c.AcceptOrder(at=now, prep_minutes=5), AS_MERCHANT)
    assert isinstance(again, DomainError)
    assert int(await first.redis.hget(keys.order(ORDER), "version")) == 4


async def test_finished_orders_are_not_kept(hosts: tuple[MerchantHost, MerchantHost]) -> None:
    first, _ = hosts
    await placed_order(first)
    cancel = c.CancelOrder(at=datetime.now(UTC), reason="changed my mind", by="customer")
    cancelled = await first.act(MERCHANT, ORDER, cancel, ("customer", "c_kept"))
    assert isinstance(cancelled, dict) and cancelled["status"] == "cancelled", cancelled
    assert ORDER not in first._orders


async def test_a_request_sent_again_after_its_change_went_through_gets_the_order(
    hosts: tuple[MerchantHost, MerchantHost],
) -> None:
    """The host that accepted died before answering; the same request (its attempt id)
    reaches another host, which answers the order as it is rather than refusing an
    accept of an accepted order. A new request to accept it is still refused."""
    first, second = hosts
    order = await placed_order(first)
    now = datetime.now(UTC)
    paid = c.MarkPaid(at=now, intent_id=f"pi_{ORDER}", amount_fen=order["amounts"]["total_fen"])
    await first.act(MERCHANT, ORDER, paid, ("system", "payments"))
    accept = c.AcceptOrder(at=now, prep_minutes=5, attempt="a-1")
    accepted = await first.act(MERCHANT, ORDER, accept, AS_MERCHANT)
    assert isinstance(accepted, dict) and accepted["status"] == "accepted", accepted

    again = await second.act(MERCHANT, ORDER, accept, AS_MERCHANT)
    assert isinstance(again, dict), again
    assert (again["status"], again["version"]) == ("accepted", 3)
    assert int(await second.redis.hget(keys.order(ORDER), "version")) == 3

    other = await second.act(MERCHANT, ORDER, replace(accept, attempt="a-2"), AS_MERCHANT)
    assert isinstance(other, DomainError) and other.code == "invalid_transition", other
    # Nobody else's request passes for it: the customer's cancel with the same id.
    cancel = c.CancelOrder(at=now, reason="changed my mind", by="customer", attempt="a-1")
    refused = await second.act(MERCHANT, ORDER, cancel, ("customer", "other"))
    assert isinstance(refused, DomainError), refused
