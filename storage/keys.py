"""Every Redis key the platform writes, in one place."""

from __future__ import annotations


def order(order_id: str) -> str:
    return f"order:{order_id}"


def orders_of(role: str, owner_id: str) -> str:
    return f"orders:{role}:{owner_id}"


def merchant(merchant_id: str) -> str:
    return f"merchant:{merchant_id}"


def menu(merchant_id: str) -> str:
    return f"menu:{merchant_id}"


def stock(merchant_id: str) -> str:
    return f"stock:{merchant_id}"


MERCHANT_GEO = "geo:merchants"
MERCHANT_IDS = "merchants"
MERCHANT_MAX_REACH = "merchants:max_reach_m"
# Bumped by every change of any merchant profile; read paths cache profiles until it moves.
MERCHANTS_VERSION = "merchants:version"


def inbox(role: str, owner_id: str) -> str:
    return f"inbox:{role}:{owner_id}"


OPS_INBOX = "inbox:ops:all"


def idempotency(scope: str, key: str) -> str:
    return f"idem:{scope}:{key}"


def rider(rider_id: str) -> str:
    return f"rider:{rider_id}"


def rider_orders(rider_id: str) -> str:
    """The orders a rider carries now (assigned and not yet delivered)."""
    return f"rider:{rider_id}:orders"


def rider_offer(rider_id: str) -> str:
    """The offer a rider has not answered yet (expires with the offer)."""
    return f"rider:{rider_id}:offer"


def zone_riders(zone: str) -> str:
    return f"zone:{zone}:riders"


def offer(offer_id: str) -> str:
    return f"offer:{offer_id}"


def dispatch_waiting(zone: str) -> str:
    return f"dispatch:waiting:{zone}"


# The zones with orders waiting for a rider, so that the retry round and the dashboard
# find them without scanning the keyspace (which grows with every order kept).
WAITING_ZONES = "dispatch:zones_waiting"


def payment(order_id: str) -> str:
    return f"payment:{order_id}"


# Orders awaiting payment, scored by when the provider is next asked about each.
PAYMENTS_DUE = "payments:pending"


def coupon(code: str) -> str:
    return f"coupon:{code}"


def coupon_claims(code: str) -> str:
    return f"coupon:{code}:claims"
