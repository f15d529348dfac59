"""Outboxes: what a change must also do in other hash slots, relayed by its shard's host.

A change is one script in its entity shard's slot (`storage/keys.py`). What it must do
elsewhere (tell the customer, the rider and operations, index the order for them, post
a follow-up to another shard's mailbox, count a rider's load) is written by the same
script as one entry of the shard's outbox stream, so it exists exactly when the change
does. The shard's host then relays the entry: one `relay` script per target slot,
which applies the entry's writes for that slot unless that slot already has them (it
keeps, per outbox, the id of the last entry it applied, and an outbox is relayed in
order, by one host at a time), and deletes the entry once every slot has it. A host
relays right after each commit, before it answers, so a caller reads its own writes;
and it sweeps its shards' outboxes every second, so the entries of a host that died
between its commit and the relay are relayed by the next.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from storage import keys
from storage.redis import RedisClient, Scripts, queue_eval

log = logging.getLogger(__name__)

# Entries relayed per round trip.
BATCH = 128


class Remote:
    """The writes of one change that belong to slots other than the change's own, as
    the entry the change's script adds to its outbox."""

    def __init__(self, home_key: str) -> None:
        self.home = keys.tag_of(home_key)
        self._groups: dict[str, tuple[list[str], list[list[Any]]]] = {}
        self.event = ""

    def is_home(self, key: str) -> bool:
        return keys.tag_of(key) == self.home

    def _at(self, key: str) -> tuple[list[list[Any]], int]:
        group_keys, writes = self._groups.setdefault(keys.tag_of(key), ([], []))
        if key not in group_keys:
            group_keys.append(key)
        # The relay script's KEYS[1] is the slot's relay marks, so the first key is 2.
        return writes, group_keys.index(key) + 2

    def call(self, command: str, key: str, *args: Any) -> None:
        """A plain command on one key, e.g. `call("ZADD", index, score, member)`."""
        writes, at = self._at(key)
        writes.append([command, at, *(str(a) for a in args)])

    def tell(self, inbox: str, event_json: str) -> None:
        self.event = event_json
        writes, at = self._at(inbox)
        writes.append(["TELL", at])

    def post(self, mailbox: str, message: bytes) -> None:
        writes, at = self._at(mailbox)
        writes.append(["POST", at, message.decode()])

    def __bool__(self) -> bool:
        return bool(self._groups)

    def entry(self) -> bytes:
        """The outbox entry (empty when there is nothing to relay)."""
        if not self._groups:
            return b""
        groups = [
            {"tag": tag, "keys": group_keys, "writes": orjson.dumps(writes).decode()}
            for tag, (group_keys, writes) in self._groups.items()
        ]
        return orjson.dumps({"event": self.event, "groups": groups})


@dataclass
class _Lane:
    """One outbox's relaying: one pass at a time; callers that arrive during a pass
    are served together by the next."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    asked: int = 0
    done: int = 0


class Relay:
    def __init__(
        self, client: RedisClient, scripts: Scripts, inbox_maxlen: int, retention_s: int
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.inbox_maxlen = inbox_maxlen
        self.retention_ms = retention_s * 1000
        self._lanes: dict[str, _Lane] = {}

    async def flush(self, outbox: str) -> None:
        """Return once every entry added to `outbox` before the call is relayed."""
        lane = self._lanes.get(outbox)
        if lane is None:
            lane = self._lanes[outbox] = _Lane()
        lane.asked += 1
        mine = lane.asked
        async with lane.lock:
            if lane.done >= mine:
                return
            upto = lane.asked
            while await self._pass(outbox) == BATCH:
                pass
            lane.done = upto

    async def sweep(self, outboxes: list[str]) -> int:
        """Relay what is left in these outboxes (a host that died before relaying it);
        returns how many outboxes had entries."""
        async with self.client.pipeline(transaction=False) as pipe:
            for outbox in outboxes:
                pipe.xlen(outbox)
            lengths = await pipe.execute()
        waiting = [outbox for outbox, n in zip(outboxes, lengths, strict=True) if n]
        for outbox in waiting:
            await self.flush(outbox)
        return len(waiting)

    async def _pass(self, outbox: str) -> int:
        entries = await self.client.xrange(outbox, "-", "+", count=BATCH)
        if not entries:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            calls = 0
            for entry_id, fields in entries:
                body = orjson.loads(fields["x"])
                for group in body["groups"]:
                    queue_eval(
                        pipe,
                        self.scripts.relay,
                        [keys.relayed(group["tag"]), *group["keys"]],
                        [
                            outbox,
                            entry_id,
                            group["writes"],
                            body["event"],
                            self.inbox_maxlen,
                            self.retention_ms,
                            keys.notify_channel(""),
                            keys.BELL_PREFIX,
                        ],
                    )
                    calls += 1
            replies = await pipe.execute(raise_on_error=False) if calls else []
        failed = [r for r in replies if isinstance(r, Exception)]
        if failed:
            # Nothing is deleted: the next pass applies what is missing, and the marks
            # skip what is there.
            raise failed[0]
        await self.client.xdel(outbox, *(entry_id for entry_id, _ in entries))
        return len(entries)


def queue_entry(pipe: Any, outbox: str, remote: Remote) -> None:
    """Add a change's outbox entry to the MULTI pipeline that writes the change."""
    if remote:
        pipe.xadd(outbox, {"x": remote.entry()})
