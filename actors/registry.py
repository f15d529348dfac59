"""The host actors as Ray creates them: where they run, how many, and with which settings.

The application itself calls `ensure_hosts` as each API replica starts
(`serve_app/app.py`), so whatever deploys the app (`o2o up`, `serve deploy`, KubeRay)
gets its hosts with the settings of that deployment, and no launcher is needed on a
cluster. `add_host` and `dedicate_host` change the layout at run time (`o2o hosts`).

Hosts run on the nodes that offer the `o2o_hosts` resource (`ray start --resources
'{"o2o_hosts": 1}'`), spread over them; a host asks for a sliver of it, so a node that
survives its neighbour takes the neighbour's hosts too. Without any such node (a
cluster started without it) they go wherever Ray puts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from actors.directory import (
    KINDS,
    NAMESPACE,
    configured_hosts,
    host_name,
    settings_digest,
    shard_for,
)
from actors.merchant import MerchantHost
from actors.payment_shard import PaymentShardHost
from actors.rider_zone import RiderZoneHost
from storage import keys
from storage.layout import Layout, LayoutStore
from storage.redis import RedisClient, connect
from storage.settings import Settings

log = logging.getLogger(__name__)

HOSTS = {"merchant": MerchantHost, "rider_zone": RiderZoneHost, "payment": PaymentShardHost}
HOST_RESOURCE = "o2o_hosts"
# Each host's claim on its node's `o2o_hosts`: small enough that one node can carry
# every host of the platform when the others are gone.
HOST_RESOURCE_SHARE = 0.001
# How long a deployment waits for a replaced host's name to be free, and for the one
# process deploying hosts at a time.
REPLACE_WAIT_S = 60.0
DEPLOY_LOCK_S = 300.0


def host_nodes() -> list[dict[str, Any]]:
    """The live nodes that offer to carry hosts (every live node if none does)."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    offering = [n for n in alive if n.get("Resources", {}).get(HOST_RESOURCE)]
    return offering or alive


def cluster_sized() -> int:
    """Hosts of each kind when the deployment names no count: one per two CPUs of the
    nodes that carry hosts. On a small machine each extra host process costs more in
    switching and in smaller batches than it adds (README, Performance)."""
    cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in host_nodes())
    return max(1, int(cpus) // 2)


def _options(kind: str, index: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": host_name(kind, index),
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        # Host methods are not all safe to run twice; callers retry with their own keys.
        "max_task_retries": 0,
        # Hosts wait on Redis and on each other, they do not compute: no CPU reservation.
        "num_cpus": 0,
        "max_concurrency": 10_000,
        # Every order makes several actor calls; recording each in the GCS costs CPU on
        # the hot path and fills the GCS's memory up to its cap. Serve does the same
        # for its replicas.
        "enable_task_events": False,
        "scheduling_strategy": "SPREAD",
    }
    if any(n.get("Resources", {}).get(HOST_RESOURCE) for n in ray.nodes() if n.get("Alive")):
        options["resources"] = {HOST_RESOURCE: HOST_RESOURCE_SHARE}
    return options


def _create(kind: str, index: int, settings: Settings) -> ActorHandle:
    remote_class: Any = ray.remote(HOSTS[kind])
    return remote_class.options(**_options(kind, index)).remote(settings, index)


def _existing(kind: str, index: int) -> ActorHandle | None:
    try:
        return ray.get_actor(host_name(kind, index), namespace=NAMESPACE)
    except ValueError:
        return None


async def _ensure(kind: str, index: int, settings: Settings) -> str:
    """The host with these settings, created or replaced; returns what was done."""
    wanted = settings_digest(settings)
    existing = await asyncio.to_thread(_existing, kind, index)
    if existing is not None:
        try:
            if await existing.deployed_with.remote() == wanted:
                return "kept"
        except RayActorError:
            pass
        # New settings: the host is stopped like a crash (everything it is lives in
        # Redis) and a new one starts with them, one host at a time.
        ray.kill(existing, no_restart=True)
        deadline = time.monotonic() + REPLACE_WAIT_S
        while await asyncio.to_thread(_existing, kind, index) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host_name(kind, index)} did not stop")
            await asyncio.sleep(0.1)
    handle = _create(kind, index, settings)
    await handle.ping.remote()
    return "replaced" if existing is not None else "created"


async def _retire(kind: str, layout: Layout, store: LayoutStore) -> None:
    """Stop the hosts beyond the count that have handed over (they own nothing now)."""
    marks = await store.handed_over(kind)
    for index in range(layout.count, layout.previous):
        if marks.get(index, -1) >= layout.epoch:
            handle = await asyncio.to_thread(_existing, kind, index)
            if handle is not None:
                ray.kill(handle, no_restart=True)


@asynccontextmanager
async def deploying(
    settings: Settings, client: RedisClient | None = None
) -> AsyncIterator[LayoutStore]:
    """The host layout's store, held under the deploy lock: one process changes the hosts
    at a time (its own client, closed after, unless one is given)."""
    own = client is None
    client = client if client is not None else connect(settings.effective_redis_url, 4)
    try:
        async with client.lock(
            keys.host_deploy_lock(), timeout=DEPLOY_LOCK_S, blocking_timeout=DEPLOY_LOCK_S
        ):
            yield LayoutStore(client)
    finally:
        if own:
            await client.aclose()


async def ensure_hosts(settings: Settings, client: RedisClient | None = None) -> dict[str, Layout]:
    """Every host of the deployment, with its settings, under the layout it names.

    A kind whose count the settings leave at 0 keeps the layout it has (or, the first
    time, is sized from the cluster); a count named changes the layout, and the hosts
    hand the moved shards over. One process does this at a time (a Redis lock), so
    replicas starting together do not replace each other's hosts."""
    async with deploying(settings, client) as store:
        layouts = {}
        for kind in KINDS:
            asked = configured_hosts(kind, settings)
            current = await store.read(kind, 0)
            if asked > 0:
                layout = await store.write(kind, asked, current.pins)
            else:
                layout = await store.write(kind, cluster_sized(), keep=True)
            done = [await _ensure(kind, i, settings) for i in range(layout.count)]
            await _retire(kind, layout, store)
            log.info("%s hosts: %s (epoch %d)", kind, done, layout.epoch)
            layouts[kind] = layout
        return layouts


async def _deployed_settings(kind: str) -> Settings:
    first = await asyncio.to_thread(_existing, kind, 0)
    if first is None:
        raise RuntimeError(f"no {kind} host is running: deploy the application first")
    settings: Settings = await first.deployment.remote()
    return settings


async def add_host(kind: str, count: int) -> Layout:
    """Run `count` hosts of a kind from now on: the new ones start with the settings the
    running ones have, then the layout changes and the moved shards are handed over."""
    settings = await _deployed_settings(kind)
    async with deploying(settings) as store:
        current = await store.read(kind, 1)
        for index in range(count):
            await _ensure(kind, index, settings)
        layout = await store.write(kind, count, current.pins)
        await _retire(kind, layout, store)
        return layout


async def dedicate_host(kind: str, entity_id: str) -> Layout:
    """Give the shard of one entity (a hot merchant) a host of its own: a new host, to
    which that shard alone moves. The other entities of the same shard go with it."""
    settings = await _deployed_settings(kind)
    async with deploying(settings) as store:
        current = await store.read(kind, 1)
        shard = shard_for(kind, entity_id)
        index = current.count
        await _ensure(kind, index, settings)
        return await store.write(kind, index + 1, {**current.pins, shard: index})
