"""Development tokens (dev mode only)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from domain.errors import DomainError
from serve_app import auth
from serve_app.deps import services
from serve_app.openapi import answers
from serve_app.schemas import DevTokenIn
from serve_app.services import Services, as_json

router = APIRouter()


@router.post("/v1/auth/dev-token", responses=answers(404))
async def dev_token(body: DevTokenIn, app: Services = Depends(services)) -> Response:
    if not app.settings.dev_mode:
        raise DomainError("route_not_found", "not found")
    token, expires = auth.issue(
        app.settings.jwt_secret, body.role, body.sub, app.settings.jwt_ttl_s
    )
    return as_json({"token": token, "expires_at": datetime.fromtimestamp(expires, UTC).isoformat()})
