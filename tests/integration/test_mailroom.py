"""Letters to entities through their shards' command mailboxes, against a real
Redis-protocol server and a real merchant host (in this process, no Ray): a letter its
host read and never answered is applied by the host's restart while its sender still
waits; one read after its sender gave up is dropped unapplied."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors import host as host_module
from actors.directory import Onboard, shard_for
from actors.mailroom import Mailroom
from actors.merchant import MerchantHost
from domain.errors import DomainError
from storage import keys
from storage.layout import LayoutStore
from storage.mailboxes import GROUP, MailboxStore
from storage.redis import connect
from storage.server import EmbeddedRedis
from storage.settings import Settings
from tests.integration.test_rebalancing import profile, until


@pytest.fixture
async def setting(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Settings, Any]]:
    monkeypatch.setattr(host_module, "LAYOUT_WATCH_S", 0.05)
    settings = Settings(redis_url=redis_server.url, entity_transport="mailbox")
    client = connect(settings.effective_redis_url)
    await client.flushdb()
    await LayoutStore(client).write("merchant", 1)
    yield settings, client
    await client.flushdb()
    await client.aclose()


async def test_a_letter_its_dead_host_read_is_applied_by_the_restart_while_its_sender_waits(
    setting: tuple[Settings, Any],
) -> None:
    settings, client = setting
    merchant_id = "m_letter_kept"
    stream = keys.commands("merchant", shard_for("merchant", merchant_id))
    await MailboxStore(client).open([stream])
    mailroom = Mailroom(client, timeout_s=20)
    sender = asyncio.create_task(
        mailroom.send("merchant", shard_for("merchant", merchant_id), Onboard(profile(merchant_id)))
    )
    try:
        await until(lambda: client.xlen(stream), "the letter")
        # The host read it, and died before its effect was stored.
        read = await client.xreadgroup(GROUP, "merchant-host-0", {stream: ">"})
        assert read and read[0][1], "the dead host's read"
        assert not await client.exists(keys.merchant(merchant_id))
        assert not sender.done()

        restarted = MerchantHost(settings, 0)
        try:
            reply = await asyncio.wait_for(sender, 15)
            assert not isinstance(reply, DomainError), reply
            assert reply["id"] == merchant_id
            assert await client.exists(keys.merchant(merchant_id))
            # Answered: acknowledged and gone from the mailbox.
            await until(lambda: _empty(client, stream), "the letter acknowledged")
        finally:
            await restarted.close()
    finally:
        sender.cancel()
        await mailroom.close()


async def test_a_letter_read_after_its_sender_gave_up_is_dropped_unapplied(
    setting: tuple[Settings, Any],
) -> None:
    settings, client = setting
    merchant_id = "m_letter_late"
    shard = shard_for("merchant", merchant_id)
    stream = keys.commands("merchant", shard)
    mailroom = Mailroom(client, timeout_s=0.5)
    try:
        # No host is up: the sender answers 503 when its bound is over.
        reply = await mailroom.send("merchant", shard, Onboard(profile(merchant_id)))
        assert isinstance(reply, DomainError) and reply.code == "service_unavailable"
        assert await client.xlen(stream) == 1

        late = MerchantHost(settings, 0)
        try:
            await until(lambda: _empty(client, stream), "the late letter dropped")
            assert not await client.exists(keys.merchant(merchant_id))
        finally:
            await late.close()
    finally:
        await mailroom.close()


async def _empty(client: Any, stream: str) -> bool:
    return bool(await client.xlen(stream) == 0)
