"""The locust load test drives the whole order loop against the running platform.

Locust monkey-patches its process with gevent, which breaks ray in the same process, so
it runs as its own process here and this module never imports it.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from cluster.launcher import Platform
from tests.e2e.conftest import Api

ROOT = Path(__file__).resolve().parents[2]
MERCHANTS = 3


def test_locust_walks_the_order_loop(
    platform: Platform, login: Callable[[str, str], Api], tmp_path: Path
) -> None:
    run_id = f"t{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "LT_SHAPE": "off",  # so -u, -r and -t apply
        "LT_RUN": run_id,
        "LT_MERCHANTS": str(MERCHANTS),
        "LT_MERCHANT_USERS": "1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtests/locustfile.py",
            "--headless",
            "-u",
            "6",
            "-r",
            "6",
            "-t",
            "25s",
            "--host",
            platform.url,
            "--csv",
            str(tmp_path / "run"),
            "--only-summary",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    # Locust exits non-zero on any failed request, including those after the last CSV write.
    assert done.returncode == 0, output

    with open(tmp_path / "run_stats.csv", newline="") as f:
        stats = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    assert int(stats[("POST", "/v1/orders")]["Request Count"]) > 0, output
    assert int(stats[("POST", "/pay/{intent_id} (sandbox)")]["Request Count"]) > 0, output
    assert stats[("", "Aggregated")]["Failure Count"] == "0", output
    with open(tmp_path / "run_failures.csv", newline="") as f:
        assert list(csv.DictReader(f)) == [], output

    # What the platform itself says happened to the orders of this run.
    statuses: Counter[str] = Counter()
    for i in range(MERCHANTS):
        merchant = login("merchant", f"lt_m_{run_id}_{i}")
        answer = merchant.get("/v1/orders", params={"limit": 100})
        assert answer.status_code == 200, answer.text
        statuses.update(order["status"] for order in answer.json()["orders"])
    assert sum(statuses.values()) > 0, output
    assert statuses["delivered"] >= 1, (statuses, output)
    assert not statuses.keys() & {"cancelled", "rejected"}, statuses
