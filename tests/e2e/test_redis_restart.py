"""The Redis-protocol server dies under live terminals and comes back on its own data.

While it is down every request answers 503 JSON with Retry-After; afterwards each
terminal, still connected or reconnecting with its cursor, receives every event of the
orders placed after the recovery, and none twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from cluster.launcher import Platform
from storage.server import EmbeddedRedis
from tests.e2e.conftest import Api, eventually
from tests.e2e.world import make_world, pay, status_of


class Terminal(threading.Thread):
    """A terminal that keeps its socket open and reconnects with its cursor, as apps do."""

    def __init__(self, platform: Platform, party: Api) -> None:
        super().__init__(daemon=True)
        self.base = (
            f"ws://{platform.settings.http_host}:{platform.settings.http_port}/v1/sync/ws"
            f"?token={party.http.headers['authorization'][7:]}"
        )
        self.cursor: str | None = None
        self.events: list[dict[str, Any]] = []
        self.reconnects = 0
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 180
        while not self.stop.is_set() and time.monotonic() < deadline:
            url = self.base + (f"&cursor={self.cursor}" if self.cursor else "")
            try:
                with connect(url, open_timeout=5) as socket:
                    while not self.stop.is_set():
                        try:
                            event = json.loads(socket.recv(timeout=0.2))
                        except TimeoutError:
                            continue
                        self.events.append(event)
                        self.cursor = event.get("cursor") or self.cursor
            except (ConnectionClosed, OSError, TimeoutError):
                pass
            except Exception:  # the handshake refused while the platform recovers
                pass
            self.reconnects += 1
            time.sleep(0.2)


def test_a_redis_restart_costs_a_burst_of_503_and_terminals_miss_nothing(
    login: Callable[[str, str], Api], platform: Platform, redis_server: EmbeddedRedis
) -> None:
    world = make_world(login, stock=100)
    before = world.customer.post("/v1/orders", json=world.order_body()).json()
    terminals = [Terminal(platform, world.customer), Terminal(platform, world.merchant)]
    for terminal in terminals:
        terminal.start()
    eventually(
        lambda: all(any(e["order_id"] == before["id"] for e in t.events) for t in terminals),
        what="the terminals are live",
    )

    assert redis_server.process is not None
    redis_server.process.kill()
    redis_server.process.wait(10)
    started = time.monotonic()
    down = world.customer.post("/v1/orders", json=world.order_body())
    assert time.monotonic() - started < 15, "a request hung on the dead server"
    assert down.status_code == 503, down.text
    assert down.headers["retry-after"]
    assert down.json()["error"]["code"] == "service_unavailable"
    health = httpx.get(f"{platform.url}/v1/health", timeout=30)
    assert health.status_code == 503
    assert "redis" in health.json()["error"]["details"]

    redis_server.start()  # the same port and data: the append-only file brings it all back

    def placed() -> dict[str, Any] | None:
        answer = world.customer.post("/v1/orders", json=world.order_body())
        return answer.json() if answer.status_code == 201 else None

    after = [eventually(placed, timeout_s=60, what="placement after the restart")]
    after += [world.customer.post("/v1/orders", json=world.order_body()).json() for _ in range(2)]
    for order in after:
        pay(order)
    for order in after:
        eventually(lambda o=order: status_of(world.customer, o["id"]) == "paid", what="paid")
    wanted = {(o["id"], kind) for o in after for kind in ("order_placed", "order_paid")}

    def seen_all() -> bool:
        return all(
            wanted <= {(e.get("order_id"), e.get("type")) for e in t.events} for t in terminals
        )

    eventually(seen_all, timeout_s=30, what="every event after the restart on every terminal")
    for terminal in terminals:
        terminal.stop.set()
        terminal.join(10)
        mine = [e for e in terminal.events if (e.get("order_id"), e.get("type")) in wanted]
        assert len(mine) == len(wanted), "an event arrived twice"
        cursors = [e["cursor"] for e in terminal.events if e.get("cursor")]
        assert len(cursors) == len(set(cursors)), "an event arrived twice"
    # Everything acknowledged before the outage is still there.
    assert status_of(world.customer, before["id"]) == "pending_payment"
