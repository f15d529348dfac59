"""The host actors as Ray creates them: one factory, with the options every host runs with.

Only the launcher (and whatever deploys the application) imports this module; the
routing every other process needs is in `actors/directory.py`.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.actor import ActorHandle

from actors.directory import KINDS, NAMESPACE, host_count, host_name
from actors.merchant import MerchantHost
from actors.payment_shard import PaymentShardHost
from actors.rider_zone import RiderZoneHost
from storage.settings import Settings

HOSTS = {"merchant": MerchantHost, "rider_zone": RiderZoneHost, "payment": PaymentShardHost}


def _options(kind: str, index: int) -> dict[str, Any]:
    return {
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
    }


def start_hosts(settings: Settings) -> list[ActorHandle]:
    """Create every host actor that does not exist yet (the driver calls this once)."""
    handles = []
    for kind in KINDS:
        remote_class: Any = ray.remote(HOSTS[kind])
        for i in range(host_count(kind, settings)):
            handles.append(remote_class.options(**_options(kind, i)).remote(settings, i))
    return handles
