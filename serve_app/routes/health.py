"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from serve_app import errors
from serve_app.deps import services
from serve_app.services import Services, as_json

router = APIRouter()


@router.get("/v1/health/live")
async def live() -> Response:
    return as_json({"status": "ok"})


@router.get("/v1/health")
async def health(app: Services = Depends(services)) -> Response:
    down: dict[str, str] = {}
    try:
        await asyncio.wait_for(app.redis_answers(), 2)
    except Exception as err:
        down["redis"] = repr(err)
    try:
        hosts = await app.directory.all_hosts()
        await asyncio.wait_for(asyncio.gather(*(h.ping.remote() for h in hosts)), 5)
    except Exception as err:
        down["actors"] = repr(err)
    if down:
        return errors.error_response("service_unavailable", "some parts are down", 503, down)
    return as_json({"status": "ok"})
