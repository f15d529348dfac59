"""Stand-in payment provider for local runs and tests.

It speaks a WeChat Pay / Stripe style protocol (payment intents, a query API,
idempotent refunds, daily statements and signed, retried webhooks), opens intents
from checkout links the merchant signed (Alipay style), and keeps everything in
memory. `sandbox.signing` is shared with the platform, which signs the links and
verifies the webhooks with it.
"""
