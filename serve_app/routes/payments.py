"""The provider's signed notifications."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response

from serve_app import errors
from serve_app.deps import services
from serve_app.openapi import answers
from serve_app.services import Services, unwrap
from storage.provider import SIGNATURE_HEADER

router = APIRouter()

# The route reads the raw bytes (the signature covers them exactly), so FastAPI cannot
# see what it takes: the document says it here.
NOTIFICATION = {
    "parameters": [
        {
            "name": SIGNATURE_HEADER,
            "in": "header",
            "required": True,
            "description": 't=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">',
            "schema": {"type": "string"},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["out_trade_no"],
                    "properties": {"out_trade_no": {"type": "string"}},
                }
            }
        },
    },
}


@router.post(
    "/v1/payments/callback",
    response_class=PlainTextResponse,
    responses=answers(401, 404, 409),
    openapi_extra=NOTIFICATION,
)
async def payment_callback(request: Request, app: Services = Depends(services)) -> Response:
    """`success` only once the notification is durably applied (the provider retries until)."""
    body = await request.body()
    try:
        order_id = orjson.loads(body)["out_trade_no"]
        if not isinstance(order_id, str):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return errors.error_response("malformed_json", "not a provider notification", 400)
    signature = request.headers.get(SIGNATURE_HEADER)
    unwrap(await app.directory.payment(order_id).notify(body, signature))
    return PlainTextResponse("success")
