"""A payment: what the provider captured and refunded for one order, and what follows.

The record is the payment's state; `decide` turns what happened at the provider (or a
refund the platform asks for) into events, `evolve` applies them. Amounts are integer fen.
"""

from __future__ import annotations

FEE_BP = 60  # the provider's fee in basis points (0.6%, like WeChat Pay)


def provider_fee_fen(amount_fen: int, fee_bp: int = FEE_BP) -> int:
    """The provider's fee on a payment, rounded half up to the fen (its statement agrees)."""
    return (amount_fen * fee_bp + 5000) // 10000


def next_check_in(age_s: float, poll_s: float, timeout_s: float) -> float:
    """Seconds until the provider is asked again about an order still unpaid at `age_s`.

    The wait about doubles with the order's age, as providers advise for payment
    queries: an abandoned order costs ten queries over a 15-minute timeout, not 29, and
    a lunch peak's thousands of abandoned orders do not starve the fresh ones of the
    poll rounds, which are capped. Never sooner than `poll_s`, and never past the
    deadline, so that the order is closed (and its stock given back) on time.
    """
    return max(poll_s, min(age_s, timeout_s - age_s))
