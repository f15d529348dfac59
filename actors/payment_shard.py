"""The payment-shard host: intents, provider notifications and refunds of its orders."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from actors.host import EntityHost
from actors.placement import Directory
from cluster.settings import Settings
from domain import commands as c
from domain.errors import DomainError
from sandbox.signing import SignatureError, verify
from storage import keys
from storage.orders import inbox_key, queue_event

log = logging.getLogger(__name__)

Reply = dict[str, Any] | DomainError


class ProviderError(Exception):
    """The provider could not be reached or answered with a server error."""


class PaymentShardHost(EntityHost):
    """Hosts payment shards: the payments of the orders that hash to them.

    Concurrency: one `asyncio.Lock` per order's payment, so a notification, a retry
    of it and a refund of the same order never interleave; different orders proceed
    in parallel, including their calls to the provider.
    Persists: `payment:{order_id}` (intent, captured and refunded amounts, refunds by
    refund number), `payment:{order_id}:notices` (notification ids already applied),
    and `refunded` events on the inboxes of the order's customer and merchant.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.directory = Directory(settings)
        self._http: aiohttp.ClientSession | None = None

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

    async def _record(self, order_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(keys.payment(order_id))
        return orjson.loads(raw) if raw else None

    async def _save(self, record: dict[str, Any]) -> None:
        await self.redis.set(keys.payment(record["order_id"]), orjson.dumps(record))

    async def _save_refunded(self, record: dict[str, Any], refund_no: str, amount: int) -> None:
        """Store a completed refund and tell the order's terminals, in one transaction."""
        version = await self.redis.hget(keys.order(record["order_id"]), "version")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.payment(record["order_id"]), orjson.dumps(record))
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
                    "at": datetime.now(UTC).isoformat(),
                    "data": {"refund_no": refund_no, "amount_fen": amount},
                },
                self.settings.inbox_maxlen,
                self.settings.inbox_retention_s,
            )
            await pipe.execute()

    async def open_intent(
        self, order_id: str, merchant_id: str, customer_id: str, amount_fen: int
    ) -> Reply:
        """Ask the provider for a payment intent (idempotent by order id)."""
        async with self.lock(order_id):
            record = await self._record(order_id)
            if record is not None:
                return _public(record)
            try:
                status, body = await self._call(
                    "POST",
                    "/v1/intents",
                    {
                        "out_trade_no": order_id,
                        "amount_fen": amount_fen,
                        "notify_url": f"{self.settings.platform_url}/v1/payments/callback",
                    },
                )
            except ProviderError as err:
                log.warning("intent for %s failed: %s", order_id, err)
                return DomainError("payment_unavailable", "the payment provider is unavailable")
            if status not in (200, 201):
                return DomainError("payment_unavailable", "the payment provider refused", body=body)
            record = {
                "order_id": order_id,
                "merchant_id": merchant_id,
                "customer_id": customer_id,
                "intent_id": body["intent_id"],
                "pay_url": body["pay_url"],
                "amount_fen": amount_fen,
                "status": "created",
                "captured_fen": 0,
                "refunded_fen": 0,
                "refunds": {},
            }
            await self._save(record)
            return _public(record)

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
                return await self._captured(record)
            if kind == "refund.succeeded":
                return await self._refund_confirmed(record, notice.get("refund_no") or "", amount)
            return DomainError("invalid_request", f"unknown notification type {kind}")

    async def _captured(self, record: dict[str, Any]) -> Reply:
        if record["status"] == "captured":
            return {"applied": False, "status": "captured"}
        merchants = await self.directory.host("merchant", record["merchant_id"])
        paid = await merchants.act.remote(
            record["merchant_id"],
            record["order_id"],
            c.MarkPaid(
                at=datetime.now(UTC), intent_id=record["intent_id"], amount_fen=record["amount_fen"]
            ),
            ("system", "payments"),
        )
        record["status"] = "captured"
        record["captured_fen"] = record["amount_fen"]
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

    async def _refund_confirmed(self, record: dict[str, Any], refund_no: str, amount: int) -> Reply:
        refund = record["refunds"].get(refund_no)
        if refund is None:
            return DomainError("refund_not_found", "unknown refund number", refund_no=refund_no)
        if refund["status"] != "succeeded":
            refund["status"] = "succeeded"
            record["refunded_fen"] += amount
            await self._save_refunded(record, refund_no, amount)
        return {"applied": True, "status": "refunded"}

    async def refund(self, order_id: str, amount_fen: int, refund_no: str, reason: str) -> Reply:
        """Refund part or all of a captured payment, once per refund number."""
        async with self.lock(order_id):
            record = await self._record(order_id)
            if record is None or record["status"] != "captured":
                return DomainError("not_paid", "nothing was captured for this order")
            existing = record["refunds"].get(refund_no)
            if existing is not None:
                return existing
            pending = sum(
                r["amount_fen"] for r in record["refunds"].values() if r["status"] == "pending"
            )
            if (
                amount_fen <= 0
                or amount_fen + record["refunded_fen"] + pending > record["captured_fen"]
            ):
                return DomainError(
                    "refund_exceeds_payment",
                    "refunds may not exceed what was captured",
                    captured_fen=record["captured_fen"],
                    refunded_fen=record["refunded_fen"],
                )
            refund = {
                "refund_no": refund_no,
                "amount_fen": amount_fen,
                "reason": reason,
                "status": "pending",
            }
            record["refunds"][refund_no] = refund
            await self._save(record)
            try:
                status, body = await self._call(
                    "POST",
                    "/v1/refunds",
                    {"refund_no": refund_no, "out_trade_no": order_id, "amount_fen": amount_fen},
                )
            except ProviderError as err:
                log.warning("refund %s pending: %s", refund_no, err)
                return refund
            if status in (200, 201) and body.get("status") == "succeeded":
                refund["status"] = "succeeded"
                record["refunded_fen"] += amount_fen
                await self._save_refunded(record, refund_no, amount_fen)
            return refund


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "intent_id": record["intent_id"],
        "pay_url": record["pay_url"],
        "status": record["status"],
        "amount_fen": record["amount_fen"],
        "refunded_fen": record["refunded_fen"],
    }
