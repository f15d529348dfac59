"""The HTTP API of API.md: one FastAPI app of routers by resource, behind Ray Serve.

Reads go straight to Redis from the replica; writes go through the owning entity.
Handlers: schema in, one call, schema out; the caller comes from a dependency.

No `from __future__ import annotations` here: Serve reads `app_builder`'s annotation
as a class to turn a config's `args` into `DeployArgs`.
"""

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors import telemetry
from actors.registry import ensure_hosts
from serve_app import admission, errors, openapi, services
from serve_app.routes import (
    addresses,
    admin,
    auth,
    backoffice,
    city,
    errands,
    health,
    merchants,
    orders,
    pages,
    payments,
    promotions,
    reviews,
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
    addresses,
    errands,
    backoffice,
    riders,
    payments,
    admin,
    reviews,
    promotions,
    sync_routes,
    city,
    pages,
):
    api.include_router(module.router)
openapi.install(api)


@serve.deployment(name="api")
@serve.ingress(api)
class Api:
    """The ingress deployment. Stateless apart from its Redis pool and actor handles.

    Each replica, as it starts, makes sure every host actor runs with this deployment's
    settings (`actors/registry.py`), so the app needs no launcher on a cluster."""

    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        services.install(services.Services(settings))
        await ensure_hosts(settings, services.current().redis)


class DeployArgs(BaseModel):
    """What a Serve config's `args` may set (`cluster/serve_config.yaml`); every other
    setting, the secrets first, comes from the nodes' `O2O_` environment."""

    model_config = {"extra": "forbid"}

    redis_url: str = Field("", description="redis://host:port/0 or redis+cluster://h:p,...")
    provider_url: str = Field("", description="The payment provider's base URL.")
    public_url: str = Field("", description="The platform's address as callers reach it.")
    merchant_hosts: int = Field(0, ge=0, description="0: keep the layout, or size it")
    rider_zone_hosts: int = Field(0, ge=0)
    payment_hosts: int = Field(0, ge=0)
    redis_wait_replicas: int | None = Field(None, ge=0, le=5)


def app_builder(args: DeployArgs) -> Application:
    """The application as `serve deploy` / `serve run` / KubeRay build it from a config:
    the environment's settings with the config's `args` over them."""
    given = {k: v for k, v in args.model_dump().items() if v not in ("", None)}
    settings = Settings(**given)
    settings.refuse_unsafe()
    # The config's `deployments` section sizes the replicas (autoscaling).
    return build(settings, sized_by_config=True)


def build(settings: Settings, replicas: int | None = None, sized_by_config: bool = False) -> Any:
    """The Serve application, bound with the platform's settings; `replicas` sizes it
    (a `serve.run` with no version is a new code version to Serve: every replica is
    replaced, each draining its requests first). `sized_by_config`: a Serve config's
    `deployments` section sizes it instead (autoscaling)."""
    deployment: Any = Api
    sizing = {} if sized_by_config else {"num_replicas": replicas or settings.api_replicas}
    return deployment.options(
        **sizing,
        max_ongoing_requests=settings.api_max_ongoing_requests,
        # A stopping replica finishes what it took (idle keep-alives are closed at once,
        # WebSockets told 1012 to come back), up to this long before it is killed.
        graceful_shutdown_timeout_s=settings.api_drain_timeout_s,
        graceful_shutdown_wait_loop_s=settings.api_drain_wait_loop_s,
        ray_actor_options={"num_cpus": 0},
        logging_config=telemetry.serve_logging_config(settings.access_log),
    ).bind(settings)
