"""The OpenAPI document as the server answers, completed in one place.

FastAPI builds the document from the routes: their parameters, their bodies, and the
statuses a route names itself because its entity may answer them
(`responses=answers(404, 409)`). What routes share is added here, from what each
route depends on, so that the document cannot forget a route:

- the one error shape (`errors.ErrorBody`) for every error status, in place of
  FastAPI's `HTTPValidationError`, which this server never sends;
- 400 `malformed_json` for an operation with a JSON body, 422 `invalid_request` for
  one with anything to validate;
- the bearer scheme, 401 and `security` for an operation whose caller is a dependency
  (`deps.ROLES_OF`), and 403 when that dependency lets only some roles in;
- 429 `rate_limited` where the admission middleware limits (`admission.route_class`),
  503 with `Retry-After` wherever the route reaches the platform or may be shed;
- the `Idempotency-Key` header on every change a client may retry.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.models import HTTPBearer
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic.json_schema import models_json_schema

from serve_app import deps
from serve_app.admission import route_class
from serve_app.auth import ROLES
from serve_app.errors import ErrorBody

BEARER = "bearer"
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}
DESCRIPTIONS = {
    400: "The body is not JSON (`malformed_json`), or the amounts disagree.",
    401: "No token, a bad or expired one (`unauthorized`), or a bad signature; checked first.",
    403: "The caller's role may not do this (`forbidden`).",
    404: "No such object, or another party's (`*_not_found`).",
    409: (
        "In conflict with the current state (`out_of_stock`, `invalid_transition`, "
        "`merchant_closed` with `details.next_opening_at`, ...)."
    ),
    422: "Invalid input (`invalid_request`, with `details.errors`), or refused by a rule.",
    429: "Too many requests (`rate_limited`); come back after `Retry-After`.",
    503: "The platform, the merchant or the provider is briefly unavailable.",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
    }
}
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Changes nothing a retry could repeat: a token, the provider's own notification
# (deduplicated by its payment), a report or a price computed on demand.
NOT_REPLAYED = frozenset(
    {
        ("POST", "/v1/auth/dev-token"),
        ("POST", "/v1/payments/callback"),
        ("POST", "/v1/admin/reconciliation"),
        ("POST", "/v1/errands/quote"),
    }
)
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "A replay with the same key and body returns the first successful response "
        "(`Idempotent-Replayed: true`); the same key with another body is 422 "
        "`idempotency_key_reused`."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """What a route answers beyond what every route shares, for its `responses=`."""
    return {
        status: {"model": ErrorBody, "description": DESCRIPTIONS[status]} for status in statuses
    }


def install(app: FastAPI) -> None:
    """Serve the completed document at `/openapi.json` (and to `/docs`)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            routes = [
                route
                for route in iter_route_contexts(app.routes)
                if isinstance(route.original_route, APIRoute) and route.include_in_schema
            ]
            app.openapi_schema = complete(schema, routes)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def complete(schema: dict[str, Any], routes: list[RouteContext]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _, definitions = models_json_schema(
        [(ErrorBody, "serialization")], ref_template="#/components/schemas/{model}"
    )
    schemas.update(definitions["$defs"])
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = {
        BEARER: HTTPBearer(bearerFormat="JWT").model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    }
    for route in routes:
        for method in sorted(route.methods or ()):
            operation = schema["paths"][route.path_format][method.lower()]
            _complete_operation(operation, route, method)
    return schema


def _complete_operation(operation: dict[str, Any], route: RouteContext, method: str) -> None:
    dependant = route.dependant
    calls = [d.call for d in dependant.dependencies]
    roles = [deps.ROLES_OF[call] for call in calls if call in deps.ROLES_OF]
    if method in MUTATING and (method, route.path_format) not in NOT_REPLAYED:
        operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
    shared: set[int] = set()
    if "requestBody" in operation:
        shared.add(400)
    if any(
        (
            dependant.path_params,
            dependant.query_params,
            dependant.header_params,
            dependant.body_params,
            IDEMPOTENCY_KEY in operation.get("parameters", []),
        )
    ):
        shared.add(422)
    if roles:
        operation["security"] = [{BEARER: []}]
        shared.add(401)
        if any(set(ROLES) - set(allowed) for allowed in roles):
            shared.add(403)
    limited = route_class(method, route.path_format or "") is not None
    if limited:
        shared.add(429)
    if limited or deps.services in calls:
        shared.add(503)
    responses = operation.setdefault("responses", {})
    for status in shared:
        responses.setdefault(str(status), {})
    for status, response in responses.items():
        if int(status) < 400:
            continue
        response["description"] = DESCRIPTIONS.get(int(status), response.get("description", ""))
        response["content"] = {"application/json": {"schema": ERROR_SCHEMA}}
        if int(status) in (429, 503):
            response["headers"] = RETRY_AFTER
    operation["responses"] = dict(sorted(responses.items()))
