"""When the payment host asks the provider again about an order nobody has paid."""

from __future__ import annotations

import pytest

from actors.payment_shard import next_check_in

POLL_S = 5.0
TIMEOUT_S = 900.0


def checks_until_closed(poll_s: float = POLL_S, timeout_s: float = TIMEOUT_S) -> list[float]:
    """The ages at which an order never paid is checked, the last one closing it."""
    ages = [poll_s]  # the order joins the queue due `poll_s` after it is placed
    while ages[-1] <= timeout_s:
        ages.append(ages[-1] + next_check_in(ages[-1], poll_s, timeout_s))
    return ages


def test_an_abandoned_order_is_asked_about_ten_times_in_fifteen_minutes() -> None:
    assert checks_until_closed() == [5, 10, 20, 40, 80, 160, 320, 640, 900, 905]


def test_the_check_that_closes_an_order_comes_at_most_one_poll_after_the_deadline() -> None:
    for timeout_s in (20.0, 61.0, 300.0, 900.0, 1234.5):
        last = checks_until_closed(timeout_s=timeout_s)[-1]
        assert timeout_s < last <= timeout_s + POLL_S


@pytest.mark.parametrize("age_s", [0.0, 1.0, 4.9, 30.0, 450.0, 899.0, 900.0])
def test_checks_are_never_closer_than_the_poll_interval(age_s: float) -> None:
    assert next_check_in(age_s, POLL_S, TIMEOUT_S) >= POLL_S


def test_a_lost_notification_is_found_within_about_the_order_age() -> None:
    # Paid at 100 s, its notification lost: the next check (160 s) finds it.
    ages = checks_until_closed()
    found = next(a for a in ages if a >= 100)
    assert found - 100 <= 100
