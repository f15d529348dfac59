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

# Re-exported: the stand-in provider charges the fee the platform books.
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
