"""What the operations dashboard draws beside `/v1/admin/metrics`: the city around a
point (merchants, online riders, open orders, zones with their demand) and the last
hour's figures per minute."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import h3
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from domain.dispatch import STALE_AFTER
from domain.geo import Point, require_indexable, zone_of, zones_around
from serve_app.auth import Caller
from serve_app.deps import admin, services
from serve_app.schemas import IndexedLat, Lng
from serve_app.services import Services, as_json, now
from storage.city import CityStore

router = APIRouter()

# The widest view: about a city centre. Its zones (a disk of h3 cells) stay a few
# hundred at resolution 7, and so does the answer.
MAX_RADIUS_M = 15_000
MAX_RINGS = 12


@router.get("/v1/admin/city")
async def city(
    lat: IndexedLat,
    lng: Lng,
    radius_m: int = Query(6000, ge=100, le=MAX_RADIUS_M),
    window_min: int = Query(15, gt=0, le=1440),
    who: Caller = Depends(admin),
    app: Services = Depends(services),
) -> Response:
    """The city around a point as the dashboard's map shows it."""
    center = Point(lat, lng)
    require_indexable(center, "the view's centre")
    store = CityStore(app.redis)
    zones = zones_in_view(center, radius_m, app.settings.zone_resolution)
    merchants = await store.merchants_near(lat, lng, radius_m)
    riders = await store.riders_near(zones, lat, lng, radius_m)
    orders = await store.open_orders_of([m.id for m in merchants])
    _, zone_orders = await app.metrics.window(now(), window_min)
    waiting = await app.offers.waiting_by_zone()
    fresh_after = time.time() - STALE_AFTER.total_seconds()
    return as_json(
        {
            "at": now().isoformat(),
            "center": {"lat": lat, "lng": lng},
            "radius_m": radius_m,
            "window_minutes": window_min,
            "merchants": merchants,
            "riders": [
                {
                    **asdict(rider),
                    "carrying": rider.load > 0,
                    "fresh": rider.seen_at > fresh_after,
                }
                for rider in riders
            ],
            "orders": orders,
            "zones": [
                {
                    "zone": zone,
                    "center": list(h3.cell_to_latlng(zone)),
                    "boundary": [list(vertex) for vertex in h3.cell_to_boundary(zone)],
                    "orders": zone_orders.get(zone, 0),
                    "waiting": waiting[zone][0] if zone in waiting else 0,
                }
                for zone in zones
            ],
        }
    )


def zones_in_view(center: Point, radius_m: float, resolution: int) -> list[str]:
    """The zones around a point out to `radius_m`, the point's own zone first."""
    # Neighbouring cell centres are sqrt(3) edges apart; one more ring covers the corners.
    spacing_m = math.sqrt(3) * h3.average_hexagon_edge_length(resolution, unit="m")
    rings = min(MAX_RINGS, math.ceil(radius_m / spacing_m) + 1)
    return zones_around(zone_of(center, resolution), rings)


@router.get("/v1/admin/metrics/series")
async def metrics_series(
    minutes: int = Query(60, gt=0, le=1440),
    who: Caller = Depends(admin),
    app: Services = Depends(services),
) -> Response:
    """The figures of each of the last `minutes` minutes, oldest first (the dashboard's chart)."""
    rows = await app.metrics.per_minute(now(), minutes)
    return as_json({"minutes": minutes, "series": [_figures_of(m, c) for m, c in rows]})


def _figures_of(minute: int, counts: dict[str, int]) -> dict[str, Any]:
    delivered = counts.get("delivered", 0)
    offers = counts.get("offers", 0)
    return {
        "minute": datetime.fromtimestamp(minute * 60, UTC).isoformat(),
        "orders": counts.get("orders", 0),
        "gmv_fen": counts.get("gmv_fen", 0),
        "delivered": delivered,
        "avg_delivery_minutes": (
            round(counts.get("delivery_seconds", 0) / delivered / 60, 1) if delivered else None
        ),
        "offers": offers,
        "offers_accepted": counts.get("offers_accepted", 0),
        "dispatch_success_rate": (
            round(counts.get("offers_accepted", 0) / offers, 3) if offers else None
        ),
        "onboarded": counts.get("onboarded", 0),
    }
