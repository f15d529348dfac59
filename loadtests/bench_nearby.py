"""`GET /v1/merchants/nearby` with 10,000 merchants loaded in one city.

Onboards N merchants around West Lake through the merchant host actors (the same
write path as `POST /v1/merchants`, without 10,000 HTTP round trips), radius ranges
of 1.5-5 km and every tenth a polygon, then drives the route with wrk from random
customer points and reports throughput, p50 and p99.

    python -m loadtests.bench_nearby [--merchants 10000] [--connections 8] [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path
from typing import Any

import httpx

from actors.directory import Directory
from loadtests.frontdoor import run_wrk
from loadtests.harness import fresh_platform, wrk_requests
from serve_app.auth import issue
from storage.settings import Settings

CENTER = (30.2590, 120.1490)


def merchant(i: int, rng: random.Random) -> dict[str, Any]:
    lat = CENTER[0] + rng.uniform(-0.09, 0.09)  # a 20 km by 17 km city
    lng = CENTER[1] + rng.uniform(-0.09, 0.09)
    if i % 10 == 0:
        d = 0.02
        delivery: dict[str, Any] = {
            "polygon": [
                [lat - d, lng - d],
                [lat + d, lng - d],
                [lat + d, lng + d],
                [lat - d, lng + d],
            ]
        }
    else:
        delivery = {"radius_m": rng.choice([1500, 2500, 3000, 4000, 5000])}
    return {
        "id": f"m_near_{i}",
        "name": f"Shop {i}",
        "lat": lat,
        "lng": lng,
        "delivery": delivery,
        "prep_minutes": 10,
        "accept_mode": "auto",
        "split_plan": {},
    }


async def onboard(settings: Settings, count: int) -> None:
    directory = Directory(settings)
    rng = random.Random(10)
    profiles = [merchant(i, rng) for i in range(count)]
    for start in range(0, count, 250):
        batch = profiles[start : start + 250]
        await asyncio.gather(*(directory.merchant(p["id"]).onboard(p) for p in batch))


def wrk_script(path: Path, token: str, points: int = 500) -> Path:
    rng = random.Random(11)
    queries = [
        f"/v1/merchants/nearby?lat={CENTER[0] + rng.uniform(-0.08, 0.08):.6f}"
        f"&lng={CENTER[1] + rng.uniform(-0.08, 0.08):.6f}"
        for _ in range(points)
    ]
    return wrk_requests(path, token, "GET", queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--merchants", type=int, default=10_000)
    parser.add_argument("--connections", default="1,4,8")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("bench/nearby.json"))
    args = parser.parse_args()
    with fresh_platform("o2o-nearby-") as platform:
        settings = platform.settings
        tmp = platform.run_dir
        asyncio.run(onboard(settings, args.merchants))
        token, _ = issue(settings.jwt_secret, "customer", "c_bench", 3600)
        sample = httpx.get(
            f"{platform.url}/v1/merchants/nearby",
            params={"lat": CENTER[0], "lng": CENTER[1]},
            headers={"Authorization": f"Bearer {token}"},
        ).json()["merchants"]
        script = wrk_script(Path(tmp) / "nearby.lua", token)
        run_wrk(platform.url, 5, 4, script)  # warm-up fills the caches
        levels = {
            int(c): run_wrk(platform.url, args.duration, int(c), script)
            for c in args.connections.split(",")
        }
    result = {
        "merchants": args.merchants,
        "merchants_at_center": len(sample),
        "by_connections": levels,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
