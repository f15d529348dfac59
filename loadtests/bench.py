"""`make bench`: the platform's speed figures, side by side, in one run on this machine.

One platform (HAProxy front door), then at a fixed concurrency:
- the full loop: `loadtests/full_loop.py`, customers walking place → pay → accept →
  offer → ready → pickup → deliver with no think time, merchants and riders on
  WebSockets; orders delivered per second, the loop's p50 and p99 and every step's;
- the floor: `GET /v1/health/live`, Serve and nothing else;
- order placement: `POST /v1/orders` (merchant actor, Lua script, signed pay link);
  the floor and placement take turns for three rounds, and the round with the median
  throughput is reported for each (every round is kept in the JSON): on this shared
  machine one run of either drifts by about 15%, and the ratio of the two is taken
  round by round so that a slow minute slows both sides of it;
- order read: `GET /v1/orders/{id}` while placement runs at full speed beside it;
then the resident memory of every process the run started. wrk and the loop driver
share the two cores with the platform; their CPU share is reported beside each figure.
Writes bench/results.json and bench/results.png.

    python -m loadtests.bench [--duration 15] [--connections 32] [--concurrency 16]

The full loop runs 16 customers: on 2 cores 16 already keep the platform busy (a
30 s run delivered 38.5 orders/s at 16, 39.8 at 24 and 36.0 at 32), and customers
beyond that only queue, which stretches every step's latency without delivering more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import psutil

from loadtests.frontdoor import prepare, run_wrk, wrk_script
from loadtests.harness import fresh_platform, process_label, wrk_requests

Row = dict[str, Any]


def read_script(path: Path, token: str, order_ids: list[str]) -> Path:
    return wrk_requests(path, token, "GET", [f"/v1/orders/{oid}" for oid in order_ids])


def placed_orders(url: str, token: str) -> list[str]:
    answer = httpx.get(
        f"{url}/v1/orders", params={"limit": 100}, headers={"Authorization": f"Bearer {token}"}
    )
    return [o["id"] for o in answer.json()["orders"]]


def full_loop(url: str, concurrency: int, duration_s: int, work: Path) -> dict[str, Any]:
    """The lean asyncio driver (`loadtests/full_loop.py`) as its own process."""
    out = work / "full_loop.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.full_loop",
            "--url",
            url,
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration_s),
            "--json",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=duration_s + 600,
    )
    report: dict[str, Any] = json.loads(out.read_text())
    # The ids are for the chaos runs' checks, not for the figures.
    report.pop("acknowledged_orders", None)
    report.pop("merchant_ids", None)
    return report


def median_round(rounds: list[Row]) -> Row:
    """The round whose throughput is the median, with every round's figures beside it."""
    ranked = sorted(rounds, key=lambda r: r["requests_per_s"])
    summary = ("requests_per_s", "p50_ms", "p99_ms")
    return {
        **ranked[len(ranked) // 2],
        "rounds": [{k: r[k] for k in summary} for r in rounds],
    }


def memory(platform_pid: int) -> dict[str, float]:
    """Resident memory (MiB) of every process this run started, by what it is."""
    out: dict[str, float] = {}
    for proc in psutil.Process(platform_pid).children(recursive=True):
        try:
            argv = proc.cmdline()
            rss = proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
        name = process_label(argv, proc.name())
        key, n = name, 2
        while key in out:
            key, n = f"{name} #{n}", n + 1
        out[key] = round(rss, 1)
    return out


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        ("floor", results["floor"]["requests_per_s"], results["floor"]["p99_ms"]),
        ("place order", results["place_order"]["requests_per_s"], results["place_order"]["p99_ms"]),
        ("read order", results["read_order"]["requests_per_s"], results["read_order"]["p99_ms"]),
        (
            "full loop",
            results["full_loop"]["delivered_per_s"],
            results["full_loop"]["worst_step_p99_ms"] or 0,
        ),
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r[0] for r in rows]
    left.bar(names, [r[1] for r in rows], color="#3b7dd8")
    left.set_title("throughput (requests/s; full loop: orders delivered/s)")
    right.bar(names, [r[2] for r in rows], color="#d8703b")
    right.set_title("p99 latency (ms; full loop: worst step)")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=15)
    fig.suptitle(f"o2o on {psutil.cpu_count()} cores, load generator included")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="floor and placement turns")
    parser.add_argument("--concurrency", type=int, default=16, help="full loop: customers")
    parser.add_argument("--loop-duration", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    c, d = args.connections, args.duration
    with fresh_platform("o2o-bench-") as platform:
        work = platform.run_dir
        url = platform.url
        # The loop first: the placement rows leave some 100,000 unpaid orders, which the
        # payment poller works through for the next 15 minutes (at most 100 a second per
        # payment host), and the loop would carry that load too.
        loop = full_loop(url, args.concurrency, args.loop_duration, work)
        token, bodies = prepare(url)
        place = wrk_script(work / "place.lua", token, bodies)
        run_wrk(f"{url}/v1/health/live", 3, c, None)
        run_wrk(url, 3, c, place)
        floors: list[Row] = []
        placements: list[Row] = []
        for _ in range(args.rounds):
            floors.append(run_wrk(f"{url}/v1/health/live", d, c, None))
            placements.append(run_wrk(url, d, c, place))
        floor, placement = median_round(floors), median_round(placements)
        read = read_script(work / "read.lua", token, placed_orders(url, token))
        beside: dict[str, Any] = {}
        writer = threading.Thread(
            target=lambda: beside.update(run_wrk(url, d, c, place)), daemon=True
        )
        writer.start()
        reading = run_wrk(url, d, max(4, c // 4), read)
        writer.join()
        mem = memory(os.getpid())
    results = {
        "connections": c,
        "duration_s": d,
        "floor": floor,
        "place_order": placement,
        "place_to_floor_ratio": round(
            statistics.median(
                [
                    p["requests_per_s"] / f["requests_per_s"]
                    for f, p in zip(floors, placements, strict=True)
                ]
            ),
            3,
        ),
        "read_order": reading,
        "place_order_beside_reads": beside,
        "full_loop": loop,
        "memory_mib": mem,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    chart(results, args.out.with_suffix(".png"))
    print(
        f"wrk -c{c} -d{d}s (floor and placement: the median of {args.rounds} rounds); "
        f"full loop: loadtests.full_loop --concurrency {args.concurrency}, "
        f"{args.loop_duration} s\n"
    )
    print("| figure | throughput | p50 ms | p99 ms | load generator CPU |")
    print("|---|---|---|---|---|")
    for name, r in (
        ("floor GET /v1/health/live", floor),
        ("POST /v1/orders", placement),
        ("GET /v1/orders/{id} beside placement", reading),
        ("POST /v1/orders beside reads", beside),
    ):
        print(
            f"| {name} | {r['requests_per_s']:.0f}/s | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['wrk_cpu_share']:.0%} |"
        )
    print(
        f"| full loop, orders delivered | {loop['delivered_per_s']}/s | "
        f"{loop['loop_p50_ms']:.0f} (loop) | {loop['loop_p99_ms']:.0f} (loop); "
        f"{loop['worst_step_p99_ms']} ({loop['worst_step']}) | {loop['driver_cpu_share']:.0%} |"
    )
    for name, row in (("floor", floor), ("placement", placement)):
        each = ", ".join(
            f"{r['requests_per_s']:.0f}/s p99 {r['p99_ms']:.1f}" for r in row["rounds"]
        )
        print(f"{name} rounds: {each}")
    print(
        f"\nplacement / floor: {results['place_to_floor_ratio']:.1%} (median of the rounds); "
        f"full-loop failures: {loop['failures']}"
    )


if __name__ == "__main__":
    main()
