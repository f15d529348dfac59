"""Stand-in payment provider for local runs and tests.

It speaks a WeChat Pay / Stripe style protocol (payment intents, a query API,
idempotent refunds, daily statements and signed, retried webhooks) and keeps
everything in memory. `sandbox.signing` is shared with the platform, which
verifies the webhooks with it.
"""
