"""Operations can see it: one order's life on the metrics that Ray's metrics agents
serve, and on the hosts' log lines, JSON, each naming the order."""

from __future__ import annotations

import glob
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import ray
from websockets.sync.client import connect

from actors.directory import NAMESPACE
from cluster.launcher import Platform
from tests.e2e.conftest import Api, eventually
from tests.e2e.world import World, make_world, offer_for, pay, status_of

# Ray reports what its processes recorded every few seconds, and the agent passes it on.
METRICS_WAIT_S = 60.0

Sample = tuple[str, dict[str, str], float]
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
HOST = re.compile(r"(merchant|rider_zone|payment)-host-\d+")


def scrape() -> list[Sample]:
    """Every sample of every live node's metrics agent (this process is the Ray driver)."""
    samples: list[Sample] = []
    for node in ray.nodes():
        if not node.get("Alive") or not node.get("MetricsExportPort"):
            continue
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        try:
            text = httpx.get(url, timeout=10).text
        except httpx.HTTPError:
            continue
        for line in text.splitlines():
            found = None if line.startswith("#") else SAMPLE.match(line)
            if found:
                labels = dict(LABEL.findall(found.group(2) or ""))
                samples.append((found.group(1), labels, float(found.group(3))))
    return samples


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        value
        for sample, tags, value in samples
        if sample == name and all(tags.get(k) == v for k, v in labels.items())
    )


def hosts() -> list[str]:
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and HOST.fullmatch(a["name"])
    )


def ws_url(platform: Platform, party: Api) -> str:
    token = party.http.headers["authorization"][7:]
    s = platform.settings
    return f"ws://{s.http_host}:{s.http_port}/v1/sync/ws?token={token}"


def host_log_lines() -> list[dict[str, Any]]:
    """The JSON lines the hosts wrote (Ray keeps each worker's output in the session's
    logs directory; a host's lines carry its actor's name)."""
    node: Any = ray._private.worker._global_node
    session = node.get_session_dir_path()
    lines = []
    for path in glob.glob(os.path.join(session, "logs", "worker-*")):
        if not path.endswith((".out", ".err")):
            continue
        with open(path, errors="replace") as f:
            for line in f:
                if not line.startswith("{"):
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if HOST.fullmatch(str(record.get("actor_name", ""))):
                    lines.append(record)
    return lines


def waiting_line(order_id: str) -> Callable[[], dict[str, Any] | None]:
    def find() -> dict[str, Any] | None:
        for record in host_log_lines():
            if record.get("order_id") == order_id and "waits for a rider" in record["message"]:
                return record
        return None

    return find


@dataclass
class Delivered:
    world: World
    order: dict[str, Any]
    before: list[Sample]
    sockets_while_open: float
    sockets_after: float


@pytest.fixture(scope="module")
def delivered(login: Callable[[str, str], Api], platform: Platform) -> Delivered:
    """One order from placement to the doorstep, with a terminal's socket open meanwhile;
    nobody rides near it at first, so it waits for a rider before one comes online."""
    world = make_world(login, rider_online=False)
    before = scrape()
    open_before = total(before, "ray_o2o_sync_sockets", transport="websocket")
    sockets_while_open = sockets_after = 0.0
    with connect(ws_url(platform, world.customer), open_timeout=10):
        deadline = time.monotonic() + METRICS_WAIT_S
        while time.monotonic() < deadline:
            sockets_while_open = total(scrape(), "ray_o2o_sync_sockets", transport="websocket")
            if sockets_while_open > open_before:
                break
            time.sleep(1)
        placed = world.customer.post("/v1/orders", json=world.order_body())
        assert placed.status_code == 201, placed.text
        order: dict[str, Any] = placed.json()
        pay(order)
        eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
        accept = world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept")
        assert accept.status_code == 200, accept.text
        # Dispatch found nobody near, and its host said so, naming the order.
        eventually(waiting_line(order["id"]), timeout_s=30, what="the no-rider log line")
        online = world.rider.post(
            "/v1/riders/me/status",
            json={"online": True, "lat": world.lat + 0.002, "lng": world.lng},
        )
        assert online.status_code == 200, online.text
        offer = offer_for(world, order["id"])
        assert world.rider.post(f"/v1/rider/offers/{offer}/accept").status_code == 200
        assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/ready").status_code == 200
        for step in ("pickup", "deliver"):
            answer = world.rider.post(f"/v1/rider/orders/{order['id']}/{step}")
            assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + METRICS_WAIT_S
    while time.monotonic() < deadline:
        sockets_after = total(scrape(), "ray_o2o_sync_sockets", transport="websocket")
        if sockets_after < sockets_while_open:
            break
        time.sleep(1)
    return Delivered(world, order, before, sockets_while_open, sockets_after)


# What the order's life must have added to each counter, at least.
MOVED = [
    *(
        ("ray_o2o_orders_total", {"event": event})
        for event in (
            "placed",
            "paid",
            "accepted",
            "rider_assigned",
            "ready",
            "picked_up",
            "delivered",
        )
    ),
    *(
        ("ray_o2o_dispatch_total", {"outcome": outcome})
        for outcome in ("no_rider", "offered", "accepted", "assigned")
    ),
    ("ray_o2o_payments_total", {"outcome": "captured"}),
    ("ray_o2o_placement_seconds_count", {"outcome": "placed"}),
]


def test_the_order_moves_the_counters_and_every_host_reports_its_mailboxes(
    delivered: Delivered,
) -> None:
    names = hosts()
    assert {HOST.fullmatch(n).group(1) for n in names} == {  # type: ignore[union-attr]
        "merchant",
        "rider_zone",
        "payment",
    }

    def still_missing(samples: list[Sample]) -> list[str]:
        missing = [
            f"{name}{labels}"
            for name, labels in MOVED
            if total(samples, name, **labels) < total(delivered.before, name, **labels) + 1
        ]
        for host in names:
            states = {
                tags.get("state")
                for name, tags, _ in samples
                if name == "ray_o2o_mailbox_depth" and tags.get("host") == host
            }
            if states != {"unread", "pending"}:
                missing.append(f"ray_o2o_mailbox_depth{{host={host}}}: {sorted(map(str, states))}")
        return missing

    deadline = time.monotonic() + METRICS_WAIT_S
    missing = still_missing(scrape())
    while missing and time.monotonic() < deadline:
        time.sleep(1)
        missing = still_missing(scrape())
    assert missing == []


def test_a_socket_is_counted_while_it_is_open(delivered: Delivered) -> None:
    assert delivered.sockets_while_open >= 1
    assert delivered.sockets_after < delivered.sockets_while_open


def test_the_hosts_log_json_lines_that_name_the_order(delivered: Delivered) -> None:
    order_id = delivered.order["id"]
    line = waiting_line(order_id)()
    assert line is not None
    assert line["levelname"] == "INFO"
    assert line["name"] == "actors.rider_zone"
    assert line["actor_name"].startswith("rider_zone-host-")
    # Every host line that speaks of the order names it as a field, too.
    about = [record for record in host_log_lines() if order_id in record["message"]]
    assert about
    assert [r for r in about if r.get("order_id") != order_id] == []
