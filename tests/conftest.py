"""Session-wide servers: one real Redis-protocol server for every test that needs one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.server import EmbeddedCluster, EmbeddedRedis, free_port
from storage.settings import Settings


def running_server(data_dir: Path) -> EmbeddedRedis:
    settings = Settings()
    server = EmbeddedRedis(
        data_dir, free_port(), settings.appendfsync, settings.redis_aof_rewrite_min_mb
    )
    server.start()
    return server


def running_cluster(data_dir: Path) -> EmbeddedCluster:
    """Three primaries with a replica each, on the settings' durability defaults."""
    settings = Settings()
    cluster = EmbeddedCluster(data_dir, settings.appendfsync, settings.redis_aof_rewrite_min_mb)
    cluster.start()
    return cluster


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = running_server(Path(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()
