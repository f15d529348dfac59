"""Domain error codes to HTTP statuses, and the one error shape of API.md."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from ray.exceptions import ActorUnavailableError, RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import DomainError
from serve_app import auth
from serve_app.services import current
from storage.redis import UNAVAILABLE

log = logging.getLogger(__name__)

STATUS_BY_CODE = {
    "invalid_request": 422,
    "malformed_json": 400,
    "unauthorized": 401,
    "bad_signature": 401,
    "forbidden": 403,
    "outside_delivery_range": 422,
    "idempotency_key_reused": 422,
    "location_required": 422,
    # An errand's pickup or delivery without its code (`domain/errands.py`).
    "wrong_code": 422,
    "merchant_unavailable": 503,
    # Outside its opening hours; `details.next_opening_at` says when it opens.
    "merchant_closed": 409,
    "payment_unavailable": 503,
    "service_unavailable": 503,
    "rate_limited": 429,
    "amount_mismatch": 400,
    "invalid_split_plan": 422,
    "invalid_date": 422,
}
NOT_FOUND_SUFFIX = "_not_found"
RETRY_AFTER_S = "2"


def status_of(code: str) -> int:
    if code in STATUS_BY_CODE:
        return STATUS_BY_CODE[code]
    if code.endswith(NOT_FOUND_SUFFIX):
        return 404
    return 409


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable: `out_of_stock`, `order_not_found`")
    message: str = Field(description="for people")
    details: dict[str, Any] = Field(description="what the refusal concerns; may be empty")


class ErrorBody(BaseModel):
    """The one error shape of API.md, whatever the status."""

    error: ErrorDetail


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    try:
        return orjson.dumps(body)
    except TypeError:
        # Details echo what the caller sent (an integer past 64 bits in a split plan):
        # the refusal still goes out, without them.
        body["error"]["details"] = {}
        return orjson.dumps(body)


def error_response(
    code: str, message: str, status: int, details: dict[str, Any] | None = None
) -> Response:
    headers = {"Retry-After": RETRY_AFTER_S} if status in (429, 503) else None
    return Response(
        error_body(code, message, details), status, headers=headers, media_type="application/json"
    )


def domain_error_response(err: DomainError) -> Response:
    return error_response(err.code, err.message, status_of(err.code), err.details)


def problems_of(found: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without the input they refused (it may be huge, or a secret)."""
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type")}
        for e in found
    ]


def summary_of(problems: list[dict[str, Any]]) -> str:
    """The first problems in one line, so that the message alone says what to fix."""
    said = "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems[:3])
    return said or "the request is invalid"


# The one route that takes a JSON body from anybody: it is how a dev-mode caller gets
# a token. (The provider's callback is signed, and its body is read as bytes.)
OPEN_WITH_A_BODY = frozenset({"/v1/auth/dev-token"})


def unauthenticated(request: Request) -> DomainError | None:
    """The 401 a route's caller check would give this request, if any."""
    if request.url.path in OPEN_WITH_A_BODY:
        return None
    try:
        auth.decode(
            current().settings.jwt_secret, auth.bearer(request.headers.get("authorization"))
        )
    except DomainError as err:
        return err
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def on_domain_error(request: Request, err: DomainError) -> Response:
        return domain_error_response(err)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, err: RequestValidationError) -> Response:
        problems = problems_of(err.errors())
        if any(p["type"] == "json_invalid" for p in problems):
            # FastAPI parses a JSON body before it solves the route's dependencies, so
            # the caller's check runs here first: no token is 401 whatever the body.
            refused = unauthenticated(request)
            if refused is not None:
                return domain_error_response(refused)
            return error_response("malformed_json", "the body is not valid JSON", 400)
        return error_response("invalid_request", summary_of(problems), 422, {"errors": problems})

    @app.exception_handler(RayActorError)
    @app.exception_handler(ActorUnavailableError)
    async def on_actor_down(request: Request, err: Exception) -> Response:
        # A host is restarting; the entity reloads from Redis on the next message.
        return error_response("service_unavailable", "the entity's host is restarting", 503)

    async def on_store_down(request: Request, err: Exception) -> Response:
        # Redis is down or replaying its log: the request changed nothing that a retry
        # with the same Idempotency-Key would not find (API.md: a 503 may hide a commit).
        log.warning("%s %s: Redis unavailable (%r)", request.method, request.url.path, err)
        return error_response("service_unavailable", "the platform's store is unavailable", 503)

    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, on_store_down)

    @app.exception_handler(Exception)
    async def on_anything_else(request: Request, err: Exception) -> Response:
        # Still a 5xx, but in the one error shape and logged with what broke.
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response("internal_error", "the platform failed to answer", 500)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, err: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(code, str(err.detail), err.status_code)
