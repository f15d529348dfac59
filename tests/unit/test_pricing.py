from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from domain.errors import DomainError
from domain.pricing import Amounts, Coupon, DeliveryTariff, Line, quote

T0 = datetime(2025, 3, 1, 11, 30, tzinfo=UTC)
START = T0 - timedelta(days=1)
END = T0 + timedelta(days=1)
TARIFF = DeliveryTariff(base_fen=300, base_m=3000, per_km_fen=100)


def fixed(discount: int, min_spend: int = 0) -> Coupon:
    return Coupon(
        "SAVE", min_spend_fen=min_spend, starts_at=START, ends_at=END, discount_fen=discount
    )


def percent(pct: int, min_spend: int = 0) -> Coupon:
    return Coupon("PCT", min_spend_fen=min_spend, starts_at=START, ends_at=END, percent=pct)


def is_fen(value: object) -> bool:
    return type(value) is int


# ---------------------------------------------------------------- lines and subtotal


def test_line_total_is_qty_times_price() -> None:
    line = Line("i-1", "Dumplings", 3, 1250)
    assert line.total_fen == 3750
    assert is_fen(line.total_fen)


@pytest.mark.parametrize("qty", [0, -1])
def test_line_needs_a_positive_qty(qty: int) -> None:
    with pytest.raises(DomainError) as err:
        Line("i-1", "Dumplings", qty, 1250)
    assert err.value.code == "invalid_request"
    assert err.value.details == {"item_id": "i-1"}


def test_line_price_must_not_be_negative() -> None:
    with pytest.raises(DomainError) as err:
        Line("i-1", "Dumplings", 1, -1)
    assert err.value.code == "invalid_request"


def test_a_free_line_is_allowed() -> None:
    assert Line("i-1", "Chopsticks", 2, 0).total_fen == 0


def test_subtotal_sums_every_line() -> None:
    lines = [Line("a", "A", 2, 1200), Line("b", "B", 1, 600), Line("c", "C", 5, 1)]
    amounts = quote(lines, 0, TARIFF)
    assert amounts.subtotal_fen == 2400 + 600 + 5


def test_quote_accepts_any_iterable_of_lines() -> None:
    amounts = quote((Line(str(i), "x", 1, 100) for i in range(3)), 0, TARIFF)
    assert amounts.subtotal_fen == 300


@pytest.mark.parametrize("lines", [[], [Line("free", "Napkin", 3, 0)]], ids=["empty", "free"])
def test_an_order_needs_something_priced(lines: list[Line]) -> None:
    with pytest.raises(DomainError) as err:
        quote(lines, 0, TARIFF)
    assert err.value.code == "invalid_request"


# ---------------------------------------------------------------- delivery fee


@pytest.mark.parametrize(
    ("distance_m", "fee"),
    [
        (0, 300),
        (1, 300),
        (2999.9, 300),
        (3000, 300),  # exactly base_m: no extra kilometre
        (3000.0001, 400),
        (3001, 400),  # 1 m over: one started kilometre
        (3999, 400),
        (4000, 400),
        (4001, 500),
        (5000, 500),
        (5001, 600),
        (10_000, 1000),
        (12_345, 1300),
    ],
)
def test_fee_by_distance(distance_m: float, fee: int) -> None:
    assert TARIFF.fee_fen(distance_m) == fee
    assert is_fen(TARIFF.fee_fen(distance_m))


@pytest.mark.parametrize(("distance_m", "fee"), [(4000.5, 500), (5000.25, 600)])
def test_a_started_kilometre_counts_for_fractional_distances(distance_m: float, fee: int) -> None:
    assert TARIFF.fee_fen(distance_m) == fee


def test_default_tariff() -> None:
    tariff = DeliveryTariff()
    assert (tariff.fee_fen(3000), tariff.fee_fen(3001)) == (300, 400)


def test_custom_tariff() -> None:
    tariff = DeliveryTariff(base_fen=500, base_m=2000, per_km_fen=250)
    assert tariff.fee_fen(2000) == 500
    assert tariff.fee_fen(2001) == 750
    assert tariff.fee_fen(4500) == 1250


@given(st.integers(0, 200_000), st.integers(0, 200_000))
def test_fee_never_falls_as_distance_grows(a: int, b: int) -> None:
    near, far = sorted((a, b))
    assert TARIFF.fee_fen(near) <= TARIFF.fee_fen(far)


@given(
    st.integers(0, 200_000),
    st.integers(0, 2000),
    st.integers(0, 10_000),
    st.integers(0, 1000),
)
def test_fee_on_whole_metres_matches_started_kilometres(
    distance: int, base_fen: int, base_m: int, per_km_fen: int
) -> None:
    tariff = DeliveryTariff(base_fen=base_fen, base_m=base_m, per_km_fen=per_km_fen)
    started_km = -(-max(0, distance - base_m) // 1000)
    assert tariff.fee_fen(distance) == base_fen + started_km * per_km_fen


# ---------------------------------------------------------------- coupons


def test_fixed_coupon_takes_its_amount_off() -> None:
    assert fixed(500).discount_on(3000, T0) == 500


def test_fixed_coupon_never_exceeds_the_subtotal() -> None:
    assert fixed(5000).discount_on(3000, T0) == 3000


@pytest.mark.parametrize(
    ("pct", "subtotal", "discount"),
    [
        (10, 3000, 300),
        (15, 1010, 152),  # 151.5 rounds up
        (15, 1003, 150),  # 150.45 rounds down
        (10, 5, 1),  # 0.5 rounds up
        (10, 4, 0),  # 0.4 rounds down
        (1, 50, 1),
        (1, 49, 0),
        (33, 1, 0),
        (50, 1, 1),  # 0.5 rounds up
        (100, 1234, 1234),
    ],
)
def test_percent_coupon_rounds_half_up(pct: int, subtotal: int, discount: int) -> None:
    got = percent(pct).discount_on(subtotal, T0)
    assert got == discount
    assert is_fen(got)


def test_min_spend_met_exactly_is_enough() -> None:
    assert fixed(500, min_spend=3000).discount_on(3000, T0) == 500


@pytest.mark.parametrize("at", [START, END - timedelta(microseconds=1)], ids=["start", "last"])
def test_coupon_is_valid_inside_its_window(at: datetime) -> None:
    assert fixed(500).discount_on(3000, at) == 500


def test_below_min_spend_is_coupon_unavailable() -> None:
    with pytest.raises(DomainError) as err:
        fixed(500, min_spend=3000).discount_on(2999, T0)
    assert err.value.code == "coupon_unavailable"
    assert err.value.details == {"code": "SAVE", "min_spend_fen": 3000}


@pytest.mark.parametrize(
    "at", [START - timedelta(microseconds=1), END, END + timedelta(days=3)], ids=str
)
def test_outside_the_window_is_coupon_unavailable(at: datetime) -> None:
    with pytest.raises(DomainError) as err:
        fixed(500).discount_on(3000, at)
    assert err.value.code == "coupon_unavailable"
    assert err.value.details == {"code": "SAVE"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"discount_fen": 100, "percent": 10},
        {"discount_fen": 0, "percent": 0},
        {"discount_fen": -100, "percent": 10},
        {"percent": 101},
        {"discount_fen": 100, "min_spend_fen": -1},
        {"discount_fen": 100, "ends_at": START},
    ],
    ids=["both", "neither", "negative-fixed", "over-100", "negative-min", "empty-window"],
)
def test_a_malformed_coupon_is_invalid(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "code": "BAD",
        "min_spend_fen": 0,
        "starts_at": START,
        "ends_at": END,
    }
    fields.update(kwargs)
    with pytest.raises(DomainError) as err:
        Coupon(**fields)  # type: ignore[arg-type]
    assert err.value.code == "invalid_request"
    assert err.value.details == {"code": "BAD"}


# ---------------------------------------------------------------- quote


def test_quote_without_coupon() -> None:
    amounts = quote([Line("a", "A", 2, 1200), Line("b", "B", 1, 600)], 4200, TARIFF)
    assert amounts == Amounts(
        subtotal_fen=3000, delivery_fee_fen=500, discount_fen=0, total_fen=3500
    )


def test_quote_with_fixed_coupon() -> None:
    amounts = quote([Line("a", "A", 2, 1200)], 1000, TARIFF, fixed(400, min_spend=2000), T0)
    assert amounts == Amounts(2400, 300, 400, 2300)


def test_quote_with_percent_coupon() -> None:
    amounts = quote([Line("a", "A", 1, 1010)], 3001, TARIFF, percent(15), T0)
    assert amounts == Amounts(1010, 400, 152, 1258)


def test_a_discount_never_reaches_the_delivery_fee() -> None:
    amounts = quote([Line("a", "A", 1, 800)], 5000, TARIFF, fixed(5000), T0)
    assert amounts.discount_fen == 800
    assert amounts.total_fen == amounts.delivery_fee_fen == 500


def test_a_coupon_needs_the_time_of_the_order() -> None:
    with pytest.raises(DomainError) as err:
        quote([Line("a", "A", 1, 800)], 0, TARIFF, fixed(100))
    assert err.value.code == "invalid_request"


def test_amounts_as_dict() -> None:
    assert Amounts(3000, 400, 500, 2900).as_dict() == {
        "subtotal_fen": 3000,
        "delivery_fee_fen": 400,
        "discount_fen": 500,
        "total_fen": 2900,
    }


_lines = st.lists(
    st.builds(
        Line,
        item_id=st.text(min_size=1, max_size=5),
        name=st.just("item"),
        qty=st.integers(1, 50),
        price_fen=st.integers(0, 100_000),
    ),
    min_size=1,
    max_size=8,
)
_tariffs = st.builds(
    DeliveryTariff,
    base_fen=st.integers(0, 2000),
    base_m=st.integers(0, 10_000),
    per_km_fen=st.integers(0, 1000),
)
_distances = st.floats(0, 100_000, allow_nan=False)


@st.composite
def _coupons(draw: st.DrawFn, subtotal: int) -> Coupon | None:
    kind = draw(st.sampled_from(["none", "fixed", "percent"]))
    if kind == "none":
        return None
    # The min spend stays reachable: refusals are covered above, the sums are checked here.
    min_spend = draw(st.integers(0, subtotal))
    if kind == "fixed":
        return fixed(draw(st.integers(1, 2 * subtotal + 1)), min_spend=min_spend)
    return percent(draw(st.integers(1, 100)), min_spend=min_spend)


@given(_lines, _distances, _tariffs, st.data())
def test_total_is_subtotal_plus_fee_minus_discount(
    lines: list[Line], distance: float, tariff: DeliveryTariff, data: st.DataObject
) -> None:
    subtotal = sum(line.total_fen for line in lines)
    assume(subtotal > 0)
    coupon = data.draw(_coupons(subtotal))

    amounts = quote(lines, distance, tariff, coupon, T0)

    values = amounts.as_dict().values()
    assert all(is_fen(v) and v >= 0 for v in values)
    assert amounts.subtotal_fen == subtotal
    assert (
        amounts.total_fen == amounts.subtotal_fen + amounts.delivery_fee_fen - amounts.discount_fen
    )
    assert amounts.discount_fen <= amounts.subtotal_fen
    assert amounts.delivery_fee_fen >= tariff.base_fen
    assert amounts.total_fen >= amounts.delivery_fee_fen
    if coupon is None:
        assert amounts.discount_fen == 0
