"""The OpenAPI document says what the server answers, and the bounds every input has."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from serve_app.app import api
from serve_app.schemas import MAX_SAFE_INT, Cursor, OrderIn

ERROR = {"$ref": "#/components/schemas/ErrorBody"}


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    paths = api.openapi()["paths"]
    return [(m.upper(), p, op) for p, ops in paths.items() for m, op in ops.items()]


def test_every_error_status_has_the_one_error_shape() -> None:
    document = api.openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, op in operations():
        for status, response in op["responses"].items():
            if int(status) >= 400:
                content = response["content"]
                assert content == {"application/json": {"schema": ERROR}}, (method, path, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (method, path, status)


def test_operations_with_a_caller_need_a_bearer_token() -> None:
    assert api.openapi()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    public = {
        "/v1/health",
        "/v1/health/live",
        "/v1/auth/dev-token",
        "/v1/merchants/{merchant_id}/menu",
    }
    for method, path, op in operations():
        if path in public:
            assert "security" not in op and "401" not in op["responses"], (method, path)
        elif path == "/v1/payments/callback":
            # Signed by the provider instead: a bad signature is its 401.
            assert "security" not in op and "401" in op["responses"]
        else:
            assert op["security"] == [{"bearer": []}], (method, path)
            assert "401" in op["responses"], (method, path)


def test_changes_take_an_idempotency_key() -> None:
    for method, path, op in operations():
        names = {p["name"] for p in op.get("parameters", [])}
        replayable = method in ("POST", "PUT", "PATCH", "DELETE") and path not in (
            "/v1/auth/dev-token",
            "/v1/payments/callback",
            "/v1/admin/reconciliation",
            # A price computed on demand: nothing to replay.
            "/v1/errands/quote",
        )
        assert ("Idempotency-Key" in names) == replayable, (method, path)


def test_the_provider_is_answered_in_plain_text() -> None:
    callback = api.openapi()["paths"]["/v1/payments/callback"]["post"]
    assert list(callback["responses"]["200"]["content"]) == ["text/plain"]
    assert "requestBody" in callback


@pytest.mark.parametrize(
    "cursor", ["", "0", "0-0", "1700000000000-3", "18446744073709551615-18446744073709551614"]
)
def test_a_cursor_is_a_stream_id_or_empty(cursor: str) -> None:
    assert TypeAdapter(Cursor).validate_python(cursor) == cursor


@pytest.mark.parametrize(
    "cursor",
    [
        "99999999999999999999999-0",
        "18446744073709551616",
        "18446744073709551615-18446744073709551615",
        "\uff11\uff12\uff13-0",
        "1-",
        "-1",
        "yesterday",
    ],
)
def test_other_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Cursor).validate_python(cursor)


def test_amounts_stay_within_what_every_client_reads_exactly() -> None:
    order = {
        "merchant_id": "m_1",
        "items": [{"item_id": "noodles", "qty": 1}],
        "delivery": {"lat": 30.0, "lng": 120.0},
    }
    OrderIn.model_validate({**order, "expected_total_fen": MAX_SAFE_INT})
    with pytest.raises(ValidationError):
        OrderIn.model_validate({**order, "expected_total_fen": MAX_SAFE_INT + 1})
