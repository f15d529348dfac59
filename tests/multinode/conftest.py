"""A real two-node Ray cluster on this machine, the platform deployed on it with Serve's CLI.

Its own pytest session (`make test-multinode`, `pytest tests/multinode`); the main run
never collects it. What runs, every process ours by pid or process group:

- the Redis-protocol server (`storage.server.EmbeddedRedis`, its own port and data);
- the payment sandbox (`python -m sandbox`);
- two `ray start --block` processes, each in a process group of its own
  (`start_new_session`), with every port explicit and a `--temp-dir` of their own: a
  head (GCS, dashboard) and a worker, one CPU each, both offering `o2o_hosts`. Each
  node's environment carries the HAProxy switches (`cluster.launcher.
  haproxy_environment`, a short directory and its own stats and metrics ports per node)
  as `cluster/start-head.sh` and `start-worker.sh` set them;
- the app, deployed with `serve deploy` from a config written from
  `cluster/serve_config.yaml` (the Serve config path an operator uses).

Why `ray start` rather than `ray.cluster_utils.Cluster`: a `Cluster` head writes its
address to `/tmp/ray/ray_current_cluster`, and every `ray.init()` without an address on
this machine (each e2e session's launcher) would then join this cluster instead of
starting its own. `ray start --temp-dir` writes that file under its own temp dir. And
this pytest process never becomes a Ray driver: it speaks to the cluster the way an
operator does, through the dashboard (`serve` CLI, the state API over HTTP), and kills a
node the way a machine dies (SIGKILL to the node's process group).

Never `ray stop`: it ends every Ray process on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
import yaml

from cluster.launcher import haproxy_environment, raise_open_files_limit
from domain.geo import Point, zone_of
from storage.redis import connect_blocking
from storage.server import EmbeddedRedis, free_port
from storage.settings import Settings
from tests.e2e.conftest import Api, owner_of

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
APP = "o2o"
KINDS = ("merchant", "rider_zone", "payment")
HOSTS_PER_KIND = 2
T = TypeVar("T")


def bounded(probe: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    """Poll until `probe` returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            found = probe()
        except Exception as err:  # a cluster in the middle of a change answers errors
            found, last = None, err
        if found:
            return found
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last error: {last!r})")


# -- ports ---------------------------------------------------------------------------

_taken: set[int] = set()


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def port() -> int:
    """A free port, never one of this session's worker-port ranges or earlier picks."""
    for _ in range(100):
        picked = free_port()
        if picked not in _taken:
            _taken.add(picked)
            return picked
    raise RuntimeError("no free port")


def worker_ports(size: int = 60) -> tuple[int, int]:
    """A free range for a node's worker processes, below Serve's direct-ingress ports
    (30000-31000) and the kernel's ephemeral range, apart from Ray's default range
    (10002-19999) that other sessions' Rays use."""
    import random

    for _ in range(200):
        low = random.randrange(20_000, 29_000 - size)
        span = range(low, low + size)
        if not _taken.intersection(span) and all(_free(p) for p in span):
            _taken.update(span)
            return low, low + size - 1
    raise RuntimeError("no free worker port range")


# -- processes -----------------------------------------------------------------------


class Group:
    """A child in a process group and session of its own, and everything it starts.

    Ray starts each worker process in a process group of its own (within the session),
    and a process whose parent died is nobody's descendant: so the members are the
    session's processes and the leader's descendants, noted every second; stopping
    ends every one (by pid and start time, so a pid used again by somebody else is left
    alone)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pgid = self.process.pid
        self.seen: dict[int, psutil.Process] = {}
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name=f"{name}-pids", daemon=True)
        self._watcher.start()

    def _note(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)

    def _watch(self) -> None:
        while not self._done.wait(1.0):
            self._note()

    def members(self) -> list[psutil.Process]:
        """Every live process of the group, and every process the leader started."""
        self._note()
        found: dict[int, psutil.Process] = {}
        for pid, proc in list(self.seen.items()):
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    found[pid] = proc
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                # The leader's session (start_new_session): Ray puts each worker
                # process in a process group of its own, but within this session.
                ours = self.pgid in (os.getpgid(proc.pid), os.getsid(proc.pid))
                if ours and proc.status() != psutil.STATUS_ZOMBIE:
                    found[proc.pid] = proc
        return list(found.values())

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group and every process it started at once, as a
        machine that loses power."""
        members = self.members()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        for proc in members:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        psutil.wait_procs(members, timeout=10)
        self._done.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (what `ray stop` sends each process), then SIGKILL what is left."""
        members = self.members()
        if members or self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGTERM)
            for proc in members:
                with contextlib.suppress(psutil.Error):
                    proc.terminate()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and (self.alive() or self.members()):
                time.sleep(0.3)
        self.kill()


# -- the cluster ---------------------------------------------------------------------


@dataclass
class RayCluster:
    work: Path
    gcs_port: int
    dashboard_port: int
    serve_port: int
    worker_proxy_port: int
    nodes: dict[str, Group] = field(default_factory=dict)
    node_ids: dict[str, str] = field(default_factory=dict)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    def state(self, what: str, filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Ray's state API (`ray list actors`, `ray list nodes`) over the dashboard's
        REST routes, as the CLI reads it; this process is no Ray driver."""
        params: list[tuple[str, str | int]] = [("limit", 10_000), ("timeout", 15)]
        for key, value in (filters or {}).items():
            params += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
        answer = httpx.get(
            f"{self.dashboard}/api/v0/{what}", params=params, headers=auth_headers(), timeout=20
        )
        answer.raise_for_status()
        body = answer.json()
        assert body["result"], body
        rows: list[dict[str, Any]] = body["data"]["result"]["result"]
        return rows

    def actors(self, **filters: str) -> list[dict[str, Any]]:
        return self.state("actors", filters)

    def alive_nodes(self) -> list[dict[str, Any]]:
        return self.state("nodes", {"state": "ALIVE"})

    def host_actors(self) -> list[dict[str, Any]]:
        return [
            a
            for a in self.actors(ray_namespace="o2o")
            if a.get("name", "").split("-host-")[0] in KINDS and a["state"] != "DEAD"
        ]

    def api_replicas(self) -> list[dict[str, Any]]:
        """The api deployment's replicas as Serve's REST API (what `serve status`
        reads) reports them."""
        answer = httpx.get(
            f"{self.dashboard}/api/serve/applications/", headers=auth_headers(), timeout=10
        )
        answer.raise_for_status()
        app = answer.json().get("applications", {}).get(APP)
        if not app:
            return []
        replicas: list[dict[str, Any]] = app["deployments"]["api"]["replicas"]
        return replicas

    def app_status(self) -> str:
        answer = httpx.get(
            f"{self.dashboard}/api/serve/applications/", headers=auth_headers(), timeout=10
        )
        answer.raise_for_status()
        app = answer.json().get("applications", {}).get(APP)
        return str(app["status"]) if app else "NOT_STARTED"

    def serve_cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "serve"), *args, "-a", self.dashboard],
            cwd=ROOT,
            env=cli_env(ray=True),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )


# Ray 2.60 turns token authentication on for a new cluster: the nodes, the `serve` CLI
# and every dashboard request of this session carry a token of its own (never the
# machine's ~/.ray/auth_token).
TOKEN = secrets.token_hex(32)


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def cli_env(ray: bool = False) -> dict[str, str]:
    """This process's environment without Ray's and the platform's variables; with
    `ray`, the session's Ray token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "O2O_"))}
    env.pop("REDIS_URL", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if ray:
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN})
    return env


@dataclass
class Services:
    redis: EmbeddedRedis
    sandbox_url: str
    secret: str


@pytest.fixture(scope="session")
def work(request: pytest.FixtureRequest) -> Iterator[Path]:
    # Short: HAProxy's admin socket path must stay under 97 bytes, Ray's sockets under
    # 107 (they live in <temp-dir>/session_<date>_<pid>/sockets/).
    path = Path(tempfile.mkdtemp(prefix="o2o-mn-", dir="/tmp"))
    yield path
    # Kept when a test failed (or with O2O_MULTINODE_KEEP=1): the nodes' logs, the
    # Redis data, the Serve config.
    if request.session.testsfailed or os.environ.get("O2O_MULTINODE_KEEP") == "1":
        print(f"\n[multinode] logs and data kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def services(work: Path) -> Iterator[Services]:
    redis = EmbeddedRedis(work / "redis", port(), "everysec", 1024)
    redis.start()
    secret = secrets.token_urlsafe(24)
    sandbox_port = port()
    sandbox = Group(
        "sandbox",
        [
            sys.executable,
            "-m",
            "sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            str(sandbox_port),
            "--secret",
            secret,
            "--fee-bp",
            "60",
        ],
        cli_env(),
        work / "sandbox.log",
    )
    url = f"http://127.0.0.1:{sandbox_port}"
    try:
        bounded(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 30, "sandbox")
        yield Services(redis, url, secret)
    finally:
        sandbox.stop(10)
        redis.stop()


# The test speaks through a few tokens.
LIMIT = "100000/minute"


def node_env(work: Path, name: str, services: Services, extra: dict[str, str]) -> dict[str, str]:
    # Serve writes each node's HAProxy files in <this>/<node id, 56 characters>/: with
    # /tmp/o2o-mn-XXXXXXXX/ in front, the admin socket's path is 90 bytes (limit 97).
    hap = work / name.upper()
    hap.mkdir()
    env = cli_env(ray=True)
    # HAProxy refuses a caller past twice the replicas' limits: the session's, below.
    limits = {f"rate_limit_{route}": LIMIT for route in ("place", "write", "read", "auth")}
    env.update(haproxy_environment(hap, True, 4096, settings=Settings(**limits)))
    env.update(
        {
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            # What every host and replica of the deployment reads besides the config's
            # args: dev mode (tokens from /v1/auth/dev-token, loopback only) and the
            # sandbox's secret.
            "O2O_DEV_MODE": "1",
            "O2O_PAYMENT_SECRET": services.secret,
            # Lost notifications are found within a second.
            "O2O_PAYMENT_POLL_S": "1",
            # The test speaks through a few tokens.
            **{f"O2O_{name.upper()}": value for name, value in limits.items()},
            # A replica the autoscaler removes is gone within seconds.
            "O2O_API_DRAIN_TIMEOUT_S": "10",
            # The session's few customers place hundreds of orders within the hour: a
            # person's order and failure counts would hold them for review
            # (`domain/risk.py`, 0 turns a rule off).
            "O2O_RISK_MAX_ORDERS_PER_CUSTOMER": "0",
            "O2O_RISK_MAX_FAILURES_PER_CUSTOMER": "0",
            **extra,
        }
    )
    return env


@pytest.fixture(scope="session")
def ray_cluster(work: Path, services: Services) -> Iterator[RayCluster]:
    raise_open_files_limit()
    cluster = RayCluster(
        work=work,
        gcs_port=port(),
        dashboard_port=port(),
        serve_port=port(),
        worker_proxy_port=port(),
    )

    def common(name: str) -> list[str]:
        low, high = worker_ports()
        temp = work / name
        temp.mkdir()
        return [
            str(BIN / "ray"),
            "start",
            "--block",
            "--num-cpus=1",
            '--resources={"o2o_hosts": 1}',
            "--object-store-memory=100000000",
            f"--node-manager-port={port()}",
            f"--object-manager-port={port()}",
            f"--min-worker-port={low}",
            f"--max-worker-port={high}",
            f"--dashboard-agent-listen-port={port()}",
            f"--dashboard-agent-grpc-port={port()}",
            f"--runtime-env-agent-port={port()}",
            f"--metrics-export-port={port()}",
            f"--temp-dir={temp}",
            "--include-log-monitor=false",
            "--disable-usage-stats",
        ]

    head_argv = [
        *common("h"),
        "--head",
        f"--port={cluster.gcs_port}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={cluster.dashboard_port}",
        f"--ray-client-server-port={port()}",
    ]
    head_env = node_env(
        work,
        "h",
        services,
        {
            # A node that dies is declared dead after about 3 s, not 15 (the GCS reads
            # these; only the head runs one).
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        },
    )
    worker_argv = [*common("w"), f"--address=127.0.0.1:{cluster.gcs_port}"]
    # Both proxies are on this one machine: the worker's binds a port of its own.
    worker_env = node_env(
        work, "w", services, {"RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(cluster.worker_proxy_port)}
    )
    try:
        started = time.monotonic()
        cluster.nodes["head"] = Group("head", head_argv, head_env, work / "head.log")
        bounded(
            lambda: (
                httpx.get(
                    f"{cluster.dashboard}/api/version", headers=auth_headers(), timeout=2
                ).status_code
                == 200
            ),
            120,
            "the head's dashboard",
        )
        cluster.nodes["worker"] = Group("worker", worker_argv, worker_env, work / "worker.log")
        nodes = bounded(
            lambda: (n := cluster.alive_nodes()) and len(n) == 2 and n, 120, "two alive nodes"
        )
        for node in nodes:
            cluster.node_ids["head" if node["is_head_node"] else "worker"] = node["node_id"]
        up_s = time.monotonic() - started
        print(f"\n[multinode] two nodes up in {up_s:.1f} s: {cluster.node_ids}")
        yield cluster
    finally:
        for name in ("worker", "head"):
            if name in cluster.nodes:
                cluster.nodes[name].stop()
        for name in ("head", "worker"):
            if name in cluster.nodes:
                left = cluster.nodes[name].members()
                assert not left, f"{name} left processes behind: {left}"


def serve_config(cluster: RayCluster, services: Services) -> dict[str, Any]:
    """`cluster/serve_config.yaml` with this cluster's addresses, two hosts of each kind
    and an autoscaling `api` that reacts within seconds."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "cluster" / "serve_config.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": cluster.serve_port}
    app = config["applications"][0]
    assert app["name"] == APP and app["import_path"] == "serve_app.app:app_builder"
    app["args"] = {
        "redis_url": services.redis.url,
        "provider_url": services.sandbox_url,
        "public_url": cluster.url,
        "merchant_hosts": HOSTS_PER_KIND,
        "rider_zone_hosts": HOSTS_PER_KIND,
        "payment_hosts": HOSTS_PER_KIND,
    }
    (api,) = app["deployments"]
    assert api["name"] == "api"
    api["autoscaling_config"] = {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 2,
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2,
        "upscale_delay_s": 1,
        "downscale_delay_s": 4,
    }
    return config


@dataclass
class Deployment:
    cluster: RayCluster
    services: Services
    config_file: Path
    deploy_s: float

    @property
    def url(self) -> str:
        return self.cluster.url

    def store(self) -> Any:
        return connect_blocking(self.services.redis.url)


@pytest.fixture(scope="session")
def deployment(ray_cluster: RayCluster, services: Services, work: Path) -> Deployment:
    config_file = work / "serve_config.yaml"
    config_file.write_text(yaml.safe_dump(serve_config(ray_cluster, services), sort_keys=False))
    started = time.monotonic()
    deployed = ray_cluster.serve_cli("deploy", str(config_file))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    bounded(
        lambda: ray_cluster.app_status() == "RUNNING", 240, "application o2o RUNNING", every_s=1
    )
    bounded(
        lambda: httpx.get(f"{ray_cluster.url}/v1/health", timeout=5).status_code == 200,
        60,
        "the API through the head's HAProxy",
    )
    deploy_s = time.monotonic() - started
    print(f"[multinode] serve deploy -> RUNNING and healthy in {deploy_s:.1f} s")
    return Deployment(ray_cluster, services, config_file, deploy_s)


# -- parties and shops ---------------------------------------------------------------


@pytest.fixture(scope="session")
def login(deployment: Deployment) -> Callable[[str, str], Api]:
    anonymous = httpx.Client(base_url=deployment.url, timeout=30)

    def as_party(role: str, sub: str) -> Api:
        answer = bounded(
            lambda: (
                (a := anonymous.post("/v1/auth/dev-token", json={"role": role, "sub": sub}))
                and a.status_code == 200
                and a
            ),
            30,
            f"a {role} token",
        )
        return Api(deployment.url, answer.json()["token"])

    return as_party


@dataclass
class Shop:
    """A merchant with a menu and riders beside it, on hosts the test chose."""

    merchant_id: str
    lat: float
    lng: float
    merchant: Api
    riders: list[Api]
    rider_ids: list[str]
    merchant_host: int
    zone_host: int

    def order_body(self, qty: int = 1) -> dict[str, Any]:
        # The door 170 m from the counter: the test's riders deliver the moment they
        # pick up, and a trip of 300 m or more that fast is held for review
        # (`domain/risk.py`, rider_too_fast), its split waiting.
        return {
            "merchant_id": self.merchant_id,
            "items": [{"item_id": "noodles", "qty": qty}],
            "delivery": {"lat": self.lat + 0.0015, "lng": self.lng, "address": "1 Node Rd"},
        }


def retry(call: Callable[[], httpx.Response], timeout_s: float = 30) -> httpx.Response:
    """Ask again while the platform answers 5xx or nothing (a host or replica moving)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = call()
            if answer.status_code < 500 and answer.status_code != 429:
                return answer
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return answer
        time.sleep(0.3)


def make_shops(
    deployment: Deployment, login: Callable[[str, str], Api], riders_each: int = 2
) -> list[Shop]:
    """One shop per (merchant host, rider-zone host) pair, so every host of those kinds
    owns a shop: ids and places chosen by the layout's rendezvous hashing."""
    store = deployment.store()
    admin = login("admin", "multinode")
    shops: list[Shop] = []
    spot = 0
    try:
        for m_host in range(HOSTS_PER_KIND):
            for z_host in range(HOSTS_PER_KIND):
                while True:
                    merchant_id = f"mn_{uuid.uuid4().hex[:8]}"
                    if owner_of(store, "merchant", merchant_id) == m_host:
                        break
                while True:
                    spot += 1
                    lat, lng = 31.0 + 0.15 * spot, 121.0
                    if owner_of(store, "rider_zone", zone_of(Point(lat, lng), 7)) == z_host:
                        break
                profile = {
                    "id": merchant_id,
                    "name": f"Node Noodles {merchant_id}",
                    "lat": lat,
                    "lng": lng,
                    "delivery": {"radius_m": 3000},
                    "prep_minutes": 10,
                    "accept_mode": "manual",
                }
                made = retry(lambda p=profile: admin.post("/v1/merchants", json=p, key=p["id"]))
                assert made.status_code == 201, made.text
                merchant = login("merchant", merchant_id)
                put = retry(
                    lambda m=merchant, mid=merchant_id: m.put(
                        f"/v1/merchants/{mid}/menu/items/noodles",
                        json={"name": "Noodles", "price_fen": 1800, "stock": 100_000},
                    )
                )
                assert put.status_code == 200, put.text
                riders, rider_ids = [], []
                for n in range(riders_each):
                    rider_id = f"{merchant_id}_r{n}"
                    rider = login("rider", rider_id)
                    online = retry(
                        lambda r=rider, la=lat, lo=lng, n=n: r.post(
                            "/v1/riders/me/status",
                            json={"online": True, "lat": la + 0.002 + 0.0005 * n, "lng": lo},
                        )
                    )
                    assert online.status_code == 200, online.text
                    riders.append(rider)
                    rider_ids.append(rider_id)
                shops.append(
                    Shop(merchant_id, lat, lng, merchant, riders, rider_ids, m_host, z_host)
                )
    finally:
        store.close()
    return shops


@pytest.fixture(scope="session")
def shops(deployment: Deployment, login: Callable[[str, str], Api]) -> list[Shop]:
    return make_shops(deployment, login)


def dump(what: str, figures: Any) -> None:
    print(f"[multinode] {what}: {json.dumps(figures, default=str)}", flush=True)
