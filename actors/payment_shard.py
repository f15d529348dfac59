"""The payment-shard host: provider notifications, polling, refunds and the ledger."""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime

import orjson

from actors import telemetry
from actors.directory import (
    AskRefund,
    Message,
    Notify,
    Reconcile,
    Refund,
    Reply,
    ReviewRefund,
    Settle,
    checkout_for,
)
from actors.host import EntityHost
from domain import commands as c
from domain import events as e
from domain import ledger, risk
from domain import payments as p
from domain import reactions as r
from domain.errors import DomainError
from domain.orders import pay_fen_of
from domain.payments import Payment, PaymentStatus, next_check_in, provider_fee_fen
from domain.pricing import Amounts
from domain.reconciliation import ledger_rows, provider_rows, reconcile
from storage.ledger import LedgerStore
from storage.merchants import MerchantStore
from storage.payments import PaymentStore
from storage.provider import (
    ProviderClient,
    ProviderError,
    SignatureError,
    provider_time,
    verify,
)
from storage.reviews import refund_record
from storage.risk import RiskStore, figures_of
from storage.settings import Settings

log = logging.getLogger(__name__)

# Orders awaiting payment asked about per poll round.
POLL_BATCH = 500


class PaymentShardHost(EntityHost):
    """Hosts payment shards: the payments of the orders that hash to them.

    Concurrency: one `asyncio.Lock` per order's payment, so a notification, a poll, a
    retry and a refund of the same order never interleave; different orders proceed
    in parallel, including their calls to the provider. Placement does not call this
    host: an order's pay link is signed by the platform (`storage/provider.py`) and the
    order joins `payments:pending` in its placement script. A background loop, started
    with the host, asks the provider about those orders (lost notifications) and
    closes the ones past the payment timeout.
    Persists, in the slot of the order's shard (`storage/keys.py`): the payment record
    (written at the first notification or poll that changes something: captured and
    refunded amounts, refunds by refund number), its due time in the shard's
    `payments:due`, and the shard's ledger (each transaction posted once, with the
    payment record it books, in one script), plus `refunded` events on the inboxes of
    the order's customer, merchant and operations (the first two through the shard's
    outbox).

    Risk checks (`domain/risk.py`): a capture of another amount than the order's, which
    the provider's own order query confirms, is booked and the order told to hold
    (`HoldPayment`) instead of paid; a refund an operator asks for past the merchant's
    daily share is saved held, with its review, and sent only once another operator
    approves it; an order closed unpaid counts as a failed payment of its customer and
    device; a split refused by review keeps the rider's share.
    """

    KIND = "payment"

    def __init__(self, settings: Settings, index: int = 0) -> None:
        super().__init__(settings, index)
        self.payments = PaymentStore(self.redis, self.metrics, self.relay)
        self.ledger = LedgerStore(
            self.redis,
            self.scripts,
            self.relay,
            settings.inbox_maxlen,
            settings.inbox_retention_s,
        )
        self.merchants = MerchantStore(self.redis, self.scripts)
        self.provider = ProviderClient(settings.sandbox_url)
        self.checkout = checkout_for(settings)
        self.risk = RiskStore(self.redis, figures_of(settings))
        # Orders are placed without a word to this host, so it must poll from the
        # start (and after a restart).
        self.every(settings.payment_poll_s, "payment poll", self.poll_once)
        telemetry.watch(self)
        self.start()

    async def react(self, intent: r.Intent) -> Reply | None:
        """Refunds and settlements that orders' changes posted: once each in effect (by
        refund number, and the split once per order)."""
        telemetry.concerning(telemetry.order_of(intent))
        match intent:
            case r.Refund():
                return await self.refund(
                    intent.order_id, intent.amount_fen, intent.refund_no, intent.reason
                )
            case r.Settle():
                return await self.settle(intent.order_id, intent.withhold_rider)
        return await super().react(intent)

    def entity_of(self, message: Message) -> str | None:
        match message:
            case Notify():
                return message.order_id or None
            case Refund() | Settle() | AskRefund() | ReviewRefund():
                return message.order_id
        return None

    async def receive(self, message: Message) -> Reply:
        telemetry.concerning(telemetry.order_of(message))
        match message:
            case Notify():
                return telemetry.notified(await self.notify(message.body, message.signature))
            case Refund():
                return await self.refund(
                    message.order_id, message.amount_fen, message.refund_no, message.reason
                )
            case AskRefund():
                return await self.refund(
                    message.order_id,
                    message.amount_fen,
                    message.refund_no,
                    message.reason,
                    asked_by=message.by,
                )
            case ReviewRefund():
                return await self.review_refund(
                    message.order_id,
                    message.refund_no,
                    message.review_id,
                    message.approve,
                    message.by,
                )
            case Settle():
                return await self.settle(message.order_id)
            case Reconcile():
                return await self.reconcile(message.day)
        return await super().receive(message)

    async def _load(self, order_id: str) -> tuple[Payment | None, dict[str, object] | None]:
        """The order's payment (a fresh one if the order has only its pay link yet) and the
        order as stored. The payment's amount is what the link asks (`pay_fen_of`): the
        placed total, also once a cheaper door lowered the order's total before payment
        (its merchant's host writes the record then, `MerchantHost._keep_pay_link`), so
        a capture of it is the expected amount, and `MarkPaid` of it refunds the rest."""
        payment, order = await self.payments.load(order_id)
        if payment is not None or order is None:
            return payment, order
        placed_at = datetime.fromisoformat(str(order["placed_at"])).timestamp()
        amount_fen = pay_fen_of(order)
        link = self.checkout.link(order_id, amount_fen, placed_at)
        fresh = p.opened(
            order_id,
            str(order["merchant_id"]),
            str(order["customer_id"]),
            link["intent_id"],
            link["pay_url"],
            amount_fen,
            placed_at,
        )
        return fresh, order

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
        telemetry.concerning(order_id)
        async with self.lock(order_id):
            payment, _ = await self._load(order_id)
            if payment is None:
                return DomainError(
                    "payment_not_found", "no payment for this order", order_id=order_id
                )
            if notice.get("intent_id") != payment.intent_id:
                return DomainError("amount_mismatch", "intent does not match the order")
            at = provider_time(notice.get("at"))
            try:
                if kind == "payment.succeeded":
                    capture = p.Capture(payment.intent_id, amount, at)
                    if amount != payment.amount_fen and payment.status != PaymentStatus.CAPTURED:
                        # Another amount than the order's: booked only if the provider's
                        # own order query says it captured that (then held for review).
                        confirmed = await self._provider_captured(order_id, amount)
                        if confirmed is not None:
                            return confirmed
                        capture = p.Capture(payment.intent_id, amount, at, confirmed=True)
                    return await self._captured(payment, capture)
                if kind == "refund.succeeded":
                    refund_no = notice.get("refund_no") or ""
                    _, reply = await self._refunded(payment, p.ConfirmRefund(refund_no, amount, at))
                    return reply
            except DomainError as err:
                return err
            return DomainError("invalid_request", f"unknown notification type {kind}")

    async def _provider_captured(self, order_id: str, amount_fen: int) -> DomainError | None:
        """None if the provider's order query says it captured `amount_fen` for the order;
        else why not (a 400 the provider gets for its notification, or a 503 it retries)."""
        try:
            status, view = await self.provider.order(order_id)
        except ProviderError:
            return DomainError("payment_unavailable", "the provider could not confirm the amount")
        if status == 200 and view.get("status") == "paid" and view.get("amount_fen") == amount_fen:
            return None
        return DomainError(
            "amount_mismatch",
            "amount does not match the order, and the provider does not confirm it",
            amount_fen=amount_fen,
        )

    async def _captured(self, payment: Payment, capture: p.Capture) -> Reply:
        """Book the capture once, then tell the order; both steps are safe to repeat."""
        for event in p.decide(payment, capture):
            payment = p.evolve(payment, event)
            txn = ledger.capture(
                payment.order_id, payment.customer_id, payment.captured_fen, capture.at
            )
            posted = await self.ledger.post(
                txn, payment.merchant_id, payment, volume_fen=payment.captured_fen
            )
            await self.payments.captured(payment, posted)
            telemetry.payment("captured")
        told = p.decide(payment, p.TellOrderPaid())
        if not told:
            return {"applied": False, "status": "captured"}
        tell: c.Command = c.MarkPaid(
            at=capture.at, intent_id=payment.intent_id, amount_fen=payment.amount_fen
        )
        # Weighed against what the pay link asks, not the order's total now: a cheaper
        # door chosen unpaid lowered that, and the order refunds the difference itself.
        mismatch = risk.amount_mismatch(payment.captured_fen, payment.amount_fen)
        if mismatch is not None:
            # The money is booked; the order is held, not paid, until review.
            review_id = risk.order_review_id(payment.order_id, "paid")
            tell = c.HoldPayment(
                at=capture.at,
                intent_id=payment.intent_id,
                amount_fen=payment.captured_fen,
                hold=risk.hold_of(mismatch, review_id),
            )
            telemetry.payment("held_amount_mismatch")
        paid = await self.directory.merchant(payment.merchant_id).act(
            payment.order_id, tell, ("system", "payments")
        )
        payment = p.evolve(payment, told[0])
        give_back: list[r.Intent] = []
        if isinstance(paid, DomainError):
            # Money arrived for an order that was closed meanwhile: give it back, as a
            # follow-up saved with the payment.
            log.info("payment for closed order %s: refunding (%s)", payment.order_id, paid.code)
            late = f"{payment.order_id}-late"
            give_back.append(r.Refund(payment.order_id, payment.captured_fen, late, "closed"))
        await self.payments.save(payment, self.directory.post(give_back))
        if give_back:
            telemetry.payment("captured_after_close")
        return {"applied": True, "status": "captured"}

    # -- refunds ------------------------------------------------------------------

    async def refund(
        self,
        order_id: str,
        amount_fen: int,
        refund_no: str,
        reason: str,
        asked_by: str | None = None,
    ) -> Reply:
        """Refund part or all of a captured payment, once per refund number.

        A refund an operator asks for (`asked_by`) past its merchant's share of the day
        is saved held with its review instead (`domain/risk.py`); the follow-ups of
        closed orders are not weighed (they give back what the merchant never earned)."""
        async with self.lock(order_id):
            payment, _ = await self._load(order_id)
            if payment is None:
                return DomainError("not_paid", "nothing was captured for this order")
            hit = None
            if asked_by is not None and refund_no not in payment.refunds:
                captured, refunded = await self.risk.merchant_day(
                    payment.merchant_id, datetime.now(UTC).date()
                )
                hit = risk.refund_over_share(amount_fen, refunded, captured, self.risk.figures)
            ask = p.RequestRefund(refund_no, amount_fen, reason, held=hit is not None)
            try:
                requested = p.decide(payment, ask)
            except DomainError as err:
                return err
            for event in requested:
                payment = p.evolve(payment, event)
                if hit is None:
                    await self.payments.save(payment, refunded_fen=amount_fen)
                else:
                    await self._hold_refund(payment, refund_no, hit, asked_by or "")
            line = payment.refunds[refund_no]
            if line.status == "pending":
                return await self._ask_refund(payment, refund_no)
            return self._line(line)

    @staticmethod
    def _line(line: p.RefundLine) -> dict[str, object]:
        answer: dict[str, object] = line.as_dict()
        if line.status in ("held", "refused"):
            answer["review_id"] = risk.refund_review_id(line.refund_no)
        return answer

    async def _hold_refund(
        self, payment: Payment, refund_no: str, hit: risk.Hit, asked_by: str
    ) -> None:
        now = datetime.now(UTC)
        line = payment.refunds[refund_no]
        review_id = risk.refund_review_id(refund_no)
        review = refund_record(
            review_id,
            hit,
            payment.order_id,
            payment.customer_id,
            payment.merchant_id,
            refund_no,
            line.amount_fen,
            asked_by,
            now,
        )
        held = e.RefundHeld(
            order_id=payment.order_id,
            version=await self.orders.version(payment.order_id),
            at=now,
            refund_no=refund_no,
            amount_fen=line.amount_fen,
            review_id=review_id,
            reason=hit.reason,
        )
        parties = await self._parties(payment)
        await self.payments.hold_refund(payment, review, held.as_dict(), parties, now)
        telemetry.payment("refund_held")

    async def review_refund(
        self, order_id: str, refund_no: str, review_id: str, approve: bool, by: str
    ) -> Reply:
        """Operations decide a held refund: sent to the provider, or dropped. Approving
        again a refund approved already asks the provider again (by its refund number:
        once in effect), so a refund the provider could not take then goes through."""
        async with self.lock(order_id):
            payment, _ = await self._load(order_id)
            line = payment.refunds.get(refund_no) if payment is not None else None
            if payment is None or line is None or review_id != risk.refund_review_id(refund_no):
                return DomainError("review_not_found", "no such review", id=review_id)
            if approve and line.status == "pending":
                return await self._ask_refund(payment, refund_no)
            try:
                (released,) = p.decide(payment, p.ReleaseRefund(refund_no, approve))
            except DomainError as err:
                return err
            payment = p.evolve(payment, released)
            now = datetime.now(UTC)
            refused = None
            if not approve:
                refused = e.RefundRefused(
                    order_id=order_id,
                    version=await self.orders.version(order_id),
                    at=now,
                    refund_no=refund_no,
                    amount_fen=line.amount_fen,
                    review_id=review_id,
                ).as_dict()
            await self.payments.release_refund(
                payment,
                review_id,
                risk.APPROVED if approve else risk.REFUSED,
                by,
                now,
                refused,
                await self._parties(payment),
                line.amount_fen if approve else 0,
            )
            if approve:
                return await self._ask_refund(payment, refund_no)
            return self._line(payment.refunds[refund_no])

    async def _ask_refund(self, payment: Payment, refund_no: str) -> Reply:
        line = payment.refunds[refund_no]
        try:
            status, body = await self.provider.refund(refund_no, payment.order_id, line.amount_fen)
        except ProviderError as err:
            log.warning("refund %s pending: %s", refund_no, err)
            telemetry.payment("refund_pending")
            return line.as_dict()
        if status in (200, 201) and body.get("status") == "succeeded":
            confirm = p.ConfirmRefund(
                refund_no, line.amount_fen, provider_time(body.get("refunded_at"))
            )
            payment, _ = await self._refunded(payment, confirm)
        else:
            log.warning("refund %s refused by the provider: %s", refund_no, body)
            telemetry.payment("refund_refused")
        return payment.refunds[refund_no].as_dict()

    async def _refunded(self, payment: Payment, confirm: p.ConfirmRefund) -> tuple[Payment, Reply]:
        """Book a refund the provider made, once, with its event; settle a closed order."""
        confirmed = p.decide(payment, confirm)
        if not confirmed:
            return payment, {"applied": False, "status": "refunded"}
        history = await self.ledger.of_order(payment.order_id)
        held = ledger.order_holdings(history, payment.order_id)
        txn = ledger.refund(
            confirm.refund_no,
            payment.order_id,
            payment.customer_id,
            confirm.amount_fen,
            payment.captured_fen,
            payment.refunded_fen,
            held,
            confirm.at,
            # After the split, a cheaper door's refund still comes out of clearing.
            ledger.left_in_clearing(history, payment.order_id) if held is not None else 0,
        )
        payment = p.evolve(payment, confirmed[0])
        refunded = e.Refunded(
            order_id=payment.order_id,
            version=await self.orders.version(payment.order_id),
            at=confirm.at,
            refund_no=confirm.refund_no,
            amount_fen=confirm.amount_fen,
        )
        await self.ledger.post_with_event(
            txn, payment, await self._parties(payment), refunded.as_dict()
        )
        telemetry.payment("refunded")
        if payment.fully_refunded and not payment.split:
            # A closed order still owes the provider's fee: book it now, once.
            await self._split(payment, None, None)
        return payment, {"applied": True, "status": "refunded"}

    async def _parties(self, payment: Payment) -> list[tuple[str, str]]:
        """Who hears of the payment's refunds: its customer, its merchant unless the order
        is held before the merchant had it (`domain/risk.py`), and operations."""
        order = await self.orders.load_raw(payment.order_id)
        stored = (order or {}).get("hold")
        hidden = risk.hides_from_merchant(risk.Hold.from_dict(stored) if stored else None)
        merchant = [] if hidden else [("merchant", payment.merchant_id)]
        return [("customer", payment.customer_id), *merchant, ("ops", "all")]

    # -- settlement ---------------------------------------------------------------

    async def settle(self, order_id: str, withhold_rider: bool = False) -> Reply:
        """Divide a delivered order's money by its merchant's split plan (once); with
        `withhold_rider` (a delivery review refused) the rider's share is the platform's."""
        async with self.lock(order_id):
            payment, order = await self._load(order_id)
            if payment is None or payment.status != PaymentStatus.CAPTURED:
                return DomainError("not_paid", "nothing was captured for this order")
            rider_id = (order or {}).get("rider_id")
            return await self._split(
                payment, str(rider_id) if rider_id else None, order, withhold_rider
            )

    async def _split(
        self,
        payment: Payment,
        rider_id: str | None,
        order: dict[str, object] | None,
        withhold_rider: bool = False,
    ) -> Reply:
        booked = p.decide(payment, p.BookSplit())
        if not booked:
            return {"applied": False, "split": True}
        paid_at = provider_time(payment.paid_at)
        profile, volume = await self.merchants.profile_and_volume(
            payment.merchant_id, paid_at.strftime("%Y%m")
        )
        if order is None:
            order = await self.orders.load_raw(payment.order_id)
        assert order is not None
        amounts = Amounts(**order["amounts"])  # type: ignore[arg-type]
        if payment.fully_refunded and payment.captured_fen < amounts.total_fen:
            # A short capture that review refused: all of it went back, only the
            # provider's fee is left to book, whatever the order's price.
            captured = payment.captured_fen
            amounts = Amounts(captured, 0, 0, captured)
        plan = ledger.plan_or_default(profile.get("split_plan"))
        try:
            txn = ledger.split_capture(
                payment.order_id,
                payment.merchant_id,
                rider_id,
                amounts,
                payment.captured_fen,
                provider_fee_fen(payment.captured_fen, self.settings.provider_fee_bp),
                volume,
                risk.rider_withheld(plan) if withhold_rider else plan,
                datetime.now(UTC),
                refunded_fen=payment.refunded_fen,
            )
        except DomainError as err:
            return err
        payment = p.evolve(payment, booked[0])
        await self.ledger.post(txn, payment.merchant_id, payment)
        return {"applied": True, "split": True}

    async def reconcile(self, day: date) -> Reply:
        try:
            status, statement = await self.provider.statement(day)
        except ProviderError:
            return DomainError("payment_unavailable", "the provider's statement is unavailable")
        if status != 200:
            return DomainError("payment_unavailable", "the provider refused the statement")
        report = reconcile(
            provider_rows(statement["rows"]), ledger_rows(await self.ledger.of_day(day))
        )
        return {"date": day.isoformat(), **report}

    # -- lost notifications and abandoned intents ---------------------------------

    async def poll_once(self) -> int:
        """Ask the provider about this host's orders awaiting payment; returns how many settled."""
        due = await self.payments.due(self.shards, time.time(), POLL_BATCH)
        mine = [oid for oid in due if self.owns(oid)]
        settled = 0
        for order_id in mine:
            with telemetry.about(order_id):
                async with self.lock(order_id):
                    settled += await self._check(order_id)
        return settled

    async def _check(self, order_id: str) -> int:
        payment, order = await self._load(order_id)
        if payment is None or payment.status != PaymentStatus.CREATED:
            await self.payments.no_longer_due(order_id)
            return 0
        status, view = await self.provider.order(order_id)
        if status == 200 and view.get("status") == "paid":
            await self._captured(payment, _captured_by(payment, view))
            return 1
        order_status = order["status"] if order else None
        age = time.time() - payment.created_at
        if order_status == "pending_payment" and age <= self.settings.payment_timeout_s:
            wait = next_check_in(age, self.settings.payment_poll_s, self.settings.payment_timeout_s)
            await self.payments.ask_again_at(order_id, time.time() + wait)
            return 0
        if await self.provider.close(order_id) == 409:  # paid at the last moment
            status, view = await self.provider.order(order_id)
            await self._captured(payment, _captured_by(payment, view))
            return 1
        (closed,) = p.decide(payment, p.Close())
        # The order's cancellation (its stock and coupon back) is posted with the close.
        cancel: list[r.Intent] = []
        if order_status == "pending_payment":
            cancel.append(r.Cancel(order_id, payment.merchant_id, "payment_timeout"))
        await self.payments.close(p.evolve(payment, closed), self.directory.post(cancel))
        # A failed payment of its customer and device, for the next placement's check.
        await self.risk.count_failure(payment.customer_id, order_id, datetime.now(UTC))
        telemetry.payment("closed")
        return 1


def _captured_by(payment: Payment, view: dict[str, object]) -> p.Capture:
    """What the provider's order query says it captured: its word, whatever the amount
    (another amount than the order's is then held for review)."""
    amount = view.get("amount_fen")
    return p.Capture(
        payment.intent_id,
        amount if isinstance(amount, int) else payment.amount_fen,
        provider_time(view.get("paid_at")),  # type: ignore[arg-type]
        confirmed=True,
    )
