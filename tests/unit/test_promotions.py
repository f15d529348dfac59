"""Regional promotions without Redis: which cells a promotion reaches, what is refused,
its window, and the pace of its push (the pusher against an in-memory store)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import pytest

from actors.promotions import LEASE_S, TICK_S, Pusher
from domain.errors import DomainError
from domain.promotions import (
    MAX_REQUEST_CELLS,
    MAX_TARGET_CELLS,
    Pace,
    Promotion,
    PromotionPushed,
    customer_cells,
    job_status,
    publish,
    target_cells,
)
from storage.promotions import Job

WEST_LAKE = h3.latlng_to_cell(30.2590, 120.1490, 7)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def refused(call: Any, *args: Any, **kwargs: Any) -> DomainError:
    with pytest.raises(DomainError) as err:
        call(*args, **kwargs)
    assert err.value.code == "invalid_request"
    return err.value


# -- the cells a promotion reaches ------------------------------------------------------


def test_a_zone_cell_reaches_itself_and_ids_are_canonical() -> None:
    assert target_cells([WEST_LAKE], 7) == (WEST_LAKE,)
    assert target_cells([WEST_LAKE.upper(), WEST_LAKE], 7) == (WEST_LAKE,)


def test_a_coarser_cell_stands_for_its_zones() -> None:
    district = h3.cell_to_parent(WEST_LAKE, 5)
    reach = target_cells([district], 7)
    assert len(reach) == 49
    assert WEST_LAKE in reach
    assert all(h3.get_resolution(c) == 7 and h3.cell_to_parent(c, 5) == district for c in reach)
    # Named twice, or beside one of its own zones: each zone once.
    assert target_cells([district, WEST_LAKE, district], 7) == reach


@pytest.mark.parametrize(
    "cells",
    [
        [],
        ["not-a-cell"],
        ["0" * 15],
        [h3.latlng_to_cell(30.2590, 120.1490, 9)],  # finer than the zones
        [h3.cell_to_parent(WEST_LAKE, 3)],  # 2,401 zones
        [42],
    ],
    ids=["none", "garbage", "zeros", "finer", "too-coarse", "not-a-string"],
)
def test_bad_cells_are_refused(cells: list[Any]) -> None:
    refused(target_cells, cells, 7)


def test_the_counts_are_bounded() -> None:
    many = list(h3.grid_disk(WEST_LAKE, 6))[: MAX_REQUEST_CELLS + 1]
    assert len(many) == MAX_REQUEST_CELLS + 1
    refused(target_cells, many, 7)
    assert len(target_cells(many[:MAX_REQUEST_CELLS], 7)) == MAX_REQUEST_CELLS
    # 21 districts of 49 zones are 1,029 zones: past the bound, though 21 cells are few.
    districts = list(h3.grid_disk(h3.cell_to_parent(WEST_LAKE, 5), 3))[:21]
    assert len(districts) * 49 > MAX_TARGET_CELLS
    err = refused(target_cells, districts, 7)
    assert str(MAX_TARGET_CELLS) in err.message
    assert len(target_cells(districts[:20], 7)) == 20 * 49


# -- what operations publish -------------------------------------------------------------


def promotion(**changes: Any) -> Promotion:
    spec: dict[str, Any] = {
        "promotion_id": "pr_1",
        "kind": "banner",
        "cells": [WEST_LAKE],
        "title": "Lunch by the lake",
        "body": "",
        "coupon_code": None,
        "starts_at": NOW - timedelta(hours=1),
        "ends_at": NOW + timedelta(hours=1),
        "now": NOW,
        "resolution": 7,
        **changes,
    }
    return publish(**spec)


def test_a_banner_and_a_coupon() -> None:
    banner = promotion()
    assert banner.cells == (WEST_LAKE,) and banner.coupon_code is None
    coupon = promotion(kind="coupon", coupon_code="WESTLAKE10")
    assert coupon.coupon_code == "WESTLAKE10"
    assert Promotion.from_dict(coupon.as_dict()) == coupon
    # One that starts later is published now and pushed when it starts.
    later = promotion(starts_at=NOW + timedelta(days=1), ends_at=NOW + timedelta(days=2))
    assert job_status(later, None, NOW) == "scheduled"


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "coupon"},
        {"kind": "banner", "coupon_code": "WESTLAKE10"},
        {"kind": "flyer"},
        {"title": "  "},
        {"title": "x" * 101},
        {"body": "x" * 1001},
        {"ends_at": NOW - timedelta(hours=1)},
        {"starts_at": NOW - timedelta(hours=3), "ends_at": NOW - timedelta(minutes=1)},
        {"starts_at": datetime(2026, 6, 1, 11, 0)},
        {"cells": [h3.latlng_to_cell(30.2590, 120.1490, 8)]},
    ],
    ids=[
        "coupon-without-code",
        "banner-with-code",
        "unknown-kind",
        "blank-title",
        "long-title",
        "long-body",
        "ends-before-it-starts",
        "ended",
        "naive-time",
        "finer-cell",
    ],
)
def test_what_is_refused(changes: dict[str, Any]) -> None:
    refused(promotion, **changes)


def test_the_window_and_the_status() -> None:
    p = promotion()
    assert p.active(p.starts_at) and p.active(NOW)
    assert not p.active(p.starts_at - timedelta(microseconds=1))
    assert not p.active(p.ends_at)
    assert job_status(p, None, NOW) == "pushing"
    assert job_status(p, None, p.ends_at) == "expired"
    assert job_status(p, "done", p.ends_at) == "done"


def test_the_event_customers_receive() -> None:
    p = promotion(kind="coupon", coupon_code="WESTLAKE10", body="10 off 30")
    event = PromotionPushed(promotion=p).as_dict()
    assert event["type"] == "promotion" and event["order_id"] is None and event["version"] == 1
    assert event["data"]["promotion_id"] == "pr_1"
    assert event["data"]["coupon_code"] == "WESTLAKE10"
    # Whom else it went to is not the customer's to read.
    assert "cells" not in event["data"]


def test_the_cells_a_customer_counts_in() -> None:
    assert customer_cells(None, None, 0, 1000) == []
    assert customer_cells("a", None, 0, 1000) == ["a"]
    assert customer_cells("a", "b", 1000, 1000) == ["a", "b"]
    assert customer_cells("a", "b", 999, 1000) == ["a"]
    assert customer_cells("a", "a", 5000, 1000) == ["a"]
    assert customer_cells(None, "b", 5000, 1000) == ["b"]


# -- the pace ---------------------------------------------------------------------------


def test_the_pace_holds_over_any_second() -> None:
    pace = Pace(500)
    sent: list[tuple[float, int]] = []
    t = 0.0
    while t < 10.0:
        n = pace.allowance(t)
        pace.spend(n)
        sent.append((t, n))
        t = round(t + TICK_S, 6)
    assert sent[0][1] == 0  # it starts empty
    total = sum(n for _, n in sent)
    assert 4_800 <= total <= 5_000
    for start in [x / 10 for x in range(90)]:
        window = sum(n for at, n in sent if start <= at < start + 1.0)
        assert window <= 500 + 100, (start, window)


def test_the_pace_does_not_burst_after_a_stall_and_pays_its_debts() -> None:
    pace = Pace(500, burst_s=0.2)
    pace.allowance(0.0)
    assert pace.allowance(60.0) == 100  # a minute's stall is worth 0.2 s, not 60
    pace.spend(400)  # a page far bigger than asked
    assert pace.allowance(60.1) == 0
    assert pace.allowance(60.6) == 0
    assert pace.allowance(60.8) > 0
    pace.idle()
    assert pace.allowance(60.8) == 0
    with pytest.raises(DomainError):
        Pace(0)


# -- the pusher, against a store in memory ------------------------------------------------


@dataclass
class MemoryStore:
    """The store's push methods over plain dicts: a cell is a list of customers paged by
    offset, a lease expires by the test's clock."""

    clock: list[float]
    cells: dict[str, list[str]]
    job_record: dict[str, Any]
    told: Counter[str] = field(default_factory=Counter)
    lease: tuple[str, float] | None = None
    pages: int = 0

    async def lead(self, owner: str, ttl_ms: int) -> bool:
        if self.lease is not None and self.lease[1] > self.clock[0]:
            return False
        self.lease = (owner, self.clock[0] + ttl_ms / 1000)
        return True

    async def keep(self, owner: str, ttl_ms: int) -> bool:
        if self.lease is None or self.lease[0] != owner or self.lease[1] <= self.clock[0]:
            return False
        self.lease = (owner, self.clock[0] + ttl_ms / 1000)
        return True

    async def let_go(self, owner: str) -> None:
        if self.lease and self.lease[0] == owner:
            self.lease = None

    async def due(self, now_ms: int) -> str | None:
        return None if self.job_record.get("finished") else "pr_1"

    async def job(self, promotion_id: str) -> Job:
        r = self.job_record
        return Job("pr_1", tuple(self.cells), b"{}", 0, r["ends_ms"], r["cell"], r["scan"])

    async def scan(
        self, cell: str, cursor: str, count: int, now_ms: int
    ) -> tuple[str, int, list[str]]:
        self.pages += 1
        members = self.cells[cell]
        start = int(cursor)
        page = members[start : start + count]
        following = start + len(page)
        return ("0" if following >= len(members) else str(following)), len(page), page

    async def tell(
        self, promotion_id: str, event: bytes, ends_ms: int, found: list[tuple[str, str]], now: int
    ) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        for customer, _ in found:
            self.told[customer] += 1
            outcomes["pushed" if self.told[customer] == 1 else "told"] += 1
        return outcomes

    async def advance(
        self,
        owner: str,
        promotion_id: str,
        cell: int,
        scan: str,
        examined: int,
        pushed: int,
        finished: str,
        now: datetime,
    ) -> bool:
        if self.lease is None or self.lease[0] != owner or self.lease[1] <= self.clock[0]:
            return False
        self.job_record.update(cell=cell, scan=scan)
        self.job_record["pushed"] += pushed
        if finished:
            self.job_record["finished"] = finished
        return True


def memory_store(customers: int, cells: int = 3) -> MemoryStore:
    names = [f"c{i}" for i in range(customers)]
    spread = {f"cell{k}": names[k::cells] for k in range(cells)}
    spread["empty"] = []
    record = {"cell": 0, "scan": "0", "pushed": 0, "ends_ms": 2**62}
    return MemoryStore(clock=[0.0], cells=spread, job_record=record)


def pusher_of(store: MemoryStore, per_s: int, name: str = "zone-0") -> Pusher:
    return Pusher(
        store,  # type: ignore[arg-type]
        name,
        per_s,
        clock=lambda: store.clock[0],
        wall=lambda: NOW,
    )


async def run_for(pusher: Pusher, store: MemoryStore, seconds: float) -> list[int]:
    told = []
    end = store.clock[0] + seconds
    while store.clock[0] < end - 1e-9:
        told.append(await pusher.step())
        store.clock[0] = round(store.clock[0] + TICK_S, 6)
    return told


async def test_the_pusher_keeps_its_pace_and_finishes() -> None:
    store = memory_store(2_000)
    pusher = pusher_of(store, per_s=500)
    told = await run_for(pusher, store, 3.0)
    # About 500 a second, never more than a tick's share (plus the burst) at once.
    assert 1_350 <= sum(told) <= 1_500
    assert max(told) <= 100
    await run_for(pusher, store, 2.0)
    assert store.job_record["finished"] == "done"
    assert store.job_record["pushed"] == 2_000
    assert set(store.told.values()) == {1}


async def test_a_second_host_waits_and_takes_over_from_the_cursor() -> None:
    store = memory_store(1_000)
    first, second = pusher_of(store, 200, "zone-0"), pusher_of(store, 200, "zone-1")
    await run_for(first, store, 1.0)
    assert await second.step() == 0  # the lease is the first's
    cursor = dict(store.job_record)
    assert 0 < cursor["pushed"] < 1_000
    # The first host dies (no more steps); its lease runs out, the second goes on.
    store.clock[0] += LEASE_S
    await run_for(second, store, 10.0)
    assert store.job_record["finished"] == "done"
    assert store.job_record["pushed"] == 1_000
    assert sum(store.told.values()) == 1_000


async def test_a_pusher_that_lost_its_lease_records_nothing() -> None:
    store = memory_store(1_000)
    first = pusher_of(store, 200, "zone-0")
    await run_for(first, store, 0.5)
    before = dict(store.job_record)
    # Stalled past its lease: another process holds it now.
    store.clock[0] += LEASE_S + 1
    store.lease = ("zone-1:other", store.clock[0] + LEASE_S)
    await first.step()
    assert not first.leading
    assert store.job_record == before
