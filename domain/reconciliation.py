"""Reconciliation: the provider's daily statement against the ledger, row by row.

A row is keyed by (kind, order, refund number). Every key on one side and not the
other is missing; a key twice on a side is a duplicate; the same key with different
amounts is a mismatch. A clean day has none of these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from domain.ledger import Transaction, provider_clearing

RowKind = Literal["payment", "refund"]


@dataclass(frozen=True)
class Row:
    kind: RowKind
    order_id: str
    refund_no: str | None
    amount_fen: int

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.kind, self.order_id, self.refund_no)


def provider_rows(statement: Iterable[Mapping[str, Any]]) -> list[Row]:
    return [
        Row(r["type"], r["out_trade_no"], r.get("refund_no"), int(r["amount_fen"]))
        for r in statement
    ]


def ledger_rows(transactions: Iterable[Transaction]) -> list[Row]:
    """The ledger's view of what the provider moved: captures and refunds, not splits."""
    rows = []
    for txn in transactions:
        if txn.kind == "capture":
            rows.append(Row("payment", txn.order_id, None, txn.amount_on(provider_clearing())))
        elif txn.kind == "refund":
            refunded = sum(p.amount_fen for p in txn.postings if p.account.endswith(":refunds"))
            rows.append(Row("refund", txn.order_id, txn.txn_id.removeprefix("refund:"), refunded))
    return rows


def reconcile(provider: list[Row], ledger: list[Row]) -> dict[str, Any]:
    def first_by_key(rows: list[Row]) -> dict[tuple[str, str, str | None], Row]:
        out: dict[tuple[str, str, str | None], Row] = {}
        for row in rows:
            out.setdefault(row.key, row)
        return out

    ours, theirs = first_by_key(ledger), first_by_key(provider)
    duplicates = [
        {"side": side, **asdict(row), "count": count}
        for side, rows in (("provider", provider), ("ledger", ledger))
        for key, count in Counter(r.key for r in rows).items()
        if count > 1
        for row in [first_by_key(rows)[key]]
    ]
    report = {
        "provider_rows": len(provider),
        "ledger_rows": len(ledger),
        "missing_in_ledger": [asdict(r) for k, r in theirs.items() if k not in ours],
        "missing_at_provider": [asdict(r) for k, r in ours.items() if k not in theirs],
        "duplicates": duplicates,
        "amount_mismatches": [
            {**asdict(r), "ledger_amount_fen": ours[k].amount_fen}
            for k, r in theirs.items()
            if k in ours and ours[k].amount_fen != r.amount_fen
        ],
    }
    report["clean"] = not any(
        report[k]
        for k in ("missing_in_ledger", "missing_at_provider", "duplicates", "amount_mismatches")
    )
    return report
