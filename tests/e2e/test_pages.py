"""The pages in a real browser: the operations dashboard and the three terminals.

Each test looks at what a user sees (text, statuses, the socket's state), not at the
pages' insides; screenshots go to `bench/`.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from cluster.launcher import Platform
from loadtests.simulator import run_simulation
from tests.e2e.browser import chromium, dev_token, open_page, shot
from tests.e2e.conftest import Api, eventually
from tests.e2e.world import make_world, offer_for, pay, status_of

# What the dashboard shows where a figure has no value (yet): an en dash.
NO_VALUE = "\u2013"
SUMMARY = re.compile(
    r"(\d+) merchants · (\d+) riders online \((\d+) carrying\) · (\d+) open orders"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


class City(threading.Thread):
    """A short lunch peak of the demo city, played by the simulator beside the test."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.report: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.report = asyncio.run(
                run_simulation(
                    self.url,
                    seed=3,
                    sim_minutes=12,
                    speedup=120,
                    riders=8,
                    customers=80,
                    progress=False,
                    city="demo",
                    begin="11:54",
                    order_rate=3.0,
                    drain_minutes=30,
                )
            )
        except BaseException as err:
            self.error = err


def summary_of(page: Page) -> tuple[int, int, int, int]:
    found = SUMMARY.search(page.locator("#city-summary").inner_text())
    assert found, page.locator("#city-summary").inner_text()
    merchants, riders, carrying, open_orders = (int(n) for n in found.groups())
    return merchants, riders, carrying, open_orders


def figure(page: Page, name: str) -> str:
    return page.locator(f'[data-figure="{name}"]').first.inner_text()


def open_dashboard(page: Page, platform: Platform) -> None:
    token = dev_token(platform.url, "admin", "ops")
    page.goto(f"{platform.url}/dashboard?token={token}&lat=30.259&lng=120.149&radius_m=5000")
    expect(page.locator("#sync-status")).to_have_text("live")
    expect(page.locator('[data-figure="orders"]')).not_to_have_text(NO_VALUE)
    # The token left the address as soon as the page took it.
    assert "token=" not in page.url


def test_the_dashboard_follows_a_lunch_peak(platform: Platform, browser: Browser) -> None:
    page, console = open_page(browser)
    open_dashboard(page, platform)
    orders_before = int(figure(page, "orders"))
    gmv_before = figure(page, "gmv")

    city = City(platform.url)
    city.start()
    try:
        # The figures move while the city orders, and riders carry orders on the map.
        eventually(
            lambda: int(figure(page, "orders")) >= orders_before + 3,
            timeout_s=45,
            what="the dashboard's order count to grow",
        )
        eventually(
            lambda: summary_of(page)[2] >= 1 and summary_of(page)[3] >= 1,
            timeout_s=30,
            what="riders carrying open orders on the map",
        )
        assert figure(page, "gmv") != gmv_before
        assert figure(page, "orders_per_min") not in (NO_VALUE, "0")
        merchants, riders, _, _ = summary_of(page)
        assert merchants >= 24 and riders >= 1
        expect(page.locator("#events li").first).to_be_visible()
        expect(page.locator("#hot-zones tr").first).to_be_visible()
        shot(page, "dashboard.png")
        # It repaints as the city moves. How long a paint takes is a figure, not a test:
        # it follows the machine's load.
        paints = sorted(
            page.evaluate("performance.getEntriesByName('dashboard paint').map(e => e.duration)")
        )
        assert len(paints) >= 10, paints
        print(f"dashboard paint p95: {paints[int(len(paints) * 0.95)]:.1f} ms")
    finally:
        city.join(timeout=90)
    assert not city.is_alive(), "the simulation did not finish in time"
    assert city.error is None, repr(city.error)
    assert city.report is not None and city.report["orders"] > 0
    assert console.errors == []


class Cable:
    """The page's sync sockets run through here, so the test can cut them and mend them."""

    def __init__(self, page: Page) -> None:
        self.cut = False
        self.urls: list[str] = []
        self.live: list[tuple[WebSocketRoute, Any]] = []
        page.route_web_socket(re.compile(r"/v1/sync/ws"), self.connect)

    def connect(self, socket: WebSocketRoute) -> None:
        self.urls.append(socket.url)
        if self.cut:
            socket.close(code=4000, reason="the network is down")
            return
        self.live.append((socket, socket.connect_to_server()))

    def drop(self) -> None:
        self.cut = True
        for socket, server in self.live:
            server.close()
            socket.close(code=4000, reason="the network is down")
        self.live.clear()

    def mend(self) -> None:
        self.cut = False


def test_the_dashboard_reconnects_and_misses_nothing(
    platform: Platform, login: Callable[[str, str], Api], browser: Browser
) -> None:
    world = make_world(login)
    page, _ = open_page(browser)
    cable = Cable(page)
    open_dashboard(page, platform)
    order: dict[str, Any] = world.customer.post("/v1/orders", json=world.order_body()).json()
    log = page.locator(f'#events li[data-order="{order["id"]}"]')
    # A loaded machine may take seconds to open the dashboard's socket.
    expect(log).to_have_count(1, timeout=15_000)

    cable.drop()
    expect(page.locator("#sync-status")).to_have_text("reconnecting")
    # The order lives its whole life while the dashboard is cut off.
    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept").status_code == 200
    offer = offer_for(world, order["id"])
    assert world.rider.post(f"/v1/rider/offers/{offer}/accept").status_code == 200
    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/ready").status_code == 200
    for step in ("pickup", "deliver"):
        assert world.rider.post(f"/v1/rider/orders/{order['id']}/{step}").status_code == 200
    expect(page.locator("#sync-status")).to_have_text("reconnecting")
    assert log.count() == 1

    cable.mend()
    expect(page.locator("#sync-status")).to_have_text("live", timeout=15_000)
    # Every event of the order, each once, versions 1 to 7 (placed ... delivered).
    expect(log).to_have_count(7, timeout=5_000)
    versions = sorted(
        int(v or 0) for v in log.evaluate_all("els => els.map(e => e.dataset.version)")
    )
    assert versions == [1, 2, 3, 4, 5, 6, 7]
    expect(log.first).to_contain_text("order_delivered")
    assert "cursor=" in cable.urls[-1], cable.urls[-1]


def test_an_order_through_the_three_terminals(
    platform: Platform, login: Callable[[str, str], Api], browser: Browser
) -> None:
    world = make_world(login, rider_online=False)
    page, console = open_page(browser, 1500, 1000)
    page.goto(
        f"{platform.url}/terminals?customer={world.customer_id}&merchant={world.merchant_id}"
        f"&rider={world.rider_id}&lat={world.lat + 0.01}&lng={world.lng}"
        f"&rider_lat={world.lat + 0.004}&rider_lng={world.lng + 0.004}"
    )
    customer, merchant, rider = (
        page.locator(f"#{role}") for role in ("customer", "merchant", "rider")
    )
    for view in (customer, merchant, rider):
        expect(view.locator(".badge")).to_have_text("live")

    rider.get_by_role("button", name="Go online").click()
    expect(rider.locator(".state")).to_contain_text("online at")

    customer.get_by_role("button", name="Find merchants").click()
    customer.locator(f'[data-merchant="{world.merchant_id}"]').click()
    noodles = customer.locator('input[data-item="noodles"]')
    # More than the shelf holds: the API's own words say why.
    noodles.fill("999")
    customer.get_by_role("button", name="Place order").click()
    expect(customer.locator(".error")).to_contain_text("out_of_stock: not enough stock")

    noodles.fill("1")
    customer.get_by_role("button", name="Place order").click()
    placed = customer.locator(".order [data-order-id]")
    expect(placed).to_be_visible()
    order_id = placed.get_attribute("data-order-id")
    assert order_id
    expect(customer.locator(".error")).to_be_hidden()
    # The merchant hears of the order within a second.
    merchant_card = merchant.locator(f'li[data-order-id="{order_id}"]')
    expect(merchant_card).to_be_visible(timeout=1000)

    customer.get_by_role("button", name="Pay at the sandbox").click()
    for view in (customer, merchant):
        expect(view.locator(f'[data-order-id="{order_id}"] .status')).to_have_text("paid")
    countdown = merchant_card.locator(".countdown")
    if world.merchant.get(f"/v1/orders/{order_id}").json().get("accept_deadline"):
        expect(countdown).to_have_text(re.compile(r"answer within (\d+:\d\d|\d+ s)"))
    else:
        expect(countdown).to_have_count(0)

    merchant_card.get_by_role("button", name="Accept").click()
    expect(merchant_card.locator(".status")).to_have_text("accepted")
    offer = rider.locator(f'.offer[data-order-id="{order_id}"]')
    expect(offer.locator(".countdown")).to_have_text(re.compile(r"expires in \d+ s"))
    offer.get_by_role("button", name="Accept offer").click()
    job = rider.locator(f'li[data-order-id="{order_id}"]')
    expect(job.locator(".status")).to_have_text("accepted")
    expect(customer.locator(".eta")).to_contain_text("ETA")

    merchant_card.get_by_role("button", name="Ready").click()
    expect(job.locator(".status")).to_have_text("ready")
    job.get_by_role("button", name="Pick up").click()
    expect(job.locator(".status")).to_have_text("picked up")
    expect(customer.locator(".eta")).to_have_text(re.compile(r"^ETA: at your door by \d\d:\d\d"))
    # The rider rides toward the door; the customer's map follows it.
    time.sleep(2)
    shot(page, "terminals.png")

    job.get_by_role("button", name="Deliver").click()
    for view in (customer, merchant, rider):
        expect(view.locator(f'[data-order-id="{order_id}"] .status')).to_have_text("delivered")
    assert status_of(world.customer, order_id) == "delivered"
    # The only error is the one the customer was shown: the refused order's 409.
    assert console.besides("409 (Conflict)") == []


def test_the_pages_and_their_data_refuse_what_they_cannot_answer(
    platform: Platform, login: Callable[[str, str], Api]
) -> None:
    admin = login("admin", "ops")
    for query in (
        "lat=89.9&lng=179.9",  # a valid place, nearer the pole than a GEO index reaches
        "lat=-90&lng=-180&radius_m=15000",
        "lat=91&lng=0",
        "lat=x&lng=0",
        "lng=120",
        "lat=30&lng=120&radius_m=0",
        "lat=30&lng=120&radius_m=15001",
        "lat=30&lng=120&window_min=0",
        "lat=30&lng=120&window_min=1441",
    ):
        answer = admin.get(f"/v1/admin/city?{query}")
        assert answer.status_code == 422, (query, answer.text)
        assert answer.json()["error"]["code"] == "invalid_request"
    # The widest view at the edge of what can be indexed, across the antimeridian.
    edge = admin.get("/v1/admin/city?lat=85&lng=180&radius_m=15000")
    assert edge.status_code == 200, edge.text
    assert edge.json()["zones"]
    for minutes in ("0", "1441", "x"):
        assert admin.get(f"/v1/admin/metrics/series?minutes={minutes}").status_code == 422
    series = admin.get("/v1/admin/metrics/series?minutes=60").json()["series"]
    assert len(series) == 60 and series[0]["minute"] < series[-1]["minute"]
    assert login("customer", "c_pages").get("/v1/admin/city?lat=30&lng=120").status_code == 403
    assert httpx.get(f"{platform.url}/v1/admin/city?lat=30&lng=120").status_code == 401

    page = httpx.get(f"{platform.url}/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    again = httpx.get(f"{platform.url}/dashboard", headers={"if-none-match": page.headers["etag"]})
    assert again.status_code == 304
    script = httpx.get(f"{platform.url}/web/common.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for path in ("/web/app.py", "/web/..%2Fapp.py", "/web/dashboard.html"):
        missing = httpx.get(f"{platform.url}{path}")
        assert missing.status_code == 404, path
        assert "error" in missing.json()
    paths = httpx.get(f"{platform.url}/openapi.json").json()["paths"]
    assert "/v1/admin/city" in paths and "/dashboard" not in paths and "/web/{name}" not in paths
