"""What names a creation: the client's Idempotency-Key, else HAProxy's attempt id, so
the replay of a request whose replica died finds what its first attempt created."""

from __future__ import annotations

from starlette.requests import Request

from serve_app.auth import Caller
from serve_app.routes.addresses import address_id_for
from serve_app.routes.admin import refund_no_for
from serve_app.routes.orders import order_id_for
from serve_app.routes.promotions import promotion_id_for
from serve_app.services import ATTEMPT_HEADER, creation_key

CUSTOMER = Caller(role="customer", sub="c_1")


def request(key: str | None = None, attempt: str | None = None) -> Request:
    headers = [(b"idempotency-key", key.encode())] if key else []
    if attempt:
        headers.append((ATTEMPT_HEADER.lower().encode(), attempt.encode()))
    return Request({"type": "http", "method": "POST", "path": "/v1/orders", "headers": headers})


def test_the_idempotency_key_names_the_creation_before_the_attempt() -> None:
    assert creation_key(request(key="k1", attempt="a1")) == "k1"
    assert creation_key(request(key="k1")) == "k1"


def test_a_replay_of_one_attempt_names_the_same_things() -> None:
    first, replay, other = (request(attempt=a) for a in ("a1", "a1", "a2"))
    for named in (
        lambda r: order_id_for(CUSTOMER, "m_1", creation_key(r)),
        lambda r: address_id_for(CUSTOMER, creation_key(r)),
        lambda r: promotion_id_for(CUSTOMER, creation_key(r)),
        lambda r: refund_no_for("o1_x", creation_key(r)),
    ):
        assert named(first) == named(replay)
        assert named(first) != named(other)


def test_without_a_key_or_an_attempt_every_creation_is_new() -> None:
    assert creation_key(request()) is None
    assert order_id_for(CUSTOMER, "m_1", None) != order_id_for(CUSTOMER, "m_1", None)
    # Not one HAProxy wrote (a UUID is 36 characters): ignored, not refused.
    assert creation_key(request(attempt="x" * 65)) is None
