"""Adding a host at run time, against a real Redis-protocol server: only the shards the
new layout gives the new host move, each is let go by its old host and loaded by the
new one, and nothing sent during the move is lost (hosts called in-process, no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from actors import host as host_module
from actors.directory import Directory, Onboard, SetMenuItem, host_of_shard, shards_of_host
from actors.merchant import MerchantHost
from domain import reactions as r
from domain.errors import DomainError
from storage import keys
from storage.layout import Layout, LayoutStore
from storage.mailboxes import GROUP
from storage.redis import connect
from storage.server import EmbeddedRedis
from storage.settings import Settings

MERCHANTS = [f"m_move_{i}" for i in range(24)]


class LocalHandle:
    """A host called in this process, shaped like the Ray handle the directory uses."""

    def __init__(self, host: MerchantHost) -> None:
        self.host = host
        self.handle = self

    def remote(self, batch: list[Any]) -> Any:
        return self.host.handle(batch)


class LocalDirectory(Directory):
    def __init__(self, settings: Settings, redis: Any, hosts: dict[str, MerchantHost]) -> None:
        super().__init__(settings, redis)
        self.hosts = hosts

    async def _handle(self, name: str) -> Any:
        return LocalHandle(self.hosts[name])


# Both ways a message reaches a host: a call (in-process here, as Ray's would be) and a
# letter in the shard's command mailbox, which the shard's owner reads.
@pytest.fixture(params=["ray", "mailbox"])
async def setting(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Settings, Any]]:
    # Hosts look at the layout every second in production; quicker here.
    monkeypatch.setattr(host_module, "LAYOUT_WATCH_S", 0.05)
    monkeypatch.setattr(host_module, "PENDING_PASS_S", 3600.0)
    settings = Settings(redis_url=redis_server.url, entity_transport=request.param)
    client = connect(settings.effective_redis_url)
    await client.flushdb()
    yield settings, client
    await client.flushdb()
    await client.aclose()


def profile(merchant_id: str) -> dict[str, Any]:
    return {
        "id": merchant_id,
        "name": merchant_id,
        "lat": 30.25,
        "lng": 120.15,
        "delivery": {"radius_m": 5000},
    }


async def until(check: Any, what: str, timeout_s: float = 10) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def settled(host: MerchantHost, epoch: int) -> None:
    async def adopted() -> bool:
        return host.epoch == epoch and not host._arriving

    await until(adopted, f"{host.name} to adopt epoch {epoch}", timeout_s=4)


async def test_a_new_host_takes_only_its_shards_and_no_message_is_lost(
    setting: tuple[Settings, Any],
) -> None:
    settings, client = setting
    layouts = LayoutStore(client)
    one = await layouts.write("merchant", 1)
    first = MerchantHost(settings, 0)
    second = MerchantHost(settings, 1)
    hosts = {first.name: first, second.name: second}
    directory = LocalDirectory(settings, client, hosts)
    try:
        await settled(first, one.epoch)
        await settled(second, one.epoch)
        assert second.shards == [], "a host beyond the count owns nothing"
        for merchant_id in MERCHANTS:
            onboarded = await directory.send("merchant", merchant_id, Onboard(profile(merchant_id)))
            assert not isinstance(onboarded, DomainError), onboarded
        assert set(first._state) == set(MERCHANTS)

        two = Layout(2)
        moving = {m for m in MERCHANTS if host_of_shard("merchant", keys.shard_of(m), two) == 1}
        assert moving and moving != set(MERCHANTS)

        # A follow-up the old owner read and had not finished: pending under its name
        # (and, with its pending passes far apart, it will not read it again itself).
        moved_merchant = sorted(moving)[0]
        stream = keys.mailbox("merchant", keys.shard_of(moved_merchant))
        follow_up = r.to_wire(
            r.Accept(keys.new_order_id(moved_merchant, "gone"), moved_merchant, 5)
        )
        # Added and read in one transaction: the host's own reads, now and then, must not
        # take it in between and apply it.
        async with client.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, {"m": orjson.dumps(follow_up)})
            pipe.xreadgroup(GROUP, first.name, {stream: ">"})
            _, read = await pipe.execute()
        assert read

        # Menu changes for every merchant keep coming while the layout changes.
        async def change(round_: int) -> list[Any]:
            return await asyncio.gather(
                *(
                    directory.send(
                        "merchant",
                        m,
                        SetMenuItem(
                            m, {"id": f"dish{round_}", "name": "Dish", "price_fen": 100}, 5
                        ),
                    )
                    for m in MERCHANTS
                )
            )

        replies = []
        for round_ in range(10):
            if round_ == 3:
                two = await layouts.write("merchant", 2)
            replies.extend(await change(round_))
            await asyncio.sleep(0.02)
        await settled(first, two.epoch)
        await settled(second, two.epoch)
        replies.extend(await change(10))

        failed = [r for r in replies if isinstance(r, DomainError | BaseException)]
        assert failed == [], failed[:3]
        # Every change of every round is stored, whichever host took it.
        for merchant_id in MERCHANTS:
            menu = await client.hgetall(keys.menu(merchant_id))
            assert {f"dish{r}" for r in range(11)} <= set(menu), merchant_id

        # Only the moved merchants changed hosts: the old one let them go, the new one
        # loaded them from Redis.
        assert set(second.shards) == set(shards_of_host("merchant", 1, two))
        assert set(first.shards).isdisjoint(second.shards)
        assert set(first.shards) | set(second.shards) == set(range(keys.SHARDS))
        assert set(second._state) == moving
        assert set(first._state) == set(MERCHANTS) - moving

        # The new owner took the old one's pending follow-up over and applied it (an
        # order that is not there: a final answer, acknowledged and deleted).
        for _ in range(100):
            if not await client.xlen(stream):
                break
            await asyncio.sleep(0.05)
        assert await client.xlen(stream) == 0
        assert await client.xpending_range(stream, GROUP, "-", "+", 10) == []
    finally:
        for host in (first, second):
            await host.close()


async def test_a_hot_merchant_gets_a_host_of_its_own(setting: tuple[Settings, Any]) -> None:
    settings, client = setting
    layouts = LayoutStore(client)
    await layouts.write("merchant", 2)
    hot = MERCHANTS[0]
    shard = keys.shard_of(hot)
    hosts = [MerchantHost(settings, i) for i in range(3)]
    directory = LocalDirectory(settings, client, {h.name: h for h in hosts})
    try:
        for host in hosts:
            await settled(host, 1)
        before = {s: host_of_shard("merchant", s, Layout(2)) for s in range(keys.SHARDS)}
        pinned = await layouts.write("merchant", 3, {shard: 2})
        for host in hosts:
            await settled(host, pinned.epoch)
        assert hosts[2].shards == [shard]
        for other in range(keys.SHARDS):
            if other != shard:
                assert other in hosts[before[other]].shards
        reply = await directory.send("merchant", hot, Onboard(profile(hot)))
        assert not isinstance(reply, DomainError), reply
        assert hot in hosts[2]._state
    finally:
        for host in hosts:
            await host.close()
