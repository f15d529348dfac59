from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.directory import (
    configured_hosts,
    host_index,
    host_name,
    host_of_shard,
    settings_digest,
    shards_of_host,
)
from storage.keys import SHARDS
from storage.layout import Layout
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


def test_configured_host_count_per_kind() -> None:
    settings = Settings(merchant_hosts=6, rider_zone_hosts=3, payment_hosts=2)
    assert configured_hosts("merchant", settings) == 6
    assert configured_hosts("rider_zone", settings) == 3
    assert configured_hosts("payment", settings) == 2
    # Unset: the layout in Redis decides (or the cluster's size, the first time).
    assert configured_hosts("merchant", Settings()) == 0


def test_configured_host_count_of_an_unknown_kind() -> None:
    with pytest.raises(KeyError):
        configured_hosts("courier", Settings())


def test_every_shard_has_exactly_one_owner() -> None:
    layout = Layout(3)
    owned = [shards_of_host("merchant", i, layout) for i in range(3)]
    assert sorted(s for shards in owned for s in shards) == list(range(SHARDS))
    assert all(owned), "each of three hosts owns some of the 64 shards"


def test_adding_a_host_moves_only_shards_onto_it() -> None:
    before = {s: host_of_shard("payment", s, Layout(2)) for s in range(SHARDS)}
    after = {s: host_of_shard("payment", s, Layout(3)) for s in range(SHARDS)}
    moved = [s for s in range(SHARDS) if before[s] != after[s]]
    assert moved and all(after[s] == 2 for s in moved)


def test_a_pinned_shard_alone_moves_to_its_dedicated_host() -> None:
    plain = Layout(2)
    hot = 17
    pinned = Layout(3, epoch=2, previous=2, pins={hot: 2})
    assert host_of_shard("merchant", hot, pinned) == 2
    assert shards_of_host("merchant", 2, pinned) == [hot]
    for shard in range(SHARDS):
        if shard != hot:
            assert host_of_shard("merchant", shard, pinned) == host_of_shard(
                "merchant", shard, plain
            )


def test_a_pin_beyond_the_count_is_ignored() -> None:
    assert {host_of_shard("merchant", s, Layout(2, pins={5: 4})) for s in range(SHARDS)} == {
        0,
        1,
    }


def test_settings_only_replicas_read_do_not_replace_hosts() -> None:
    base = Settings()
    assert settings_digest(base) == settings_digest(
        Settings(rate_limit_read="1/second", api_replicas=4, merchant_hosts=9)
    )
    assert settings_digest(base) != settings_digest(Settings(offer_ttl_s=7))


def test_haproxy_request_metrics_are_off_unless_asked_for(tmp_path: Path) -> None:
    from cluster.launcher import haproxy_environment

    quiet = haproxy_environment(tmp_path, use_haproxy=True, maxconn=1000)
    assert quiet["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
    loud = haproxy_environment(tmp_path, use_haproxy=True, maxconn=1000, http_metrics=True)
    assert loud["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "1"
