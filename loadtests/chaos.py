"""`make chaos`: kill one part of a running platform under load, and count what it cost.

One platform of its own; then, for each part in turn (a merchant host, a rider-zone
host, a payment host, the API replica, the Redis-protocol server), the full-loop driver
(`loadtests/full_loop.py`) runs for `--seconds` and the part is killed with SIGKILL
`--kill-at` seconds in. Ray starts a dead host or replica again; the launcher's
supervisor starts the server again on its own data. After each run, one table row:

- requests: HTTP requests the driver made; acknowledged: orders placed with a 201;
- failed: the driver's failed requests by status or connection error, and its sockets'
  reconnects;
- lost: acknowledged orders that are not in Redis; duplicated: money booked twice (a
  second capture, split or refund of one refund number) or a version seen twice;
- recovery s: from the kill until a probe that needs the killed part is answered again
  within half a second;
- follow-ups: orders whose every follow-up completed (delivered: split and rider freed;
  closed after payment: refunded in full), of those that reached such a state.

    python -m loadtests.chaos [--seconds 40] [--kill-at 12] [--parts merchant,redis]

Each run is bounded (under two minutes with the defaults); every request loop of the
probe is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis

from cluster.launcher import Platform
from domain.ledger import Transaction
from loadtests.harness import fresh_platform
from storage import keys
from storage.redis import connect_blocking
from storage.server import EmbeddedCluster
from storage.settings import Settings

PARTS = ("merchant", "rider_zone", "payment", "api", "redis")
# With `--cluster`: the platform runs on a Valkey cluster (three primaries, a replica
# each) and the part killed is the primary of the first third of the slots.
CLUSTER_PARTS = ("primary",)
# What each part's process is called (Ray names its workers `ray::<class>`).
PROCESS_OF = {
    "merchant": "ray::MerchantHost",
    "rider_zone": "ray::RiderZoneHost",
    "payment": "ray::PaymentShardHost",
    "api": "ray::ServeReplica:o2o:api",
}
SETTLE_S = 25.0
PROBE_EVERY_S = 0.1
PROMPT_S = 0.5


def part_pid(part: str) -> int:
    """The pid of the part's process among this process's descendants."""
    title = PROCESS_OF[part]
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            argv = proc.cmdline()
        except psutil.Error:
            continue
        if argv and argv[0].split(".")[0] == title:
            return int(proc.pid)
    raise RuntimeError(f"no process {title}")


def kill(platform: Platform, part: str, cluster: EmbeddedCluster | None = None) -> None:
    if part == "primary":
        assert cluster is not None
        cluster.nodes[0].kill()
        return
    if part == "redis":
        assert platform.redis is not None
        process = platform.redis.server.process
        assert process is not None
        process.kill()
        return
    os.kill(part_pid(part), signal.SIGKILL)


class Probe:
    """Asks, every 100 ms from the kill on, something that needs the killed part; notes when
    it first answers after the kill."""

    def __init__(self, url: str, part: str, tokens: dict[str, str], order: dict[str, Any]) -> None:
        self.url, self.part, self.tokens, self.order = url, part, tokens, order
        self.recovery_s: float | None = None

    def request(self, client: httpx.Client) -> httpx.Response:
        if self.part == "api":
            return client.get("/v1/health/live")
        auth = {"Authorization": f"Bearer {self.tokens[self.part]}"}
        if self.part == "merchant":
            return client.post(
                "/v1/orders",
                json=self.order,
                headers={**auth, "Idempotency-Key": f"probe-{time.monotonic_ns()}"},
            )
        if self.part == "rider_zone":
            return client.post(
                "/v1/riders/me/location", json={"lat": 30.06, "lng": 120.56}, headers=auth
            )
        if self.part == "payment":
            day = datetime.now(UTC).date().isoformat()
            return client.post(f"/v1/admin/reconciliation?date={day}", headers=auth)
        if self.part == "primary":  # a placement: most of its keys' slots are elsewhere,
            return client.post(  # but the customer's order index may be on the lost one
                "/v1/orders",
                json=self.order,
                headers={**auth, "Idempotency-Key": f"probe-{time.monotonic_ns()}"},
            )
        return client.get("/v1/orders", headers=auth)  # Redis: a read

    def run(self, started: float, until: float) -> None:
        """Recovery: from the kill until a probe succeeds as promptly as a healthy part
        answers (a request may fail meanwhile, or wait for the part to come back)."""
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while time.monotonic() < until:
                sent = time.monotonic()
                try:
                    ok = self.request(client).status_code < 500
                except httpx.HTTPError:
                    ok = False
                answered = time.monotonic()
                if ok and answered - sent < PROMPT_S:
                    self.recovery_s = round(answered - started, 1)
                    return
                time.sleep(PROBE_EVERY_S)


def token(client: httpx.Client, role: str, sub: str) -> str:
    answer = client.post("/v1/auth/dev-token", json={"role": role, "sub": sub})
    return str(answer.json()["token"])


def ledger_of(store: redis.Redis, order_id: str) -> list[Transaction]:
    raws = store.lrange(keys.ledger_of_order(order_id), 0, -1)
    return [Transaction.from_dict(orjson.loads(raw)) for raw in raws]  # type: ignore[union-attr]


def check(store: redis.Redis, report: dict[str, Any]) -> dict[str, Any]:
    """What became of the run's orders, read from Redis after the follow-ups settled."""
    acknowledged: list[str] = report["acknowledged_orders"]
    lost = duplicated = complete = finished = 0
    for order_id in acknowledged:
        raw = store.hget(keys.order(order_id), "json")
        if raw is None:
            lost += 1
            continue
        order = orjson.loads(raw)
        txns = ledger_of(store, order_id)
        kinds = Counter(t.kind for t in txns)
        ids = Counter(t.txn_id for t in txns)
        versions = [t["status"] for t in order["timeline"]]
        if (
            kinds["capture"] > 1
            or kinds["split"] > 1
            or max(ids.values(), default=0) > 1
            or len(versions) != order["version"]
        ):
            duplicated += 1
        if order["status"] == "delivered":
            finished += 1
            rider = order.get("rider_id")
            freed = rider is None or order_id not in store.smembers(keys.rider_orders(rider))
            complete += int(kinds["split"] == 1 and freed)
        elif order["status"] in ("cancelled", "rejected") and order.get("paid_fen"):
            finished += 1
            refunded = sum(t.amount_on(f"customer:{order['customer_id']}:refunds") for t in txns)
            complete += int(refunded == order["paid_fen"])
    return {
        "acknowledged": len(acknowledged),
        "lost": lost,
        "duplicated": duplicated,
        "follow_ups_completed": complete,
        "follow_ups_due": finished,
    }


def one_run(
    platform: Platform,
    part: str,
    seconds: float,
    kill_at: float,
    work: Path,
    cluster: EmbeddedCluster | None = None,
) -> dict[str, Any]:
    out = work / f"loop-{part}.json"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtests.full_loop",
            "--url",
            platform.url,
            "--concurrency",
            "8",
            "--merchants",
            "4",
            "--duration",
            str(seconds),
            "--json",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
    )
    with httpx.Client(base_url=platform.url, timeout=10) as client:
        tokens = {
            "merchant": token(client, "customer", f"probe_{part}"),
            "rider_zone": token(client, "rider", f"probe_{part}"),
            "payment": token(client, "admin", "probe"),
            "redis": token(client, "customer", f"probe_{part}"),
            "primary": token(client, "customer", f"probe_{part}"),
        }
    time.sleep(kill_at)
    # Placement probes need a merchant of this run: the driver's first, far from the city.
    order = {
        "merchant_id": "m_probe",
        "items": [{"item_id": "rice", "qty": 1}],
        "delivery": {"lat": 30.05, "lng": 120.55},
    }
    probe = Probe(platform.url, part, tokens, order)
    killed_at = time.monotonic()
    kill(platform, part, cluster)
    watcher = threading.Thread(target=probe.run, args=(killed_at, killed_at + 60), daemon=True)
    watcher.start()
    driver.wait(timeout=seconds + 180)
    watcher.join(60)
    time.sleep(SETTLE_S)  # the follow-ups of the last orders
    report: dict[str, Any] = json.loads(out.read_text())
    requests = sum(step["count"] for step in report["steps"].values())
    # "<step>: <status>", "<step>: <connection error>", "websocket: reconnect" ...
    failed: Counter[str] = Counter()
    for what, n in report["failures"].items():
        failed[what.rsplit(": ", 1)[-1]] += n
    store = connect_blocking(platform.settings.effective_redis_url)
    try:
        outcome = check(store, report)
    finally:
        store.close()
    return {
        "part": part,
        "requests": requests + sum(failed.values()),
        **outcome,
        "failed": dict(failed),
        "recovery_s": probe.recovery_s,
        "delivered_per_s": report["delivered_per_s"],
    }


def seed_probe_merchant(platform: Platform) -> None:
    with httpx.Client(base_url=platform.url, timeout=10) as client:
        admin = {"Authorization": f"Bearer {token(client, 'admin', 'chaos')}"}
        client.post(
            "/v1/merchants",
            json={
                "id": "m_probe",
                "name": "Probe",
                "lat": 30.05,
                "lng": 120.55,
                "delivery": {"radius_m": 5000},
            },
            headers=admin,
        )
        merchant = {"Authorization": f"Bearer {token(client, 'merchant', 'm_probe')}"}
        client.put(
            "/v1/merchants/m_probe/menu/items/rice",
            json={"name": "Rice", "price_fen": 100, "stock": 1_000_000},
            headers=merchant,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--kill-at", type=float, default=12)
    parser.add_argument("--parts", default="")
    parser.add_argument(
        "--cluster", action="store_true", help="run on a Valkey cluster; kill a primary"
    )
    parser.add_argument(
        "--wait-replicas",
        type=int,
        default=0,
        help="with --cluster: replicas each order change waits for (O2O_REDIS_WAIT_REPLICAS)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    parts = args.parts or ",".join(CLUSTER_PARTS if args.cluster else PARTS)
    out = args.out or Path("bench/chaos-cluster.json" if args.cluster else "bench/chaos.json")
    rows = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="o2o-chaos-"))
        cluster = None
        overrides: dict[str, Any] = {}
        if args.cluster:
            defaults = Settings()
            cluster = EmbeddedCluster(
                Path(tmp) / "cluster", defaults.appendfsync, defaults.redis_aof_rewrite_min_mb
            )
            cluster.start()
            stack.callback(cluster.stop)
            overrides["redis_url"] = cluster.url
            overrides["redis_wait_replicas"] = args.wait_replicas
        platform = stack.enter_context(fresh_platform("o2o-chaos-", **overrides))
        seed_probe_merchant(platform)
        for part in parts.split(","):
            rows.append(one_run(platform, part, args.seconds, args.kill_at, Path(tmp), cluster))
            print(json.dumps(rows[-1]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(
        f"\nfull loop, 8 customers, {args.seconds:.0f} s per run, SIGKILL at {args.kill_at:.0f} s"
        + (f", waiting for {args.wait_replicas} replica(s)" if args.cluster else "")
        + "\n"
    )
    print(
        "| killed | requests | acknowledged | failed by status | lost | duplicated "
        "| recovery s | follow-ups completed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        failed = ", ".join(f"{k}: {v}" for k, v in sorted(r["failed"].items())) or "none"
        print(
            f"| {r['part']} | {r['requests']} | {r['acknowledged']} | {failed} | {r['lost']} | "
            f"{r['duplicated']} | {r['recovery_s']} | "
            f"{r['follow_ups_completed']} / {r['follow_ups_due']} |"
        )


if __name__ == "__main__":
    main()
