"""The payment-shard host: provider notifications, polling, refunds and the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, date, datetime
from typing import Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from actors.checkout import checkout_of
from actors.host import EntityHost
from actors.placement import Directory, host_count, host_index
from cluster.settings import Settings
from domain import commands as c
from domain import ledger
from domain.errors import DomainError
from domain.pricing import Amounts
from domain.reconciliation import ledger_rows, provider_rows, reconcile
from sandbox.signing import SignatureError, verify
from storage import keys, metrics
from storage.ledger import LedgerStore, merchant_volume
from storage.orders import inbox_key, queue_event

log = logging.getLogger(__name__)

Reply = dict[str, Any] | DomainError


class ProviderError(Exception):
    """The provider could not be reached or answered with a server error."""


def _provider_time(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class PaymentShardHost(EntityHost):
    """Hosts payment shards: the payments of the orders that hash to them.

    Concurrency: one `asyncio.Lock` per order's payment, so a notification, a poll, a
    retry and a refund of the same order never interleave; different orders proceed
    in parallel, including their calls to the provider. Placement does not call this
    host: an order's pay link is signed by the platform (`actors/checkout.py`) and the
    order joins `payments:pending` in its placement script. A background loop, started
    with the host, asks the provider about those orders (lost notifications) and
    closes the ones past the payment timeout.
    Persists: `payment:{order_id}` (written at the first notification or poll that
    changes something: captured and refunded amounts, refunds by refund number), its
    entries in `payments:pending`, and the ledger (`ledger:*`: each transaction
    posted once, with the payment record it books, in one script), plus `refunded`
    events on the inboxes of the order's customer, merchant and operations.
    """

    BATCHED = frozenset({"notify", "settle", "refund"})

    def __init__(self, settings: Settings, index: int = 0) -> None:
        super().__init__(settings, index)
        self.directory = Directory(settings)
        self.ledger = LedgerStore(self.redis, self.scripts)
        self._http: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        # Orders are placed without a word to this host, so it must poll from the
        # start (and after a restart): Ray runs an async actor's __init__ on its loop.
        with contextlib.suppress(RuntimeError):
            self._ensure_poller()

    # -- the provider -------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                base_url=self.settings.sandbox_url,
                timeout=aiohttp.ClientTimeout(total=10),
                json_serialize=lambda v: orjson.dumps(v).decode(),
            )
        return self._http

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(4),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception_type(ProviderError),
            reraise=True,
        ):
            with attempt:
                try:
                    async with self._session().request(method, path, json=body) as resp:
                        payload = await resp.json(loads=orjson.loads, content_type=None)
                        if resp.status >= 500:
                            raise ProviderError(f"{method} {path}: {resp.status}")
                        return resp.status, payload
                except (aiohttp.ClientError, TimeoutError) as err:
                    raise ProviderError(f"{method} {path}: {err}") from err
        raise ProviderError("unreachable")

    # -- records ------------------------------------------------------------------

    async def _record(self, order_id: str) -> dict[str, Any] | None:
        """The order's payment record; a fresh one if the order has only its pay link yet."""
        record, _ = await self._record_and_order(order_id)
        return record

    async def _record_and_order(
        self, order_id: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The payment record (as `_record`) and the order, read in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.payment(order_id))
            pipe.hget(keys.order(order_id), "json")
            raw, raw_order = await pipe.execute()
        order = orjson.loads(raw_order) if raw_order else None
        if raw:
            return orjson.loads(raw), order
        if order is None:
            return None, None
        return {
            "order_id": order_id,
            "merchant_id": order["merchant_id"],
            "customer_id": order["customer_id"],
            **checkout_of(self.settings, order),
            "amount_fen": order["amounts"]["total_fen"],
            "status": "created",
            "created_at": datetime.fromisoformat(order["placed_at"]).timestamp(),
            "captured_fen": 0,
            "refunded_fen": 0,
            "order_paid": False,
            "split": False,
            "refunds": {},
        }, order

    async def _save(self, record: dict[str, Any]) -> None:
        await self.redis.set(keys.payment(record["order_id"]), orjson.dumps(record))

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    # -- notifications ------------------------------------------------------------

    async def notify(self, body: bytes, signature: str | None) -> Reply:
        """Apply one provider notification; reply only once it is stored."""
        try:
            verify(self.settings.payment_secret, body, signature, time.time())
        except SignatureError as err:
            return DomainError(
                "bad_signature", "notification signature rejected", reason=err.reason
            )
        try:
            notice = orjson.loads(body)
            order_id = notice["out_trade_no"]
            kind = notice["type"]
            amount = int(notice["amount_fen"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return DomainError("invalid_request", "malformed notification")
        self._ensure_poller()
        async with self.lock(order_id):
            record = await self._record(order_id)
            if record is None:
                return DomainError(
                    "payment_not_found", "no payment for this order", order_id=order_id
                )
            if notice.get("intent_id") != record["intent_id"]:
                return DomainError("amount_mismatch", "intent does not match the order")
            if kind == "payment.succeeded":
                if amount != record["amount_fen"]:
                    return DomainError("amount_mismatch", "amount does not match the order")
                return await self._captured(record, _provider_time(notice.get("at")))
            if kind == "refund.succeeded":
                refund = record["refunds"].get(notice.get("refund_no") or "")
                if refund is None:
                    return DomainError("refund_not_found", "unknown refund number")
                if refund["amount_fen"] != amount:
                    return DomainError("amount_mismatch", "amount does not match the refund")
                return await self._refunded(
                    record, refund["refund_no"], _provider_time(notice.get("at"))
                )
            return DomainError("invalid_request", f"unknown notification type {kind}")

    async def _captured(self, record: dict[str, Any], paid_at: datetime) -> Reply:
        """Book the capture once, then tell the order; both steps are safe to repeat."""
        if record["status"] != "captured":
            record.update(
                status="captured", captured_fen=record["amount_fen"], paid_at=paid_at.isoformat()
            )
            txn = ledger.capture(
                record["order_id"], record["customer_id"], record["amount_fen"], paid_at
            )
            posted = await self.ledger.post(
                txn,
                record["merchant_id"],
                (keys.payment(record["order_id"]), record),
                counters=[
                    (
                        merchant_volume(record["merchant_id"]),
                        paid_at.strftime("%Y%m"),
                        record["amount_fen"],
                    )
                ],
            )
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.PAYMENTS_DUE, record["order_id"])
                if posted:
                    metrics.queue_count(pipe, paid_at, gmv_fen=record["amount_fen"])
                await pipe.execute()
        if record["order_paid"]:
            return {"applied": False, "status": "captured"}
        paid = await self.directory.call(
            "merchant",
            record["merchant_id"],
            "act",
            record["merchant_id"],
            record["order_id"],
            c.MarkPaid(at=paid_at, intent_id=record["intent_id"], amount_fen=record["amount_fen"]),
            ("system", "payments"),
        )
        record["order_paid"] = True
        await self._save(record)
        if isinstance(paid, DomainError):
            # Money arrived for an order that was closed meanwhile: give it back.
            log.info("payment for closed order %s: refunding (%s)", record["order_id"], paid.code)
            self.spawn(
                self.refund(
                    record["order_id"], record["amount_fen"], f"{record['order_id']}-late", "closed"
                ),
                f"late refund {record['order_id']}",
            )
        return {"applied": True, "status": "captured"}

    # -- refunds ------------------------------------------------------------------

    async def refund(self, order_id: str, amount_fen: int, refund_no: str, reason: str) -> Reply:
        """Refund part or all of a captured payment, once per refund number."""
        async with self.lock(order_id):
            record = await self._record(order_id)
            if record is None or record["status"] != "captured":
                return DomainError("not_paid", "nothing was captured for this order")
            existing = record["refunds"].get(refund_no)
            if existing is not None:
                if existing["amount_fen"] != amount_fen:
                    return DomainError(
                        "refund_no_conflict", "this refund number has another amount"
                    )
                if existing["status"] == "pending":
                    return await self._ask_refund(record, existing)
                return existing
            pending = sum(
                r["amount_fen"] for r in record["refunds"].values() if r["status"] == "pending"
            )
            refundable = record["captured_fen"] - record["refunded_fen"] - pending
            if amount_fen <= 0 or amount_fen > refundable:
                return DomainError(
                    "refund_exceeds_payment",
                    "refunds may not exceed what was captured",
                    captured_fen=record["captured_fen"],
                    refunded_fen=record["refunded_fen"],
                    refundable_fen=max(refundable, 0),
                )
            refund = {
                "refund_no": refund_no,
                "amount_fen": amount_fen,
                "reason": reason,
                "status": "pending",
            }
            record["refunds"][refund_no] = refund
            await self._save(record)
            return await self._ask_refund(record, refund)

    async def _ask_refund(self, record: dict[str, Any], refund: dict[str, Any]) -> Reply:
        try:
            status, body = await self._call(
                "POST",
                "/v1/refunds",
                {
                    "refund_no": refund["refund_no"],
                    "out_trade_no": record["order_id"],
                    "amount_fen": refund["amount_fen"],
                },
            )
        except ProviderError as err:
            log.warning("refund %s pending: %s", refund["refund_no"], err)
            return refund
        if status in (200, 201) and body.get("status") == "succeeded":
            await self._refunded(
                record, refund["refund_no"], _provider_time(body.get("refunded_at"))
            )
        else:
            log.warning("refund %s refused by the provider: %s", refund["refund_no"], body)
        return record["refunds"][refund["refund_no"]]

    async def _refunded(self, record: dict[str, Any], refund_no: str, at: datetime) -> Reply:
        """Book a refund the provider made, once, with its event; settle a closed order."""
        refund = record["refunds"][refund_no]
        if refund["status"] == "succeeded":
            return {"applied": False, "status": "refunded"}
        history = await self.ledger.of_order(record["order_id"])
        txn = ledger.refund(
            refund_no,
            record["order_id"],
            record["customer_id"],
            refund["amount_fen"],
            record["captured_fen"],
            record["refunded_fen"],
            ledger.order_holdings(history, record["order_id"]),
            at,
        )
        refund.update(status="succeeded", refunded_at=at.isoformat())
        record["refunded_fen"] += refund["amount_fen"]
        version = await self.redis.hget(keys.order(record["order_id"]), "version")
        async with self.redis.pipeline(transaction=True) as pipe:
            await self.ledger.post(
                txn, record["merchant_id"], (keys.payment(record["order_id"]), record), client=pipe
            )
            await queue_event(
                pipe,
                self.scripts,
                [
                    inbox_key("customer", record["customer_id"]),
                    inbox_key("merchant", record["merchant_id"]),
                    inbox_key("ops", "all"),
                ],
                {
                    "type": "refunded",
                    "order_id": record["order_id"],
                    "version": int(version or 0),
                    "at": at.isoformat(),
                    "data": {"refund_no": refund_no, "amount_fen": refund["amount_fen"]},
                },
                self.settings.inbox_maxlen,
                self.settings.inbox_retention_s,
            )
            await pipe.execute()
        if record["refunded_fen"] == record["captured_fen"] and not record["split"]:
            # A closed order still owes the provider's fee: book it now, once.
            await self._split(record, None)
        return {"applied": True, "status": "refunded"}

    # -- settlement ---------------------------------------------------------------

    async def settle(self, order_id: str) -> Reply:
        """Divide a delivered order's money by its merchant's split plan (once)."""
        async with self.lock(order_id):
            record, order = await self._record_and_order(order_id)
            if record is None or record["status"] != "captured":
                return DomainError("not_paid", "nothing was captured for this order")
            return await self._split(record, (order or {}).get("rider_id"), order)

    async def _split(
        self, record: dict[str, Any], rider_id: str | None, order: dict[str, Any] | None = None
    ) -> Reply:
        if record["split"]:
            return {"applied": False, "split": True}
        paid_at = _provider_time(record.get("paid_at"))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.merchant(record["merchant_id"]), "profile")
            pipe.hget(merchant_volume(record["merchant_id"]), paid_at.strftime("%Y%m"))
            if order is None:
                pipe.hget(keys.order(record["order_id"]), "json")
            raw_profile, volume, *raw_order = await pipe.execute()
        if order is None:
            order = orjson.loads(raw_order[0])
        profile = orjson.loads(raw_profile) if raw_profile else {}
        try:
            txn = ledger.split_capture(
                record["order_id"],
                record["merchant_id"],
                rider_id,
                Amounts(**order["amounts"]),
                record["captured_fen"],
                provider_fee_fen(record["captured_fen"], self.settings.provider_fee_bp),
                int(volume or 0),
                ledger.plan_or_default(profile.get("split_plan")),
                datetime.now(UTC),
                refunded_fen=record["refunded_fen"],
            )
        except DomainError as err:
            return err
        record["split"] = True
        await self.ledger.post(
            txn, record["merchant_id"], (keys.payment(record["order_id"]), record)
        )
        return {"applied": True, "split": True}

    async def reconcile(self, day: date) -> Reply:
        try:
            status, statement = await self._call("GET", f"/v1/statements?date={day.isoformat()}")
        except ProviderError:
            return DomainError("payment_unavailable", "the provider's statement is unavailable")
        if status != 200:
            return DomainError("payment_unavailable", "the provider refused the statement")
        report = reconcile(
            provider_rows(statement["rows"]), ledger_rows(await self.ledger.of_day(day))
        )
        return {"date": day.isoformat(), **report}

    # -- lost notifications and abandoned intents ---------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.payment_poll_s)
            try:
                await self.poll_once()
            except Exception:
                log.exception("payment poll failed")

    async def poll_once(self) -> int:
        """Ask the provider about this host's orders awaiting payment; returns how many settled."""
        hosts = host_count("payment", self.settings)
        due = await self.redis.zrangebyscore(
            keys.PAYMENTS_DUE, "-inf", time.time(), start=0, num=500
        )
        mine = [oid for oid in due if host_index(oid, hosts) == self.index]
        settled = 0
        for order_id in mine:
            async with self.lock(order_id):
                settled += await self._check(order_id)
        return settled

    async def _check(self, order_id: str) -> int:
        record, order = await self._record_and_order(order_id)
        if record is None or record["status"] != "created":
            await self.redis.zrem(keys.PAYMENTS_DUE, order_id)
            return 0
        status, view = await self._call("GET", f"/v1/orders/{order_id}")
        if status == 200 and view.get("status") == "paid":
            await self._captured(record, _provider_time(view.get("paid_at")))
            return 1
        order_status = order["status"] if order else None
        age = time.time() - record["created_at"]
        if order_status == "pending_payment" and age <= self.settings.payment_timeout_s:
            wait = next_check_in(age, self.settings.payment_poll_s, self.settings.payment_timeout_s)
            await self.redis.zadd(keys.PAYMENTS_DUE, {order_id: time.time() + wait})
            return 0
        closed, _ = await self._call("POST", f"/v1/orders/{order_id}/close")
        if closed == 409:  # paid at the last moment
            status, view = await self._call("GET", f"/v1/orders/{order_id}")
            await self._captured(record, _provider_time(view.get("paid_at")))
            return 1
        record["status"] = "closed"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.payment(order_id), orjson.dumps(record))
            pipe.zrem(keys.PAYMENTS_DUE, order_id)
            await pipe.execute()
        if order_status == "pending_payment":
            await self.directory.call(
                "merchant",
                record["merchant_id"],
                "act",
                record["merchant_id"],
                order_id,
                c.CancelOrder(at=datetime.now(UTC), reason="payment_timeout", by="system"),
                ("system", "payments"),
            )
        return 1


def next_check_in(age_s: float, poll_s: float, timeout_s: float) -> float:
    """Seconds until the provider is asked again about an order still unpaid at `age_s`.

    The wait about doubles with the order's age, as providers advise for payment
    queries: an abandoned order costs ten queries over a 15-minute timeout, not 29, and
    a lunch peak's thousands of abandoned orders do not starve the fresh ones of the
    poll rounds, which are capped. Never sooner than `poll_s`, and never past the
    deadline, so that the order is closed (and its stock given back) on time.
    """
    return max(poll_s, min(age_s, timeout_s - age_s))


def provider_fee_fen(amount_fen: int, fee_bp: int) -> int:
    """The provider's fee on a payment, rounded half up to the fen (its statement agrees)."""
    return (amount_fen * fee_bp + 5000) // 10000


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "intent_id": record["intent_id"],
        "pay_url": record["pay_url"],
        "status": record["status"],
        "amount_fen": record["amount_fen"],
        "refunded_fen": record["refunded_fen"],
    }
