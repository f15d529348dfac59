"""What every benchmark needs: a platform of its own, and wrk scripts that cycle requests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from cluster.launcher import Platform
from storage.server import EmbeddedCluster, free_port
from storage.settings import Settings


def cpu_seconds(proc: psutil.Process | None) -> float:
    """CPU seconds a process has used so far, user and system (0 for no process)."""
    if proc is None:
        return 0.0
    times = proc.cpu_times()
    return float(times.user + times.system)


def process_label(argv: list[str], name: str) -> str:
    """What a process of the platform is: a Ray actor by its class (not the method it
    is running), a Python process by its module or script, anything else by `name`."""
    if argv and argv[0].startswith("ray::"):
        return argv[0].split(".")[0]
    if "-m" in argv[:-1]:
        return f"python -m {argv[argv.index('-m') + 1]}"
    if argv and argv[0].endswith(("python", "python3")) and len(argv) > 1:
        return f"python {Path(argv[1]).name}"
    return name


def cpu_by_label(leave_out: tuple[str, ...] = (), me: str = "") -> dict[str, float]:
    """CPU seconds so far of each process this one started (the platform's: Valkey,
    HAProxy, Ray's actors and replicas; other platforms on the machine are not among
    them), summed by `process_label`, without the labels in `leave_out` (a benchmark's
    own load generators); this process too, as `me`, when `me` is given."""
    spent: dict[str, float] = {me: cpu_seconds(psutil.Process())} if me else {}
    for proc in psutil.Process().children(recursive=True):
        try:
            label = process_label(proc.cmdline(), proc.name())
            if label in leave_out:
                continue
            spent[label] = spent.get(label, 0.0) + cpu_seconds(proc)
        except psutil.Error:
            continue
    return spent


# A benchmark speaks for a whole city through a handful of tokens: the limits of a
# load generator, not of a person (the limiter still runs, and is measured with the rest).
LOAD_GENERATOR_LIMITS = {
    f"rate_limit_{route}": "1000000/second" for route in ("place", "write", "read", "auth")
}
# Nor the risk checks of a person (`domain/risk.py`: 0 turns a rule off): its few
# customers order hundreds of times a minute and its riders deliver at once.
LOAD_GENERATOR_RISK = {
    "risk_max_orders_per_customer": 0,
    "risk_max_failures_per_customer": 0,
    "risk_rider_max_speed_kmh": 0,
}


@contextmanager
def fresh_platform(prefix: str, **overrides: Any) -> Iterator[Platform]:
    """A whole platform on fresh ports with a fresh Redis in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        chosen: dict[str, Any] = {
            "redis_url": "",
            "redis_port": free_port(),
            "data_dir": work / "data",
            "http_port": free_port(),
            "sandbox_port": free_port(),
            "dev_mode": True,
            # The figures stay those of the platform alone.
            "ray_dashboard": False,
            **LOAD_GENERATOR_LIMITS,
            **LOAD_GENERATOR_RISK,
            **overrides,
        }
        settings = Settings(**chosen)
        platform = Platform(settings, work)
        platform.start()
        try:
            yield platform
        finally:
            platform.stop()


@contextmanager
def fresh_cluster(
    data_dir: Path, primaries: int = 3, replicas: int = 1
) -> Iterator[EmbeddedCluster]:
    """A Valkey cluster of our own (`primaries` primaries with `replicas` replicas each,
    on fresh ports, on the settings' durability defaults), every node stopped by pid."""
    defaults = Settings()
    cluster = EmbeddedCluster(
        data_dir,
        defaults.appendfsync,
        defaults.redis_aof_rewrite_min_mb,
        primaries=primaries,
        replicas=replicas,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def wrk_requests(
    path: Path, token: str, method: str, paths: list[str], bodies: list[str] | None = None
) -> Path:
    """A wrk script sending `method` to each path in turn (with the matching JSON body)."""
    lua = ["local paths = {"] + [f'  "{p}",' for p in paths] + ["}"]
    if bodies is not None:
        lua += ["local bodies = {"] + [f"  [[{b}]]," for b in bodies] + ["}"]
    lua += [
        "local i = 0",
        "request = function()",
        "  i = i + 1",
        f'  local headers = {{["Authorization"] = "Bearer {token}"}}',
    ]
    if bodies is not None:
        lua += [
            '  headers["Content-Type"] = "application/json"',
            f'  return wrk.format("{method}", paths[(i % #paths) + 1], headers,'
            " bodies[(i % #bodies) + 1])",
        ]
    else:
        lua += [f'  return wrk.format("{method}", paths[(i % #paths) + 1], headers)']
    lua.append("end")
    path.write_text("\n".join(lua) + "\n")
    return path
