"""Reconciliation finds every missing, duplicate and mismatched row, and nothing on a clean day."""

from __future__ import annotations

from datetime import UTC, datetime

from domain import ledger
from domain.reconciliation import Row, ledger_rows, provider_rows, reconcile

AT = datetime(2026, 11, 29, 12, tzinfo=UTC)


def statement(*rows: tuple[str, str, str | None, int]) -> list[dict[str, object]]:
    return [
        {"type": t, "out_trade_no": o, "refund_no": r, "amount_fen": a, "fee_fen": 0}
        for t, o, r, a in rows
    ]


def test_a_clean_day_reports_nothing() -> None:
    txns = [
        ledger.capture("o1", "c1", 1000, AT),
        ledger.refund("o1-r1", "o1", "c1", 300, 1000, 0, None, AT),
        ledger.capture("o2", "c2", 500, AT),
    ]
    provider = provider_rows(
        statement(
            ("payment", "o1", None, 1000),
            ("refund", "o1", "o1-r1", 300),
            ("payment", "o2", None, 500),
        )
    )
    report = reconcile(provider, ledger_rows(txns))
    assert report["clean"] is True
    assert (report["provider_rows"], report["ledger_rows"]) == (3, 3)


def test_every_kind_of_difference_is_listed() -> None:
    ours = [
        Row("payment", "o1", None, 1000),
        Row("payment", "o2", None, 500),
        Row("refund", "o1", "r1", 300),
    ]
    theirs = [
        Row("payment", "o1", None, 1000),
        Row("payment", "o1", None, 1000),
        Row("payment", "o2", None, 501),
        Row("payment", "o3", None, 42),
    ]
    report = reconcile(theirs, ours)
    assert report["clean"] is False
    assert [r["order_id"] for r in report["missing_in_ledger"]] == ["o3"]
    assert [(r["order_id"], r["refund_no"]) for r in report["missing_at_provider"]] == [
        ("o1", "r1")
    ]
    assert [(d["side"], d["order_id"], d["count"]) for d in report["duplicates"]] == [
        ("provider", "o1", 2)
    ]
    (mismatch,) = report["amount_mismatches"]
    assert (mismatch["order_id"], mismatch["amount_fen"], mismatch["ledger_amount_fen"]) == (
        "o2",
        501,
        500,
    )


def test_splits_are_not_provider_movements() -> None:
    from domain.pricing import Amounts

    txns = [
        ledger.capture("o1", "c1", 1300, AT),
        ledger.split_capture(
            "o1", "m1", "r1", Amounts(1000, 300, 0, 1300), 1300, 8, 0, ledger.DEFAULT_PLAN, AT
        ),
    ]
    assert ledger_rows(txns) == [Row("payment", "o1", None, 1300)]
