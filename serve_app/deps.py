"""FastAPI dependencies: the replica's services, and the caller, checked before the body.

A route names the party it serves (`Depends(customer)`), so a missing or bad token is
refused before anything of the request is looked at.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from serve_app import auth
from serve_app.auth import Caller
from serve_app.services import Services, current

# Every dependency is a coroutine: FastAPI runs a plain function in a thread pool, a
# hop between threads on every request.


async def services() -> Services:
    """The replica's services (for HTTP requests and WebSockets alike)."""
    return current()


async def caller(request: Request) -> Caller:
    # No sub-dependency: each one FastAPI solves costs the replica on every request.
    secret = current().settings.jwt_secret
    return auth.decode(secret, auth.bearer(request.headers.get("authorization")))


# Each dependency that names the caller, with the roles it lets in: the OpenAPI
# document (`serve_app/openapi.py`) reads its bearer requirement and its 403 from here.
ROLES_OF: dict[Callable[[Request], Awaitable[Caller]], tuple[str, ...]] = {caller: auth.ROLES}


def _role(*roles: str) -> Callable[[Request], Awaitable[Caller]]:
    async def check(request: Request) -> Caller:
        who = await caller(request)
        who.require(*roles)
        return who

    ROLES_OF[check] = roles
    return check


customer = _role("customer")
merchant = _role("merchant")
rider = _role("rider")
admin = _role("admin")
customer_or_admin = _role("customer", "admin")
merchant_or_admin = _role("merchant", "admin")
