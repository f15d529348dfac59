"""A replica that stops drains: what it took is answered (or 503 with Retry-After), no
connection is reset, and the platform is whole afterwards.

The session's app is deployed again with two replicas, clients keep long polls,
reads, placements and WebSockets going on both, and it is deployed again with one.
Each `serve.run` of an app built without a `version` is a new code version to Serve
2.60 (`client.py`: `version=deployment._version or get_random_string()`), so both
steps are rolling updates: every replica that was running stops with requests in
flight and must drain, and for a moment HAProxy has no replica of the app up and
sends its requests to Serve's fallback proxy. The session's platform is left with one
healthy replica for the tests after this one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from ray import serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from cluster.launcher import APP_NAME, Platform
from serve_app.app import build
from tests.e2e.conftest import Api, eventually, unique
from tests.e2e.world import make_world

# Long polls wait this long: several are in flight on each replica at any moment, all
# well inside the drain timeout (api_drain_timeout_s).
POLL_WAIT_S = 3
POLLERS = 6
READERS = 3
PLACERS = 2
# Seconds of load on two replicas before the scale-down, and after it.
BEFORE_S = 3.0
AFTER_S = 4.0
# Serve starts a replica in a few seconds; a slow shared machine takes longer.
SCALE_TIMEOUT_S = 120.0


def replicas_running() -> dict[str, int]:
    status = serve.status().applications[APP_NAME].deployments["api"]
    return {str(getattr(k, "value", k)): v for k, v in status.replica_states.items() if v}


def haproxy_servers() -> list[dict[str, str]]:
    """The API's servers as HAProxy sees them (its stats page, as CSV)."""
    port = os.environ["RAY_SERVE_HAPROXY_STATS_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/stats;csv", timeout=5).text
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return [
        row
        for row in rows
        if row["svname"] not in ("FRONTEND", "BACKEND") and row.get("bck") == "0"
    ]


def up(servers: list[dict[str, str]]) -> list[dict[str, str]]:
    return [s for s in servers if s["status"].startswith("UP")]


def scale(platform: Platform, replicas: int) -> None:
    """The app deployed again with this many replicas (a rolling update, see above)."""
    serve.run(
        build(platform.settings, replicas=replicas),
        name=APP_NAME,
        route_prefix="/",
        blocking=False,
    )


def settled(platform: Platform, replicas: int) -> None:
    """Serve runs exactly `replicas` and nothing else, HAProxy routes to that many."""

    def probe() -> bool:
        uses_haproxy = platform.settings.front_door == "haproxy"
        return replicas_running() == {"RUNNING": replicas} and (
            not uses_haproxy or len(up(haproxy_servers())) == replicas
        )

    eventually(probe, timeout_s=SCALE_TIMEOUT_S, what=f"{replicas} API replicas serving")


class Load:
    """Clients that keep requests in flight until told to stop; every outcome kept."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.wrong: list[str] = []
        self.threads: list[threading.Thread] = []

    def record(self, what: str, answer: httpx.Response | None, err: Exception | None) -> None:
        with self.lock:
            if err is not None:
                # A reset, a refused or cut connection, a timeout: what a drain must not do.
                self.outcomes[f"{what} {type(err).__name__}"] += 1
                self.wrong.append(f"{what}: {err!r}")
                return
            assert answer is not None
            self.outcomes[f"{what} {answer.status_code}"] += 1
            if answer.status_code < 400:
                return
            retry_after = answer.headers.get("retry-after", "")
            if answer.status_code == 503 and retry_after.isdigit() and int(retry_after) >= 1:
                return
            self.wrong.append(f"{what}: {answer.status_code} {answer.text[:200]}")

    def run(self, what: str, client: httpx.Client, step: Callable[[httpx.Client], Any]) -> None:
        def loop() -> None:
            with client:
                while not self.stop.is_set():
                    try:
                        answer = step(client)
                    except httpx.HTTPError as err:
                        self.record(what, None, err)
                        continue
                    self.record(what, answer, None)

        thread = threading.Thread(target=loop, name=f"load-{what}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(POLL_WAIT_S + 35)
            assert not thread.is_alive(), f"{thread.name} still waiting"


def client_of(platform: Platform, party: Api) -> httpx.Client:
    """A client of its own (its own keep-alive connections), speaking as `party`."""
    return httpx.Client(base_url=platform.url, headers=party.http.headers, timeout=30)


def poller(platform: Platform, login: Callable[[str, str], Api]) -> tuple[httpx.Client, Any]:
    """A rider with nothing to hear: every long poll waits its whole POLL_WAIT_S."""
    client = client_of(platform, login("rider", unique("r_drain")))
    cursor: dict[str, str] = {}

    def step(http: httpx.Client) -> httpx.Response:
        params = {"wait_s": str(POLL_WAIT_S), **cursor}
        answer = http.get("/v1/sync/events", params=params)
        if answer.status_code == 200 and answer.json().get("cursor"):
            cursor["cursor"] = answer.json()["cursor"]
        return answer

    return client, step


def socket_state(socket: ClientConnection) -> str:
    """Open, or the close code it was given (1006: cut without one)."""
    try:
        while True:
            socket.recv(timeout=0.2)
    except TimeoutError:
        return "open"
    except ConnectionClosed as closed:
        return f"closed {closed.rcvd.code if closed.rcvd else 1006}"


def test_a_stopping_replica_answers_what_it_took(
    platform: Platform, login: Callable[[str, str], Api]
) -> None:
    base = platform.settings.api_replicas
    world = make_world(login, stock=10_000)
    customers = [login("customer", unique("c_drain")) for _ in range(PLACERS)]
    settled(platform, base)
    scale(platform, base + 1)
    load = Load()
    sockets: list[ClientConnection] = []
    states: list[str] = []
    held = contextlib.ExitStack()
    restored = False
    try:
        settled(platform, base + 1)
        uses_haproxy = platform.settings.front_door == "haproxy"
        served_before = (
            {s["svname"]: int(s["stot"]) for s in haproxy_servers()} if uses_haproxy else {}
        )

        for _ in range(POLLERS):
            load.run("long poll", *poller(platform, login))
        menu = f"/v1/merchants/{world.merchant_id}/menu"
        for _ in range(READERS):
            load.run("read", client_of(platform, world.customer), lambda http: http.get(menu))
        for customer in customers:

            def place(http: httpx.Client) -> httpx.Response:
                time.sleep(0.3)  # inside the session's placement limit (300/minute)
                return http.post("/v1/orders", json=world.order_body())

            load.run("place", client_of(platform, customer), place)
        token = login("rider", unique("r_ws")).http.headers["authorization"].split()[-1]
        host, port = platform.settings.http_host, platform.settings.http_port
        for _ in range(4):
            url = f"ws://{host}:{port}/v1/sync/ws?token={token}"
            sockets.append(held.enter_context(connect(url, open_timeout=10)))
        time.sleep(BEFORE_S)

        if uses_haproxy:
            # Both replicas have work in flight when they are stopped.
            served = {
                s["svname"]: int(s["stot"]) - served_before.get(s["svname"], 0)
                for s in up(haproxy_servers())
            }
            assert len(served) == base + 1 and all(n > 0 for n in served.values()), served

        scale(platform, base)
        restored = True
        settled(platform, base)
        time.sleep(AFTER_S)
    finally:
        load.finish()
        states = [socket_state(s) for s in sockets]
        held.close()
        if not restored:
            scale(platform, base)
        settled(platform, base)

    print(f"\nacross the drain: {dict(sorted(load.outcomes.items()))}; sockets: {states}")
    assert load.wrong == [], load.wrong[:20]
    # Every kind of request was in flight and answered.
    for what in ("long poll 200", "read 200", "place 201"):
        assert load.outcomes[what] > 0, load.outcomes
    # A socket on a stopped replica is told to come back (1012, service restart); none
    # is cut without a close code (1006).
    assert states and all(s in ("open", "closed 1012") for s in states), states

    # Whole again with its one replica: health, a placement, a live socket.
    assert httpx.get(f"{platform.url}/v1/health", timeout=10).status_code == 200
    answer = world.customer.post("/v1/orders", json=world.order_body(), key=unique("k"))
    assert answer.status_code == 201, answer.text
    with connect(f"ws://{host}:{port}/v1/sync/ws?token={token}", open_timeout=10) as socket:
        assert socket_state(socket) == "open"
