"""The first response to each Idempotency-Key, so that a replay returns it again."""

from __future__ import annotations

from typing import Any

import orjson

from storage import keys
from storage.redis import RedisClient


class IdempotencyStore:
    def __init__(self, client: RedisClient, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s

    async def first(self, scope: str, key: str) -> dict[str, Any] | None:
        """The response recorded for this key, if any: `{digest, status, body}`."""
        raw = await self.client.get(keys.idempotency(scope, key))
        return orjson.loads(raw) if raw is not None else None

    async def remember(self, scope: str, key: str, record: dict[str, Any]) -> None:
        """Keep the first response only: a concurrent twin that finished first wins."""
        await self.client.set(
            keys.idempotency(scope, key), orjson.dumps(record), ex=self.ttl_s, nx=True
        )
