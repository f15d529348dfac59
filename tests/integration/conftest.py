"""The integration tests' own Redis-protocol server.

The server runs as a one-node cluster (one database only), and the end-to-end
platform of the same session keeps running on the session's server until the end:
these tests flush their database freely, so they get a server of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.server import EmbeddedRedis
from tests.conftest import running_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = running_server(Path(tmp_path_factory.mktemp("redis-integration")))
    yield server
    server.stop()
