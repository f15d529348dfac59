"""Every Redis key and Pub/Sub channel the platform uses, and the hash tag each carries.

Only the stores of `storage/` build keys; nothing else names one.

**One script, one slot.** On a Redis Cluster a script or a MULTI may touch keys of one
hash slot only, and a key's slot is the hash of its `{tag}`. So every key that a
change writes together with others carries the tag of the entity shard that owns it:

- `{m:S}`, merchant shard S: profiles, menus and stock; the merchants' orders (order
  hash, location gate, each merchant's order index and inbox) and accept deadlines;
  the payments, payment due times and ledger of those orders (balances, journal and
  day indexes per shard, merchant volume); the merchant and payment mailboxes and
  outboxes of shard S. An order's id names its merchant's shard (`o<S>_...`) and the
  payment shard of an order is that same shard, so an order change with its stock,
  and a payment with its ledger posting, are each one script.
- `{z:S}`, zone shard S: each zone's GEO set of online riders, the offers
  (`of<S>_...`) and their expiries, who was asked about an order, the orders waiting
  for a rider, the rider-zone mailbox and outbox: an offer and its timer are one
  transaction.
- `{r:<rider>}`: one rider's position and load, the orders it carries, its open
  offer, its order index and inbox: what dispatch reads of a rider changes in one step.
- `{c:<customer>}`: one customer's order index and inbox, and its address book (a change
  and its event on that inbox are one script). `{ops}`: the operations inbox,
  and the host layout (how many hosts of each kind, pinned shards, handover marks).
- `{geo}`: the city's merchant GEO index, widest reach and profile version, which
  nearby search reads together.
- `{cp:<code>}`: one coupon, its claims and the orders holding a use (a claim is one
  script).
- `{c:<customer>}` also holds where the customer is for promotions (its home cell and
  the cell its socket reported) and the promotions it was told of, beside its inbox:
  telling a customer of a promotion once is one script in its slot.
- `{h:<cell>}`: the customers to reach in one h3 cell at the zones' resolution (those
  registered to it, those whose socket reported it), which a promotion's push scans.
- `{promo}`: every promotion, the queue of pushes, each cell's active promotions and
  the lease of the one process pushing: publishing is one script. Promotions are few
  (operations publish a handful a day), so one slot holds them all.
- Risk checks (`storage/risk.py`): a customer's recent orders and failed payments in
  `{c:<customer>}`, a device's in `{d:<device>}` (each counted by one script in its
  own slot, side by side); which device placed an order, and a merchant's money of
  the day, in the order's `{m:S}` beside its payment. The review queue is `{ops}`:
  each hold writes its review there through its shard's outbox, in the hold's own
  script, and so does each decision.

What a change must also do in another slot (an order event for the customer's, the
rider's and operations' inboxes, their order indexes, a follow-up in another shard's
mailbox, a rider's load when assigned) is an entry in the writing shard's **outbox**,
written in the change's own script; the host that owns the shard relays it
(`storage/outbox.py`), idempotently, and deletes it after. Keys without a tag
(operations' per-minute figures, idempotency records, faults) are written alone, never
with others in one step.

The shard count is part of the layout: it cannot change without moving the data, so it
is a constant here rather than a setting.
"""

from __future__ import annotations

import hashlib
from datetime import date

SHARDS = 64


def shard_of(entity_id: str) -> int:
    """The shard an entity belongs to, fixed for the life of the data."""
    digest = hashlib.blake2b(entity_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SHARDS


def _shard_in(entity_id: str, prefix: str) -> int:
    """The shard written in an id made by `new_order_id` / `new_offer_id`; any other
    string (someone's guess) hashes to some shard, where nothing is found under it."""
    head, sep, _ = entity_id.partition("_")
    digits = head.removeprefix(prefix)
    if sep and head.startswith(prefix) and digits.isascii() and digits.isdigit():
        shard = int(digits)
        if shard < SHARDS and str(shard) == digits:
            return shard
    return shard_of(entity_id)


def tag_of(key: str) -> str:
    """The part of a key its slot is computed from, by the server's own rule: what is
    between the first `{` and the next `}`, unless that is empty; else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def shard_tag(kind: str, shard: int) -> str:
    """The tag of a host kind's shard: payments share their merchants' shards."""
    return f"{{z:{shard}}}" if kind == "rider_zone" else f"{{m:{shard}}}"


def _merchant_tag(merchant_id: str) -> str:
    return f"{{m:{shard_of(merchant_id)}}}"


def _party_tag(role: str, owner_id: str) -> str:
    if role == "merchant":
        return _merchant_tag(owner_id)
    if role == "ops":
        return "{ops}"
    return f"{{{role[0]}:{owner_id}}}"


# -- orders ------------------------------------------------------------------------


def new_order_id(merchant_id: str, unique: str) -> str:
    """An order id that names its merchant's shard, so every key of the order is known
    from the id alone."""
    return f"o{shard_of(merchant_id)}_{unique}"


def order_shard(order_id: str) -> int:
    return _shard_in(order_id, "o")


def _order_tag(order_id: str) -> str:
    return f"{{m:{order_shard(order_id)}}}"


def order(order_id: str) -> str:
    return f"order:{_order_tag(order_id)}:{order_id}"


def orders_of(role: str, owner_id: str) -> str:
    return f"orders:{role}:{_party_tag(role, owner_id)}:{owner_id}"


# One gate per order across all hosts, so a customer hears of its rider at most once
# per interval, whichever zone the rider is in.
def location_gate(order_id: str) -> str:
    return f"gate:location:{_order_tag(order_id)}:{order_id}"


def accept_deadlines(shard: int) -> str:
    """Paid orders of a merchant shard awaiting their merchant's answer, by deadline."""
    return f"orders:accept_deadlines:{{m:{shard}}}"


# -- merchants ---------------------------------------------------------------------


def merchant(merchant_id: str) -> str:
    return f"merchant:{_merchant_tag(merchant_id)}:{merchant_id}"


def menu(merchant_id: str) -> str:
    return f"menu:{_merchant_tag(merchant_id)}:{merchant_id}"


def stock(merchant_id: str) -> str:
    return f"stock:{_merchant_tag(merchant_id)}:{merchant_id}"


def merchant_volume(merchant_id: str) -> str:
    """Captured fen per month (`YYYYMM` fields): what tiered split plans are chosen by."""
    return f"merchant:{_merchant_tag(merchant_id)}:{merchant_id}:volume"


MERCHANT_GEO = "geo:merchants:{geo}"
MERCHANT_MAX_REACH = "merchants:max_reach_m:{geo}"
# Bumped by every change of any merchant profile; read paths cache profiles until it moves.
MERCHANTS_VERSION = "merchants:version:{geo}"


def menu_channel(merchant_id: str) -> str:
    """Where menu changes are announced to the terminals viewing a merchant."""
    return f"notify:menu:{merchant_id}"


# -- riders, zones, offers and dispatch --------------------------------------------


def _zone_tag(zone: str) -> str:
    return f"{{z:{shard_of(zone)}}}"


def rider(rider_id: str) -> str:
    return f"rider:{{r:{rider_id}}}"


def rider_orders(rider_id: str) -> str:
    """The orders a rider carries now (assigned and not yet delivered)."""
    return f"rider:{{r:{rider_id}}}:orders"


def rider_offer(rider_id: str) -> str:
    """The offer a rider has not answered yet (expires with the offer)."""
    return f"rider:{{r:{rider_id}}}:offer"


def zone_riders(zone: str) -> str:
    return f"zone:{_zone_tag(zone)}:{zone}:riders"


def new_offer_id(zone: str, unique: str) -> str:
    """An offer id that names its zone's shard, where the offer is kept."""
    return f"of{shard_of(zone)}_{unique}"


def offer(offer_id: str) -> str:
    return f"offer:{{z:{_shard_in(offer_id, 'of')}}}:{offer_id}"


def offer_tried(zone: str, order_id: str) -> str:
    """The riders an order was offered to, who are not asked again before a retry round."""
    return f"dispatch:{_zone_tag(zone)}:{order_id}:tried"


def order_offer(zone: str, order_id: str) -> str:
    """The offer open for an order now, if any: one question about an order at a time."""
    return f"dispatch:{_zone_tag(zone)}:{order_id}:offer"


def dispatch_waiting(zone: str) -> str:
    return f"dispatch:waiting:{_zone_tag(zone)}:{zone}"


def waiting_zones(shard: int) -> str:
    """The zones of a shard with orders waiting for a rider, so that the retry round and
    the dashboard find them without scanning the keyspace."""
    return f"dispatch:zones_waiting:{{z:{shard}}}"


def waiting_zones_of(zone: str) -> str:
    return waiting_zones(shard_of(zone))


def offer_expiries(shard: int) -> str:
    """A zone shard's open offers by when they expire (`<zone> <offer id>`)."""
    return f"offers:expiries:{{z:{shard}}}"


def offer_expiries_of(zone: str) -> str:
    return offer_expiries(shard_of(zone))


# -- payments and the ledger -------------------------------------------------------


def payment(order_id: str) -> str:
    return f"payment:{_order_tag(order_id)}:{order_id}"


def payments_due(shard: int) -> str:
    """A shard's orders awaiting payment, by when the provider is next asked about each."""
    return f"payments:due:{{m:{shard}}}"


def payments_due_of(order_id: str) -> str:
    return payments_due(order_shard(order_id))


def ledger_balances(shard: int) -> str:
    return f"ledger:balances:{{m:{shard}}}"


def ledger_journal(shard: int) -> str:
    return f"ledger:journal:{{m:{shard}}}"


def ledger_txn(order_id: str, txn_id: str) -> str:
    return f"ledger:txn:{_order_tag(order_id)}:{txn_id}"


def ledger_of_order(order_id: str) -> str:
    return f"ledger:order:{_order_tag(order_id)}:{order_id}"


def ledger_of_day(shard: int, day: date) -> str:
    return f"ledger:day:{{m:{shard}}}:{day.isoformat()}"


def ledger_of_merchant_day(merchant_id: str, day: date) -> str:
    return f"ledger:merchant:{_merchant_tag(merchant_id)}:{merchant_id}:{day.isoformat()}"


def no_record(shard: int) -> str:
    """Named by a transaction that books no payment record."""
    return f"ledger:no-record:{{m:{shard}}}"


# -- coupons -----------------------------------------------------------------------


def coupon(code: str) -> str:
    return f"coupon:{{cp:{code}}}"


def coupon_claims(code: str) -> str:
    return f"coupon:{{cp:{code}}}:claims"


def coupon_orders(code: str) -> str:
    """The orders holding a use of a coupon, so each use goes back once."""
    return f"coupon:{{cp:{code}}}:orders"


# -- terminals ---------------------------------------------------------------------


def inbox(role: str, owner_id: str) -> str:
    """A terminal's event stream; operations share one."""
    if role == "ops":
        return OPS_INBOX
    return f"inbox:{role}:{_party_tag(role, owner_id)}:{owner_id}"


OPS_INBOX = "inbox:ops:{ops}"


def address_book(customer_id: str) -> str:
    """A customer's address book (sealed addresses and its version), beside its inbox."""
    return f"addresses:{{c:{customer_id}}}:{customer_id}"


def notify_channel(inbox_key: str) -> str:
    """Where each event appended to an inbox is announced, for the replicas' readers."""
    return f"notify:{inbox_key}"


# -- customers' cells and regional promotions ----------------------------------------


def customer_place(customer_id: str) -> str:
    """A customer's home cell and the cell its socket last reported (with until when)."""
    return f"customer:{{c:{customer_id}}}:place"


def customer_promotions(customer_id: str) -> str:
    """The promotions a customer was told of, by when they end: each is told once."""
    return f"promotions:told:{{c:{customer_id}}}"


def cell_customers(cell: str) -> str:
    """The customers to reach in a cell: `h:<id>` registered there (score +inf),
    `p:<id>` connected there (score: until when the report counts)."""
    return f"cell:customers:{{h:{cell}}}:{cell}"


def promotion(promotion_id: str) -> str:
    """A promotion and its push's progress (cursor and counts)."""
    return f"promotion:{{promo}}:{promotion_id}"


def cell_promotions(cell: str) -> str:
    """A cell's promotions by when they end, for the customers who read them."""
    return f"promotions:cell:{{promo}}:{cell}"


# The pushes to work through, by when each may start; and who works them now.
PROMOTION_JOBS = "promotions:jobs:{promo}"
PROMOTION_PUSHER = "promotions:pusher:{promo}"


# -- entity shards' mailboxes and outboxes -----------------------------------------


def mailbox(kind: str, shard: int) -> str:
    """The mailbox of one shard of an entity kind, read by the host that owns the shard."""
    return f"mailbox:{kind}:{shard_tag(kind, shard)}"


def commands(kind: str, shard: int) -> str:
    """The command mailbox of one shard: people's and other entities' messages that wait
    for a reply, read by the host that owns the shard (`actors/mailroom.py`)."""
    return f"commands:{kind}:{shard_tag(kind, shard)}"


def replies(sender: str) -> str:
    """The channel a sending process hears its entities' replies on (no slot: Pub/Sub)."""
    return f"replies:{sender}"


def bell(mailbox_key: str) -> str:
    """Rung when an entry is added to a mailbox, so its host reads it at once."""
    return f"bell:{mailbox_key}"


BELL_PREFIX = "bell:"


def outbox(kind: str, shard: int) -> str:
    """What changes written by a kind's host in a shard must do in other slots."""
    return f"outbox:{kind}:{shard_tag(kind, shard)}"


def relayed(tag: str) -> str:
    """Per outbox, the last of its entries applied in the slot of `tag`."""
    return f"relayed:{{{tag}}}"


# -- which host owns which shard ----------------------------------------------------


def host_layout(kind: str) -> str:
    """A kind's host count and pinned shards: the one record every process routes by."""
    return f"hosts:{kind}:{{ops}}"


def host_handovers(kind: str) -> str:
    """Per host of a kind, the last layout epoch it has handed over its shards under."""
    return f"hosts:applied:{kind}:{{ops}}"


def host_deploy_lock() -> str:
    """Held by the one process creating or replacing host actors."""
    return "hosts:deploying:{ops}"


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


# -- risk checks and the review queue -------------------------------------------------


def risk_orders(party: str, owner_id: str) -> str:
    """Recent orders of a customer (`party` "c") or a device ("d"): order ids by when."""
    return f"risk:orders:{{{party}:{owner_id}}}"


def risk_failures(party: str, owner_id: str) -> str:
    """Recent failed payments of a customer or a device: order ids by when."""
    return f"risk:failed:{{{party}:{owner_id}}}"


def order_device(order_id: str) -> str:
    """The device that placed an order (`X-Device-Id`), for its failure to be counted."""
    return f"risk:device:{_order_tag(order_id)}:{order_id}"


def merchant_day(merchant_id: str, day: date) -> str:
    """A merchant's money of a UTC day: `captured_fen` and `refunded_fen` (asked)."""
    return f"merchant:{_merchant_tag(merchant_id)}:{merchant_id}:day:{day.isoformat()}"


def review(review_id: str) -> str:
    """One review: `json` (what was held and why), `status`, who decided and when."""
    return f"review:{{ops}}:{review_id}"


# Every review by when it was opened, and the open ones: operations' queue.
REVIEWS = "reviews:{ops}"
REVIEWS_OPEN = "reviews:open:{ops}"
