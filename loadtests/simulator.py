"""The city simulator: customers, merchants and riders of one city, through the public HTTP API.

The simulation keeps its own clock, in minutes of the day, running `speedup` times
faster than real time. Everything the simulated people do is scheduled on it:

- **Customers** order by a daily demand curve that peaks at 12:00 (a non-homogeneous
  Poisson process, drawn up front from the seed, so the same seed places the same
  orders). A customer lists the merchants that deliver home, picks one (nearer ones
  more often), orders one or two dishes with an `Idempotency-Key` and pays at the
  payment sandbox a little later. About one arrival in ten (`errand_share`, drawn from
  the arrival's own seed, so the food orders of a seed stay as they were) is an errand
  instead: an item fetched from home to somewhere 1-4 km away or the other way round,
  its pickup and delivery codes passed on to the rider at the two doors.
- **Merchants** read their event streams. A manual merchant accepts a paid order after
  a short delay or, now and then, rejects it; every kitchen marks an accepted order
  ready when its (noisy) preparation time is over. The small city has local shops
  too, whose orders are ready as they are accepted.
- **Riders** go online, report where they are, long-poll for offers, accept most of
  them (up to a few orders at once), ride in straight lines at e-bike speeds, visit
  the nearest useful stop first (the door of food on board, or a kitchen; with food on
  board only a kitchen whose food is ready, and food that has ridden along for a
  quarter of an hour goes home first), wait at the kitchen until the food is ready,
  pick up and deliver. Idle riders wait near a kitchen.

The platform's own timestamps are real time; the report converts them to simulated
minutes (real seconds * speedup / 60). The platform's own timers are real time too, so
under a speed-up they stretch in simulated time: at 60x an offer lives 30 simulated
minutes, an order without a rider is retried every 5, and the ready time the scoring
policy expects (acceptance plus `prep_minutes`) lies 60 times too far ahead. Every loop
is bounded: arrivals end with the window, open orders get at most `drain_minutes`
more, then everything stops.

`run_simulation(url, ...)` returns the report as a dict; `simulate` is the command line
(`o2o simulate`, or `python -m loadtests.simulator`), optionally with a platform of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from cluster.seed import CENTER as DEMO_CENTER
from cluster.seed import KITCHENS
from cluster.seed import seed as seed_demo_city
from domain.errands import DESK_PREFIX, DESKS

# -- the simulated people ----------------------------------------------------------

# With 200 customers the default lunch window (10:30-13:30) gets about 250 orders,
# about 120 an hour at the peak: a real lunch crunch for 30 riders.
PEAK_ORDERS_PER_CUSTOMER_HOUR = 0.6
RIDER_KMH = (15.0, 25.0)  # e-bikes in city traffic
RIDER_CAPACITY = 3  # the platform's default rider_capacity
ACCEPT_WHEN_FREE = 0.92
# A rider who already carries food is pickier about a second kitchen.
ACCEPT_WHEN_CARRYING = 0.8
OFFER_THINK_S = (5.0, 25.0)  # simulated seconds to read an offer and tap
MERCHANT_REJECT = 0.04
REJECT_REASONS = ("too_busy", "sold_out", "closing_soon")
PAY_DELAY_MIN = (0.2, 1.5)
PREP_NOISE = (0.8, 1.3)  # actual over announced preparation time
PICKUP_HANDOVER_MIN = (0.5, 1.5)
# Errands (`domain/errands.py`): a share of the arrivals, how far they go, what they carry.
ERRAND_SHARE = 0.1
ERRAND_M = (1000.0, 4000.0)
ERRAND_CATEGORIES = ("documents", "keys", "flowers", "parcel", "food")
ERRAND_WEIGHTS = ("light", "light", "medium", "heavy")
ERRAND_SALT = 0x5EED_E44A
DESK_IDS = tuple(f"{DESK_PREFIX}{n}" for n in range(DESKS))
DOOR_HANDOVER_MIN = (0.5, 2.0)
# With food on board a rider waits this long for another kitchen before delivering first,
# and no food rides around longer than ON_BOARD_LIMIT_MIN before its door comes first.
HOLD_AT_KITCHEN_MIN = 4.0
ON_BOARD_LIMIT_MIN = 15.0
ARRIVED_M = 15.0
SAME_KITCHEN_M = 60.0
STANDBY_NEAR_M = 400.0
ASSIGN_TARGET_S = 60.0
DEFAULT_START = "10:30"
DEFAULT_DRAIN_MIN = 60.0

# -- what protects the machine (real time, not simulated) ---------------------------

# Riders report at most this often: 30 moving riders stay near 12 requests a second.
LOCATION_MIN_GAP_REAL_S = 2.5
# The platform hides a rider not seen for 60 s; idle riders say hello well before.
HEARTBEAT_REAL_S = 20.0
POLL_WAIT_S = 10.0
# A rider waiting at a kitchen re-reads the order this often in case an event was missed.
REFRESH_EVERY_MIN = 3.0
REFRESH_MIN_REAL_S = 3.0
MAX_JOB_FAILURES = 5
HTTP_ATTEMPTS = 4
FETCH_CONCURRENCY = 8
SETUP_CONCURRENCY = 8
TERMINAL = frozenset({"delivered", "rejected", "cancelled"})
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

# A small world sits far south of the demo city, the e2e worlds (north) and the locust
# districts (within 0.3 degrees); only its longitude depends on the prefix, so worlds
# of different prefixes have the same shape in metres and the same orders.
SMALL_LAT = 29.0
SMALL_MERCHANTS = 4
SMALL_MENU = (("noodles", "Noodles", 1800), ("dumplings", "Dumplings", 1200), ("soup", "Soup", 900))
# Local shops beside the kitchens: ready on accept. Their opening hours are the
# platform's real time, not the simulated clock, so they are open all week: a shop that
# opened or closed mid-run would make two runs of one seed order differently.
SMALL_SHOPS = 2
SMALL_SHELF = (
    ("water", "Mineral Water", 200),
    ("tissues", "Tissues", 500),
    ("snacks", "Snacks", 1500),
)
ALL_WEEK = {day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}

EVENT_STATUS = {
    "order_paid": "paid",
    "order_accepted": "accepted",
    "order_ready": "ready",
    "order_picked_up": "picked_up",
    "order_delivered": "delivered",
    "order_rejected": "rejected",
    "order_cancelled": "cancelled",
}

LatLng = tuple[float, float]


# -- geometry and the day --------------------------------------------------------------


def meters(a: LatLng, b: LatLng) -> float:
    """Distance on the ground; equirectangular is exact enough within a city."""
    mean_lat = math.radians((a[0] + b[0]) / 2)
    dy = (b[0] - a[0]) * 111_320
    dx = (b[1] - a[1]) * 111_320 * math.cos(mean_lat)
    return math.hypot(dx, dy)


def offset(origin: LatLng, distance: float, bearing: float) -> LatLng:
    dlat = distance * math.cos(bearing) / 111_320
    dlng = distance * math.sin(bearing) / (111_320 * math.cos(math.radians(origin[0])))
    return round(origin[0] + dlat, 6), round(origin[1] + dlng, 6)


def lerp(a: LatLng, b: LatLng, share: float) -> LatLng:
    return a[0] + (b[0] - a[0]) * share, a[1] + (b[1] - a[1]) * share


def demand(minute_of_day: float) -> float:
    """Relative order rate over a day: 1.0 at the 12:00 lunch peak, a dinner hump, quiet nights."""
    h = (minute_of_day / 60) % 24
    lunch = math.exp(-0.5 * ((h - 12.0) / 0.8) ** 2)
    dinner = 0.75 * math.exp(-0.5 * ((h - 18.5) / 1.0) ** 2)
    breakfast = 0.12 * math.exp(-0.5 * ((h - 8.0) / 0.7) ** 2)
    awake = 0.06 if 7 <= h < 23 else 0.01
    return min(1.0, lunch + dinner + breakfast + awake)


def parse_hhmm(text: str) -> float:
    hours, _, minutes = text.partition(":")
    value = int(hours) * 60 + int(minutes or 0)
    if not 0 <= value < 24 * 60:
        raise ValueError(f"not a time of day: {text!r}")
    return float(value)


def hhmm(minute_of_day: float) -> str:
    m = int(minute_of_day) % (24 * 60)
    return f"{m // 60:02d}:{m % 60:02d}"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class SimClock:
    """Minutes of the simulated day, `speedup` times faster than the wall clock."""

    def __init__(self, start_minute: float, speedup: float) -> None:
        self.start_minute = start_minute
        self.speedup = speedup
        self.t0 = time.monotonic()

    def start(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return self.start_minute + (time.monotonic() - self.t0) * self.speedup / 60

    def real_seconds(self, sim_minutes: float) -> float:
        return max(0.0, sim_minutes * 60 / self.speedup)

    def sim_minutes(self, real_seconds: float) -> float:
        return real_seconds * self.speedup / 60

    async def sleep(self, sim_minutes: float) -> None:
        await asyncio.sleep(self.real_seconds(sim_minutes))

    async def until(self, minute_of_day: float) -> None:
        await self.sleep(minute_of_day - self.now())


# -- what the simulation knows ------------------------------------------------------------


@dataclass
class MerchantInfo:
    id: str
    at: LatLng
    prep_minutes: int
    accept_mode: str
    # A shop's order is ready as it is accepted: nothing to cook.
    kind: str = "restaurant"


@dataclass
class World:
    city: str
    merchant_ids: list[str]
    merchants: dict[str, MerchantInfo]  # profiles learned so far
    customers: list[tuple[str, LatLng]]
    riders: list[tuple[str, LatLng]]


@dataclass(frozen=True)
class Arrival:
    at: float  # minute of the simulated day
    seq: int
    customer: int
    seed: int


@dataclass
class OrderTrack:
    id: str
    seq: int
    merchant_id: str
    placed_at: datetime
    rng: random.Random
    status: str = "pending_payment"
    version: int = 1
    decided: bool = False
    cooking: bool = False
    delivered_at: datetime | None = None
    pay_url: str = ""
    # An errand: its desk has no kitchen to simulate; its codes go to the rider.
    codes: tuple[str, str] | None = None


@dataclass
class Job:
    order_id: str
    pickup: LatLng
    dropoff: LatLng
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    picked: bool = False
    picked_at: float = math.inf
    defer_until: float = -math.inf
    failures: int = 0


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


# -- riders ------------------------------------------------------------------------------


class Rider:
    """One rider: an event reader that answers offers and a driver that moves and delivers."""

    def __init__(self, sim: Simulation, index: int, rider_id: str, home: LatLng) -> None:
        self.sim = sim
        self.id = rider_id
        self.rng = random.Random(f"{sim.seed}/rider/{index}")
        self.speed_m_per_min = self.rng.uniform(*RIDER_KMH) * 1000 / 60
        self.pos: LatLng = home
        self.token = ""
        self.cursor: str | None = None
        self.jobs: dict[str, Job] = {}
        self.wakeup = asyncio.Event()
        self.seen_offers: set[str] = set()
        self.busy_since: float | None = None
        self.busy: list[tuple[float, float]] = []
        self.last_report = 0.0

    @property
    def clock(self) -> SimClock:
        return self.sim.clock

    # The rider's terminal: offers and order events.

    async def read_events(self) -> None:
        while not self.sim.finished:
            events, self.cursor = await self.sim.poll(self.token, self.cursor)
            for event in events:
                kind = event.get("type")
                if kind == "offer":
                    self.sim.spawn(self.answer(event), f"offer to {self.id}")
                elif kind == "order_ready":
                    job = self.jobs.get(event.get("order_id", ""))
                    if job is not None:
                        job.ready.set()
                elif kind == "resync_required":
                    for order in (event.get("data") or {}).get("orders", []):
                        job = self.jobs.get(order.get("id", ""))
                        if job is not None and order.get("status") == "ready":
                            job.ready.set()

    async def answer(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        offer_id = data.get("offer_id")
        order_id = data.get("order_id") or event.get("order_id")
        if not offer_id or not order_id or offer_id in self.seen_offers:
            return
        self.seen_offers.add(offer_id)
        offers = self.sim.offers
        if _iso(data["expires_at"]) <= datetime.now(UTC):
            offers["stale"] += 1
            return
        offers["received"] += 1
        await self.clock.sleep(self.rng.uniform(*OFFER_THINK_S) / 60)
        if self.sim.finished:
            return
        carrying = len(self.jobs)
        keen = ACCEPT_WHEN_CARRYING if carrying else ACCEPT_WHEN_FREE
        if carrying >= RIDER_CAPACITY or self.rng.random() >= keen:
            await self.sim.call(
                "POST",
                f"/v1/rider/offers/{offer_id}/decline",
                token=self.token,
                key=f"{self.sim.run_id}-{offer_id}-decline",
                label="decline offer",
                tolerate=("offer_closed",),
            )
            offers["declined"] += 1
            return
        taken = await self.sim.call(
            "POST",
            f"/v1/rider/offers/{offer_id}/accept",
            token=self.token,
            key=f"{self.sim.run_id}-{offer_id}-accept",
            label="accept offer",
            tolerate=("offer_closed", "rider_already_assigned", "invalid_transition"),
        )
        body = taken.json() if taken is not None and taken.status_code == 200 else {}
        if body.get("status") != "accepted":
            offers["lost"] += 1
            return
        offers["accepted"] += 1
        if carrying:
            offers["accepted_while_carrying"] += 1
        job = Job(
            order_id=order_id,
            pickup=(float(data["pickup"]["lat"]), float(data["pickup"]["lng"])),
            dropoff=(float(data["dropoff"]["lat"]), float(data["dropoff"]["lng"])),
        )
        if (body.get("order") or {}).get("status") == "ready":
            job.ready.set()
        self.take(job)

    # Riding.

    def take(self, job: Job) -> None:
        if not self.jobs:
            self.busy_since = self.clock.now()
        self.jobs[job.order_id] = job
        self.wakeup.set()

    def drop(self, job: Job) -> None:
        self.jobs.pop(job.order_id, None)
        if not self.jobs and self.busy_since is not None:
            self.busy.append((self.busy_since, self.clock.now()))
            self.busy_since = None

    def close_books(self) -> None:
        if self.busy_since is not None:
            self.busy.append((self.busy_since, self.clock.now()))
            self.busy_since = None

    def busy_minutes(self, start: float, end: float) -> float:
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.busy)

    async def drive(self) -> None:
        while not self.sim.finished:
            self.wakeup.clear()
            stop = self.next_stop()
            if stop is None:
                await self.idle()
                continue
            kind, job = stop
            if not await self.travel(job.pickup if kind == "pickup" else job.dropoff):
                continue
            if kind == "pickup":
                await self.pick_up(job)
            else:
                await self.hand_over(job)

    def next_stop(self) -> tuple[str, Job] | None:
        """The nearest useful stop: the door of food on board, or a kitchen to collect from.

        With food on board, only kitchens whose food is ready (or the one the rider stands
        at) are worth a stop, and food that has ridden along too long goes home first.
        """
        now = self.clock.now()
        on_board = [j for j in self.jobs.values() if j.picked]
        if on_board:
            oldest = min(on_board, key=lambda j: (j.picked_at, j.order_id))
            if now - oldest.picked_at >= ON_BOARD_LIMIT_MIN:
                return "dropoff", oldest
        stops: list[tuple[float, str, str, Job]] = []
        deferred: list[tuple[float, str, str, Job]] = []
        for job in self.jobs.values():
            if job.picked:
                stops.append((meters(self.pos, job.dropoff), job.order_id, "dropoff", job))
                continue
            distance = meters(self.pos, job.pickup)
            worth_it = not on_board or job.ready.is_set() or distance < SAME_KITCHEN_M
            if worth_it and job.defer_until <= now:
                stops.append((distance, job.order_id, "pickup", job))
            else:
                deferred.append((distance, job.order_id, "pickup", job))
        options = stops or deferred
        if not options:
            return None
        _, _, kind, job = min(options, key=lambda s: (s[0], s[1]))
        return kind, job

    async def wait(self, real_seconds: float) -> bool:
        """Wait for news (a new order, the end); True if woken."""
        try:
            await asyncio.wait_for(self.wakeup.wait(), max(0.0, real_seconds))
        except TimeoutError:
            return False
        self.wakeup.clear()
        return True

    async def travel(self, target: LatLng) -> bool:
        """Ride in a straight line; False when news arrives on the way (the rider re-plans)."""
        start = self.pos
        distance = meters(start, target)
        if distance < ARRIVED_M:
            self.pos = target
            return True
        leg = self.clock.real_seconds(distance / self.speed_m_per_min)
        t0 = time.monotonic()
        while not self.sim.finished:
            left = t0 + leg - time.monotonic()
            if left <= 0:
                self.pos = target
                await self.report(force=True)
                return True
            woke = await self.wait(min(left, LOCATION_MIN_GAP_REAL_S))
            self.pos = lerp(start, target, min(1.0, (time.monotonic() - t0) / leg))
            await self.report()
            if woke:
                return False
        return False

    async def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_report < LOCATION_MIN_GAP_REAL_S:
            return
        self.last_report = now
        await self.sim.call(
            "POST",
            "/v1/riders/me/location",
            token=self.token,
            json={"lat": round(self.pos[0], 6), "lng": round(self.pos[1], 6)},
            label="location",
        )

    async def idle(self) -> None:
        spot = self.standby_spot()
        if spot is not None and meters(self.pos, spot) > STANDBY_NEAR_M:
            await self.travel(spot)
            return
        if not await self.wait(HEARTBEAT_REAL_S):
            await self.report(force=True)

    def standby_spot(self) -> LatLng | None:
        """Riders wait near a kitchen, where the next order most likely starts."""
        spots = [m.at for m in self.sim.world.merchants.values()]
        return min(spots, key=lambda p: meters(self.pos, p)) if spots else None

    async def pick_up(self, job: Job) -> None:
        arrived = self.clock.now()
        while not job.ready.is_set():
            if self.sim.finished or job.order_id not in self.jobs:
                return
            on_board = any(j.picked for j in self.jobs.values())
            if on_board and self.clock.now() - arrived >= HOLD_AT_KITCHEN_MIN:
                job.defer_until = self.clock.now() + HOLD_AT_KITCHEN_MIN
                return
            patience = max(REFRESH_MIN_REAL_S, self.clock.real_seconds(REFRESH_EVERY_MIN))
            try:
                await asyncio.wait_for(job.ready.wait(), patience)
            except TimeoutError:
                await self.refresh(job)
        await self.clock.sleep(self.rng.uniform(*PICKUP_HANDOVER_MIN))
        here = [
            j
            for j in list(self.jobs.values())
            if not j.picked and j.ready.is_set() and meters(j.pickup, job.pickup) < SAME_KITCHEN_M
        ]
        for each in here:
            if self.sim.finished:
                return
            done = await self.sim.call(
                "POST",
                f"/v1/rider/orders/{each.order_id}/pickup",
                token=self.token,
                json=self.sim.proof(each.order_id, 0),
                key=f"{self.sim.run_id}-{each.order_id}-pickup",
                label="pickup",
                tolerate=("invalid_transition",),
            )
            if done is not None and done.status_code == 200:
                each.picked = True
                each.picked_at = self.clock.now()
            else:
                await self.trouble(each, done)

    async def hand_over(self, job: Job) -> None:
        await self.clock.sleep(self.rng.uniform(*DOOR_HANDOVER_MIN))
        if self.sim.finished:
            return
        done = await self.sim.call(
            "POST",
            f"/v1/rider/orders/{job.order_id}/deliver",
            token=self.token,
            json=self.sim.proof(job.order_id, 1),
            key=f"{self.sim.run_id}-{job.order_id}-deliver",
            label="deliver",
            tolerate=("invalid_transition",),
        )
        if done is not None and done.status_code == 200:
            self.drop(job)
        else:
            await self.trouble(job, done)

    async def trouble(self, job: Job, answer: httpx.Response | None) -> None:
        """A refused pickup or delivery: learn the order's real state, give up after a few."""
        job.failures += 1
        await self.refresh(job)
        if job.order_id in self.jobs and job.failures >= MAX_JOB_FAILURES:
            self.sim.failures[f"rider gave up an order ({_describe(answer)})"] += 1
            self.drop(job)
        elif job.order_id in self.jobs:
            await asyncio.sleep(min(2.0, self.clock.real_seconds(1.0)) + 0.2)

    async def refresh(self, job: Job) -> None:
        answer = await self.sim.call(
            "GET", f"/v1/orders/{job.order_id}", token=self.token, label="read order"
        )
        if answer is None:
            return
        if answer.status_code == 404:
            self.drop(job)
            return
        if answer.status_code != 200:
            return
        order = answer.json()
        status = order.get("status")
        if (order.get("rider") or {}).get("id") not in (None, self.id) or status in TERMINAL:
            self.drop(job)
        elif status == "ready":
            job.ready.set()
        elif status == "picked_up":
            job.ready.set()
            if not job.picked:
                job.picked = True
                job.picked_at = self.clock.now()
        else:
            job.ready.clear()


def _describe(answer: httpx.Response | None) -> str:
    if answer is None:
        return "no answer"
    return f"{answer.status_code} {_error_code(answer)}".strip()


# -- the simulation ----------------------------------------------------------------------


class Simulation:
    """One seeded run of a city against one platform."""

    def __init__(
        self,
        url: str,
        *,
        seed: int,
        sim_minutes: float,
        speedup: float,
        riders: int,
        customers: int,
        city: str = "demo",
        begin: str = DEFAULT_START,
        drain_minutes: float = DEFAULT_DRAIN_MIN,
        order_rate: float = PEAK_ORDERS_PER_CUSTOMER_HOUR,
        policy: str | None = None,
        progress: bool = False,
        console: Console | None = None,
        errand_share: float = ERRAND_SHARE,
    ) -> None:
        if sim_minutes <= 0 or speedup <= 0 or riders <= 0 or customers <= 0:
            raise ValueError("sim_minutes, speedup, riders and customers must be positive")
        self.url = url.rstrip("/")
        self.seed = seed
        self.rng = random.Random(seed)
        self.sim_minutes = sim_minutes
        self.speedup = speedup
        self.n_riders = riders
        self.n_customers = customers
        self.city = city
        self.start_minute = parse_hhmm(begin)
        self.end_minute = self.start_minute + sim_minutes
        self.drain_minutes = max(0.0, drain_minutes)
        self.order_rate = order_rate
        self.errand_share = errand_share
        self.policy = policy
        self.progress = progress
        self.console = console or Console()
        self.clock = SimClock(self.start_minute, speedup)
        # Idempotency keys are the run's own, so a second run never replays the first.
        self.run_id = uuid.uuid4().hex[:10]
        self.http: httpx.AsyncClient | None = None
        self.world = World(city, [], {}, [], [])
        self.riders: list[Rider] = []
        self.orders: dict[str, OrderTrack] = {}
        self.arrivals: list[Arrival] = []
        self.tokens: dict[tuple[str, str], str] = {}
        self.menus: dict[str, list[dict[str, Any]]] = {}
        self.merchant_cursors: dict[str, str | None] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.finished = False
        self.arrivals_done = False
        self.placing = 0
        self.settled = asyncio.Event()
        self.requests = 0
        self.http_errors: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.not_placed: Counter[str] = Counter()
        self.offers: Counter[str] = Counter()
        self.delivered_live: list[float] = []
        self.ended_at = self.end_minute
        self.real_started = 0.0

    # -- plumbing --------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._finished_task)

    def _finished_task(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.failures[f"{task.get_name().split(' ')[0]}: {type(error).__name__}: {error}"] += 1

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        key: str | None = None,
        label: str = "",
        tolerate: tuple[str, ...] = (),
        read_timeout: float = 30.0,
    ) -> httpx.Response | None:
        """One request with bounded retries: transport errors, 429 and 503 (after Retry-After)."""
        assert self.http is not None
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if key:
            headers["Idempotency-Key"] = key
        what = label or path
        for attempt in range(HTTP_ATTEMPTS):
            try:
                answer = await self.http.request(
                    method, path, json=json, params=params, headers=headers, timeout=read_timeout
                )
            except httpx.TransportError as err:
                self.http_errors[f"{what}: {type(err).__name__}"] += 1
                if attempt + 1 < HTTP_ATTEMPTS and not self.finished:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                return None
            self.requests += 1
            if answer.status_code in (429, 503) and attempt + 1 < HTTP_ATTEMPTS:
                self.http_errors[f"{what}: {answer.status_code} {_error_code(answer)}"] += 1
                try:
                    pause = float(answer.headers.get("retry-after", "1"))
                except ValueError:
                    pause = 1.0
                await asyncio.sleep(min(max(pause, 0.2), 5.0))
                continue
            if answer.status_code >= 400 and _error_code(answer) not in tolerate:
                self.http_errors[f"{what}: {answer.status_code} {_error_code(answer)}"] += 1
            return answer
        return None

    async def token(self, role: str, sub: str) -> str:
        cached = self.tokens.get((role, sub))
        if cached:
            return cached
        answer = await self.call(
            "POST", "/v1/auth/dev-token", json={"role": role, "sub": sub}, label="dev token"
        )
        if answer is None or answer.status_code != 200:
            raise RuntimeError(f"no dev token for {role} {sub}: {_describe(answer)}")
        token = str(answer.json()["token"])
        self.tokens[(role, sub)] = token
        return token

    async def poll(self, token: str, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        params: dict[str, Any] = {"wait_s": POLL_WAIT_S, "limit": 200}
        if cursor:
            params["cursor"] = cursor
        answer = await self.call(
            "GET",
            "/v1/sync/events",
            token=token,
            params=params,
            label="events",
            read_timeout=POLL_WAIT_S + 20,
        )
        if answer is None or answer.status_code != 200:
            await asyncio.sleep(1.0)
            return [], cursor
        body = answer.json()
        return list(body.get("events") or []), body.get("cursor") or cursor

    async def latest_cursor(self, token: str) -> str | None:
        """Where a terminal's stream ends now: a run reacts only to what happens during it."""
        cursor: str | None = None
        for _ in range(20):
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            answer = await self.call(
                "GET", "/v1/sync/events", token=token, params=params, label="events"
            )
            if answer is None or answer.status_code != 200:
                break
            body = answer.json()
            cursor = body.get("cursor") or cursor
            if len(body.get("events") or []) < 1000:
                break
        return cursor

    async def bounded(self, jobs: list[Coroutine[Any, Any, Any]], limit: int) -> list[Any]:
        gate = asyncio.Semaphore(limit)

        async def one(job: Coroutine[Any, Any, Any]) -> Any:
            async with gate:
                return await job

        return await asyncio.gather(*(one(j) for j in jobs))

    # -- the world -------------------------------------------------------------------

    async def build_world(self) -> None:
        kind, _, prefix = self.city.partition(":")
        if kind == "demo" and not prefix:
            await self.build_demo()
        elif kind == "small" and prefix:
            await self.build_small(prefix)
        else:
            raise ValueError(f"city must be 'demo' or 'small:<prefix>', not {self.city!r}")

    def learn(self, profile: dict[str, Any]) -> None:
        if profile.get("id") in self.world.merchant_ids:
            self.world.merchants[profile["id"]] = MerchantInfo(
                id=profile["id"],
                at=(float(profile["lat"]), float(profile["lng"])),
                prep_minutes=int(profile.get("prep_minutes") or 15),
                accept_mode=str(profile.get("accept_mode") or "manual"),
                kind=str(profile.get("kind") or "restaurant"),
            )

    async def build_demo(self) -> None:
        # The demo city is one city whatever the simulation's seed; seeding it again is
        # harmless and refills the stock. Its riders are ours, placed below.
        await asyncio.to_thread(seed_demo_city, self.url, 7, 0, 0)
        world = self.world
        world.merchant_ids = [f"m_{i + 1:03d}" for i in range(len(KITCHENS))]
        people = random.Random(f"{self.seed}/people")
        lat0, lng0 = DEMO_CENTER
        world.customers = [
            (
                f"c_{i + 1:03d}",
                (
                    round(lat0 + people.uniform(-0.032, 0.032), 6),
                    round(lng0 + people.uniform(-0.038, 0.038), 6),
                ),
            )
            for i in range(self.n_customers)
        ]
        world.riders = [
            (
                f"r_{i + 1:03d}",
                (
                    round(lat0 + people.uniform(-0.03, 0.03), 6),
                    round(lng0 + people.uniform(-0.035, 0.035), 6),
                ),
            )
            for i in range(self.n_riders)
        ]
        # Profiles (where, how fast, auto or manual) through the customers' own listing.
        scout = await self.token("customer", world.customers[0][0])
        probes = [
            (lat0 + dy * 0.015, lng0 + dx * 0.0175) for dy in range(-2, 3) for dx in range(-2, 3)
        ]
        answers = await self.bounded(
            [
                self.call(
                    "GET",
                    "/v1/merchants/nearby",
                    token=scout,
                    params={"lat": lat, "lng": lng, "radius_m": 10_000, "limit": 200},
                    label="nearby",
                )
                for lat, lng in probes
            ],
            SETUP_CONCURRENCY,
        )
        for answer in answers:
            if answer is not None and answer.status_code == 200:
                for profile in answer.json().get("merchants", []):
                    self.learn(profile)

    async def build_small(self, prefix: str) -> None:
        world = self.world
        slot = int(hashlib.blake2b(prefix.encode(), digest_size=4).hexdigest(), 16) % 200
        center = (SMALL_LAT, 100.0 + 0.25 * slot)
        shape = random.Random(f"{self.seed}/small")
        admin = await self.token("admin", f"{prefix}ops")
        for i in range(SMALL_MERCHANTS + SMALL_SHOPS):
            shop = i >= SMALL_MERCHANTS
            merchant_id = f"{prefix}{'s' if shop else 'm'}{i + 1}"
            at = offset(center, 400 if shop else 700, 2 * math.pi * i / SMALL_MERCHANTS)
            profile: dict[str, Any] = {
                "id": merchant_id,
                "name": f"Corner Shop {i + 1}" if shop else f"Kitchen {i + 1}",
                "lat": at[0],
                "lng": at[1],
                "delivery": {"radius_m": 3000},
                "accept_mode": "auto" if i % 2 == 0 else "manual",
            }
            if shop:
                profile.update(kind="shop", prep_minutes=0, opening_hours=ALL_WEEK)
            else:
                profile["prep_minutes"] = shape.choice([5, 6, 7, 8])
            made = await self.call(
                "POST",
                "/v1/merchants",
                token=admin,
                json=profile,
                label="onboard",
                tolerate=("merchant_exists",),
            )
            if made is None or (made.status_code >= 300 and _error_code(made) != "merchant_exists"):
                raise RuntimeError(f"could not onboard {merchant_id}: {_describe(made)}")
            owner = await self.token("merchant", merchant_id)
            for item_id, name, price in SMALL_SHELF if shop else SMALL_MENU:
                put = await self.call(
                    "PUT",
                    f"/v1/merchants/{merchant_id}/menu/items/{item_id}",
                    token=owner,
                    json={"name": name, "price_fen": price, "stock": 500},
                    label="menu",
                )
                if put is None or put.status_code != 200:
                    raise RuntimeError(f"could not stock {merchant_id}: {_describe(put)}")
            world.merchant_ids.append(merchant_id)
            self.learn(profile)

        def near(distance: float) -> LatLng:
            return offset(
                center, distance * math.sqrt(shape.random()), shape.uniform(0, 2 * math.pi)
            )

        world.customers = [(f"{prefix}c{i + 1}", near(1500)) for i in range(self.n_customers)]
        world.riders = [(f"{prefix}r{i + 1}", near(1200)) for i in range(self.n_riders)]

    def schedule(self) -> list[Arrival]:
        """Order arrivals for the whole window, by thinning a Poisson process at the peak rate."""
        peak_per_minute = self.n_customers * self.order_rate / 60
        arrivals: list[Arrival] = []
        t = self.start_minute
        if peak_per_minute <= 0:
            return arrivals
        while len(arrivals) < 100_000:
            t += self.rng.expovariate(peak_per_minute)
            if t >= self.end_minute:
                break
            accept = self.rng.random()
            customer = self.rng.randrange(self.n_customers)
            order_seed = self.rng.getrandbits(64)
            if accept < demand(t):
                arrivals.append(Arrival(t, len(arrivals), customer, order_seed))
        return arrivals

    # -- customers ---------------------------------------------------------------------

    async def customers(self) -> None:
        try:
            for arrival in self.arrivals:
                if self.finished:
                    break
                await self.clock.until(arrival.at)
                self.placing += 1
                self.spawn(self.order(arrival), f"order {arrival.seq}")
        finally:
            self.arrivals_done = True
            self.check_settled()

    async def order(self, arrival: Arrival) -> None:
        try:
            track = await self.place(arrival)
        finally:
            self.placing -= 1
            self.check_settled()
        if track is not None:
            await self.pay(track, arrival)

    async def place(self, arrival: Arrival) -> OrderTrack | None:
        rng = random.Random(arrival.seed)
        customer_id, home = self.world.customers[arrival.customer]
        token = await self.token("customer", customer_id)
        errand_rng = random.Random(arrival.seed ^ ERRAND_SALT)
        if errand_rng.random() < self.errand_share:
            return await self.place_errand(arrival, errand_rng, token, home)
        listed = await self.call(
            "GET",
            "/v1/merchants/nearby",
            token=token,
            params={"lat": home[0], "lng": home[1]},
            label="nearby",
        )
        if listed is None or listed.status_code != 200:
            self.not_placed["nearby_failed"] += 1
            return None
        ours = set(self.world.merchant_ids)
        candidates = [m for m in listed.json().get("merchants", []) if m.get("id") in ours]
        for profile in candidates:
            if profile["id"] not in self.world.merchants:
                self.learn(profile)
        if not candidates:
            self.not_placed["no_merchant_delivers_here"] += 1
            return None
        # Nearer kitchens are chosen more often, farther ones still now and then.
        weights = [1 / (float(m.get("distance_m", 0)) + 800) for m in candidates]
        merchant_id = rng.choices(candidates, weights)[0]["id"]
        menu = await self.menu(merchant_id)
        if not menu:
            self.not_placed["no_menu"] += 1
            return None
        dishes = rng.sample(menu, k=min(len(menu), rng.choice([1, 1, 2])))
        body = {
            "merchant_id": merchant_id,
            "items": [{"item_id": d["id"], "qty": rng.choice([1, 1, 1, 2])} for d in dishes],
            "delivery": {
                "lat": home[0],
                "lng": home[1],
                "address": f"{rng.randint(1, 300)} Simulated Rd",
            },
        }
        placed = await self.call(
            "POST",
            "/v1/orders",
            token=token,
            json=body,
            key=f"sim-{self.run_id}-{arrival.seq}",
            label="place order",
        )
        if placed is None or placed.status_code != 201:
            self.not_placed[_describe(placed)] += 1
            return None
        order = placed.json()
        track = OrderTrack(
            id=order["id"],
            seq=arrival.seq,
            merchant_id=merchant_id,
            placed_at=_iso(order["placed_at"]),
            rng=random.Random(f"{self.seed}/order/{arrival.seq}"),
            version=int(order.get("version") or 1),
            pay_url=str((order.get("payment") or {}).get("pay_url") or ""),
        )
        self.orders[track.id] = track
        return track

    def proof(self, order_id: str, step: int) -> dict[str, str] | None:
        """What a rider says at an errand's pickup (0) or door (1): the code the person
        there has from the customer. A food order takes nothing."""
        track = self.orders.get(order_id)
        return {"code": track.codes[step]} if track and track.codes else None

    async def place_errand(
        self, arrival: Arrival, rng: random.Random, token: str, home: LatLng
    ) -> OrderTrack | None:
        """An errand from the customer's home to somewhere near, or from there home."""
        there = offset(home, rng.uniform(*ERRAND_M), rng.uniform(0, 2 * math.pi))
        a, b = (home, there) if rng.random() < 0.5 else (there, home)
        body = {
            "pickup": {
                "lat": a[0],
                "lng": a[1],
                "address": f"{rng.randint(1, 300)} Pickup Rd",
                "contact_name": "Sender",
                "contact_phone": "13800000001",
                "note": "at the door",
            },
            "dropoff": {
                "lat": b[0],
                "lng": b[1],
                "address": f"{rng.randint(1, 300)} Dropoff Rd",
                "contact_name": "Recipient",
                "contact_phone": "13800000002",
            },
            "category": rng.choice(ERRAND_CATEGORIES),
            "weight_class": rng.choice(ERRAND_WEIGHTS),
        }
        placed = await self.call(
            "POST",
            "/v1/errands",
            token=token,
            json=body,
            key=f"sim-{self.run_id}-{arrival.seq}",
            label="place errand",
        )
        if placed is None or placed.status_code != 201:
            self.not_placed[f"errand {_describe(placed)}"] += 1
            return None
        order = placed.json()
        track = OrderTrack(
            id=order["id"],
            seq=arrival.seq,
            merchant_id=order["merchant_id"],
            placed_at=_iso(order["placed_at"]),
            rng=random.Random(f"{self.seed}/order/{arrival.seq}"),
            pay_url=str((order.get("payment") or {}).get("pay_url") or ""),
            codes=(order["errand"]["pickup_code"], order["errand"]["delivery_code"]),
        )
        self.orders[track.id] = track
        return track

    async def pay(self, track: OrderTrack, arrival: Arrival) -> None:
        await self.clock.sleep(random.Random(arrival.seed ^ 0x9E3779B9).uniform(*PAY_DELAY_MIN))
        pay_url = track.pay_url
        host = urlsplit(pay_url).hostname
        if not pay_url or (host not in LOOPBACK and host != urlsplit(self.url).hostname):
            self.failures[f"payment url not on this machine: {pay_url!r}"] += 1
            return
        if self.finished:
            return
        paid = await self.call("POST", pay_url, label="pay")
        if paid is None or paid.status_code >= 300:
            self.failures[f"payment refused ({_describe(paid)})"] += 1

    async def menu(self, merchant_id: str) -> list[dict[str, Any]]:
        if merchant_id not in self.menus:
            answer = await self.call("GET", f"/v1/merchants/{merchant_id}/menu", label="menu")
            if answer is None or answer.status_code != 200:
                return []
            items = answer.json().get("items", [])
            self.menus[merchant_id] = [i for i in items if i.get("available", True)]
        return self.menus[merchant_id]

    # -- merchants ---------------------------------------------------------------------

    async def back_office(self, merchant_id: str) -> None:
        token = await self.token("merchant", merchant_id)
        cursor = self.merchant_cursors.get(merchant_id)
        while not self.finished:
            events, cursor = await self.poll(token, cursor)
            for event in events:
                self.on_merchant_event(event)

    def on_merchant_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "resync_required":
            for order in (event.get("data") or {}).get("orders", []):
                track = self.orders.get(order.get("id", ""))
                if track is not None and int(order.get("version", 0)) > track.version:
                    track.version = int(order["version"])
                    track.status = str(order.get("status"))
                    self.after(track, int(order.get("prep_minutes") or 0))
            return
        track = self.orders.get(event.get("order_id") or "")
        if track is None or kind not in EVENT_STATUS:
            return
        version = int(event.get("version") or 0)
        if version <= track.version:
            return
        track.version = version
        track.status = EVENT_STATUS[kind]
        if kind == "order_delivered":
            track.delivered_at = _iso(event["at"])
            minutes = self.clock.sim_minutes((track.delivered_at - track.placed_at).total_seconds())
            self.delivered_live.append(minutes)
        self.after(track, int((event.get("data") or {}).get("prep_minutes") or 0))

    def after(self, track: OrderTrack, prep_minutes: int) -> None:
        """What the kitchen does next, once per order and step."""
        if track.codes is not None:
            # An errand: its courier desk accepts it, ready, as it is paid.
            if track.status in TERMINAL:
                self.check_settled()
            return
        profile = self.world.merchants.get(track.merchant_id)
        if track.status == "paid" and not track.decided:
            if profile is None or profile.accept_mode != "auto":
                track.decided = True
                self.spawn(self.decide(track), f"merchant {track.id}")
        elif track.status == "accepted" and not track.cooking:
            track.cooking = True
            if profile is not None and profile.kind == "shop":
                return  # ready with its acceptance: the order's next event says so
            prep = prep_minutes or (profile.prep_minutes if profile else 15)
            self.spawn(self.cook(track, prep), f"kitchen {track.id}")
        elif track.status in TERMINAL:
            self.check_settled()

    async def decide(self, track: OrderTrack) -> None:
        rng = track.rng
        await self.clock.sleep(min(6.0, 0.3 + rng.expovariate(1 / 1.2)))
        if self.finished or track.status != "paid":
            return
        token = await self.token("merchant", track.merchant_id)
        if rng.random() < MERCHANT_REJECT:
            await self.call(
                "POST",
                f"/v1/merchant/orders/{track.id}/reject",
                token=token,
                json={"reason": rng.choice(REJECT_REASONS)},
                key=f"{self.run_id}-{track.id}-reject",
                label="reject",
                tolerate=("invalid_transition",),
            )
            return
        profile = self.world.merchants.get(track.merchant_id)
        await self.call(
            "POST",
            f"/v1/merchant/orders/{track.id}/accept",
            token=token,
            json={"prep_minutes": profile.prep_minutes if profile else 15},
            key=f"{self.run_id}-{track.id}-accept",
            label="accept",
            # an auto-accept merchant we had not learned about yet was faster
            tolerate=("invalid_transition",),
        )

    async def cook(self, track: OrderTrack, prep_minutes: int) -> None:
        await self.clock.sleep(prep_minutes * track.rng.uniform(*PREP_NOISE))
        if self.finished:
            return
        token = await self.token("merchant", track.merchant_id)
        await self.call(
            "POST",
            f"/v1/merchant/orders/{track.id}/ready",
            token=token,
            key=f"{self.run_id}-{track.id}-ready",
            label="ready",
            tolerate=("invalid_transition",),
        )

    # -- the run -----------------------------------------------------------------------

    def open_orders(self) -> int:
        return sum(1 for t in self.orders.values() if t.status not in TERMINAL)

    def check_settled(self) -> None:
        if self.arrivals_done and self.placing == 0 and self.open_orders() == 0:
            self.settled.set()

    async def go_online(self) -> None:
        self.riders = [
            Rider(self, i, rider_id, home) for i, (rider_id, home) in enumerate(self.world.riders)
        ]

        async def online(rider: Rider) -> None:
            rider.token = await self.token("rider", rider.id)
            rider.cursor = await self.latest_cursor(rider.token)
            answer = await self.call(
                "POST",
                "/v1/riders/me/status",
                token=rider.token,
                json={"online": True, "lat": rider.pos[0], "lng": rider.pos[1]},
                label="online",
            )
            if answer is None or answer.status_code != 200:
                raise RuntimeError(f"rider {rider.id} could not go online: {_describe(answer)}")
            rider.last_report = time.monotonic()

        async def office(merchant_id: str) -> None:
            token = await self.token("merchant", merchant_id)
            self.merchant_cursors[merchant_id] = await self.latest_cursor(token)

        await self.bounded(
            [online(r) for r in self.riders] + [office(m) for m in self.offices()],
            SETUP_CONCURRENCY,
        )

    def offices(self) -> list[str]:
        """The back offices whose streams the simulation reads: its merchants', and the
        courier desks' when it places errands (each desk's stream tells its errands'
        progress as a merchant's tells its orders')."""
        return self.world.merchant_ids + (list(DESK_IDS) if self.errand_share > 0 else [])

    async def go_offline(self) -> None:
        async def offline(rider: Rider) -> None:
            await self.call(
                "POST",
                "/v1/riders/me/status",
                token=rider.token,
                json={"online": False, "lat": rider.pos[0], "lng": rider.pos[1]},
                label="offline",
            )

        await self.bounded([offline(r) for r in self.riders if r.token], SETUP_CONCURRENCY)

    async def fetch_orders(self) -> dict[str, dict[str, Any]]:
        admin = await self.token("admin", "simulator")

        async def one(order_id: str) -> tuple[str, dict[str, Any] | None]:
            answer = await self.call(
                "GET", f"/v1/orders/{order_id}", token=admin, label="read order"
            )
            ok = answer is not None and answer.status_code == 200
            return order_id, answer.json() if ok and answer is not None else None

        found = await self.bounded([one(i) for i in self.orders], FETCH_CONCURRENCY)
        return {order_id: order for order_id, order in found if order is not None}

    async def run(self) -> dict[str, Any]:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=200)
        self.real_started = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as http:
            self.http = http
            await self.build_world()
            self.arrivals = self.schedule()
            await self.go_online()
            self.clock.start()
            with self.dashboard():
                try:
                    for rider in self.riders:
                        self.spawn(rider.read_events(), f"rider {rider.id}")
                        self.spawn(rider.drive(), f"rider {rider.id}")
                    for merchant_id in self.offices():
                        self.spawn(self.back_office(merchant_id), f"merchant {merchant_id}")
                    self.spawn(self.customers(), "customers")
                    await self.clock.until(self.end_minute)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self.settled.wait(),
                            self.clock.real_seconds(
                                self.end_minute + self.drain_minutes - self.clock.now()
                            ),
                        )
                finally:
                    await self.stop()
            await self.go_offline()
            finals = await self.fetch_orders()
        return self.report(finals)

    async def stop(self) -> None:
        self.ended_at = self.clock.now()
        self.finished = True
        for rider in self.riders:
            rider.wakeup.set()
            rider.close_books()
        pending = list(self.tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- progress and the report ------------------------------------------------------------

    @contextlib.contextmanager
    def dashboard(self) -> Iterator[None]:
        if not self.progress:
            yield
            return
        with Live(
            self.render(), console=self.console, refresh_per_second=2, transient=True
        ) as live:
            refresher = asyncio.get_running_loop().create_task(self._refresh(live))
            try:
                yield
            finally:
                refresher.cancel()
        self.console.print(self.render())

    async def _refresh(self, live: Live) -> None:
        while not self.finished:
            live.update(self.render())
            await asyncio.sleep(0.5)

    def render(self) -> Table:
        now = min(self.clock.now(), self.end_minute + self.drain_minutes)
        statuses = Counter(t.status for t in self.orders.values())
        busy = sum(1 for r in self.riders if r.jobs)
        phase = "ordering" if now < self.end_minute else "finishing open orders"
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="dim")
        table.add_column()
        done = min(1.0, max(0.0, (now - self.start_minute) / self.sim_minutes))
        table.add_row("window", ProgressBar(total=1.0, completed=done, width=50))
        table.add_row(
            "clock",
            f"{hhmm(now)}  ({hhmm(self.start_minute)}-{hhmm(self.end_minute)}, {phase}, "
            f"speed-up {self.speedup:g})",
        )
        table.add_row(
            "orders",
            f"{len(self.orders)} placed of {len(self.arrivals)} planned · "
            f"{statuses['pending_payment'] + statuses['paid']} waiting for the kitchen · "
            f"{statuses['accepted'] + statuses['ready']} cooking · "
            f"{statuses['picked_up']} on the way · [green]{statuses['delivered']} delivered[/] · "
            f"{statuses['rejected'] + statuses['cancelled']} rejected or cancelled",
        )
        mean = statistics.fmean(self.delivered_live) if self.delivered_live else 0.0
        table.add_row("delivery", f"{mean:.1f} min on average so far")
        table.add_row("riders", f"{busy} of {len(self.riders)} carrying or heading to a pickup")
        table.add_row(
            "offers",
            f"{self.offers['received']} received · {self.offers['accepted']} accepted · "
            f"{self.offers['declined']} declined",
        )
        errors = sum(self.http_errors.values())
        table.add_row("requests", f"{self.requests} · {errors} errors")
        return table

    def report(self, finals: dict[str, dict[str, Any]]) -> dict[str, Any]:
        per_real_second = self.speedup / 60
        statuses: Counter[str] = Counter()
        delivery: list[float] = []
        assign: list[float] = []
        accepted = within = 0
        shops: Counter[str] = Counter()
        for track in self.orders.values():
            order = finals.get(track.id)
            statuses[order["status"] if order else track.status] += 1
            if track.codes is not None:
                shops["errands"] += 1
                shops["errands_delivered"] += (order or {}).get("status") == "delivered"
            merchant = self.world.merchants.get(track.merchant_id)
            if merchant is not None and merchant.kind == "shop":
                shops["orders"] += 1
                shops["delivered"] += (order or {}).get("status") == "delivered"
            if order is None:
                continue
            stamps: dict[str, datetime] = {}
            for step in order.get("timeline", []):
                stamps.setdefault(step["status"], _iso(step["at"]))
            placed = stamps.get("pending_payment", track.placed_at)
            if "delivered" in stamps:
                delivery.append((stamps["delivered"] - placed).total_seconds() * per_real_second)
            if "accepted" in stamps:
                accepted += 1
                if "rider_assigned" in stamps:
                    seconds = (
                        stamps["rider_assigned"] - stamps["accepted"]
                    ).total_seconds() * self.speedup
                    assign.append(seconds)
                    within += seconds <= ASSIGN_TARGET_S
        placed_n = len(self.orders)
        busy = sum(r.busy_minutes(self.start_minute, self.end_minute) for r in self.riders)
        offered = self.offers["accepted"]

        def share(part: float, whole: float) -> float | None:
            return round(part / whole, 4) if whole else None

        def minutes(value: float | None) -> float | None:
            return round(value, 2) if value is not None else None

        return {
            "policy": self.policy,
            "city": self.city,
            "seed": self.seed,
            "window": f"{hhmm(self.start_minute)}-{hhmm(self.end_minute)}",
            "sim_minutes": self.sim_minutes,
            "speedup": self.speedup,
            "riders": len(self.riders),
            "customers": self.n_customers,
            "arrivals": len(self.arrivals),
            "orders": placed_n,
            "not_placed": dict(self.not_placed),
            "delivered": statuses["delivered"],
            "rejected": statuses["rejected"],
            "cancelled": statuses["cancelled"],
            "open": placed_n - sum(statuses[s] for s in TERMINAL),
            "open_by_status": {s: n for s, n in statuses.items() if s not in TERMINAL},
            "shop_orders": shops["orders"],
            "shop_delivered": shops["delivered"],
            "errand_orders": shops["errands"],
            "errand_delivered": shops["errands_delivered"],
            "share_delivered": share(statuses["delivered"], placed_n),
            "delivery_minutes_mean": minutes(statistics.fmean(delivery) if delivery else None),
            "delivery_minutes_p90": minutes(percentile(delivery, 0.9) if delivery else None),
            "delivery_measured": "placed -> delivered, simulated minutes",
            "assigned_within_60s_share": share(within, accepted),
            "assign_seconds_mean": minutes(statistics.fmean(assign) if assign else None),
            "assign_measured": (
                "merchant accepted -> rider_assigned, simulated seconds, over accepted orders"
            ),
            "rider_utilisation": share(busy, len(self.riders) * self.sim_minutes),
            "utilisation_measured": (
                "share of rider time in the window with an order to pick up or deliver"
            ),
            "offers": dict(self.offers),
            "accepted_while_carrying_share": share(self.offers["accepted_while_carrying"], offered),
            "drain_minutes_used": round(max(0.0, self.ended_at - self.end_minute), 1),
            "real_seconds": round(time.monotonic() - self.real_started, 1),
            "requests": self.requests,
            "http_errors": dict(self.http_errors.most_common(12)),
            "failures": dict(self.failures.most_common(12)),
        }


async def run_simulation(
    url: str,
    *,
    seed: int,
    sim_minutes: float,
    speedup: float,
    riders: int,
    customers: int,
    progress: bool,
    city: str = "demo",
    begin: str = DEFAULT_START,
    drain_minutes: float = DEFAULT_DRAIN_MIN,
    order_rate: float = PEAK_ORDERS_PER_CUSTOMER_HOUR,
    policy: str | None = None,
    console: Console | None = None,
    errand_share: float = ERRAND_SHARE,
) -> dict[str, Any]:
    """Run one seeded day against the platform at `url` and return the report.

    `city` is `"demo"` (the Hangzhou demo city, seeded again idempotently; riders
    `r_001`…, customers `c_001`…) or `"small:<prefix>"` (a compact world of its own,
    every id starting with `prefix`). `order_rate` is orders per customer and hour at
    the 12:00 peak.
    """
    simulation = Simulation(
        url,
        seed=seed,
        sim_minutes=sim_minutes,
        speedup=speedup,
        riders=riders,
        customers=customers,
        city=city,
        begin=begin,
        drain_minutes=drain_minutes,
        order_rate=order_rate,
        policy=policy,
        progress=progress,
        console=console,
        errand_share=errand_share,
    )
    return await simulation.run()


def report_table(report: dict[str, Any]) -> Table:
    def fmt(value: Any, suffix: str = "") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}{suffix}"
        return f"{value}{suffix}"

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    table = Table(title=f"city simulation, policy {report.get('policy') or 'unknown'}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("window", f"{report['window']} ({report['city']}, seed {report['seed']})"),
        ("riders / customers", f"{report['riders']} / {report['customers']}"),
        ("orders placed", fmt(report["orders"])),
        ("delivered", f"{report['delivered']} ({pct(report['share_delivered'])})"),
        (
            "rejected / cancelled / open",
            f"{report['rejected']} / {report['cancelled']} / {report['open']}",
        ),
        ("delivery minutes, mean", fmt(report["delivery_minutes_mean"])),
        ("delivery minutes, p90", fmt(report["delivery_minutes_p90"])),
        ("assigned within 60 s of acceptance", pct(report["assigned_within_60s_share"])),
        ("rider utilisation", pct(report["rider_utilisation"])),
        ("offers accepted while carrying", pct(report["accepted_while_carrying_share"])),
        ("requests / errors", f"{report['requests']} / {sum(report['http_errors'].values())}"),
        ("real seconds", fmt(report["real_seconds"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def simulate(
    url: str = typer.Option(
        "", help="API base URL of a running platform (default http://127.0.0.1:8000)."
    ),
    start: bool = typer.Option(
        False, "--start", help="Start a fresh platform for this run only, and stop it after."
    ),
    policy: str = typer.Option(
        "score", help="Dispatch policy of the platform --start runs: score or nearest."
    ),
    seed: int = typer.Option(7, help="Seed of the day: the same seed places the same orders."),
    minutes: float = typer.Option(180, help="Simulated minutes of ordering."),
    speedup: float = typer.Option(60, help="Simulated time runs this many times faster."),
    riders: int = typer.Option(30, help="Riders on shift."),
    customers: int = typer.Option(200, help="Customers who may order."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here."),
    city: str = typer.Option("demo", help="demo, or small:<prefix> for a compact world."),
    begin: str = typer.Option(DEFAULT_START, "--from", help="Simulated time of day to start at."),
    drain: float = typer.Option(
        DEFAULT_DRAIN_MIN, help="Simulated minutes open orders get after the window."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a live view."),
) -> None:
    """Simulate a city's customers, merchants and riders against the platform, then report."""
    if policy not in ("score", "nearest"):
        raise typer.BadParameter("policy must be score or nearest", param_hint="--policy")
    try:
        parse_hhmm(begin)
    except ValueError as err:
        raise typer.BadParameter("give a time of day like 10:30", param_hint="--from") from err
    kind, _, prefix = city.partition(":")
    if not ((kind == "demo" and not prefix) or (kind == "small" and prefix)):
        raise typer.BadParameter("demo or small:<prefix>", param_hint="--city")
    console = Console()
    platform = None
    run_dir: Path | None = None
    try:
        if start:
            from cluster.launcher import Platform
            from storage.server import free_port
            from storage.settings import Settings

            run_dir = Path(tempfile.mkdtemp(prefix="o2o-sim-"))
            settings = Settings(
                redis_url="",
                ray_address="",
                redis_port=free_port(),
                http_port=free_port(),
                sandbox_port=free_port(),
                data_dir=run_dir / "data",
                dispatch_policy=policy,
                dev_mode=True,
                ray_dashboard=False,
                # Its riders ride at e-bike speeds in simulated time: `speedup` times
                # faster in the platform's (`domain/risk.py` would hold every delivery).
                risk_rider_max_speed_kmh=Settings().risk_rider_max_speed_kmh * speedup,
            )
            platform = Platform(settings, run_dir)
            with console.status(f"starting a platform (dispatch policy {policy})…"):
                platform.start()
            target = platform.url
        else:
            from storage.settings import get_settings

            target = url or get_settings().platform_url
        try:
            report = asyncio.run(
                run_simulation(
                    target,
                    seed=seed,
                    sim_minutes=minutes,
                    speedup=speedup,
                    riders=riders,
                    customers=customers,
                    progress=progress,
                    city=city,
                    begin=begin,
                    drain_minutes=drain,
                    policy=policy if start else None,
                    console=console,
                )
            )
        except httpx.HTTPError as err:
            console.print(f"[red]the platform at {target} did not answer:[/] {err!r}")
            raise typer.Exit(1) from err
    finally:
        if platform is not None:
            with console.status("stopping the platform…"):
                platform.stop()
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
    console.print(report_table(report))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {out}")


if __name__ == "__main__":
    typer.run(simulate)
