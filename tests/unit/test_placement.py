from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.directory import host_count, host_index, host_name
from storage.settings import Settings

IDS = [f"m-{i}" for i in range(10_000)]
ROOT = Path(__file__).resolve().parents[2]


def test_host_index_is_deterministic() -> None:
    assert [host_index(i, 4) for i in IDS[:500]] == [host_index(i, 4) for i in IDS[:500]]


def test_every_process_agrees_on_the_host() -> None:
    # Serve replicas and host actors are separate processes: a salted hash would
    # send the same merchant to different hosts.
    script = (
        "from actors.directory import host_index\n"
        "print(','.join(str(host_index(f'm-{i}', 7)) for i in range(300)))\n"
    )
    here = ",".join(str(host_index(f"m-{i}", 7)) for i in range(300))
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert out.stdout.strip() == here


@given(st.text(max_size=40), st.integers(1, 64))
def test_host_index_is_within_range(entity_id: str, hosts: int) -> None:
    assert 0 <= host_index(entity_id, hosts) < hosts


def test_one_host_takes_everything() -> None:
    assert {host_index(i, 1) for i in IDS[:200]} == {0}


def test_ids_spread_evenly_over_four_hosts() -> None:
    counts = Counter(host_index(i, 4) for i in IDS)
    assert set(counts) == {0, 1, 2, 3}
    for host, count in counts.items():
        assert 0.20 <= count / len(IDS) <= 0.30, (host, count)


def test_adding_a_host_moves_only_ids_onto_the_new_host() -> None:
    before = {i: host_index(i, 4) for i in IDS}
    after = {i: host_index(i, 5) for i in IDS}
    moved = [i for i in IDS if before[i] != after[i]]
    assert all(after[i] == 4 for i in moved)
    # The new host takes about its fair share, a fifth, from all the old ones.
    assert 0.15 <= len(moved) / len(IDS) <= 0.25
    assert {before[i] for i in moved} == {0, 1, 2, 3}


def test_removing_the_last_host_moves_only_its_ids() -> None:
    before = {i: host_index(i, 5) for i in IDS}
    after = {i: host_index(i, 4) for i in IDS}
    assert all(before[i] == after[i] for i in IDS if before[i] != 4)


def test_host_name() -> None:
    assert host_name("merchant", 3) == "merchant-host-3"
    assert host_name("rider_zone", 0) == "rider_zone-host-0"


def test_host_count_per_kind() -> None:
    settings = Settings(merchant_hosts=6, rider_zone_hosts=3, payment_hosts=2)
    assert host_count("merchant", settings) == 6
    assert host_count("rider_zone", settings) == 3
    assert host_count("payment", settings) == 2


def test_host_count_of_an_unknown_kind() -> None:
    with pytest.raises(KeyError):
        host_count("courier", Settings())


@pytest.mark.parametrize(("cpus", "hosts"), [(1, 1), (2, 1), (3, 1), (8, 4)])
def test_unset_host_counts_follow_the_cpus(cpus: int, hosts: int) -> None:
    settings = Settings(ray_num_cpus=cpus)
    counts = [host_count(kind, settings) for kind in ("merchant", "rider_zone", "payment")]
    assert counts == [hosts, hosts, hosts]


def test_haproxy_request_metrics_are_off_unless_asked_for(tmp_path: Path) -> None:
    from cluster.launcher import haproxy_environment

    quiet = haproxy_environment(tmp_path, use_haproxy=True, maxconn=1000)
    assert quiet["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
    loud = haproxy_environment(tmp_path, use_haproxy=True, maxconn=1000, http_metrics=True)
    assert loud["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "1"
