"""`make bench-isolation`: one greedy client or one slow merchant cannot slow the rest.

One platform of its own (HAProxy front door, the default rate limits, faults armable),
16 merchants with deep stock. "The others" are 50 customers placing orders at 15 of
the merchants at a fixed pace (an open loop: a request leaves on schedule whether or
not the last one came back, so a stall shows in the latency instead of slowing the
client), each customer well inside its own limit. Then:

(a) a greedy client: wrk with `--flood-connections` sockets placing orders as one
    customer as fast as it can for `--duration` seconds. Printed: the flood's answers
    by status (429 once past its limit, each held `rate_limit_hold_s`), and the others'
    placement p99 quiet against during the flood (target: within 2x);
(b) a slow merchant: the 16th merchant's entity made slow on purpose (every
    placement to it held `--slow-s` on its host, past the replica's bound on waiting
    for a merchant), with one more customer placing to it. Printed: the others'
    placement p99 without and with the slow merchant (target: within 20%), each side
    two runs of half the duration, taken in the order without, with, with, without, and
    the slow merchant's answers (503 merchant_unavailable, their latency). The others
    place `--rate-b` orders a second here, half of (a)'s: at 100 a second these 2
    cores are nearly saturated, and the p99 of two 10 s runs with nobody slow differs
    by up to 3x (37 to 119 ms), which would drown what this part measures;
(c) a replica drain, on a second platform of two API replicas: a quarter into the
    others' run the app is deployed again with one replica. Each `serve.run` is a new
    code version to Serve 2.60 (no `version` option: `client.py` draws a random one),
    so this is a rolling update: both running replicas stop, with requests in flight,
    and drain while a new one starts. Printed: their answers by status; a reset or a
    5xx other than 503 is a request the drain lost.

`--haproxy-factor F` (default: the setting's, 2) has HAProxy refuse a caller past F
times its limits itself, before the replica (`serve_app/admission.py`), in (a) and (b);
0 leaves every refusal to the replica. `--parts a` runs the flood alone, to alternate
runs with and without it.

Latency is measured by the client from the send to the last byte. wrk and the paced
client share the machine's cores with the platform. Writes bench/isolation.json.

    python -m loadtests.bench_isolation [--duration 20] [--flood-connections 512]
        [--rate 100] [--rate-b 50] [--slow-s 5] [--haproxy-factor 0] [--parts abc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import redis
from ray import serve

from cluster.launcher import APP_NAME, Platform
from loadtests.frontdoor import prepare
from loadtests.full_loop import percentile
from loadtests.harness import cpu_by_label, fresh_platform
from serve_app.app import build
from storage import keys
from storage.faults import slow_merchant_fault
from storage.settings import Settings

CUSTOMERS = 50
# Every bound of this run: a request waits at most this long for its answer.
REQUEST_TIMEOUT_S = 30.0
# The paced client's setup and tail, beyond the run's own duration.
PACED_SLACK_S = 60.0

Stream = dict[str, Any]


# -- the paced client (its own process: `--paced config.json`) ------------------------


async def paced(config: dict[str, Any]) -> dict[str, Any]:
    """Each stream at its rate for the duration; every answer's latency and status."""
    url, duration = config["url"], config["duration_s"]
    # Per answer: seconds into the run it was sent, its latency (ms), its outcome.
    answers: dict[str, list[tuple[float, float, str]]] = {s["label"]: [] for s in config["streams"]}
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(label: str, token: str, body: str) -> None:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            started = time.perf_counter()
            at = started - begun
            try:
                async with http.post(f"{url}/v1/orders", data=body, headers=headers) as answer:
                    raw = await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as err:
                failed = (time.perf_counter() - started) * 1000
                answers[label].append((at, failed, type(err).__name__))
                return
            elapsed = (time.perf_counter() - started) * 1000
            outcome = str(status)
            if status >= 400:
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                    outcome += f" {orjson.loads(raw)['error']['code']}"
            answers[label].append((at, elapsed, outcome))

        async def stream(spec: Stream) -> None:
            gap = 1.0 / spec["rate"]
            tokens, bodies = spec["tokens"], spec["bodies"]
            start = time.perf_counter()
            i = 0
            while (due := start + i * gap) < start + duration:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                task = asyncio.create_task(
                    one(spec["label"], tokens[i % len(tokens)], bodies[i % len(bodies)])
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1

        begun = time.perf_counter()
        await asyncio.gather(*(stream(s) for s in config["streams"]))
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
    return answers


def summary(rows: list[tuple[float, float, str]]) -> dict[str, Any]:
    latencies = [ms for _, ms, _ in rows]
    placed = [ms for _, ms, outcome in rows if outcome == "201"]
    refused = Counter(int(at) for at, _, outcome in rows if outcome != "201")
    return {
        "requests": len(rows),
        "outcomes": dict(Counter(outcome for _, _, outcome in rows).most_common()),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies, default=0.0), 1),
        "placed_p99_ms": round(percentile(placed, 0.99), 1),
        # When the answers other than 201 were asked for: a transient or throughout.
        "not_placed_by_second": dict(sorted(refused.items())),
    }


def run_paced(work: Path, url: str, duration_s: float, streams: list[Stream]) -> dict[str, Any]:
    """Each stream's summary after a paced run of `duration_s`."""
    return {
        label: summary(rows)
        for label, rows in paced_answers(work, url, duration_s, streams).items()
    }


def paced_answers(
    work: Path, url: str, duration_s: float, streams: list[Stream]
) -> dict[str, list[tuple[float, float, str]]]:
    """Each stream's answers (sent at, ms, outcome), from the paced client's own process."""
    config, out = work / "paced.json", work / "paced-out.json"
    config.write_text(json.dumps({"url": url, "duration_s": duration_s, "streams": streams}))
    subprocess.run(
        [sys.executable, "-m", "loadtests.bench_isolation", "--paced", str(config), str(out)],
        check=True,
        timeout=duration_s + REQUEST_TIMEOUT_S + PACED_SLACK_S,
    )
    answers: dict[str, list[tuple[float, float, str]]] = {
        label: [tuple(row) for row in rows] for label, rows in json.loads(out.read_text()).items()
    }
    return answers


# -- the flood: wrk, counting answers by status ----------------------------------------

FLOOD_LUA = """
local body = [[%(body)s]]
local headers = {["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"}
placed, limited, shed, other = 0, 0, 0, 0
request = function() return wrk.format("POST", "/v1/orders", headers, body) end
response = function(status, _, _)
  if status == 201 then placed = placed + 1
  elseif status == 429 then limited = limited + 1
  elseif status == 503 then shed = shed + 1
  else other = other + 1 end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(_, _, _)
  local t = {0, 0, 0, 0}
  for _, th in ipairs(threads) do
    t[1] = t[1] + th:get("placed"); t[2] = t[2] + th:get("limited")
    t[3] = t[3] + th:get("shed"); t[4] = t[4] + th:get("other")
  end
  io.write(string.format("statuses 201=%%d 429=%%d 503=%%d other=%%d\\n", t[1], t[2], t[3], t[4]))
end
"""


def start_flood(
    work: Path, url: str, token: str, body: str, connections: int, duration_s: int
) -> subprocess.Popen[str]:
    script = work / "flood.lua"
    script.write_text(FLOOD_LUA % {"body": body, "token": token})
    return subprocess.Popen(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration_s}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def flood_result(proc: subprocess.Popen[str], duration_s: int) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=duration_s + 60)
    statuses = re.search(r"statuses 201=(\d+) 429=(\d+) 503=(\d+) other=(\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors:.*", out)
    counts = [int(n) for n in statuses.groups()] if statuses else [0, 0, 0, 0]
    return {
        "requests_per_s": float(rps.group(1)) if rps else 0.0,
        "201": counts[0],
        "429": counts[1],
        "503": counts[2],
        "other": counts[3],
        "socket_errors": errors.group(0) if errors else "",
    }


# -- what the platform's processes spend ------------------------------------------------


def platform_cpu() -> dict[str, float]:
    """CPU seconds so far of this platform's API replicas and HAProxy."""
    spent = cpu_by_label()
    return {
        "replica": sum(v for k, v in spent.items() if k.startswith("ray::ServeReplica")),
        "haproxy": spent.get("haproxy", 0.0),
    }


def with_cpu(run: Any, *args: Any) -> tuple[Any, dict[str, float]]:
    """`run(*args)`'s result, and the share of a core each kind of process used meanwhile."""
    before, started = platform_cpu(), time.monotonic()
    result = run(*args)
    after, elapsed = platform_cpu(), time.monotonic() - started
    return result, {k: round((after[k] - before[k]) / elapsed, 3) for k in after}


# -- the run ---------------------------------------------------------------------------


def tokens(url: str, role: str, subs: list[str]) -> list[str]:
    with httpx.Client(base_url=url, timeout=30) as client:
        return [
            str(client.post("/v1/auth/dev-token", json={"role": role, "sub": s}).json()["token"])
            for s in subs
        ]


def default(name: str) -> Any:
    return Settings.model_fields[name].default


def scale_down(platform: Platform) -> None:
    """From two API replicas to one: a new code version (module docstring), so both
    running replicas drain while a new one starts."""
    serve.run(build(platform.settings, replicas=1), name=APP_NAME, route_prefix="/", blocking=False)


def drain_run(duration_s: int, rate: float) -> dict[str, Any]:
    """(c): a platform of two API replicas; the others place orders while the app is
    deployed again with one a quarter into the run (both replicas drain)."""
    with fresh_platform("o2o-drain-", api_replicas=2) as platform:
        work, url = platform.run_dir, platform.url
        _, bodies = prepare(url)
        quiet = tokens(url, "customer", [f"c_other_{i}" for i in range(CUSTOMERS)])
        others: Stream = {"label": "others", "rate": rate, "tokens": quiet, "bodies": bodies}
        run_paced(work, url, 3, [others])  # warm-up
        done: dict[str, Any] = {}
        driver = threading.Thread(
            target=lambda: done.update(run_paced(work, url, duration_s, [others])), daemon=True
        )
        driver.start()
        time.sleep(duration_s / 4)
        scale_down(platform)
        driver.join(duration_s + REQUEST_TIMEOUT_S + PACED_SLACK_S)
    result: dict[str, Any] = done.get("others", {})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--flood-connections", type=int, default=512)
    parser.add_argument("--rate", type=float, default=100.0, help="the others' placements/s")
    parser.add_argument(
        "--rate-b", type=float, default=50.0, help="the others' placements/s in (b)"
    )
    parser.add_argument("--slow-s", type=float, default=5.0)
    parser.add_argument(
        "--haproxy-factor",
        type=float,
        default=default("rate_limit_haproxy_factor"),
        help="refuse a caller in HAProxy past this many times its limits (0: off)",
    )
    parser.add_argument("--parts", default="abc", help="which of (a), (b), (c) to run")
    parser.add_argument("--out", type=Path, default=Path("bench/isolation.json"))
    parser.add_argument("--paced", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paced:
        config, out = args.paced
        out.write_text(json.dumps(asyncio.run(paced(json.loads(config.read_text())))))
        return
    d = args.duration
    # The limits a real deployment gets, not the load generators' of the other benchmarks.
    limits = {
        f"rate_limit_{route}": default(f"rate_limit_{route}")
        for route in ("place", "write", "read", "auth")
    }
    limits["rate_limit_haproxy_factor"] = args.haproxy_factor
    alone: dict[str, Any] = {}
    beside: dict[str, Any] = {}
    flooded: dict[str, Any] = {}
    healthy: dict[str, Any] = {"others": {}, "slow": {}}
    slowed: dict[str, Any] = {"others": {}, "slow": {}}
    # Nobody pays these orders, and the provider is asked about each unpaid one at about
    # its own age: the poller's work grows through the run and would weigh on whichever
    # rows come later. It is not what is measured here, so it waits an hour.
    with fresh_platform(
        "o2o-isolation-", fault_injection=True, payment_poll_s=3600.0, **limits
    ) as platform:
        work, url, s = platform.run_dir, platform.url, platform.settings
        _, bodies = prepare(url)
        others_bodies, slow_body = bodies[:-1], bodies[-1]
        slow_merchant = json.loads(slow_body)["merchant_id"]
        quiet = tokens(url, "customer", [f"c_other_{i}" for i in range(CUSTOMERS)])
        flooder, slow_fan = tokens(url, "customer", ["c_flood", "c_slow_fan"])
        others: Stream = {"label": "others", "rate": args.rate, "tokens": quiet}
        others["bodies"] = others_bodies
        beside_slow: Stream = {**others, "rate": args.rate_b}
        # One customer at half its limit.
        fan: Stream = {"label": "slow", "rate": 5.0, "tokens": [slow_fan], "bodies": [slow_body]}
        run_paced(work, url, 3, [others])  # warm-up

        # (a) a greedy client.
        if "a" in args.parts:
            paced_alone, cpu_alone = with_cpu(run_paced, work, url, d, [others])
            alone = {**paced_alone["others"], "cpu_share": cpu_alone}
            flood = start_flood(work, url, flooder, others_bodies[0], args.flood_connections, d + 2)
            time.sleep(1)
            paced_beside, cpu_beside = with_cpu(run_paced, work, url, d, [others])
            beside = {**paced_beside["others"], "cpu_share": cpu_beside}
            flooded = flood_result(flood, d + 2)

        # (b) a slow merchant: without, with, with, without, half the duration each, so
        # that the machine's drift over the minute falls on both sides alike.
        if "b" in args.parts:
            store = redis.Redis.from_url(s.effective_redis_url)
            fault = keys.fault(slow_merchant_fault(slow_merchant))
            without = paced_answers(work, url, d / 2, [beside_slow, fan])
            store.set(fault, str(args.slow_s))
            try:
                held = paced_answers(work, url, d / 2, [beside_slow, fan])
                for label, rows in paced_answers(work, url, d / 2, [beside_slow, fan]).items():
                    held[label] += rows
            finally:
                store.delete(fault)
            # Let the slow merchant's held placements finish and its breaker close.
            time.sleep(args.slow_s + s.merchant_breaker_open_s)
            for label, rows in paced_answers(work, url, d / 2, [beside_slow, fan]).items():
                without[label] += rows
            store.close()
            healthy = {label: summary(rows) for label, rows in without.items()}
            slowed = {label: summary(rows) for label, rows in held.items()}

    drained = drain_run(d, args.rate) if "c" in args.parts else {}
    results = {
        "duration_s": d,
        "rate_per_s": args.rate,
        "rate_b_per_s": args.rate_b,
        "settings": {
            **limits,
            "shed_max_in_flight": s.shed_max_in_flight,
            "merchant_call_timeout_s": s.merchant_call_timeout_s,
            "merchant_breaker_failures": s.merchant_breaker_failures,
            "merchant_breaker_open_s": s.merchant_breaker_open_s,
        },
        "greedy": {"others_alone": alone, "others_beside_flood": beside, "flood": flooded},
        "slow_merchant": {
            "slow_s": args.slow_s,
            "others_without": healthy["others"],
            "others_with": slowed["others"],
            "slow_merchant_before": healthy["slow"],
            "slow_merchant_while_slow": slowed["slow"],
        },
        "drain": drained,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    report(results, args.flood_connections)


def report(r: dict[str, Any], connections: int) -> None:
    d, rate = r["duration_s"], r["rate_per_s"]
    factor = r["settings"]["rate_limit_haproxy_factor"]
    print(
        f"\nthe others: {CUSTOMERS} customers, {rate:.0f} placements/s in (a) and (c), "
        f"{r['rate_b_per_s']:.0f}/s in (b) (open loop), {d} s each"
    )
    print(f"HAProxy's own limits: {f'{factor:g}x the replicas' if factor > 0 else 'off'}\n")
    print("| run | others' requests | others' outcomes | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    g, sm = r["greedy"], r["slow_merchant"]
    for name, row in (
        ("(a) quiet", g["others_alone"]),
        (f"(a) beside a flood of {connections} connections", g["others_beside_flood"]),
        ("(b) without the slow merchant", sm["others_without"]),
        (f"(b) with a merchant slow by {sm['slow_s']:.0f} s", sm["others_with"]),
        ("(c) across a replica drain", r["drain"]),
    ):
        if not row:
            continue
        outcomes = ", ".join(f"{k}: {v}" for k, v in row["outcomes"].items())
        print(
            f"| {name} | {row['requests']} | {outcomes} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['max_ms']:.0f} |"
        )
    for name, row in (
        ("(a) beside the flood", g["others_beside_flood"]),
        ("(b) with the slow merchant", sm["others_with"]),
        ("(c) across the drain", r["drain"]),
    ):
        if row and row["not_placed_by_second"]:
            print(f"others not placed {name}, by second of the run: {row['not_placed_by_second']}")
    f = g["flood"]
    if f:
        print(
            f"\n(a) the flood: {f['requests_per_s']:.0f} requests/s; 201: {f['201']}, "
            f"429: {f['429']}, 503: {f['503']}, other: {f['other']} {f['socket_errors']}"
        )
        ratio = g["others_beside_flood"]["p99_ms"] / max(g["others_alone"]["p99_ms"], 0.001)
        print(f"    others' p99 beside the flood / quiet: {ratio:.2f}x (target within 2x)")
        for name, row in (
            ("quiet", g["others_alone"]),
            ("beside the flood", g["others_beside_flood"]),
        ):
            cpu = row["cpu_share"]
            print(
                f"    cores used {name}: API replica {cpu['replica']:.2f}, "
                f"HAProxy {cpu['haproxy']:.2f}"
            )
    if not sm["others_with"]:
        return
    ratio = sm["others_with"]["p99_ms"] / max(sm["others_without"]["p99_ms"], 0.001)
    print(f"(b) others' p99 with / without the slow merchant: {ratio:.2f}x (target within 1.2x)")
    for name, row in (
        ("before", sm["slow_merchant_before"]),
        ("while slow", sm["slow_merchant_while_slow"]),
    ):
        outcomes = ", ".join(f"{k}: {v}" for k, v in row["outcomes"].items())
        print(
            f"    the slow merchant's answers {name}: {outcomes}; "
            f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
