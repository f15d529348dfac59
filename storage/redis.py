"""Connections and the Lua scripts, loaded once per process."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

# redis-py types every reply as `bytes | str` whatever `decode_responses` says; our
# clients always decode to str, so the client is typed loosely rather than cast at
# every call.
RedisClient: TypeAlias = Any


def connect(url: str, max_connections: int = 64) -> RedisClient:
    # A bounded pool: a burst queues for a connection instead of opening thousands.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=10, decode_responses=True
    )
    return aioredis.Redis(connection_pool=pool)


@cache
def _source(name: str) -> str:
    return resources.files("storage").joinpath("lua", f"{name}.lua").read_text()


class Scripts:
    """The platform's Lua scripts, registered on one client."""

    def __init__(self, client: RedisClient) -> None:
        self.apply_order: AsyncScript = client.register_script(_source("apply_order"))
        self.set_menu_item: AsyncScript = client.register_script(_source("set_menu_item"))
        self.claim_coupon: AsyncScript = client.register_script(_source("claim_coupon"))
        self.release_coupon: AsyncScript = client.register_script(_source("release_coupon"))
        self.append_event: AsyncScript = client.register_script(_source("append_event"))
        self.post_transaction: AsyncScript = client.register_script(_source("post_transaction"))
