"""A real Valkey cluster on this machine: three primaries, a replica each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from storage import keys
from storage.redis import RedisClient, ScriptPipeline, Scripts, connect
from storage.server import EmbeddedCluster
from tests.conftest import running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    running = running_cluster(Path(tmp_path_factory.mktemp("cluster")))
    yield running
    running.stop()


@pytest.fixture
async def client(cluster: EmbeddedCluster) -> AsyncIterator[RedisClient]:
    connected = connect(cluster.url)
    yield connected
    await connected.aclose()


async def test_a_waited_change_is_on_a_replica_when_it_is_answered(
    cluster: EmbeddedCluster, client: RedisClient
) -> None:
    scripts = Scripts(client)
    waiting = ScriptPipeline(client, wait_replicas=1, wait_timeout_ms=2000)
    inbox = keys.inbox("merchant", "m_waited")
    answer = await waiting(scripts.append_event, [inbox], [100, 3_600_000, b"{}", "notify:"])
    assert answer == 1
    assert waiting.unreplicated == 0
    # Some replica of the cluster holds it already.
    held = []
    for node in cluster.nodes[cluster.primaries :]:
        replica = redis.Redis(port=node.port, decode_responses=True, single_connection_client=True)
        replica.execute_command("READONLY")
        try:
            held.append(replica.xlen(inbox))
        except redis.exceptions.ResponseError:  # MOVED: not this replica's slots
            held.append(0)
        replica.close()
    assert max(held) == 1


async def test_a_script_across_slots_is_refused_by_the_cluster(client: RedisClient) -> None:
    with pytest.raises((redis.exceptions.ResponseError, redis.exceptions.RedisClusterException)):
        await client.eval(
            "redis.call('SET', KEYS[1], 1) redis.call('SET', KEYS[2], 1)",
            2,
            keys.order(keys.new_order_id("m1", "a")),
            keys.inbox("customer", "c1"),
        )
