"""Operations' figures: the window's counters, hot zones with what they lack, waiting orders."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from domain.dispatch import STALE_AFTER
from domain.geo import zones_around
from domain.operations import riders_needed
from serve_app.services import Services

# Hot zones shown, busiest first, and spare neighbours suggested for each.
HOT_ZONES = 10
SPARE_NEIGHBOURS = 5


async def figures(app: Services, now: datetime, window_min: int) -> dict[str, Any]:
    summary = await app.metrics.summary(now, window_min)
    zone_orders: dict[str, int] = summary.pop("zone_orders")
    waiting = {
        zone: {"orders": count, "oldest_s": round(time.time() - since, 1)}
        for zone, (count, since) in (await app.offers.waiting_by_zone()).items()
    }
    hot: list[dict[str, Any]] = []
    zones = sorted(set(zone_orders) | set(waiting), key=lambda z: -zone_orders.get(z, 0))
    for zone in zones[:HOT_ZONES]:
        idle = await _idle(app, zone)
        hot.append(
            {
                "zone": zone,
                "orders": zone_orders.get(zone, 0),
                "waiting": waiting.get(zone, {}).get("orders", 0),
                "idle_riders": idle,
                "riders_needed": riders_needed(zone_orders.get(zone, 0), window_min, idle),
            }
        )
    for entry in hot:
        if entry["riders_needed"] > 0:
            entry["move_from"] = await _spare_near(app, entry["zone"], hot)
    return {**summary, "hot_zones": hot, "waiting": waiting}


async def _idle(app: Services, zone: str) -> int:
    return await app.riders.idle_in(zone, STALE_AFTER.total_seconds())


async def _spare_near(app: Services, zone: str, hot: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neighbouring zones with idle riders and no unmet demand of their own."""
    short = {h["zone"] for h in hot if h["riders_needed"] > 0}
    spare = []
    for near in zones_around(zone, 2)[1:]:
        if near in short:
            continue
        idle = await _idle(app, near)
        if idle:
            spare.append({"zone": near, "idle_riders": idle})
    return spare[:SPARE_NEIGHBOURS]
