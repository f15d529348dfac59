"""An order's pay link, signed by the platform.

The provider opens the intent when the customer first follows the signed link (the
way Alipay's page and wap pay work), so placing an order calls neither the provider
nor a payment shard: the link is a pure function of the order and the settings, and
the same link comes out wherever it is computed (placement reply, order view,
payment shard).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from cluster.settings import Settings
from sandbox.signing import sign_checkout


def intent_id_of(order_id: str) -> str:
    return f"pi_{order_id}"


def checkout(
    settings: Settings, order_id: str, amount_fen: int, placed_at: float
) -> dict[str, str]:
    """`{"intent_id", "pay_url"}` for an order; the link dies with the payment timeout."""
    params = {
        "intent_id": intent_id_of(order_id),
        "out_trade_no": order_id,
        "amount_fen": str(amount_fen),
        "notify_url": f"{settings.platform_url}/v1/payments/callback",
        "expires_at": str(int(placed_at) + settings.payment_timeout_s),
    }
    query = {k: v for k, v in params.items() if k != "intent_id"}
    query["sign"] = sign_checkout(settings.payment_secret, params)
    return {
        "intent_id": params["intent_id"],
        "pay_url": f"{settings.sandbox_url}/pay/{params['intent_id']}?{urlencode(query)}",
    }


def checkout_of(settings: Settings, order: dict[str, Any]) -> dict[str, str]:
    """The same link for an order as stored (`Order.as_dict()`)."""
    placed_at = datetime.fromisoformat(order["placed_at"]).timestamp()
    return checkout(settings, order["id"], order["amounts"]["total_fen"], placed_at)
