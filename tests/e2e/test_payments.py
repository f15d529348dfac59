"""Money through HTTP and the sandbox: signed notifications, exactly once, the ledger."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import redis

from cluster.launcher import Platform
from domain.ledger import Transaction, check_invariants, party_payable, provider_clearing
from storage import keys
from storage.provider import sign
from tests.e2e.conftest import Api, eventually
from tests.e2e.world import delivered_order, events_of, make_world, paid_order, pay, status_of


def knobs(platform: Platform, **values: Any) -> None:
    answer = httpx.post(f"{platform.settings.sandbox_url}/_knobs", json=values, timeout=10)
    assert answer.status_code == 200, answer.text


@pytest.fixture
def sandbox_knobs(platform: Platform) -> Iterator[Callable[..., None]]:
    yield lambda **values: knobs(platform, **values)
    httpx.post(f"{platform.settings.sandbox_url}/_knobs/reset", timeout=10)


def ledger_of(store: redis.Redis, order_id: str) -> list[Transaction]:
    return [
        Transaction.from_dict(orjson.loads(r))
        for r in store.lrange(keys.ledger_of_order(order_id), 0, -1)
    ]


def payment_of(store: redis.Redis, order_id: str) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(store.get(keys.payment(order_id)) or b"{}")
    return record


def notice(
    platform: Platform, body: dict[str, Any], secret: str | None = None, at: float | None = None
) -> httpx.Response:
    raw = orjson.dumps(body)
    signature = sign(secret or platform.settings.payment_secret, raw, int(at or time.time()))
    return httpx.post(
        f"{platform.url}/v1/payments/callback",
        content=raw,
        headers={"X-Sandbox-Signature": signature, "content-type": "application/json"},
        timeout=10,
    )


def test_forged_stale_and_mismatched_notifications_change_nothing(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    world = make_world(login)
    order = world.customer.post("/v1/orders", json=world.order_body()).json()
    intent = order["payment"]["intent_id"]
    good = {
        "id": "n_forged",
        "type": "payment.succeeded",
        "intent_id": intent,
        "out_trade_no": order["id"],
        "amount_fen": order["amounts"]["total_fen"],
        "refund_no": None,
        "at": datetime.now(UTC).isoformat(),
    }
    before = (store.hgetall(keys.order(order["id"])), payment_of(store, order["id"]))
    refusals = [
        (notice(platform, good, secret="not-the-secret"), 401),
        (notice(platform, good, at=time.time() - 301), 401),
        (notice(platform, good, at=time.time() + 301), 401),
        (notice(platform, {**good, "amount_fen": 1}), 400),
        (notice(platform, {**good, "intent_id": "pi_someone_else"}), 400),
        (notice(platform, {**good, "out_trade_no": "o_unknown"}), 404),
        (httpx.post(f"{platform.url}/v1/payments/callback", content=orjson.dumps(good)), 401),
        (httpx.post(f"{platform.url}/v1/payments/callback", content=b"not json"), 400),
    ]
    for answer, status in refusals:
        assert answer.status_code == status, answer.text
        assert answer.text != "success"
    assert (store.hgetall(keys.order(order["id"])), payment_of(store, order["id"])) == before
    assert ledger_of(store, order["id"]) == []
    assert status_of(world.customer, order["id"]) == "pending_payment"


def test_sixteen_copies_out_of_order_apply_exactly_once(
    login: Callable[[str, str], Api],
    platform: Platform,
    store: redis.Redis,
    sandbox_knobs: Callable[..., None],
) -> None:
    world = make_world(login)
    sandbox_knobs(duplicate=15)  # the provider itself sends every notification 16 times
    order = paid_order(world, qty=2)
    refund = world.admin.post(
        f"/v1/admin/orders/{order['id']}/refund", json={"amount_fen": 500}, key="sixteen"
    )
    assert refund.status_code == 200, refund.text
    record = payment_of(store, order["id"])
    (refund_no,) = record["refunds"]
    at = datetime.now(UTC).isoformat()
    paid = {
        "type": "payment.succeeded",
        "intent_id": record["intent_id"],
        "refund_no": None,
        "out_trade_no": order["id"],
        "amount_fen": record["amount_fen"],
        "at": at,
    }
    refunded = {**paid, "type": "refund.succeeded", "refund_no": refund_no, "amount_fen": 500}
    copies = [{**refunded, "id": "n_r"}] * 16 + [{**paid, "id": "n_p"}] * 16
    rng = random.Random(16)
    rest = copies[1:]
    rng.shuffle(rest)
    for body in [copies[0], *rest]:  # a refund notice first, then everything scrambled
        answer = notice(platform, body)
        assert (answer.status_code, answer.text) == (200, "success")
    time.sleep(1)  # the provider's own 16 copies arrive too
    kinds = sorted(t.kind for t in ledger_of(store, order["id"]))
    assert kinds == ["capture", "refund"]
    record = payment_of(store, order["id"])
    assert (record["captured_fen"], record["refunded_fen"]) == (order["amounts"]["total_fen"], 500)
    view = world.customer.get(f"/v1/orders/{order['id']}").json()
    assert (view["status"], view["version"]) == ("paid", 2)
    assert len([e for e in events_of(world.customer) if e["type"] == "refunded"]) == 1


def test_every_paid_order_is_paid_even_when_every_notification_is_lost(
    login: Callable[[str, str], Api],
    platform: Platform,
    store: redis.Redis,
    sandbox_knobs: Callable[..., None],
) -> None:
    world = make_world(login)
    sandbox_knobs(drop_rate=1.0)
    orders = [world.customer.post("/v1/orders", json=world.order_body()).json() for _ in range(3)]
    for order in orders:
        pay(order)
    for order in orders:
        eventually(
            lambda o=order: status_of(world.customer, o["id"]) == "paid", timeout_s=20, what="poll"
        )
        assert [t.kind for t in ledger_of(store, order["id"])] == ["capture"]


def test_placement_asks_nothing_of_the_provider_until_the_customer_pays(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    world = make_world(login)
    order = world.customer.post("/v1/orders", json=world.order_body()).json()
    provider_view = f"{platform.settings.sandbox_url}/v1/orders/{order['id']}"
    assert httpx.get(provider_view, timeout=10).status_code == 404
    # The payment shard will still ask after it: the order joined the queue as it was saved.
    assert store.zscore(keys.payments_due_of(order["id"]), order["id"]) is not None

    view = world.customer.get(f"/v1/orders/{order['id']}").json()
    assert view["payment"] == {**order["payment"], "status": "created", "refunded_fen": 0}
    assert view["payment"]["pay_url"].startswith(
        f"{platform.settings.sandbox_url}/pay/{order['payment']['intent_id']}?"
    )

    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
    assert httpx.get(provider_view, timeout=10).json()["status"] == "paid"
    assert payment_of(store, order["id"])["intent_id"] == order["payment"]["intent_id"]


def test_unpaid_orders_expire_and_give_back_stock_and_coupon(
    login: Callable[[str, str], Api], platform: Platform
) -> None:
    world = make_world(login, stock=3)
    code = f"EXPIRE-{world.merchant_id}"
    created = world.admin.post(
        "/v1/admin/coupons",
        json={
            "code": code,
            "discount_fen": 100,
            "min_spend_fen": 0,
            "total": 1,
            "per_customer_limit": 1,
            "starts_at": "2020-01-01T00:00:00Z",
            "ends_at": "2099-01-01T00:00:00Z",
        },
    )
    assert created.status_code == 201
    order = world.customer.post("/v1/orders", json=world.order_body(qty=3, coupon_code=code)).json()
    assert world.stock() == 0
    eventually(
        lambda: status_of(world.customer, order["id"]) == "cancelled",
        timeout_s=45,
        what="payment timeout",
    )
    view = world.customer.get(f"/v1/orders/{order['id']}").json()
    assert view["close_reason"] == "payment_timeout"
    assert world.stock() == 3
    late = httpx.post(order["payment"]["pay_url"], timeout=10)
    assert late.status_code == 409  # the provider closed the intent
    again = world.customer.post("/v1/orders", json=world.order_body(qty=1, coupon_code=code))
    assert again.status_code == 201, again.text  # the coupon came back


def test_delivery_splits_the_money_by_the_merchant_plan_to_the_fen(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    plan = {
        "levels": [
            {
                "party": "platform",
                "rule": {"tiers": [[0, 2000], [100_000_000, 1500]]},
                "base": "goods",
            },
            {"party": "brand", "party_id": "lakeside", "rule": {"fixed_fen": 100}, "base": "goods"},
            {"party": "rider", "rule": {"ratio_bp": 10000}, "base": "delivery"},
        ]
    }
    world = make_world(login, split_plan=plan)
    order = delivered_order(world, qty=2)  # 3600 goods + 300 delivery
    eventually(lambda: len(ledger_of(store, order["id"])) == 2, what="split")
    txns = ledger_of(store, order["id"])
    check_invariants(txns)
    split = next(t for t in txns if t.kind == "split")
    total = order["amounts"]["total_fen"]
    fee = (total * 60 + 5000) // 10000
    assert split.amount_on(provider_clearing()) == -total
    assert split.amount_on("provider:fees") == fee
    assert split.amount_on("platform:revenue") == 720  # 20% of 3600
    assert split.amount_on(party_payable("brand", "lakeside")) == 100
    assert split.amount_on(party_payable("rider", world.rider_id)) == 300
    merchant_share = total - fee - 720 - 100 - 300
    assert split.amount_on(party_payable("merchant", world.merchant_id)) == merchant_share

    today = datetime.now(UTC).date().isoformat()
    report = world.merchant.get("/v1/merchant/settlement", params={"date": today}).json()
    assert report["payable_fen"] == merchant_share
    assert [p["order_id"] for p in report["postings"]] == [order["id"]]


def test_bad_split_plan_is_refused(login: Callable[[str, str], Api]) -> None:
    admin = login("admin", "ops")
    answer = admin.post(
        "/v1/merchants",
        json={
            "name": "Bad Plan",
            "lat": 30.3,
            "lng": 120.1,
            "delivery": {"radius_m": 1000},
            "split_plan": {
                "levels": [{"party": "platform", "rule": {"ratio_bp": 20000}, "base": "goods"}]
            },
        },
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_split_plan"


def test_partial_refunds_never_exceed_what_was_captured(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    world = make_world(login)
    order = delivered_order(world, qty=1)
    total = order["amounts"]["total_fen"]
    eventually(lambda: len(ledger_of(store, order["id"])) == 2, what="split")
    started = time.monotonic()
    first = world.admin.post(
        f"/v1/admin/orders/{order['id']}/refund", json={"amount_fen": 700}, key="r1"
    )
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "succeeded"
    assert time.monotonic() - started < 30
    replay = world.admin.post(
        f"/v1/admin/orders/{order['id']}/refund", json={"amount_fen": 700}, key="r1"
    )
    assert replay.json() == first.json()
    too_much = world.admin.post(
        f"/v1/admin/orders/{order['id']}/refund", json={"amount_fen": total}
    )
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "refund_exceeds_payment"
    rest = world.admin.post(
        f"/v1/admin/orders/{order['id']}/refund", json={"amount_fen": total - 700}
    )
    assert rest.status_code == 200, rest.text
    txns = ledger_of(store, order["id"])
    check_invariants(txns)
    assert sorted(t.kind for t in txns) == ["capture", "refund", "refund", "split"]
    provider = httpx.get(f"{platform.settings.sandbox_url}/v1/orders/{order['id']}").json()
    assert provider["refunded_fen"] == total
    assert world.customer.post("/v1/orders", json=world.order_body()).status_code == 201


def test_the_ledger_balances_and_reconciles_with_the_provider(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    world = make_world(login)
    delivered_order(world)
    cancelled = paid_order(world)
    world.customer.post(f"/v1/orders/{cancelled['id']}/cancel")
    # A payment the platform never booked: the provider has it, the ledger must not.
    ghost = httpx.post(
        f"{platform.settings.sandbox_url}/v1/intents",
        json={
            "out_trade_no": f"o_ghost_{world.merchant_id}",
            "amount_fen": 999,
            "notify_url": f"{platform.url}/v1/payments/callback",
        },
    ).json()
    httpx.post(ghost["pay_url"])
    eventually(
        lambda: payment_of(store, cancelled["id"]).get("split"), what="closed order's fee booked"
    )
    journal = [
        Transaction.from_dict(orjson.loads(f["t"]))
        for shard in range(keys.SHARDS)
        for _, f in store.xrange(keys.ledger_journal(shard))
    ]
    check_invariants(journal)
    balances: dict[str, int] = {}
    for shard in range(keys.SHARDS):
        for account, amount in store.hgetall(keys.ledger_balances(shard)).items():
            balances[account] = balances.get(account, 0) + int(amount)
    assert balances and sum(balances.values()) == 0

    today = datetime.now(UTC).date().isoformat()
    report = world.admin.post("/v1/admin/reconciliation", params={"date": today})
    assert report.status_code == 200, report.text
    body = report.json()
    assert [r["order_id"] for r in body["missing_in_ledger"]] == [ghost["out_trade_no"]]
    assert body["missing_at_provider"] == []
    assert body["duplicates"] == []
    assert body["amount_mismatches"] == []
    assert body["clean"] is False
    assert body["ledger_rows"] >= 3
