"""Outside dev mode the platform does not start on public default secrets; dev mode,
which mints tokens for anybody, listens on loopback only."""

from __future__ import annotations

import pytest

from storage.settings import Settings, UnsafeSettings

STRONG = {"jwt_secret": "j" * 40, "payment_secret": "p" * 24}


def test_the_defaults_are_refused_outside_dev_mode() -> None:
    assert Settings().dev_mode is False
    with pytest.raises(UnsafeSettings) as refused:
        Settings().refuse_unsafe()
    assert "O2O_JWT_SECRET" in str(refused.value)
    assert "O2O_PAYMENT_SECRET" in str(refused.value)


@pytest.mark.parametrize(
    "weak", [{"jwt_secret": "short"}, {"payment_secret": "short"}], ids=["jwt", "provider"]
)
def test_a_short_secret_is_refused(weak: dict[str, str]) -> None:
    with pytest.raises(UnsafeSettings):
        Settings(**{**STRONG, **weak}).refuse_unsafe()


def test_strong_secrets_start_anywhere() -> None:
    Settings(**STRONG, http_host="0.0.0.0").refuse_unsafe()


def test_dev_mode_takes_the_defaults_on_loopback_only() -> None:
    Settings(dev_mode=True).refuse_unsafe()
    for host in ("0.0.0.0", "10.0.0.5"):
        with pytest.raises(UnsafeSettings):
            Settings(dev_mode=True, http_host=host).refuse_unsafe()
    with pytest.raises(UnsafeSettings):
        Settings(dev_mode=True, sandbox_host="0.0.0.0").refuse_unsafe()
