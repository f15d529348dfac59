"""The replica's single Pub/Sub reader against the real server."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from storage.inboxes import RESYNC, Hub, Listener
from storage.server import EmbeddedRedis


async def test_many_terminals_joining_at_once_all_hear_their_events(
    redis_server: EmbeddedRedis,
) -> None:
    hub = Hub(redis_server.url)
    listeners = [Listener() for _ in range(200)]
    await asyncio.gather(*(hub.join(li, f"notify:t{i}") for i, li in enumerate(listeners)))
    publisher = aioredis.Redis.from_url(redis_server.url)
    channels = [f"notify:t{i}" for i in range(200)]
    assert sum(n for _, n in await publisher.pubsub_numsub(*channels)) == 200
    for i in range(200):
        await publisher.publish(f"notify:t{i}", f"1-{i} {{}}")
    for _ in range(100):
        if all(li.queue.qsize() == 1 for li in listeners):
            break
        await asyncio.sleep(0.05)
    assert [li.queue.get_nowait() for li in listeners] == [(f"1-{i}", "{}") for i in range(200)]

    await asyncio.gather(*(hub.leave(li) for li in listeners))
    # UNSUBSCRIBE is sent without waiting for its answer: give the server a moment.
    subscribed = -1
    for _ in range(100):
        subscribed = sum(n for _, n in await publisher.pubsub_numsub(*channels))
        if subscribed == 0:
            break
        await asyncio.sleep(0.05)
    assert subscribed == 0
    assert hub.connections == 0
    await publisher.aclose()


async def test_a_slow_listener_is_told_to_reread_instead_of_growing() -> None:
    listener = Listener()
    for i in range(listener.queue.maxsize + 5):
        listener.offer((f"1-{i}", "{}"))
    # The overflow dropped the backlog for one RESYNC; later announcements queue behind it.
    assert listener.queue.qsize() == 5
    assert listener.queue.get_nowait() == (RESYNC, "")
