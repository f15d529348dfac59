from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain.errors import DomainError
from domain.ledger import (
    DEFAULT_PLAN,
    Fixed,
    Posting,
    Ratio,
    SplitLevel,
    SplitPlan,
    Tier,
    Tiered,
    Transaction,
    balances,
    capture,
    check_invariants,
    customer_payments,
    customer_refunds,
    order_holdings,
    party_payable,
    plan_or_default,
    platform_revenue,
    provider_clearing,
    provider_fees,
    refund,
    settlement,
    shares,
    split_capture,
)
from domain.pricing import Amounts

T0 = datetime(2025, 3, 1, 11, 30, tzinfo=UTC)
PLATFORM = "platform:revenue"
CLEARING = "provider:clearing"
FEES = "provider:fees"
M1 = "merchant:m1:payable"
R1 = "rider:r1:payable"

WIRE: dict[str, Any] = {
    "levels": [
        {"party": "platform", "rule": {"ratio_bp": 1800}, "base": "goods"},
        {"party": "brand", "party_id": "b1", "rule": {"fixed_fen": 100}, "base": "goods"},
        {"party": "rider", "rule": {"ratio_bp": 10000}, "base": "delivery"},
        {"party": "platform", "rule": {"tiers": [[0, 2000], [10000000, 1500]]}, "base": "goods"},
    ]
}


def amounts(subtotal: int, delivery: int = 0, discount: int = 0) -> Amounts:
    return Amounts(subtotal, delivery, discount, subtotal + delivery - discount)


def provider_fee(captured: int) -> int:
    """The sandbox provider's 0.6 %, so the machine sees realistic fees."""
    return (captured * 6 + 500) // 1000


def postings_of(txn: Transaction) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in txn.postings:
        out[p.account] = out.get(p.account, 0) + p.amount_fen
    return out


def split(
    a: Amounts,
    plan: SplitPlan = DEFAULT_PLAN,
    fee: int = 0,
    volume: int = 0,
    rider: str | None = "r1",
    refunded: int = 0,
) -> Transaction:
    return split_capture(
        "o1", "m1", rider, a, a.total_fen, fee, volume, plan, T0, refunded_fen=refunded
    )


def nonzero(d: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in d.items() if v}


def plan_of(*levels: SplitLevel) -> SplitPlan:
    return SplitPlan(tuple(levels))


def assert_refused(code: str, fn: Any, *args: Any, **kwargs: Any) -> DomainError:
    with pytest.raises(DomainError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value
    return info.value


# ---------------------------------------------------------------- accounts and transactions


def test_accounts_follow_one_scheme() -> None:
    assert provider_clearing() == CLEARING
    assert provider_fees() == FEES
    assert platform_revenue() == PLATFORM
    assert customer_payments("c1") == "customer:c1:payments"
    assert customer_refunds("c1") == "customer:c1:refunds"
    assert party_payable("brand", "b1") == "brand:b1:payable"
    assert party_payable("merchant", "m1") == M1
    assert party_payable("rider", "r1") == R1


@pytest.mark.parametrize("bad", ["", "a:b"])
def test_ids_that_would_break_the_scheme_are_refused(bad: str) -> None:
    assert_refused("invalid_request", customer_payments, bad)
    assert_refused("invalid_request", party_payable, "merchant", bad)


def test_unknown_party_kind_is_refused() -> None:
    assert_refused("invalid_request", party_payable, "platform", "x")


def test_a_balanced_transaction_is_built() -> None:
    txn = Transaction("t1", "capture", "o1", T0, (Posting(CLEARING, 5), Posting(FEES, -5)))
    assert txn.amount_on(CLEARING) == 5


@pytest.mark.parametrize(
    "postings",
    [
        (),
        (Posting(CLEARING, 5),),
        (Posting(CLEARING, 5), Posting(FEES, -4)),
        (Posting(CLEARING, 0), Posting(FEES, 0)),
        (Posting(CLEARING, 5), Posting(FEES, -5), Posting(PLATFORM, 0)),
    ],
)
def test_unbalanced_transactions_are_refused(postings: tuple[Posting, ...]) -> None:
    assert_refused("unbalanced_transaction", Transaction, "t1", "capture", "o1", T0, postings)


def test_postings_take_int_fen_on_known_accounts_only() -> None:
    assert_refused("invalid_request", Posting, CLEARING, 1.0)
    assert_refused("invalid_request", Posting, CLEARING, True)
    assert_refused("invalid_request", Posting, "cash:drawer", 1)


def test_transactions_are_timezone_aware_and_of_a_known_kind() -> None:
    ok = (Posting(CLEARING, 5), Posting(FEES, -5))
    assert_refused(
        "invalid_request", Transaction, "t", "capture", "o1", T0.replace(tzinfo=None), ok
    )
    assert_refused("invalid_request", Transaction, "t", "payout", "o1", T0, ok)


def test_transactions_survive_their_wire_form() -> None:
    txn = split(amounts(3000, 400, 500), fee=17)
    assert Transaction.from_dict(txn.as_dict()) == txn


def test_transactions_are_immutable() -> None:
    txn = capture("o1", "c1", 100, T0)
    with pytest.raises(AttributeError):
        txn.postings = ()  # type: ignore[misc]


# ---------------------------------------------------------------- capture


def test_capture_moves_the_customers_money_into_clearing() -> None:
    txn = capture("o1", "c1", 3400, T0)
    assert txn.txn_id == "capture:o1"
    assert txn.kind == "capture"
    assert postings_of(txn) == {"customer:c1:payments": -3400, CLEARING: 3400}


@pytest.mark.parametrize("bad", [0, -1, 10.0])
def test_capture_takes_a_positive_int(bad: Any) -> None:
    assert_refused("invalid_request", capture, "o1", "c1", bad, T0)


def test_capture_ids_repeat_for_the_same_order_so_a_replay_is_detectable() -> None:
    assert capture("o1", "c1", 100, T0).txn_id == capture("o1", "c1", 100, T0).txn_id


# ---------------------------------------------------------------- split plans


def test_default_plan_takes_18_percent_of_goods_and_gives_the_rider_the_delivery_fee() -> None:
    txn = split(amounts(3000, 400), fee=20)
    assert txn.txn_id == "split:o1"
    assert postings_of(txn) == {CLEARING: -3400, FEES: 20, PLATFORM: 540, R1: 400, M1: 2440}


def test_a_merchant_without_a_plan_gets_the_default() -> None:
    assert plan_or_default({}) is DEFAULT_PLAN
    assert plan_or_default(None) is DEFAULT_PLAN
    assert plan_or_default(WIRE) == SplitPlan.from_dict(WIRE)
    assert DEFAULT_PLAN.as_dict() == {
        "levels": [
            {"party": "platform", "rule": {"ratio_bp": 1800}, "base": "goods"},
            {"party": "rider", "rule": {"ratio_bp": 10000}, "base": "delivery"},
        ]
    }


def test_ratio_on_each_base() -> None:
    a = amounts(3000, 400)
    for base, expected in (("goods", 300), ("delivery", 40), ("total", 340)):
        plan = plan_of(SplitLevel("platform", Ratio(1000), base))  # type: ignore[arg-type]
        assert postings_of(split(a, plan))[PLATFORM] == expected


def test_fixed_share_ignores_the_size_of_the_base() -> None:
    plan = plan_of(SplitLevel("brand", Fixed(150), "goods", "b1"))
    got = postings_of(split(amounts(3000, 400), plan))
    assert got["brand:b1:payable"] == 150
    assert got[M1] == 3250


@pytest.mark.parametrize(
    ("volume", "bp"),
    [(0, 2000), (9_999_999, 2000), (10_000_000, 1500), (30_000_000, 1200), (10**12, 1200)],
)
def test_tiers_pick_the_rate_by_monthly_volume(volume: int, bp: int) -> None:
    rule = Tiered((Tier(0, 2000), Tier(10_000_000, 1500), Tier(30_000_000, 1200)))
    assert rule.bp_for(volume) == bp
    got = postings_of(
        split(amounts(10_000), plan_of(SplitLevel("platform", rule, "goods")), volume=volume)
    )
    assert got[PLATFORM] == 10_000 * bp // 10_000


def test_multi_level_plan_from_the_wire() -> None:
    plan = SplitPlan.from_dict(WIRE)
    a = amounts(3000, 400)
    got = postings_of(split(a, plan, fee=20, volume=0))
    # 18 % + 20 % (first tier) of goods to the platform, 100 fen to the brand.
    assert got == {
        CLEARING: -3400,
        FEES: 20,
        PLATFORM: 540 + 600,
        "brand:b1:payable": 100,
        R1: 400,
        M1: 3400 - 20 - 1140 - 100 - 400,
    }
    busy = postings_of(split(a, plan, fee=20, volume=10_000_000))
    assert busy[PLATFORM] == 540 + 450


def test_wire_form_round_trips() -> None:
    plan = SplitPlan.from_dict(WIRE)
    assert plan.as_dict() == WIRE
    assert SplitPlan.from_dict(plan.as_dict()) == plan
    assert plan.levels[1] == SplitLevel("brand", Fixed(100), "goods", "b1")
    assert plan.levels[3].rule == Tiered((Tier(0, 2000), Tier(10_000_000, 1500)))


def test_three_levels_on_1001_fen_round_half_up_and_the_last_is_capped() -> None:
    plan = plan_of(*(SplitLevel("brand", Ratio(3333), "goods", f"b{i}") for i in (1, 2, 3)))
    got = postings_of(split(amounts(1001), plan))
    # 1001 * 33.33 % = 333.63 -> 334 each, but only 333 is left for the third.
    assert got == {
        CLEARING: -1001,
        "brand:b1:payable": 334,
        "brand:b2:payable": 334,
        "brand:b3:payable": 333,
    }
    assert M1 not in got


@pytest.mark.parametrize(
    ("base", "bp", "share"), [(5, 1000, 1), (15, 5000, 8), (14, 5000, 7), (1, 4999, 0)]
)
def test_shares_round_half_up_to_the_fen(base: int, bp: int, share: int) -> None:
    got = shares(
        "m1", None, amounts(base), base, 0, 0, plan_of(SplitLevel("platform", Ratio(bp), "goods"))
    )
    assert got[PLATFORM] == share
    assert got[M1] == base - share


def test_shares_are_capped_in_level_order_so_the_merchant_never_goes_negative() -> None:
    plan = plan_of(
        SplitLevel("platform", Fixed(700), "goods"),
        SplitLevel("brand", Fixed(700), "goods", "b1"),
        SplitLevel("brand", Fixed(700), "goods", "b2"),
    )
    got = postings_of(split(amounts(1000), plan, fee=6))
    assert got == {CLEARING: -1000, FEES: 6, PLATFORM: 700, "brand:b1:payable": 294}


def test_levels_of_the_same_party_land_on_one_account() -> None:
    plan = plan_of(
        SplitLevel("platform", Ratio(1000), "goods"), SplitLevel("platform", Fixed(5), "goods")
    )
    txn = split(amounts(1000), plan)
    assert [p.account for p in txn.postings].count(PLATFORM) == 1
    assert postings_of(txn)[PLATFORM] == 105


def test_without_a_rider_the_merchant_keeps_the_delivery_fee() -> None:
    got = postings_of(split(amounts(3000, 400), fee=20, rider=None))
    assert got == {CLEARING: -3400, FEES: 20, PLATFORM: 540, M1: 2840}


def test_the_platform_pays_for_the_coupon() -> None:
    plain = postings_of(split(amounts(3000, 400), fee=17))
    coupon = postings_of(split(amounts(3000, 400, 500), fee=17))
    assert coupon[CLEARING] == -2900
    assert coupon[PLATFORM] == plain[PLATFORM] - 500 == 40
    assert coupon[M1] == plain[M1]
    assert coupon[R1] == plain[R1]


def test_a_big_coupon_is_a_cost_on_platform_revenue() -> None:
    got = postings_of(split(amounts(1000, 300, 1000), fee=2))
    assert got == {CLEARING: -300, FEES: 2, PLATFORM: 180 - 1000, R1: 300, M1: 1000 - 2 - 180}


def test_splits_plus_fee_equal_the_capture_to_the_fen() -> None:
    plan = SplitPlan.from_dict(WIRE)
    for sub in range(1, 400, 7):
        a = amounts(sub, 301, sub // 3)
        txn = split(a, plan, fee=provider_fee(a.total_fen))
        assert -txn.amount_on(CLEARING) == a.total_fen
        assert sum(p.amount_fen for p in txn.postings if p.account != CLEARING) == a.total_fen


def test_split_refuses_a_capture_that_is_not_the_order_total() -> None:
    a = amounts(3000, 400)
    assert_refused(
        "amount_mismatch", split_capture, "o1", "m1", "r1", a, 3000, 0, 0, DEFAULT_PLAN, T0
    )


@pytest.mark.parametrize(
    ("fee", "volume", "a"),
    [
        (-1, 0, amounts(100)),
        (101, 0, amounts(100)),
        (0, -1, amounts(100)),
        (0, 0, Amounts(100, 0, 0, 90)),
    ],
)
def test_split_refuses_nonsense_inputs(fee: int, volume: int, a: Amounts) -> None:
    assert_refused(
        "invalid_request",
        split_capture,
        "o1",
        "m1",
        None,
        a,
        a.total_fen,
        fee,
        volume,
        DEFAULT_PLAN,
        T0,
    )


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"levels": {}},
        {"levels": [], "extra": 1},
        {"levels": ["platform"]},
        {"levels": [{"party": "platform", "rule": {"ratio_bp": 10001}, "base": "goods"}]},
        {"levels": [{"party": "platform", "rule": {"ratio_bp": -1}, "base": "goods"}]},
        {"levels": [{"party": "platform", "rule": {"ratio_bp": 18.5}, "base": "goods"}]},
        {"levels": [{"party": "platform", "rule": {"ratio_bp": True}, "base": "goods"}]},
        {"levels": [{"party": "platform", "rule": {"fixed_fen": -5}, "base": "goods"}]},
        {"levels": [{"party": "platform", "rule": {"fixed_fen": 1.5}, "base": "goods"}]},
        {"levels": [{"party": "platform", "rule": {"tiers": []}, "base": "goods"}]},
        {"levels": [{"party": "platform", "rule": {"tiers": [[100, 1000]]}, "base": "goods"}]},
        {
            "levels": [
                {"party": "platform", "rule": {"tiers": [[0, 1], [5, 2], [5, 3]]}, "base": "goods"}
            ]
        },
        {
            "levels": [
                {"party": "platform", "rule": {"tiers": [[0, 1], [9, 2], [5, 3]]}, "base": "goods"}
            ]
        },
        {"levels": [{"party": "platform", "rule": {"tiers": [[0]]}, "base": "goods"}]},
        {"levels": [{"party": "platform", "rule": {"tiers": 5}, "base": "goods"}]},
        {
            "levels": [
                {"party": "platform", "rule": {"ratio_bp": 1, "fixed_fen": 1}, "base": "goods"}
            ]
        },
        {"levels": [{"party": "platform", "rule": {"percent": 18}, "base": "goods"}]},
        {"levels": [{"party": "platform", "rule": {"ratio_bp": 1800}}]},
        {"levels": [{"party": "platform", "rule": {"ratio_bp": 1800}, "base": "tips"}]},
        {"levels": [{"party": "platform", "rule": {"ratio_bp": 1}, "base": "goods", "cap": 1}]},
        {"levels": [{"party": "merchant", "rule": {"ratio_bp": 1800}, "base": "goods"}]},
        {
            "levels": [
                {"party": "platform", "party_id": "p", "rule": {"ratio_bp": 1}, "base": "goods"}
            ]
        },
        {
            "levels": [
                {"party": "rider", "party_id": "r1", "rule": {"ratio_bp": 1}, "base": "goods"}
            ]
        },
        {"levels": [{"party": "brand", "rule": {"ratio_bp": 1}, "base": "goods"}]},
        {
            "levels": [
                {"party": "brand", "party_id": "a:b", "rule": {"ratio_bp": 1}, "base": "goods"}
            ]
        },
    ],
)
def test_bad_plans_are_refused(bad: Any) -> None:
    assert_refused("invalid_split_plan", SplitPlan.from_dict, bad)


def test_a_plan_with_no_levels_leaves_everything_but_the_fee_to_the_merchant() -> None:
    plan = SplitPlan.from_dict({"levels": []})
    assert postings_of(split(amounts(1000, 200, 100), plan, fee=7)) == {
        CLEARING: -1100,
        FEES: 7,
        PLATFORM: -100,
        M1: 1193,
    }


# ---------------------------------------------------------------- refunds


def test_a_refund_before_the_split_comes_out_of_clearing() -> None:
    txn = refund("rf1", "o1", "c1", 400, 3400, 0, None, T0)
    assert txn.txn_id == "refund:rf1"
    assert postings_of(txn) == {"customer:c1:refunds": 400, CLEARING: -400}


@pytest.mark.parametrize(("amount", "so_far"), [(3401, 0), (1, 3400), (401, 3000)])
def test_refunds_never_exceed_what_is_left_of_the_capture(amount: int, so_far: int) -> None:
    err = assert_refused(
        "refund_exceeds_payment", refund, "rf", "o1", "c1", amount, 3400, so_far, None, T0
    )
    assert err.details["refundable_fen"] == 3400 - so_far


def test_the_last_fen_can_be_refunded() -> None:
    assert (
        refund("rf", "o1", "c1", 400, 3400, 3000, None, T0).amount_on("customer:c1:refunds") == 400
    )


@pytest.mark.parametrize("bad", [0, -5, 1.0])
def test_a_refund_is_a_positive_int(bad: Any) -> None:
    assert_refused("invalid_request", refund, "rf", "o1", "c1", bad, 3400, 0, None, T0)


def test_a_full_refund_after_the_split_takes_everything_back_but_the_fee() -> None:
    a = amounts(3000, 400)
    txns = [capture("o1", "c1", 3400, T0), split(a, fee=20)]
    held = order_holdings(txns, "o1")
    assert held == {PLATFORM: 540, R1: 400, M1: 2440}
    txn = refund("rf1", "o1", "c1", 3400, 3400, 0, held, T0)
    # The provider keeps its fee, so the platform gives back 20 more than it got.
    assert postings_of(txn) == {"customer:c1:refunds": 3400, PLATFORM: -560, R1: -400, M1: -2440}
    txns.append(txn)
    assert order_holdings(txns, "o1") == {PLATFORM: -20, R1: 0, M1: 0}
    assert balances(txns)[CLEARING] == 0


def test_partial_refunds_after_the_split_sum_exactly() -> None:
    a = amounts(3333, 401, 250)
    txns = [capture("o1", "c1", a.total_fen, T0), split(a, SplitPlan.from_dict(WIRE), fee=21)]
    first = order_holdings(txns, "o1")
    assert first is not None
    refunded = 0
    for i, amount in enumerate((1, 999, 7, 1234, a.total_fen - 2241)):
        held = order_holdings(txns, "o1")
        txn = refund(f"rf{i}", "o1", "c1", amount, a.total_fen, refunded, held, T0)
        taken = postings_of(txn)
        assert taken.pop("customer:c1:refunds") == amount
        assert sum(taken.values()) == -amount
        txns.append(txn)
        refunded += amount
        now = order_holdings(txns, "o1")
        assert now is not None
        for account, share in first.items():
            if account != PLATFORM:
                assert 0 <= now[account] <= share
    assert refunded == a.total_fen
    assert {k: v for k, v in (order_holdings(txns, "o1") or {}).items() if v} == {PLATFORM: -21}
    check_invariants(txns)


def test_a_refund_lands_the_same_before_or_after_the_split() -> None:
    a = amounts(2999, 350, 120)
    plan = SplitPlan.from_dict(WIRE)
    fee = provider_fee(a.total_fen)
    before = [
        capture("o1", "c1", a.total_fen, T0),
        refund("rf", "o1", "c1", 777, a.total_fen, 0, None, T0),
        split(a, plan, fee=fee, refunded=777),
    ]
    after = [capture("o1", "c1", a.total_fen, T0), split(a, plan, fee=fee)]
    after.append(refund("rf", "o1", "c1", 777, a.total_fen, 0, order_holdings(after, "o1"), T0))
    assert nonzero(balances(before)) == nonzero(balances(after))


def test_an_order_refunded_before_delivery_books_only_the_fee_against_the_platform() -> None:
    a = amounts(3000, 400)
    txn = split(a, fee=20, refunded=3400)
    assert postings_of(txn) == {FEES: 20, PLATFORM: -20}


def test_nothing_to_split_is_refused() -> None:
    assert_refused("nothing_to_split", split, amounts(3000, 400), fee=0, refunded=3400)


def test_split_refuses_refunds_above_the_capture() -> None:
    assert_refused("refund_exceeds_payment", split, amounts(3000), refunded=3001)


def test_held_must_name_party_accounts() -> None:
    assert_refused("invalid_request", refund, "rf", "o1", "c1", 1, 10, 0, {CLEARING: 10}, T0)


# ---------------------------------------------------------------- reading the ledger


def test_balances_sum_to_zero_and_check_invariants_accepts_a_sound_ledger() -> None:
    a = amounts(3000, 400, 500)
    txns = [capture("o1", "c1", 2900, T0), split(a, fee=17)]
    txns.append(refund("rf1", "o1", "c1", 900, 2900, 0, order_holdings(txns, "o1"), T0))
    assert sum(balances(txns).values()) == 0
    check_invariants(txns)


def test_check_invariants_refuses_a_repeated_txn_id() -> None:
    txn = capture("o1", "c1", 100, T0)
    assert_refused("duplicate_transaction", check_invariants, [txn, txn])


def test_check_invariants_refuses_refunds_above_payments() -> None:
    # refund() only knows what its caller says was captured; the ledger knows better.
    txns = [capture("o1", "c1", 100, T0), refund("rf1", "o1", "c1", 150, 500, 0, None, T0)]
    err = assert_refused("refund_exceeds_payment", check_invariants, txns)
    assert err.details == {"order_id": "o1", "over_fen": 50}


def test_check_invariants_refuses_an_unbalanced_transaction_that_slipped_in() -> None:
    txn = capture("o1", "c1", 100, T0)
    object.__setattr__(txn, "postings", txn.postings[:1])
    assert_refused("unbalanced_transaction", check_invariants, [txn])


def test_order_holdings_is_none_until_the_split() -> None:
    assert order_holdings([capture("o1", "c1", 100, T0)], "o1") is None


def test_settlement_lists_a_merchants_postings_of_one_utc_day() -> None:
    day = date(2025, 3, 1)
    a = amounts(3000, 400)
    late = datetime(2025, 3, 2, 7, 0, tzinfo=UTC)  # 15:00 in Beijing, 2 March in UTC
    beijing_evening = datetime(
        2025, 3, 2, 1, 0, tzinfo=timezone(timedelta(hours=8))
    )  # 1 March 17:00 UTC
    txns = [
        capture("o1", "c1", 3400, T0),
        split_capture("o1", "m1", "r1", a, 3400, 20, 0, DEFAULT_PLAN, T0),
        capture("o2", "c2", 3400, T0),
        split_capture("o2", "m1", None, a, 3400, 20, 0, DEFAULT_PLAN, beijing_evening),
        capture("o3", "c2", 3400, T0),
        split_capture("o3", "m2", "r1", a, 3400, 20, 0, DEFAULT_PLAN, T0),
    ]
    txns.append(refund("rf1", "o1", "c1", 340, 3400, 0, order_holdings(txns, "o1"), late))
    report = settlement(txns, "m1", day)
    assert [(r["txn_id"], r["amount_fen"]) for r in report["postings"]] == [
        ("split:o1", 2440),
        ("split:o2", 2840),
    ]
    assert report["postings"][1]["at"] == "2025-03-01T17:00:00+00:00"
    assert report["payable_fen"] == 2440 + 2840
    next_day = settlement(txns, "m1", date(2025, 3, 2))
    assert [r["txn_id"] for r in next_day["postings"]] == ["refund:rf1"]
    assert next_day["payable_fen"] == -244
    assert settlement(txns, "m9", day) == {"postings": [], "payable_fen": 0}


# ---------------------------------------------------------------- properties

rules = st.one_of(
    st.builds(Ratio, st.integers(0, 10_000)),
    st.builds(Fixed, st.integers(0, 5_000)),
    st.lists(st.integers(1, 10**8), max_size=3, unique=True).flatmap(
        lambda mins: st.tuples(*(st.integers(0, 10_000) for _ in range(len(mins) + 1))).map(
            lambda bps: Tiered(
                tuple(Tier(lo, bp) for lo, bp in zip([0, *sorted(mins)], bps, strict=True))
            )
        )
    ),
)
levels = st.builds(
    lambda party, rule_, base, n: SplitLevel(
        party, rule_, base, f"b{n}" if party == "brand" else None
    ),
    st.sampled_from(["platform", "brand", "rider"]),
    rules,
    st.sampled_from(["goods", "delivery", "total"]),
    st.integers(1, 3),
)
plans = st.lists(levels, max_size=5).map(lambda ls: SplitPlan(tuple(ls)))
order_amounts = st.builds(
    lambda sub, fee, disc: amounts(sub, fee, min(disc, sub)),
    st.integers(1, 200_000),
    st.integers(0, 3_000),
    st.integers(0, 20_000),
).filter(lambda a: a.total_fen > 0)


@settings(max_examples=150, deadline=None)
@given(plans, order_amounts, st.integers(0, 10**9), st.sampled_from(["r1", None]), st.data())
def test_any_split_is_exact_and_never_pays_a_party_a_negative_share(
    plan: SplitPlan, a: Amounts, volume: int, rider: str | None, data: st.DataObject
) -> None:
    fee = data.draw(st.integers(0, a.total_fen))
    assert SplitPlan.from_dict(plan.as_dict()) == plan
    txn = split(a, plan, fee=fee, volume=volume, rider=rider)
    got = postings_of(txn)
    assert all(type(n) is int for n in got.values())
    assert got.pop(CLEARING) == -a.total_fen
    assert sum(got.values()) == a.total_fen
    assert got.get(FEES, 0) == fee
    for account, n in got.items():
        if account != PLATFORM:
            assert n >= 0
    assert got.get(PLATFORM, 0) >= -a.discount_fen


@settings(max_examples=100, deadline=None)
@given(plans, order_amounts, st.lists(st.integers(1, 50_000), max_size=6), st.data())
def test_refunds_after_a_split_never_take_back_more_than_a_party_holds(
    plan: SplitPlan, a: Amounts, amounts_: list[int], data: st.DataObject
) -> None:
    fee = provider_fee(a.total_fen)
    txns = [capture("o1", "c1", a.total_fen, T0), split(a, plan, fee=fee)]
    first = order_holdings(txns, "o1") or {}
    refunded = 0
    for i, amount in enumerate([*amounts_, None]):
        rest = a.total_fen - refunded
        x = rest if amount is None else min(amount, rest)
        if x == 0:
            continue
        txn = refund(f"r{i}", "o1", "c1", x, a.total_fen, refunded, order_holdings(txns, "o1"), T0)
        txns.append(txn)
        refunded += x
        held = order_holdings(txns, "o1") or {}
        for account, share in first.items():
            if account != PLATFORM:
                assert 0 <= held.get(account, 0) <= share
        assert sum(held.values()) + fee == a.total_fen - refunded
    held = order_holdings(txns, "o1") or {}
    assert {k: v for k, v in held.items() if v} == ({PLATFORM: -fee} if fee else {})
    check_invariants(txns)


# ---------------------------------------------------------------- the ledger as a state machine

PLANS = [
    DEFAULT_PLAN,
    SplitPlan.from_dict(WIRE),
    plan_of(SplitLevel("platform", Fixed(100_000), "goods")),
    plan_of(*(SplitLevel("brand", Ratio(3333), "total", f"b{i}") for i in (1, 2, 3))),
    SplitPlan(()),
]


@dataclass
class OrderModel:
    order_id: str
    customer_id: str
    merchant_id: str
    amounts: Amounts
    paid: bool = False
    split: bool = False
    cancelled: bool = False
    fee: int = 0
    captured: int = 0
    refunded: int = 0
    refunded_before_split: int = 0
    split_out: int = 0
    first_held: dict[str, int] = field(default_factory=dict)
    refunds: int = 0


class Ledger(RuleBasedStateMachine):
    """Orders move through pay, refund, split and cancel against a store that dedups by id."""

    def __init__(self) -> None:
        super().__init__()
        self.orders: dict[str, OrderModel] = {}
        self.txns: list[Transaction] = []
        self.ids: set[str] = set()

    # The store: a transaction lands once, whatever the provider or a retry does.
    def apply(self, txn: Transaction) -> bool:
        if txn.txn_id in self.ids:
            return False
        self.ids.add(txn.txn_id)
        self.txns.append(txn)
        return True

    def pick(self, data: st.DataObject, ok: Any) -> OrderModel:
        return data.draw(st.sampled_from([o for o in self.orders.values() if ok(o)]))

    def any_order(self, ok: Any) -> bool:
        return any(ok(o) for o in self.orders.values())

    @rule(
        customer=st.sampled_from(["c1", "c2", "c3"]),
        merchant=st.sampled_from(["m1", "m2"]),
        subtotal=st.integers(1, 60_000),
        delivery=st.integers(100, 1_500),
        coupon=st.none() | st.integers(1, 8_000),
    )
    def place(
        self, customer: str, merchant: str, subtotal: int, delivery: int, coupon: int | None
    ) -> None:
        oid = f"o{len(self.orders)}"
        discount = min(coupon or 0, subtotal)
        self.orders[oid] = OrderModel(
            oid, customer, merchant, amounts(subtotal, delivery, discount)
        )

    @precondition(lambda self: self.any_order(lambda o: not o.paid))
    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        o = self.pick(data, lambda o: not o.paid)
        assert self.apply(capture(o.order_id, o.customer_id, o.amounts.total_fen, T0))
        o.paid = True
        o.captured = o.amounts.total_fen

    @precondition(lambda self: self.any_order(lambda o: o.paid))
    @rule(data=st.data())
    def duplicate_callback(self, data: st.DataObject) -> None:
        o = self.pick(data, lambda o: o.paid)
        before = list(self.txns)
        assert not self.apply(capture(o.order_id, o.customer_id, o.amounts.total_fen, T0))
        # Any earlier transaction told again (a retried refund, a re-run split) is a no-op too.
        assert not self.apply(data.draw(st.sampled_from(before)))
        assert self.txns == before

    @precondition(lambda self: self.any_order(lambda o: o.paid and not o.split))
    @rule(
        data=st.data(),
        rider=st.sampled_from(["r1", "r2", None]),
        plan=st.sampled_from(PLANS),
        volume=st.sampled_from([0, 9_999_999, 10_000_000, 10**9]),
    )
    def split_on_delivery(
        self, data: st.DataObject, rider: str | None, plan: SplitPlan, volume: int
    ) -> None:
        # A cancelled order is split too: that books the provider's fee.
        o = self.pick(data, lambda o: o.paid and not o.split)
        fee = provider_fee(o.captured)

        def go() -> Transaction:
            return split_capture(
                o.order_id,
                o.merchant_id,
                rider,
                o.amounts,
                o.captured,
                fee,
                volume,
                plan,
                T0 + timedelta(hours=2),
                refunded_fen=o.refunded,
            )

        if o.captured == o.refunded and fee == 0:
            assert_refused("nothing_to_split", go)
            return
        txn = go()
        assert self.apply(txn)
        assert not self.apply(go())
        o.split = True
        o.fee = fee
        o.split_out = o.captured - o.refunded
        o.first_held = order_holdings(self.txns, o.order_id) or {}

    @precondition(lambda self: self.any_order(lambda o: o.paid))
    @rule(data=st.data())
    def partial_refund(self, data: st.DataObject) -> None:
        o = self.pick(data, lambda o: o.paid)
        amount = data.draw(st.integers(1, o.captured + 500))
        held = order_holdings(self.txns, o.order_id) if o.split else None
        assert (held is not None) == o.split
        o.refunds += 1

        def make() -> Transaction:
            return refund(
                f"{o.order_id}-r{o.refunds}",
                o.order_id,
                o.customer_id,
                amount,
                o.captured,
                o.refunded,
                held,
                T0 + timedelta(hours=3),
            )

        if amount > o.captured - o.refunded:
            before = list(self.txns)
            assert_refused("refund_exceeds_payment", make)
            assert self.txns == before
            return
        assert self.apply(make())
        o.refunded += amount
        if not o.split:
            o.refunded_before_split += amount

    @precondition(lambda self: self.any_order(lambda o: o.paid and not o.split and not o.cancelled))
    @rule(data=st.data())
    def cancel_before_split(self, data: st.DataObject) -> None:
        o = self.pick(data, lambda o: o.paid and not o.split and not o.cancelled)
        rest = o.captured - o.refunded
        o.cancelled = True
        if rest:
            assert self.apply(
                refund(
                    f"{o.order_id}-cancel",
                    o.order_id,
                    o.customer_id,
                    rest,
                    o.captured,
                    o.refunded,
                    None,
                    T0 + timedelta(hours=1),
                )
            )
            o.refunded += rest
            o.refunded_before_split += rest

    # ------------------------------------------------------------ invariants

    @invariant()
    def every_transaction_balances_in_int_fen(self) -> None:
        for txn in self.txns:
            assert txn.postings
            assert all(type(p.amount_fen) is int and p.amount_fen != 0 for p in txn.postings)
            assert sum(p.amount_fen for p in txn.postings) == 0

    @invariant()
    def the_whole_ledger_sums_to_zero(self) -> None:
        totals = balances(self.txns)
        assert all(type(n) is int for n in totals.values())
        assert sum(totals.values()) == 0

    @invariant()
    def clearing_holds_captured_minus_refunded_minus_split_out(self) -> None:
        os = self.orders.values()
        expected = sum(o.captured - o.refunded_before_split - o.split_out for o in os)
        assert balances(self.txns).get(CLEARING, 0) == expected

    @invariant()
    def no_customer_gets_back_more_than_they_paid(self) -> None:
        totals = balances(self.txns)
        for c in ("c1", "c2", "c3"):
            paid = -totals.get(customer_payments(c), 0)
            back = totals.get(customer_refunds(c), 0)
            assert 0 <= back <= paid
        for o in self.orders.values():
            assert 0 <= o.refunded <= o.captured

    @invariant()
    def no_transaction_is_applied_twice(self) -> None:
        assert len({t.txn_id for t in self.txns}) == len(self.txns)
        check_invariants(self.txns)

    @invariant()
    def each_split_order_still_adds_up(self) -> None:
        for o in self.orders.values():
            held = order_holdings(self.txns, o.order_id)
            if not o.split:
                assert held is None
                continue
            assert held is not None
            assert sum(held.values()) + o.fee == o.captured - o.refunded
            for account, share in o.first_held.items():
                if account != PLATFORM:
                    assert 0 <= held[account] <= share
            if o.refunded == o.captured:
                assert {k: v for k, v in held.items() if v} == ({PLATFORM: -o.fee} if o.fee else {})


Ledger.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestLedger = Ledger.TestCase
