"""Every Redis key and Pub/Sub channel the platform uses, in one place.

Only the stores of `storage/` build keys; nothing else names one.
"""

from __future__ import annotations

from datetime import date

# -- orders ------------------------------------------------------------------------


def order(order_id: str) -> str:
    return f"order:{order_id}"


def orders_of(role: str, owner_id: str) -> str:
    return f"orders:{role}:{owner_id}"


# One gate per order across all hosts, so a customer hears of its rider at most once
# per interval, whichever zone the rider is in.
def location_gate(order_id: str) -> str:
    return f"gate:location:{order_id}"


# Paid orders awaiting their merchant's answer, scored by their accept deadline.
ACCEPT_DEADLINES = "orders:accept_deadlines"

# -- merchants ---------------------------------------------------------------------


def merchant(merchant_id: str) -> str:
    return f"merchant:{merchant_id}"


def menu(merchant_id: str) -> str:
    return f"menu:{merchant_id}"


def stock(merchant_id: str) -> str:
    return f"stock:{merchant_id}"


def merchant_volume(merchant_id: str) -> str:
    """Captured fen per month (`YYYYMM` fields): what tiered split plans are chosen by."""
    return f"merchant:{merchant_id}:volume"


MERCHANT_GEO = "geo:merchants"
MERCHANT_MAX_REACH = "merchants:max_reach_m"
# Bumped by every change of any merchant profile; read paths cache profiles until it moves.
MERCHANTS_VERSION = "merchants:version"


def menu_channel(merchant_id: str) -> str:
    """Where menu changes are announced to the terminals viewing a merchant."""
    return f"notify:menu:{merchant_id}"


# -- riders, zones, offers and dispatch --------------------------------------------


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


def offer_tried(order_id: str) -> str:
    """The riders an order was offered to, who are not asked again before a retry round."""
    return f"dispatch:{order_id}:tried"


def dispatch_waiting(zone: str) -> str:
    return f"dispatch:waiting:{zone}"


# The zones with orders waiting for a rider, so that the retry round and the dashboard
# find them without scanning the keyspace (which grows with every order kept).
WAITING_ZONES = "dispatch:zones_waiting"

# -- payments and the ledger -------------------------------------------------------


def payment(order_id: str) -> str:
    return f"payment:{order_id}"


# Orders awaiting payment, scored by when the provider is next asked about each.
PAYMENTS_DUE = "payments:pending"

LEDGER_BALANCES = "ledger:balances"
LEDGER_JOURNAL = "ledger:journal"


def ledger_txn(txn_id: str) -> str:
    return f"ledger:txn:{txn_id}"


def ledger_of_order(order_id: str) -> str:
    return f"ledger:order:{order_id}"


def ledger_of_day(day: date) -> str:
    return f"ledger:day:{day.isoformat()}"


def ledger_of_merchant_day(merchant_id: str, day: date) -> str:
    return f"ledger:merchant:{merchant_id}:{day.isoformat()}"


# Named by a transaction that books no payment record.
NO_RECORD = "ledger:no-record"

# -- coupons -----------------------------------------------------------------------


def coupon(code: str) -> str:
    return f"coupon:{code}"


def coupon_claims(code: str) -> str:
    return f"coupon:{code}:claims"


# -- terminals ---------------------------------------------------------------------


def inbox(role: str, owner_id: str) -> str:
    """A terminal's event stream; operations share one."""
    return OPS_INBOX if role == "ops" else f"inbox:{role}:{owner_id}"


OPS_INBOX = "inbox:ops:all"


def notify_channel(inbox_key: str) -> str:
    """Where each event appended to an inbox is announced, for the replicas' readers."""
    return f"notify:{inbox_key}"


def mailbox(kind: str, shard: int) -> str:
    """The mailbox of one shard of an entity kind, read by the host that owns the shard."""
    return f"mailbox:{kind}:{shard}"


# Open offers by when they expire (`<zone> <offer id>`), so an expiry survives its host.
OFFER_EXPIRIES = "offers:expiries"


def order_offer(order_id: str) -> str:
    """The offer open for an order now, if any: one question about an order at a time."""
    return f"dispatch:{order_id}:offer"


def coupon_orders(code: str) -> str:
    """The orders holding a use of a coupon, so each use goes back once."""
    return f"coupon:{code}:orders"


def fault(name: str) -> str:
    """A fault armed by a test (`O2O_FAULT_INJECTION` only)."""
    return f"fault:{name}"


def idempotency(scope: str, key: str) -> str:
    return f"idem:{scope}:{key}"


# -- operations' figures -----------------------------------------------------------


def metrics_minute(minute: int) -> str:
    return f"metrics:m:{minute}"


def metrics_zones(minute: int) -> str:
    return f"metrics:zones:{minute}"


METRICS_CUSTOMER_ORDERS = "metrics:customer_orders"
METRICS_CUSTOMERS = "metrics:customers"
METRICS_REPEAT_CUSTOMERS = "metrics:repeat_customers"
