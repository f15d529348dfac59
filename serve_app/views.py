"""The order as the API shows it, built from what the stores read; no I/O here."""

from __future__ import annotations

from typing import Any

from domain.errands import shown_to
from storage.orders import OrderRead
from storage.provider import Checkout


def order(read: OrderRead, checkout: Checkout, role: str) -> dict[str, Any]:
    """The order with its rider's position, its eta and its payment, as `role` may read
    it (an errand's proof codes are its customer's only)."""
    stored = shown_to(read.order, role)
    view = {k: v for k, v in stored.items() if k not in ("rider_id", "pickup")}
    rider_id = stored.get("rider_id")
    if rider_id:
        lat, lng = read.rider_position or (None, None)
        view["rider"] = {"id": rider_id, "lat": lat, "lng": lng}
    else:
        view["rider"] = None
    view["eta"] = read.eta if rider_id else None
    # Nothing happened to the payment yet: its pay link is all there is.
    payment = read.payment or {
        **checkout.link_of(stored),
        "status": "created",
        "refunded_fen": 0,
    }
    view["payment"] = {
        "intent_id": payment["intent_id"],
        "pay_url": payment["pay_url"],
        "status": payment["status"],
        "refunded_fen": payment["refunded_fen"],
    }
    return view


def new_order(stored: dict[str, Any], payment: dict[str, str]) -> dict[str, Any]:
    """A new order: no rider yet, and its payment came with the placement."""
    view = {k: v for k, v in stored.items() if k not in ("rider_id", "pickup")}
    view.update(rider=None, eta=None, payment=payment)
    return view
