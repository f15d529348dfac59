"""Rider positions at a city's rate, and whether dispatch sees them in time.

The busiest write of a city: every online rider reports where it is every few seconds
(`POST /v1/riders/me/location`), 10,000 riders every 3 s being 3,333 a second. The
target: at least 3,300 a second at p99 under 50 ms, with the zones holding no position
older than the interval.

One platform of its own (HAProxy front door, the load generators' limits of
`loadtests/harness.py`). `--riders` riders, each with its own signed rider token, go
online once over the demo city's area (`cluster/seed.py`: West Lake), then each
reports a position every `--interval-s` at its own fixed phase of the interval, one
short ride further each time: an open loop, so the offered rate is riders / interval
whatever the answers do. The load generator is its own process on `--connections`
keep-alive connections; a report waits for a free connection rather than opening
more, so when the platform (or the client, on the same two cores) cannot keep up the
schedule slips: printed are the rate achieved, how late reports left against their
schedule, and the latency both from the send (to the last byte) and from the
schedule. Reports still unsent `--interval-s` after the run's end are counted, not
sent.

Freshness is read where dispatch reads it: the rider's hash (position and `seen_at`,
which `RiderStore.positions` weighs) and its zone's GEO set (which the neighbouring
zones' search reads). During the run, once a second, the age of a sample of riders'
stored positions; after it, for the same sample, whether the stored position is the
last one the rider sent, and how long after the send the host recorded it.

CPU per position is each platform process's CPU over the run divided by the positions
accepted; beside it, how busy the machine's cores were with every process, since
another benchmark on the same two cores moves every figure here. `--replicas` runs
that many API replicas. Then, with `--wrk-seconds` > 0, a closed loop at the most wrk gets through
the same connections, tokens rotating. Writes bench/positions.json.

    python -m loadtests.bench_positions [--riders 10000] [--interval-s 3] [--duration 30]
        [--connections 64] [--replicas 1] [--sample 200] [--wrk-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import redis

from cluster.seed import CENTER
from loadtests.frontdoor import run_wrk
from loadtests.full_loop import percentile
from loadtests.harness import cpu_by_label, fresh_platform
from serve_app.auth import issue
from storage import keys

# The box the demo city's seed spreads its riders over.
LAT_SPAN, LNG_SPAN = 0.03, 0.035
# A scooter in city traffic: one report's move is this times the interval.
SPEED_M_S = 5.0
M_PER_DEG_LAT = 111_320.0
# Long enough for a run and its wrk row, short enough that a leaked token is no key.
TOKEN_TTL_S = 6 * 3600
# Every bound of the client: a request waits at most this long for its answer.
REQUEST_TIMEOUT_S = 10.0
# The client's start (imports, its session) before the schedule's first report.
LEAD_S = 3.0
# The client's setup and tail beyond the schedule's own length.
CLIENT_SLACK_S = 90.0
# The groups of the platform's processes the table shows; the rest go in one row.
GROUPS = {
    "API replica": ("ray::ServeReplica",),
    "rider-zone host": ("ray::RiderZoneHost",),
    "Valkey": ("valkey-server",),
    "HAProxy": ("haproxy",),
}


# -- the load generator (its own process: `--client phase config.json out.json`) --------


def start_points(riders: int, seed: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [
        (
            round(CENTER[0] + rng.uniform(-LAT_SPAN, LAT_SPAN), 6),
            round(CENTER[1] + rng.uniform(-LNG_SPAN, LNG_SPAN), 6),
        )
        for _ in range(riders)
    ]


class Ride:
    """Where one rider goes: straight on at its heading, turning back at the city's edge."""

    def __init__(self, lat: float, lng: float, heading: float, step_m: float) -> None:
        self.lat, self.lng = lat, lng
        scale = math.cos(math.radians(CENTER[0]))
        self.dlat = step_m * math.cos(heading) / M_PER_DEG_LAT
        self.dlng = step_m * math.sin(heading) / (M_PER_DEG_LAT * scale)

    def next(self) -> tuple[float, float]:
        if abs(self.lat + self.dlat - CENTER[0]) > LAT_SPAN:
            self.dlat = -self.dlat
        if abs(self.lng + self.dlng - CENTER[1]) > LNG_SPAN:
            self.dlng = -self.dlng
        self.lat, self.lng = self.lat + self.dlat, self.lng + self.dlng
        return round(self.lat, 6), round(self.lng, 6)


def outcome_of(status: int, raw: bytes) -> str:
    if status < 400:
        return str(status)
    try:
        return f"{status} {orjson.loads(raw)['error']['code']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return str(status)


async def go_online(config: dict[str, Any]) -> dict[str, Any]:
    """Every rider online once at its start point, `connections` at a time."""
    url, tokens, points = config["url"], config["tokens"], config["points"]
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    next_rider = 0
    connector = aiohttp.TCPConnector(limit=config["connections"])
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S * 3)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def worker() -> None:
            nonlocal next_rider
            while next_rider < len(tokens):
                i = next_rider
                next_rider += 1
                lat, lng = points[i]
                body = orjson.dumps({"online": True, "lat": lat, "lng": lng})
                headers = {
                    "Authorization": f"Bearer {tokens[i]}",
                    "Content-Type": "application/json",
                }
                sent = time.perf_counter()
                try:
                    async with http.post(
                        f"{url}/v1/riders/me/status", data=body, headers=headers
                    ) as answer:
                        outcomes[outcome_of(answer.status, await answer.read())] += 1
                except (aiohttp.ClientError, TimeoutError) as err:
                    outcomes[type(err).__name__] += 1
                latencies.append((time.perf_counter() - sent) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(config["connections"])))
        took = time.perf_counter() - started
    return {
        "riders": len(tokens),
        "seconds": round(took, 1),
        "per_s": round(len(tokens) / max(took, 1e-9)),
        "outcomes": dict(outcomes.most_common()),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
    }


async def drive(config: dict[str, Any]) -> dict[str, Any]:
    """The open loop: report n is due at start + n * interval / riders, from rider
    n % riders, so each rider reports once an interval at its own phase."""
    url, tokens, points = config["url"], config["tokens"], config["points"]
    riders, interval, duration = len(tokens), config["interval_s"], config["duration_s"]
    rng = random.Random(config["seed"])
    rides = [
        Ride(lat, lng, rng.uniform(0, 2 * math.pi), SPEED_M_S * interval) for lat, lng in points
    ]
    headers = [{"Authorization": f"Bearer {t}", "Content-Type": "application/json"} for t in tokens]
    gap = interval / riders
    scheduled = int(duration / gap)
    # Per report: seconds into the run it was due, how late it left (ms), its latency
    # from the send to the last byte (ms), its outcome.
    rows: list[tuple[float, float, float, str]] = []
    # Per rider: the last position sent (lat, lng, sent at, outcome), wall clock.
    last: list[tuple[float, float, float, str] | None] = [None] * riders
    next_report = 0
    connector = aiohttp.TCPConnector(limit=config["connections"])
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    cpu_before = time.process_time()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        # The schedule is set by the wall clock the parent gave, so the parent's
        # freshness samples and CPU window line up with it.
        start = time.perf_counter() + (config["start_at"] - time.time())
        give_up = start + duration + interval

        async def worker() -> None:
            nonlocal next_report
            while next_report < scheduled:
                n = next_report
                next_report += 1
                due = start + n * gap
                now = time.perf_counter()
                if now < due:
                    await asyncio.sleep(due - now)
                elif now > give_up:
                    return
                rider = n % riders
                lat, lng = rides[rider].next()
                body = orjson.dumps({"lat": lat, "lng": lng})
                sent, sent_wall = time.perf_counter(), time.time()
                try:
                    async with http.post(
                        f"{url}/v1/riders/me/location", data=body, headers=headers[rider]
                    ) as answer:
                        outcome = outcome_of(answer.status, await answer.read())
                except (aiohttp.ClientError, TimeoutError) as err:
                    outcome = type(err).__name__
                done = time.perf_counter()
                rows.append((due - start, (sent - due) * 1000, (done - sent) * 1000, outcome))
                last[rider] = (lat, lng, sent_wall, outcome)

        await asyncio.gather(*(worker() for _ in range(config["connections"])))
        ended = time.perf_counter()
    cpu_used = time.process_time() - cpu_before
    return summarise(rows, scheduled, ended - start, duration, cpu_used) | {"last": last}


def summarise(
    rows: list[tuple[float, float, float, str]],
    scheduled: int,
    took_s: float,
    duration_s: float,
    client_cpu_s: float,
) -> dict[str, Any]:
    lateness = [late for _, late, _, _ in rows]
    latency = [ms for _, _, ms, _ in rows]
    from_schedule = [max(late, 0.0) + ms for _, late, ms, _ in rows]
    accepted = sum(1 for *_, outcome in rows if outcome == "200")
    return {
        "scheduled": scheduled,
        "sent": len(rows),
        "not_sent": scheduled - len(rows),
        "accepted": accepted,
        "offered_per_s": round(scheduled / duration_s, 1),
        # From the first report due to the last answer: a late schedule runs longer.
        "run_s": round(took_s, 1),
        "achieved_per_s": round(len(rows) / took_s, 1),
        "accepted_per_s": round(accepted / took_s, 1),
        "outcomes": dict(Counter(outcome for *_, outcome in rows).most_common()),
        "p50_ms": round(percentile(latency, 0.50), 1),
        "p90_ms": round(percentile(latency, 0.90), 1),
        "p99_ms": round(percentile(latency, 0.99), 1),
        "max_ms": round(max(latency, default=0.0), 1),
        "from_schedule_p50_ms": round(percentile(from_schedule, 0.50), 1),
        "from_schedule_p99_ms": round(percentile(from_schedule, 0.99), 1),
        "late_p50_ms": round(percentile(lateness, 0.50), 1),
        "late_p99_ms": round(percentile(lateness, 0.99), 1),
        "late_max_ms": round(max(lateness, default=0.0), 1),
        "sent_by_second": dict(sorted(Counter(int(at) for at, *_ in rows).items())),
        # Whether the tail is the run's start (zones and connections warming) or all of it.
        "p99_ms_by_5s": {
            f"{5 * k}-{5 * k + 5}": round(percentile(v, 0.99), 1)
            for k, v in sorted(by_window(rows).items())
        },
        "client_cores": round(client_cpu_s / took_s, 2),
    }


def by_window(rows: list[tuple[float, float, float, str]]) -> dict[int, list[float]]:
    windows: dict[int, list[float]] = {}
    for due, late, ms, _ in rows:
        windows.setdefault(int((due + late / 1000) // 5), []).append(ms)
    return windows


def run_client(work: Path, phase: str, config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    path, out = work / f"{phase}.json", work / f"{phase}-out.json"
    path.write_text(json.dumps(config))
    subprocess.run(
        [sys.executable, "-m", "loadtests.bench_positions", "--client", phase, str(path), str(out)],
        check=True,
        timeout=timeout_s,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# -- what the platform's processes spend ------------------------------------------------


def platform_cpu() -> dict[str, float]:
    """CPU seconds so far of each process of this run's platform, the load generators
    left out."""
    return cpu_by_label(leave_out=("wrk", "python -m loadtests.bench_positions"))


def machine_busy() -> float:
    """CPU seconds every process on the machine has used so far: what else shared the two
    cores with this run (another benchmark moves every figure here)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def grouped(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds between the two readings, by the table's groups, the rest together."""
    out = dict.fromkeys([*GROUPS, "every other process"], 0.0)
    for label, total in after.items():
        spent = total - before.get(label, 0.0)
        group = next(
            (g for g, marks in GROUPS.items() if any(m in label for m in marks)),
            "every other process",
        )
        out[group] += spent
    return out


def per_position(
    before: dict[str, float],
    after: dict[str, float],
    seconds: float,
    positions: int,
    machine_s: float,
) -> dict[str, Any]:
    cpu = grouped(before, after)
    spent = {label: after[label] - before.get(label, 0.0) for label in after}
    return {
        "cpu_ms_per_position": {k: round(v * 1000 / max(positions, 1), 3) for k, v in cpu.items()},
        "cores": {k: round(v / seconds, 2) for k, v in cpu.items()},
        "machine_cores_busy": round(machine_s / seconds, 2),
        "load_average_1m": round(psutil.getloadavg()[0], 1),
        # Every process by what it is, the busiest first: where "every other" goes.
        "cpu_ms_per_position_by_process": {
            label: round(v * 1000 / max(positions, 1), 3)
            for label, v in sorted(spent.items(), key=lambda kv: -kv[1])
            if v > 0.01 * seconds
        },
    }


# -- freshness: what the zones hold ------------------------------------------------------


class AgeSampler(threading.Thread):
    """Once a second, how old the stored positions of the sample are (now - `seen_at`),
    from one interval into the run (before that a rider's last position is its going
    online) to its end."""

    def __init__(self, store: redis.Redis, riders: list[str], start: float, end: float) -> None:
        super().__init__(daemon=True)
        self.store, self.riders, self.start_at, self.end_at = store, riders, start, end
        self.ages: list[float] = []
        self.missing = 0

    def run(self) -> None:
        time.sleep(max(0.0, self.start_at - time.time()))
        while time.time() < self.end_at:
            pipe = self.store.pipeline(transaction=False)
            for rider_id in self.riders:
                pipe.hget(keys.rider(rider_id), "seen_at")
            seen = pipe.execute()
            now = time.time()
            for at in seen:
                if at is None:
                    self.missing += 1
                else:
                    self.ages.append(now - float(at))
            time.sleep(1.0)


def stored_against_sent(
    store: redis.Redis, riders: list[str], sent: list[tuple[float, float, float, str] | None]
) -> dict[str, Any]:
    """After the run: is each sampled rider's stored position the last one it sent, in
    its hash and in its zone's GEO set, and how long after the send was it recorded."""
    pipe = store.pipeline(transaction=False)
    for rider_id in riders:
        pipe.hmget(keys.rider(rider_id), "lat", "lng", "seen_at", "online", "zone")
    rows = pipe.execute()
    pipe = store.pipeline(transaction=False)
    for rider_id, (*_, zone) in zip(riders, rows, strict=True):
        pipe.geopos(keys.zone_riders(zone or "none"), rider_id)
    geo = pipe.execute()
    in_hash = in_geo = online = 0
    lags: list[float] = []
    for (lat, lng, seen_at, is_online, _), (pos,), last in zip(rows, geo, sent, strict=True):
        if last is None or lat is None:
            continue
        sent_lat, sent_lng, sent_at, _ = last
        online += is_online == "1"
        if abs(float(lat) - sent_lat) < 1e-9 and abs(float(lng) - sent_lng) < 1e-9:
            in_hash += 1
            lags.append((float(seen_at) - sent_at) * 1000)
        # A GEO set keeps a 52-bit geohash: within a metre.
        if pos is not None and abs(pos[1] - sent_lat) < 1e-5 and abs(pos[0] - sent_lng) < 1e-5:
            in_geo += 1
    n = len(riders)
    return {
        "sample": n,
        "online": online,
        "hash_is_last_sent": round(in_hash / n, 4),
        "geo_is_last_sent": round(in_geo / n, 4),
        "send_to_recorded_p50_ms": round(percentile(lags, 0.50), 1),
        "send_to_recorded_p99_ms": round(percentile(lags, 0.99), 1),
        "send_to_recorded_max_ms": round(max(lags, default=0.0), 1),
    }


# -- the closed loop: wrk, tokens rotating ---------------------------------------------

WRK_LUA = """
local tokens = {
%(tokens)s
}
local points = {
%(points)s
}
local i = 0
local started = false
init = function(_)
  i = math.random(#tokens)
end
request = function()
  i = (i %% #tokens) + 1
  local p = points[i]
  local body = string.format('{"lat":%%.6f,"lng":%%.6f}',
    p[1] + (math.random() - 0.5) * 0.0004, p[2] + (math.random() - 0.5) * 0.0004)
  local headers = {["Authorization"] = "Bearer " .. tokens[i],
                   ["Content-Type"] = "application/json"}
  return wrk.format("POST", "/v1/riders/me/location", headers, body)
end
"""


def closed_loop(
    work: Path, url: str, tokens: list[str], points: list[tuple[float, float]], args: Any
) -> dict[str, Any]:
    script = work / "positions.lua"
    script.write_text(
        WRK_LUA
        % {
            "tokens": "\n".join(f'  "{t}",' for t in tokens),
            "points": "\n".join(f"  {{{lat}, {lng}}}," for lat, lng in points),
        }
    )
    before, busy, started = platform_cpu(), machine_busy(), time.monotonic()
    result = run_wrk(url, args.wrk_seconds, args.connections, script)
    after, wall = platform_cpu(), time.monotonic() - started
    positions = int(result["requests_per_s"] * args.wrk_seconds) - result["non_2xx"]
    return result | per_position(before, after, wall, positions, machine_busy() - busy)


# -- the run ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--riders", type=int, default=10_000)
    parser.add_argument("--interval-s", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=1, help="API replicas")
    parser.add_argument("--sample", type=int, default=200, help="riders checked for freshness")
    parser.add_argument("--wrk-seconds", type=int, default=10, help="0: no closed-loop row")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path("bench/positions.json"))
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        phase, config, out = args.client
        run = go_online if phase == "online" else drive
        Path(out).write_text(json.dumps(asyncio.run(run(json.loads(Path(config).read_text())))))
        return
    results = bench(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    report(results)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    with fresh_platform("o2o-positions-", api_replicas=args.replicas) as platform:
        work, url, s = platform.run_dir, platform.url, platform.settings
        rider_ids = [f"r_pos_{i}" for i in range(args.riders)]
        signed = time.monotonic()
        # Signed with the platform's own secret, as `/v1/auth/dev-token` would, without
        # 10,000 round trips.
        tokens = [issue(s.jwt_secret, "rider", r, TOKEN_TTL_S)[0] for r in rider_ids]
        signed_s = time.monotonic() - signed
        points = start_points(args.riders, args.seed)
        base = {"url": url, "tokens": tokens, "points": points, "connections": args.connections}
        print(f"o2o-positions: {args.riders} riders going online", flush=True)
        online = run_client(work, "online", base, args.riders / 20 + CLIENT_SLACK_S)
        print(f"o2o-positions: online {json.dumps(online)}", flush=True)

        store = redis.Redis.from_url(s.effective_redis_url, decode_responses=True)
        sample = random.Random(args.seed).sample(range(args.riders), min(args.sample, args.riders))
        sampled = [rider_ids[i] for i in sample]
        start_at = time.time() + LEAD_S
        ages = AgeSampler(
            store, sampled, start_at + args.interval_s + 0.5, start_at + args.duration
        )
        ages.start()
        config = base | {
            "interval_s": args.interval_s,
            "duration_s": args.duration,
            "start_at": start_at,
            "seed": args.seed,
        }
        print(f"o2o-positions: driving {args.riders / args.interval_s:.0f}/s", flush=True)
        # The CPU window opens at the schedule's start, after the client's own start.
        timing: dict[str, Any] = {}

        def measure() -> None:
            time.sleep(max(0.0, start_at - time.time()))
            timing["before"], timing["busy"] = platform_cpu(), machine_busy()
            timing["at"] = time.monotonic()

        opener = threading.Thread(target=measure, daemon=True)
        opener.start()
        driven = run_client(
            work, "drive", config, LEAD_S + args.duration + args.interval_s + CLIENT_SLACK_S
        )
        opener.join()
        after, busy, wall = platform_cpu(), machine_busy(), time.monotonic() - timing["at"]
        ages.join(5)
        last = driven.pop("last")
        fresh = stored_against_sent(store, sampled, [last[i] for i in sample])
        ages_s = sorted(ages.ages)
        fresh |= {
            "age_samples": len(ages_s),
            "age_missing": ages.missing,
            "age_p50_s": round(percentile(ages_s, 0.50), 2),
            "age_p99_s": round(percentile(ages_s, 0.99), 2),
            "age_max_s": round(max(ages_s, default=0.0), 2),
            "age_max_over_interval": round(max(ages_s, default=0.0) / args.interval_s, 2),
            "older_than_interval": round(
                sum(a > args.interval_s for a in ages_s) / max(len(ages_s), 1), 4
            ),
        }
        store.close()
        driven |= per_position(
            timing["before"],
            after,
            wall,
            max(int(driven["accepted"]), 1),
            busy - timing["busy"],
        )
        print(f"o2o-positions: driven {driven['achieved_per_s']}/s", flush=True)
        wrk = closed_loop(work, url, tokens, points, args) if args.wrk_seconds > 0 else {}
    return {
        "riders": args.riders,
        "interval_s": args.interval_s,
        "duration_s": args.duration,
        "connections": args.connections,
        "api_replicas": args.replicas,
        "tokens_signed_s": round(signed_s, 2),
        "online": online,
        "open_loop": driven,
        "freshness": fresh,
        "closed_loop_wrk": wrk,
    }


def report(r: dict[str, Any]) -> None:
    o, f, w, on = r["open_loop"], r["freshness"], r["closed_loop_wrk"], r["online"]
    print(
        f"\n{r['riders']} riders every {r['interval_s']:g} s for {r['duration_s']:g} s, "
        f"{r['connections']} connections, {r['api_replicas']} API replica(s); "
        f"online in {on['seconds']} s ({on['per_s']}/s, "
        f"{', '.join(f'{k}: {v}' for k, v in on['outcomes'].items())})\n"
    )
    wrk_rate = f"{w['requests_per_s']:.0f}" if w else "-"
    rows: list[tuple[str, str, str]] = [
        ("offered rate /s", f"{o['offered_per_s']:.0f}", "closed loop"),
        (
            "achieved rate /s (accepted)",
            f"{o['achieved_per_s']:.0f} ({o['accepted_per_s']:.0f})",
            wrk_rate,
        ),
        (
            "reports scheduled / sent / not sent",
            f"{o['scheduled']} / {o['sent']} / {o['not_sent']}",
            "-",
        ),
        (
            "statuses",
            ", ".join(f"{k}: {v}" for k, v in o["outcomes"].items()),
            f"non-2xx: {w['non_2xx']} {w['socket_errors']}" if w else "-",
        ),
        (
            "p50 / p99 / max ms, send to last byte",
            f"{o['p50_ms']:.1f} / {o['p99_ms']:.1f} / {o['max_ms']:.0f}",
            f"{w['p50_ms']:.1f} / {w['p99_ms']:.1f} / -" if w else "-",
        ),
        (
            "p50 / p99 ms from the schedule",
            f"{o['from_schedule_p50_ms']:.1f} / {o['from_schedule_p99_ms']:.1f}",
            "-",
        ),
        (
            "left late p50 / p99 / max ms",
            f"{o['late_p50_ms']:.1f} / {o['late_p99_ms']:.1f} / {o['late_max_ms']:.0f}",
            "-",
        ),
    ]
    for group in o["cpu_ms_per_position"]:
        rows.append(
            (
                f"CPU ms per position: {group} (cores)",
                f"{o['cpu_ms_per_position'][group]:.3f} ({o['cores'][group]:.2f})",
                f"{w['cpu_ms_per_position'][group]:.3f} ({w['cores'][group]:.2f})" if w else "-",
            )
        )
    rows.append(
        (
            "load generator cores",
            f"{o['client_cores']:.2f}",
            f"{w['wrk_cpu_share'] * psutil.cpu_count():.2f}" if w else "-",
        )
    )
    rows.append(
        (
            "machine cores busy, every process (load average)",
            f"{o['machine_cores_busy']:.2f} ({o['load_average_1m']:g})",
            f"{w['machine_cores_busy']:.2f} ({w['load_average_1m']:g})" if w else "-",
        )
    )
    print("| figure | open loop | wrk |")
    print("|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a} | {b} |")
    print(
        "\nopen loop p99 ms by 5 s of the run (when sent): "
        + ", ".join(f"{k} s: {v:.0f}" for k, v in o["p99_ms_by_5s"].items())
    )
    print(f"\nfreshness, {f['sample']} riders sampled ({f['online']} online after the run):\n")
    print("| figure | value |")
    print("|---|---|")
    for name, value in (
        ("stored position (hash) is the last sent", f"{f['hash_is_last_sent']:.1%}"),
        ("zone's GEO set holds the last sent", f"{f['geo_is_last_sent']:.1%}"),
        (
            "send -> recorded p50 / p99 / max ms",
            f"{f['send_to_recorded_p50_ms']:.1f} / "
            f"{f['send_to_recorded_p99_ms']:.1f} / {f['send_to_recorded_max_ms']:.0f}",
        ),
        (
            "stored age during the run p50 / p99 / max s",
            f"{f['age_p50_s']:.2f} / "
            f"{f['age_p99_s']:.2f} / {f['age_max_s']:.2f} ({f['age_samples']} readings)",
        ),
        ("max age / interval", f"{f['age_max_over_interval']:.2f}"),
        ("readings older than the interval", f"{f['older_than_interval']:.1%}"),
    ):
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
