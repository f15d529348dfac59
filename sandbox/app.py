"""The sandbox payment provider as an aiohttp application.

All state lives in one in-memory `Provider`; restarting the process forgets
everything, which is the point of a sandbox. Handlers read and mutate that
state without awaiting in between, so concurrent requests on the event loop
see each operation as atomic (e.g. two racing refunds cannot both pass the
"does not exceed the payment" check).
"""

from __future__ import annotations

import asyncio
import html
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from sandbox.signing import SIGNATURE_HEADER, SignatureError, sign, verify_checkout

log = logging.getLogger("sandbox")

# WeChat caps merchant order numbers at 32 characters from a small alphabet; a
# little more room here, but the same idea: ids must be safe in a URL path.
_ID_RE = re.compile(r"^[A-Za-z0-9_\-.:|*@]{1,64}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_AMOUNT_FEN = 10_000_000_000  # 100 million yuan; anything larger is a caller bug
MAX_DESCRIPTION_LEN = 256
# Read at most this much of a webhook reply; "success" is all that matters.
_MAX_REPLY_BYTES = 64 * 1024
NOTIFY_TIMEOUT_S = 5.0
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 5.0

PAYMENT_SUCCEEDED = "payment.succeeded"
REFUND_SUCCEEDED = "refund.succeeded"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc_date(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def payment_fee_fen(amount_fen: int) -> int:
    """0.6 % rounded half up to the fen, in integers so no float rounding creeps in."""
    return (amount_fen * 6 + 500) // 1000


def backoff_s(attempt: int) -> float:
    """Pause after failed attempt number `attempt` (1-based): 0.2, 0.4, 0.8 ... capped."""
    # Exponent capped so very large max_attempts cannot overflow the float.
    return min(BACKOFF_BASE_S * 2 ** min(attempt - 1, 16), BACKOFF_CAP_S)


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


@dataclass
class Notification:
    id: str
    type: str
    intent_id: str
    out_trade_no: str
    amount_fen: int
    refund_no: str | None
    at: float
    notify_url: str
    # pending -> delivered | abandoned; "held" while reorder keeps it back.
    state: str = "pending"
    # Serialised once so every attempt and duplicate carries byte-identical
    # content under a fresh signature.
    body: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.body = orjson.dumps(
            {
                "id": self.id,
                "type": self.type,
                "intent_id": self.intent_id,
                "out_trade_no": self.out_trade_no,
                "amount_fen": self.amount_fen,
                "refund_no": self.refund_no,
                "at": rfc3339(self.at),
            }
        )


class Provider:
    """Everything the sandbox knows, plus the webhook delivery machinery."""

    def __init__(self, secret: str, public_url: str, seed: int = 0) -> None:
        if not secret:
            raise ValueError("secret must not be empty")
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        self.seed = seed
        self.rng = random.Random(seed)
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
        self.notifications: list[Notification] = []
        self.attempts: list[dict[str, Any]] = []
        self.held: list[Notification] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._closing = False

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=NOTIFY_TIMEOUT_S),
            headers={"User-Agent": "o2o-payment-sandbox/1"},
        )

    async def stop(self) -> None:
        self._closing = True
        # Loop because a cancelled release task may have spawned a delivery
        # just before it noticed; _spawn refuses new work once closing.
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def pending_tasks(self) -> int:
        return len(self._tasks)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._closing:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        intent_id = _id_field(params, "intent_id")
        out_trade_no = _id_field(params, "out_trade_no")
        notify_url = _url_field(params, "notify_url")
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
                    fee_fen=payment_fee_fen(intent.amount_fen),
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
        # Reseeding makes each test that resets see the same random sequence.
        self.rng = random.Random(self.seed)
        self.release_held()
        return asdict(self.knobs)

    # ---- notifications ---------------------------------------------------

    def _notify(
        self, intent: Intent, type_: str, amount_fen: int, refund_no: str | None, at: float
    ) -> None:
        notification = Notification(
            id=f"evt_{uuid.uuid4().hex}",
            type=type_,
            intent_id=intent.intent_id,
            out_trade_no=intent.out_trade_no,
            amount_fen=amount_fen,
            refund_no=refund_no,
            at=at,
            notify_url=intent.notify_url,
        )
        self.notifications.append(notification)
        if self.knobs.reorder:
            notification.state = "held"
            self.held.append(notification)
        else:
            self._spawn(self._deliver(notification, None))

    def release_held(self) -> int:
        batch = self.held[::-1]
        self.held = []
        if batch:
            self._spawn(self._release(batch))
        return len(batch)

    async def _release(self, batch: list[Notification]) -> None:
        # Concurrent first attempts could still arrive in any order, so each
        # one waits for the previous first attempt to finish; retries after
        # that run independently.
        for notification in batch:
            first_done = asyncio.Event()
            notification.state = "pending"
            self._spawn(self._deliver(notification, first_done))
            await first_done.wait()

    async def _deliver(self, n: Notification, first_done: asyncio.Event | None) -> None:
        try:
            if self.knobs.delay_ms:
                await asyncio.sleep(self.knobs.delay_ms / 1000)
            attempt = 0
            # Knobs are re-read every round so tests can change them mid-flight.
            while attempt < self.knobs.max_attempts:
                attempt += 1
                delivered = await self._attempt(n, attempt)
                if first_done is not None:
                    first_done.set()
                if delivered:
                    n.state = "delivered"
                    for copy in range(1, self.knobs.duplicate + 1):
                        await self._attempt(n, attempt, copy=copy)
                    return
                if attempt < self.knobs.max_attempts:
                    await asyncio.sleep(backoff_s(attempt))
            n.state = "abandoned"
            log.warning("gave up on notification %s after %d attempts", n.id, attempt)
        except Exception:
            log.exception("notification %s crashed", n.id)
        finally:
            if first_done is not None:
                first_done.set()

    async def _attempt(self, n: Notification, attempt: int, copy: int = 0) -> bool:
        # Duplicates imitate a provider re-sending after a lost ack, which is
        # independent of the (already decided) fate of the original.
        if copy == 0 and self.rng.random() < self.knobs.drop_rate:
            self._record(n, attempt, copy, "dropped", None)
            return False
        if self._session is None:
            self._record(n, attempt, copy, "failed", "provider not started")
            return False
        body = n.body
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
        }
        try:
            async with self._session.post(
                n.notify_url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                reply = await _read_capped(resp, _MAX_REPLY_BYTES + 1)
                ok = (
                    resp.status == 200
                    and len(reply) <= _MAX_REPLY_BYTES
                    and reply.decode("utf-8", "replace").strip() == "success"
                )
                detail = None if ok else f"HTTP {resp.status}: {reply[:80]!r}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self._record(n, attempt, copy, "delivered" if ok else "failed", detail)
        return ok

    def _record(
        self, n: Notification, attempt: int, copy: int, outcome: str, detail: str | None
    ) -> None:
        self.attempts.append(
            {
                "id": n.id,
                "type": n.type,
                "intent_id": n.intent_id,
                "out_trade_no": n.out_trade_no,
                "refund_no": n.refund_no,
                "attempt": attempt,
                "copy": copy,
                "outcome": outcome,
                "detail": detail,
                "at": rfc3339(time.time()),
            }
        )


PROVIDER_KEY = web.AppKey("provider", Provider)


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    # A single read() returns whatever chunk has arrived, which may be only
    # part of "success"; keep reading until EOF or the cap.
    buf = bytearray()
    while len(buf) < limit:
        chunk = await resp.content.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


# ---- HTTP layer -------------------------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status)


_HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = _error(exc.status, _HTTP_ERROR_CODES.get(exc.status, "http_error"), exc.reason)
        if "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal_error", "internal error")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return data


def _id_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        raise ApiError(422, "validation_error", f"{name} is required")
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ApiError(
            422, "validation_error", f"{name} must be 1-64 characters of A-Z a-z 0-9 _-.:|*@"
        )
    return value


def _amount_field(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if value is None:
        raise ApiError(422, "validation_error", f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, "validation_error", f"{name} must be an integer number of fen")
    if not 0 < value <= MAX_AMOUNT_FEN:
        raise ApiError(422, "validation_error", f"{name} must be in [1, {MAX_AMOUNT_FEN}]")
    return value


def _url_field(data: dict[str, Any], name: str) -> str:
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


def _provider(request: web.Request) -> Provider:
    return request.app[PROVIDER_KEY]


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def create_intent(request: web.Request) -> web.Response:
    data = await _body(request)
    out_trade_no = _id_field(data, "out_trade_no")
    amount_fen = _amount_field(data, "amount_fen")
    notify_url = _url_field(data, "notify_url")
    description = data.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LEN
    ):
        raise ApiError(
            422,
            "validation_error",
            f"description must be a string of at most {MAX_DESCRIPTION_LEN} characters",
        )
    status, view = _provider(request).create_intent(
        out_trade_no, amount_fen, notify_url, description
    )
    return _json(view, status)


async def get_intent(request: web.Request) -> web.Response:
    provider = _provider(request)
    intent = provider.find_intent(request.match_info["intent_id"])
    return _json(provider.intent_view(intent) | provider.order_view(intent))


async def close_intent(request: web.Request) -> web.Response:
    return _json(_provider(request).close(request.match_info["intent_id"]))


_PAY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sandbox checkout</title></head>
<body>
<h1>Sandbox checkout</h1>
<p>Order {out_trade_no}: {amount}</p>
<p>Status: {status}</p>
<form method="post"><button type="submit">Pay</button></form>
</body></html>
"""


def _checkout_intent(request: web.Request) -> Intent:
    provider = _provider(request)
    intent_id = request.match_info["intent_id"]
    if "sign" in request.query:
        return provider.open_checkout({**request.query, "intent_id": intent_id})
    return provider.find_intent(intent_id)


async def pay_page(request: web.Request) -> web.Response:
    # Lets a person open pay_url in a browser during demos; machines POST.
    intent = _checkout_intent(request)
    page = _PAY_PAGE.format(
        out_trade_no=html.escape(intent.out_trade_no),
        amount=f"¥{intent.amount_fen // 100}.{intent.amount_fen % 100:02d}",
        status=html.escape(intent.status),
    )
    return web.Response(text=page, content_type="text/html")


async def pay(request: web.Request) -> web.Response:
    # Whatever body the customer's client sends is irrelevant to paying.
    return _json(_provider(request).pay(_checkout_intent(request).intent_id))


async def close_order(request: web.Request) -> web.Response:
    return _json(_provider(request).close_trade(request.match_info["out_trade_no"]))


async def query_order(request: web.Request) -> web.Response:
    return _json(_provider(request).query_order(request.match_info["out_trade_no"]))


async def create_refund(request: web.Request) -> web.Response:
    data = await _body(request)
    refund_no = _id_field(data, "refund_no")
    out_trade_no = _id_field(data, "out_trade_no")
    amount_fen = _amount_field(data, "amount_fen")
    provider = _provider(request)
    status, view = provider.refund(refund_no, out_trade_no, amount_fen)
    # The refund is committed before the pause, like a provider whose reply
    # is slow: a client that times out and retries must rely on refund_no.
    latency_ms = provider.knobs.refund_latency_ms
    if latency_ms:
        await asyncio.sleep(latency_ms / 1000)
    return _json(view, status)


async def get_refund(request: web.Request) -> web.Response:
    return _json(_provider(request).get_refund(request.match_info["refund_no"]))


async def statements(request: web.Request) -> web.Response:
    raw = request.query.get("date", "")
    try:
        if not _DATE_RE.match(raw):
            raise ValueError(raw)
        day = date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_date", "date must be YYYY-MM-DD") from None
    return _json(_provider(request).statement(day))


async def get_knobs(request: web.Request) -> web.Response:
    return _json(asdict(_provider(request).knobs))


async def update_knobs(request: web.Request) -> web.Response:
    data = await _body(request)
    return _json(_provider(request).update_knobs(data))


async def flush_knobs(request: web.Request) -> web.Response:
    return _json({"released": _provider(request).release_held()})


async def reset_knobs(request: web.Request) -> web.Response:
    return _json(_provider(request).reset_knobs())


async def list_notifications(request: web.Request) -> web.Response:
    attempts = _provider(request).attempts
    for key in ("id", "type", "out_trade_no", "outcome"):
        wanted = request.query.get(key)
        if wanted is not None:
            attempts = [a for a in attempts if a[key] == wanted]
    return _json({"attempts": attempts})


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    provider = app[PROVIDER_KEY]
    await provider.start()
    yield
    await provider.stop()


def make_app(secret: str, public_url: str, seed: int = 0) -> web.Application:
    """Build the sandbox; `public_url` is how customers reach it (used in pay_url)."""
    app = web.Application(middlewares=[_error_middleware])
    app[PROVIDER_KEY] = Provider(secret, public_url, seed)
    app.cleanup_ctx.append(_lifecycle)
    router = app.router
    router.add_get("/health", health)
    router.add_post("/v1/intents", create_intent)
    router.add_get("/v1/intents/{intent_id}", get_intent)
    router.add_post("/v1/intents/{intent_id}/close", close_intent)
    router.add_get("/pay/{intent_id}", pay_page)
    router.add_post("/pay/{intent_id}", pay)
    router.add_get("/v1/orders/{out_trade_no}", query_order)
    router.add_post("/v1/orders/{out_trade_no}/close", close_order)
    router.add_post("/v1/refunds", create_refund)
    router.add_get("/v1/refunds/{refund_no}", get_refund)
    router.add_get("/v1/statements", statements)
    router.add_get("/_knobs", get_knobs)
    router.add_post("/_knobs", update_knobs)
    router.add_post("/_knobs/flush", flush_knobs)
    router.add_post("/_knobs/reset", reset_knobs)
    router.add_get("/_notifications", list_notifications)
    return app
