"""Customers' personal data at rest: sealed with AES-256-GCM before it reaches Redis.

An order's delivery address and phone number are stored sealed, under the key of the
settings (`O2O_DATA_KEY`) and bound to the order's id (the associated data), so a
sealed value copied into another order does not open. Only the stores that serve the
API open them; whoever reads Redis directly (a backup, a replica, an operator's shell)
sees `sealed:v1:...`. An errand's contacts, pickup address and note and its proof
codes are sealed the same way. The coordinates of the door stay clear: dispatch and the
ETA weigh them on every offer, and the customer's own device sends them.

A customer's address book is sealed the same way, bound to the customer's id: each
address's label, text and phone. So are the events that carry such text on the inbox
streams, since a stream is at rest too (a `delivery_changed` of an order, bound to the
order; an `address_added` or `address_changed`, bound to the customer): sealed before
the script appends them, opened as a terminal's feed reads them (`storage/inboxes.py`).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.addresses import CARRY_AN_ADDRESS
from domain.events import DeliveryChanged

PREFIX = "sealed:v1:"
SEALED_FIELDS = ("address", "phone")
# An errand's (`domain/errands.py`): the contacts, address and note of its pickup, its
# recipient's name, and its two proof codes, which only its customer may read.
SEALED_ERRAND_PARTS = {
    "pickup": ("address", "contact_name", "contact_phone", "note"),
    "dropoff": ("contact_name",),
}
SEALED_ERRAND_FIELDS = ("pickup_code", "delivery_code")
# An address book's entries: a label may say as much as the address ("mum's flat").
ADDRESS_FIELDS = ("label", "address", "phone")


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
        return self._errand_with({**order, "delivery": delivery}, self.seal)

    def open_order(self, order: dict[str, Any]) -> dict[str, Any]:
        delivery = order.get("delivery")
        if not delivery:
            return order
        opened = dict(delivery)
        for name in SEALED_FIELDS:
            if isinstance(opened.get(name), str):
                opened[name] = self.open(opened[name], order["id"])
        return self._errand_with({**order, "delivery": opened}, self.open)

    @staticmethod
    def _errand_with(order: dict[str, Any], change: Callable[[str, str], str]) -> dict[str, Any]:
        """The order with its errand's sealed fields sealed or opened by `change`."""
        errand = order.get("errand")
        if not isinstance(errand, dict):
            return order
        changed = dict(errand)
        for part, names in SEALED_ERRAND_PARTS.items():
            if isinstance(changed.get(part), dict):
                fields = dict(changed[part])
                for name in names:
                    if isinstance(fields.get(name), str):
                        fields[name] = change(fields[name], order["id"])
                changed[part] = fields
        for name in SEALED_ERRAND_FIELDS:
            if isinstance(changed.get(name), str):
                changed[name] = change(changed[name], order["id"])
        return {**order, "errand": changed}

    def _fields(
        self, d: dict[str, Any], names: tuple[str, ...], context: str, seal: bool
    ) -> dict[str, Any]:
        change = self.seal if seal else self.open
        out = dict(d)
        for name in names:
            if isinstance(out.get(name), str):
                out[name] = change(out[name], context)
        return out

    def seal_book(self, book: dict[str, Any]) -> dict[str, Any]:
        """An address book (`AddressBook.as_dict()`) as stored: each entry's label, text
        and phone sealed, bound to the customer."""
        return self._book(book, seal=True)

    def open_book(self, book: dict[str, Any]) -> dict[str, Any]:
        return self._book(book, seal=False)

    def _book(self, book: dict[str, Any], seal: bool) -> dict[str, Any]:
        customer_id = book["customer_id"]
        entries = [self._fields(a, ADDRESS_FIELDS, customer_id, seal) for a in book["addresses"]]
        return {**book, "addresses": entries}

    def seal_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """A terminal's event as its stream keeps it: personal text sealed. Most events
        carry none and come back as they are, at the cost of one look at the type."""
        return self._event(event, seal=True)

    def open_event(self, event: dict[str, Any]) -> dict[str, Any]:
        return self._event(event, seal=False)

    def _event(self, event: dict[str, Any], seal: bool) -> dict[str, Any]:
        kind, data = event.get("type"), event.get("data")
        if not isinstance(data, dict):
            return event
        if kind == DeliveryChanged.type:
            data = self._fields(data, SEALED_FIELDS, str(event.get("order_id")), seal)
        elif kind in CARRY_AN_ADDRESS and isinstance(data.get("address"), dict):
            customer = str(data.get("customer_id"))
            address = self._fields(data["address"], ADDRESS_FIELDS, customer, seal)
            data = {**data, "address": address}
        else:
            return event
        return {**event, "data": data}
