"""Order placement alone, on a fresh platform, with any settings changed: one row.

For trying one change at a time: `POST /v1/orders` over 16 merchants with wrk at 32
connections (5 s warm-up, then 15 s), and the CPU share of every process of the
platform over 10 s in the middle, summed by what the process is.

    python -m loadtests.bench_placement [merchant_hosts=1 payment_hosts=1 ...]

Each `name=value` is a setting (see storage/settings.py), values read as JSON when
they parse (`access_log=true`, `api_replicas=2`) and as text otherwise.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from typing import Any

import psutil

from loadtests.frontdoor import prepare, run_wrk, wrk_script
from loadtests.harness import fresh_platform, process_label


def setting(text: str) -> tuple[str, Any]:
    name, _, raw = text.partition("=")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def cpu_by_process(seconds: float) -> dict[str, float]:
    procs = psutil.Process().children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(seconds)
    shares: dict[str, float] = {}
    for proc in procs:
        try:
            argv = proc.cmdline()
            share = proc.cpu_percent(None)
        except psutil.Error:
            continue
        name = process_label(argv, proc.name())
        shares[name] = shares.get(name, 0.0) + share
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def main() -> None:
    overrides = dict(setting(arg) for arg in sys.argv[1:])
    with fresh_platform("o2o-placement-", **overrides) as platform:
        token, bodies = prepare(platform.url)
        script = wrk_script(platform.run_dir / "place.lua", token, bodies)
        run_wrk(platform.url, 5, 32, script)
        measured: dict[str, Any] = {}
        wrk = threading.Thread(
            target=lambda: measured.update(run_wrk(platform.url, 15, 32, script)), daemon=True
        )
        wrk.start()
        time.sleep(3)
        shares = cpu_by_process(10)
        wrk.join()
    print(json.dumps({"settings": overrides, **measured, "cpu_percent": shares}, indent=2))


if __name__ == "__main__":
    main()
