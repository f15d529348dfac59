"""The sandbox payment provider over real loopback HTTP.

Each test gets a fresh sandbox and a webhook receiver, both bound to
127.0.0.1 on ephemeral ports, and polls with a deadline instead of sleeping
for fixed amounts, so a hung delivery fails the test rather than hanging it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
# pytest's rootdir is not on sys.path unless the project is installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandbox.provider import Provider  # noqa: E402
from sandbox.routes import PROVIDER_KEY, make_app  # noqa: E402
from storage import provider as signing  # noqa: E402

SECRET = "test-secret"
WAIT_S = 5.0


async def wait_for(predicate: Callable[[], bool], within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s}s")
        await asyncio.sleep(0.02)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Receiver:
    """Stands in for the platform's webhook endpoint."""

    url: str = ""
    fail_first: int = 0
    calls: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get(signing.SIGNATURE_HEADER)
        try:
            signing.verify(SECRET, body, header, time.time())
        except signing.SignatureError as exc:
            self.rejected.append(exc.reason)
            return web.Response(status=401, text="bad signature")
        self.calls += 1
        if self.calls <= self.fail_first:
            return web.Response(status=500, text="try again")
        self.received.append(orjson.loads(body))
        return web.Response(text="success\n")


@dataclass
class Env:
    sandbox: str
    provider: Provider
    receiver: Receiver
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        async with self.http.request(method, self.sandbox + path, data=data) as resp:
            text = await resp.read()
            return resp.status, orjson.loads(text)

    async def intent(self, out_trade_no: str, amount_fen: int = 1000) -> dict[str, Any]:
        status, intent = await self.call(
            "POST",
            "/v1/intents",
            {
                "out_trade_no": out_trade_no,
                "amount_fen": amount_fen,
                "notify_url": self.receiver.url,
            },
        )
        assert status == 201, intent
        return intent

    async def paid_intent(self, out_trade_no: str, amount_fen: int = 1000) -> dict[str, Any]:
        intent = await self.intent(out_trade_no, amount_fen)
        status, paid = await self.call("POST", f"/pay/{intent['intent_id']}")
        assert status == 200, paid
        return intent | paid

    async def knobs(self, **changes: Any) -> dict[str, Any]:
        status, knobs = await self.call("POST", "/_knobs", changes)
        assert status == 200, knobs
        return knobs

    async def attempts(self, **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        status, body = await self.call("GET", f"/_notifications?{query}")
        assert status == 200
        attempts: list[dict[str, Any]] = body["attempts"]
        return attempts


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    receiver = Receiver()
    receiver_app = web.Application()
    receiver_app.router.add_post("/notify", receiver.handle)
    receiver_runner = web.AppRunner(receiver_app)
    await receiver_runner.setup()
    receiver_sock = free_socket()
    await web.SockSite(receiver_runner, receiver_sock).start()
    receiver.url = f"http://127.0.0.1:{receiver_sock.getsockname()[1]}/notify"

    sandbox_sock = free_socket()
    sandbox_url = f"http://127.0.0.1:{sandbox_sock.getsockname()[1]}"
    app = make_app(SECRET, sandbox_url, seed=7)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sandbox_sock).start()

    async with aiohttp.ClientSession() as http:
        yield Env(sandbox_url, app[PROVIDER_KEY], receiver, http)
    await runner.cleanup()
    await receiver_runner.cleanup()


# ---- signing ----------------------------------------------------------------


def test_sign_and_verify_roundtrip() -> None:
    body = b'{"a":1}'
    header = signing.sign(SECRET, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert len(header.split("v1=")[1]) == 64
    assert signing.verify(SECRET, body, header, now=1_700_000_010) == 1_700_000_000
    # Exactly at the tolerance edge is still fresh.
    assert signing.verify(SECRET, body, header, now=1_700_000_300) == 1_700_000_000


def test_verify_accepts_any_of_several_v1() -> None:
    body = b"x"
    good = signing.sign(SECRET, body, 100).split(",")[1]
    header = f"t=100,v1={'0' * 64},{good}"
    assert signing.verify(SECRET, body, header, now=100) == 100


@pytest.mark.parametrize(
    ("header", "body", "now", "reason"),
    [
        (signing.sign(SECRET, b"x", 1000), b"y", 1000, "bad_signature"),
        (signing.sign("other", b"x", 1000), b"x", 1000, "bad_signature"),
        ("t=1000,v1=" + "0" * 64, b"x", 1000, "bad_signature"),
        ("t=1000,v1=héllo", b"x", 1000, "bad_signature"),
        (signing.sign(SECRET, b"x", 1000), b"x", 1301, "too_old"),
        (signing.sign(SECRET, b"x", 1000), b"x", 699, "in_future"),
        (None, b"x", 1000, "malformed"),
        ("", b"x", 1000, "malformed"),
        ("garbage", b"x", 1000, "malformed"),
        ("t=abc,v1=00", b"x", 1000, "malformed"),
        ("t=-5,v1=00", b"x", 1000, "malformed"),
        ("t=1000", b"x", 1000, "malformed"),
        ("v1=" + "0" * 64, b"x", 1000, "malformed"),
        ("t=1000,t=1000,v1=00", b"x", 1000, "malformed"),
        ("t=" + "9" * 40 + ",v1=00", b"x", 1000, "malformed"),
    ],
)
def test_verify_rejects(header: str | None, body: bytes, now: float, reason: str) -> None:
    with pytest.raises(signing.SignatureError) as info:
        signing.verify(SECRET, body, header, now)
    assert info.value.reason == reason


def test_empty_secret_refused() -> None:
    with pytest.raises(ValueError):
        signing.sign("", b"x", 1)
    with pytest.raises(ValueError):
        make_app("", "http://127.0.0.1:1")


# ---- intents and payments ---------------------------------------------------


async def test_health(env: Env) -> None:
    assert await env.call("GET", "/health") == (200, {"status": "ok"})


async def test_intent_create_idempotent_and_conflict(env: Env) -> None:
    intent = await env.intent("ord-1", 2500)
    assert intent["status"] == "created"
    assert intent["amount_fen"] == 2500
    assert intent["pay_url"] == f"{env.sandbox}/pay/{intent['intent_id']}"
    assert intent["created_at"].endswith("Z")

    body = {"out_trade_no": "ord-1", "amount_fen": 2500, "notify_url": env.receiver.url}
    status, again = await env.call("POST", "/v1/intents", body)
    assert status == 200
    assert again == intent

    status, err = await env.call("POST", "/v1/intents", body | {"amount_fen": 2600})
    assert status == 409
    assert err["error"]["code"] == "out_trade_no_conflict"

    status, order = await env.call("GET", "/v1/orders/ord-1")
    assert status == 200
    assert order["status"] == "created"
    assert order["paid_at"] is None
    assert order["refunded_fen"] == 0


async def test_pay_sends_signed_notification(env: Env) -> None:
    intent = await env.intent("ord-pay", 1234)
    # The customer follows pay_url, which must really point at the sandbox.
    async with env.http.post(intent["pay_url"]) as resp:
        assert resp.status == 200
        paid = await resp.json()
    assert paid["status"] == "paid"

    await wait_for(lambda: len(env.receiver.received) == 1)
    note = env.receiver.received[0]
    assert note["type"] == "payment.succeeded"
    assert note["intent_id"] == intent["intent_id"]
    assert note["out_trade_no"] == "ord-pay"
    assert note["amount_fen"] == 1234
    assert note["refund_no"] is None
    assert note["id"].startswith("evt_")
    assert note["at"] == paid["paid_at"]
    assert env.receiver.rejected == []

    # Paying twice is harmless and does not notify again.
    status, again = await env.call("POST", f"/pay/{intent['intent_id']}", raw=b"{}")
    assert (status, again) == (200, paid)
    await asyncio.sleep(0.3)
    assert len(env.receiver.received) == 1
    assert len(await env.attempts(out_trade_no="ord-pay")) == 1

    status, order = await env.call("GET", "/v1/orders/ord-pay")
    assert order["status"] == "paid"
    assert order["paid_at"] == paid["paid_at"]


async def test_close(env: Env) -> None:
    open_intent = await env.intent("ord-close")
    status, closed = await env.call("POST", f"/v1/intents/{open_intent['intent_id']}/close")
    assert status == 200
    assert closed["status"] == "closed"
    status, err = await env.call("POST", f"/pay/{open_intent['intent_id']}")
    assert status == 409
    assert err["error"]["code"] == "intent_closed"

    paid = await env.paid_intent("ord-close-paid")
    status, err = await env.call("POST", f"/v1/intents/{paid['intent_id']}/close")
    assert status == 409
    assert err["error"]["code"] == "already_paid"

    status, err = await env.call("POST", "/pay/pi_unknown")
    assert status == 404


def checkout_link(
    env: Env,
    out_trade_no: str,
    amount_fen: int = 1000,
    expires_in_s: int = 900,
    tamper: dict[str, str] | None = None,
) -> str:
    """A pay link signed the way the platform signs them (`storage.provider.Checkout`)."""
    params = {
        "intent_id": f"pi_{out_trade_no}",
        "out_trade_no": out_trade_no,
        "amount_fen": str(amount_fen),
        "notify_url": env.receiver.url,
        "expires_at": str(int(time.time()) + expires_in_s),
    }
    params["sign"] = signing.sign_checkout(SECRET, params)
    params |= tamper or {}
    query = "&".join(f"{k}={v}" for k, v in params.items() if k != "intent_id")
    return f"/pay/{params['intent_id']}?{query}"


async def test_signed_link_opens_the_intent_on_first_use_and_pays_once(env: Env) -> None:
    link = checkout_link(env, "ord-link", 2500)
    # Nothing exists at the provider until the customer follows the link.
    status, _ = await env.call("GET", "/v1/orders/ord-link")
    assert status == 404

    status, paid = await env.call("POST", link)
    assert status == 200, paid
    assert (paid["intent_id"], paid["amount_fen"], paid["status"]) == (
        "pi_ord-link",
        2500,
        "paid",
    )
    status, again = await env.call("POST", link)
    assert (status, again) == (200, paid)
    await wait_for(lambda: len(env.receiver.received) == 1)
    note = env.receiver.received[0]
    assert (note["intent_id"], note["out_trade_no"], note["amount_fen"]) == (
        "pi_ord-link",
        "ord-link",
        2500,
    )
    status, order = await env.call("GET", "/v1/orders/ord-link")
    assert (status, order["status"]) == (200, "paid")


@pytest.mark.parametrize(
    ("tamper", "status", "code"),
    [
        ({"amount_fen": "1"}, 400, "bad_signature"),
        ({"out_trade_no": "ord-other"}, 400, "bad_signature"),
        ({"notify_url": "http://127.0.0.1:9/steal"}, 400, "bad_signature"),
        ({"expires_at": "99999999999"}, 400, "bad_signature"),
        ({"sign": "00" * 32}, 400, "bad_signature"),
        ({"sign": ""}, 400, "bad_signature"),
    ],
)
async def test_tampered_link_is_refused_and_opens_nothing(
    env: Env, tamper: dict[str, str], status: int, code: str
) -> None:
    got, err = await env.call("POST", checkout_link(env, "ord-tamper", tamper=tamper))
    assert (got, err.get("error", {}).get("code")) == (status, code), err
    assert env.provider.intents == {}
    assert env.provider.ledger == []


async def test_expired_link_cannot_pay(env: Env) -> None:
    status, err = await env.call("POST", checkout_link(env, "ord-late", expires_in_s=-5))
    assert (status, err["error"]["code"]) == (409, "intent_expired")
    assert env.provider.ledger == []
    status, view = await env.call("GET", "/v1/orders/ord-late")
    assert (status, view["status"]) == (200, "created")


async def test_closing_an_order_before_checkout_kills_its_link(env: Env) -> None:
    status, closed = await env.call("POST", "/v1/orders/ord-gone/close")
    assert (status, closed["status"]) == (200, "closed")
    status, err = await env.call("POST", checkout_link(env, "ord-gone"))
    assert (status, err["error"]["code"]) == (409, "intent_closed")
    assert env.provider.ledger == []

    # After checkout, closing works on the opened intent; a paid one cannot be closed.
    link = checkout_link(env, "ord-open")
    async with env.http.get(env.sandbox + link) as page:  # the customer opens the page
        assert page.status == 200
        assert "ord-open" in await page.text()
    status, closed = await env.call("POST", "/v1/orders/ord-open/close")
    assert (status, closed["status"], closed["intent_id"]) == (200, "closed", "pi_ord-open")
    status, err = await env.call("POST", link)
    assert (status, err["error"]["code"]) == (409, "intent_closed")

    status, _ = await env.call("POST", checkout_link(env, "ord-paid"))
    assert status == 200
    status, err = await env.call("POST", "/v1/orders/ord-paid/close")
    assert (status, err["error"]["code"]) == (409, "already_paid")


async def test_a_second_link_for_the_same_order_number_must_match(env: Env) -> None:
    status, _ = await env.call("POST", checkout_link(env, "ord-twice", 1000))
    assert status == 200
    status, err = await env.call("POST", checkout_link(env, "ord-twice", 2000))
    assert (status, err["error"]["code"]) == (409, "out_trade_no_conflict")
    assert [row.amount_fen for row in env.provider.ledger] == [1000]


# ---- delivery behaviour -----------------------------------------------------


async def test_failed_deliveries_are_retried(env: Env) -> None:
    env.receiver.fail_first = 2
    await env.paid_intent("ord-retry")
    await wait_for(lambda: len(env.receiver.received) == 1)
    attempts = await env.attempts(out_trade_no="ord-retry")
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "delivered"),
    ]
    assert len({a["id"] for a in attempts}) == 1


async def test_dropped_notifications_never_arrive_but_query_shows_paid(env: Env) -> None:
    await env.knobs(drop_rate=1.0, max_attempts=3)
    await env.paid_intent("ord-drop")

    async def all_dropped() -> list[dict[str, Any]]:
        return await env.attempts(out_trade_no="ord-drop", outcome="dropped")

    deadline = time.monotonic() + WAIT_S
    while len(await all_dropped()) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert env.receiver.calls == 0
    assert env.provider.notifications[-1].state == "abandoned"
    status, order = await env.call("GET", "/v1/orders/ord-drop")
    assert (status, order["status"]) == (200, "paid")


async def test_duplicates(env: Env) -> None:
    await env.knobs(duplicate=2)
    await env.paid_intent("ord-dup")
    await wait_for(lambda: len(env.receiver.received) == 3)
    assert len({n["id"] for n in env.receiver.received}) == 1
    await asyncio.sleep(0.2)
    assert len(env.receiver.received) == 3


async def test_reorder_releases_in_reverse(env: Env) -> None:
    await env.knobs(reorder=True)
    for i in range(3):
        await env.paid_intent(f"ord-re-{i}")
    await asyncio.sleep(0.2)
    assert env.receiver.received == []
    assert await env.call("POST", "/_knobs/flush") == (200, {"released": 3})
    await wait_for(lambda: len(env.receiver.received) == 3)
    assert [n["out_trade_no"] for n in env.receiver.received] == [
        "ord-re-2",
        "ord-re-1",
        "ord-re-0",
    ]

    # Switching reorder off releases whatever is still held.
    await env.paid_intent("ord-re-3")
    await asyncio.sleep(0.1)
    assert len(env.receiver.received) == 3
    await env.knobs(reorder=False)
    await wait_for(lambda: len(env.receiver.received) == 4)


async def test_delay_and_knob_reset(env: Env) -> None:
    knobs = await env.knobs(delay_ms=300, duplicate=1)
    assert knobs["delay_ms"] == 300
    started = time.monotonic()
    await env.paid_intent("ord-delay")
    await wait_for(lambda: len(env.receiver.received) >= 1)
    assert time.monotonic() - started >= 0.3

    status, knobs = await env.call("POST", "/_knobs/reset")
    assert status == 200
    status, current = await env.call("GET", "/_knobs")
    assert current == knobs
    assert current["delay_ms"] == 0
    assert current["max_attempts"] == 30


async def test_cleanup_cancels_pending_deliveries() -> None:
    # Nobody listens on this port, so deliveries keep failing and retrying.
    dead = free_socket()
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/notify"
    dead.close()
    app = make_app(SECRET, "http://127.0.0.1:1")
    runner = web.AppRunner(app)
    await runner.setup()
    provider = app[PROVIDER_KEY]
    _, intent = provider.create_intent("ord-leak", 100, dead_url, None)
    provider.pay(intent["intent_id"])
    await wait_for(lambda: len(provider.attempts) >= 2)
    assert provider.pending_tasks == 1
    await asyncio.wait_for(runner.cleanup(), timeout=WAIT_S)
    assert provider.pending_tasks == 0
    assert all(a["outcome"] == "failed" for a in provider.attempts)


# ---- refunds and statements -------------------------------------------------


async def test_refunds(env: Env) -> None:
    await env.intent("ord-unpaid")
    status, err = await env.call(
        "POST", "/v1/refunds", {"refund_no": "r-0", "out_trade_no": "ord-unpaid", "amount_fen": 1}
    )
    assert status == 409
    assert err["error"]["code"] == "not_paid"

    await env.paid_intent("ord-ref", 1000)
    first = {"refund_no": "r-1", "out_trade_no": "ord-ref", "amount_fen": 300}
    status, refund = await env.call("POST", "/v1/refunds", first)
    assert status == 201
    assert refund["status"] == "succeeded"
    assert refund["amount_fen"] == 300

    status, again = await env.call("POST", "/v1/refunds", first)
    assert (status, again) == (200, refund)

    status, err = await env.call("POST", "/v1/refunds", first | {"amount_fen": 301})
    assert status == 409
    assert err["error"]["code"] == "refund_no_conflict"

    over = {"refund_no": "r-2", "out_trade_no": "ord-ref", "amount_fen": 701}
    status, err = await env.call("POST", "/v1/refunds", over)
    assert status == 409
    assert err["error"]["code"] == "refund_exceeds_payment"

    status, rest = await env.call("POST", "/v1/refunds", over | {"amount_fen": 700})
    assert (status, rest["amount_fen"]) == (201, 700)

    status, order = await env.call("GET", "/v1/orders/ord-ref")
    assert order["refunded_fen"] == 1000
    assert order["status"] == "paid"

    status, err = await env.call(
        "POST", "/v1/refunds", {"refund_no": "r-3", "out_trade_no": "ord-ref", "amount_fen": 1}
    )
    assert err["error"]["code"] == "refund_exceeds_payment"

    # One payment notification plus one per refund, never one per retry.
    await wait_for(lambda: len(env.receiver.received) == 3)
    refunds = [n for n in env.receiver.received if n["type"] == "refund.succeeded"]
    assert sorted((n["refund_no"], n["amount_fen"]) for n in refunds) == [
        ("r-1", 300),
        ("r-2", 700),
    ]
    await asyncio.sleep(0.2)
    assert len(env.receiver.received) == 3


async def test_refund_latency(env: Env) -> None:
    await env.paid_intent("ord-slow")
    await env.knobs(refund_latency_ms=300)
    started = time.monotonic()
    status, _ = await env.call(
        "POST", "/v1/refunds", {"refund_no": "r-s", "out_trade_no": "ord-slow", "amount_fen": 5}
    )
    assert status == 201
    assert time.monotonic() - started >= 0.3


async def test_statement_rows_and_fees(env: Env) -> None:
    # Pin the business clock so rows land on known UTC dates.
    day1 = datetime(2026, 3, 1, 23, 59, 59, 500_000, tzinfo=UTC).timestamp()
    day2 = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC).timestamp()
    env.provider.clock = lambda: day1
    a = await env.paid_intent("ord-st-a", 12345)  # fee 74.07 -> 74
    b = await env.paid_intent("ord-st-b", 250)  # fee 1.5 -> 2 (half up)
    env.provider.clock = lambda: day2
    c = await env.paid_intent("ord-st-c", 83)  # fee 0.498 -> 0
    status, _ = await env.call(
        "POST", "/v1/refunds", {"refund_no": "r-st", "out_trade_no": "ord-st-a", "amount_fen": 45}
    )
    assert status == 201

    status, st1 = await env.call("GET", "/v1/statements?date=2026-03-01")
    assert status == 200
    assert st1["date"] == "2026-03-01"
    assert [(r["type"], r["intent_id"], r["amount_fen"], r["fee_fen"]) for r in st1["rows"]] == [
        ("payment", a["intent_id"], 12345, 74),
        ("payment", b["intent_id"], 250, 2),
    ]
    assert st1["rows"][0]["at"] == "2026-03-01T23:59:59.500Z"
    assert st1["rows"][0]["refund_no"] is None

    status, st2 = await env.call("GET", "/v1/statements?date=2026-03-02")
    assert [
        (r["type"], r["out_trade_no"], r["refund_no"], r["amount_fen"], r["fee_fen"])
        for r in st2["rows"]
    ] == [
        ("payment", "ord-st-c", None, 83, 0),
        ("refund", "ord-st-a", "r-st", 45, 0),
    ]
    assert st2["rows"][0]["intent_id"] == c["intent_id"]

    status, st3 = await env.call("GET", "/v1/statements?date=2026-03-03")
    assert (status, st3["rows"]) == (200, [])


# ---- bad input ----------------------------------------------------------------


NOTIFY = "http://127.0.0.1:9/notify"


@pytest.mark.parametrize(
    ("path", "raw", "status"),
    [
        ("/v1/intents", b"", 400),
        ("/v1/intents", b"{not json", 400),
        ("/v1/intents", b"[1, 2]", 400),
        ("/v1/intents", b"\xff\xfe", 400),
        ("/v1/intents", orjson.dumps({"amount_fen": 1, "notify_url": NOTIFY}), 422),
        ("/v1/intents", orjson.dumps({"out_trade_no": "x", "notify_url": NOTIFY}), 422),
        (
            "/v1/intents",
            orjson.dumps({"out_trade_no": "x", "amount_fen": -5, "notify_url": NOTIFY}),
            422,
        ),
        (
            "/v1/intents",
            orjson.dumps({"out_trade_no": "x", "amount_fen": 0, "notify_url": NOTIFY}),
            422,
        ),
        (
            "/v1/intents",
            orjson.dumps({"out_trade_no": "x", "amount_fen": 1.5, "notify_url": NOTIFY}),
            422,
        ),
        (
            "/v1/intents",
            orjson.dumps({"out_trade_no": "x", "amount_fen": True, "notify_url": NOTIFY}),
            422,
        ),
        (
            "/v1/intents",
            orjson.dumps({"out_trade_no": "x", "amount_fen": "100", "notify_url": NOTIFY}),
            422,
        ),
        ("/v1/intents", orjson.dumps({"out_trade_no": "x", "amount_fen": 1}), 422),
        (
            "/v1/intents",
            orjson.dumps({"out_trade_no": "x", "amount_fen": 1, "notify_url": "ftp://h/x"}),
            422,
        ),
        (
            "/v1/intents",
            orjson.dumps({"out_trade_no": "a/b", "amount_fen": 1, "notify_url": NOTIFY}),
            422,
        ),
        (
            "/v1/intents",
            orjson.dumps({"out_trade_no": 7, "amount_fen": 1, "notify_url": NOTIFY}),
            422,
        ),
        ("/v1/refunds", b"nope", 400),
        ("/v1/refunds", orjson.dumps({"refund_no": "r", "out_trade_no": "o"}), 422),
        (
            "/v1/refunds",
            orjson.dumps({"refund_no": "r", "out_trade_no": "o", "amount_fen": -1}),
            422,
        ),
        ("/_knobs", orjson.dumps({"drop_rate": 1.5}), 422),
        ("/_knobs", orjson.dumps({"duplicate": -1}), 422),
        ("/_knobs", orjson.dumps({"reorder": "yes"}), 422),
        ("/_knobs", orjson.dumps({"max_attempts": 0}), 422),
        ("/_knobs", orjson.dumps({"no_such_knob": 1}), 422),
    ],
)
async def test_bad_input_is_rejected(env: Env, path: str, raw: bytes, status: int) -> None:
    got, body = await env.call("POST", path, raw=raw)
    assert got == status
    assert isinstance(body["error"]["code"], str)
    assert isinstance(body["error"]["message"], str)


async def test_bad_lookups(env: Env) -> None:
    for path in ("/v1/statements", "/v1/statements?date=2026-13-01", "/v1/statements?date=x"):
        status, body = await env.call("GET", path)
        assert status == 400
        assert body["error"]["code"] == "invalid_date"
    status, body = await env.call("GET", "/v1/orders/nope")
    assert (status, body["error"]["code"]) == (404, "order_not_found")
    status, body = await env.call(
        "POST", "/v1/refunds", {"refund_no": "r-x", "out_trade_no": "nope", "amount_fen": 1}
    )
    assert (status, body["error"]["code"]) == (404, "order_not_found")
    status, body = await env.call("DELETE", "/health")
    assert status == 405
    # A rejected knob update changes nothing, even the valid parts of it.
    status, _ = await env.call("POST", "/_knobs", {"duplicate": 3, "drop_rate": 2})
    assert status == 422
    status, knobs = await env.call("GET", "/_knobs")
    assert knobs["duplicate"] == 0


# ---- the command line entry point ---------------------------------------------


def test_main_serves_and_exits_on_sigterm() -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", str(port), "--log-level", "WARNING"],
        cwd=ROOT,
        env=os.environ | {"O2O_PAYMENT_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    reply = conn.recv(4096)
                break
            except OSError:
                assert time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.05)
        assert reply.startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
