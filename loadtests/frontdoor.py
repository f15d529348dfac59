"""Measure the front door: Serve's own proxy against Serve's HAProxy mode, in one run.

For each mode: start the whole platform on fresh ports and a fresh Redis, onboard
merchants with deep stock, then drive `GET /v1/health/live` (the floor: Serve and
nothing else) and `POST /v1/orders` (an actor, a Lua script, a signed pay link) with
wrk at a fixed concurrency. Writes `bench/frontdoor.json` and prints a table.

    python -m loadtests.frontdoor [--duration 15] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from loadtests.harness import fresh_platform, wrk_requests

MERCHANTS = 16


def _token(client: httpx.Client, role: str, sub: str) -> str:
    token: str = client.post("/v1/auth/dev-token", json={"role": role, "sub": sub}).json()["token"]
    return token


def prepare(url: str) -> tuple[str, list[str]]:
    """Merchants with stock that will not run out; returns a customer token and order bodies."""
    with httpx.Client(base_url=url, timeout=30) as client:
        admin = {"Authorization": f"Bearer {_token(client, 'admin', 'bench')}"}
        bodies = []
        for i in range(MERCHANTS):
            merchant_id = f"m_bench_{i}"
            lat, lng = 30.25 + 0.001 * i, 120.15
            client.post(
                "/v1/merchants",
                headers=admin,
                json={
                    "id": merchant_id,
                    "name": f"Bench {i}",
                    "lat": lat,
                    "lng": lng,
                    "delivery": {"radius_m": 5000},
                },
            ).raise_for_status()
            merchant = {"Authorization": f"Bearer {_token(client, 'merchant', merchant_id)}"}
            client.put(
                f"/v1/merchants/{merchant_id}/menu/items/rice",
                headers=merchant,
                json={"name": "Rice", "price_fen": 300, "stock": 1_000_000_000},
            ).raise_for_status()
            bodies.append(
                json.dumps(
                    {
                        "merchant_id": merchant_id,
                        "items": [{"item_id": "rice", "qty": 1}],
                        "delivery": {"lat": lat + 0.005, "lng": lng, "address": "bench"},
                    }
                )
            )
        return _token(client, "customer", "c_bench"), bodies


def wrk_script(path: Path, token: str, bodies: list[str]) -> Path:
    return wrk_requests(path, token, "POST", ["/v1/orders"], bodies)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, duration_s: int, connections: int, script: Path | None) -> dict[str, Any]:
    cmd = [
        "wrk",
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    started = time.monotonic()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cpu = 0.0
    while proc.poll() is None:
        try:
            times = proc.cpu_times()
            cpu = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    out = proc.stdout.read() if proc.stdout else ""
    wall = time.monotonic() - started
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))

    def parse(v: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s)", v)
        return _ms(m.group(1), m.group(2)) if m else float("nan")

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "requests_per_s": rps,
        "p50_ms": parse(pct.get("50", "nan")),
        "p99_ms": parse(pct.get("99", "nan")),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
        # Share of the machine's 2 cores that the load generator itself used.
        "wrk_cpu_share": round(cpu / wall / psutil.cpu_count(), 3),
    }


def measure(mode: str, duration_s: int, connections: int) -> dict[str, Any]:
    with fresh_platform(f"o2o-{mode}-", front_door=mode) as platform:
        token, bodies = prepare(platform.url)
        script = wrk_script(platform.run_dir / f"orders-{mode}.lua", token, bodies)
        run_wrk(platform.url + "/v1/health/live", 3, connections, None)  # warm-up
        floor = run_wrk(platform.url + "/v1/health/live", duration_s, connections, None)
        run_wrk(platform.url, 3, connections, script)  # warm-up
        orders = run_wrk(platform.url, duration_s, connections, script)
    return {"floor": floor, "place_order": orders}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("bench/frontdoor.json"))
    parser.add_argument("--mode", choices=("proxy", "haproxy"), help=argparse.SUPPRESS)
    parser.add_argument("--modes", default="proxy,haproxy", help="front doors to measure")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.duration, args.connections)))
        return
    results: dict[str, Any] = {"connections": args.connections, "duration_s": args.duration}
    modes = args.modes.split(",")
    for mode in modes:
        # Each mode in a fresh process: Serve reads its ingress mode once per process.
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtests.frontdoor",
                "--mode",
                mode,
                "--duration",
                str(args.duration),
                "--connections",
                str(args.connections),
            ],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, one API replica, 2 cores shared\n")
    print("| front door | route | requests/s | p50 ms | p99 ms | non-2xx | wrk CPU share |")
    print("|---|---|---|---|---|---|---|")
    for mode in modes:
        for route, name in (("floor", "GET /v1/health/live"), ("place_order", "POST /v1/orders")):
            r = results[mode][route]
            print(
                f"| {mode} | {name} | {r['requests_per_s']:.0f} | {r['p50_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['non_2xx']} | {r['wrk_cpu_share']:.0%} |"
            )


if __name__ == "__main__":
    main()
