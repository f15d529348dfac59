"""A demo city, seeded through the public HTTP API like any operator would.

Hangzhou around West Lake: 24 merchants with menus, 30 riders online over several
zones, customers, one coupon. Seeding twice is harmless: existing ids are skipped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import httpx

CENTER = (30.2590, 120.1490)  # West Lake, Hangzhou

KITCHENS = [
    (
        "Lakeside Noodles",
        [("beef_noodles", "Beef noodles", 2800), ("veg_noodles", "Vegetable noodles", 2200)],
    ),
    ("Dongpo Pork House", [("dongpo_pork", "Dongpo pork", 5800), ("rice", "Steamed rice", 300)]),
    (
        "Longjing Tea Shrimp",
        [("tea_shrimp", "Longjing shrimp", 8800), ("greens", "Garlic greens", 1800)],
    ),
    (
        "Wushan Dumplings",
        [("pork_dumplings", "Pork dumplings (12)", 2400), ("soup", "Wonton soup", 1600)],
    ),
    (
        "Hefang Street Snacks",
        [("scallion_pancake", "Scallion pancake", 800), ("soy_milk", "Soy milk", 400)],
    ),
    (
        "Beggar's Chicken Co.",
        [("chicken", "Beggar's chicken", 9800), ("rice", "Steamed rice", 300)],
    ),
    ("Xixi Bubble Tea", [("milk_tea", "Milk tea", 1500), ("fruit_tea", "Fruit tea", 1700)]),
    ("Sichuan Corner", [("mapo_tofu", "Mapo tofu", 2600), ("kung_pao", "Kung pao chicken", 3200)]),
    ("Baozi Morning", [("pork_bun", "Pork bun", 350), ("veg_bun", "Vegetable bun", 300)]),
    (
        "Hangzhou Fried Rice",
        [("yangzhou_rice", "Yangzhou fried rice", 2000), ("egg_soup", "Egg soup", 900)],
    ),
    (
        "West Lake Fish",
        [("vinegar_fish", "West Lake vinegar fish", 6800), ("rice", "Steamed rice", 300)],
    ),
    (
        "Noodle Bar Qingbo",
        [("pian_er_chuan", "Pian'er chuan noodles", 2500), ("pickles", "Pickles", 500)],
    ),
    (
        "Hotpot Express",
        [("hotpot_set", "Hotpot set for one", 4800), ("beef_slices", "Beef slices", 2800)],
    ),
    ("Sushi Yan'an Rd", [("salmon_set", "Salmon set", 6800), ("miso", "Miso soup", 800)]),
    ("Burger Wulin", [("burger", "Cheeseburger", 3200), ("fries", "Fries", 1200)]),
    ("Pizza Binjiang", [("margherita", "Margherita pizza", 5800), ("cola", "Cola", 600)]),
    (
        "Congee House",
        [("century_egg_congee", "Century egg congee", 1200), ("youtiao", "Youtiao", 300)],
    ),
    (
        "Green Salad Lab",
        [("chicken_salad", "Chicken salad", 3600), ("juice", "Orange juice", 1500)],
    ),
    ("Korean BBQ Box", [("bibimbap", "Bibimbap", 3400), ("kimchi", "Kimchi", 800)]),
    (
        "Cantonese Roast",
        [("char_siu", "Char siu rice", 3000), ("roast_duck", "Roast duck rice", 3400)],
    ),
    ("Fresh Mart Shuguang", [("milk", "Milk 1 L", 1500), ("eggs", "Eggs (10)", 1800)]),
    ("Fruit Stand Nanshan", [("apples", "Apples 1 kg", 1600), ("bananas", "Bananas 1 kg", 1000)]),
    ("Pharmacy Hubin", [("masks", "Masks (10)", 1500), ("plasters", "Plasters", 900)]),
    ("Coffee Beishan", [("latte", "Latte", 2800), ("americano", "Americano", 2200)]),
]


@dataclass
class SeedReport:
    merchants: list[str] = field(default_factory=list)
    riders: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    coupon: str = "WESTLAKE10"
    tokens: dict[str, str] = field(default_factory=dict)


def _token(client: httpx.Client, role: str, sub: str) -> str:
    answer = client.post("/v1/auth/dev-token", json={"role": role, "sub": sub})
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ok(answer: httpx.Response, *tolerated: str) -> None:
    if answer.status_code < 300:
        return
    try:
        code = answer.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = ""
    if code in tolerated:
        return
    raise RuntimeError(
        f"{answer.request.method} {answer.request.url}: {answer.status_code} {answer.text}"
    )


def seed(base_url: str, seed_value: int = 7, riders: int = 30, customers: int = 10) -> SeedReport:
    rng = random.Random(seed_value)
    report = SeedReport()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        admin = _auth(_token(client, "admin", "ops"))
        report.tokens["admin"] = admin["Authorization"][7:]
        for i, (name, menu) in enumerate(KITCHENS):
            merchant_id = f"m_{i + 1:03d}"
            lat = CENTER[0] + rng.uniform(-0.03, 0.03)
            lng = CENTER[1] + rng.uniform(-0.035, 0.035)
            body: dict[str, Any] = {
                "id": merchant_id,
                "name": name,
                "lat": round(lat, 6),
                "lng": round(lng, 6),
                "delivery": {"radius_m": rng.choice([2500, 3000, 4000, 5000])},
                "prep_minutes": rng.choice([8, 10, 12, 15, 20]),
                "accept_mode": "auto" if i % 3 == 0 else "manual",
            }
            _ok(client.post("/v1/merchants", json=body, headers=admin), "merchant_exists")
            merchant = _auth(_token(client, "merchant", merchant_id))
            for item_id, item_name, price in menu:
                _ok(
                    client.put(
                        f"/v1/merchants/{merchant_id}/menu/items/{item_id}",
                        json={"name": item_name, "price_fen": price, "stock": 500},
                        headers=merchant,
                    )
                )
            report.merchants.append(merchant_id)
        for i in range(riders):
            rider_id = f"r_{i + 1:03d}"
            rider = _auth(_token(client, "rider", rider_id))
            position = {
                "online": True,
                "lat": round(CENTER[0] + rng.uniform(-0.04, 0.04), 6),
                "lng": round(CENTER[1] + rng.uniform(-0.05, 0.05), 6),
            }
            _ok(client.post("/v1/riders/me/status", json=position, headers=rider))
            report.riders.append(rider_id)
        report.customers = [f"c_{i + 1:03d}" for i in range(customers)]
        _ok(
            client.post(
                "/v1/admin/coupons",
                json={
                    "code": report.coupon,
                    "discount_fen": 1000,
                    "min_spend_fen": 3000,
                    "total": 1000,
                    "per_customer_limit": 1,
                    "starts_at": "2026-01-01T00:00:00Z",
                    "ends_at": "2030-01-01T00:00:00Z",
                },
                headers=admin,
            ),
            "coupon_exists",
        )
        report.tokens["customer c_001"] = _token(client, "customer", "c_001")
        report.tokens["merchant m_001"] = _token(client, "merchant", "m_001")
        report.tokens["rider r_001"] = _token(client, "rider", "r_001")
    return report
