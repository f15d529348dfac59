from __future__ import annotations

import pytest
import ray


def test_starting_ray_in_a_unit_test_fails() -> None:
    with pytest.raises(RuntimeError, match="unit tests must not start Ray"):
        ray.init()


def test_the_guard_refuses_any_arguments() -> None:
    with pytest.raises(RuntimeError, match="unit tests must not start Ray"):
        ray.init(address="auto", namespace="o2o", num_cpus=0)


def test_no_ray_is_running() -> None:
    assert not ray.is_initialized()
