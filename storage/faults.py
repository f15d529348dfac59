"""Faults a test arms so that a host crashes at a chosen moment (only with `fault_injection`).

Each armed fault fires once: the host that takes it deletes it in the same command.
A slow merchant (`slow_merchant_fault(id)`, armed with a number of seconds) stays
armed until the test deletes it.
"""

from __future__ import annotations

import asyncio

from storage import keys
from storage.redis import RedisClient


class FaultStore:
    def __init__(self, client: RedisClient, enabled: bool) -> None:
        self.client = client
        self.enabled = enabled

    async def take(self, name: str) -> bool:
        """Whether a fault of this name was armed (and now is not any more)."""
        if not self.enabled:
            return False
        return await self.client.getdel(keys.fault(name)) is not None

    async def slow_merchant(self, merchant_id: str) -> None:
        """Hold a placement to this merchant for as long as a test armed, to prove that
        one slow merchant does not slow the others."""
        if not self.enabled:
            return
        delay = await self.client.get(keys.fault(slow_merchant_fault(merchant_id)))
        if delay:
            await asyncio.sleep(float(delay))


def slow_merchant_fault(merchant_id: str) -> str:
    """The fault's name: armed as `SET fault:slow_merchant:<id> <seconds>`."""
    return f"slow_merchant:{merchant_id}"
