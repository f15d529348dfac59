"""The replica's door without a platform: long polls and WebSockets counted apart from
ordinary requests, anonymous callers keyed by the address a trusted proxy forwarded,
and the lines the HAProxy wrapper adds to Serve's configuration, checked by HAProxy."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pydantic
import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from serve_app import admission, auth
from serve_app.admission import Admission, Gate
from storage.server import free_port
from storage.settings import Settings

SECRET = "a-secret-long-enough-for-hs256-0123456789"
LOOPBACK = admission.networks("127.0.0.0/8,::1")


class Letting:
    """A limiter that lets everybody in and remembers whom it was asked about."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def refused_until(self, route: str, caller: str) -> float | None:
        self.asked.append((route, caller))
        return None


class Holding:
    """The app behind the door: holds every request until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.inside = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.inside += 1
        try:
            if scope["type"] == "websocket":
                await receive()  # websocket.connect
                await send({"type": "websocket.accept"})
                await self.release.wait()
                await send({"type": "websocket.close", "code": 1000})
                return
            await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
        finally:
            self.inside -= 1


def door(app: Any, **settings: Any) -> tuple[Admission, Letting]:
    chosen: dict[str, Any] = {
        "jwt_secret": SECRET,
        "shed_max_in_flight": 3,
        "shed_max_sockets": 2,
        "redis_url": "redis://127.0.0.1:1/0",  # never asked: the limiter is replaced
        **settings,
    }
    middleware = Admission(app)
    middleware.gate = Gate(Settings(**chosen))
    letting = Letting()
    middleware.gate.limiter = letting  # type: ignore[assignment]
    return middleware, letting


def http_scope(
    path: str,
    query: bytes = b"",
    method: str = "GET",
    client: tuple[str, int] = ("127.0.0.1", 50000),
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": headers or [],
        "client": client,
    }


def ws_scope(denial: bool = True) -> Scope:
    return {
        "type": "websocket",
        "path": "/v1/sync/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 50001),
        "extensions": {"websocket.http.response": {}} if denial else {},
    }


async def call(app: Any, scope: Scope) -> list[Message]:
    sent: list[Message] = []
    connected = False

    async def receive() -> Message:
        nonlocal connected
        if scope["type"] == "websocket" and not connected:
            connected = True
            return {"type": "websocket.connect"}
        await asyncio.Event().wait()  # the client never says more
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def status_of(sent: list[Message]) -> int:
    start = next(m for m in sent if m["type"].endswith("http.response.start"))
    return int(start["status"])


def headers_of(sent: list[Message]) -> dict[str, str]:
    start = next(m for m in sent if m["type"].endswith("http.response.start"))
    return {k.decode(): v.decode() for k, v in start["headers"]}


def body_of(sent: list[Message]) -> Any:
    return orjson.loads(b"".join(m.get("body", b"") for m in sent if m["type"].endswith("body")))


def assert_shed(sent: list[Message]) -> None:
    assert status_of(sent) == 503
    assert int(headers_of(sent)["retry-after"]) >= 1
    assert body_of(sent)["error"]["code"] == "service_unavailable"


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


LONG_POLL = ("/v1/sync/events", b"wait_s=20&cursor=1-0")


async def test_long_polls_and_websockets_share_a_cap_of_their_own() -> None:
    app = Holding()
    middleware, _ = door(app)
    gate = middleware.gate
    assert gate is not None
    held = [
        asyncio.create_task(call(middleware, http_scope(*LONG_POLL))),
        asyncio.create_task(call(middleware, ws_scope())),
    ]
    await settle()
    assert (gate.sockets, gate.in_flight, app.inside) == (2, 0, 2)

    # Past the cap: a long poll 503 at once, a WebSocket refused before it is accepted
    # (503 where the server can say so, close code 1013 where it cannot).
    assert_shed(await call(middleware, http_scope(*LONG_POLL)))
    denied = await call(middleware, ws_scope(denial=True))
    assert denied[0]["type"] == "websocket.http.response.start"
    assert_shed(denied)
    assert not any(m["type"] == "websocket.accept" for m in denied)
    closed = await call(middleware, ws_scope(denial=False))
    assert closed == [{"type": "websocket.close", "code": 1013, "reason": "try again later"}]

    # Ordinary requests do not count against the sockets, nor sockets against them;
    # a poll without a wait is an ordinary request.
    ordinary = [
        asyncio.create_task(call(middleware, http_scope("/v1/orders"))),
        asyncio.create_task(call(middleware, http_scope("/v1/sync/events", b"wait_s=0"))),
    ]
    await settle()
    assert (gate.sockets, gate.in_flight) == (2, 2)

    app.release.set()
    results = await asyncio.gather(*held, *ordinary)
    assert [status_of(r) for r in results if r[0]["type"] == "http.response.start"] == [200] * 3
    assert (gate.sockets, gate.in_flight) == (0, 0)
    # Room again.
    app.release = asyncio.Event()
    app.release.set()
    assert status_of(await call(middleware, http_scope(*LONG_POLL))) == 200


async def test_ordinary_requests_past_their_bound_are_shed_while_long_polls_get_in() -> None:
    app = Holding()
    middleware, _ = door(app, shed_max_in_flight=1, shed_max_sockets=1)
    first = asyncio.create_task(call(middleware, http_scope("/v1/orders")))
    await settle()
    assert_shed(await call(middleware, http_scope("/v1/orders")))
    poll = asyncio.create_task(call(middleware, http_scope(*LONG_POLL)))
    await settle()
    assert app.inside == 2
    app.release.set()
    assert [status_of(r) for r in await asyncio.gather(first, poll)] == [200, 200]


async def test_a_socket_that_fails_gives_its_slot_back() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    middleware, _ = door(failing)
    for scope in (ws_scope(), http_scope(*LONG_POLL), http_scope("/v1/orders")):
        with pytest.raises(RuntimeError):
            await call(middleware, scope)
    assert middleware.gate is not None
    assert (middleware.gate.sockets, middleware.gate.in_flight) == (0, 0)


def with_xff(*values: str, client: str = "127.0.0.1") -> Scope:
    headers = [(b"x-forwarded-for", v.encode()) for v in values]
    return http_scope("/v1/auth/dev-token", method="POST", client=(client, 1), headers=headers)


@pytest.mark.parametrize(
    ("client", "forwarded", "key"),
    [
        # From the proxy: what it appended, the rightmost entry, whatever came before.
        ("127.0.0.1", ["198.51.100.7"], "addr:198.51.100.7"),
        ("127.0.0.1", ["203.0.113.9, 198.51.100.7"], "addr:198.51.100.7"),
        ("127.0.0.1", ["203.0.113.9", "198.51.100.7"], "addr:198.51.100.7"),
        ("::1", ["2001:DB8:0:0::1"], "addr:2001:db8::1"),
        # Not an address: the proxy's own.
        ("127.0.0.1", ["198.51.100.7, junk"], "addr:127.0.0.1"),
        ("127.0.0.1", [], "addr:127.0.0.1"),
        # From anybody else, the header is the client's word: not taken.
        ("198.51.100.7", ["203.0.113.9"], "addr:198.51.100.7"),
    ],
)
def test_an_anonymous_caller_is_the_address_a_trusted_proxy_forwarded(
    client: str, forwarded: list[str], key: str
) -> None:
    assert admission.address_of(with_xff(*forwarded, client=client), LOOPBACK) == key


def test_no_trusted_proxy_means_the_peer_and_tokens_name_their_caller() -> None:
    assert admission.address_of(with_xff("198.51.100.7"), ()) == "addr:127.0.0.1"
    nets = admission.networks("10.0.0.0/8, 192.0.2.2")
    assert admission.address_of(with_xff("198.51.100.7", client="10.1.2.3"), nets) == (
        "addr:198.51.100.7"
    )
    assert admission.address_of(with_xff("198.51.100.7", client="192.0.2.3"), nets) == (
        "addr:192.0.2.3"
    )
    token, _ = auth.issue(SECRET, "customer", "c_1", ttl_s=60)
    scope = with_xff("198.51.100.7")
    scope["headers"].append((b"authorization", f"Bearer {token}".encode()))
    assert admission.caller_of(scope, SECRET, LOOPBACK) == "customer:c_1"
    scope["headers"][-1] = (b"authorization", b"Bearer forged")
    assert admission.caller_of(scope, SECRET, LOOPBACK) == "addr:198.51.100.7"


async def test_the_door_keys_anonymous_callers_by_their_forwarded_address() -> None:
    app = Holding()
    app.release.set()
    middleware, letting = door(app)
    await call(middleware, with_xff("198.51.100.7"))
    await call(middleware, http_scope("/v1/merchants", headers=[(b"x-forwarded-for", b"::1")]))
    assert letting.asked == [("auth", "addr:198.51.100.7"), ("read", "addr:::1")]


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert Settings().trusted_proxies == "127.0.0.0/8,::1"
    with pytest.raises(pydantic.ValidationError):
        Settings(trusted_proxies="localhost")
    with pytest.raises(ValueError):
        admission.networks("127.0.0.1/40")


# -- through a real uvicorn, as Serve's replica runs it ---------------------------------


@contextlib.contextmanager
def serving(app: Any) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


async def until_closed(scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket accepted and kept until the client leaves; HTTP answered at once."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_uvicorn_answers_a_websocket_past_the_cap_503_before_accepting_it() -> None:
    middleware, _ = door(until_closed, shed_max_sockets=1)
    with serving(middleware) as port:
        url = f"ws://127.0.0.1:{port}/v1/sync/ws"
        with connect(url, open_timeout=5) as first:
            with pytest.raises(InvalidStatus) as refused:
                connect(url, open_timeout=5)
            answer = refused.value.response
            assert answer.status_code == 503
            assert int(answer.headers["Retry-After"]) >= 1
            assert orjson.loads(answer.body)["error"]["code"] == "service_unavailable"
            # The long poll's answer past the cap, over HTTP.
            poll = httpx.get(f"http://127.0.0.1:{port}/v1/sync/events?wait_s=5", timeout=5)
            assert poll.status_code == 503 and poll.headers["retry-after"] == "1"
            assert first.protocol.state.name == "OPEN"
        # Its slot is given back when it closes.
        deadline = time.monotonic() + 5
        while middleware.gate is not None and middleware.gate.sockets:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with connect(url, open_timeout=5):
            pass


# -- the HAProxy wrapper ----------------------------------------------------------------

# The shape of Serve's generated configuration around the lines the wrapper adds.
SERVE_SHAPED = """global
    maxconn 1000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    errorfile 502 {errors}/500.http
    errorfile 503 {errors}/500.http
    errorfile 504 {errors}/500.http
frontend prometheus
    bind :{metrics}
    mode http
    no log
frontend http_frontend
    bind 127.0.0.1:{port}
    acl routes path -i /-/routes
    http-request return status 200 content-type text/plain string "{{}}" if routes
    default_backend api
backend api
    http-reuse always
    server replica 127.0.0.1:{backend} check
"""


def wrapper_namespace(directory: Path, settings: Settings) -> dict[str, Any]:
    admission.haproxy_wrapper(directory, settings)
    namespace: dict[str, Any] = {"__name__": "not_main"}
    exec((directory / "o2o_haproxy.py").read_text(), namespace)
    return namespace


def test_the_wrapper_adds_its_lines_once_after_the_frontends_bind(tmp_path: Path) -> None:
    if admission.real_haproxy() is None:
        pytest.skip("no HAProxy binary")
    wrapper = wrapper_namespace(tmp_path, Settings(rate_limit_haproxy_factor=2))
    config = SERVE_SHAPED.format(port=1, metrics=2, backend=3, errors="/serve")
    once = wrapper["inject"](config, wrapper["LINES"], wrapper["TAIL"])
    lines = once.split("\n")
    at = lines.index("frontend http_frontend")
    assert lines[at + 1] == "    bind 127.0.0.1:1"
    assert lines[at + 2] == f"    {admission.HAPROXY_MARK}"
    assert "    option forwardfor" in lines
    assert lines.count("backend o2o_place_0") == 1
    assert wrapper["inject"](once, wrapper["LINES"], wrapper["TAIL"]) == once
    assert wrapper["inject"](config.replace("http_frontend", "other"), "x", "") is None

    assert f"    errorfile 503 {tmp_path / '503.http'}" in lines
    assert "/serve/500.http" not in once

    quiet = wrapper_namespace(tmp_path, Settings(rate_limit_haproxy_factor=0))
    plain = quiet["inject"](config, quiet["LINES"], quiet["TAIL"])
    assert "option forwardfor" in plain and "stick-table" not in plain and "tarpit" not in plain


def test_haproxy_limits_mirror_each_route_classes_limits() -> None:
    front, tail = admission.haproxy_lines(
        Settings(
            rate_limit_haproxy_factor=1.5,
            rate_limit_place="10/second;100/minute",
            rate_limit_hold_s=0,
        )
    )
    assert "{ sc_http_req_rate(0) gt 15 }" in front  # 10/second x 1.5
    assert "track-sc1 var(txn.o2o_who) table o2o_place_1" in front
    assert "hdr Retry-After 60 if { var(txn.o2o_class) -m str place } " in front
    assert "{ sc_http_req_rate(1) gt 150 }" in front
    assert "http-request deny deny_status 429" in front  # no hold: no tarpit
    assert "store http_req_rate(60s)" in tail
    assert admission.haproxy_lines(Settings(rate_limit_haproxy_factor=0))[1] == ""


class Backend(BaseHTTPRequestHandler):
    """Answers every request 201 with the X-Forwarded-For lines it was given."""

    served_by = "backend"

    def answer(self) -> tuple[int, dict[str, Any]]:
        return 201, {"xff": self.headers.get_all("x-forwarded-for") or []}

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        status, answer = self.answer()
        body = orjson.dumps(answer)
        self.send_response(status)
        self.send_header("served-by", self.served_by)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def running_haproxy(
    tmp_path: Path, settings: Settings, config_text: str, port: int
) -> Iterator[str]:
    """The wrapper running HAProxy on `config_text`, a Serve-shaped configuration whose
    frontend binds `port`."""
    env = admission.haproxy_wrapper(tmp_path, settings)
    config = tmp_path / "haproxy.cfg"
    config.write_text(config_text)
    shim = env["RAY_SERVE_HAPROXY_BINARY_PATH"]
    check = subprocess.run([shim, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([shim, "-db", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/-/routes", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "HAProxy did not start"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def haproxy(tmp_path: Path, settings: Settings, backend_up: bool = True) -> Iterator[str]:
    """The wrapper running HAProxy on a Serve-shaped configuration, before a backend
    (or a port nobody listens on). Serve's error files are not there: HAProxy starts
    only if the wrapper put the platform's in their place."""
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    if backend_up:
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        backend_port = backend.server_port
    else:
        backend.server_close()
        backend_port = free_port()
    port = free_port()
    config = SERVE_SHAPED.format(
        port=port, metrics=free_port(), backend=backend_port, errors=tmp_path / "serve"
    )
    try:
        with running_haproxy(tmp_path, settings, config, port) as url:
            yield url
    finally:
        if backend_up:
            backend.shutdown()
            backend.server_close()


def test_haproxy_without_a_replica_answers_the_platforms_503(tmp_path: Path) -> None:
    if admission.real_haproxy() is None:
        pytest.skip("no HAProxy binary")
    with haproxy(tmp_path, Settings(), backend_up=False) as url:
        for _ in range(3):
            answer = httpx.post(f"{url}/v1/orders", content=b"{}", timeout=30)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == str(admission.SHED_RETRY_AFTER_S)
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["error"]["code"] == "service_unavailable"


# Serve's retry policy and its fallback proxy (`haproxy_templates.py`): a replica that
# fails is marked down on its errors, a retry goes to another server, the fallback
# takes what no replica can.
REPLAYING = SERVE_SHAPED.replace(
    "    timeout server 30s\n",
    "    timeout server 30s\n    option redispatch 1\n    retry-on conn-failure\n",
).replace(
    "    server replica 127.0.0.1:{backend} check\n",
    "    server replica 127.0.0.1:{backend} check inter 200ms"
    " observe layer4 error-limit 1 on-error mark-down\n"
    "    server fallback 127.0.0.1:{fallback} check inter 200ms backup\n",
)

# A replica in a process of its own: it notes each change's attempt id, then works on it
# until it is killed.
DYING_REPLICA = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
seen = open(sys.argv[2], "a", buffering=1)
class Replica(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("served-by", "replica")
        self.send_header("content-length", "0")
        self.end_headers()
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        seen.write(self.headers.get("x-attempt-id", "") + "\\n")
        time.sleep(60)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Replica).serve_forever()
"""


class Fallback(Backend):
    """Answers a change 201 with the attempt id it came with, on a kept-alive connection."""

    protocol_version = "HTTP/1.1"
    served_by = "fallback"

    def answer(self) -> tuple[int, dict[str, Any]]:
        return 201 if self.command == "POST" else 200, {"attempt": self.headers.get("x-attempt-id")}


def test_a_change_its_replica_died_on_is_replayed_with_its_attempt_id(tmp_path: Path) -> None:
    """A keep-alive client's request in flight when its replica is killed: HAProxy alone
    would close the client's connection without an answer. With the wrapper's lines it
    sends the request again, with the attempt id the dead replica saw."""
    if admission.real_haproxy() is None:
        pytest.skip("no HAProxy binary")
    replica_port, seen = free_port(), tmp_path / "seen"
    replica = subprocess.Popen([sys.executable, "-c", DYING_REPLICA, str(replica_port), str(seen)])
    fallback = ThreadingHTTPServer(("127.0.0.1", 0), Fallback)
    threading.Thread(target=fallback.serve_forever, daemon=True).start()
    port = free_port()
    config = REPLAYING.format(
        port=port,
        metrics=free_port(),
        backend=replica_port,
        fallback=fallback.server_port,
        errors=tmp_path / "serve",
    )
    try:
        with (
            running_haproxy(tmp_path, Settings(), config, port) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            deadline = time.monotonic() + 10
            # HAProxy's checks may find the replica down before it listens.
            while client.get("/v1/health/live").headers.get("served-by") != "replica":
                assert time.monotonic() < deadline, "the replica did not come up"
                time.sleep(0.05)

            def kill_once_it_works() -> None:
                deadline = time.monotonic() + 10
                while not (seen.exists() and seen.read_text().endswith("\n")):
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                replica.kill()

            killer = threading.Thread(target=kill_once_it_works)
            killer.start()
            # The client's second request on its connection, as most are.
            answer = client.post("/v1/orders", content=b"{}")
            killer.join()
            assert replica.wait(5) == -9
            assert answer.status_code == 201, answer.text
            assert answer.headers["served-by"] == "fallback"
            first_attempt = seen.read_text().split()
            assert len(first_attempt) == 1 and len(first_attempt[0]) == 36  # a UUID
            assert answer.json() == {"attempt": first_attempt[0]}
    finally:
        replica.kill()
        replica.wait(5)
        fallback.shutdown()
        fallback.server_close()


def test_haproxy_forwards_the_client_and_refuses_a_caller_past_its_limit(tmp_path: Path) -> None:
    if admission.real_haproxy() is None:
        pytest.skip("no HAProxy binary")
    settings = Settings(rate_limit_haproxy_factor=2, rate_limit_place="5/second")
    with haproxy(tmp_path, settings) as url:
        assert "o2o admission" in (tmp_path / "haproxy.cfg").read_text()
        spoofing = httpx.Client(
            base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10
        )
        seen = spoofing.get("/v1/merchants", headers={"X-Forwarded-For": "203.0.113.9"})
        # HAProxy appends what it saw: the replica takes the rightmost.
        assert seen.json()["xff"] == ["203.0.113.9", "127.0.0.2"]

        greedy = httpx.Client(base_url=url, headers={"Authorization": "Bearer a"}, timeout=10)
        placed = [greedy.post("/v1/orders", content=b"{}").status_code for _ in range(10)]
        assert placed == [201] * 10  # 5/second x 2 within a second
        started = time.monotonic()
        answer = greedy.post("/v1/orders", content=b"{}")
        assert answer.status_code == 429
        assert time.monotonic() - started >= settings.rate_limit_hold_s * 0.9  # held
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]["code"] == "rate_limited"
        # Per caller and per class: another token places, the same one still reads,
        # the provider's notifications are never counted.
        other = httpx.post(f"{url}/v1/orders", headers={"Authorization": "Bearer b"})
        assert other.status_code == 201
        assert greedy.get("/v1/orders").status_code == 201
        for _ in range(12):
            assert httpx.post(f"{url}/v1/payments/callback", content=b"{}").status_code == 201


def test_the_wrapper_runs_the_real_haproxy_and_not_an_earlier_wrapper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = admission.real_haproxy()
    if real is None:
        pytest.skip("no HAProxy binary")
    first = admission.haproxy_wrapper(tmp_path, Settings())["RAY_SERVE_HAPROXY_BINARY_PATH"]
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", first)
    assert admission.real_haproxy() == real
    version = subprocess.run([first, "-v"], capture_output=True, text=True, timeout=10)
    assert version.returncode == 0 and "HAProxy version" in version.stdout
    assert sys.executable in Path(first).read_text()


def test_a_node_started_by_hand_gets_the_wrapper_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if admission.real_haproxy() is None:
        pytest.skip("no HAProxy binary")
    admission.main([str(tmp_path / "hap")])
    line = capsys.readouterr().out.strip()
    assert line == f"export RAY_SERVE_HAPROXY_BINARY_PATH={tmp_path / 'hap' / 'haproxy'}"
    assert admission.is_wrapper(str(tmp_path / "hap" / "haproxy"))


def test_the_wrapper_retries_past_a_dead_replica_unless_serve_counts_retries(
    tmp_path: Path,
) -> None:
    wrapper = wrapper_namespace(tmp_path, Settings())
    serve = "defaults\n    mode http\n    retry-on conn-failure\nfrontend x\n"
    lines = wrapper["replayed_when_unanswered"](serve).split("\n")
    assert "    retry-on conn-failure empty-response" in lines
    assert f"    retries {admission.HAPROXY_RETRIES}" in lines
    counted = serve.replace("conn-failure\n", "conn-failure\n    retries 2\n")
    assert "retries 10" not in wrapper["replayed_when_unanswered"](counted)
