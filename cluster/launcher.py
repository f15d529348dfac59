"""Start and stop the whole platform on this machine, in order.

Order matters on the way down: Serve first (it owns the HAProxy child), then Ray,
then the sandbox and the Redis-protocol server. Every process is ours by pid; nothing
is stopped by name.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import ray
from ray import serve

from actors import telemetry
from actors.directory import NAMESPACE
from actors.registry import HOST_RESOURCE
from serve_app.app import build
from storage.server import EmbeddedRedis, Supervisor, free_port
from storage.settings import Settings

log = logging.getLogger(__name__)

APP_NAME = "o2o"


def haproxy_environment(
    hap: Path,
    use_haproxy: bool,
    maxconn: int,
    http_metrics: bool = False,
    settings: Settings | None = None,
) -> dict[str, str]:
    """Serve reads these when its controller starts; each run gets its own files and ports.

    `hap` must be a short path: HAProxy refuses admin socket paths over 97 bytes. Serve
    runs HAProxy through a wrapper written there, which adds the platform's admission
    lines to the configuration Serve generates (`serve_app/admission.py`): the
    client's address in X-Forwarded-For, and the rate limits at
    `rate_limit_haproxy_factor` times the replicas' own, from `settings` (the
    platform's; this process's environment when None).
    """
    from serve_app import admission  # the layer below; imported by `build` already

    # One node, no outer load balancer to deregister from: a short drain keeps Ctrl-C quick.
    drain = {
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": os.environ.get(
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2"
        )
    }
    if not use_haproxy:
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0", **drain}
    return {
        **drain,
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(hap / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(hap / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(hap),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(hap / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_PORT": os.environ.get(
            "RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port())
        ),
        "RAY_SERVE_HAPROXY_STATS_PORT": os.environ.get(
            "RAY_SERVE_HAPROXY_STATS_PORT", str(free_port())
        ),
        # Serve's fallback proxy, where HAProxy sends an app's requests while it has no
        # replica of its own up (a rolling update, a scale-down): at Serve's fixed
        # ports (8500, 9500) every platform on the machine listens on the same one
        # (SO_REUSEPORT), and requests land on another platform's.
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": os.environ.get(
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", str(free_port())
        ),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": os.environ.get(
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT", str(free_port())
        ),
        "RAY_SERVE_HAPROXY_MAXCONN": str(haproxy_maxconn(maxconn)),
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "1" if http_metrics else "0",
        # Long polls and live sockets must not be cut by a proxy timeout.
        "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S": "3600",
        **admission.haproxy_wrapper(hap, settings or Settings()),
    }


def raise_open_files_limit() -> int:
    """Every socket is a file: let this process and its children use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def haproxy_maxconn(wanted: int) -> int:
    # HAProxy needs about 2.5 file descriptors per connection and refuses to start
    # when the limit cannot cover its maxconn.
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if limit == resource.RLIM_INFINITY:
        return wanted
    return max(1024, min(wanted, int((limit - 1000) / 2.5)))


class Platform:
    """Redis-protocol server, sandbox, Ray, host actors and the Serve app, as one unit."""

    def __init__(self, settings: Settings, run_dir: Path | None = None) -> None:
        self.settings = settings
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix="o2o-run-"))
        self.redis: Supervisor | None = None
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.started_ray = False
        self.serve_started = False
        self.haproxy_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        s = self.settings
        s.refuse_unsafe()
        raise_open_files_limit()
        if not s.redis_url:
            # Supervised: a server that dies comes back on its own data; with REDIS_URL
            # the platform only reconnects (every client does so by itself).
            self.redis = Supervisor(
                EmbeddedRedis(
                    s.data_dir,
                    s.redis_port,
                    s.appendfsync,
                    s.redis_aof_rewrite_min_mb,
                    bind=s.redis_host,
                )
            )
            self.redis.start()
        self._start_sandbox()
        self.haproxy_dir = Path(tempfile.mkdtemp(prefix="o2o-hap-", dir="/tmp"))
        os.environ.update(
            haproxy_environment(
                self.haproxy_dir,
                s.front_door == "haproxy",
                s.haproxy_maxconn,
                s.serve_http_metrics,
                s,
            )
        )
        if s.serve_throughput_optimized:
            # Serve's own switch: handlers run on the replica's main loop instead of a
            # loop in another thread (no hop between threads per request), with less
            # logging. Placement went from 960 to 1,300/s (README, Performance).
            os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
        if not ray.is_initialized():
            if s.ray_address:
                # A cluster's nodes were started with their own environment (the HAProxy
                # switches and `o2o_hosts` among it: `cluster/start-head.sh`).
                ray.init(
                    address=s.ray_address,
                    namespace=NAMESPACE,
                    logging_config=telemetry.logging_config(),
                )
            else:
                ray.init(
                    num_cpus=s.ray_num_cpus,
                    # This one node carries the hosts (`actors/registry.py`).
                    resources={HOST_RESOURCE: 1},
                    namespace=NAMESPACE,
                    include_dashboard=s.ray_dashboard,
                    dashboard_port=s.ray_dashboard_port,
                    log_to_driver=False,
                    logging_config=telemetry.logging_config(),
                )
                self.started_ray = True
        # The JSON logging of Ray's job reaches this driver too: its HTTP client's line
        # per request would drown what the driver says.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        serve.start(http_options={"host": s.http_host, "port": s.http_port})
        self.serve_started = True
        # Each API replica creates the host actors as it starts (`serve_app/app.py`).
        serve.run(build(s), name=APP_NAME, route_prefix="/", blocking=False)
        self._wait_healthy()

    def _start_sandbox(self) -> None:
        s = self.settings
        log_file = open(self.run_dir / "sandbox.log", "ab")  # noqa: SIM115 - owned by the child
        self.sandbox = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox",
                "--host",
                s.sandbox_host,
                "--port",
                str(s.sandbox_port),
                "--secret",
                s.payment_secret,
                "--fee-bp",
                str(s.provider_fee_bp),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        log_file.close()
        self._wait_for(f"{s.sandbox_url}/health", 20, "payment sandbox")

    def _wait_for(self, url: str, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError as err:
                last = repr(err)
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not come up at {url}: {last}")

    def _wait_healthy(self) -> None:
        self._wait_for(f"{self.url}/v1/health", 120, "the HTTP API")

    def stop(self) -> None:
        if self.serve_started:
            try:
                serve.shutdown()
            except Exception:
                log.exception("serve shutdown failed")
            self.serve_started = False
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
            self.started_ray = False
        if self.sandbox is not None and self.sandbox.poll() is None:
            self.sandbox.terminate()
            try:
                self.sandbox.wait(10)
            except subprocess.TimeoutExpired:
                self.sandbox.kill()
                self.sandbox.wait(10)
        if self.redis is not None:
            self.redis.stop()
        if self.haproxy_dir is not None:
            shutil.rmtree(self.haproxy_dir, ignore_errors=True)
