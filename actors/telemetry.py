"""What operations see of the platform: metrics through Ray's metrics API, and log lines
as JSON that carry the order id on every line about an order.

The one module that imports `ray.util.metrics`. Each Ray node's metrics agent serves
what its processes record, in Prometheus' text format at the node's metrics export
port (`ray start --metrics-export-port`; `ray.nodes()` lists it as `MetricsExportPort`),
every name with Ray's `ray_` in front (`ray_o2o_orders_total`) and each process's
`WorkerId` among the labels. The agent runs without the dashboard too
(`include_dashboard=False`), and passes on what it was told every few seconds.

- `o2o_orders_total{event}`: order events committed by the merchant hosts, `event` the
  event's type without `order_`: placed, paid, accepted, rejected, cancelled,
  rider_assigned, ready, picked_up, delivered.
- `o2o_payments_total{outcome}`: captured, captured_after_close (money for an order
  closed meanwhile, given back), refunded, refund_pending (the provider did not
  answer), refund_refused, closed (unpaid at the payment timeout),
  notification_rejected (a bad signature, a malformed body, an unknown order or intent).
- `o2o_dispatch_total{outcome}`: offered, no_rider (a dispatch that found nobody: the
  order waits, and every retry that finds nobody again counts too), accepted,
  declined, late (an answer after the offer closed), expired, assigned, withdrawn (the
  rider accepted an order that could no longer take it).
- `o2o_placement_seconds{outcome}` (histogram): a placement on its merchant's host,
  from the message to the reply; placed (a new order, or the same order again for a
  retry) or refused.
- `o2o_sync_sockets{transport}` (gauge, per API replica): open WebSockets
  (`websocket`) and long polls waiting for an event (`long_poll`).
- `o2o_mailbox_depth{host,kind,state}` (gauge, per host): the follow-ups in the
  mailboxes of the host's shards (`storage/mailboxes.py`) that it has not read
  (`unread`), and read but not finished (`pending`); sampled every `MAILBOX_SAMPLE_S`.

Cheap on the hot path: a count is recorded from the events a host produces anyway, one
call into Ray's recorder that costs 2.4 us per `Counter.inc` and 1.2 us per
`Histogram.observe` in an actor (Ray 2.60, this machine), about 0.5% of a core at 1,500
placements a second; nothing per order goes to Redis. The mailbox depth is one pipeline
per host every few seconds (`XLEN` and `XINFO GROUPS` per mailbox).

Logs: `logging_config()` is Ray's `LoggingConfig` for `ray.init` (every process of the
job writes JSON lines, with Ray's job, worker, actor and task ids), and
`serve_logging_config()` the same for the Serve deployment. A host marks the order it
is working on (`concerning`, `about`); every log record made meanwhile carries it as
`order_id`, which Ray's JSON formatter writes as a field like its own.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import ray
from ray.util.metrics import Counter, Gauge, Histogram

from domain.errors import DomainError
from storage.mailboxes import GROUP
from storage.redis import RedisClient

if TYPE_CHECKING:
    from actors.host import EntityHost

# How often each host reads how full its mailboxes are.
MAILBOX_SAMPLE_S = 5.0
# The standard attributes of a log record written beside the ones Ray always writes
# (time, level, message, file, line, process): the logger's name.
LOG_ATTRS = ["name"]

ORDERS = Counter("o2o_orders_total", "Order events committed, by event type.", tag_keys=("event",))
PAYMENTS = Counter(
    "o2o_payments_total", "What became of payments and notifications.", tag_keys=("outcome",)
)
DISPATCH = Counter(
    "o2o_dispatch_total", "Outcomes of offering orders to riders.", tag_keys=("outcome",)
)
PLACEMENT = Histogram(
    "o2o_placement_seconds",
    "A placement on its merchant's host, from the message to the reply.",
    boundaries=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
    tag_keys=("outcome",),
)
SYNC_SOCKETS = Gauge(
    "o2o_sync_sockets",
    "Open live-sync connections of this API replica.",
    tag_keys=("transport",),
)
MAILBOX_DEPTH = Gauge(
    "o2o_mailbox_depth",
    "Follow-ups in the mailboxes of a host's shards: not read yet, or read and not done.",
    tag_keys=("host", "kind", "state"),
)

# One tags dict per value, made once: recording then builds nothing.
_EVENT_TAGS: dict[str, dict[str, str]] = {}
_OUTCOME_TAGS: dict[str, dict[str, str]] = {}


def _event_tags(event_type: str) -> dict[str, str]:
    tags = _EVENT_TAGS.get(event_type)
    if tags is None:
        tags = _EVENT_TAGS[event_type] = {"event": event_type.removeprefix("order_")}
    return tags


def _outcome_tags(outcome: str) -> dict[str, str]:
    tags = _OUTCOME_TAGS.get(outcome)
    if tags is None:
        tags = _OUTCOME_TAGS[outcome] = {"outcome": outcome}
    return tags


def order_event(event_type: str) -> None:
    """An order's event is committed (its `type`, as `order_paid`)."""
    ORDERS.inc(tags=_event_tags(event_type))


def payment(outcome: str) -> None:
    PAYMENTS.inc(tags=_outcome_tags(outcome))


def notified(reply: Any) -> Any:
    """Count a notification the payment host refused; returns its reply unchanged."""
    if isinstance(reply, DomainError):
        payment("notification_rejected")
    return reply


def dispatch(outcome: str) -> None:
    DISPATCH.inc(tags=_outcome_tags(outcome))


def placed(started: float, reply: Any) -> None:
    """A placement answered; `started` is its `time.perf_counter()` on arrival."""
    outcome = "refused" if isinstance(reply, BaseException) else "placed"
    PLACEMENT.observe(time.perf_counter() - started, tags=_outcome_tags(outcome))


# -- live sync --------------------------------------------------------------------------

_open: Tally[str] = Tally()


@contextlib.contextmanager
def sync_socket(transport: str) -> Iterator[None]:
    """Count one open live-sync connection (`websocket` or `long_poll`) while inside."""
    _open[transport] += 1
    SYNC_SOCKETS.set(_open[transport], tags={"transport": transport})
    try:
        yield
    finally:
        _open[transport] -= 1
        SYNC_SOCKETS.set(_open[transport], tags={"transport": transport})


# -- the hosts' mailboxes ----------------------------------------------------------------


async def mailbox_depth(client: RedisClient, streams: list[str]) -> tuple[int, int]:
    """(unread, pending) follow-ups over these mailboxes, in one round trip.

    A mailbox keeps an entry until it is acknowledged (it is deleted then), so its
    length is what is unread plus what the consumer group has pending. (`XINFO GROUPS`'s
    `lag` would say the unread part alone, but Redis gives it up, as nil, once entries
    have been deleted, and here every acknowledged entry is.) A mailbox not made yet
    (its host has not opened it) holds nothing."""
    if not streams:
        return 0, 0
    async with client.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
        answers = await pipe.execute(raise_on_error=False)
    unread = pending = 0
    for length, groups in zip(answers[::2], answers[1::2], strict=True):
        if isinstance(length, Exception) or isinstance(groups, Exception):
            continue
        held = sum(int(g["pending"]) for g in groups if g["name"] == GROUP)
        pending += held
        unread += max(0, int(length) - held)
    return unread, pending


async def sample_mailboxes(host: EntityHost) -> None:
    """Set the host's mailbox-depth gauges from its shards' mailboxes as they are now."""
    streams = host.mailboxes.streams(host.KIND, host.shards)
    unread, pending = await mailbox_depth(host.redis, streams)
    tags = {"host": host.name, "kind": host.KIND}
    MAILBOX_DEPTH.set(unread, tags={**tags, "state": "unread"})
    MAILBOX_DEPTH.set(pending, tags={**tags, "state": "pending"})


def watch(host: EntityHost) -> None:
    """What every host does for operations from its start: JSON log lines that name the
    order (`use_json_logs`, `mark_log_records`) and its mailbox-depth gauges, sampled
    every `MAILBOX_SAMPLE_S` by one of the host's background loops."""
    use_json_logs()
    mark_log_records()
    host.every(MAILBOX_SAMPLE_S, "sampling mailbox depth", lambda: sample_mailboxes(host))


# -- logs --------------------------------------------------------------------------------


def logging_config() -> ray.LoggingConfig:
    """The platform's logs, for `ray.init(logging_config=...)`: JSON lines from every
    process of the job, INFO and above, with the logger's name beside Ray's own fields."""
    return ray.LoggingConfig(
        encoding="JSON", log_level="INFO", additional_log_standard_attrs=LOG_ATTRS
    )


def serve_logging_config(enable_access_log: bool) -> dict[str, Any]:
    """The same for the Serve deployment's `logging_config` (Serve sets up its replicas'
    loggers itself)."""
    return {
        "encoding": "JSON",
        "log_level": "INFO",
        "enable_access_log": enable_access_log,
        "additional_log_standard_attrs": LOG_ATTRS,
    }


_json_logs = False


def use_json_logs() -> bool:
    """In a Ray worker whose job was started without a logging configuration, write this
    process's logs as `logging_config()` would have from its start; returns whether it
    did. A job's own configuration, whatever it says, is left alone (it is applied to
    every worker of the job before its first task), and outside a worker nothing
    changes.

    The hosts call this as they start: on a cluster they are created by an API replica,
    in the job of whoever started Serve, whose configuration the platform may not set."""
    global _json_logs
    if _json_logs or not ray.is_initialized():
        return False
    worker = ray._private.worker.global_worker
    if worker.mode != ray.WORKER_MODE or worker.job_logging_config is not None:
        return False
    logging_config()._apply()
    _json_logs = True
    return True


ORDER_ID: ContextVar[str | None] = ContextVar("o2o_order_id", default=None)


def order_of(thing: object) -> str | None:
    """The order a message or follow-up is about, if it names one (`order_id`, or the
    `order_id` of its `request`: a placement's body, a dispatch)."""
    order_id = getattr(thing, "order_id", None)
    if order_id is None:
        request = getattr(thing, "request", None)
        if isinstance(request, dict):
            order_id = request.get("order_id")
        else:
            order_id = getattr(request, "order_id", None)
    return order_id if isinstance(order_id, str) and order_id else None


def concerning(order_id: str | None) -> None:
    """Every log line from here to the end of the running task is about `order_id`.

    For a host's entry points: each message of a batch and each follow-up runs as its
    own asyncio task (`asyncio.gather` makes one each, with a copy of the context), so
    the mark ends with it; the tasks it starts (`EntityHost.spawn`) carry it on."""
    ORDER_ID.set(order_id)


@contextlib.contextmanager
def about(order_id: str | None = None) -> Iterator[None]:
    """Every log line inside is about `order_id` (None: about the order that `concerning`
    names inside, once it is known), and the mark from before is back afterwards: for a
    loop that takes one order after another in one task. An exception leaving carries
    the order with it, so the line that logs it further up names the order too."""
    token = ORDER_ID.set(order_id)
    try:
        yield
    except Exception as err:
        with contextlib.suppress(AttributeError):
            err.o2o_order_id = ORDER_ID.get()  # type: ignore[attr-defined]
        raise
    finally:
        ORDER_ID.reset(token)


_marking = False


def mark_log_records() -> None:
    """Make every log record of this process carry `order_id` while an order is marked
    (through the record factory, so every handler sees it: Ray's JSON one, Serve's, a
    test's). Once per process. A call that passes `extra={"order_id": ...}` inside a
    mark is refused by `logging` (the attribute is taken): mark the order instead."""
    global _marking
    if _marking:
        return
    _marking = True
    make = logging.getLogRecordFactory()

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = make(*args, **kwargs)
        order_id = ORDER_ID.get()
        if order_id is None and made.exc_info:
            order_id = getattr(made.exc_info[1], "o2o_order_id", None)
        if order_id is not None:
            made.order_id = order_id
        return made

    logging.setLogRecordFactory(record)
