"""What the sandbox provider knows and the rules it keeps.

All state lives in one in-memory `Provider`; restarting the process forgets
everything, which is the point of a sandbox. Its operations read and mutate that
state without awaiting in between, so concurrent requests on the event loop see
each operation as atomic (e.g. two racing refunds cannot both pass the "does not
exceed the payment" check).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

from yarl import URL

from sandbox.notifier import Notification, Notifier, rfc3339
from storage.provider import FEE_BP, SignatureError, provider_fee_fen, verify_checkout

# WeChat caps merchant order numbers at 32 characters from a small alphabet; a
# little more room here, but the same idea: ids must be safe in a URL path.
_ID_RE = re.compile(r"^[A-Za-z0-9_\-.:|*@]{1,64}$")
MAX_AMOUNT_FEN = 10_000_000_000  # 100 million yuan; anything larger is a caller bug
MAX_DESCRIPTION_LEN = 256
# A fee above the whole payment is a configuration mistake, not a business.
MAX_FEE_BP = 10_000

PAYMENT_SUCCEEDED = "payment.succeeded"
REFUND_SUCCEEDED = "refund.succeeded"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _utc_date(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


# ---- what a well-formed request carries ------------------------------------


def id_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        raise ApiError(422, "validation_error", f"{name} is required")
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ApiError(
            422, "validation_error", f"{name} must be 1-64 characters of A-Z a-z 0-9 _-.:|*@"
        )
    return value


def amount_field(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if value is None:
        raise ApiError(422, "validation_error", f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, "validation_error", f"{name} must be an integer number of fen")
    if not 0 < value <= MAX_AMOUNT_FEN:
        raise ApiError(422, "validation_error", f"{name} must be in [1, {MAX_AMOUNT_FEN}]")
    return value


def url_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        raise ApiError(422, "validation_error", f"{name} is required")
    if isinstance(value, str) and len(value) <= 2048:
        try:
            url = URL(value)
        except ValueError:
            pass
        else:
            if url.scheme in ("http", "https") and url.host:
                return value
    raise ApiError(422, "validation_error", f"{name} must be an absolute http(s) URL")


def description_field(data: dict[str, Any]) -> str | None:
    description = data.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LEN
    ):
        raise ApiError(
            422,
            "validation_error",
            f"description must be a string of at most {MAX_DESCRIPTION_LEN} characters",
        )
    return description


# ---- knobs --------------------------------------------------------------------


@dataclass
class Knobs:
    drop_rate: float = 0.0
    duplicate: int = 0
    delay_ms: int = 0
    reorder: bool = False
    refund_latency_ms: int = 0
    max_attempts: int = 30


def _knob_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError(422, "validation_error", f"{name} must be an integer in [{lo}, {hi}]")
    return value


def _knob_drop_rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ApiError(422, "validation_error", "drop_rate must be a number in [0, 1]")
    return float(value)


def _knob_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ApiError(422, "validation_error", f"{name} must be a boolean")
    return value


_KNOB_PARSERS: dict[str, Callable[[Any], Any]] = {
    "drop_rate": _knob_drop_rate,
    "duplicate": lambda v: _knob_int("duplicate", v, 0, 100),
    "delay_ms": lambda v: _knob_int("delay_ms", v, 0, 600_000),
    "reorder": lambda v: _knob_bool("reorder", v),
    "refund_latency_ms": lambda v: _knob_int("refund_latency_ms", v, 0, 600_000),
    "max_attempts": lambda v: _knob_int("max_attempts", v, 1, 1000),
}
assert set(_KNOB_PARSERS) == {f.name for f in fields(Knobs)}


# ---- records ------------------------------------------------------------------


@dataclass
class Intent:
    intent_id: str
    out_trade_no: str
    amount_fen: int
    notify_url: str
    description: str | None
    created_at: float
    status: str = "created"  # created | paid | closed
    paid_at: float | None = None
    closed_at: float | None = None
    refunded_fen: int = 0
    # Set for intents opened from a signed checkout link: no payment after this.
    expires_at: float | None = None


@dataclass
class Refund:
    refund_no: str
    out_trade_no: str
    intent_id: str
    amount_fen: int
    refunded_at: float
    status: str = "succeeded"


@dataclass
class LedgerRow:
    type: str  # payment | refund
    intent_id: str
    out_trade_no: str
    refund_no: str | None
    amount_fen: int
    fee_fen: int
    at: float


class Provider:
    """Everything the sandbox knows; telling the merchant about it is the notifier's job."""

    def __init__(self, secret: str, public_url: str, seed: int = 0, fee_bp: int = FEE_BP) -> None:
        if not secret:
            raise ValueError("secret must not be empty")
        if not 0 <= fee_bp <= MAX_FEE_BP:
            raise ValueError(f"fee_bp must be in [0, {MAX_FEE_BP}]")
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        self.fee_bp = fee_bp
        self.knobs = Knobs()
        # Business timestamps only; signatures always use the real clock so
        # receivers' freshness checks keep working when tests move this one.
        self.clock: Callable[[], float] = time.time
        self.intents: dict[str, Intent] = {}
        self.by_trade_no: dict[str, Intent] = {}
        # Trade numbers closed before any checkout opened them: their links are dead.
        self.closed_trade_nos: set[str] = set()
        self.refunds: dict[str, Refund] = {}
        self.ledger: list[LedgerRow] = []
        self.notifier = Notifier(secret, lambda: self.knobs, seed)

    # Read-only views of delivery, so whoever inspects the provider need not know
    # that delivery has its own object.

    @property
    def notifications(self) -> list[Notification]:
        return self.notifier.notifications

    @property
    def attempts(self) -> list[dict[str, Any]]:
        return self.notifier.attempts

    @property
    def pending_tasks(self) -> int:
        return self.notifier.pending_tasks

    # ---- intents ---------------------------------------------------------

    def find_intent(self, intent_id: str) -> Intent:
        intent = self.intents.get(intent_id)
        if intent is None:
            raise ApiError(404, "intent_not_found", f"no intent {intent_id!r}")
        return intent

    def intent_view(self, intent: Intent) -> dict[str, Any]:
        return {
            "intent_id": intent.intent_id,
            "out_trade_no": intent.out_trade_no,
            "amount_fen": intent.amount_fen,
            "status": intent.status,
            "pay_url": f"{self.public_url}/pay/{intent.intent_id}",
            "created_at": rfc3339(intent.created_at),
            "description": intent.description,
        }

    def order_view(self, intent: Intent) -> dict[str, Any]:
        return {
            "intent_id": intent.intent_id,
            "out_trade_no": intent.out_trade_no,
            "amount_fen": intent.amount_fen,
            "status": intent.status,
            "created_at": rfc3339(intent.created_at),
            "paid_at": rfc3339(intent.paid_at) if intent.paid_at is not None else None,
            "refunded_fen": intent.refunded_fen,
        }

    def create_intent(
        self, out_trade_no: str, amount_fen: int, notify_url: str, description: str | None
    ) -> tuple[int, dict[str, Any]]:
        existing = self.by_trade_no.get(out_trade_no)
        if existing is not None:
            if existing.amount_fen != amount_fen:
                raise ApiError(
                    409,
                    "out_trade_no_conflict",
                    f"out_trade_no {out_trade_no!r} already exists with amount_fen "
                    f"{existing.amount_fen}",
                )
            return 200, self.intent_view(existing)
        intent = Intent(
            intent_id=f"pi_{uuid.uuid4().hex}",
            out_trade_no=out_trade_no,
            amount_fen=amount_fen,
            notify_url=notify_url,
            description=description,
            created_at=self.clock(),
        )
        self.intents[intent.intent_id] = intent
        self.by_trade_no[out_trade_no] = intent
        return 201, self.intent_view(intent)

    def open_checkout(self, params: dict[str, str]) -> Intent:
        """The intent a signed checkout link names, opened on first use (Alipay style)."""
        try:
            verify_checkout(self.secret, params)
        except SignatureError as err:
            raise ApiError(400, "bad_signature", str(err)) from None
        intent_id = id_field(params, "intent_id")
        out_trade_no = id_field(params, "out_trade_no")
        notify_url = url_field(params, "notify_url")
        try:
            amount_fen, expires_at = int(params["amount_fen"]), int(params["expires_at"])
        except ValueError:
            raise ApiError(
                422, "validation_error", "amount_fen and expires_at are integers"
            ) from None
        if not 0 < amount_fen <= MAX_AMOUNT_FEN:
            raise ApiError(422, "validation_error", f"amount_fen must be in [1, {MAX_AMOUNT_FEN}]")
        existing = self.intents.get(intent_id) or self.by_trade_no.get(out_trade_no)
        if existing is not None:
            if (existing.intent_id, existing.out_trade_no, existing.amount_fen) != (
                intent_id,
                out_trade_no,
                amount_fen,
            ):
                raise ApiError(
                    409, "out_trade_no_conflict", "the link does not match the existing intent"
                )
            return existing
        if out_trade_no in self.closed_trade_nos:
            raise ApiError(409, "intent_closed", f"order {out_trade_no!r} is closed")
        intent = Intent(
            intent_id=intent_id,
            out_trade_no=out_trade_no,
            amount_fen=amount_fen,
            notify_url=notify_url,
            description=None,
            created_at=self.clock(),
            expires_at=float(expires_at),
        )
        self.intents[intent_id] = intent
        self.by_trade_no[out_trade_no] = intent
        return intent

    def pay(self, intent_id: str) -> dict[str, Any]:
        intent = self.find_intent(intent_id)
        if intent.status == "closed":
            raise ApiError(409, "intent_closed", f"intent {intent_id!r} is closed")
        if intent.status == "created":
            now = self.clock()
            if intent.expires_at is not None and now > intent.expires_at:
                raise ApiError(409, "intent_expired", f"intent {intent_id!r} has expired")
            intent.status = "paid"
            intent.paid_at = now
            self.ledger.append(
                LedgerRow(
                    type="payment",
                    intent_id=intent.intent_id,
                    out_trade_no=intent.out_trade_no,
                    refund_no=None,
                    amount_fen=intent.amount_fen,
                    fee_fen=provider_fee_fen(intent.amount_fen, self.fee_bp),
                    at=now,
                )
            )
            self._notify(intent, PAYMENT_SUCCEEDED, intent.amount_fen, None, now)
        assert intent.paid_at is not None
        return {
            "intent_id": intent.intent_id,
            "out_trade_no": intent.out_trade_no,
            "amount_fen": intent.amount_fen,
            "status": intent.status,
            "paid_at": rfc3339(intent.paid_at),
        }

    def close(self, intent_id: str) -> dict[str, Any]:
        intent = self.find_intent(intent_id)
        if intent.status == "paid":
            raise ApiError(409, "already_paid", f"intent {intent_id!r} is already paid")
        if intent.status == "created":
            intent.status = "closed"
            intent.closed_at = self.clock()
        return {"intent_id": intent.intent_id, "status": intent.status}

    def close_trade(self, out_trade_no: str) -> dict[str, Any]:
        """Close by the merchant's order number, even before any checkout opened it."""
        intent = self.by_trade_no.get(out_trade_no)
        if intent is not None:
            return {"out_trade_no": out_trade_no, **self.close(intent.intent_id)}
        self.closed_trade_nos.add(out_trade_no)
        return {"out_trade_no": out_trade_no, "intent_id": None, "status": "closed"}

    def query_order(self, out_trade_no: str) -> dict[str, Any]:
        intent = self.by_trade_no.get(out_trade_no)
        if intent is None:
            raise ApiError(404, "order_not_found", f"no order {out_trade_no!r}")
        return self.order_view(intent)

    # ---- refunds ---------------------------------------------------------

    @staticmethod
    def refund_view(refund: Refund) -> dict[str, Any]:
        return {
            "refund_no": refund.refund_no,
            "out_trade_no": refund.out_trade_no,
            "intent_id": refund.intent_id,
            "amount_fen": refund.amount_fen,
            "status": refund.status,
            "refunded_at": rfc3339(refund.refunded_at),
        }

    def get_refund(self, refund_no: str) -> dict[str, Any]:
        refund = self.refunds.get(refund_no)
        if refund is None:
            raise ApiError(404, "refund_not_found", f"no refund {refund_no!r}")
        return self.refund_view(refund)

    def refund(
        self, refund_no: str, out_trade_no: str, amount_fen: int
    ) -> tuple[int, dict[str, Any]]:
        existing = self.refunds.get(refund_no)
        if existing is not None:
            if existing.out_trade_no != out_trade_no or existing.amount_fen != amount_fen:
                raise ApiError(
                    409,
                    "refund_no_conflict",
                    f"refund_no {refund_no!r} was used for {existing.amount_fen} fen "
                    f"on {existing.out_trade_no!r}",
                )
            return 200, self.refund_view(existing)
        intent = self.by_trade_no.get(out_trade_no)
        if intent is None:
            raise ApiError(404, "order_not_found", f"no order {out_trade_no!r}")
        if intent.status != "paid":
            raise ApiError(409, "not_paid", f"order {out_trade_no!r} is {intent.status}")
        if intent.refunded_fen + amount_fen > intent.amount_fen:
            raise ApiError(
                409,
                "refund_exceeds_payment",
                f"{amount_fen} fen would exceed the refundable "
                f"{intent.amount_fen - intent.refunded_fen} fen",
            )
        now = self.clock()
        refund = Refund(
            refund_no=refund_no,
            out_trade_no=out_trade_no,
            intent_id=intent.intent_id,
            amount_fen=amount_fen,
            refunded_at=now,
        )
        self.refunds[refund_no] = refund
        intent.refunded_fen += amount_fen
        self.ledger.append(
            LedgerRow(
                type="refund",
                intent_id=intent.intent_id,
                out_trade_no=out_trade_no,
                refund_no=refund_no,
                amount_fen=amount_fen,
                fee_fen=0,
                at=now,
            )
        )
        self._notify(intent, REFUND_SUCCEEDED, amount_fen, refund_no, now)
        return 201, self.refund_view(refund)

    # ---- statements ------------------------------------------------------

    def statement(self, day: date) -> dict[str, Any]:
        rows = [
            {
                "type": row.type,
                "intent_id": row.intent_id,
                "out_trade_no": row.out_trade_no,
                "refund_no": row.refund_no,
                "amount_fen": row.amount_fen,
                "fee_fen": row.fee_fen,
                "at": rfc3339(row.at),
            }
            for row in sorted(self.ledger, key=lambda r: r.at)
            if _utc_date(row.at) == day
        ]
        return {"date": day.isoformat(), "rows": rows}

    # ---- knobs -----------------------------------------------------------

    def update_knobs(self, changes: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(changes) - set(_KNOB_PARSERS))
        if unknown:
            raise ApiError(422, "validation_error", f"unknown knobs: {', '.join(unknown)}")
        # Validate everything before applying anything: all or nothing.
        parsed = {name: _KNOB_PARSERS[name](value) for name, value in changes.items()}
        was_reordering = self.knobs.reorder
        for name, value in parsed.items():
            setattr(self.knobs, name, value)
        if was_reordering and not self.knobs.reorder:
            self.release_held()
        return asdict(self.knobs)

    def reset_knobs(self) -> dict[str, Any]:
        self.knobs = Knobs()
        self.notifier.reseed()
        self.release_held()
        return asdict(self.knobs)

    def release_held(self) -> int:
        """Send the notifications reorder kept back, newest first; how many there were."""
        return self.notifier.release_held()

    # ---- notifications ---------------------------------------------------

    def _notify(
        self, intent: Intent, type_: str, amount_fen: int, refund_no: str | None, at: float
    ) -> None:
        self.notifier.notify(
            type_,
            intent_id=intent.intent_id,
            out_trade_no=intent.out_trade_no,
            amount_fen=amount_fen,
            refund_no=refund_no,
            at=at,
            notify_url=intent.notify_url,
        )
