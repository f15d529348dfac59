"""The lean full-loop driver of `make bench` walks real orders to the door."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cluster.launcher import Platform

ROOT = Path(__file__).resolve().parents[2]


def test_the_full_loop_driver_delivers_orders_through_every_step(
    platform: Platform, tmp_path: Path
) -> None:
    out = tmp_path / "loop.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.full_loop",
            "--url",
            platform.url,
            "--concurrency",
            "4",
            "--duration",
            "8",
            "--merchants",
            "2",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=180,
    )
    report = json.loads(out.read_text())
    assert report["failures"] == {}, report
    assert report["delivered"] >= 4, report
    steps = report["steps"]
    for step in (
        "POST /v1/orders",
        "POST /pay/{intent_id} (sandbox)",
        "POST /v1/merchant/orders/{id}/accept",
        "POST /v1/merchant/orders/{id}/ready",
        "POST /v1/rider/offers/{id}/accept",
        "POST /v1/rider/orders/{id}/pickup",
        "POST /v1/rider/orders/{id}/deliver",
    ):
        assert steps[step]["count"] >= report["delivered"], (step, report)
    assert 0 < report["loop_p50_ms"] <= report["loop_p99_ms"]
    assert report["delivered_per_s"] == round(report["delivered"] / 8, 1)
