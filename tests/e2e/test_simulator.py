"""The city simulator drives a small world of its own through the running platform."""

from __future__ import annotations

import asyncio
from typing import Any

from cluster.launcher import Platform
from loadtests.simulator import run_simulation
from tests.e2e.conftest import unique

SEED = 1


def simulate(platform: Platform) -> dict[str, Any]:
    # Each run gets a world of its own: riders of one run never carry the other's orders.
    # Around the 12:00 peak and with a brisk order rate so twenty minutes make a dozen orders.
    return asyncio.run(
        run_simulation(
            platform.url,
            seed=SEED,
            sim_minutes=20,
            speedup=120,
            riders=6,
            customers=20,
            progress=False,
            city=f"small:{unique('sim')}_",
            begin="11:50",
            order_rate=1.8,
            drain_minutes=40,
            # More errands than a real day's tenth, so that twenty minutes hold some.
            errand_share=0.25,
        )
    )


def assert_consistent(report: dict[str, Any]) -> None:
    assert report["orders"] > 0, report
    assert report["delivered"] > 0, report
    assert report["delivered"] <= report["orders"]
    assert (
        report["delivered"] + report["rejected"] + report["cancelled"] + report["open"]
        == report["orders"]
    )
    for share in (
        report["share_delivered"],
        report["assigned_within_60s_share"],
        report["rider_utilisation"],
    ):
        assert share is not None and 0 <= share <= 1, report
    assert report["delivery_minutes_p90"] >= report["delivery_minutes_mean"] > 0, report
    assert report["riders"] == 6
    assert report["offers"].get("accepted", 0) >= report["delivered"]


def test_a_seeded_day_is_consistent_and_repeatable(platform: Platform) -> None:
    first = simulate(platform)
    assert_consistent(first)
    assert first["orders"] == first["arrivals"], first["not_placed"]
    # The small city's shops sell beside its kitchens, ready as they accept.
    assert 0 < first["shop_orders"] < first["orders"], first
    assert first["shop_delivered"] > 0, first
    # Errands beside them, picked up and delivered with their codes.
    assert 0 < first["errand_orders"] < first["orders"], first
    assert first["errand_delivered"] > 0, first

    second = simulate(platform)
    assert_consistent(second)
    # The arrival schedule is drawn from the seed alone, so the same orders are placed.
    assert second["arrivals"] == first["arrivals"]
    assert second["orders"] == first["orders"]
