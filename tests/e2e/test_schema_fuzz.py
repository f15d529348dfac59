"""Every operation of the OpenAPI document, fuzzed against the running platform as each
party: no answer is a 5xx, and every answer is one the document describes (its status,
its content type, its body's schema, its documented headers).

Generated from the live `/openapi.json`, so a route whose document drifts from what it
does fails here. A merchant with a menu is there for the fuzz to reach: its menu's
routes always name it, and half the generated orders go to it, so amounts, coupons and
versions are weighed by a real placement rather than refused for an unknown merchant.
Bounded and deterministic: a fixed seed, a few examples per operation, no example
database on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cluster.launcher import Platform
from tests.e2e.conftest import Api

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PARTIES = {
    "customer": "c_fuzz",
    "merchant": "m_fuzz",
    "rider": "r_fuzz",
    "admin": "ops_fuzz",
}
MERCHANT = PARTIES["merchant"]
MENU = {"noodles": 1800, "tea": 600}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# With the coverage phase's boundary values of every parameter, about a minute and a
# half for the four parties on two cores.
MAX_EXAMPLES = 25
SEED = 20_240_601


@pytest.fixture(scope="module")
def merchant(login: Callable[[str, str], Api]) -> str:
    """A merchant far from every other test's (at 0, 0), open, with a menu."""
    admin = login("admin", PARTIES["admin"])
    created = admin.post(
        "/v1/merchants",
        json={
            "id": MERCHANT,
            "name": "Fuzz Kitchen",
            "lat": 0.0,
            "lng": 0.0,
            "delivery": {"radius_m": 50_000},
        },
    )
    assert created.status_code == 201, created.text
    owner = login("merchant", MERCHANT)
    for item_id, price in MENU.items():
        put = owner.put(
            f"/v1/merchants/{MERCHANT}/menu/items/{item_id}",
            json={"name": item_id.title(), "price_fen": price, "stock": 1_000_000},
        )
        assert put.status_code == 200, put.text
    return MERCHANT


@pytest.fixture(scope="module")
def api_schema(platform: Platform, merchant: str) -> schemathesis.BaseSchema:
    # Fuzzing sends anything at all: never at anything but this session's own platform.
    assert urlsplit(platform.url).hostname in LOOPBACK, platform.url
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": platform.url,
            "max-redirects": 0,
            "request-timeout": 30,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "parameters": {
                # A long poll waiting for events nobody sends would spend its whole wait.
                "query.wait_s": 0,
                "path.merchant_id": merchant,
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{platform.url}/openapi.json", config=config)

    @schema.hook
    def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
        operation = context.operation
        if operation is None or operation.path != "/v1/orders" or not isinstance(body, dict):
            return st.just(body)
        placed = {**body, "merchant_id": merchant}
        if isinstance(body.get("items"), list):
            placed["items"] = [
                {**item, "item_id": sorted(MENU)[n % len(MENU)]} if isinstance(item, dict) else item
                for n, item in enumerate(body["items"])
            ]
        return st.sampled_from([body, placed])

    return schema


@pytest.fixture(scope="module", params=sorted(PARTIES))
def bearer(request: pytest.FixtureRequest, login: Callable[[str, str], Api]) -> dict[str, str]:
    party = login(request.param, PARTIES[request.param])
    return {"Authorization": party.http.headers["Authorization"]}


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32.5 names each operation's report through the test item's
    # `_nodeid`, which pytest 9.2 no longer has.
    request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.usefixtures("bearer")
@schema.parametrize()
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, bearer: dict[str, str]
) -> None:
    case.call_and_validate(headers=bearer, checks=CHECKS)
