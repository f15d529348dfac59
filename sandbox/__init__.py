"""Stand-in payment provider for local runs and tests.

It speaks a WeChat Pay / Stripe style protocol (payment intents, a query API,
idempotent refunds, daily statements and signed, retried webhooks), opens intents
from checkout links the merchant signed (Alipay style), and keeps everything in
memory. Its only tie to the platform is `storage/provider.py`, the protocol both
share: the platform signs the links and verifies the webhooks with it, and the fee
the sandbox's statements charge is the one the platform books.
"""
