"""The money ledger: balanced transactions of postings, split plans, refunds, settlement.

Decisions, in one place:

Accounts and signs
    An account is a string of a fixed scheme, made only by the functions below:
    ``provider:clearing`` (money the provider holds for us that nobody has been given yet),
    ``provider:fees`` (what the provider kept), ``platform:revenue``,
    ``customer:{id}:payments``, ``customer:{id}:refunds`` and ``{brand|merchant|rider}:{id}:
    payable``. Ids may not contain ``:`` so an account always parses back.
    Every account is a bucket of money: a positive posting is money flowing *into* the
    account, a negative one money flowing *out* (debit positive, credit negative). So a
    capture takes money out of ``customer:{id}:payments`` (its balance goes negative by
    what the customer paid in) and puts it into clearing; a payable's positive balance is
    what we owe that party; ``customer:{id}:refunds`` is positive by what went back.

Transactions
    A transaction sums to zero, has at least one posting and no zero posting, or it cannot
    be built (``unbalanced_transaction``). Ids come from the business key -- ``capture:
    {order_id}``, ``split:{order_id}``, ``refund:{refund_no}`` -- so the store can
    apply a transaction only if its id is unseen and a duplicate provider callback or a
    retried refund lands once. Postings are a tuple in a frozen dataclass: never changed.

Split (``split_capture``)
    Runs once per order, on delivery, and moves what clearing holds for the order into
    ``provider:fees`` and the parties' payables. Each level of the plan takes its share
    of its base: ``goods`` (subtotal), ``delivery`` (delivery fee) or ``total`` (both,
    before any coupon). Shares round half up to the fen. Levels are taken in plan order
    from what is left, and a share is capped at what is left, so the merchant, who always
    gets the remainder, never goes negative. The provider fee comes off the top, so with
    nothing refunded: fee + shares + merchant == captured, to the fen.
    A rider level is skipped when the order has no rider (the merchant delivered it and
    keeps the delivery fee).

Coupons
    Coupons are platform coupons, so the platform pays for them: shares are computed on
    list prices (as if the customer paid in full) and the discount is taken off the
    platform's share, which may go negative -- a cost booked against platform revenue.
    The merchant, brand and rider are paid the same with or without a coupon.

Refunds
    A refund never exceeds captured - refunded so far (``refund_exceeds_payment``).
    Before the split it is money back out of clearing. After it the refund takes the money
    back from the order's parties in proportion to what each still holds, by the largest
    remainder method, so it is exact to the fen and no party ever gives back more than it
    holds (a party holding a negative amount, the platform after a coupon, gets money
    back instead). The provider does not return its fee on a refund; the platform bears
    the fee of refunded money. That is why the platform's weight is what it holds plus
    the part of the refundable amount that no party holds (initially the fee). Net effect:
    each fen the customer keeps paid carries its fee to the merchant, each fen refunded
    carries its fee to the platform. A refund posted before the split is taken off the
    split by the same rule (``refunded_fen``), so one refund lands the same either way.
    An order refunded in full before delivery is still split, to book the provider fee
    against the platform; then the split posts nothing but that.

Price cuts
    A customer who moves the door of a paid order somewhere cheaper to deliver to gets
    the difference back by a refund of its own (``domain/orders.py``). The order's
    amounts are then below what was captured, and the split divides the order's price as
    it is now: the parties share that (the rider's delivery share is the new fee's), and
    the cut is the customer's, never theirs. Should the cut's refund still be on its way
    when the order is split, clearing keeps the cut for it, and that refund is taken out
    of clearing when it lands (``clearing_fen``), not from the parties.

Reports
    ``balances`` sums postings; ``order_holdings`` is what an order's split still leaves
    with each party (the ``held`` a refund after the split needs); ``check_invariants``
    re-checks what the store must keep true -- balanced transactions, unique ids, and per
    order (so per customer too) no more refunded than paid; ``settlement`` lists a
    merchant's payable postings for one UTC date (``at`` is always timezone-aware) and
    their net.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import pairwise
from typing import Any, Literal, cast

from domain.errors import DomainError, invalid
from domain.pricing import Amounts

BP_WHOLE = 10_000

PartyKind = Literal["brand", "merchant", "rider"]
LevelParty = Literal["platform", "brand", "rider"]
Base = Literal["goods", "delivery", "total"]
TxnKind = Literal["capture", "split", "refund"]

PARTY_KINDS: tuple[PartyKind, ...] = ("brand", "merchant", "rider")
LEVEL_PARTIES: tuple[LevelParty, ...] = ("platform", "brand", "rider")
BASES: tuple[Base, ...] = ("goods", "delivery", "total")
TXN_KINDS: tuple[TxnKind, ...] = ("capture", "split", "refund")

_ACCOUNT = re.compile(
    r"^(?:provider:(?:clearing|fees)|platform:revenue"
    r"|customer:[^:]+:(?:payments|refunds)|(?:brand|merchant|rider):[^:]+:payable)$"
)


# ---------------------------------------------------------------- accounts


def _id(kind: str, entity_id: str) -> str:
    if not isinstance(entity_id, str) or not entity_id or ":" in entity_id:
        raise invalid(f"{kind} id must be a non-empty string without ':'", id=entity_id)
    return entity_id


def provider_clearing() -> str:
    return "provider:clearing"


def provider_fees() -> str:
    return "provider:fees"


def platform_revenue() -> str:
    return "platform:revenue"


def customer_payments(customer_id: str) -> str:
    return f"customer:{_id('customer', customer_id)}:payments"


def customer_refunds(customer_id: str) -> str:
    return f"customer:{_id('customer', customer_id)}:refunds"


def party_payable(kind: PartyKind, party_id: str) -> str:
    if kind not in PARTY_KINDS:
        raise invalid("unknown party kind", kind=kind)
    return f"{kind}:{_id(kind, party_id)}:payable"


def is_party_account(account: str) -> bool:
    """Accounts that hold an order's split: platform revenue and the payables."""
    return account == platform_revenue() or account.endswith(":payable")


# ---------------------------------------------------------------- postings and transactions


def _is_fen(value: object) -> bool:
    return type(value) is int


@dataclass(frozen=True)
class Posting:
    """Money into (positive) or out of (negative) one account."""

    account: str
    amount_fen: int

    def __post_init__(self) -> None:
        if not isinstance(self.account, str) or not _ACCOUNT.match(self.account):
            raise invalid("unknown account", account=self.account)
        if not _is_fen(self.amount_fen):
            raise invalid("amount_fen must be an int", account=self.account)


@dataclass(frozen=True)
class Transaction:
    txn_id: str
    kind: TxnKind
    order_id: str
    at: datetime
    postings: tuple[Posting, ...]

    def __post_init__(self) -> None:
        if self.kind not in TXN_KINDS:
            raise invalid("unknown transaction kind", kind=self.kind)
        if not isinstance(self.txn_id, str) or not self.txn_id:
            raise invalid("txn_id must be a non-empty string")
        if self.at.tzinfo is None:
            raise invalid("a transaction time must be timezone-aware", txn_id=self.txn_id)
        if not self.postings:
            raise DomainError(
                "unbalanced_transaction", "a transaction needs postings", txn_id=self.txn_id
            )
        if any(p.amount_fen == 0 for p in self.postings):
            raise DomainError(
                "unbalanced_transaction", "a posting must move money", txn_id=self.txn_id
            )
        total = sum(p.amount_fen for p in self.postings)
        if total != 0:
            raise DomainError(
                "unbalanced_transaction",
                "a transaction must sum to zero",
                txn_id=self.txn_id,
                sum_fen=total,
            )

    def amount_on(self, account: str) -> int:
        return sum(p.amount_fen for p in self.postings if p.account == account)

    def as_dict(self) -> dict[str, Any]:
        return {
            "txn_id": self.txn_id,
            "kind": self.kind,
            "order_id": self.order_id,
            "at": self.at.isoformat(),
            "postings": [[p.account, p.amount_fen] for p in self.postings],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Transaction:
        return cls(
            txn_id=d["txn_id"],
            kind=d["kind"],
            order_id=d["order_id"],
            at=datetime.fromisoformat(d["at"]),
            postings=tuple(Posting(a, n) for a, n in d["postings"]),
        )


def _transaction(
    txn_id: str, kind: TxnKind, order_id: str, at: datetime, amounts: Mapping[str, int]
) -> Transaction:
    """Postings from per-account amounts; accounts that net to zero are left out."""
    postings = tuple(Posting(a, n) for a, n in amounts.items() if n != 0)
    return Transaction(txn_id, kind, order_id, at, postings)


def _add(into: dict[str, int], account: str, amount: int) -> None:
    into[account] = into.get(account, 0) + amount


# ---------------------------------------------------------------- split plans


def _plan_error(message: str, **details: Any) -> DomainError:
    return DomainError("invalid_split_plan", message, **details)


def _check_bp(bp: object) -> None:
    if not _is_fen(bp) or not 0 <= cast(int, bp) <= BP_WHOLE:
        raise _plan_error("a rate is whole basis points within 0..10000", bp=bp)


def _round_bp(base_fen: int, bp: int) -> int:
    return (base_fen * bp + BP_WHOLE // 2) // BP_WHOLE


@dataclass(frozen=True)
class Ratio:
    bp: int

    def __post_init__(self) -> None:
        _check_bp(self.bp)

    def share_fen(self, base_fen: int, monthly_volume_fen: int) -> int:
        return _round_bp(base_fen, self.bp)

    def as_dict(self) -> dict[str, Any]:
        return {"ratio_bp": self.bp}


@dataclass(frozen=True)
class Fixed:
    fen: int

    def __post_init__(self) -> None:
        if not _is_fen(self.fen) or self.fen < 0:
            raise _plan_error("a fixed share is a non-negative int of fen", fen=self.fen)

    def share_fen(self, base_fen: int, monthly_volume_fen: int) -> int:
        return self.fen

    def as_dict(self) -> dict[str, Any]:
        return {"fixed_fen": self.fen}


@dataclass(frozen=True)
class Tier:
    min_monthly_volume_fen: int
    bp: int

    def __post_init__(self) -> None:
        if not _is_fen(self.min_monthly_volume_fen) or self.min_monthly_volume_fen < 0:
            raise _plan_error(
                "a tier starts at a non-negative int of fen", min=self.min_monthly_volume_fen
            )
        _check_bp(self.bp)


@dataclass(frozen=True)
class Tiered:
    """A rate chosen by the merchant's monthly volume: the last tier it has reached."""

    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        if not self.tiers or not all(isinstance(t, Tier) for t in self.tiers):
            raise _plan_error("tiers must not be empty")
        if self.tiers[0].min_monthly_volume_fen != 0:
            # Otherwise a small merchant would fall below every tier.
            raise _plan_error("the first tier must start at 0")
        mins = [t.min_monthly_volume_fen for t in self.tiers]
        if any(a >= b for a, b in pairwise(mins)):
            raise _plan_error("tiers must start at strictly increasing volumes", mins=mins)

    def bp_for(self, monthly_volume_fen: int) -> int:
        bp = self.tiers[0].bp
        for tier in self.tiers:
            if monthly_volume_fen >= tier.min_monthly_volume_fen:
                bp = tier.bp
        return bp

    def share_fen(self, base_fen: int, monthly_volume_fen: int) -> int:
        return _round_bp(base_fen, self.bp_for(monthly_volume_fen))

    def as_dict(self) -> dict[str, Any]:
        return {"tiers": [[t.min_monthly_volume_fen, t.bp] for t in self.tiers]}


SplitRule = Ratio | Fixed | Tiered


def _rule_from(d: object) -> SplitRule:
    if not isinstance(d, Mapping) or len(d) != 1:
        raise _plan_error("a rule is one of ratio_bp, fixed_fen or tiers", rule=d)
    ((key, value),) = d.items()
    if key == "ratio_bp":
        return Ratio(value)
    if key == "fixed_fen":
        return Fixed(value)
    if key == "tiers":
        if not isinstance(value, list | tuple) or not all(
            isinstance(t, list | tuple) and len(t) == 2 for t in value
        ):
            raise _plan_error("tiers are [min_monthly_volume_fen, bp] pairs", tiers=value)
        return Tiered(tuple(Tier(lo, bp) for lo, bp in value))
    raise _plan_error("a rule is one of ratio_bp, fixed_fen or tiers", rule=d)


_LEVEL_KEYS = frozenset({"party", "party_id", "rule", "base"})


@dataclass(frozen=True)
class SplitLevel:
    """One party's share. A rider's id comes from the order, a brand's from the plan."""

    party: LevelParty
    rule: SplitRule
    base: Base
    party_id: str | None = None

    def __post_init__(self) -> None:
        if self.party not in LEVEL_PARTIES:
            raise _plan_error("a level's party is platform, brand or rider", party=self.party)
        if not isinstance(self.rule, Ratio | Fixed | Tiered):
            raise _plan_error("unknown rule", rule=repr(self.rule))
        if self.base not in BASES:
            raise _plan_error("a level's base is goods, delivery or total", base=self.base)
        if self.party == "brand":
            if not isinstance(self.party_id, str) or not self.party_id or ":" in self.party_id:
                raise _plan_error("a brand level needs a party_id without ':'")
        elif self.party_id is not None:
            raise _plan_error(f"a {self.party} level takes no party_id", party=self.party)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"party": self.party}
        if self.party_id is not None:
            d["party_id"] = self.party_id
        d["rule"] = self.rule.as_dict()
        d["base"] = self.base
        return d

    @classmethod
    def from_dict(cls, d: object) -> SplitLevel:
        if not isinstance(d, Mapping):
            raise _plan_error("a level is an object", level=d)
        unknown = set(d) - _LEVEL_KEYS
        if unknown:
            raise _plan_error("unknown keys in a level", keys=sorted(map(str, unknown)))
        if "party" not in d or "rule" not in d or "base" not in d:
            raise _plan_error("a level needs party, rule and base", level=dict(d))
        return cls(
            party=d["party"], rule=_rule_from(d["rule"]), base=d["base"], party_id=d.get("party_id")
        )


@dataclass(frozen=True)
class SplitPlan:
    """A merchant's split: levels in order; the merchant gets what is left after them."""

    levels: tuple[SplitLevel, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.levels, tuple) or not all(
            isinstance(level, SplitLevel) for level in self.levels
        ):
            raise _plan_error("levels must be a tuple of SplitLevel")

    def as_dict(self) -> dict[str, Any]:
        return {"levels": [level.as_dict() for level in self.levels]}

    @classmethod
    def from_dict(cls, d: object) -> SplitPlan:
        if not isinstance(d, Mapping) or set(d) != {"levels"}:
            raise _plan_error('a split plan is {"levels": [...]}')
        levels = d["levels"]
        if not isinstance(levels, list | tuple):
            raise _plan_error("levels must be a list")
        return cls(tuple(SplitLevel.from_dict(level) for level in levels))


DEFAULT_PLAN = SplitPlan(
    (
        SplitLevel("platform", Ratio(1800), "goods"),
        SplitLevel("rider", Ratio(BP_WHOLE), "delivery"),
    )
)


def plan_or_default(d: Mapping[str, Any] | None) -> SplitPlan:
    """A merchant's stored plan; a merchant that has none gets `DEFAULT_PLAN`."""
    if not d:
        return DEFAULT_PLAN
    return SplitPlan.from_dict(d)


# ---------------------------------------------------------------- proportional take-back


def _largest_remainder(amount: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Divide `amount` in proportion to `weights` (which sum to more than zero), exactly.

    Weights may be negative; each part lies between the floor and the ceiling of its
    exact quota, so with amount <= sum(weights) nobody moves past its weight.
    """
    total = sum(weights.values())
    accounts = sorted(weights)
    parts = {a: amount * weights[a] // total for a in accounts}
    leftover = amount - sum(parts.values())
    by_remainder = sorted(accounts, key=lambda a: (-(amount * weights[a] % total), a))
    for a in by_remainder[:leftover]:
        parts[a] += 1
    return parts


def _take_back(amount: int, refundable_fen: int, held: Mapping[str, int]) -> dict[str, int]:
    """What each party account gives back (as a positive number) for a refund after the split."""
    weights = {a: n for a, n in held.items() if n != 0}
    # The part of the refundable money no party holds is the fee the provider kept;
    # the platform bears it.
    unheld = refundable_fen - sum(weights.values())
    weights[platform_revenue()] = weights.get(platform_revenue(), 0) + unheld
    return _largest_remainder(amount, weights)


# ---------------------------------------------------------------- transactions of an order


def capture(order_id: str, customer_id: str, amount_fen: int, at: datetime) -> Transaction:
    """The provider told us the customer paid: their money now sits in clearing."""
    if not _is_fen(amount_fen) or amount_fen <= 0:
        raise invalid("a capture is a positive int of fen", amount_fen=amount_fen)
    return _transaction(
        f"capture:{order_id}",
        "capture",
        order_id,
        at,
        {customer_payments(customer_id): -amount_fen, provider_clearing(): amount_fen},
    )


def _check_amounts(amounts: Amounts, captured_fen: int) -> None:
    values = amounts.as_dict()
    if not all(_is_fen(v) and v >= 0 for v in values.values()):
        raise invalid("amounts are non-negative ints of fen", **values)
    if amounts.discount_fen > amounts.subtotal_fen or amounts.total_fen != (
        amounts.subtotal_fen + amounts.delivery_fee_fen - amounts.discount_fen
    ):
        raise invalid("amounts do not add up", **values)
    if captured_fen != amounts.total_fen:
        raise DomainError(
            "amount_mismatch",
            "captured amount differs from the order total",
            captured_fen=captured_fen,
            total_fen=amounts.total_fen,
        )


def shares(
    merchant_id: str,
    rider_id: str | None,
    amounts: Amounts,
    captured_fen: int,
    provider_fee_fen: int,
    monthly_volume_fen: int,
    plan: SplitPlan,
) -> dict[str, int]:
    """Each party account's share of a capture before any refund; they sum to captured - fee."""
    _check_amounts(amounts, captured_fen)
    if not _is_fen(provider_fee_fen) or not 0 <= provider_fee_fen <= captured_fen:
        raise invalid("the provider fee is an int within 0..captured", fee_fen=provider_fee_fen)
    if not _is_fen(monthly_volume_fen) or monthly_volume_fen < 0:
        raise invalid("monthly volume is a non-negative int", monthly_volume_fen=monthly_volume_fen)
    bases = {
        "goods": amounts.subtotal_fen,
        "delivery": amounts.delivery_fee_fen,
        "total": amounts.subtotal_fen + amounts.delivery_fee_fen,
    }
    # The platform funds its coupon: the levels divide the list price, and the platform
    # alone is short by the discount the customer did not pay.
    left = captured_fen + amounts.discount_fen - provider_fee_fen
    out: dict[str, int] = {platform_revenue(): -amounts.discount_fen}
    for level in plan.levels:
        if level.party == "rider" and rider_id is None:
            continue
        share = min(level.rule.share_fen(bases[level.base], monthly_volume_fen), left)
        left -= share
        if level.party == "platform":
            account = platform_revenue()
        elif level.party == "rider":
            account = party_payable("rider", cast(str, rider_id))
        else:
            account = party_payable("brand", cast(str, level.party_id))
        _add(out, account, share)
    _add(out, party_payable("merchant", merchant_id), left)
    return out


def split_capture(
    order_id: str,
    merchant_id: str,
    rider_id: str | None,
    amounts: Amounts,
    captured_fen: int,
    provider_fee_fen: int,
    monthly_volume_fen: int,
    plan: SplitPlan,
    at: datetime,
    *,
    refunded_fen: int = 0,
) -> Transaction:
    """Move an order's money out of clearing into the provider's fee and the parties' payables.

    `refunded_fen` is what was refunded before the split (it came out of clearing); it
    is taken off the shares exactly as a refund after the split would be. An order whose
    price was cut after capture (`amounts.total_fen` below `captured_fen`) is shared at
    its price now; the cut is counted first among the refunds, and what of it is not yet
    refunded stays in clearing for its refund.
    """
    cut = max(captured_fen - amounts.total_fen, 0)
    priced = captured_fen - cut
    parts = shares(
        merchant_id, rider_id, amounts, priced, provider_fee_fen, monthly_volume_fen, plan
    )
    if not _is_fen(refunded_fen) or not 0 <= refunded_fen <= captured_fen:
        raise DomainError(
            "refund_exceeds_payment",
            "refunded more than was captured",
            refunded_fen=refunded_fen,
            captured_fen=captured_fen,
        )
    beyond_cut = refunded_fen - cut
    if beyond_cut > 0:
        for account, n in _take_back(beyond_cut, priced, parts).items():
            _add(parts, account, -n)
    moved = {
        provider_clearing(): max(refunded_fen, cut) - captured_fen,
        provider_fees(): provider_fee_fen,
    }
    moved.update(parts)
    if all(n == 0 for n in moved.values()):
        raise DomainError("nothing_to_split", "the order has no money left to split")
    return _transaction(f"split:{order_id}", "split", order_id, at, moved)


def refund(
    refund_no: str,
    order_id: str,
    customer_id: str,
    amount_fen: int,
    captured_fen: int,
    refunded_so_far_fen: int,
    held: Mapping[str, int] | None,
    at: datetime,
    clearing_fen: int = 0,
) -> Transaction:
    """Money back to the customer, from clearing before the split, from the parties after.

    `held` is None before the split; after it, what each party account still holds of
    this order (`order_holdings` computes it from the order's transactions), and
    `clearing_fen` what clearing still holds of it (`left_in_clearing`: a price cut whose
    refund was not in when the order was split), which goes back first.
    """
    if not _is_fen(amount_fen) or amount_fen <= 0:
        raise invalid("a refund is a positive int of fen", amount_fen=amount_fen)
    if not _is_fen(refunded_so_far_fen) or refunded_so_far_fen < 0:
        raise invalid("refunded_so_far_fen is a non-negative int", fen=refunded_so_far_fen)
    refundable = captured_fen - refunded_so_far_fen
    if amount_fen > refundable:
        raise DomainError(
            "refund_exceeds_payment",
            "a refund cannot exceed what was captured and not yet refunded",
            amount_fen=amount_fen,
            refundable_fen=max(refundable, 0),
        )
    moved = {customer_refunds(customer_id): amount_fen}
    if held is None:
        moved[provider_clearing()] = -amount_fen
    else:
        if not all(is_party_account(a) and _is_fen(n) for a, n in held.items()):
            raise invalid("held maps party accounts to ints of fen")
        if not _is_fen(clearing_fen) or not 0 <= clearing_fen <= refundable:
            raise invalid("clearing_fen is an int within 0..refundable", fen=clearing_fen)
        from_clearing = min(amount_fen, clearing_fen)
        if from_clearing:
            moved[provider_clearing()] = -from_clearing
        if amount_fen > from_clearing:
            parties = _take_back(amount_fen - from_clearing, refundable - clearing_fen, held)
            for account, n in parties.items():
                _add(moved, account, -n)
    return _transaction(f"refund:{refund_no}", "refund", order_id, at, moved)


# ---------------------------------------------------------------- reading the ledger


def balances(transactions: Iterable[Transaction]) -> dict[str, int]:
    out: dict[str, int] = {}
    for txn in transactions:
        for p in txn.postings:
            _add(out, p.account, p.amount_fen)
    return out


def order_holdings(transactions: Iterable[Transaction], order_id: str) -> dict[str, int] | None:
    """What each party account holds of one order; None until the order is split."""
    split_seen = False
    held: dict[str, int] = {}
    for txn in transactions:
        if txn.order_id != order_id:
            continue
        split_seen = split_seen or txn.kind == "split"
        for p in txn.postings:
            if is_party_account(p.account):
                _add(held, p.account, p.amount_fen)
    return held if split_seen else None


def left_in_clearing(transactions: Iterable[Transaction], order_id: str) -> int:
    """What clearing still holds of one order (after its split: a cut not yet refunded)."""
    return sum(
        p.amount_fen
        for txn in transactions
        if txn.order_id == order_id
        for p in txn.postings
        if p.account == provider_clearing()
    )


def _customer_side(account: str) -> bool:
    return account.startswith("customer:")


def check_invariants(transactions: Iterable[Transaction]) -> None:
    """Refuse a ledger that breaks a rule the store must keep; silent when all holds."""
    seen: set[str] = set()
    net_by_order: dict[str, int] = {}
    for txn in transactions:
        if txn.txn_id in seen:
            raise DomainError(
                "duplicate_transaction", "a transaction was applied twice", txn_id=txn.txn_id
            )
        seen.add(txn.txn_id)
        amounts = [p.amount_fen for p in txn.postings]
        if not txn.postings or not all(_is_fen(n) and n != 0 for n in amounts) or sum(amounts) != 0:
            raise DomainError(
                "unbalanced_transaction", "a transaction must sum to zero", txn_id=txn.txn_id
            )
        for p in txn.postings:
            if _customer_side(p.account):
                _add(net_by_order, txn.order_id, p.amount_fen)
    # Payments are negative and refunds positive on the customer's side, so a positive
    # net means more went back than came in.
    for order_id, net in net_by_order.items():
        if net > 0:
            raise DomainError(
                "refund_exceeds_payment",
                "an order refunded more than was captured",
                order_id=order_id,
                over_fen=net,
            )


def settlement(transactions: Iterable[Transaction], merchant_id: str, day: date) -> dict[str, Any]:
    """A merchant's payable postings on one UTC date, and what they net to."""
    account = party_payable("merchant", merchant_id)
    rows = []
    for txn in transactions:
        if txn.at.astimezone(UTC).date() != day:
            continue
        amount = txn.amount_on(account)
        if amount:
            rows.append(
                {
                    "txn_id": txn.txn_id,
                    "kind": txn.kind,
                    "order_id": txn.order_id,
                    "at": txn.at.astimezone(UTC).isoformat(),
                    "amount_fen": amount,
                }
            )
    rows.sort(key=lambda r: (r["at"], r["txn_id"]))
    return {"postings": rows, "payable_fen": sum(r["amount_fen"] for r in rows)}
