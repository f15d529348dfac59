"""Customers' personal data at rest: sealed with AES-256-GCM before it reaches Redis.

An order's delivery address and phone number are stored sealed, under the key of the
settings (`O2O_DATA_KEY`) and bound to the order's id (the associated data), so a
sealed value copied into another order does not open. Only the stores that serve the
API open them; whoever reads Redis directly (a backup, a replica, an operator's shell)
sees `sealed:v1:...`. The coordinates of the door stay clear: dispatch and the ETA
weigh them on every offer, and the customer's own device sends them.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "sealed:v1:"
SEALED_FIELDS = ("address", "phone")


class Sealer:
    def __init__(self, key_b64: str) -> None:
        self._aead = AESGCM(base64.b64decode(key_b64))

    def seal(self, text: str, context: str) -> str:
        if not text:
            return text
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, text.encode(), context.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, value: str, context: str) -> str:
        if not value.startswith(PREFIX):
            return value
        raw = base64.b64decode(value.removeprefix(PREFIX))
        return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()

    def seal_order(self, order: dict[str, Any]) -> dict[str, Any]:
        """The order as stored: its delivery's personal fields sealed."""
        delivery = dict(order["delivery"])
        for name in SEALED_FIELDS:
            if name in delivery:
                delivery[name] = self.seal(delivery[name], order["id"])
        return {**order, "delivery": delivery}

    def open_order(self, order: dict[str, Any]) -> dict[str, Any]:
        delivery = order.get("delivery")
        if not delivery:
            return order
        opened = dict(delivery)
        for name in SEALED_FIELDS:
            if isinstance(opened.get(name), str):
                opened[name] = self.open(opened[name], order["id"])
        return {**order, "delivery": opened}
