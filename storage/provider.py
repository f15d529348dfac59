"""The payment provider's protocol: what the platform and the stand-in provider share.

Both sides import this module and nothing else of each other: the checkout link the
platform signs and the provider verifies, the notification signature the provider
makes and the platform checks, the provider's fee, and the platform's client of the
provider's API.

Notification header, Stripe style: ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` where the
MAC covers ``f"{t}."`` followed by the raw request body. Binding the timestamp
into the MAC lets receivers reject replays of old, correctly signed bodies.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

# Re-exported: the stand-in provider charges the fee the platform books.
from domain.orders import pay_fen_of
from domain.payments import FEE_BP as FEE_BP
from domain.payments import provider_fee_fen as provider_fee_fen

SIGNATURE_HEADER = "X-Sandbox-Signature"
DEFAULT_TOLERANCE_S = 300

# Far more digits than any real unix time; bounds the work of parsing hostile input.
_MAX_TIMESTAMP_DIGITS = 12


class SignatureError(Exception):
    """Raised by `verify`; `reason` is machine readable.

    One of "malformed", "bad_signature", "too_old", "in_future".
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


def _check_secret(secret: str) -> None:
    # An empty key would make every forged signature trivially computable.
    if not secret:
        raise ValueError("signing secret must not be empty")


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Return the header value for `body` signed at `timestamp` (unix seconds)."""
    _check_secret(secret)
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def _parse(header: str | None) -> tuple[int, list[str]]:
    if not isinstance(header, str) or not header.strip():
        raise SignatureError("malformed", "signature header missing")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("malformed", f"signature element without '=': {part!r}")
        key, value = key.strip(), value.strip()
        if key == "t":
            if timestamp is not None:
                raise SignatureError("malformed", "more than one timestamp")
            if not (value.isascii() and value.isdigit() and len(value) <= _MAX_TIMESTAMP_DIGITS):
                raise SignatureError("malformed", "timestamp is not a unix time in seconds")
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
        # Other schemes (v0, future v2) are ignored so the format can evolve.
    if timestamp is None:
        raise SignatureError("malformed", "timestamp missing")
    if not candidates:
        raise SignatureError("malformed", "v1 signature missing")
    return timestamp, candidates


def verify(
    secret: str,
    body: bytes,
    header: str | None,
    now: float,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> int:
    """Check `header` against `body`; return its timestamp or raise `SignatureError`.

    Several ``v1=`` entries are accepted (any match wins) so a sender can sign
    with an old and a new secret while rotating keys.
    """
    _check_secret(secret)
    timestamp, candidates = _parse(header)
    expected = _digest(secret, body, timestamp).encode()
    matched = False
    for candidate in candidates:
        # No early exit, so timing does not reveal which entry matched.
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    if not matched:
        raise SignatureError("bad_signature", "signature does not match body")
    if timestamp < now - tolerance_s:
        raise SignatureError("too_old", f"timestamp {timestamp} is older than {tolerance_s}s")
    if timestamp > now + tolerance_s:
        raise SignatureError(
            "in_future", f"timestamp {timestamp} is more than {tolerance_s}s ahead"
        )
    return timestamp


# -- checkout links ----------------------------------------------------------------
#
# The merchant (here: the platform) signs the checkout parameters itself, the way
# Alipay's page and wap pay work, so no call to the provider is needed before the
# customer pays: the provider opens the intent when the signed link is first used.

CHECKOUT_FIELDS = ("intent_id", "out_trade_no", "amount_fen", "notify_url", "expires_at")


def _checkout_message(params: dict[str, str]) -> bytes:
    return "&".join(f"{name}={params[name]}" for name in CHECKOUT_FIELDS).encode()


def sign_checkout(secret: str, params: dict[str, str]) -> str:
    """The `sign` parameter of a checkout link: HMAC-SHA256 over its fields in order."""
    _check_secret(secret)
    return hmac.new(secret.encode(), _checkout_message(params), hashlib.sha256).hexdigest()


def verify_checkout(secret: str, params: dict[str, str]) -> None:
    """Raise `SignatureError` unless every field is present and `sign` matches them."""
    _check_secret(secret)
    if any(not params.get(name) for name in (*CHECKOUT_FIELDS, "sign")):
        raise SignatureError("malformed", "checkout link is missing a signed field")
    expected = sign_checkout(secret, params).encode()
    if not hmac.compare_digest(expected, params["sign"].encode("utf-8", "replace")):
        raise SignatureError("bad_signature", "checkout link signature does not match")


def intent_id_of(order_id: str) -> str:
    return f"pi_{order_id}"


class Checkout:
    """Signs an order's pay link.

    The provider opens the intent when the customer first follows the signed link (the
    way Alipay's page and wap pay work), so placing an order calls neither the provider
    nor a payment shard: the link is a pure function of the order and the settings, and
    the same link comes out wherever it is computed (placement reply, order view,
    payment shard).
    """

    def __init__(
        self, secret: str, provider_url: str, notify_url: str, payment_timeout_s: int
    ) -> None:
        self.secret = secret
        self.provider_url = provider_url
        self.notify_url = notify_url
        self.payment_timeout_s = payment_timeout_s

    def link(self, order_id: str, amount_fen: int, placed_at: float) -> dict[str, str]:
        """`{"intent_id", "pay_url"}` for an order; the link dies with the payment timeout."""
        params = {
            "intent_id": intent_id_of(order_id),
            "out_trade_no": order_id,
            "amount_fen": str(amount_fen),
            "notify_url": self.notify_url,
            "expires_at": str(int(placed_at) + self.payment_timeout_s),
        }
        query = {k: v for k, v in params.items() if k != "intent_id"}
        query["sign"] = sign_checkout(self.secret, params)
        return {
            "intent_id": params["intent_id"],
            "pay_url": f"{self.provider_url}/pay/{params['intent_id']}?{urlencode(query)}",
        }

    def link_of(self, order: dict[str, Any]) -> dict[str, str]:
        """The same link for an order as stored (`Order.as_dict()`): for the total it was
        placed with, even after a cheaper door lowered it before payment (the customer
        holds that link; the difference is refunded once paid)."""
        placed_at = datetime.fromisoformat(order["placed_at"]).timestamp()
        return self.link(order["id"], pay_fen_of(order), placed_at)


# -- the platform's client of the provider's API -------------------------------------


class ProviderError(Exception):
    """The provider could not be reached or answered with a server error."""


def provider_time(value: str | None) -> datetime:
    """A time the provider wrote (RFC 3339, `Z` for UTC); now if it wrote none."""
    if not value:
        return datetime.now(UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class ProviderClient:
    """Queries, closes, refunds and statements, retried with back-off on server errors."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                base_url=self.base_url,
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

    async def order(self, order_id: str) -> tuple[int, Any]:
        """What the provider knows of an order's payment (404: its link was never used)."""
        return await self._call("GET", f"/v1/orders/{order_id}")

    async def close(self, order_id: str) -> int:
        """Close an order's payment by its number (409: it was paid at the last moment)."""
        status, _ = await self._call("POST", f"/v1/orders/{order_id}/close")
        return status

    async def refund(self, refund_no: str, order_id: str, amount_fen: int) -> tuple[int, Any]:
        """Ask for a refund; the refund number makes a repeat return the first."""
        return await self._call(
            "POST",
            "/v1/refunds",
            {"refund_no": refund_no, "out_trade_no": order_id, "amount_fen": amount_fen},
        )

    async def statement(self, day: date) -> tuple[int, Any]:
        return await self._call("GET", f"/v1/statements?date={day.isoformat()}")
