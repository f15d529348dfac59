"""Faults a test arms so that a host crashes at a chosen moment (only with `fault_injection`).

Each armed fault fires once: the host that takes it deletes it in the same command.
"""

from __future__ import annotations

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
