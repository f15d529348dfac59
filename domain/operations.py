"""Rules operations watch by: how many riders a busy zone lacks."""

from __future__ import annotations

import math

# A rider completes about one order per this many minutes at lunch.
MINUTES_PER_DELIVERY = 20


def riders_needed(orders_in_window: int, window_minutes: int, idle: int) -> int:
    """Riders a zone lacks to serve the orders of the window at lunch pace."""
    demand = math.ceil(orders_in_window * MINUTES_PER_DELIVERY / max(window_minutes, 1))
    return max(0, demand - idle)
