from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import DomainError
from domain.geo import Point, PolygonRange, RadiusRange, distance_m
from domain.merchants import MenuItem, Merchant, Requested, price_order
from domain.pricing import Amounts, Coupon, DeliveryTariff, Line

T0 = datetime(2025, 3, 1, 11, 30, tzinfo=UTC)
TARIFF = DeliveryTariff(base_fen=300, base_m=3000, per_km_fen=100)
SHOP = Point(39.9087, 116.3975)
NEARBY = Point(39.9150, 116.4040)  # under 1 km away
FAR_AWAY = Point(39.9987, 116.3975)  # about 10 km north

MERCHANT = Merchant(id="m-1", name="Noodle House", location=SHOP, delivery=RadiusRange(3000))
MENU = {
    "noodles": MenuItem("noodles", "Beef noodles", 1200),
    "tea": MenuItem("tea", "Milk tea", 600),
    "dumplings": MenuItem("dumplings", "Dumplings", 1800, available=False),
}


def order(*requested: Requested, **overrides: object) -> tuple[tuple[Line, ...], Amounts]:
    args: dict[str, object] = {
        "merchant": MERCHANT,
        "menu": MENU,
        "requested": list(requested),
        "dropoff": NEARBY,
        "tariff": TARIFF,
        "coupon": None,
        "at": T0,
        "utc_offset_min": 480,
    }
    args.update(overrides)
    return price_order(**args)  # type: ignore[arg-type]


def refusal(*requested: Requested, **overrides: object) -> DomainError:
    with pytest.raises(DomainError) as err:
        order(*requested, **overrides)
    return err.value


def test_prices_an_order() -> None:
    lines, amounts = order(Requested("noodles", 2), Requested("tea", 1))
    assert lines == (Line("noodles", "Beef noodles", 2, 1200), Line("tea", "Milk tea", 1, 600))
    assert amounts == Amounts(
        subtotal_fen=3000, delivery_fee_fen=300, discount_fen=0, total_fen=3300
    )


def test_the_fee_follows_the_distance_to_the_dropoff() -> None:
    merchant = replace(MERCHANT, delivery=RadiusRange(20_000))
    dropoff = Point(39.9537, 116.3975)
    assert 5000 < distance_m(SHOP, dropoff) < 6000
    _, amounts = order(Requested("tea", 1), merchant=merchant, dropoff=dropoff)
    assert amounts.delivery_fee_fen == TARIFF.fee_fen(distance_m(SHOP, dropoff)) == 600
    assert amounts.total_fen == 600 + 600


def test_a_coupon_is_applied() -> None:
    coupon = Coupon(
        "LUNCH5",
        min_spend_fen=2000,
        starts_at=T0 - timedelta(hours=1),
        ends_at=T0 + timedelta(hours=1),
        discount_fen=500,
    )
    _, amounts = order(Requested("noodles", 2), coupon=coupon)
    assert amounts == Amounts(2400, 300, 500, 2200)


def test_duplicate_item_lines_are_merged_in_first_seen_order() -> None:
    lines, amounts = order(
        Requested("tea", 1), Requested("noodles", 1), Requested("tea", 2), Requested("noodles", 1)
    )
    assert lines == (Line("tea", "Milk tea", 3, 600), Line("noodles", "Beef noodles", 2, 1200))
    assert amounts.subtotal_fen == 3 * 600 + 2 * 1200


def test_a_closed_merchant_is_unavailable() -> None:
    err = refusal(Requested("noodles", 1), merchant=replace(MERCHANT, open=False))
    assert err.code == "merchant_unavailable"


def test_a_closed_merchant_is_reported_before_anything_else() -> None:
    err = refusal(Requested("nope", 0), merchant=replace(MERCHANT, open=False), dropoff=FAR_AWAY)
    assert err.code == "merchant_unavailable"


def test_outside_the_delivery_radius() -> None:
    err = refusal(Requested("noodles", 1), dropoff=FAR_AWAY)
    assert err.code == "outside_delivery_range"
    assert err.details == {"merchant_id": "m-1"}


def test_outside_a_delivery_polygon() -> None:
    polygon = PolygonRange(
        (Point(39.90, 116.39), Point(39.90, 116.41), Point(39.92, 116.41), Point(39.92, 116.39))
    )
    merchant = replace(MERCHANT, delivery=polygon)
    assert order(Requested("tea", 1), merchant=merchant, dropoff=NEARBY)[1].subtotal_fen == 600
    err = refusal(Requested("tea", 1), merchant=merchant, dropoff=Point(39.93, 116.40))
    assert err.code == "outside_delivery_range"


def test_an_unknown_item() -> None:
    err = refusal(Requested("noodles", 1), Requested("pizza", 1))
    assert err.code == "item_not_found"
    assert err.details == {"item_id": "pizza"}


def test_an_unavailable_item() -> None:
    err = refusal(Requested("noodles", 1), Requested("dumplings", 1))
    assert err.code == "item_unavailable"
    assert err.details == {"item_id": "dumplings"}


@pytest.mark.parametrize("qty", [0, -1])
def test_a_non_positive_qty_is_invalid(qty: int) -> None:
    err = refusal(Requested("noodles", qty))
    assert err.code == "invalid_request"
    assert err.details == {"item_id": "noodles"}


def test_a_negative_line_cannot_cancel_out_a_duplicate() -> None:
    err = refusal(Requested("noodles", 3), Requested("noodles", -1))
    assert err.code == "invalid_request"


def test_an_empty_order_is_invalid() -> None:
    assert refusal().code == "invalid_request"


def test_menu_item_price_must_not_be_negative() -> None:
    with pytest.raises(DomainError) as err:
        MenuItem("x", "X", -1)
    assert err.value.code == "invalid_request"


@pytest.mark.parametrize(
    "merchant",
    [
        MERCHANT,
        replace(
            MERCHANT,
            delivery=PolygonRange((Point(39.9, 116.39), Point(39.9, 116.41), Point(39.92, 116.4))),
            accept_mode="auto",
            prep_minutes=20,
            split_plan={"platform": 0.1},
            open=False,
        ),
    ],
    ids=["radius", "polygon"],
)
def test_merchant_round_trips_through_its_dict(merchant: Merchant) -> None:
    assert Merchant.from_dict(merchant.as_dict()) == merchant


def test_merchant_from_a_minimal_dict_takes_defaults() -> None:
    merchant = Merchant.from_dict(
        {"id": "m-2", "name": "Tea", "lat": 39.9, "lng": 116.4, "delivery": {"radius_m": 2000}}
    )
    assert merchant.open
    assert merchant.accept_mode == "manual"
    assert merchant.prep_minutes == 15
    assert merchant.delivery == RadiusRange(2000)
