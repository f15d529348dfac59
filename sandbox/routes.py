"""The sandbox payment provider's HTTP API as an aiohttp application.

Handlers parse the request, call one `Provider` operation and render its answer.
They do not await between reading and mutating the provider's state, so each
operation stays atomic on the event loop; the only pause, the refund latency
knob, comes after the refund is committed.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from datetime import date
from typing import Any

import orjson
from aiohttp import web

from sandbox.provider import (
    ApiError,
    Intent,
    Provider,
    amount_field,
    description_field,
    id_field,
    url_field,
)
from storage.provider import FEE_BP

log = logging.getLogger("sandbox")

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

PROVIDER_KEY = web.AppKey("provider", Provider)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status)


_HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = _error(exc.status, _HTTP_ERROR_CODES.get(exc.status, "http_error"), exc.reason)
        if "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal_error", "internal error")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return data


def _provider(request: web.Request) -> Provider:
    return request.app[PROVIDER_KEY]


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def create_intent(request: web.Request) -> web.Response:
    data = await _body(request)
    out_trade_no = id_field(data, "out_trade_no")
    amount_fen = amount_field(data, "amount_fen")
    notify_url = url_field(data, "notify_url")
    description = description_field(data)
    status, view = _provider(request).create_intent(
        out_trade_no, amount_fen, notify_url, description
    )
    return _json(view, status)


async def get_intent(request: web.Request) -> web.Response:
    provider = _provider(request)
    intent = provider.find_intent(request.match_info["intent_id"])
    return _json(provider.intent_view(intent) | provider.order_view(intent))


async def close_intent(request: web.Request) -> web.Response:
    return _json(_provider(request).close(request.match_info["intent_id"]))


_PAY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sandbox checkout</title></head>
<body>
<h1>Sandbox checkout</h1>
<p>Order {out_trade_no}: {amount}</p>
<p>Status: {status}</p>
<form method="post"><button type="submit">Pay</button></form>
</body></html>
"""


def _checkout_intent(request: web.Request) -> Intent:
    provider = _provider(request)
    intent_id = request.match_info["intent_id"]
    if "sign" in request.query:
        return provider.open_checkout({**request.query, "intent_id": intent_id})
    return provider.find_intent(intent_id)


async def pay_page(request: web.Request) -> web.Response:
    # Lets a person open pay_url in a browser during demos; machines POST.
    intent = _checkout_intent(request)
    page = _PAY_PAGE.format(
        out_trade_no=html.escape(intent.out_trade_no),
        amount=f"¥{intent.amount_fen // 100}.{intent.amount_fen % 100:02d}",
        status=html.escape(intent.status),
    )
    return web.Response(text=page, content_type="text/html")


async def pay(request: web.Request) -> web.Response:
    # Whatever body the customer's client sends is irrelevant to paying.
    return _json(_provider(request).pay(_checkout_intent(request).intent_id))


async def close_order(request: web.Request) -> web.Response:
    return _json(_provider(request).close_trade(request.match_info["out_trade_no"]))


async def query_order(request: web.Request) -> web.Response:
    return _json(_provider(request).query_order(request.match_info["out_trade_no"]))


async def create_refund(request: web.Request) -> web.Response:
    data = await _body(request)
    refund_no = id_field(data, "refund_no")
    out_trade_no = id_field(data, "out_trade_no")
    amount_fen = amount_field(data, "amount_fen")
    provider = _provider(request)
    status, view = provider.refund(refund_no, out_trade_no, amount_fen)
    # The refund is committed before the pause, like a provider whose reply
    # is slow: a client that times out and retries must rely on refund_no.
    latency_ms = provider.knobs.refund_latency_ms
    if latency_ms:
        await asyncio.sleep(latency_ms / 1000)
    return _json(view, status)


async def get_refund(request: web.Request) -> web.Response:
    return _json(_provider(request).get_refund(request.match_info["refund_no"]))


async def statements(request: web.Request) -> web.Response:
    raw = request.query.get("date", "")
    try:
        if not _DATE_RE.match(raw):
            raise ValueError(raw)
        day = date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_date", "date must be YYYY-MM-DD") from None
    return _json(_provider(request).statement(day))


async def get_knobs(request: web.Request) -> web.Response:
    return _json(asdict(_provider(request).knobs))


async def update_knobs(request: web.Request) -> web.Response:
    data = await _body(request)
    return _json(_provider(request).update_knobs(data))


async def flush_knobs(request: web.Request) -> web.Response:
    return _json({"released": _provider(request).release_held()})


async def reset_knobs(request: web.Request) -> web.Response:
    return _json(_provider(request).reset_knobs())


async def list_notifications(request: web.Request) -> web.Response:
    attempts = _provider(request).attempts
    for key in ("id", "type", "out_trade_no", "outcome"):
        wanted = request.query.get(key)
        if wanted is not None:
            attempts = [a for a in attempts if a[key] == wanted]
    return _json({"attempts": attempts})


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    notifier = app[PROVIDER_KEY].notifier
    await notifier.start()
    yield
    await notifier.stop()


def make_app(secret: str, public_url: str, seed: int = 0, fee_bp: int = FEE_BP) -> web.Application:
    """Build the sandbox; `public_url` is how customers reach it (used in pay_url).

    `fee_bp` is the fee its statements charge, in basis points of each payment.
    """
    app = web.Application(middlewares=[_error_middleware])
    app[PROVIDER_KEY] = Provider(secret, public_url, seed, fee_bp)
    app.cleanup_ctx.append(_lifecycle)
    router = app.router
    router.add_get("/health", health)
    router.add_post("/v1/intents", create_intent)
    router.add_get("/v1/intents/{intent_id}", get_intent)
    router.add_post("/v1/intents/{intent_id}/close", close_intent)
    router.add_get("/pay/{intent_id}", pay_page)
    router.add_post("/pay/{intent_id}", pay)
    router.add_get("/v1/orders/{out_trade_no}", query_order)
    router.add_post("/v1/orders/{out_trade_no}/close", close_order)
    router.add_post("/v1/refunds", create_refund)
    router.add_get("/v1/refunds/{refund_no}", get_refund)
    router.add_get("/v1/statements", statements)
    router.add_get("/_knobs", get_knobs)
    router.add_post("/_knobs", update_knobs)
    router.add_post("/_knobs/flush", flush_knobs)
    router.add_post("/_knobs/reset", reset_knobs)
    router.add_get("/_notifications", list_notifications)
    return app
