"""What every entity host shares: settings, one Redis client, one lock per entity."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from cluster.settings import Settings
from domain.errors import DomainError
from storage.orders import OrderStore
from storage.redis import Scripts, connect

log = logging.getLogger(__name__)


class EntityHost:
    """Hosts many entities of one kind in one async process.

    Each entity has its own `asyncio.Lock`, its serial mailbox: messages to one entity
    run one at a time while other entities on the same host proceed. Nothing that
    awaits another entity's host is done while holding a lock that the other side
    could be waiting for.
    """

    def __init__(self, settings: Settings, index: int = 0) -> None:
        self.settings = settings
        self.index = index
        self.redis = connect(settings.effective_redis_url)
        self.scripts = Scripts(self.redis)
        self.orders = OrderStore(
            self.redis, self.scripts, settings.inbox_maxlen, settings.inbox_retention_s
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[Any]] = set()

    def lock(self, entity_id: str) -> asyncio.Lock:
        found = self._locks.get(entity_id)
        if found is None:
            found = self._locks[entity_id] = asyncio.Lock()
        return found

    def spawn(self, work: Awaitable[Any], what: str) -> None:
        """Run follow-up work after the reply; failures are logged, never lost silently."""

        async def guarded() -> None:
            try:
                result = await work
                if isinstance(result, DomainError):
                    log.warning("%s refused: %s", what, result)
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def ping(self) -> str:
        await self.redis.ping()
        return "ok"
