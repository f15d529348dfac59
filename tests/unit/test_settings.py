"""Outside dev mode the platform does not start on public default secrets; dev mode,
which mints tokens for anybody, listens on loopback only."""

from __future__ import annotations

import pytest

from storage.settings import Settings, UnsafeSettings

STRONG = {
    "jwt_secret": "j" * 40,
    "payment_secret": "p" * 24,
    "data_key": "a2V5LW9mLWl0cy1vd24tMzItYnl0ZXMtbG9uZy0wMDE=",
}


def test_the_defaults_are_refused_outside_dev_mode() -> None:
    assert Settings().dev_mode is False
    with pytest.raises(UnsafeSettings) as refused:
        Settings().refuse_unsafe()
    assert "O2O_JWT_SECRET" in str(refused.value)
    assert "O2O_PAYMENT_SECRET" in str(refused.value)
    assert "O2O_DATA_KEY" in str(refused.value)


@pytest.mark.parametrize(
    "weak",
    [
        {"jwt_secret": "short"},
        {"payment_secret": "short"},
        {"data_key": "c2hvcnQ="},
        {"data_key": "not base64!"},
    ],
    ids=["jwt", "provider", "data-key-short", "data-key-garbage"],
)
def test_a_short_secret_is_refused(weak: dict[str, str]) -> None:
    with pytest.raises(UnsafeSettings):
        Settings(**{**STRONG, **weak}).refuse_unsafe()


def test_strong_secrets_start_anywhere() -> None:
    Settings(**STRONG, http_host="0.0.0.0", public_url="https://o2o.example").refuse_unsafe()


def test_outside_dev_mode_the_public_url_must_be_named() -> None:
    # The provider's callback is signed into every pay link: loopback reaches nobody.
    with pytest.raises(UnsafeSettings, match="O2O_PUBLIC_URL"):
        Settings(**STRONG, http_host="0.0.0.0").refuse_unsafe()


def test_a_named_provider_replaces_the_local_sandbox() -> None:
    assert Settings().sandbox_url == "http://127.0.0.1:8100"
    named = Settings(provider_url="http://payments.internal:8100/")
    assert named.sandbox_url == "http://payments.internal:8100"


def test_dev_mode_takes_the_defaults_on_loopback_only() -> None:
    Settings(dev_mode=True).refuse_unsafe()
    for host in ("0.0.0.0", "10.0.0.5"):
        with pytest.raises(UnsafeSettings):
            Settings(dev_mode=True, http_host=host).refuse_unsafe()
    with pytest.raises(UnsafeSettings):
        Settings(dev_mode=True, sandbox_host="0.0.0.0").refuse_unsafe()


def test_a_sealed_value_opens_with_its_key_and_its_order_only() -> None:
    import base64
    import os

    from cryptography.exceptions import InvalidTag

    from storage.sealing import Sealer

    sealer = Sealer(base64.b64encode(os.urandom(32)).decode())
    sealed = sealer.seal("12 Lakeside Rd", "o1_a")
    assert sealed.startswith("sealed:v1:") and "Lakeside" not in sealed
    assert sealer.open(sealed, "o1_a") == "12 Lakeside Rd"
    with pytest.raises(InvalidTag):
        sealer.open(sealed, "o1_b")  # copied into another order
    with pytest.raises(InvalidTag):
        Sealer(base64.b64encode(os.urandom(32)).decode()).open(sealed, "o1_a")
    # Two seals of one value differ: equal addresses are not visible as equal.
    assert sealer.seal("12 Lakeside Rd", "o1_a") != sealed
