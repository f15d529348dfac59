"""Regional promotions on the running platform: operations publish to a cell, the
customers registered to it or connected in it get a `promotion` event on their
sockets, those elsewhere do not, the push completes and reports its counts, and a
customer reads the active promotions of its cells within their window and not after.

Each test has cells of its own (far from every other test's worlds), so counts are
exact whatever else the session's platform has done."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from cluster.launcher import Platform
from tests.e2e.conftest import Api, eventually, unique
from tests.e2e.world import events_of

# Guangzhou, far from the tests' worlds (Hangzhou) and the fuzz's and the
# authorization matrix's merchants: 0.2 degrees (several zones) apart per spot.
_spots = itertools.count()


def spot() -> tuple[float, float]:
    n = next(_spots)
    return 23.10 + 0.2 * (n % 5), 113.30 + 0.2 * (n // 5)


def cell_of(lat: float, lng: float) -> str:
    return str(h3.latlng_to_cell(lat, lng, 7))


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def banner(cells: list[str], seconds: float = 3600, starts_in_s: float = -60) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "cells": cells,
        "kind": "banner",
        "title": "Dim sum by the river",
        "body": "Open late all week",
        "starts_at": iso(now + timedelta(seconds=starts_in_s)),
        "ends_at": iso(now + timedelta(seconds=seconds)),
    }


def ws(platform: Platform, party: Api, **params: object) -> ClientConnection:
    token = party.http.headers["authorization"][7:]
    query = "&".join(f"{k}={v}" for k, v in {"token": token, **params}.items())
    s = platform.settings
    return connect(f"ws://{s.http_host}:{s.http_port}/v1/sync/ws?{query}", open_timeout=10)


def promotions_on(
    socket: ClientConnection, timeout_s: float, want: int = 1
) -> list[dict[str, Any]]:
    """The `promotion` frames a socket gets within `timeout_s` (stopping at `want`)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(got) < want:
        try:
            frame = json.loads(socket.recv(timeout=max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
        if frame.get("type") == "promotion":
            got.append(frame)
    return got


def progress_of(admin: Api, promotion_id: str) -> dict[str, Any]:
    answer = admin.get(f"/v1/admin/promotions/{promotion_id}")
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def listed(party: Api) -> list[str]:
    answer = party.get("/v1/me/promotions")
    assert answer.status_code == 200, answer.text
    return [p["id"] for p in answer.json()["promotions"]]


def home(party: Api, lat: float, lng: float) -> str:
    answer = party.put("/v1/me/home", json={"lat": lat, "lng": lng})
    assert answer.status_code == 200, answer.text
    cell: str = answer.json()["home_cell"]
    return cell


@pytest.fixture
def admin(login: Callable[[str, str], Api]) -> Api:
    return login("admin", "ops_promotions")


def test_a_promotion_reaches_the_customers_of_its_cell_and_nobody_else(
    login: Callable[[str, str], Api], platform: Platform, admin: Api
) -> None:
    lat, lng = spot()
    cell = cell_of(lat, lng)
    registered, connected, elsewhere = (login("customer", unique("c_promo")) for _ in range(3))
    assert home(registered, lat, lng) == cell
    far = spot()
    home(elsewhere, *far)
    with (
        ws(platform, registered) as registered_socket,
        ws(platform, connected, lat=lat + 0.001, lng=lng) as connected_socket,
        ws(platform, elsewhere) as elsewhere_socket,
    ):
        # Each socket is subscribed once its backlog (none) is read.
        time.sleep(0.5)
        window_s = 12.0
        published_at = time.monotonic()
        answer = admin.post("/v1/admin/promotions", json=banner([cell], seconds=window_s))
        assert answer.status_code == 201, answer.text
        promotion = answer.json()
        assert promotion["cells"] == [cell] and promotion["zone_cells"] == 1
        assert promotion["progress"]["targeted"] == 2
        pid = promotion["id"]

        for socket in (registered_socket, connected_socket):
            frames = promotions_on(socket, 10)
            assert [f["data"]["promotion_id"] for f in frames] == [pid]
            event = frames[0]
            assert event["order_id"] is None and event["version"] == 1 and event["cursor"]
            assert event["data"]["title"] == "Dim sum by the river"
            assert event["data"]["kind"] == "banner" and event["data"]["coupon_code"] is None
        assert promotions_on(elsewhere_socket, 1.5) == []
    assert not [e for e in events_of(elsewhere) if e["type"] == "promotion"]

    done = eventually(
        lambda: (v := progress_of(admin, pid))["status"] == "done" and v, 10, "the push done"
    )
    assert done["progress"]["pushed"] == 2
    assert done["progress"]["cells_done"] == done["progress"]["cells_total"] == 1
    assert done["progress"]["started_at"] and done["progress"]["finished_at"]

    # Within its window the cell's customers list it (the offline device's view) ...
    assert pid in listed(registered) and pid in listed(connected)
    assert pid not in listed(elsewhere)
    mine = registered.get("/v1/me/promotions").json()
    assert mine["home_cell"] == cell
    assert mine["promotions"][0]["title"] == "Dim sum by the river"
    assert "cells" not in mine["promotions"][0]
    # ... and not after.
    time.sleep(max(0.0, published_at + window_s + 0.5 - time.monotonic()))
    assert pid not in listed(registered) and pid not in listed(connected)


def test_a_customer_arriving_in_a_cell_is_told_of_what_is_active_there(
    login: Callable[[str, str], Api], platform: Platform, admin: Api
) -> None:
    lat, lng = spot()
    cell = cell_of(lat, lng)
    answer = admin.post("/v1/admin/promotions", json=banner([h3.cell_to_parent(cell, 5)]))
    assert answer.status_code == 201, answer.text
    assert answer.json()["zone_cells"] == 49
    pid = answer.json()["id"]
    eventually(lambda: progress_of(admin, pid)["status"] == "done", 10, "the push done")

    traveller = login("customer", unique("c_promo"))
    with ws(platform, traveller) as socket:
        assert promotions_on(socket, 1.0) == []
        socket.send(json.dumps({"type": "location", "lat": lat, "lng": lng}))
        frames = promotions_on(socket, 5)
        assert [f["data"]["promotion_id"] for f in frames] == [pid]
        # Told once: saying so again changes nothing.
        socket.send(json.dumps({"type": "location", "lat": lat, "lng": lng}))
        assert promotions_on(socket, 1.0) == []
    assert listed(traveller) == [pid]
    # Registering there later does not tell it twice either.
    newcomer = login("customer", unique("c_promo"))
    home(newcomer, lat, lng)
    assert [e["data"]["promotion_id"] for e in events_of(newcomer) if e["type"] == "promotion"] == [
        pid
    ]
    home(newcomer, lat, lng)
    assert len([e for e in events_of(newcomer) if e["type"] == "promotion"]) == 1


def test_a_scheduled_promotion_is_pushed_when_it_starts(
    login: Callable[[str, str], Api], admin: Api
) -> None:
    lat, lng = spot()
    customer = login("customer", unique("c_promo"))
    cell = home(customer, lat, lng)
    answer = admin.post("/v1/admin/promotions", json=banner([cell], starts_in_s=3))
    assert answer.status_code == 201, answer.text
    pid = answer.json()["id"]
    assert answer.json()["status"] == "scheduled"
    assert pid not in listed(customer)
    assert not [e for e in events_of(customer) if e["type"] == "promotion"]
    eventually(lambda: progress_of(admin, pid)["status"] == "done", 15, "the push done")
    assert listed(customer) == [pid]
    assert [e["data"]["promotion_id"] for e in events_of(customer) if e["type"] == "promotion"] == [
        pid
    ]


def test_a_coupon_promotion_names_an_existing_coupon(
    login: Callable[[str, str], Api], admin: Api
) -> None:
    lat, lng = spot()
    customer = login("customer", unique("c_promo"))
    cell = home(customer, lat, lng)
    body = {**banner([cell]), "kind": "coupon", "coupon_code": unique("NOSUCH").upper()}
    unknown = admin.post("/v1/admin/promotions", json=body)
    assert unknown.status_code == 409, unknown.text
    assert unknown.json()["error"]["code"] == "coupon_unavailable"

    code = unique("RIVER").upper()
    made = admin.post(
        "/v1/admin/coupons",
        json={
            "code": code,
            "discount_fen": 500,
            "min_spend_fen": 2000,
            "total": 100,
            "starts_at": "2026-01-01T00:00:00Z",
            "ends_at": "2099-01-01T00:00:00Z",
        },
    )
    assert made.status_code == 201, made.text
    key = unique("key")
    first = admin.post("/v1/admin/promotions", json={**body, "coupon_code": code}, key=key)
    assert first.status_code == 201, first.text
    again = admin.post("/v1/admin/promotions", json={**body, "coupon_code": code}, key=key)
    assert again.status_code == 201 and again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    pid = first.json()["id"]

    def pushed() -> list[dict[str, Any]]:
        return [e for e in events_of(customer) if e["type"] == "promotion"]

    events = eventually(pushed, 10, "the coupon pushed")
    assert [e["data"]["coupon_code"] for e in events] == [code]
    assert eventually(lambda: progress_of(admin, pid)["status"] == "done", 10)


def test_only_operations_publish_and_bad_cells_are_refused(
    login: Callable[[str, str], Api], platform: Platform, admin: Api
) -> None:
    lat, lng = spot()
    cell = cell_of(lat, lng)
    body = banner([cell])
    for role in ("customer", "merchant", "rider"):
        party = login(role, unique(role[0]))
        refused = party.post("/v1/admin/promotions", json=body)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
        assert party.get("/v1/admin/promotions/pr_x").status_code == 403
    for path in ("/v1/me/promotions",):
        assert admin.get(path).status_code == 403
    assert admin.put("/v1/me/home", json={"lat": lat, "lng": lng}).status_code == 403
    assert Api(platform.url).post("/v1/admin/promotions", json=body).status_code == 401
    assert Api(platform.url).get("/v1/me/promotions").status_code == 401

    finer = str(h3.latlng_to_cell(lat, lng, 9))
    bad_cells: list[Any] = [
        [],
        ["not-an-h3-cell"],
        ["0" * 15],
        [finer],
        [h3.cell_to_parent(cell, 3)],
        [str(c) for c in h3.grid_disk(cell, 6)][:101],
    ]
    for cells in bad_cells:
        answer = admin.post("/v1/admin/promotions", json={**body, "cells": cells})
        assert answer.status_code == 422, (cells[:2], answer.text)
        assert answer.json()["error"]["code"] == "invalid_request"
    for changes in (
        {"ends_at": "2020-01-01T00:00:00Z", "starts_at": "2019-01-01T00:00:00Z"},
        {"kind": "coupon"},
        {"coupon_code": "WESTLAKE10"},
        {"starts_at": "2026-01-01T00:00:00"},
    ):
        answer = admin.post("/v1/admin/promotions", json={**body, **changes})
        assert answer.status_code == 422, (changes, answer.text)
    assert admin.get("/v1/admin/promotions/pr_nosuch").status_code == 404

    customer = login("customer", unique("c_promo"))
    token = customer.http.headers["authorization"][7:]
    s = platform.settings
    url = f"ws://{s.http_host}:{s.http_port}/v1/sync/ws?token={token}&lat=91&lng=0"
    with connect(url) as socket:
        frame = json.loads(socket.recv(timeout=5))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)
    assert frame["error"]["code"] == "invalid_request"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4422
    assert customer.put("/v1/me/home", json={"lat": 91, "lng": 0}).status_code == 422
