"""Settings, from the environment (prefix `O2O_`) with `REDIS_URL` and `RAY_ADDRESS` as is.

Every process of the platform (driver, host actors, Serve replicas) reads the same
settings; the driver passes its environment on to Ray's workers. This module imports
nothing of the project, so every layer may read it; whatever needs one of these values
receives it from its caller.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "dev-secret-change-me-in-production-0123456789"
DEV_PAYMENT_SECRET = "sandbox-secret-change-me"
# 32 bytes, base64: the key of customers' personal data at rest in dev mode only.
DEV_DATA_KEY = "ZGV2LWRhdGEta2V5LWNoYW5nZS1tZS0wMTIzNDU2Nzg="
MIN_JWT_SECRET = 32
MIN_PAYMENT_SECRET = 16
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _is_aes_256_key(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except ValueError:
        return False


class UnsafeSettings(ValueError):
    """Settings the platform refuses to start with."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="O2O_", extra="ignore", populate_by_name=True)

    # Where things are. Empty REDIS_URL means: start the embedded server.
    redis_url: str = Field("", validation_alias=AliasChoices("REDIS_URL", "O2O_REDIS_URL"))
    ray_address: str = Field("", validation_alias=AliasChoices("RAY_ADDRESS", "O2O_RAY_ADDRESS"))
    data_dir: Path = Path("data")
    # Where the embedded server (no REDIS_URL) listens: loopback unless other nodes
    # must reach it; a real deployment names its own servers in REDIS_URL.
    redis_host: str = "127.0.0.1"
    redis_port: int = 6390
    # everysec loses at most about one second of acknowledged writes on a power cut;
    # always loses none and costs a disk flush per write.
    appendfsync: Literal["everysec", "always", "no"] = "everysec"
    # The embedded server rewrites its append-only log once it doubles and is at least
    # this big. Each rewrite forks and takes a core for about a second; at Redis's 64 MB
    # a lunch peak rewrote every 15 s on 2 cores. A restart replays at most about this
    # much log (413 MB took 2 s here).
    redis_aof_rewrite_min_mb: int = Field(1024, ge=1)

    # The front door's address: loopback for one machine, 0.0.0.0 for a node that
    # callers reach from outside (dev mode refuses anything but loopback).
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # "haproxy" runs Serve's HAProxy ingress, "proxy" Serve's own Python proxy.
    # The README's front-door table is why haproxy is the default.
    front_door: Literal["haproxy", "proxy"] = "haproxy"
    api_replicas: int = 1
    # An open WebSocket holds one of these slots for its whole life.
    api_max_ongoing_requests: int = 20_000
    # HAProxy's connection cap (Serve's default is 4,096).
    haproxy_maxconn: int = 30_000
    ray_num_cpus: int = 2
    # Ray's dashboard on the Ray `o2o up` starts: `serve status`, `serve deploy` and
    # Prometheus discovery need it; it costs a little CPU (the tests leave it off).
    ray_dashboard: bool = True
    ray_dashboard_port: int = 8265
    # Serve's line per request; it cost 7% of the replica's CPU in the full loop.
    access_log: bool = False
    # Serve's RAY_SERVE_THROUGHPUT_OPTIMIZED: handlers on the replica's own event loop.
    serve_throughput_optimized: bool = True
    # Serve's HTTP request metrics in HAProxy mode (RAY_SERVE_HAPROXY_METRICS_ENABLED):
    # HAProxy sends a log line per request that Serve's HAProxyManager parses, 7% of
    # a core at 1,700 requests/s. The platform's own operations metrics live in Redis
    # either way; turn this on to see Serve's request counts and latencies in Ray's
    # metrics.
    serve_http_metrics: bool = False

    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = 8100
    # The payment provider's base URL; empty: the sandbox `o2o up` starts on
    # sandbox_host:sandbox_port.
    provider_url: str = ""
    # The secrets' defaults are for dev mode only: outside it the platform refuses them.
    payment_secret: str = DEV_PAYMENT_SECRET
    # Where the provider sends its notifications: the platform's own callback route.
    public_url: str = ""

    jwt_secret: str = DEV_JWT_SECRET
    jwt_ttl_s: int = 7 * 24 * 3600
    # AES-256-GCM key (32 bytes, base64) for customers' phone numbers and addresses at
    # rest in Redis (`storage/sealing.py`). Losing it loses those fields of stored orders.
    data_key: str = DEV_DATA_KEY
    # Dev mode mints tokens for anybody (`POST /v1/auth/dev-token`) and accepts the default
    # secrets: only `make run` and the tests ask for it, and it binds loopback only.
    dev_mode: bool = False

    # Tests only: hosts crash at moments a test arms in Redis (`storage/faults.py`).
    fault_injection: bool = False
    # On a Valkey cluster: replicas that must hold an order change (placement, payment,
    # every transition) before it is answered, so that a primary lost right after does
    # not take an acknowledged order or payment with it (replication is asynchronous).
    # 0 answers as soon as the primary has it. A replica that does not answer within
    # the timeout is not waited for longer: the change is answered, and counted.
    redis_wait_replicas: int = Field(0, ge=0, le=5)
    redis_wait_timeout_ms: int = Field(200, ge=1)
    # An entity without messages this long has its cached state dropped from memory.
    entity_idle_s: float = 600.0
    # People's messages queued for one entity before the next is refused at once (503
    # with Retry-After): a merchant that cannot keep up makes its own customers retry
    # instead of holding a host's memory and every caller's time. Follow-ups are never
    # refused (they wait in the mailbox streams).
    entity_queue_limit: int = Field(200, ge=1)
    # How a message reaches an entity's host: "mailbox", an entry in its shard's command
    # stream that the owning host reads in batches and acknowledges once its effect is
    # stored, the reply on the sender's own channel (`actors/mailroom.py`); or "ray", a
    # Ray actor call to the host. The mailbox costs several times less CPU per message
    # under load (`make bench-hop`) and survives the host's death; a host serves both.
    entity_transport: Literal["mailbox", "ray"] = "mailbox"
    # How long a sender waits for an entity's reply by mailbox before it answers 503;
    # a command still unread then is dropped by its host unapplied.
    mailbox_reply_timeout_s: float = Field(30.0, gt=0)
    # Host actors per kind that a deployment asks for; 0 keeps the layout the platform
    # has (`o2o hosts`), or the first time sizes the kind from the cluster: one host of
    # each kind per two CPUs of the nodes offering `o2o_hosts` (`actors/registry.py`).
    # The count every process routes by is the layout's in Redis, never this value.
    merchant_hosts: int = 0
    rider_zone_hosts: int = 0
    payment_hosts: int = 0
    # The city's local time as a fixed offset east of UTC, in minutes (480: China,
    # UTC+8, no daylight saving time): merchants' opening hours are in this time.
    city_utc_offset_min: int = Field(480, ge=-720, le=840)
    zone_resolution: int = 7
    dispatch_rings: int = 2
    # The nearest riders of each zone that dispatch weighs for an order.
    dispatch_shortlist: int = 12
    offer_ttl_s: int = 30
    # "score" weighs distance, load, ready time and fairness; "nearest" is the baseline.
    dispatch_policy: Literal["score", "nearest"] = "score"
    # Orders one rider may carry at once when the policy batches them.
    rider_capacity: int = 3
    # How often a customer is told where its rider is; riders may report more often.
    rider_location_interval_s: float = 3.0

    inbox_maxlen: int = 10_000
    # A terminal away longer than this (or past maxlen events) gets resync_required.
    inbox_retention_s: int = 24 * 3600
    # A regional promotion reaches at most this many customers a second, in slices of a
    # tenth of a second (`actors/promotions.py`), so its push does not crowd out order
    # events on the same inboxes and the same Redis (README, Live sync).
    promotion_batch_per_s: int = Field(500, ge=1, le=100_000)
    # How long the cell a customer's sync socket reported counts as where it is
    # connected (renewed while the socket stays open).
    promotion_presence_s: int = Field(900, ge=10)
    idempotency_ttl_s: int = 24 * 3600
    payment_timeout_s: int = 15 * 60
    # A paid order its merchant neither accepts nor rejects in this long is rejected by
    # the platform (reason merchant_accept_timeout) and refunded in full.
    merchant_accept_timeout_s: int = Field(300, ge=1)
    # How often orders awaiting payment are checked with the provider (lost notifications).
    payment_poll_s: float = 5.0
    # The provider's fee in basis points (the sandbox charges 0.6%, like WeChat Pay).
    provider_fee_bp: int = 60

    # -- risk checks (`domain/risk.py`): a hit holds the order or the refund for review
    # (`GET /v1/admin/reviews`), never refuses it. A maximum of 0 turns its rule off.
    # Orders per customer and per device (the client's `X-Device-Id`) in a sliding
    # window, the one being placed counted: past it the order is placed held. A person
    # orders a few times a day and an office's runner perhaps ten times at lunch; twenty
    # in an hour is a script (coupon farming, testing stolen cards, hoarding stock).
    risk_orders_window_s: int = Field(3600, ge=1)
    risk_max_orders_per_customer: int = Field(20, ge=0)
    # A shared tablet at home carries a few family accounts: a device gets more.
    risk_max_orders_per_device: int = Field(30, ge=0)
    # Failed payments (orders left unpaid until the payment timeout closed them) in a
    # window, at which the next order is held: abandoning a checkout or two a day is
    # ordinary; five is somebody trying cards, or holding stock without paying (an
    # unpaid order keeps its items for the whole payment timeout).
    risk_failures_window_s: int = Field(24 * 3600, ge=1)
    risk_max_failures_per_customer: int = Field(5, ge=0)
    risk_max_failures_per_device: int = Field(5, ge=0)
    # Refunds operations ask for one merchant in a UTC day, in basis points of what its
    # customers paid it that day, above which the next refund waits for a second
    # operator: a kitchen's bad day refunds a tenth; a third is a merchant or an agent
    # turning refunds into money (refunds of orders closed before the merchant accepted
    # them are never held, but count).
    risk_refund_share_bp: int = Field(3000, ge=0, le=10_000)
    # Refunds of a merchant's day up to this are never held: a small merchant's one
    # refund is most of its day (200 yuan, a few orders).
    risk_refund_allowance_fen: int = Field(20_000, ge=0)
    # Pickup to delivery faster than this, as the crow flies from the counter to the
    # door, is not a ride: 30 km/h in a straight line is some 40 km/h by road, past the
    # 25 km/h of a legal e-bike (GB 17761-2018). The split of such a delivery waits.
    risk_rider_max_speed_kmh: float = Field(30.0, ge=0)
    # Shorter trips are not judged: a door's position is tens of metres off, and a
    # rider may hand over at the gate.
    risk_rider_min_distance_m: float = Field(300.0, ge=0)

    # Requests per caller (the token's role and subject; the client address when
    # anonymous) and route class, in the `limits` notation ("10/second;300/minute").
    # Placement is the costliest write: a person places a few orders an hour, so ten a
    # second is a script, and one replica's 1,700/s should take many callers.
    rate_limit_place: str = "10/second"
    # Other changes: a merchant at the lunch peak accepts and readies several orders a
    # second, a rider reports its position every few seconds.
    rate_limit_write: str = "30/second"
    # Reads: terminals read orders and menus, the dashboard polls its figures.
    rate_limit_read: str = "60/second"
    # Token minting, keyed by client address (the caller has no token yet); `make run`'s
    # seed mints some 60 tokens in about a second.
    rate_limit_auth: str = "100/second"
    # Ordinary requests one replica works on at once before it answers 503 at once:
    # past this the event loop only queues, and every caller waits longer for nothing.
    # Long polls, WebSockets and payment notifications are not counted.
    shed_max_in_flight: int = Field(1000, ge=1)
    # Long polls and WebSockets one replica holds at once, counted apart from the
    # ordinary requests (each costs a socket and a little memory while it waits); past
    # it a long poll gets 503 with Retry-After and a WebSocket's handshake 503, before
    # it is accepted. Serve's max_ongoing_requests (api_max_ongoing_requests) is above
    # both bounds together.
    shed_max_sockets: int = Field(10_000, ge=1)
    # Comma-separated addresses or networks of the proxies whose X-Forwarded-For names
    # an anonymous caller (its rightmost entry: what the proxy saw). Serve's HAProxy on
    # the replica's own node reaches it from loopback; add the nodes' network when
    # HAProxy and the replicas are on different nodes.
    trusted_proxies: str = Field("127.0.0.0/8,::1", pattern=r"^[0-9A-Fa-f:.,/ ]*$")
    # HAProxy refuses a caller past this many times its rate limit (per route class,
    # these settings' rate_limit_*) with 429 after rate_limit_hold_s, before any
    # replica sees the request; 0 leaves every refusal to the replicas. Needs the
    # wrapped HAProxy (`serve_app/admission.py`): the launcher's, or a node's started
    # by `cluster/start-head.sh`.
    rate_limit_haproxy_factor: float = Field(2.0, ge=0)
    # How long the replica waits on a merchant's entity before answering 503
    # merchant_unavailable: far above a placement's p99 under load (about 50 ms), short
    # enough that a stuck merchant costs its own customers seconds, not minutes.
    merchant_call_timeout_s: float = Field(2.0, gt=0)
    # Consecutive timeouts or failures that open a merchant's circuit breaker.
    merchant_breaker_failures: int = Field(5, ge=1)
    # How long an open breaker answers at once before calls are let through again.
    merchant_breaker_open_s: float = Field(10.0, gt=0)
    # Serve's graceful_shutdown_timeout_s for the API: the deregistration window
    # (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S, 2 s here), the longest long poll
    # (30 s, API.md) and an ordinary request must fit, or they are cut at the kill.
    api_drain_timeout_s: float = Field(40.0, gt=0)
    # How often a draining replica looks whether its requests have finished.
    api_drain_wait_loop_s: float = Field(0.5, gt=0)
    # A caller past its limit waits this long (up to half as long again) for its
    # 429: a client that ignores Retry-After on many sockets would otherwise keep the
    # replica busy refusing it, and everybody else's requests queue behind.
    rate_limit_hold_s: float = Field(1.0, ge=0)

    def refuse_unsafe(self) -> None:
        """Refuse to start outside dev mode with a default or short secret, and in dev mode
        to listen anywhere but on loopback (anybody could mint an admin token there)."""
        problems = []
        if self.dev_mode:
            for name, host in (
                ("O2O_HTTP_HOST", self.http_host),
                ("O2O_SANDBOX_HOST", self.sandbox_host),
            ):
                if host not in LOOPBACK:
                    problems.append(f"{name}={host}: dev mode listens on loopback only")
        else:
            if self.jwt_secret == DEV_JWT_SECRET or len(self.jwt_secret) < MIN_JWT_SECRET:
                problems.append(f"O2O_JWT_SECRET must be a secret of {MIN_JWT_SECRET}+ characters")
            if (
                self.payment_secret == DEV_PAYMENT_SECRET
                or len(self.payment_secret) < MIN_PAYMENT_SECRET
            ):
                problems.append(
                    "O2O_PAYMENT_SECRET must be set to the provider's secret "
                    f"(at least {MIN_PAYMENT_SECRET} characters)"
                )
            if not self.public_url:
                problems.append(
                    "O2O_PUBLIC_URL must be set: the platform's address as the payment "
                    "provider reaches it, signed into every pay link"
                )
            if self.data_key == DEV_DATA_KEY or not _is_aes_256_key(self.data_key):
                problems.append(
                    "O2O_DATA_KEY must be a key of its own: 32 random bytes, base64 (for "
                    "example `openssl rand -base64 32`)"
                )
        if problems:
            raise UnsafeSettings("; ".join(problems))

    @property
    def sandbox_url(self) -> str:
        """The payment provider: the one named, or the sandbox `o2o up` starts."""
        return self.provider_url.rstrip("/") or f"http://{self.sandbox_host}:{self.sandbox_port}"

    @property
    def platform_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"

    @property
    def notify_url(self) -> str:
        """Where the provider sends its notifications: the platform's callback route."""
        return f"{self.platform_url}/v1/payments/callback"

    @property
    def effective_redis_url(self) -> str:
        host = "127.0.0.1" if self.redis_host in ("0.0.0.0", "::") else self.redis_host
        return self.redis_url or f"redis://{host}:{self.redis_port}/0"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
