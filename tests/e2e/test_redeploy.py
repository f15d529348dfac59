"""A redeploy with new settings reaches the hosts: the app's replicas replace each host
whose settings differ, and the order loop goes on (Serve's own rolling update)."""

from __future__ import annotations

from collections.abc import Callable

import ray
from ray import serve

from actors.directory import NAMESPACE, host_name
from cluster.launcher import APP_NAME, Platform
from serve_app.app import build
from storage.settings import Settings
from tests.e2e.conftest import Api, eventually
from tests.e2e.world import make_world, pay, status_of

KINDS = ("merchant", "rider_zone", "payment")


def deployed(kind: str) -> Settings:
    handle = ray.get_actor(host_name(kind, 0), namespace=NAMESPACE)
    settings: Settings = ray.get(handle.deployment.remote(), timeout=60)
    return settings


def redeploy(settings: Settings) -> None:
    serve.run(build(settings), name=APP_NAME, route_prefix="/", blocking=False)

    def every_host_has_it() -> bool:
        try:
            return all(deployed(kind) == settings for kind in KINDS)
        except Exception:
            return False  # a host being replaced

    eventually(every_host_has_it, timeout_s=120, what="the hosts on the new settings")


def test_new_settings_reach_every_host_and_orders_go_on(
    login: Callable[[str, str], Api], platform: Platform
) -> None:
    original = platform.settings
    assert all(deployed(kind).offer_ttl_s == original.offer_ttl_s for kind in KINDS)
    changed = original.model_copy(update={"offer_ttl_s": original.offer_ttl_s + 1})
    try:
        redeploy(changed)
        world = make_world(login)
        order = world.customer.post("/v1/orders", json=world.order_body())
        assert order.status_code == 201, order.text
        pay(order.json())
        eventually(lambda: status_of(world.customer, order.json()["id"]) == "paid", what="paid")
    finally:
        # The rest of the session runs on the settings it started with.
        redeploy(original)
    assert all(deployed(kind).offer_ttl_s == original.offer_ttl_s for kind in KINDS)
