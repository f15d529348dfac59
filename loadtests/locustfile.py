"""The lunch peak: customers, merchants and riders walking the whole order loop over HTTP.

Customers find a merchant nearby, read its menu, order with an Idempotency-Key, pay at
the payment sandbox (the host and port of `payment.pay_url`) and follow the order until
it is delivered. Merchants read their event streams, accept paid orders after a short
think time and mark them ready. Riders go online near the merchants, keep their
position fresh, take offers from their event stream, wait until the food is ready,
pick it up and deliver it.

Only the public API of `--host` is used (plus the sandbox's pay URL). This file imports
locust, which monkey-patches the process with gevent: never import it from a process
that imports ray (pytest included); start `locust -f loadtests/locustfile.py` instead.

Knobs are environment variables (`LT_*`), see loadtests/README.md. `LT_SHAPE=off` drops
the `LunchPeak` shape so that `-u`, `-r` and `-t` apply.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import math
import os
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import gevent
from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner

log = logging.getLogger("loadtest")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _env_range(name: str, default: tuple[float, float]) -> tuple[float, float]:
    """`LT_X=2` means exactly 2 s, `LT_X=1,3` a uniform draw between 1 and 3 s."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    parts = [float(p) for p in raw.split(",")]
    return (parts[0], parts[-1])


def _draw(bounds: tuple[float, float]) -> float:
    return random.uniform(*bounds)


# Read once per process; workers read their own environment.
MERCHANT_USERS = _env_int("LT_MERCHANT_USERS", 2)
STOCK = _env_int("LT_STOCK", 1_000_000)
ACCEPT_THINK_S = _env_range("LT_ACCEPT_THINK_S", (0.5, 2.0))
PREP_S = _env_range("LT_PREP_S", (2.0, 6.0))
TRAVEL_S = _env_range("LT_TRAVEL_S", (1.0, 3.0))
ORDER_DEADLINE_S = _env_float("LT_ORDER_DEADLINE_S", 120.0)
READY_WAIT_S = _env_float("LT_READY_WAIT_S", 120.0)
ORDER_POLL_S = _env_float("LT_ORDER_POLL_S", 2.0)
RIDER_PING_S = _env_float("LT_RIDER_PING_S", 5.0)
SHAPE_OFF = os.environ.get("LT_SHAPE", "on").strip().lower() in ("off", "0", "false", "no")
# Far from the demo city (West Lake) and the e2e worlds, so our riders take only our orders.
CENTER = tuple(float(x) for x in os.environ.get("LT_CENTER", "31.2304,121.4737").split(","))

# Shared with workers: the master's command line value travels with every spawn message,
# so all processes of one run onboard and use the same merchants.
DEFAULT_RUN = os.environ.get("LT_RUN", "").strip() or uuid.uuid4().hex[:6]
DEFAULT_MERCHANTS = _env_int("LT_MERCHANTS", 6)

TERMINAL = frozenset({"delivered", "cancelled", "rejected"})
SHED = (429, 503)  # load shedding: recorded as failures, and Retry-After is honoured

KITCHEN = (
    ("noodles", "Beef noodles", 2800),
    ("dumplings", "Pork dumplings (12)", 2400),
    ("rice", "Fried rice", 2000),
    ("tea", "Milk tea", 1500),
)


# -- the merchants of this run ------------------------------------------------------


@dataclass(frozen=True)
class Spot:
    """One merchant onboarded for this run."""

    id: str
    lat: float
    lng: float
    accept_mode: str
    items: tuple[tuple[str, str, int], ...]

    def pickup_key(self) -> tuple[float, float]:
        return (round(self.lat, 5), round(self.lng, 5))


MERCHANTS: list[Spot] = []
BY_ID: dict[str, Spot] = {}
PICKUPS: set[tuple[float, float]] = set()
RUN: dict[str, str] = {"id": DEFAULT_RUN}


def layout(run_id: str, count: int) -> list[Spot]:
    """A deterministic grid of merchants about 1.3 km apart, in a district chosen by run id.

    Different runs land in different districts (about 11 km apart), so orders left over
    from an earlier run are not offered to this run's riders.
    """
    h = int(hashlib.sha256(run_id.encode()).hexdigest(), 16)
    base_lat = CENTER[0] + (h % 7 - 3) * 0.1
    base_lng = CENTER[1] + (h // 7 % 7 - 3) * 0.1
    cols = max(1, math.ceil(math.sqrt(count)))
    spots = []
    for i in range(count):
        row, col = divmod(i, cols)
        spots.append(
            Spot(
                id=f"lt_m_{run_id}_{i}",
                lat=round(base_lat + row * 0.012, 6),
                lng=round(base_lng + col * 0.014, 6),
                # Half the merchants accept by themselves, so both paths carry load.
                accept_mode="auto" if i % 2 else "manual",
                items=KITCHEN[: 2 + i % 3],
            )
        )
    return spots


def near(lat: float, lng: float, min_m: float, max_m: float) -> tuple[float, float]:
    distance = random.uniform(min_m, max_m)
    bearing = random.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / 111_320
    dlng = distance * math.sin(bearing) / (111_320 * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lng + dlng, 6)


_TAGS: dict[int, str] = {}
_serial = itertools.count(1)


def new_id(kind: str) -> str:
    """Unique across processes: forked workers share the counter but not the tag."""
    pid = os.getpid()
    if pid not in _TAGS:
        _TAGS[pid] = uuid.uuid4().hex[:4]
    return f"lt_{kind}_{RUN['id']}_{_TAGS[pid]}_{next(_serial)}"


def _setup_call(
    host: str, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """Setup talks to the API outside the users, so it does not show up in their stats."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(host.rstrip("/") + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw.decode(errors="replace")


def _token(host: str, role: str, sub: str) -> str:
    status, body = _setup_call(host, "POST", "/v1/auth/dev-token", {"role": role, "sub": sub})
    if status != 200:
        raise RuntimeError(f"dev-token for {role} {sub}: {status} {body}")
    return str(body["token"])


def onboard(host: str, spots: list[Spot]) -> None:
    """Create the merchants and their deep menus; a second process doing the same is fine."""
    admin = _token(host, "admin", "loadtest")
    for spot in spots:
        status, body = _setup_call(
            host,
            "POST",
            "/v1/merchants",
            {
                "id": spot.id,
                "name": f"Load test kitchen {spot.id[-6:]}",
                "lat": spot.lat,
                "lng": spot.lng,
                "delivery": {"radius_m": 3000},
                "prep_minutes": 10,
                "accept_mode": spot.accept_mode,
            },
            admin,
        )
        exists = isinstance(body, dict) and body.get("error", {}).get("code") == "merchant_exists"
        if status != 201 and not exists:
            raise RuntimeError(f"onboarding {spot.id}: {status} {body}")
        merchant = _token(host, "merchant", spot.id)
        for item_id, name, price in spot.items:
            status, body = _setup_call(
                host,
                "PUT",
                f"/v1/merchants/{spot.id}/menu/items/{item_id}",
                {"name": name, "price_fen": price, "stock": STOCK},
                merchant,
            )
            if status != 200:
                raise RuntimeError(f"menu of {spot.id}: {status} {body}")


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument(
        "--lt-run",
        type=str,
        env_var="LT_RUN",
        default=DEFAULT_RUN,
        help="Run id in merchant, rider and customer ids (default: random per run)",
    )
    parser.add_argument(
        "--lt-merchants",
        type=int,
        env_var="LT_MERCHANTS",
        default=DEFAULT_MERCHANTS,
        help="Merchants onboarded for the run",
    )


@events.test_start.add_listener
def _onboard(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        return  # the master runs no users; its workers onboard
    options = environment.parsed_options
    run_id = str(getattr(options, "lt_run", None) or DEFAULT_RUN)
    count = int(getattr(options, "lt_merchants", None) or DEFAULT_MERCHANTS)
    RUN["id"] = run_id
    spots = layout(run_id, count)
    try:
        if not environment.host:
            raise RuntimeError("give --host, the platform's API URL")
        onboard(environment.host, spots)
    except Exception:
        log.exception("onboarding the load-test merchants failed; stopping")
        environment.process_exit_code = 2
        if environment.runner is not None:
            gevent.spawn(environment.runner.quit)
        return
    MERCHANTS[:] = spots
    BY_ID.clear()
    BY_ID.update((s.id, s) for s in spots)
    PICKUPS.clear()
    PICKUPS.update(s.pickup_key() for s in spots)
    log.info("run %s: %d merchants onboarded at %s", run_id, len(spots), environment.host)


# -- users --------------------------------------------------------------------------


def _reason(status: int, body: Any, resp: Any) -> str:
    """The error code, not the message: messages carry ids, which would split the failure
    table into one row per order."""
    if not status:
        return type(getattr(resp, "error", None)).__name__
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code"))
    return (resp.text or "")[:80]


class Party(FastHttpUser):
    """A user of one role with the HTTP habits every terminal shares."""

    abstract = True
    role = ""
    network_timeout = 40.0
    connection_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.auth: dict[str, str] = {}

    def login(self, sub: str) -> dict[str, str] | None:
        status, body = self.call(
            "POST",
            "/v1/auth/dev-token",
            "/v1/auth/dev-token",
            json={"role": self.role, "sub": sub},
            auth={},
        )
        if status != 200 or not isinstance(body, dict):
            return None
        return {"Authorization": f"Bearer {body['token']}"}

    def call(
        self,
        method: str,
        url: str,
        name: str,
        *,
        expect: Collection[int] = (200,),
        tolerate: Collection[int] = (),
        json: Any = None,
        headers: dict[str, str] | None = None,
        auth: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request; `tolerate` lists the answers that are business as usual, not failures.

        Returns the status (0 when no answer came) and the JSON body when there is one.
        """
        sent = {**(self.auth if auth is None else auth), **(headers or {})}
        body: Any = None
        retry_after = 0.0
        with self.client.request(
            method, url, name=name, json=json, headers=sent, catch_response=True
        ) as resp:
            status = resp.status_code or 0
            if status and resp.content:
                try:
                    body = resp.json()
                except ValueError:
                    body = None
            if status in expect or status in tolerate:
                resp.success()
            else:
                resp.failure(f"{status} {_reason(status, body, resp)}")
            if status in SHED:
                try:
                    retry_after = min(float(resp.headers.get("retry-after") or 1), 10.0)
                except ValueError:
                    retry_after = 1.0
        if retry_after:
            gevent.sleep(retry_after)
        return status, body


@dataclass
class BackOffice:
    """A merchant's terminal state, shared by the Merchant users of this process."""

    spot: Spot
    auth: dict[str, str] | None = None
    cursor: str | None = None
    versions: dict[str, int] = field(default_factory=dict)
    # (due monotonic time, action, order id)
    due: list[tuple[float, str, str]] = field(default_factory=list)
    busy: bool = False


_OFFICES: dict[str, BackOffice] = {}
_MERCHANT_USERS: list[Merchant] = []


class Merchant(Party):
    """The back office of the merchants: accepts paid orders, then marks them ready.

    The Merchant users of one process split the run's merchants between them and keep
    each merchant's cursor and to-do list at process level, so a merchant changes hands
    without losing events when users come and go. Several processes each serve every
    merchant; the slower one's accept or ready then answers 409, which is tolerated.
    """

    role = "merchant"
    fixed_count = MERCHANT_USERS
    wait_time = between(0.3, 0.8)

    def on_start(self) -> None:
        _MERCHANT_USERS.append(self)

    def on_stop(self) -> None:
        if self in _MERCHANT_USERS:
            _MERCHANT_USERS.remove(self)

    def shard(self) -> list[BackOffice]:
        users = _MERCHANT_USERS
        if self not in users or not MERCHANTS:
            return []
        mine, count = users.index(self), len(users)
        offices = []
        for i, spot in enumerate(MERCHANTS):
            if i % count == mine:
                offices.append(_OFFICES.setdefault(spot.id, BackOffice(spot)))
        return offices

    @task
    def run_back_office(self) -> None:
        offices = self.shard()
        if not offices:
            gevent.sleep(1)
            return
        # One merchant: hold a long poll like a real back office. Several: sweep them.
        wait_s = 2 if len(offices) == 1 else 0
        for office in offices:
            if office.busy:
                continue
            office.busy = True
            try:
                self.serve(office, wait_s)
            finally:
                office.busy = False

    def serve(self, office: BackOffice, wait_s: int) -> None:
        if office.auth is None:
            office.auth = self.login(office.spot.id)
            if office.auth is None:
                return
        query: dict[str, Any] = {"wait_s": wait_s}
        if office.cursor:
            query["cursor"] = office.cursor
        status, page = self.call(
            "GET",
            f"/v1/sync/events?{urlencode(query)}",
            "/v1/sync/events (merchant)",
            auth=office.auth,
        )
        if status == 200 and isinstance(page, dict):
            office.cursor = page.get("cursor") or office.cursor
            for event in page.get("events", []):
                self.note(office, event)
        self.do_what_is_due(office)

    def note(self, office: BackOffice, event: dict[str, Any]) -> None:
        order_id = event.get("order_id")
        version = int(event.get("version") or 0)
        if not order_id or version <= office.versions.get(order_id, 0):
            return  # an older or repeated event of an order we already know better
        office.versions[order_id] = version
        kind = event.get("type")
        now = time.monotonic()
        if kind == "order_paid" and office.spot.accept_mode == "manual":
            heapq.heappush(office.due, (now + _draw(ACCEPT_THINK_S), "accept", order_id))
        elif kind == "order_accepted":
            heapq.heappush(office.due, (now + _draw(PREP_S), "ready", order_id))
        elif kind in ("order_delivered", "order_cancelled", "order_rejected"):
            office.versions.pop(order_id, None)
        if len(office.versions) > 10_000:
            # Orders that never finished must not grow this for ever; forget the oldest.
            for stale in list(office.versions)[:1000]:
                office.versions.pop(stale, None)

    def do_what_is_due(self, office: BackOffice) -> None:
        now = time.monotonic()
        while office.due and office.due[0][0] <= now:
            _, action, order_id = heapq.heappop(office.due)
            if action == "accept":
                self.call(
                    "POST",
                    f"/v1/merchant/orders/{order_id}/accept",
                    "/v1/merchant/orders/{id}/accept",
                    json={"prep_minutes": 10},
                    tolerate=(404, 409),
                    auth=office.auth,
                )
            else:
                self.call(
                    "POST",
                    f"/v1/merchant/orders/{order_id}/ready",
                    "/v1/merchant/orders/{id}/ready",
                    tolerate=(404, 409),
                    auth=office.auth,
                )


class Customer(Party):
    """Orders lunch, pays, and follows the order to the door (each step bounded)."""

    role = "customer"
    weight = 3
    wait_time = between(1, 4)

    def on_start(self) -> None:
        self.sub = new_id("c")
        self.auth = self.login(self.sub) or {}

    @task
    def order_lunch(self) -> None:
        if not self.auth:
            self.auth = self.login(self.sub) or {}
            return
        if not MERCHANTS:
            gevent.sleep(1)
            return
        home = random.choice(MERCHANTS)
        lat, lng = near(home.lat, home.lng, 200, 1500)
        spot = self.pick_merchant(lat, lng) or home
        items = self.menu(spot)
        if not items:
            return
        lines = random.sample(items, k=min(len(items), random.randint(1, 2)))
        body = {
            "merchant_id": spot.id,
            "items": [{"item_id": i["id"], "qty": random.randint(1, 2)} for i in lines],
            "delivery": {"lat": lat, "lng": lng, "address": f"{random.randint(1, 999)} Lunch Rd"},
        }
        order = self.place(body)
        if order is None:
            return
        started = time.monotonic()
        paid, _ = self.call(
            "POST",
            order["payment"]["pay_url"],
            "/pay/{intent_id} (sandbox)",
            tolerate=(409,),
            auth={},  # the bearer token is the platform's, not the provider's
        )
        if paid != 200:
            return
        self.follow(order["id"], started)

    def pick_merchant(self, lat: float, lng: float) -> Spot | None:
        status, found = self.call(
            "GET",
            f"/v1/merchants/nearby?{urlencode({'lat': lat, 'lng': lng, 'radius_m': 3000})}",
            "/v1/merchants/nearby",
        )
        if status != 200 or not isinstance(found, dict):
            return None
        # Other runs' kitchens may be listed too; only this run's have a back office.
        ours = [BY_ID[m["id"]] for m in found.get("merchants", []) if m.get("id") in BY_ID]
        return random.choice(ours[:3]) if ours else None

    def menu(self, spot: Spot) -> list[dict[str, Any]]:
        status, menu = self.call("GET", f"/v1/merchants/{spot.id}/menu", "/v1/merchants/{id}/menu")
        if status != 200 or not isinstance(menu, dict):
            return []
        return [i for i in menu.get("items", []) if i.get("available", True) and i["stock"] > 2]

    def place(self, body: dict[str, Any]) -> dict[str, Any] | None:
        key = uuid.uuid4().hex
        for _attempt in range(2):
            status, order = self.call(
                "POST",
                "/v1/orders",
                "/v1/orders",
                json=body,
                headers={"Idempotency-Key": key},
                expect=(201,),
                tolerate=(409, 422),  # out of stock, price changed, out of range
            )
            if status == 201 and isinstance(order, dict):
                return order
            if status not in (0, 502, 504):
                return None
            # No answer: the same key makes the retry safe (at most one order).
        return None

    def follow(self, order_id: str, started: float) -> None:
        deadline = started + ORDER_DEADLINE_S
        last = "pending_payment"
        while time.monotonic() < deadline:
            gevent.sleep(ORDER_POLL_S)
            status, view = self.call("GET", f"/v1/orders/{order_id}", "/v1/orders/{id}")
            if status == 200 and isinstance(view, dict):
                last = view.get("status", last)
            if last in TERMINAL:
                break
        elapsed_ms = (time.monotonic() - started) * 1000
        problem: Exception | None = None
        if last != "delivered":
            problem = RuntimeError(
                f"order {last}"
                if last in TERMINAL
                else f"not delivered within {ORDER_DEADLINE_S:.0f}s (last seen {last})"
            )
        # The whole loop as one entry in the stats, as the customer saw it.
        self.environment.events.request.fire(
            request_type="ORDER",
            name="placed -> delivered",
            response_time=elapsed_ms,
            response_length=0,
            exception=problem,
            context={},
        )


@dataclass
class Job:
    order_id: str
    pickup: tuple[float, float]
    dropoff: tuple[float, float]


def _fresh(offer: dict[str, Any]) -> bool:
    try:
        expires = datetime.fromisoformat(offer["data"]["expires_at"])
    except (KeyError, TypeError, ValueError):
        return False
    return expires > datetime.now(UTC)


class Rider(Party):
    """Online near a kitchen; takes one offer at a time and carries it to the door."""

    role = "rider"
    weight = 2
    wait_time = between(0.2, 1.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sub = ""
        self.cursor: str | None = None
        self.job: Job | None = None
        self.home: tuple[float, float] = (CENTER[0], CENTER[1])
        self.last_ping = 0.0

    def on_start(self) -> None:
        self.become_new_rider()

    def on_stop(self) -> None:
        if self.auth:
            self.call(
                "POST",
                "/v1/riders/me/status",
                "/v1/riders/me/status",
                json={"online": False},
                tolerate=range(0, 600),  # leaving: whatever the answer, we are gone
            )

    def become_new_rider(self) -> None:
        """A fresh identity: the platform keeps a rider busy until its order is delivered,
        so a rider that had to give an order up would never be offered another one."""
        if self.auth and self.job is not None:
            self.go(online=False)
        self.sub = new_id("r")
        self.cursor = None
        self.job = None
        self.auth = self.login(self.sub) or {}
        if not self.auth or not MERCHANTS:
            return
        spot = random.choice(MERCHANTS)
        self.home = near(spot.lat, spot.lng, 50, 400)
        self.go(online=True)

    def go(self, online: bool) -> None:
        lat, lng = self.home
        self.call(
            "POST",
            "/v1/riders/me/status",
            "/v1/riders/me/status",
            json={"online": online, "lat": lat, "lng": lng},
        )
        self.last_ping = time.monotonic()

    def ping(self, at: tuple[float, float], force: bool = False) -> None:
        """Positions older than a minute make a rider invisible to dispatch."""
        if not force and time.monotonic() - self.last_ping < RIDER_PING_S:
            return
        lat, lng = near(at[0], at[1], 0, 60)
        self.call(
            "POST",
            "/v1/riders/me/location",
            "/v1/riders/me/location",
            json={"lat": lat, "lng": lng},
        )
        self.last_ping = time.monotonic()

    @task
    def work(self) -> None:
        if not MERCHANTS:
            gevent.sleep(1)
            return
        if not self.auth:
            self.become_new_rider()
            return
        if self.job is None:
            self.look_for_offers()
        else:
            self.carry(self.job)

    def look_for_offers(self) -> None:
        self.ping(self.home)
        query: dict[str, Any] = {"wait_s": 2}
        if self.cursor:
            query["cursor"] = self.cursor
        status, page = self.call(
            "GET", f"/v1/sync/events?{urlencode(query)}", "/v1/sync/events (rider)"
        )
        if status != 200 or not isinstance(page, dict):
            return
        self.cursor = page.get("cursor") or self.cursor
        for event in page.get("events", []):
            if event.get("type") != "offer" or not _fresh(event):
                continue
            data = event["data"]
            pickup = (float(data["pickup"]["lat"]), float(data["pickup"]["lng"]))
            ours = (round(pickup[0], 5), round(pickup[1], 5)) in PICKUPS
            if self.job is None and ours and self.take(data["offer_id"]):
                dropoff = (float(data["dropoff"]["lat"]), float(data["dropoff"]["lng"]))
                self.job = Job(event["order_id"], pickup, dropoff)
            else:
                # Busy, or an order nobody in this run will cook: let the next rider have it.
                self.call(
                    "POST",
                    f"/v1/rider/offers/{data['offer_id']}/decline",
                    "/v1/rider/offers/{offer_id}/decline",
                    tolerate=(403, 404, 409),
                )

    def take(self, offer_id: str) -> bool:
        status, _ = self.call(
            "POST",
            f"/v1/rider/offers/{offer_id}/accept",
            "/v1/rider/offers/{offer_id}/accept",
            tolerate=(403, 404, 409),  # expired, withdrawn, or the order moved on
        )
        return status == 200

    def carry(self, job: Job) -> None:
        deadline = time.monotonic() + READY_WAIT_S
        ready = False
        while time.monotonic() < deadline:
            self.ping(job.pickup)
            status, view = self.call("GET", f"/v1/orders/{job.order_id}", "/v1/orders/{id}")
            state = view.get("status") if status == 200 and isinstance(view, dict) else None
            if state == "ready":
                ready = True
                break
            if state in TERMINAL or state == "picked_up":
                break
            gevent.sleep(1)
        if not ready:
            self.become_new_rider()
            return
        status, _ = self.call(
            "POST",
            f"/v1/rider/orders/{job.order_id}/pickup",
            "/v1/rider/orders/{id}/pickup",
            tolerate=(404, 409),
        )
        if status != 200:
            self.become_new_rider()
            return
        gevent.sleep(_draw(TRAVEL_S))
        self.ping(job.dropoff, force=True)
        status, _ = self.call(
            "POST",
            f"/v1/rider/orders/{job.order_id}/deliver",
            "/v1/rider/orders/{id}/deliver",
            tolerate=(404, 409),
        )
        if status != 200:
            self.become_new_rider()
            return
        self.job = None
        self.ping(self.home, force=True)


# -- the load shape -----------------------------------------------------------------


class LunchPeak(LoadTestShape):
    """Ramp to the lunch peak, hold it, decay back, then stop.

    Defaults: 60 s ramp from 6 to 60 users, 120 s at 60, 120 s back down to 6: five
    minutes. `LT_SHAPE=off` removes the shape so the command line's -u/-r/-t apply.
    """

    abstract = SHAPE_OFF

    def __init__(self) -> None:
        super().__init__()
        self.floor = MERCHANT_USERS + 2  # merchants plus at least one customer and rider
        self.base = max(_env_int("LT_BASE_USERS", 6), self.floor)
        self.peak = max(_env_int("LT_PEAK_USERS", 60), self.base)
        self.ramp_s = max(_env_float("LT_RAMP_S", 60), 1.0)
        self.hold_s = max(_env_float("LT_PEAK_S", 120), 0.0)
        self.decay_s = max(_env_float("LT_DECAY_S", 120), 1.0)
        slope = (self.peak - self.base) / min(self.ramp_s, self.decay_s)
        self.rate = _env_float("LT_SPAWN_RATE", max(2.0, 2 * slope))

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t < self.ramp_s:
            users = self.base + (self.peak - self.base) * t / self.ramp_s
        elif t < self.ramp_s + self.hold_s:
            users = self.peak
        elif t < self.ramp_s + self.hold_s + self.decay_s:
            into = t - self.ramp_s - self.hold_s
            users = self.peak - (self.peak - self.base) * into / self.decay_s
        else:
            return None
        return max(round(users), self.floor), self.rate
