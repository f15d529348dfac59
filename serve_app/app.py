"""The HTTP API of API.md: one FastAPI app of routers by resource, behind Ray Serve.

Reads go straight to Redis from the replica; writes go through the owning entity.
Handlers: schema in, one call, schema out; the caller comes from a dependency.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve

from serve_app import admission, errors, openapi, services
from serve_app.routes import (
    admin,
    auth,
    backoffice,
    city,
    health,
    merchants,
    orders,
    pages,
    payments,
    riders,
)
from serve_app.routes import sync as sync_routes
from storage.settings import Settings

api = FastAPI(
    title="o2o delivery platform",
    version="0.1.0",
    description="Same-city delivery: merchants, orders, payments, riders and live sync.",
)
errors.install(api)
admission.install(api)
for module in (
    health,
    auth,
    merchants,
    orders,
    backoffice,
    riders,
    payments,
    admin,
    sync_routes,
    city,
    pages,
):
    api.include_router(module.router)
openapi.install(api)


@serve.deployment(name="api")
@serve.ingress(api)
class Api:
    """The ingress deployment. Stateless apart from its Redis pool and actor handles."""

    def __init__(self, settings: Settings) -> None:
        services.install(services.Services(settings))


def build(settings: Settings, replicas: int | None = None) -> Any:
    """The Serve application, bound with the platform's settings; `replicas` scales it
    without a new version (the same settings: no replica restarts, the extra ones drain)."""
    deployment: Any = Api
    return deployment.options(
        num_replicas=replicas or settings.api_replicas,
        max_ongoing_requests=settings.api_max_ongoing_requests,
        # A stopping replica finishes what it took (idle keep-alives are closed at once,
        # WebSockets told 1012 to come back), up to this long before it is killed.
        graceful_shutdown_timeout_s=settings.api_drain_timeout_s,
        graceful_shutdown_wait_loop_s=settings.api_drain_wait_loop_s,
        ray_actor_options={"num_cpus": 0},
        logging_config={"enable_access_log": settings.access_log},
    ).bind(settings)
