"""The order id on every log record about an order, the mailbox depth, the socket count."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from ray.serve.schema import LoggingConfig as ServeLoggingConfig
from redis.exceptions import ResponseError

from actors import telemetry
from actors.directory import Act, Notify, Place, SetStatus
from domain import commands as c
from domain import reactions as r
from domain.dispatch import Dispatch
from domain.geo import Point

log = logging.getLogger("tests.telemetry")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def order_ids(self) -> list[str | None]:
        return [getattr(record, "order_id", None) for record in self.records]


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch) -> Iterator[Records]:
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(telemetry, "_marking", False)
    telemetry.mark_log_records()
    handler = Records()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        logging.setLogRecordFactory(factory)


def test_the_order_a_message_or_follow_up_is_about() -> None:
    act = Act(
        "m_1",
        "o_act",
        c.CancelOrder(at=datetime.now(UTC), reason="x", by="customer"),
        ("customer", "c_1"),
    )
    request = Dispatch(
        order_id="o_find",
        merchant_id="m_1",
        pickup=Point(30.0, 120.0),
        dropoff=Point(30.01, 120.0),
        version=3,
    )
    assert telemetry.order_of(act) == "o_act"
    assert telemetry.order_of(Place({"order_id": "o_place", "merchant_id": "m_1"})) == "o_place"
    assert telemetry.order_of(r.FindRider(request)) == "o_find"
    assert telemetry.order_of(r.Settle("o_settle")) == "o_settle"
    assert telemetry.order_of(Notify(b"{}", None)) is None  # no routing id: not known yet
    assert telemetry.order_of(SetStatus("z", "r_1", True, 30.0, 120.0)) is None


async def test_each_task_names_its_own_order_and_no_other(records: Records) -> None:
    async def handle(order_id: str) -> None:
        telemetry.concerning(order_id)
        await asyncio.sleep(0)
        log.info("working on it")

    await asyncio.gather(handle("o_a"), handle("o_b"))
    log.info("after the batch")
    assert sorted(records.order_ids()[:2]) == ["o_a", "o_b"]  # type: ignore[type-var]
    assert records.order_ids()[2] is None
    assert all(record.getMessage() for record in records.records)


def test_a_loop_marks_one_order_after_another_and_forgets_each(records: Records) -> None:
    for order_id in ("o_1", "o_2"):
        with telemetry.about(order_id):
            log.info("about %s", order_id)
    with telemetry.about():
        log.info("not known yet")
        telemetry.concerning("o_3")
        log.info("now known")
    log.info("outside")
    assert records.order_ids() == ["o_1", "o_2", None, "o_3", None]


def test_an_exception_carries_its_order_to_the_line_that_logs_it(records: Records) -> None:
    try:
        with telemetry.about("o_failed"):
            raise RuntimeError("boom")
    except RuntimeError:
        log.exception("the step failed")
    assert records.order_ids() == ["o_failed"]


class FakePipeline:
    def __init__(self, streams: dict[str, tuple[int, list[dict[str, Any]]] | None]) -> None:
        self.streams = streams
        self.commands: list[tuple[str, str]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def xlen(self, stream: str) -> None:
        self.commands.append(("xlen", stream))

    def xinfo_groups(self, stream: str) -> None:
        self.commands.append(("xinfo_groups", stream))

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        assert not raise_on_error
        answers: list[Any] = []
        for command, stream in self.commands:
            found = self.streams[stream]
            if found is None:
                answers.append(ResponseError("no such key"))
            else:
                answers.append(found[0] if command == "xlen" else found[1])
        return answers


class FakeRedis:
    def __init__(self, streams: dict[str, tuple[int, list[dict[str, Any]]] | None]) -> None:
        self.streams = streams
        self.pipelines = 0

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        assert not transaction
        self.pipelines += 1
        return FakePipeline(self.streams)


async def test_mailbox_depth_is_unread_and_pending_in_one_round_trip() -> None:
    client = FakeRedis(
        {
            "mailbox:a": (7, [{"name": "hosts", "pending": 2, "lag": None}]),
            "mailbox:b": (
                3,
                [{"name": "hosts", "pending": 0, "lag": 3}, {"name": "x", "pending": 9}],
            ),
            "mailbox:new": None,  # not opened yet: nothing in it
        }
    )
    assert await telemetry.mailbox_depth(client, ["mailbox:a", "mailbox:b", "mailbox:new"]) == (
        8,
        2,
    )
    assert client.pipelines == 1
    assert await telemetry.mailbox_depth(client, []) == (0, 0)
    assert client.pipelines == 1


def test_open_sockets_are_counted_back_down() -> None:
    with telemetry.sync_socket("websocket"):
        with telemetry.sync_socket("websocket"):
            assert telemetry._open["websocket"] == 2
        with pytest.raises(RuntimeError), telemetry.sync_socket("long_poll"):
            raise RuntimeError("the terminal went away")
        assert telemetry._open["long_poll"] == 0
    assert telemetry._open["websocket"] == 0


def test_the_log_configurations_are_json_and_valid_for_ray_and_serve() -> None:
    assert telemetry.logging_config().encoding == "JSON"
    serve = ServeLoggingConfig(**telemetry.serve_logging_config(enable_access_log=False))
    assert (serve.encoding, serve.enable_access_log) == ("JSON", False)
    assert telemetry.use_json_logs() is False  # not in a Ray worker: nothing changes


def test_counting_needs_no_cluster() -> None:
    telemetry.order_event("order_placed")
    telemetry.dispatch("offered")
    telemetry.payment("captured")
    telemetry.notified(ValueError("not a refusal"))
    telemetry.placed(0.0, {"order": {}})
    assert telemetry._event_tags("order_picked_up") == {"event": "picked_up"}
