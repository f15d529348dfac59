"""`make bench`: the platform's speed figures, side by side, in one run on this machine.

The full loop (`loadtests/full_loop.py`: customers walking place → pay → accept →
offer → ready → pickup → deliver with no think time, merchants and riders on
WebSockets) in three columns, each run on a fresh platform of its own, one platform at
a time:
- on the embedded single server (what `make run` starts);
- on a Valkey cluster of three primaries with a replica each (`storage.server.
  EmbeddedCluster`, started for the run and stopped by pid; `REDIS_URL=redis+cluster://`);
- on that cluster with every order change waiting for one replica
  (`O2O_REDIS_WAIT_REPLICAS=1`), unless `--no-cluster-wait`.
Each column runs `--loop-rounds` times (2), the order reversed every other round
(single, cluster, wait, wait, cluster, single), so that the machine's drift (about
±15% between runs on this shared machine) weighs on every column alike. Printed for
each: orders delivered per second (over all its runs' seconds), the loop's p50 and p99
and every step's p99 (the mean of its runs'), and the CPU milliseconds per delivered
order of every process (the Valkey nodes in one row: 1 process or 6), measured from the
first customer's start to the last one's delivery (the driver says when on its stdout,
`MarkedLoop`), so the city's setup and the platform's start are left out.

After its first loop, the single server's platform (HAProxy front door) also gives:
- the floor: `GET /v1/health/live`, Serve and nothing else;
- order placement: `POST /v1/orders` (merchant actor, Lua script, signed pay link);
  the floor and placement take turns for three rounds, and the round with the median
  throughput is reported for each (every round is kept in the JSON): on this shared
  machine one run of either drifts by about 15%, and the ratio of the two is taken
  round by round so that a slow minute slows both sides of it;
- order read: `GET /v1/orders/{id}` while placement runs at full speed beside it;
the floor's and placement's rounds each with the CPU milliseconds per answered request
of every process (utime + stime from `/proc` before and after the round); then the
resident memory of every process the run started. wrk and the loop driver
share the two cores with the platform; their CPU share is reported beside each figure.
Writes bench/results.json (`full_loop`, `full_loop_cluster`, `full_loop_cluster_wait_1`,
each with its runs in `rounds`; `full_loop_runs` in the order they ran) and
bench/results.png.

    python -m loadtests.bench [--duration 15] [--connections 32] [--concurrency 16]
        [--loop-duration 30] [--loop-rounds 2] [--no-cluster] [--no-cluster-wait]

Time: six platforms of 23-26 s each to start, set up and stop on a quiet machine (up
to a minute when others load it), 6 x 30 s of loop and about 2 minutes of wrk: about
7.5 minutes in all on 2 cores, against 3.5 before the cluster's columns
(`--no-cluster`: about 4; `--no-cluster-wait` saves about 2). The third column is in
the default because those 2 minutes answer what waiting for a replica costs, which
the cluster's own column cannot. `--loop-rounds 1 --loop-duration 60 --no-cluster` is
the earlier `make bench`.

The full loop runs 16 customers: on 2 cores 16 already keep the platform busy (a
30 s run delivered 38.5 orders/s at 16, 39.8 at 24 and 36.0 at 32), and customers
beyond that only queue, which stretches every step's latency without delivering more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from cluster.launcher import Platform
from loadtests.frontdoor import prepare, run_wrk, wrk_script
from loadtests.full_loop import FullLoop
from loadtests.harness import (
    cpu_seconds,
    fresh_cluster,
    fresh_platform,
    process_label,
    wrk_requests,
)

Row = dict[str, Any]

# The rows every run has, whatever else it started.
VALKEY = "valkey-server"
DRIVER = "python -m loadtests.full_loop"
BENCH = "python -m loadtests.bench (Ray driver)"
# What the driver says on stdout at the ends of the window its CPU figures cover.
WINDOW_START = "o2o-bench: customers start"
WINDOW_END = "o2o-bench: customers done"


def read_script(path: Path, token: str, order_ids: list[str]) -> Path:
    return wrk_requests(path, token, "GET", [f"/v1/orders/{oid}" for oid in order_ids])


def placed_orders(url: str, token: str) -> list[str]:
    answer = httpx.get(
        f"{url}/v1/orders", params={"limit": 100}, headers={"Authorization": f"Bearer {token}"}
    )
    return [o["id"] for o in answer.json()["orders"]]


class MarkedLoop(FullLoop):
    """The full-loop driver, saying on its stdout when its customers start and when the
    last of them is done (its orders under way delivered or given up): the window the
    CPU of every process is measured over, without the city's setup or the teardown."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.walking = 0
        self.begun = False

    async def customer(self, index: int, token: str, until: float) -> None:
        if not self.begun:
            self.begun = True
            print(WINDOW_START, flush=True)
        self.walking += 1
        try:
            await super().customer(index, token, until)
        finally:
            self.walking -= 1
            if self.walking == 0:
                print(f"{WINDOW_END} {len(self.delivered_at)}", flush=True)


def drive(argv: list[str]) -> None:
    """The driver process: `loadtests.full_loop`'s run, marked (`MarkedLoop`)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    loop = MarkedLoop(args.url, args.concurrency, args.duration, 16, args.concurrency)
    report = asyncio.run(loop.go())
    args.json.write_text(json.dumps(report) + "\n")


def cpu_by_pid(labels: dict[int, str]) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process and every process under it, by pid, each with
    what it is (`labels` first; every Valkey node of a run in one row)."""
    me = psutil.Process()
    out: dict[int, tuple[str, float]] = {}
    for proc in (me, *me.children(recursive=True)):
        try:
            argv = proc.cmdline()
            label = labels.get(proc.pid) or process_label(argv, proc.name())
            if label == "python -u":  # `python -u script.py`: Ray's own daemons
                label = f"python {Path(next((a for a in argv[2:] if a[0] != '-'), '-')).name}"
            out[proc.pid] = (VALKEY if "valkey-server" in label else label, cpu_seconds(proc))
        except psutil.Error:
            continue
    return out


def cpu_spent(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds between two `cpu_by_pid` readings, by what each process is: a process
    started in between counts from 0, one gone by the second reading is left out."""
    spent: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        spent[label] = spent.get(label, 0.0) + seconds - before.get(pid, (label, 0.0))[1]
    return spent


def full_loop(url: str, concurrency: int, duration_s: int, work: Path) -> dict[str, Any]:
    """The lean asyncio driver (`loadtests/full_loop.py`) as its own process, and the CPU
    every process used while its customers walked, by what the process is: from the
    first customer's start until the last one's orders are delivered, so the orders
    under way when placing stops are counted with the CPU they cost."""
    out = work / "full_loop.json"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from loadtests.bench import drive; drive(sys.argv[1:])",
            *("--url", url, "--concurrency", str(concurrency)),
            *("--duration", str(duration_s), "--json", str(out)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    labels = {os.getpid(): BENCH, driver.pid: DRIVER}
    watchdog = threading.Timer(duration_s + 600, driver.kill)
    watchdog.start()
    before: dict[int, tuple[str, float]] = {}
    after: dict[int, tuple[str, float]] = {}
    deliveries = 0
    try:
        assert driver.stdout is not None
        for line in driver.stdout:
            if line.startswith(WINDOW_START):
                before = cpu_by_pid(labels)
            elif line.startswith(WINDOW_END):
                after = cpu_by_pid(labels)
                deliveries = int(line.rsplit(maxsplit=1)[1])
        driver.wait()
    finally:
        watchdog.cancel()
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    if driver.returncode != 0 or not after:
        raise subprocess.CalledProcessError(driver.returncode, driver.args)
    spent = cpu_spent(before, after)
    report: dict[str, Any] = json.loads(out.read_text())
    # The ids are for the chaos runs' checks, not for the figures.
    report.pop("acknowledged_orders", None)
    report.pop("merchant_ids", None)
    report["cpu_s"] = {k: round(v, 3) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    report["valkey_processes"] = sum(1 for label, _ in after.values() if label == VALKEY)
    # Every order delivered in the window, those after placing stopped included, as the
    # CPU is: `delivered` counts only the placing window's, for the throughput.
    report["deliveries_in_window"] = deliveries
    return report


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one column as one: throughput over all their seconds, latencies the
    mean of the runs' percentiles (the driver keeps no samples), CPU summed and divided
    by every delivery; each run's own figures beside."""
    first = reports[0]
    names = sorted({name for r in reports for name in r["steps"]})
    steps = {}
    for name in names:
        rows = [r["steps"][name] for r in reports if name in r["steps"]]
        steps[name] = {
            "count": sum(row["count"] for row in rows),
            "p50_ms": round(statistics.mean(row["p50_ms"] for row in rows), 1),
            "p99_ms": round(statistics.mean(row["p99_ms"] for row in rows), 1),
        }
    failures: Counter[str] = Counter()
    cpu: dict[str, float] = {}
    for r in reports:
        failures.update(r["failures"])
        for label, seconds in r["cpu_s"].items():
            cpu[label] = cpu.get(label, 0.0) + seconds
    deliveries = sum(r["deliveries_in_window"] for r in reports)
    duration = sum(r["duration_s"] for r in reports)
    delivered = sum(r["delivered"] for r in reports)

    def per_order(seconds: float) -> float:
        return round(1000 * seconds / deliveries, 2) if deliveries else float("nan")

    by_process = {k: per_order(v) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])}
    return {
        "concurrency": first["concurrency"],
        "merchants": first["merchants"],
        "riders": first["riders"],
        "runs": len(reports),
        "duration_s": duration,
        "delivered": delivered,
        "delivered_per_s": round(delivered / duration, 1),
        "loop_p50_ms": round(statistics.mean(r["loop_p50_ms"] for r in reports), 1),
        "loop_p99_ms": round(statistics.mean(r["loop_p99_ms"] for r in reports), 1),
        "worst_step": max(steps, key=lambda k: steps[k]["p99_ms"], default=None),
        "worst_step_p99_ms": max((v["p99_ms"] for v in steps.values()), default=None),
        "failures": dict(failures),
        "steps": steps,
        "driver_cpu_share": round(statistics.mean(r["driver_cpu_share"] for r in reports), 3),
        "valkey_processes": first["valkey_processes"],
        "deliveries_in_windows": deliveries,
        "cpu_ms_per_delivered_order": {"total": per_order(sum(cpu.values())), **by_process},
        "rounds": [
            {
                "delivered_per_s": r["delivered_per_s"],
                "loop_p50_ms": r["loop_p50_ms"],
                "loop_p99_ms": r["loop_p99_ms"],
                "worst_step_p99_ms": r["worst_step_p99_ms"],
                "cpu_ms_per_delivered_order": round(
                    1000 * sum(r["cpu_s"].values()) / max(1, r["deliveries_in_window"]), 2
                ),
                "failures": r["failures"],
            }
            for r in reports
        ],
    }


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
    for key, name in (
        (CLUSTER.key, "full loop, cluster"),
        (CLUSTER_WAIT.key, "full loop, WAIT 1"),
    ):
        if key in results:
            rows.append(
                (name, results[key]["delivered_per_s"], results[key]["worst_step_p99_ms"] or 0)
            )
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


@dataclass(frozen=True)
class Column:
    """One way to run the platform for the full loop: its Redis and its durability."""

    title: str
    key: str  # in results.json
    cluster: bool = False
    wait_replicas: int = 0


SINGLE = Column("single server", "full_loop")
CLUSTER = Column("cluster, 3 primaries + 3 replicas", "full_loop_cluster", cluster=True)
CLUSTER_WAIT = Column(
    "cluster, WAIT 1 replica", "full_loop_cluster_wait_1", cluster=True, wait_replicas=1
)


def run_order(columns: list[Column], rounds: int) -> list[Column]:
    """Every column once a round, the order reversed every other round (A B C C B A):
    a machine that speeds up or slows down over the run weighs on every column alike."""
    order: list[Column] = []
    for n in range(rounds):
        order += columns if n % 2 == 0 else columns[::-1]
    return order


@contextmanager
def platform_for(column: Column) -> Iterator[Platform]:
    """A fresh platform on the column's Redis: the embedded single server, or a Valkey
    cluster of three primaries with a replica each started for it and stopped after."""
    with contextlib.ExitStack() as stack:
        overrides: dict[str, Any] = {}
        if column.cluster:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="o2o-bench-cluster-"))
            cluster = stack.enter_context(fresh_cluster(Path(tmp)))
            overrides = {"redis_url": cluster.url, "redis_wait_replicas": column.wait_replicas}
        yield stack.enter_context(fresh_platform("o2o-bench-", **overrides))


def wrk_rows(platform: Platform, args: argparse.Namespace) -> dict[str, Any]:
    """Floor, placement and reads on the single server's platform, after its loop."""
    c, d = args.connections, args.duration
    work, url = platform.run_dir, platform.url
    token, bodies = prepare(url)
    place = wrk_script(work / "place.lua", token, bodies)
    run_wrk(f"{url}/v1/health/live", 3, c, None)
    run_wrk(url, 3, c, place)
    floors: list[Row] = []
    placements: list[Row] = []
    for _ in range(args.rounds):
        floors.append(costed(lambda: run_wrk(f"{url}/v1/health/live", d, c, None), d))
        placements.append(costed(lambda: run_wrk(url, d, c, place), d))
    read = read_script(work / "read.lua", token, placed_orders(url, token))
    beside: dict[str, Any] = {}
    writer = threading.Thread(target=lambda: beside.update(run_wrk(url, d, c, place)), daemon=True)
    writer.start()
    reading = run_wrk(url, d, max(4, c // 4), read)
    writer.join()
    return {
        "floor": median_round(floors),
        "place_order": median_round(placements),
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
        "memory_mib": memory(os.getpid()),
    }


def costed(run: Callable[[], Row], duration_s: int) -> Row:
    """A wrk row with the CPU each process of the platform spent during it, in ms per
    request answered (wrk itself apart: it is gone by the second reading)."""
    labels = {os.getpid(): BENCH}
    before = cpu_by_pid(labels)
    row = run()
    spent = cpu_spent(before, cpu_by_pid(labels))
    requests = max(1.0, row["requests_per_s"] * duration_s)
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])
    row["cpu_ms_per_request"] = {
        "total": round(1000 * sum(spent.values()) / requests, 3),
        **{label: round(1000 * seconds / requests, 3) for label, seconds in ranked},
    }
    return row


def cpu_line(name: str, row: Row) -> str:
    """The CPU per request of a wrk row: its total and the processes that spent most."""
    cpu = row["cpu_ms_per_request"]
    top = [(k, v) for k, v in cpu.items() if k != "total" and v >= 0.01][:6]
    return f"{name}: {cpu['total']:.2f} ms (" + ", ".join(f"{k} {v:.2f}" for k, v in top) + ")"


def side_by_side(loops: dict[Column, dict[str, Any]]) -> list[str]:
    """The full loop of every column as one Markdown table."""
    columns = list(loops)
    lines = [
        "| full loop | " + " | ".join(c.title for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]

    def row(name: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(loops[c]) for c in columns) + " |")

    def with_rounds(field: str, form: str) -> Callable[[dict[str, Any]], str]:
        def cell(loop: dict[str, Any]) -> str:
            each = [r[field] for r in loop["rounds"]]
            runs = f" ({' / '.join(format(v, form) for v in each)})" if len(each) > 1 else ""
            return format(loop[field], form) + runs

        return cell

    row("orders delivered/s", with_rounds("delivered_per_s", ".1f"))
    row("loop p50 ms", lambda loop: f"{loop['loop_p50_ms']:.0f}")
    row("loop p99 ms", with_rounds("loop_p99_ms", ".0f"))

    def p99(step: str) -> Callable[[dict[str, Any]], str]:
        return lambda loop: f"{loop['steps'][step]['p99_ms']:.0f}" if step in loop["steps"] else "-"

    for step in sorted({step for loop in loops.values() for step in loop["steps"]}):
        row(f"p99 ms {step}", p99(step))

    def cpu(label: str) -> Callable[[dict[str, Any]], float]:
        return lambda loop: float(loop["cpu_ms_per_delivered_order"].get(label, 0.0))

    def cpu_cell(label: str) -> Callable[[dict[str, Any]], str]:
        return lambda loop: f"{cpu(label)(loop):.1f}"

    row("CPU ms per delivered order, every process", cpu_cell("total"))
    labels = {label for loop in loops.values() for label in loop["cpu_ms_per_delivered_order"]}
    labels.discard("total")
    shown = sorted(
        (label for label in labels if max(map(cpu(label), loops.values())) >= 0.5),
        key=lambda label: -max(map(cpu(label), loops.values())),
    )
    for label in shown:
        name = label
        if label == VALKEY:
            nodes = sorted({loop["valkey_processes"] for loop in loops.values()})
            name = f"{label} ({' / '.join(map(str, nodes))} processes)"
        row(f"CPU ms: {name}", cpu_cell(label))
    row(
        "CPU ms: every other process",
        lambda loop: f"{sum(cpu(label)(loop) for label in labels - set(shown)):.1f}",
    )
    row(
        "failures",
        lambda loop: ", ".join(f"{k}: {v}" for k, v in sorted(loop["failures"].items())) or "none",
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds of each wrk row")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="floor and placement turns")
    parser.add_argument("--concurrency", type=int, default=16, help="full loop: customers")
    parser.add_argument(
        "--loop-duration", type=int, default=30, help="seconds of each full-loop run"
    )
    parser.add_argument(
        "--loop-rounds",
        type=int,
        default=2,
        help="full-loop runs per column, each on a fresh platform, in the order A B C C B A",
    )
    parser.add_argument(
        "--cluster",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the full loop also on a Valkey cluster of three primaries with a replica each",
    )
    parser.add_argument(
        "--cluster-wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --cluster: a third column, every order change waiting for one replica",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    c, d = args.connections, args.duration
    columns = [SINGLE]
    if args.cluster:
        columns += [CLUSTER, CLUSTER_WAIT] if args.cluster_wait else [CLUSTER]
    order = run_order(columns, args.loop_rounds)
    began = time.monotonic()
    reports: dict[Column, list[dict[str, Any]]] = {column: [] for column in columns}
    rows: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    for n, column in enumerate(order, 1):
        started = time.monotonic()
        with platform_for(column) as platform:
            up = time.monotonic() - started
            # The loop first: the placement rows leave some 100,000 unpaid orders, which
            # the payment poller works through for the next 15 minutes (at most 100 a
            # second per payment host), and the loop would carry that load too.
            report = full_loop(platform.url, args.concurrency, args.loop_duration, platform.run_dir)
            reports[column].append(report)
            if column is SINGLE and not rows:
                rows = wrk_rows(platform, args)
        runs.append(
            {
                "column": column.key,
                "platform_start_s": round(up, 1),
                "run_s": round(time.monotonic() - started, 1),
                "delivered_per_s": report["delivered_per_s"],
            }
        )
        print(
            f"[{n}/{len(order)}] {column.title}: {report['delivered_per_s']} delivered/s, "
            f"loop p99 {report['loop_p99_ms']:.0f} ms (platform up in {up:.0f} s, "
            f"{time.monotonic() - started:.0f} s in all)",
            file=sys.stderr,
            flush=True,
        )
    loops = {column: combine(reports[column]) for column in columns}
    elapsed = time.monotonic() - began
    floor, placement, reading, beside = (
        rows["floor"],
        rows["place_order"],
        rows["read_order"],
        rows["place_order_beside_reads"],
    )
    loop = loops[SINGLE]
    results = {
        "connections": c,
        "duration_s": d,
        **{k: v for k, v in rows.items() if k != "memory_mib"},
        **{column.key: loops[column] for column in columns},
        "full_loop_runs": runs,
        "elapsed_s": round(elapsed),
        "memory_mib": rows["memory_mib"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    chart(results, args.out.with_suffix(".png"))
    print(
        f"wrk -c{c} -d{d}s (floor and placement: the median of {args.rounds} rounds); "
        f"full loop: loadtests.full_loop --concurrency {args.concurrency}, "
        f"{args.loop_rounds} x {args.loop_duration} s per column, each run on a fresh "
        f"platform, in the order {' → '.join(column.title for column in order)}\n"
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
    print("CPU ms per request, every process (the median round):")
    for name, row in (("floor", floor), ("placement", placement)):
        print(f"  {cpu_line(name, row)}")
    print(
        f"\nplacement / floor: {results['place_to_floor_ratio']:.1%} (median of the rounds); "
        f"full-loop failures: {loop['failures']}\n"
    )
    print(
        "The full loop by Redis (delivered/s and loop p99: every run's in brackets; "
        "latencies the mean of the runs'; CPU of every process from the first customer's "
        "start to the last one's delivery, per order delivered in that time):\n"
    )
    print("\n".join(side_by_side(loops)))
    print(f"\n{elapsed / 60:.1f} minutes in all")


if __name__ == "__main__":
    main()
