"""Where a customer's connected devices are, for regional promotions.

A customer's sync socket may say where the device is (`?lat=&lng=`, or a
`{"type": "location", "lat": ..., "lng": ...}` message): the customer then counts as
connected in that point's h3 cell (at the zones' resolution) for
`O2O_PROMOTION_PRESENCE_S`, renewed at half that while the socket stays open, and is
told at once of the promotions active there. Only the cell is kept, never the point.
Other roles' sockets may send a position too; it is not kept (riders report theirs
through their own routes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from domain.geo import Point, zone_of
from serve_app.auth import Caller
from serve_app.services import Services, now
from storage.promotions import ms
from storage.redis import UNAVAILABLE

log = logging.getLogger(__name__)


@dataclass
class Whereabouts:
    """The last position a customer's socket reported, kept fresh while it is open."""

    who: Caller
    point: Point | None = None
    _keeper: asyncio.Task[None] | None = None

    async def report(self, app: Services, point: Point) -> None:
        """The device is at `point`: record its cell and tell it what is active there.
        A store that is down costs the report, never the socket."""
        if self.who.role != "customer":
            return
        self.point = point
        cell = zone_of(point, app.settings.zone_resolution)
        at = now()
        try:
            await app.promotions.arrive(self.who.sub, cell, ms(at))
            await app.promotions.tell_arrival(self.who.sub, cell, at)
        except UNAVAILABLE as err:
            log.warning("presence of %s not recorded (%r)", self.who.sub, err)
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._keep(app))

    async def _keep(self, app: Services) -> None:
        """Report the last position again before it lapses, until the socket ends."""
        while True:
            await asyncio.sleep(app.settings.promotion_presence_s / 2)
            if self.point is not None:
                with contextlib.suppress(Exception):
                    await self.report(app, self.point)

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
