"""Unit tests run without Ray or Redis: a test that reaches for a cluster is a bug."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
import ray


def _refuse_ray(*args: Any, **kwargs: Any) -> NoReturn:
    raise RuntimeError("unit tests must not start Ray")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "init", _refuse_ray)
