"""The pay link the platform signs for each order, checked as the provider checks it."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest

from storage.provider import Checkout, SignatureError, verify_checkout
from storage.settings import Settings

SETTINGS = Settings(payment_secret="s3cret", sandbox_port=8100, payment_timeout_s=900)
CHECKOUT = Checkout("s3cret", SETTINGS.sandbox_url, SETTINGS.notify_url, 900)
checkout = CHECKOUT.link


def link_params(pay_url: str) -> dict[str, str]:
    parts = urlsplit(pay_url)
    return {"intent_id": parts.path.rsplit("/", 1)[1], **dict(parse_qsl(parts.query))}


def test_the_link_carries_the_order_and_verifies_with_the_shared_secret() -> None:
    link = checkout("o_abc", 2345, placed_at=1_700_000_000.7)
    assert link["intent_id"] == "pi_o_abc"
    assert link["pay_url"].startswith(f"{SETTINGS.sandbox_url}/pay/pi_o_abc?")
    params = link_params(link["pay_url"])
    assert params["out_trade_no"] == "o_abc"
    assert params["amount_fen"] == "2345"
    assert params["expires_at"] == str(1_700_000_000 + 900)
    assert params["notify_url"] == f"{SETTINGS.platform_url}/v1/payments/callback"
    verify_checkout("s3cret", params)


def test_the_same_order_always_gets_the_same_link() -> None:
    assert checkout("o_abc", 2345, 1_700_000_000.0) == checkout("o_abc", 2345, 1_700_000_000.0)


@pytest.mark.parametrize(
    "change",
    [{"amount_fen": "1"}, {"out_trade_no": "o_other"}, {"expires_at": "9999999999"}],
)
def test_a_changed_field_breaks_the_signature(change: dict[str, str]) -> None:
    params = link_params(checkout("o_abc", 2345, 1_700_000_000.0)["pay_url"])
    with pytest.raises(SignatureError):
        verify_checkout("s3cret", params | change)
    with pytest.raises(SignatureError):
        verify_checkout("another-secret", params)


def test_a_stored_order_gets_the_link_it_was_placed_with() -> None:
    placed = datetime(2026, 11, 29, 12, 0, 30, tzinfo=UTC)
    stored = {"id": "o_abc", "amounts": {"total_fen": 2345}, "placed_at": placed.isoformat()}
    assert CHECKOUT.link_of(stored) == checkout("o_abc", 2345, placed.timestamp())
