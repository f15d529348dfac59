"""The same seeded day under both dispatch policies: nearest free rider, then scoring.

    python -m loadtests.compare_policies [--seed 7 --minutes 120 --speedup 60]

Each policy gets a fresh platform in a fresh Python process (Ray and Serve start once
per process), one after the other, never two at a time. Prints a markdown table and
writes every report to `bench/policies.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("nearest", "score")
# Starting and stopping a platform takes well under this; the run itself is bounded by
# its window and drain.
START_STOP_BUDGET_S = 600


def run_policy(policy: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = work / f"{policy}.json"
    command = [
        sys.executable,
        "-m",
        "loadtests.simulator",
        "--start",
        "--policy",
        policy,
        "--seed",
        str(args.seed),
        "--minutes",
        str(args.minutes),
        "--speedup",
        str(args.speedup),
        "--riders",
        str(args.riders),
        "--customers",
        str(args.customers),
        "--from",
        args.begin,
        "--drain",
        str(args.drain),
        "--out",
        str(out),
        "--progress" if sys.stdout.isatty() else "--no-progress",
    ]
    budget = (args.minutes + args.drain) * 60 / args.speedup + START_STOP_BUDGET_S
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run(command, check=True, timeout=budget, cwd=ROOT, env=env)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def minutes(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| policy | orders | delivered | mean delivery min | p90 delivery min "
        "| assigned within 60 s | rider utilisation |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(
            f"| {r['policy']} | {r['orders']} | {pct(r['share_delivered'])} | "
            f"{minutes(r['delivery_minutes_mean'])} | {minutes(r['delivery_minutes_p90'])} | "
            f"{pct(r['assigned_within_60s_share'])} | {pct(r['rider_utilisation'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes", type=float, default=120)
    parser.add_argument("--speedup", type=float, default=60)
    parser.add_argument("--riders", type=int, default=30)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument(
        "--from", dest="begin", default="", help="simulated start (default: centred on 12:00)"
    )
    parser.add_argument("--drain", type=float, default=60, help="simulated minutes to finish")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "policies.json")
    args = parser.parse_args(argv)
    if not args.begin:
        # The comparison is about the lunch crunch: centre the window on the peak.
        start = max(0, round(12 * 60 - args.minutes / 2))
        args.begin = f"{start // 60:02d}:{start % 60:02d}"
    with tempfile.TemporaryDirectory(prefix="o2o-policies-") as tmp:
        reports = [run_policy(policy, args, Path(tmp)) for policy in POLICIES]
    table = markdown(reports)
    first = reports[0]
    setting = (
        f"seed {args.seed}, {first['window']} simulated at speed-up {args.speedup:g}, "
        f"{args.riders} riders, {args.customers} customers, demo city"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "seed": args.seed,
                "minutes": args.minutes,
                "speedup": args.speedup,
                "riders": args.riders,
                "customers": args.customers,
                "window": first["window"],
                "reports": reports,
                "table": table,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\n{setting}\n")
    print(table)
    print(f"\nreports written to {args.out}")


if __name__ == "__main__":
    main()
