"""Request bodies of API.md. Responses are the domain's own `as_dict` forms."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from domain.errand_tariff import Category, WeightClass
from domain.errors import DomainError
from domain.geo import INDEXED_LAT_LIMIT
from domain.hours import MAX_SPANS_PER_DAY, OpeningHours
from domain.merchants import DEFAULT_PREP_MINUTES
from domain.promotions import MAX_BODY, MAX_REQUEST_CELLS, MAX_TITLE

# Every integer a caller sends stays below 2^53: JavaScript clients read such numbers
# exactly, and so do Redis's Lua scripts, whose numbers are doubles. Past 2^63 the
# platform could not even store one (orjson and Redis refuse it).
MAX_SAFE_INT = 2**53 - 1

Lat = Annotated[float, Field(ge=-90, le=90)]
Lng = Annotated[float, Field(ge=-180, le=180)]
# A point the platform keeps in a GEO index (a merchant, a rider, a point searched
# around): Redis's GEO sets hold latitudes within Web Mercator's limit only.
IndexedLat = Annotated[
    float,
    Field(
        ge=-INDEXED_LAT_LIMIT,
        le=INDEXED_LAT_LIMIT,
        description=f"within {INDEXED_LAT_LIMIT} degrees of the equator (Redis's GEO limit)",
    ),
]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.:]+$")]
Fen = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Version = Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
# Orders of a party already listed: an offset, or empty for the start.
Offset = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)] | Literal[""]

STREAM_ID_LIMIT = 2**64


def _within_streams(cursor: str) -> str:
    """A Redis stream id is two unsigned 64-bit numbers; nothing follows the largest."""
    if cursor:
        ms, _, seq = cursor.partition("-")
        at = (int(ms), int(seq or 0))
        if max(at) >= STREAM_ID_LIMIT or at == (STREAM_ID_LIMIT - 1, STREAM_ID_LIMIT - 1):
            raise ValueError("cursor is past the largest stream id")
    return cursor


# Where a terminal's stream resumes: an event's `cursor`, `<ms>` alone, or empty for the
# oldest retained. ASCII digits only: Python's `int` would read other scripts' digits,
# Redis would not.
Cursor = Annotated[
    str,
    Field(
        max_length=41,
        pattern=r"^(?:[0-9]{1,20}(?:-[0-9]{1,20})?)?$",
        description="an event's cursor (a stream id like `1700000000000-0`), or empty",
    ),
    AfterValidator(_within_streams),
]

JSON_DEPTH_LIMIT = 8


def _plain_json(value: Any, depth: int = 0) -> Any:
    if depth > JSON_DEPTH_LIMIT:
        raise ValueError(f"nested deeper than {JSON_DEPTH_LIMIT} levels")
    if isinstance(value, dict):
        for item in value.values():
            _plain_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _plain_json(item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INT:
        raise ValueError(f"integers lie within +-{MAX_SAFE_INT}")
    return value


# Free-form JSON the domain reads itself (a split plan), with the integers bounded like
# every other: the domain names what it refuses and echoes it back.
PlainJson = Annotated[dict[str, JsonValue], AfterValidator(_plain_json)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DevTokenIn(Strict):
    role: Literal["customer", "merchant", "rider", "admin"]
    sub: Id


class DeliveryRangeIn(Strict):
    radius_m: Annotated[int, Field(gt=0, le=50_000)] | None = None
    polygon: Annotated[list[tuple[Lat, Lng]], Field(min_length=3, max_length=500)] | None = None

    @model_validator(mode="after")
    def one_kind(self) -> DeliveryRangeIn:
        if (self.radius_m is None) == (self.polygon is None):
            raise ValueError("give exactly one of radius_m or polygon")
        return self


# A time of day in the city's local time; 24:00 ends a span at midnight.
TimeOfDay = Annotated[str, Field(pattern=r"^(?:(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]
DaySpans = Annotated[
    list[tuple[TimeOfDay, TimeOfDay]],
    Field(
        max_length=MAX_SPANS_PER_DAY,
        description='`[["09:00", "21:00"], ...]`; an end not after its start is the next day',
    ),
]


class OpeningHoursIn(Strict):
    """A weekly schedule in the city's local time (`O2O_CITY_UTC_OFFSET_MIN`); a weekday
    left out has no span of its own. `domain/hours.py` says what it means."""

    mon: DaySpans | None = None
    tue: DaySpans | None = None
    wed: DaySpans | None = None
    thu: DaySpans | None = None
    fri: DaySpans | None = None
    sat: DaySpans | None = None
    sun: DaySpans | None = None

    @model_validator(mode="after")
    def a_schedule(self) -> OpeningHoursIn:
        try:
            OpeningHours.from_dict(self.model_dump(exclude_none=True))
        except DomainError as err:
            raise ValueError(err.message) from None
        return self


class MerchantIn(Strict):
    id: Id | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    lat: IndexedLat
    lng: Lng
    delivery: DeliveryRangeIn
    prep_minutes: Annotated[
        int, Field(ge=0, le=240, description="a shop's is 0 whatever is sent: ready on accept")
    ] = DEFAULT_PREP_MINUTES
    accept_mode: Literal["manual", "auto"] = "manual"
    split_plan: PlainJson = Field(default_factory=dict)
    kind: Literal["restaurant", "shop"] = "restaurant"
    # Left out: always open.
    opening_hours: OpeningHoursIn | None = None


class MenuItemIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    price_fen: Annotated[int, Field(ge=0, le=100_000_000)]
    stock: Annotated[int, Field(ge=0, le=1_000_000_000)]
    available: bool = True


class OrderItemIn(Strict):
    item_id: Id
    qty: Annotated[int, Field(gt=0, le=1000)]


class DeliveryIn(Strict):
    lat: Lat
    lng: Lng
    address: Annotated[str, Field(max_length=500)] = ""
    # Digits with an optional leading + and separators, as people write them.
    phone: Annotated[str, Field(max_length=24, pattern=r"^(\+?[0-9][0-9 ()-]{2,22})?$")] = ""


class OrderIn(Strict):
    merchant_id: Id
    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=100)]
    delivery: DeliveryIn
    coupon_code: Id | None = None
    expected_total_fen: Fen | None = None
    # The menu version the customer ordered from; a stale one needs expected_total_fen.
    menu_version: Annotated[int, Field(ge=0, le=MAX_SAFE_INT)] | None = None


class ExpectVersion(Strict):
    expected_version: Version | None = None


class CancelIn(ExpectVersion):
    reason: Annotated[str, Field(max_length=500)] = "customer_cancelled"


class AcceptIn(ExpectVersion):
    prep_minutes: Annotated[int, Field(ge=0, le=240)] | None = None


class RejectIn(ExpectVersion):
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class RiderStatusIn(Strict):
    online: bool
    lat: IndexedLat | None = None
    lng: Lng | None = None


class LocationIn(Strict):
    lat: IndexedLat
    lng: Lng


class CouponIn(Strict):
    code: Id
    discount_fen: Annotated[int, Field(gt=0, le=MAX_SAFE_INT)] | None = None
    percent: Annotated[int, Field(gt=0, le=100)] | None = None
    min_spend_fen: Fen = 0
    total: Annotated[int, Field(gt=0, le=100_000_000)]
    per_customer_limit: Annotated[int, Field(gt=0, le=100_000_000)] = 1
    starts_at: datetime
    ends_at: datetime

    @model_validator(mode="after")
    def one_discount(self) -> CouponIn:
        if (self.discount_fen is None) == (self.percent is None):
            raise ValueError("give exactly one of discount_fen or percent")
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("times need a timezone (RFC 3339)")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class SyncQuery(Strict):
    """What a sync socket's address carries besides its token: a customer's device may
    say where it is (`lat` and `lng` together), for the promotions of its cell."""

    cursor: Cursor | None = None
    viewing: Id | None = None
    lat: Lat | None = None
    lng: Lng | None = None

    @model_validator(mode="after")
    def both_or_neither(self) -> SyncQuery:
        if (self.lat is None) != (self.lng is None):
            raise ValueError("give lat and lng together")
        return self


class RefundIn(Strict):
    amount_fen: Annotated[int, Field(gt=0, le=MAX_SAFE_INT)]
    reason: Annotated[str, Field(max_length=500)] = "partial refund"


# An h3 cell id as h3 writes it (15 hex digits); whether it is a real cell, and at which
# resolution, is the domain's to say (`domain/promotions.py`).
H3Cell = Annotated[
    str,
    Field(min_length=15, max_length=15, pattern=r"^[0-9A-Fa-f]{15}$", description="an h3 cell id"),
]


class PromotionIn(Strict):
    """A regional promotion: a coupon (an existing platform coupon) or a banner, for the
    customers of `cells` (at the zones' resolution or coarser) while it is valid."""

    cells: Annotated[list[H3Cell], Field(min_length=1, max_length=MAX_REQUEST_CELLS)]
    kind: Literal["coupon", "banner"]
    coupon_code: Id | None = None
    title: Annotated[str, Field(min_length=1, max_length=MAX_TITLE)]
    body: Annotated[str, Field(max_length=MAX_BODY)] = ""
    starts_at: datetime
    ends_at: datetime


class HomeIn(Strict):
    """Where a customer lives: only its h3 cell at the zones' resolution is kept."""

    lat: Lat
    lng: Lng


# -- errands (`domain/errands.py`) ---------------------------------------------------

PhoneNumber = Annotated[
    str, Field(min_length=3, max_length=24, pattern=r"^\+?[0-9][0-9 ()-]{2,22}$")
]
ContactName = Annotated[str, Field(min_length=1, max_length=100)]
StreetAddress = Annotated[str, Field(min_length=1, max_length=500)]


class ErrandPointIn(Strict):
    # Riders are found around it in the zones' GEO sets: within Redis's GEO limit.
    lat: IndexedLat
    lng: Lng


class ErrandPickupIn(ErrandPointIn):
    """A: where the rider takes the item, from whom, and what the rider should know."""

    address: StreetAddress
    contact_name: ContactName
    contact_phone: PhoneNumber
    note: Annotated[str, Field(max_length=500)] = ""


class ErrandDropoffIn(ErrandPointIn):
    """B: where the rider hands the item over, and to whom."""

    address: StreetAddress
    contact_name: ContactName
    contact_phone: PhoneNumber


class ErrandQuoteIn(Strict):
    """What an errand's price depends on: its two places and the weight class."""

    pickup: ErrandPointIn
    dropoff: ErrandPointIn
    weight_class: WeightClass
    category: Category = "other"


class ErrandIn(Strict):
    pickup: ErrandPickupIn
    dropoff: ErrandDropoffIn
    category: Category
    weight_class: WeightClass
    # The quote's total: a different price now is 409 `price_changed`.
    expected_total_fen: Fen | None = None


class ProofIn(Strict):
    """A rider's proof at an errand's pickup or door: the code the person there gave."""

    code: (
        Annotated[
            str,
            Field(pattern=r"^[0-9]{4,6}$", description="the errand's pickup or delivery code"),
        ]
        | None
    ) = None


# -- the customer's address book and an order's door ---------------------------------

AddressText = Annotated[str, Field(min_length=1, max_length=500)]
Phone = Annotated[str, Field(max_length=24, pattern=r"^(\+?[0-9][0-9 ()-]{2,22})?$")]
Label = Annotated[str, Field(max_length=40, description='what the customer calls it ("home")')]


class AddressIn(Strict):
    lat: Lat
    lng: Lng
    address: AddressText
    phone: Phone = ""
    label: Label = ""
    # The first address of a book is its default whatever this says.
    default: bool = False


class AddressChangeIn(Strict):
    """What changes of an address; what is left out stays. `lat` and `lng` go together."""

    lat: Lat | None = None
    lng: Lng | None = None
    address: AddressText | None = None
    phone: Phone | None = None
    label: Label | None = None
    expected_version: Version | None = None

    @model_validator(mode="after")
    def point_whole(self) -> AddressChangeIn:
        if (self.lat is None) != (self.lng is None):
            raise ValueError("give lat and lng together")
        return self


class DeliveryChangeIn(Strict):
    """An order's new door; the address or phone left out stays as it was."""

    lat: Lat
    lng: Lng
    address: Annotated[str, Field(max_length=500)] | None = None
    phone: Phone | None = None
    # The fee the customer was shown for the new door: another re-quote is 409 `fee_changed`.
    expected_delivery_fee_fen: Fen | None = None
    expected_version: Version | None = None
