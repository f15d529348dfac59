"""The platform says whether it is up, and documents itself."""

from __future__ import annotations

import httpx

from cluster.launcher import Platform


def test_health_live_and_openapi(platform: Platform) -> None:
    client = httpx.Client(base_url=platform.url, timeout=30)
    assert client.get("/v1/health/live").json() == {"status": "ok"}
    assert client.get("/v1/health").json() == {"status": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/orders", "/v1/orders/{order_id}", "/v1/merchants/nearby", "/v1/sync/events"):
        assert path in paths
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
