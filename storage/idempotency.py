"""The first response to each Idempotency-Key, so that a replay returns it again.

A first response may carry personal data (a placed order's address and phone, an
errand's contacts and proof codes), so its body is sealed at rest like the order it
shows (`storage/sealing.py`), bound to the caller and the key.
"""

from __future__ import annotations

from typing import Any

import orjson

from storage import keys
from storage.redis import RedisClient
from storage.sealing import Sealer
from storage.settings import DEV_DATA_KEY


class IdempotencyStore:
    def __init__(self, client: RedisClient, ttl_s: int, sealer: Sealer | None = None) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.sealer = sealer or Sealer(DEV_DATA_KEY)

    async def first(self, scope: str, key: str) -> dict[str, Any] | None:
        """The response recorded for this key, if any: `{digest, status, body}`."""
        raw = await self.client.get(keys.idempotency(scope, key))
        if raw is None:
            return None
        record: dict[str, Any] = orjson.loads(raw)
        record["body"] = self.sealer.open(record["body"], f"{scope}\n{key}")
        return record

    async def remember(self, scope: str, key: str, record: dict[str, Any]) -> None:
        """Keep the first response only: a concurrent twin that finished first wins."""
        sealed = {**record, "body": self.sealer.seal(record["body"], f"{scope}\n{key}")}
        await self.client.set(
            keys.idempotency(scope, key), orjson.dumps(sealed), ex=self.ttl_s, nx=True
        )
