"""Orders in Redis: one hash per order, indexes per owner, events on inbox streams."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.commands.core import AsyncScript

from domain import events as e
from domain.errors import DomainError
from domain.orders import (
    Order,
    audience,
    awaits_merchant,
    hidden_from_merchant,
    moves_stock,
    releases_stock,
)
from storage import keys, reviews
from storage.outbox import Relay, Remote
from storage.redis import RedisClient, Scripts
from storage.sealing import Sealer
from storage.settings import DEV_DATA_KEY

RunScript = Callable[[AsyncScript, list[Any], list[Any]], Awaitable[Any]]


@dataclass(frozen=True)
class OrderRead:
    """An order as stored (`Order.as_dict()`), with what its view adds beside it."""

    order: dict[str, Any]
    eta: dict[str, Any] | None
    payment: dict[str, Any] | None
    rider_position: tuple[float, float] | None


class OrderStore:
    def __init__(
        self,
        client: RedisClient,
        scripts: Scripts,
        inbox_maxlen: int,
        retention_s: int,
        payment_check_after_s: float,
        run_script: RunScript | None = None,
        relay: Relay | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        """`run_script(script, keys, args)` runs the commit script; by default on its own
        round trip (a host passes one that pipelines concurrent commits). `relay` relays
        each commit's outbox entry before `commit` returns (without one, the owning
        host's sweep does)."""
        self.client = client
        self.relay = relay
        self.sealer = sealer or Sealer(DEV_DATA_KEY)
        self.scripts = scripts
        self.run_script = run_script or _run_alone
        self.inbox_maxlen = inbox_maxlen
        self.retention_ms = retention_s * 1000
        self.payment_check_after_s = payment_check_after_s

    def _open(self, raw: str) -> dict[str, Any]:
        opened: dict[str, Any] = self.sealer.open_order(orjson.loads(raw))
        return opened

    async def load(self, order_id: str) -> Order | None:
        raw = await self.client.hget(keys.order(order_id), "json")
        return Order.from_dict(self._open(raw)) if raw else None

    async def load_raw(self, order_id: str) -> dict[str, Any] | None:
        """The stored form of an order, for code that reads a few fields of it."""
        raw = await self.client.hget(keys.order(order_id), "json")
        return self._open(raw) if raw else None

    async def merchant_of(self, order_id: str) -> str | None:
        merchant_id: str | None = await self.client.hget(keys.order(order_id), "merchant_id")
        return merchant_id

    async def awaits_rider(self, order_id: str) -> bool:
        """Whether the order is accepted or ready and nobody carries it yet."""
        status, rider_id = await self.client.hmget(keys.order(order_id), "status", "rider_id")
        return status in ("accepted", "ready") and not rider_id

    async def version(self, order_id: str) -> int:
        return int(await self.client.hget(keys.order(order_id), "version") or 0)

    async def commit(
        self,
        before: Order | None,
        after: Order,
        event: e.Event,
        mail: Sequence[tuple[str, bytes]] = (),
        beside: Callable[[Remote], None] | None = None,
    ) -> None:
        """Write the new order, move stock, index it, publish the event and post its
        follow-ups (`(mailbox, message)`, from `storage.mailboxes.mail`) in one script
        in the order's slot; what belongs to other slots (the customer's, rider's and
        operations' inboxes and indexes, other shards' mailboxes, the rider's load) is
        that script's outbox entry, relayed before this returns. `beside` adds writes
        of its own to that entry (a placement's risk counts, `storage/risk.py`)."""
        order_key = keys.order(after.id)
        remote = Remote(order_key)
        if beside is not None:
            beside(remote)
        # Sealed as the order is: a stream is at rest too (`storage/sealing.py`).
        remote.event = orjson.dumps(self.sealer.seal_event(event.as_dict())).decode()
        stock_sign = 0
        if not moves_stock(after):
            pass  # an errand: its line is on nobody's shelf
        elif before is None:
            stock_sign = -1
        elif releases_stock(event):
            stock_sign = 1
        stock_args: list[Any] = []
        if stock_sign:
            for line in after.lines:
                stock_args += [line.item_id, line.qty]
        placed_ms = int(after.placed_at.timestamp() * 1000)
        indexes: list[tuple[str, float]] = []
        merchant_index = (keys.orders_of("merchant", after.merchant_id), placed_ms)
        if before is None:
            remote.call("ZADD", keys.orders_of("customer", after.customer_id), placed_ms, after.id)
            indexes = [
                # Saved with the order, so no order can await a payment nobody checks.
                (
                    keys.payments_due_of(after.id),
                    after.placed_at.timestamp() + self.payment_check_after_s,
                ),
            ]
            if not hidden_from_merchant(after):
                indexes.append(merchant_index)
        elif hidden_from_merchant(before) and not hidden_from_merchant(after):
            # Released by review: its merchant lists it from now on.
            indexes.append(merchant_index)
        elif isinstance(event, e.RiderAssigned):
            # The rider carries the order from this change on, whoever relays it: its
            # load, its orders and the end of its open offer move in one step.
            rider = event.rider_id
            remote.call("ZADD", keys.orders_of("rider", rider), placed_ms, after.id)
            remote.call("HINCRBY", keys.rider(rider), "load", 1)
            remote.call("SADD", keys.rider_orders(rider), after.id)
            remote.call("DEL", keys.rider_offer(rider))
        # A hold opened or let go: the review queue in {ops} has it with this change.
        reviews.order_changes(remote, before, after, event)
        # The merchant's answer is due by the deadline: the timer is written with the
        # payment and gone with the answer, in the same script as each.
        unindexes: list[str] = []
        deadlines = keys.accept_deadlines(keys.order_shard(after.id))
        if awaits_merchant(after):
            assert after.accept_deadline is not None
            indexes.append((deadlines, after.accept_deadline.timestamp()))
        elif before is not None and awaits_merchant(before):
            unindexes.append(deadlines)
        inboxes = []
        for role, who in audience(after, event):
            inbox = keys.inbox(role, who)
            if remote.is_home(inbox):
                inboxes.append(inbox)
            else:
                remote.tell(inbox, remote.event)
        local_mail = []
        for mailbox, message in mail:
            if remote.is_home(mailbox):
                local_mail.append((mailbox, message))
            else:
                remote.post(mailbox, message)
        outbox = keys.outbox("merchant", keys.order_shard(after.id))
        result = await self.run_script(
            self.scripts.apply_order,
            [
                order_key,
                keys.stock(after.merchant_id),
                outbox,
                *(key for key, _ in indexes),
                *unindexes,
                *(mailbox for mailbox, _ in local_mail),
                *inboxes,
            ],
            [
                before.version if before else 0,
                after.version,
                orjson.dumps(self.sealer.seal_order(after.as_dict())),
                after.status.value,
                after.rider_id or "",
                after.merchant_id,
                after.customer_id,
                stock_sign,
                len(stock_args) // 2,
                *stock_args,
                len(indexes),
                after.id,
                *(score for _, score in indexes),
                len(unindexes),
                len(local_mail),
                *(message for _, message in local_mail),
                self.inbox_maxlen,
                self.retention_ms,
                remote.event,
                keys.notify_channel(""),
                remote.entry(),
                keys.BELL_PREFIX,
            ],
        )
        if result[0] == "ok":
            if remote and self.relay is not None:
                await self.relay.flush(outbox)
            return
        if result[0] == "out_of_stock":
            raise DomainError(
                "out_of_stock", "not enough stock", item_id=result[1], available=int(result[2])
            )
        raise DomainError("stale_version", "the order changed underneath", version=int(result[1]))

    async def read(self, order_id: str) -> OrderRead | None:
        """The order, its eta and its payment in one round trip; a second only for the
        position of the rider who carries it."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.order(order_id), "json", "eta")
            pipe.get(keys.payment(order_id))
            (raw, raw_eta), raw_payment = await pipe.execute()
        if raw is None:
            return None
        order = self._open(raw)
        rider_id = order.get("rider_id")
        position = None
        if rider_id:
            position = _position(await self.client.hmget(keys.rider(rider_id), "lat", "lng"))
        return OrderRead(order, _json(raw_eta), _json(raw_payment), position)

    async def read_beside(self, order: dict[str, Any]) -> OrderRead:
        """What a view adds to an order already in hand, in one round trip."""
        rider_id = order.get("rider_id")
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(keys.order(order["id"]), "eta")
            pipe.get(keys.payment(order["id"]))
            if rider_id:
                pipe.hmget(keys.rider(rider_id), "lat", "lng")
            raw_eta, raw_payment, *position = await pipe.execute()
        return OrderRead(
            order, _json(raw_eta), _json(raw_payment), _position(position[0]) if position else None
        )

    async def ids_of(self, role: str, owner_id: str, start: int, count: int) -> list[str]:
        """An owner's order ids, newest first."""
        ids: list[str] = await self.client.zrevrange(
            keys.orders_of(role, owner_id), start, start + count - 1
        )
        return ids

    async def many(self, order_ids: list[str]) -> list[dict[str, Any]]:
        """The stored forms of these orders (those that exist), in one round trip."""
        if not order_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for order_id in order_ids:
                pipe.hget(keys.order(order_id), "json")
            raws = await pipe.execute()
        return [self._open(r) for r in raws if r]

    async def past_accept_deadline(self, shards: list[int], now: float, limit: int) -> list[str]:
        """Paid orders of these shards whose merchant did not answer by their deadline."""
        return await due_in(self.client, [keys.accept_deadlines(s) for s in shards], now, limit)

    async def forget_accept_deadline(self, order_id: str) -> None:
        """An order that is no longer waiting for its merchant (answered meanwhile)."""
        await self.client.zrem(keys.accept_deadlines(keys.order_shard(order_id)), order_id)

    async def set_eta(self, order_id: str, eta: dict[str, str]) -> None:
        await self.client.hset(keys.order(order_id), "eta", orjson.dumps(eta))


async def due_in(client: RedisClient, sets: list[str], now: float, limit: int) -> list[str]:
    """The members due by `now` in these due-time sets (one per shard), at most `limit`
    from each, read in one round trip."""
    if not sets:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for key in sets:
            pipe.zrangebyscore(key, "-inf", now, start=0, num=limit)
        return [member for due in await pipe.execute() for member in due]


def _json(raw: str | None) -> Any:
    return orjson.loads(raw) if raw else None


def _position(pair: list[str | None] | None) -> tuple[float, float] | None:
    if not pair or pair[0] is None or pair[1] is None:
        return None
    return float(pair[0]), float(pair[1])


async def _run_alone(script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
    return await script(keys=keys, args=args)
