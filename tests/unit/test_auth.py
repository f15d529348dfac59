"""Bearer tokens: checked once per token, but an expired one is refused even when known."""

from __future__ import annotations

import pytest

from domain.errors import DomainError
from serve_app import auth

SECRET = "a-secret-long-enough-for-hs256-0123456789"


def test_a_token_names_its_caller_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token, expires = auth.issue(SECRET, "rider", "r_1", ttl_s=60)
    assert auth.decode(SECRET, token) == auth.Caller(role="rider", sub="r_1")
    assert auth.decode(SECRET, token) == auth.Caller(role="rider", sub="r_1")  # kept
    monkeypatch.setattr(auth.time, "time", lambda: expires + 1)
    with pytest.raises(DomainError) as refused:
        auth.decode(SECRET, token)
    assert refused.value.code == "unauthorized"


@pytest.mark.parametrize("mangle", ["wrong secret", "changed payload", "no token"])
def test_a_forged_or_missing_token_is_refused(mangle: str) -> None:
    token, _ = auth.issue(SECRET, "customer", "c_1", ttl_s=60)
    header, payload, signature = token.split(".")
    if mangle == "wrong secret":
        token, _ = auth.issue("another-secret-long-enough-0123456789", "admin", "c_1", 60)
    elif mangle == "changed payload":
        token = ".".join(
            [header, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), signature]
        )
    else:
        token = ""
    for _ in range(2):  # a refusal is not remembered as a success
        with pytest.raises(DomainError) as refused:
            auth.decode(SECRET, token)
        assert refused.value.code == "unauthorized"


def test_an_expired_token_is_refused_at_first_sight() -> None:
    token, _ = auth.issue(SECRET, "customer", "c_2", ttl_s=-5)
    with pytest.raises(DomainError):
        auth.decode(SECRET, token)
