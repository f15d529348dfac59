"""The running platform for end-to-end tests: one Ray instance and one Serve app per session."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis

from actors.directory import host_of_shard, shard_for
from cluster.launcher import Platform
from storage import keys
from storage.layout import parse_layout
from storage.redis import connect_blocking
from storage.server import EmbeddedRedis, free_port
from storage.settings import Settings
from tests.conftest import running_cluster

T = TypeVar("T")


@pytest.fixture(scope="session")
def redis_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The session's server, or with `O2O_TEST_REDIS=cluster` a Valkey cluster of three
    primaries with a replica each (`make test` runs the order loop on both)."""
    if os.environ.get("O2O_TEST_REDIS") != "cluster":
        server: EmbeddedRedis = request.getfixturevalue("redis_server")
        yield server.url
        return
    cluster = running_cluster(Path(tmp_path_factory.mktemp("cluster")))
    yield cluster.url
    cluster.stop()


@pytest.fixture(scope="session")
def platform(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    run_dir = Path(tmp_path_factory.mktemp("platform"))
    settings = Settings(
        redis_url=redis_url,
        ray_address="",
        http_port=free_port(),
        sandbox_port=free_port(),
        offer_ttl_s=6,
        # Fast enough to test lost notifications and abandoned payments in seconds.
        payment_poll_s=1.0,
        payment_timeout_s=20,
        # Long enough for every test's merchant to answer, short enough to test.
        merchant_accept_timeout_s=10,
        # The crash tests arm faults in Redis; nothing fires unless a test armed it.
        fault_injection=True,
        dev_mode=True,
        # Concurrent sessions on one machine would fight over the dashboard's port.
        ray_dashboard=False,
        # The suite speaks through a few tokens: generous limits, but placement's is
        # one that test_admission.py passes with requests refused before any merchant.
        rate_limit_place="300/minute",
        rate_limit_write="100000/minute",
        rate_limit_read="100000/minute",
        rate_limit_auth="100000/minute",
        # Small enough for test_admission.py to pass with a slow merchant's placements,
        # far above what any other test has in flight.
        shed_max_in_flight=64,
        # Risk checks (test_risk.py trips each): only that file sends X-Device-Id, so a
        # device is held early; customers are not (the suite places many orders from
        # few tokens, and lets many expire), nor trips shorter than 8 km (the suite's
        # riders deliver at once, within 3 km). Refunds keep their default figures:
        # no other test refunds 200 yuan of one merchant's day.
        risk_max_orders_per_customer=1_000_000,
        risk_max_failures_per_customer=1_000_000,
        risk_max_orders_per_device=3,
        risk_max_failures_per_device=1,
        risk_rider_min_distance_m=8_000,
    )
    running = Platform(settings, run_dir)
    running.start()
    yield running
    running.stop()


def owner_of(client: redis.Redis, kind: str, entity_id: str) -> int:
    """The index of the host that owns an entity now, by the layout in Redis."""
    row = client.hmget(keys.host_layout(kind), "count", "epoch", "previous", "pins")
    layout = parse_layout(list(row), 1)
    return host_of_shard(kind, shard_for(kind, entity_id), layout)


@pytest.fixture(scope="session")
def store(platform: Platform) -> Iterator[redis.Redis]:
    client = connect_blocking(platform.settings.effective_redis_url)
    yield client
    client.close()


class Api:
    """An HTTP client that speaks as one party of the platform."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=30)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(
        self, path: str, json: Any = None, key: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return self.http.post(path, json=json, headers=headers, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return self.http.put(path, json=json, **kw)


@pytest.fixture(scope="session")
def login(platform: Platform) -> Callable[[str, str], Api]:
    anonymous = httpx.Client(base_url=platform.url, timeout=30)

    def as_party(role: str, sub: str) -> Api:
        answer = anonymous.post("/v1/auth/dev-token", json={"role": role, "sub": sub})
        assert answer.status_code == 200, answer.text
        return Api(platform.url, answer.json()["token"])

    return as_party


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def eventually(probe: Callable[[], T | None], timeout_s: float = 30, what: str = "") -> T:
    """Poll until `probe` returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or probe}")


# West Lake, Hangzhou: the demo city and the test city.
CITY = (30.2590, 120.1490)
