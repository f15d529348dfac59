"""Each terminal's events: a WebSocket, and a long poll for weak networks."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from actors import telemetry
from domain.errors import DomainError
from domain.geo import Point
from serve_app import auth, errors
from serve_app.auth import Caller
from serve_app.deps import caller, services
from serve_app.presence import Whereabouts
from serve_app.schemas import Cursor, HomeIn, Id, SyncQuery
from serve_app.services import Services, as_json
from serve_app.sync import Feed, ResyncRequired, snapshot
from storage import keys
from storage.redis import UNAVAILABLE

router = APIRouter()

# Events sent per read of the backlog before a socket goes live.
BACKLOG_PAGE = 500
# WebSocket close code 1012, "service restart": clients reconnect on it.
STORE_RESTARTING = 1012
# A socket whose address the long poll would answer 422 (a bad `cursor` or `viewing`):
# one error frame in the shape of API.md, then this close code, 4000 + that status as
# 4401 is for a bad token. Reconnecting with the same address cannot help.
INVALID_QUERY = 4422
MERCHANT_ID: TypeAdapter[str] = TypeAdapter(Id)


def inbox_of(who: Caller) -> str:
    return keys.inbox("ops" if who.role == "admin" else who.role, who.sub)


@router.get("/v1/sync/events")
async def sync_events(
    cursor: Cursor | None = None,
    wait_s: float = Query(0, ge=0, le=30),
    limit: int = Query(100, gt=0, le=1000),
    who: Caller = Depends(caller),
    app: Services = Depends(services),
) -> Response:
    """The events after `cursor`; without one, or with an empty one, from the oldest
    retained. A cursor from before what the stream still holds gets one
    `resync_required` event with a fresh cursor."""
    inbox = inbox_of(who)
    async with Feed(app.hub, app.inboxes, inbox, cursor or None) as feed:
        try:
            await feed.check_retained()
        except ResyncRequired:
            fresh = await snapshot(app.inboxes, app.orders, inbox, who.role, who.sub)
            return as_json({"events": [fresh], "cursor": fresh["cursor"]})
        events = await feed.backlog(limit)
        if not events and wait_s > 0:
            with telemetry.sync_socket("long_poll"):
                await feed.subscribe()
                events = await feed.backlog(limit) or await feed.live(wait_s)
    return as_json({"events": events, "cursor": feed.cursor})


@router.websocket("/v1/sync/ws")
async def sync_ws(
    websocket: WebSocket,
    cursor: str | None = None,
    token: str | None = None,
    viewing: str | None = None,
    lat: str | None = None,
    lng: str | None = None,
    app: Services = Depends(services),
) -> None:
    """Everything after `cursor` (as the long poll reads it), then live events, one JSON
    text frame each.

    A customer's device may say where it is (`lat` and `lng`, or later a `location`
    message): it then counts as connected in that cell for regional promotions
    (`serve_app/presence.py`).

    A bad token refuses the handshake. A bad `cursor`, `viewing` or position gets one
    frame `{"error": {"code": "invalid_request", ...}}` and the close code 4422.
    """
    try:
        who = auth.decode(
            app.settings.jwt_secret, token or auth.bearer(websocket.headers.get("authorization"))
        )
    except DomainError as err:
        await websocket.close(code=4401, reason=err.message)
        return
    try:
        query = SyncQuery(cursor=cursor, viewing=viewing, lat=lat, lng=lng)
    except ValidationError as err:
        await _refuse(websocket, err)
        return
    await websocket.accept()
    with telemetry.sync_socket("websocket"):
        await _serve(websocket, who, query, app)


async def _serve(websocket: WebSocket, who: Caller, query: SyncQuery, app: Services) -> None:
    """An accepted socket's life: its backlog, then live events, until either side ends."""
    async with Feed(app.hub, app.inboxes, inbox_of(who), query.cursor or None) as feed:
        await feed.subscribe()
        if query.viewing:
            await feed.view(query.viewing)
        where = Whereabouts(who)
        if query.lat is not None and query.lng is not None:
            await where.report(app, Point(query.lat, query.lng))
        sender = asyncio.create_task(_push(websocket, feed, who, app))
        receiver = asyncio.create_task(_listen(websocket, feed, where, app))
        try:
            done, pending = await asyncio.wait(
                {sender, receiver}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            where.close()
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if sender in done and isinstance(sender.exception(), UNAVAILABLE):
            # The stream could not be read: the terminal reconnects with its cursor and
            # gets what it missed once Redis answers.
            with contextlib.suppress(Exception):
                await websocket.close(code=STORE_RESTARTING, reason="reconnect with your cursor")


async def _refuse(websocket: WebSocket, err: ValidationError) -> None:
    problems = [
        {**problem, "loc": ["query", *problem["loc"]]}
        for problem in errors.problems_of(err.errors())
    ]
    frame = errors.error_body("invalid_request", errors.summary_of(problems), {"errors": problems})
    await websocket.accept()
    await websocket.send_text(frame.decode())
    await websocket.close(code=INVALID_QUERY, reason="invalid query")


async def _push(websocket: WebSocket, feed: Feed, who: Caller, app: Services) -> None:
    try:
        await feed.check_retained()
    except ResyncRequired:
        fresh = await snapshot(app.inboxes, app.orders, feed.inbox, who.role, who.sub)
        feed.cursor = fresh["cursor"]
        await websocket.send_text(orjson.dumps(fresh).decode())
    while True:
        batch = await feed.backlog(BACKLOG_PAGE)
        for event in batch:
            await websocket.send_text(orjson.dumps(event).decode())
        if len(batch) < BACKLOG_PAGE:
            break
    while True:
        for event in await feed.live(None):
            await websocket.send_text(orjson.dumps(event).decode())


def _is_id(value: object) -> bool:
    try:
        MERCHANT_ID.validate_python(value)
    except ValidationError:
        return False
    return True


def _point(command: dict[str, object]) -> Point | None:
    try:
        at = HomeIn.model_validate({"lat": command.get("lat"), "lng": command.get("lng")})
    except ValidationError:
        return None
    return Point(at.lat, at.lng)


async def _listen(websocket: WebSocket, feed: Feed, where: Whereabouts, app: Services) -> None:
    """Commands from the terminal: which merchant it is viewing, where it is, and pings."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            try:
                command = orjson.loads(await websocket.receive_text())
            except orjson.JSONDecodeError:
                continue
            kind = command.get("type") if isinstance(command, dict) else None
            if kind == "view" and _is_id(command.get("merchant_id")):
                await feed.view(command["merchant_id"])
            elif kind == "location" and (point := _point(command)) is not None:
                await where.report(app, point)
            elif kind == "ping":
                await websocket.send_text('{"type":"pong"}')
