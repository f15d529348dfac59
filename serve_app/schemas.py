"""Request bodies of API.md. Responses are the domain's own `as_dict` forms."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.merchants import DEFAULT_PREP_MINUTES

Lat = Annotated[float, Field(ge=-90, le=90)]
Lng = Annotated[float, Field(ge=-180, le=180)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.:]+$")]


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


class MerchantIn(Strict):
    id: Id | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    lat: Lat
    lng: Lng
    delivery: DeliveryRangeIn
    prep_minutes: Annotated[int, Field(ge=0, le=240)] = DEFAULT_PREP_MINUTES
    accept_mode: Literal["manual", "auto"] = "manual"
    split_plan: dict[str, object] = Field(default_factory=dict)


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


class OrderIn(Strict):
    merchant_id: Id
    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=100)]
    delivery: DeliveryIn
    coupon_code: Id | None = None
    expected_total_fen: Annotated[int, Field(ge=0)] | None = None
    # The menu version the customer ordered from; a stale one needs expected_total_fen.
    menu_version: Annotated[int, Field(ge=0)] | None = None


class ExpectVersion(Strict):
    expected_version: Annotated[int, Field(ge=1)] | None = None


class CancelIn(ExpectVersion):
    reason: Annotated[str, Field(max_length=500)] = "customer_cancelled"


class AcceptIn(ExpectVersion):
    prep_minutes: Annotated[int, Field(ge=0, le=240)] | None = None


class RejectIn(ExpectVersion):
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class RiderStatusIn(Strict):
    online: bool
    lat: Lat | None = None
    lng: Lng | None = None


class LocationIn(Strict):
    lat: Lat
    lng: Lng


class CouponIn(Strict):
    code: Id
    discount_fen: Annotated[int, Field(gt=0)] | None = None
    percent: Annotated[int, Field(gt=0, le=100)] | None = None
    min_spend_fen: Annotated[int, Field(ge=0)] = 0
    total: Annotated[int, Field(gt=0, le=100_000_000)]
    per_customer_limit: Annotated[int, Field(gt=0)] = 1
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


class RefundIn(Strict):
    amount_fen: Annotated[int, Field(gt=0)]
    reason: Annotated[str, Field(max_length=500)] = "partial refund"
