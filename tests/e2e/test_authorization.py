"""Who may do what, probed on the running platform.

Every operation of the live OpenAPI document is tried by every kind of caller (no
token, two customers, two merchants, two riders, operations) on objects of their own
and of another party. API.md decides the answer: 401 without a valid token (before the
request is looked at), 403 for a wrong role, 404 for another party's order or offer, so
that a refusal does not say the object exists. After every refusal the owner reads the
object again and finds it as it was. The callers who are let in also send fields that
nobody may set (status, version, owners, amounts), and forged tokens try their luck.

Two small worlds (world.py) are built once; each operation gets objects in the state
it needs just before it runs, so the probes follow one life of an order per world.
The counts are printed at the end, and nobody may have got in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import jwt
import pytest
import redis
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from cluster.launcher import Platform
from domain import errands
from storage import keys
from storage.provider import SIGNATURE_HEADER, sign
from tests.e2e.conftest import Api, eventually, unique
from tests.e2e.world import World, events_of, make_world, pay, status_of

NOODLES, DUMPLINGS = "noodles", "dumplings"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
MUTATING = ("POST", "PUT", "DELETE", "PATCH")
# A rule's verdict for a caller who must be let in; any other verdict is the refusal's status.
ALLOW = 0
# Bounded retries of a 429 or 503: other tests share the platform, and a host restarted
# by one of them answers 503 for a moment.
RETRIES = 6


# -- the parties and their world -------------------------------------------------------


@dataclass
class Party:
    name: str
    role: str | None
    sub: str | None
    side: str | None
    api: Api

    @property
    def token(self) -> str:
        return str(self.api.http.headers["authorization"])[len("Bearer ") :]


@dataclass
class Side:
    """A merchant with its customer and rider: the owners of one world's objects."""

    world: World
    customer: Party
    merchant: Party
    rider: Party
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Scene:
    platform: Platform
    store: redis.Redis
    sides: dict[str, Side]
    admin: Party
    nobody: Party
    seen: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    @property
    def parties(self) -> list[Party]:
        a, b = self.sides["a"], self.sides["b"]
        return [
            self.nobody,
            a.customer,
            b.customer,
            a.merchant,
            b.merchant,
            a.rider,
            b.rider,
            self.admin,
        ]

    def other(self, side: str | None) -> Side:
        return self.sides["a" if side == "b" else "b"]

    def order_as_admin(self, order_id: str) -> dict[str, Any] | None:
        if order_id not in self.seen:
            answer = send(self.admin.api.http, "GET", f"/v1/orders/{order_id}")
            self.seen[order_id] = answer.json() if answer.status_code == 200 else None
        return self.seen[order_id]


@dataclass
class Tally:
    operations: set[str] = field(default_factory=set)
    cells: set[tuple[str, str]] = field(default_factory=set)
    probes: int = 0
    before_reading: int = 0
    mass: int = 0
    forgeries: int = 0
    let_in_refused: int = 0
    breaches: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


@pytest.fixture(scope="module")
def scene(platform: Platform, store: redis.Redis, login: Callable[[str, str], Api]) -> Scene:
    sides: dict[str, Side] = {}
    for name in ("a", "b"):
        w = make_world(login)
        sides[name] = Side(
            world=w,
            customer=Party(f"customer_{name}", "customer", w.customer_id, name, w.customer),
            merchant=Party(f"merchant_{name}", "merchant", w.merchant_id, name, w.merchant),
            rider=Party(f"rider_{name}", "rider", w.rider_id, name, w.rider),
        )
    admin = Party("admin", "admin", "ops", None, sides["a"].world.admin)
    nobody = Party("nobody", None, None, None, Api(platform.url))
    return Scene(platform, store, sides, admin, nobody)


@pytest.fixture(scope="module")
def operations(platform: Platform) -> set[str]:
    document = httpx.get(f"{platform.url}/openapi.json", timeout=30).json()
    return {
        f"{method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method in methods
        if method in HTTP_METHODS
    }


# -- requests and what they answer -----------------------------------------------------


def send(
    client: httpx.Client,
    method: str,
    path: str,
    body: Any = None,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    kwargs: dict[str, Any] = {"params": params, "headers": headers}
    if isinstance(body, bytes):
        kwargs["content"] = body
        kwargs["headers"] = {"content-type": "application/json", **(headers or {})}
    elif body is not None:
        kwargs["json"] = body
    answer = client.request(method, path, **kwargs)
    for _ in range(RETRIES):
        if answer.status_code not in (429, 503):
            break
        time.sleep(min(float(answer.headers.get("retry-after", "1")), 2.0))
        answer = client.request(method, path, **kwargs)
    return answer


def code_of(answer: httpx.Response) -> str | None:
    try:
        code: str = answer.json()["error"]["code"]
        return code
    except (ValueError, KeyError, TypeError):
        return None


def refusal_problem(answer: httpx.Response, status: int, code: str | None = None) -> str | None:
    """What is wrong with a refusal, if anything: the status and its error code."""
    got = code_of(answer)
    if answer.status_code != status:
        return f"expected {status}, got {answer.status_code} {answer.text[:160]}"
    wanted = {401: code or "unauthorized", 403: "forbidden"}.get(status)
    if wanted and got != wanted:
        return f"expected code {wanted}, got {got}"
    if status == 404 and not (got or "").endswith("_not_found"):
        return f"expected a *_not_found code, got {got}"
    return None


def today() -> str:
    return datetime.now(UTC).date().isoformat()


# -- what owners read back ---------------------------------------------------------------


def order_state(scene: Scene, side: str, order_id: str) -> dict[str, Any]:
    """What a change would show in an order, as its customer reads it."""
    answer = send(scene.sides[side].customer.api.http, "GET", f"/v1/orders/{order_id}")
    assert answer.status_code == 200, answer.text
    view = answer.json()
    return {
        "status": view["status"],
        "version": view["version"],
        "customer_id": view["customer_id"],
        "merchant_id": view["merchant_id"],
        "rider": (view.get("rider") or {}).get("id"),
        "items": view["items"],
        "amounts": view["amounts"],
        "payment_status": view["payment"]["status"],
        "refunded_fen": view["payment"]["refunded_fen"],
    }


def menu_state(scene: Scene, merchant_id: str, item: str) -> dict[str, Any]:
    answer = send(scene.nobody.api.http, "GET", f"/v1/merchants/{merchant_id}/menu")
    assert answer.status_code == 200, answer.text
    menu = answer.json()
    # Stock is that of one item only: placed orders of earlier steps give theirs back
    # in the background when their payment times out.
    return {
        "menu_version": menu["menu_version"],
        "items": {i["id"]: (i["name"], i["price_fen"], i["available"]) for i in menu["items"]},
        "stock": next((i["stock"] for i in menu["items"] if i["id"] == item), None),
    }


def raw(store: redis.Redis, key: str) -> Any:
    kind = store.type(key)
    if kind == "string":
        return store.get(key)
    if kind == "hash":
        return store.hgetall(key)
    return kind


def riders_state(scene: Scene) -> dict[str, Any]:
    """Where every party would stand as a rider: only the two riders have a record."""
    return {
        p.name: scene.store.hmget(keys.rider(p.sub), "lat", "lng", "online")
        for p in scene.parties
        if p.sub
    }


def offer_state(scene: Scene, side: str, offer_id: str, order_id: str) -> dict[str, Any]:
    offer = json.loads(scene.store.get(keys.offer(offer_id)) or "{}")
    return {
        "offer_status": offer.get("status"),
        "offer_rider": offer.get("rider_id"),
        **order_state(scene, side, order_id),
    }


def position_of(scene: Scene, party: Party) -> tuple[float, float]:
    lat, lng = scene.store.hmget(keys.rider(party.sub or ""), "lat", "lng")
    return float(str(lat)), float(str(lng))


# -- targets: the objects each operation is tried on -------------------------------------


@dataclass
class Target:
    label: str
    side: str | None
    path: dict[str, str] = field(default_factory=dict)
    state: Callable[[], Any] = field(default=lambda: None)
    # The object exists already: the one party who may create it meets a 409.
    conflict: bool = False
    data: dict[str, Any] = field(default_factory=dict)


def nothing(scene: Scene) -> list[Target]:
    return [Target("-", None)]


def place(side: Side, item: str = NOODLES) -> dict[str, Any]:
    answer = send(side.customer.api.http, "POST", "/v1/orders", side.world.order_body(item=item))
    assert answer.status_code == 201, answer.text
    order: dict[str, Any] = answer.json()
    return order


def order_target(scene: Scene, name: str, stage: str) -> Target:
    order_id = scene.sides[name].orders[stage]["id"]
    return Target(
        f"{stage} order of {name}",
        name,
        {"order_id": order_id},
        lambda: order_state(scene, name, order_id),
        data={"order": scene.sides[name].orders[stage]},
    )


def is_paid(api: Api, order_id: str) -> bool:
    return status_of(api, order_id) == "paid"


def stage_orders(scene: Scene, *stages: str, paid: bool = False) -> list[Target]:
    """Orders of both worlds at a stage, placed (and paid) the first time it is asked for."""
    fresh = []
    for side in scene.sides.values():
        for stage in stages:
            if stage not in side.orders:
                side.orders[stage] = place(side)
                fresh.append(side)
    if paid:
        for side in scene.sides.values():
            for stage in stages:
                if side.orders[stage].get("_paid"):
                    continue
                pay(side.orders[stage])
                side.orders[stage]["_paid"] = True
        for side in scene.sides.values():
            for stage in stages:
                oid = side.orders[stage]["id"]
                eventually(partial(is_paid, side.customer.api, oid), 20, f"{oid} paid")
    return [order_target(scene, name, stages[0]) for name in scene.sides]


def latest_offer(side: Side, order_id: str) -> str:
    def find() -> str | None:
        offers = [
            e["data"]["offer_id"]
            for e in events_of(side.rider.api)
            if e["type"] == "offer" and e["order_id"] == order_id
        ]
        return offers[-1] if offers else None

    return eventually(find, 20, f"an offer of {order_id} to {side.rider.name}")


def offer_targets(scene: Scene, stage: str) -> list[Target]:
    targets = []
    for name, side in scene.sides.items():
        order_id = side.orders[stage]["id"]
        offer_id = latest_offer(side, order_id)
        targets.append(
            Target(
                f"offer of the {stage} order of {name}",
                name,
                {"offer_id": offer_id},
                partial(offer_state, scene, name, offer_id, order_id),
            )
        )
    return targets


def decline_stage(scene: Scene) -> list[Target]:
    stage_orders(scene, "decline", paid=True)
    for side in scene.sides.values():
        oid = side.orders["decline"]["id"]
        accepted = send(side.merchant.api.http, "POST", f"/v1/merchant/orders/{oid}/accept")
        assert accepted.status_code == 200, accepted.text
    return offer_targets(scene, "decline")


def menus(scene: Scene, item: str) -> list[Target]:
    return [
        Target(
            f"menu of {name}",
            name,
            {"merchant_id": side.merchant.sub or "", "item_id": NOODLES},
            partial(menu_state, scene, side.merchant.sub or "", item),
        )
        for name, side in scene.sides.items()
    ]


def new_merchant_targets(scene: Scene) -> list[Target]:
    refused_id = unique("m_refused")
    taken = scene.sides["a"].merchant.sub or ""
    return [
        Target(
            "a new merchant",
            None,
            state=lambda: scene.store.exists(keys.merchant(refused_id)),
            data={"id": refused_id},
        ),
        Target(
            "merchant a's id",
            "a",
            state=lambda: (
                raw(scene.store, keys.merchant(taken)),
                menu_state(scene, taken, NOODLES),
            ),
            conflict=True,
            data={"id": taken},
        ),
    ]


def coupon_targets(scene: Scene) -> list[Target]:
    code = unique("REFUSED").upper()
    return [
        Target(
            "a new coupon",
            None,
            state=lambda: scene.store.exists(keys.coupon(code)),
            data={"code": code},
        )
    ]


def rider_record(scene: Scene) -> list[Target]:
    return [Target("own rider record", None, state=lambda: riders_state(scene))]


def errands_state(scene: Scene) -> dict[str, int]:
    """How many orders each party has as a customer: an errand is one of them."""
    return {
        p.name: scene.store.zcard(keys.orders_of("customer", p.sub)) for p in scene.parties if p.sub
    }


def errand_targets(scene: Scene) -> list[Target]:
    return [Target("a new errand", None, state=lambda: errands_state(scene))]


# A cell where nobody lives (Sydney): the promotions the matrix publishes tell nobody.
NOBODYS_CELL = "87be0e35cffffff"


def homes_state(scene: Scene) -> dict[str, Any]:
    """Where every party would be registered as a customer: only customers are."""
    return {
        p.name: scene.store.hget(keys.customer_place(p.sub), "home") for p in scene.parties if p.sub
    }


def home_targets(scene: Scene) -> list[Target]:
    return [Target("own home", None, state=lambda: homes_state(scene))]


def promotion_targets(scene: Scene) -> list[Target]:
    return [
        Target(
            "a new promotion",
            None,
            state=lambda: scene.store.zrange(keys.cell_promotions(NOBODYS_CELL), 0, -1),
        )
    ]


def published_promotion(scene: Scene) -> list[Target]:
    answer = send(
        scene.admin.api.http,
        "POST",
        "/v1/admin/promotions",
        promotion_body(scene, scene.admin, Target("-", None), True),
    )
    assert answer.status_code == 201, answer.text
    promotion_id = answer.json()["id"]
    return [
        Target(
            "a published promotion",
            None,
            {"promotion_id": promotion_id},
            state=lambda: raw(scene.store, keys.promotion(promotion_id)).get("json"),
        )
    ]


def books_state(scene: Scene) -> dict[str, Any]:
    """Every party's address book as stored (sealed): only customers have one."""
    return {
        p.name: scene.store.hget(keys.address_book(p.sub), "json") for p in scene.parties if p.sub
    }


def new_address_targets(scene: Scene) -> list[Target]:
    return [Target("own address book", None, state=lambda: books_state(scene))]


def address_targets(scene: Scene) -> list[Target]:
    """A fresh address in each world's customer's book (its second or later: not the default)."""
    targets = []
    for name, side in scene.sides.items():
        made = send(side.customer.api.http, "POST", "/v1/me/addresses", address_body(name))
        assert made.status_code == 201, made.text
        targets.append(
            Target(
                f"address of {name}",
                name,
                {"address_id": made.json()["id"]},
                lambda: books_state(scene),
            )
        )
    return targets


def address_body(name: str) -> dict[str, Any]:
    return {"lat": 30.3, "lng": 120.1, "address": f"{name}'s probe door", "label": "probe"}


def door_body(scene: Scene, party: Party, target: Target, allowed: bool) -> dict[str, Any]:
    """A door beside the order's, at the same fee: the order's life goes on as before."""
    w = scene.sides[target.side or "a"].world
    return {"lat": w.lat + 0.011, "lng": w.lng, "address": "Probe door"}


# One device for the matrix's placements past a device's limit (tests/e2e/conftest.py:
# three an hour), so its review targets are orders held for review (`domain/risk.py`).
HELD_DEVICE = unique("authz_device")


def held_order(side: Side) -> dict[str, Any]:
    """An order of a world placed held for review; those placed before the device's
    limit was reached are cancelled at once, their stock back."""
    for _ in range(5):
        answer = send(
            side.customer.api.http,
            "POST",
            "/v1/orders",
            side.world.order_body(item=DUMPLINGS),
            headers={"X-Device-Id": HELD_DEVICE},
        )
        assert answer.status_code == 201, answer.text
        order: dict[str, Any] = answer.json()
        if order["hold"] is not None:
            return order
        send(side.customer.api.http, "POST", f"/v1/orders/{order['id']}/cancel")
    raise AssertionError("no order was held past the device's limit")


def review_state(scene: Scene, side: str, order_id: str, review_id: str) -> dict[str, Any]:
    return {
        **order_state(scene, side, order_id),
        "review": scene.store.hget(keys.review(review_id), "status"),
    }


def review_targets(scene: Scene, stage: str) -> list[Target]:
    """An order of each world held for review, decided by the operation tried on it."""
    targets = []
    for name, side in scene.sides.items():
        if stage not in side.orders:
            side.orders[stage] = held_order(side)
        order = side.orders[stage]
        review_id = order["hold"]["review_id"]
        targets.append(
            Target(
                f"review of the {stage} order of {name}",
                name,
                {"review_id": review_id},
                partial(review_state, scene, name, order["id"], review_id),
            )
        )
    return targets


# -- rules: who may ---------------------------------------------------------------------


Rule = Callable[[Party, Target], int]


def public(party: Party, target: Target) -> int:
    return ALLOW


def provider(party: Party, target: Target) -> int:
    """The provider's notifications carry a signature, not a token: nobody else gets in."""
    return 401


def roles(*allowed: str) -> Rule:
    def rule(party: Party, target: Target) -> int:
        if party.role is None:
            return 401
        if party.role not in allowed:
            return 403
        return 409 if target.conflict else ALLOW

    return rule


def owned(*allowed: str, hidden: int = 404, admin: bool = False) -> Rule:
    """Its own parties (and operations, if `admin`) get in; another party's object is
    `hidden` (404: as if it did not exist)."""

    def rule(party: Party, target: Target) -> int:
        if party.role is None:
            return 401
        if party.role == "admin" and admin:
            return ALLOW
        if party.role not in allowed:
            return 403
        return ALLOW if party.side == target.side else hidden

    return rule


# -- checks of what those let in see ------------------------------------------------------


Check = Callable[[Scene, Party, Target, httpx.Response], list[str]]


def own_orders(scene: Scene, party: Party, target: Target, answer: httpx.Response) -> list[str]:
    field_of = {"customer": "customer_id", "merchant": "merchant_id", "rider": "rider_id"}
    key = field_of[party.role or ""]
    return [
        f"{party.name} lists order {o['id']} of {key}={o.get(key)}"
        for o in answer.json()["orders"]
        if o.get(key) != party.sub
    ]


def own_settlement(scene: Scene, party: Party, target: Target, answer: httpx.Response) -> list[str]:
    got = answer.json().get("merchant_id")
    return [] if got == party.sub else [f"{party.name} reads the settlement of {got}"]


def own_feed(scene: Scene, party: Party, target: Target, answer: httpx.Response) -> list[str]:
    """Each event of a terminal's feed is about something that terminal may see."""
    if party.role == "admin":
        return []
    problems = []
    for event in answer.json()["events"]:
        kind, order_id = event.get("type"), event.get("order_id")
        if kind == "offer":
            offer = json.loads(scene.store.get(keys.offer(event["data"]["offer_id"])) or "{}")
            if party.role != "rider" or offer.get("rider_id", party.sub) != party.sub:
                problems.append(f"{party.name} sees offer {event['data']['offer_id']}")
            continue
        order = scene.order_as_admin(order_id) if order_id else None
        if order is None:
            continue
        owner = {
            "customer": order["customer_id"],
            "merchant": order["merchant_id"],
            "rider": (order.get("rider") or {}).get("id"),
        }[party.role or ""]
        if owner != party.sub:
            problems.append(
                f"{party.name} sees {kind} of order {order_id} (its {party.role}: {owner})"
            )
    return problems


def same_order(scene: Scene, party: Party, target: Target, answer: httpx.Response) -> list[str]:
    got = answer.json()
    if got.get("id") != target.path.get("order_id"):
        return [f"{party.name} asked for {target.path} and read {got.get('id')}"]
    return []


def placed_for_caller(
    scene: Scene, party: Party, target: Target, answer: httpx.Response
) -> list[str]:
    got = answer.json()
    wanted = {
        "customer_id": party.sub,
        "merchant_id": target.path["merchant_id"],
        "status": "pending_payment",
        "version": 1,
    }
    return [
        f"{party.name} placed an order with {k}={got.get(k)}, not {v}"
        for k, v in wanted.items()
        if got.get(k) != v
    ]


def errand_for_caller(
    scene: Scene, party: Party, target: Target, answer: httpx.Response
) -> list[str]:
    got = answer.json()
    wanted = {
        "customer_id": party.sub,
        "merchant_id": errands.desk_of(party.sub or ""),
        "kind": "errand",
        "status": "pending_payment",
        "version": 1,
    }
    return [
        f"{party.name} placed an errand with {k}={got.get(k)}, not {v}"
        for k, v in wanted.items()
        if got.get(k) != v
    ]


def quoted(scene: Scene, party: Party, target: Target, answer: httpx.Response) -> list[str]:
    total = answer.json().get("total_fen")
    return [] if isinstance(total, int) and total > 0 else [f"a quote of {total}"]


def token_as_asked(scene: Scene, party: Party, target: Target, answer: httpx.Response) -> list[str]:
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    wanted = {"role": "customer", "sub": f"probe_{party.name}"}
    extra = set(claims) - {"role", "sub", "exp"}
    problems = [
        f"dev token has {k}={claims.get(k)}" for k, v in wanted.items() if claims.get(k) != v
    ]
    return problems + ([f"dev token carries {sorted(extra)}"] if extra else [])


def own_book(scene: Scene, party: Party, target: Target, answer: httpx.Response) -> list[str]:
    got = answer.json().get("customer_id")
    return [] if got == party.sub else [f"{party.name} reads the address book of {got}"]


def same_merchant_menu(
    scene: Scene, party: Party, target: Target, answer: httpx.Response
) -> list[str]:
    got = answer.json().get("merchant_id")
    return [] if got == target.path["merchant_id"] else [f"menu of {got} for {target.path}"]


# -- the operations ---------------------------------------------------------------------


Body = Callable[[Scene, Party, Target, bool], Any]
Params = Callable[[Scene, Party, Target], dict[str, Any]]


@dataclass
class Case:
    op: str
    rule: Rule
    ok: int = 200
    targets: Callable[[Scene], list[Target]] = nothing
    body: Body | None = None
    params: Params | None = None
    # The order status an allowed call leads to (an injected one must not win).
    moves_to: str | None = None
    check: Check | None = None
    # Waits for what an allowed call sets off, before the next operation runs.
    then: Callable[[Scene], None] | None = None


def merchant_body(scene: Scene, party: Party, target: Target, allowed: bool) -> dict[str, Any]:
    return {
        # The one who may creates a merchant of its own; the others try the target's id.
        "id": unique("m_authz") if allowed else target.data["id"],
        "name": "Probe Kitchen" if allowed else "Hijacked",
        # Far south of every test world, so no dispatch or nearby search meets it.
        "lat": 22.54,
        "lng": 114.06,
        "delivery": {"radius_m": 1000},
        "prep_minutes": 10,
        "accept_mode": "manual",
    }


def menu_body(scene: Scene, party: Party, target: Target, allowed: bool) -> dict[str, Any]:
    if not allowed:
        return {"name": "Hijacked", "price_fen": 1, "stock": 0, "available": False}
    # Those who may change the menu write it as it is: later steps order from it.
    menu = send(scene.nobody.api.http, "GET", f"/v1/merchants/{target.path['merchant_id']}/menu")
    item = next(i for i in menu.json()["items"] if i["id"] == NOODLES)
    return {k: item[k] for k in ("name", "price_fen", "stock", "available")}


def order_body(scene: Scene, party: Party, target: Target, allowed: bool) -> dict[str, Any]:
    return scene.sides[target.side or "a"].world.order_body(item=DUMPLINGS)


def errand_quote_body(scene: Scene, party: Party, target: Target, allowed: bool) -> dict[str, Any]:
    w = scene.sides[party.side or "a"].world
    return {
        "pickup": {"lat": w.lat + 0.01, "lng": w.lng},
        "dropoff": {"lat": w.lat + 0.02, "lng": w.lng},
        "weight_class": "light",
    }


def errand_body(scene: Scene, party: Party, target: Target, allowed: bool) -> dict[str, Any]:
    # Never paid: it is not dispatched, and its payment times out in the background.
    w = scene.sides[party.side or "a"].world
    contact = {"contact_name": "Probe", "contact_phone": "13800000000"}
    return {
        "pickup": {"lat": w.lat + 0.01, "lng": w.lng, "address": "A", **contact},
        "dropoff": {"lat": w.lat + 0.02, "lng": w.lng, "address": "B", **contact},
        "category": "parcel",
        "weight_class": "light",
    }


def rider_status_body(scene: Scene, party: Party, target: Target, allowed: bool) -> dict[str, Any]:
    if party.role != "rider":
        return {"online": False, "lat": 1.0, "lng": 1.0}
    lat, lng = position_of(scene, party)
    return {"online": True, "lat": lat, "lng": lng}


def rider_location_body(
    scene: Scene, party: Party, target: Target, allowed: bool
) -> dict[str, Any]:
    if party.role != "rider":
        return {"lat": 1.0, "lng": 1.0}
    lat, lng = position_of(scene, party)
    return {"lat": lat, "lng": lng}


def coupon_body(scene: Scene, party: Party, target: Target, allowed: bool) -> dict[str, Any]:
    return {
        "code": unique("AUTHZ").upper() if allowed else target.data["code"],
        "discount_fen": 100,
        "min_spend_fen": 0,
        "total": 1,
        "per_customer_limit": 1,
        "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
    }


def promotion_body(scene: Scene, party: Party, target: Target, allowed: bool) -> dict[str, Any]:
    return {
        "cells": [NOBODYS_CELL],
        "kind": "banner",
        "title": "Probe",
        "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
    }


def home_body(scene: Scene, party: Party, target: Target, allowed: bool) -> dict[str, Any]:
    w = scene.sides[party.side or "a"].world
    return {"lat": w.lat, "lng": w.lng}


def same_promotion(scene: Scene, party: Party, target: Target, answer: httpx.Response) -> list[str]:
    got = answer.json().get("id")
    wanted = target.path.get("promotion_id")
    return [] if got == wanted else [f"{party.name} asked for {wanted} and read {got}"]


def notification(scene: Scene, party: Party, target: Target, allowed: bool) -> bytes:
    order = target.data["order"]
    return json.dumps(
        {
            "out_trade_no": order["id"],
            "intent_id": order["payment"]["intent_id"],
            "type": "payment.succeeded",
            "amount_fen": order["amounts"]["total_fen"],
        }
    ).encode()


def fixed(body: Any) -> Body:
    return lambda scene, party, target, allowed: body


def query(params: dict[str, Any]) -> Params:
    return lambda scene, party, target: params


def near_a(scene: Scene, party: Party, target: Target) -> dict[str, Any]:
    w = scene.sides["a"].world
    return {"lat": w.lat + 0.01, "lng": w.lng}


def on_date(scene: Scene, party: Party, target: Target) -> dict[str, Any]:
    return {"date": today()}


def rider_assigned(scene: Scene) -> None:
    for name, side in scene.sides.items():
        oid = side.orders["chain"]["id"]
        eventually(
            partial(carried_by, scene, name, oid, side.rider.sub),
            20,
            f"{side.rider.name} assigned to {oid}",
        )


def carried_by(scene: Scene, side: str, order_id: str, rider_id: str | None) -> bool:
    return bool(order_state(scene, side, order_id)["rider"] == rider_id)


ANY_ROLE = ("customer", "merchant", "rider", "admin")

# In the order they run: one life of an order per world, the reads of the results last.
CASES = [
    Case("GET /v1/health/live", public),
    Case("GET /v1/health", public),
    Case(
        "POST /v1/auth/dev-token",
        public,
        body=lambda s, p, t, a: {"role": "customer", "sub": f"probe_{p.name}"},
        check=token_as_asked,
    ),
    Case(
        "GET /v1/merchants/{merchant_id}/menu",
        public,
        targets=lambda s: menus(s, NOODLES),
        check=same_merchant_menu,
    ),
    Case("GET /v1/merchants/nearby", roles("customer"), params=near_a),
    Case(
        "POST /v1/merchants",
        roles("admin"),
        ok=201,
        targets=new_merchant_targets,
        body=merchant_body,
    ),
    Case(
        "PUT /v1/merchants/{merchant_id}/menu/items/{item_id}",
        # A menu is public, so another merchant's is refused with 403, not hidden.
        owned("merchant", hidden=403, admin=True),
        targets=lambda s: menus(s, NOODLES),
        body=menu_body,
    ),
    Case(
        "POST /v1/orders",
        roles("customer"),
        ok=201,
        targets=lambda s: [
            Target(t.label, t.side, {"merchant_id": t.path["merchant_id"]}, t.state)
            for t in menus(s, DUMPLINGS)
        ],
        body=order_body,
        check=placed_for_caller,
    ),
    Case("POST /v1/errands/quote", roles("customer"), body=errand_quote_body, check=quoted),
    Case(
        "POST /v1/errands",
        roles("customer"),
        ok=201,
        targets=errand_targets,
        body=errand_body,
        check=errand_for_caller,
    ),
    Case(
        "POST /v1/payments/callback",
        provider,
        targets=lambda s: stage_orders(s, "pending"),
        body=notification,
    ),
    Case(
        "POST /v1/orders/{order_id}/cancel",
        owned("customer", admin=True),
        targets=lambda s: stage_orders(s, "pending"),
        moves_to="cancelled",
    ),
    Case(
        "POST /v1/merchant/orders/{order_id}/reject",
        owned("merchant"),
        # Both paid orders at once: the merchant's accept deadline runs from payment.
        targets=lambda s: stage_orders(s, "reject", "chain", paid=True),
        body=fixed({"reason": "kitchen closed"}),
        moves_to="rejected",
    ),
    Case(
        "POST /v1/merchant/orders/{order_id}/accept",
        owned("merchant"),
        targets=lambda s: stage_orders(s, "chain", paid=True),
        body=fixed({"prep_minutes": 5}),
        moves_to="accepted",
    ),
    Case(
        "POST /v1/rider/offers/{offer_id}/accept",
        owned("rider"),
        targets=lambda s: offer_targets(s, "chain"),
        then=rider_assigned,
    ),
    Case(
        "POST /v1/merchant/orders/{order_id}/ready",
        owned("merchant"),
        targets=lambda s: stage_orders(s, "chain"),
        moves_to="ready",
    ),
    Case(
        "GET /v1/orders/{order_id}",
        owned("customer", "merchant", "rider", admin=True),
        targets=lambda s: stage_orders(s, "chain"),
        check=same_order,
    ),
    Case(
        "PATCH /v1/orders/{order_id}/delivery",
        owned("customer"),
        targets=lambda s: stage_orders(s, "chain"),
        body=door_body,
    ),
    Case(
        "POST /v1/rider/orders/{order_id}/pickup",
        owned("rider"),
        targets=lambda s: stage_orders(s, "chain"),
        moves_to="picked_up",
    ),
    Case(
        "POST /v1/rider/orders/{order_id}/deliver",
        owned("rider"),
        targets=lambda s: stage_orders(s, "chain"),
        moves_to="delivered",
    ),
    Case(
        "POST /v1/admin/orders/{order_id}/refund",
        roles("admin"),
        targets=lambda s: stage_orders(s, "chain"),
        body=fixed({"amount_fen": 100}),
    ),
    Case("GET /v1/admin/reviews", roles("admin"), params=query({"status": "all"})),
    Case(
        "POST /v1/admin/reviews/{review_id}/approve",
        roles("admin"),
        targets=lambda s: review_targets(s, "review-approve"),
    ),
    Case(
        "POST /v1/admin/reviews/{review_id}/refuse",
        roles("admin"),
        targets=lambda s: review_targets(s, "review-refuse"),
        moves_to="cancelled",
    ),
    Case(
        "POST /v1/rider/offers/{offer_id}/decline",
        owned("rider"),
        targets=decline_stage,
    ),
    Case(
        "POST /v1/riders/me/status",
        roles("rider"),
        targets=rider_record,
        body=rider_status_body,
    ),
    Case(
        "POST /v1/riders/me/location",
        roles("rider"),
        targets=rider_record,
        body=rider_location_body,
    ),
    Case(
        "POST /v1/admin/coupons",
        roles("admin"),
        ok=201,
        targets=coupon_targets,
        body=coupon_body,
    ),
    Case(
        "POST /v1/admin/promotions",
        roles("admin"),
        ok=201,
        targets=promotion_targets,
        body=promotion_body,
    ),
    Case(
        "GET /v1/admin/promotions/{promotion_id}",
        roles("admin"),
        targets=published_promotion,
        check=same_promotion,
    ),
    Case("PUT /v1/me/home", roles("customer"), targets=home_targets, body=home_body),
    Case("GET /v1/me/promotions", roles("customer")),
    Case(
        "POST /v1/me/addresses",
        roles("customer"),
        ok=201,
        targets=new_address_targets,
        body=lambda s, p, t, a: address_body(p.name),
    ),
    Case(
        "PATCH /v1/me/addresses/{address_id}",
        owned("customer"),
        targets=address_targets,
        body=fixed({"label": "probed"}),
    ),
    Case(
        "POST /v1/me/addresses/{address_id}/default",
        owned("customer"),
        targets=address_targets,
    ),
    Case(
        "DELETE /v1/me/addresses/{address_id}",
        owned("customer"),
        ok=204,
        targets=address_targets,
    ),
    Case("GET /v1/me/addresses", roles("customer"), check=own_book),
    Case("POST /v1/admin/reconciliation", roles("admin"), params=on_date),
    Case("GET /v1/admin/metrics", roles("admin")),
    Case("GET /v1/admin/metrics/series", roles("admin")),
    Case("GET /v1/admin/city", roles("admin"), params=near_a),
    Case("GET /v1/merchant/settlement", roles("merchant"), params=on_date, check=own_settlement),
    # API.md: "any role, the caller's own orders". Operations own no orders and read
    # them through the dashboard; their refusal (403) is taken as the contract's answer.
    Case(
        "GET /v1/orders",
        roles("customer", "merchant", "rider"),
        params=query({"limit": 100}),
        check=own_orders,
    ),
    Case("GET /v1/sync/events", roles(*ANY_ROLE), params=query({"limit": 1000}), check=own_feed),
]
RULES = {case.op: case.rule for case in CASES}


# -- mass assignment ---------------------------------------------------------------------


def injected(scene: Scene, target: Target, moves_to: str | None) -> dict[str, Any]:
    """Fields nobody may set, with values that would hand the object to another party."""
    other = scene.other(target.side)
    return {
        "status": "cancelled" if moves_to == "delivered" else "delivered",
        "version": 99,
        "merchant_id": other.merchant.sub,
        "customer_id": other.customer.sub,
        "rider_id": other.rider.sub,
        "total_fen": 1,
        "amounts": {"subtotal_fen": 1, "delivery_fee_fen": 0, "discount_fen": 0, "total_fen": 1},
        "paid": True,
        "paid_fen": 1,
        "refunded_fen": 0,
        "role": "admin",
        "sub": "ops",
        "menu_version": 0,
        "exp": 4102444800,
        "scope": "admin",
        "owner": other.merchant.sub,
        "is_admin": True,
    }


def tampered(
    before: Any, after: Any, extra: dict[str, Any], case: Case, owner: str | None
) -> list[str]:
    """What of the injected fields shows in the object an accepted request left."""
    if isinstance(before, dict) and "version" in before:
        problems = [
            f"{k} became {after[k]!r}"
            for k in ("customer_id", "merchant_id", "items", "amounts", "refunded_fen")
            if after[k] != before[k]
        ]
        if after["status"] not in (before["status"], case.moves_to):
            problems.append(f"status became {after['status']}")
        if not before["version"] <= after["version"] <= before["version"] + 2:
            problems.append(f"version went {before['version']} -> {after['version']}")
        if after["rider"] not in (before["rider"], owner):
            problems.append(f"rider became {after['rider']}")
        if after.get("offer_rider") != before.get("offer_rider"):
            problems.append(f"offer went to {after.get('offer_rider')}")
        return problems
    if isinstance(after, dict):
        return [
            f"{k} became {after[k]!r}"
            for k, v in extra.items()
            if k in after and after[k] == v and before.get(k) != v
        ]
    return []


# -- the matrix --------------------------------------------------------------------------


def in_turn(parties: list[Party], rule: Rule, target: Target) -> list[tuple[Party, int]]:
    """The refused first, so a refusal is seen against an untouched object; then those let
    in, the object's own party first in world a and operations first in world b, so
    that each of them is seen to succeed once."""
    judged = [(p, rule(p, target)) for p in parties]
    allowed = [j for j in judged if j[1] == ALLOW]
    if target.side == "b":
        allowed.reverse()
    return [j for j in judged if j[1] != ALLOW] + allowed


def run_case(scene: Scene, tally: Tally, case: Case) -> None:
    method, template = case.op.split(" ", 1)
    for target in case.targets(scene):
        path = template.format(**target.path)
        state = target.state()
        let_in = 0
        for party, verdict in in_turn(scene.parties, case.rule, target):
            tally.cells.add((case.op, party.name))
            allowed = verdict == ALLOW
            where = f"{method} {path} ({target.label}) as {party.name}"
            body = case.body(scene, party, target, allowed) if case.body else None
            params = case.params(scene, party, target) if case.params else None
            if allowed and not let_in and case.rule is not provider:
                if mass_assign(scene, tally, case, target, party, path, body, params, state):
                    let_in += 1
                state = target.state()
            answer = send(party.api.http, method, path, body, params)
            tally.probes += 1
            if allowed:
                wanted = (case.ok,) if not let_in else (case.ok, 409)
                if answer.status_code not in wanted:
                    tally.mismatches.append(
                        f"{where}: expected {wanted}, got {answer.status_code} {answer.text[:200]}"
                    )
                elif answer.status_code < 300:
                    let_in += 1
                    if case.check:
                        tally.breaches += [
                            f"{where}: {p}" for p in case.check(scene, party, target, answer)
                        ]
                state = target.state()
                continue
            if answer.status_code < 300:
                tally.let_in_refused += 1
                tally.breaches.append(
                    f"{where}: let in with {answer.status_code} "
                    f"{answer.text[:200]}, expected {verdict}"
                )
            else:
                code = "bad_signature" if case.rule is provider else None
                problem = refusal_problem(answer, verdict, code)
                if problem:
                    tally.mismatches.append(f"{where}: {problem}")
            after = target.state()
            if after != state:
                tally.breaches.append(
                    f"{where}: refused with {answer.status_code} but changed {state} -> {after}"
                )
            state = after
    if case.then:
        case.then(scene)


def mass_assign(
    scene: Scene,
    tally: Tally,
    case: Case,
    target: Target,
    party: Party,
    path: str,
    body: Any,
    params: dict[str, Any] | None,
    state: Any,
) -> bool:
    """One request of a party who may, with fields nobody may set: refused, or taken
    without them. Whether it went through (then the object has moved on)."""
    method = case.op.split(" ", 1)[0]
    extra = injected(scene, target, case.moves_to)
    where = f"{method} {path} ({target.label}) as {party.name} with injected fields"
    if method not in MUTATING:
        if case.check is None:
            return False
        scalars = {k: str(v) for k, v in extra.items() if not isinstance(v, dict)}
        answer = send(party.api.http, method, path, None, {**scalars, **(params or {})})
        tally.mass += 1
        if answer.status_code < 300:
            tally.breaches += [f"{where}: {p}" for p in case.check(scene, party, target, answer)]
        return False
    mixed = {**extra, **body} if isinstance(body, dict) else extra
    answer = send(party.api.http, method, path, mixed, params)
    tally.mass += 1
    after = target.state()
    owner = scene.sides[target.side].rider.sub if target.side else None
    if answer.status_code < 300:
        problems = tampered(state, after, extra, case, owner)
        if case.check:
            problems += case.check(scene, party, target, answer)
        tally.breaches += [f"{where}: {p}" for p in problems]
        return True
    if answer.status_code >= 500:
        tally.mismatches.append(f"{where}: {answer.status_code} {answer.text[:200]}")
    if after != state:
        tally.breaches.append(f"{where}: refused but changed {state} -> {after}")
    return False


# -- the tests ---------------------------------------------------------------------------


def test_every_operation_is_classified(operations: set[str], tally: Tally) -> None:
    """A new route must say who may call it before this suite passes."""
    tally.operations = operations
    unknown = sorted(operations - RULES.keys())
    gone = sorted(RULES.keys() - operations)
    assert not unknown, f"operations with no authorization rule here: {unknown}"
    assert not gone, f"rules for operations the app no longer has: {gone}"


def test_a_missing_token_is_refused_before_the_request_is_read(
    scene: Scene, operations: set[str], tally: Tally, platform: Platform
) -> None:
    """API.md: a missing or bad token is 401 before the body is looked at, so an
    anonymous caller learns nothing of what a request would need."""
    document = httpx.get(f"{platform.url}/openapi.json", timeout=30).json()
    wrong_secret = jwt.encode(
        {"sub": "ops", "role": "admin", "exp": int(time.time()) + 600},
        "not-the-platform-secret-but-long-enough-to-sign",
        algorithm="HS256",
    )
    problems = []
    for op in sorted(operations):
        rule = RULES.get(op)
        if rule is None or rule is provider or rule(scene.nobody, Target("-", None)) != 401:
            continue
        method, template = op.split(" ", 1)
        spec = document["paths"][template][method.lower()]
        path = template.format(
            **{p["name"]: "x" for p in spec.get("parameters", []) if p["in"] == "path"}
        )
        attempts: list[tuple[str, Any, dict[str, Any], dict[str, str]]] = [
            ("no token, bad query", None, {"limit": "-5", "lat": "north"}, {}),
        ]
        if "requestBody" in spec:
            attempts += [
                ("no token, bad body", {"unexpected": True}, {}, {}),
                ("no token, body not JSON", b"{not json", {}, {}),
                (
                    "forged token, body not JSON",
                    b"{not json",
                    {},
                    {"Authorization": f"Bearer {wrong_secret}"},
                ),
            ]
        for name, body, params, headers in attempts:
            answer = send(scene.nobody.api.http, method, path, body, params, headers)
            tally.before_reading += 1
            problem = refusal_problem(answer, 401)
            if problem:
                problems.append(f"{method} {path} ({name}): {problem}")
    tally.mismatches += problems
    assert not problems, "\n".join(problems)


def test_authorization_matrix(scene: Scene, operations: set[str], tally: Tally) -> None:
    started = time.monotonic()
    first_breach, first_mismatch = len(tally.breaches), len(tally.mismatches)
    for case in CASES:
        if case.op in operations:
            run_case(scene, tally, case)
    took = time.monotonic() - started
    print(f"authorization matrix: {tally.probes} probes in {took:.1f}s")
    found = tally.breaches[first_breach:] + tally.mismatches[first_mismatch:]
    assert not found, "\n".join(found)


# -- forged tokens -----------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def with_claims(token: str, **changes: Any) -> str:
    """The same header and signature over a payload changed on the way."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{b64(json.dumps({**claims, **changes}).encode())}.{signature}"


def forgeries(scene: Scene) -> dict[str, dict[str, str]]:
    """Authorization headers that must not get anyone in, by name."""
    secret = scene.platform.settings.jwt_secret
    now = int(time.time())
    admin = {"sub": "ops", "role": "admin", "exp": now + 600}
    customer = scene.sides["a"].customer.token
    real_admin = scene.admin.token

    def signed(claims: dict[str, Any], key: str = secret, alg: str = "HS256") -> str:
        return jwt.encode(claims, key, algorithm=alg)

    tokens = {
        "wrong secret": signed(admin, "not-the-platform-secret-but-long-enough-to-sign"),
        "alg none": unsigned(admin),
        "alg None": unsigned(admin, "None"),
        "alg HS512 with the real secret": signed(admin, alg="HS512"),
        "signature stripped": real_admin.rsplit(".", 1)[0] + ".",
        "expired": signed({**admin, "exp": now - 60}),
        "not yet valid (nbf)": signed({**admin, "nbf": now + 3600}),
        "issued in the future (iat)": signed({**admin, "iat": now + 3600}),
        "no expiry": signed({"sub": "ops", "role": "admin"}),
        "expiry not a number": signed({**admin, "exp": "never"}),
        "tampered subject": with_claims(customer, sub=scene.sides["b"].customer.sub),
        "role escalated in payload": with_claims(customer, role="admin"),
        "role that does not exist": signed({**admin, "role": "superuser"}),
        # The platform's own commands run as "system"; no token may claim it.
        "system role": signed({**admin, "role": "system"}),
        "role in another case": signed({**admin, "role": "Admin"}),
        "role as a list": signed({**admin, "role": ["admin"]}),
        "no role": signed({"sub": "ops", "exp": now + 600}),
        "no subject": signed({"role": "admin", "exp": now + 600}),
        "empty subject": signed({**admin, "sub": ""}),
        "numeric subject": signed({**admin, "sub": 42}),
        "garbage": "not-a-token",
        "two segments": "e30.e30",
    }
    headers = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    headers |= {
        # "Bearer " reaches the server as "Bearer" (trailing space is not part of a value).
        "bearer alone": {"Authorization": "Bearer"},
        "empty quoted bearer": {"Authorization": 'Bearer ""'},
        "other scheme": {"Authorization": f"Basic {real_admin}"},
        "no scheme": {"Authorization": real_admin},
        "token twice": {"Authorization": f"Bearer {real_admin} {real_admin}"},
    }
    return headers


# One forgery signs with HS512 under the platform's 45-byte key, which PyJWT warns about.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_forged_tokens_are_refused(scene: Scene, tally: Tally) -> None:
    side = scene.sides["a"]
    order = place(side)
    oid, merchant = order["id"], side.merchant.sub or ""
    far = {"lat": 1.0, "lng": 1.0}
    # The order first: its payment times out in the background after a while.
    targets: list[tuple[str, str, Any, Callable[[], Any]]] = [
        ("POST", f"/v1/orders/{oid}/cancel", None, lambda: order_state(scene, "a", oid)),
        ("GET", f"/v1/orders/{oid}", None, lambda: None),
        ("POST", f"/v1/admin/orders/{oid}/refund", {"amount_fen": 1}, lambda: None),
        (
            "PUT",
            f"/v1/merchants/{merchant}/menu/items/{NOODLES}",
            {"name": "Hijacked", "price_fen": 1, "stock": 0},
            lambda: menu_state(scene, merchant, NOODLES),
        ),
        (
            "POST",
            "/v1/orders",
            side.world.order_body(),
            lambda: menu_state(scene, merchant, NOODLES),
        ),
        ("POST", "/v1/riders/me/location", far, lambda: riders_state(scene)),
        ("GET", "/v1/admin/metrics", None, lambda: None),
        ("GET", "/v1/sync/events", None, lambda: None),
    ]
    first = len(tally.breaches)
    problems = []
    forged = forgeries(scene)
    for method, path, body, state in targets:
        before = state()
        for name, headers in forged.items():
            answer = send(scene.nobody.api.http, method, path, body, None, headers)
            tally.forgeries += 1
            problem = refusal_problem(answer, 401)
            if answer.status_code < 400:
                tally.let_in_refused += 1
                tally.breaches.append(f"{method} {path} with {name}: let in {answer.status_code}")
            elif problem:
                problems.append(f"{method} {path} with {name}: {problem}")
            after = state()
            if after != before:
                tally.breaches.append(f"{method} {path} with {name}: changed {before} -> {after}")
            before = after
    # HTTP routes take the token from the header only; `?token=` is the socket's.
    for path in (f"/v1/orders/{oid}", "/v1/admin/metrics"):
        answer = send(scene.nobody.api.http, "GET", path, params={"token": scene.admin.token})
        tally.forgeries += 1
        if answer.status_code < 400:
            tally.let_in_refused += 1
            tally.breaches.append(f"GET {path}?token=<admin token>: let in")
        elif problem := refusal_problem(answer, 401):
            problems.append(f"GET {path}?token=<admin token>: {problem}")
    problems += forged_notifications(scene, tally, order)
    problems += forged_sockets(scene, tally, forged)
    tally.mismatches += problems
    found = tally.breaches[first:] + problems
    assert not found, "\n".join(found)


def forged_notifications(scene: Scene, tally: Tally, order: dict[str, Any]) -> list[str]:
    """Payment notifications the provider did not sign: the order stays unpaid."""
    secret = scene.platform.settings.payment_secret
    body = json.dumps(
        {
            "out_trade_no": order["id"],
            "intent_id": order["payment"]["intent_id"],
            "type": "payment.succeeded",
            "amount_fen": order["amounts"]["total_fen"],
        }
    ).encode()
    now = int(time.time())
    wrong = hmac.new(b"not-the-provider-secret", f"{now}.".encode() + body, hashlib.sha256)
    signatures = {
        "no signature": None,
        "wrong secret": f"t={now},v1={wrong.hexdigest()}",
        "too old": sign(secret, body, now - 3600),
        "from the future": sign(secret, body, now + 3600),
        "signed for another body": sign(secret, body.replace(b"succeeded", b"failed"), now),
        "garbage": "v1=deadbeef",
    }
    problems = []
    before = order_state(scene, "a", order["id"])
    for name, signature in signatures.items():
        headers = {SIGNATURE_HEADER: signature} if signature else {}
        answer = send(scene.nobody.api.http, "POST", "/v1/payments/callback", body, None, headers)
        tally.forgeries += 1
        if answer.status_code < 400:
            tally.let_in_refused += 1
            tally.breaches.append(f"payment notification with {name}: let in {answer.status_code}")
        elif problem := refusal_problem(answer, 401, "bad_signature"):
            problems.append(f"payment notification with {name}: {problem}")
        after = order_state(scene, "a", order["id"])
        if after != before:
            tally.breaches.append(f"payment notification with {name}: changed {before} -> {after}")
    return problems


def forged_sockets(scene: Scene, tally: Tally, forged: dict[str, dict[str, str]]) -> list[str]:
    """The sync socket takes `?token=`; forged ones are turned away (close 4401 or 403)."""
    s = scene.platform.settings
    problems = []
    for name in ("wrong secret", "alg none", "expired", "role escalated in payload", "system role"):
        token = forged[name]["Authorization"][len("Bearer ") :]
        url = f"ws://{s.http_host}:{s.http_port}/v1/sync/ws?token={token}"
        tally.forgeries += 1
        try:
            with connect(url, open_timeout=10) as socket:
                socket.recv(timeout=3)
            verdict = "a frame"
        except TimeoutError:
            verdict = "an open socket"
        except (InvalidStatus, ConnectionClosed) as refused:
            if "4401" in str(refused) or "403" in str(refused):
                continue
            problems.append(f"socket with {name}: refused as {refused}")
            continue
        tally.let_in_refused += 1
        tally.breaches.append(f"socket with {name}: {verdict}")
    return problems


# -- the summary -------------------------------------------------------------------------


def test_summary_nobody_got_in(tally: Tally, request: pytest.FixtureRequest) -> None:
    principals = 8
    ops = len(tally.operations)
    lines = [
        "authorization summary",
        f"  operations x principals: {ops} x {principals} = {ops * principals} cells, "
        f"{len(tally.cells)} probed, {tally.probes} requests on own and others' objects",
        f"  refused before the request is read (no or forged token): {tally.before_reading}",
        f"  mass-assignment attempts: {tally.mass}",
        f"  forgeries (tokens, notifications, sockets): {tally.forgeries}",
        f"  got in where they must not: {tally.let_in_refused}",
        f"  breaches: {len(tally.breaches)}, other mismatches with API.md: {len(tally.mismatches)}",
    ]
    print("\n" + "\n".join(lines))
    # Shown without -s as well: the counts are the point of this file.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is not None and request.config.getoption("capture") != "no":
        with capture.global_and_fixture_disabled():
            print("\n" + "\n".join(lines), flush=True)
    assert not tally.breaches, "\n".join(tally.breaches)
