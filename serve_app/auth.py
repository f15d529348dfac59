"""Bearer tokens: HS256 JWTs with `sub` and `role`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import jwt

from domain.errors import DomainError, forbidden

ROLES: tuple[str, ...] = ("customer", "merchant", "rider", "admin")


@dataclass(frozen=True)
class Caller:
    role: str
    sub: str

    @property
    def who(self) -> tuple[str, str]:
        """`(role, sub)`, as the domain's authorisation takes it."""
        return self.role, self.sub

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise forbidden(f"this needs the role {' or '.join(roles)}")


def issue(secret: str, role: str, sub: str, ttl_s: int) -> tuple[str, int]:
    expires = int(time.time()) + ttl_s
    token = jwt.encode({"sub": sub, "role": role, "exp": expires}, secret, algorithm="HS256")
    return token, expires


def decode(secret: str, token: str | None) -> Caller:
    if not token:
        raise DomainError("unauthorized", "a bearer token is required")
    caller, expires = _verified(secret, token)
    if expires <= time.time():
        raise DomainError("unauthorized", "invalid token: Signature has expired")
    return caller


@lru_cache(maxsize=65_536)
def _verified(secret: str, token: str) -> tuple[Caller, float]:
    """The caller a token names and when it expires; a terminal sends the same token with
    every request, so its signature is checked once (refusals raise and are not kept)."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
        )
    except jwt.PyJWTError as err:
        raise DomainError("unauthorized", f"invalid token: {err}") from err
    role = claims.get("role")
    if role not in ROLES or not isinstance(claims["sub"], str) or not claims["sub"]:
        raise DomainError("unauthorized", "the token has no valid role or subject")
    return Caller(role=role, sub=claims["sub"]), float(claims["exp"])


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None
