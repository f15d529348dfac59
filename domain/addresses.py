"""A customer's address book: where they have things delivered, and which door is usual.

The same shape as the order: `decide(book, command) -> events`, `evolve(book, event)`,
pure, with a version that every event raises by one (so a device that has seen version
n drops anything older). One command makes at most one event, and every event carries
the book's default after it, so a device applies each event on its own:

- `address_added`: a new address (the first one, or one added with `default`, becomes
  the default);
- `address_changed`: its point, text, phone or label changed;
- `address_removed`: gone (when it was the default, the oldest address left takes over);
- `default_address_changed`: another address is the default.

Rules: at most `MAX_ADDRESSES` per customer (`address_book_full`), coordinates within
`domain.geo.Point`'s bounds, exactly one default while the book has any address. An
address id belongs to one customer's book: another's id is `address_not_found`, as if it
did not exist. The events are the customer's own (the customer's inbox stream, every
device of that customer), never another party's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, ClassVar

from domain.errors import DomainError
from domain.geo import Point

MAX_ADDRESSES = 20


@dataclass(frozen=True)
class Address:
    id: str
    point: Point
    address: str
    phone: str = ""
    label: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "lat": self.point.lat,
            "lng": self.point.lng,
            "address": self.address,
            "phone": self.phone,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Address:
        return cls(
            id=d["id"],
            point=Point(d["lat"], d["lng"]),
            address=d["address"],
            phone=d.get("phone", ""),
            label=d.get("label", ""),
        )


@dataclass(frozen=True)
class AddressBook:
    customer_id: str
    version: int = 0
    # Oldest first: when the default goes, the oldest left takes over.
    addresses: tuple[Address, ...] = ()
    default_id: str | None = None

    def find(self, address_id: str) -> Address | None:
        return next((a for a in self.addresses if a.id == address_id), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "version": self.version,
            "default_address_id": self.default_id,
            "addresses": [a.as_dict() for a in self.addresses],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AddressBook:
        return cls(
            customer_id=d["customer_id"],
            version=d["version"],
            addresses=tuple(Address.from_dict(a) for a in d["addresses"]),
            default_id=d.get("default_address_id"),
        )


# -- commands --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BookCommand:
    at: datetime
    # A device that saw the book at some version may insist on it (409 stale_version).
    expected_version: int | None = None


@dataclass(frozen=True, kw_only=True)
class AddAddress(BookCommand):
    address: Address
    make_default: bool = False


@dataclass(frozen=True, kw_only=True)
class ChangeAddress(BookCommand):
    address_id: str
    # None keeps what the address has.
    point: Point | None = None
    address: str | None = None
    phone: str | None = None
    label: str | None = None


@dataclass(frozen=True, kw_only=True)
class RemoveAddress(BookCommand):
    address_id: str


@dataclass(frozen=True, kw_only=True)
class SetDefaultAddress(BookCommand):
    address_id: str


# -- events: what a customer's devices receive -----------------------------------


@dataclass(frozen=True, kw_only=True)
class BookEvent:
    """An address book's event. Not an order's: `order_id` is null on the wire and the
    version is the book's."""

    type: ClassVar[str] = "address_book_event"
    customer_id: str
    version: int
    at: datetime
    # The book's default once the event is applied.
    default_address_id: str | None

    def data(self) -> dict[str, Any]:
        base = {"version", "at"}
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in base:
                continue
            value = getattr(self, f.name)
            out[f.name] = value.as_dict() if isinstance(value, Address) else value
        return out

    def as_dict(self) -> dict[str, Any]:
        """The wire form, as API.md's sync events (the cursor is added by the stream)."""
        return {
            "type": self.type,
            "order_id": None,
            "version": self.version,
            "at": self.at.isoformat(),
            "data": self.data(),
        }


@dataclass(frozen=True, kw_only=True)
class AddressAdded(BookEvent):
    type: ClassVar[str] = "address_added"
    address: Address


@dataclass(frozen=True, kw_only=True)
class AddressChanged(BookEvent):
    type: ClassVar[str] = "address_changed"
    address: Address


@dataclass(frozen=True, kw_only=True)
class AddressRemoved(BookEvent):
    type: ClassVar[str] = "address_removed"
    address_id: str


@dataclass(frozen=True, kw_only=True)
class DefaultAddressChanged(BookEvent):
    type: ClassVar[str] = "default_address_changed"


# Event types whose `data.address` is an address (sealed at rest, `storage/sealing.py`).
CARRY_AN_ADDRESS = frozenset({AddressAdded.type, AddressChanged.type})


def _missing(address_id: str) -> DomainError:
    return DomainError("address_not_found", "no such address", id=address_id)


def decide(book: AddressBook, command: BookCommand) -> list[BookEvent]:
    """The events a command produces, or a DomainError; an empty list means already done."""
    if command.expected_version is not None and command.expected_version != book.version:
        raise DomainError(
            "stale_version",
            "the address book changed since you saw it",
            expected_version=command.expected_version,
            version=book.version,
        )
    who, nxt, at = book.customer_id, book.version + 1, command.at
    match command:
        case AddAddress():
            new = command.address
            existing = book.find(new.id)
            if existing is not None:
                if existing == new:
                    return []  # the same address sent again
                raise DomainError("address_exists", "an address with this id exists", id=new.id)
            if len(book.addresses) >= MAX_ADDRESSES:
                raise DomainError(
                    "address_book_full",
                    f"an address book holds at most {MAX_ADDRESSES} addresses",
                    max_addresses=MAX_ADDRESSES,
                )
            default = new.id if command.make_default or book.default_id is None else book.default_id
            return [
                AddressAdded(
                    customer_id=who, version=nxt, at=at, address=new, default_address_id=default
                )
            ]
        case ChangeAddress():
            old = book.find(command.address_id)
            if old is None:
                raise _missing(command.address_id)
            changed = replace(
                old,
                point=command.point if command.point is not None else old.point,
                address=command.address if command.address is not None else old.address,
                phone=command.phone if command.phone is not None else old.phone,
                label=command.label if command.label is not None else old.label,
            )
            if changed == old:
                return []
            return [
                AddressChanged(
                    customer_id=who,
                    version=nxt,
                    at=at,
                    address=changed,
                    default_address_id=book.default_id,
                )
            ]
        case RemoveAddress():
            if book.find(command.address_id) is None:
                raise _missing(command.address_id)
            left = book.default_id
            if left == command.address_id:
                rest = [a.id for a in book.addresses if a.id != command.address_id]
                left = rest[0] if rest else None
            return [
                AddressRemoved(
                    customer_id=who,
                    version=nxt,
                    at=at,
                    address_id=command.address_id,
                    default_address_id=left,
                )
            ]
        case SetDefaultAddress():
            if book.find(command.address_id) is None:
                raise _missing(command.address_id)
            if book.default_id == command.address_id:
                return []
            return [
                DefaultAddressChanged(
                    customer_id=who, version=nxt, at=at, default_address_id=command.address_id
                )
            ]
    raise DomainError("invalid_request", f"unknown command {type(command).__name__}")


def evolve(book: AddressBook, event: BookEvent) -> AddressBook:
    """Apply one event. Events are facts: no checks here, `decide` made them."""
    addresses = book.addresses
    match event:
        case AddressAdded():
            addresses = (*addresses, event.address)
        case AddressChanged():
            addresses = tuple(event.address if a.id == event.address.id else a for a in addresses)
        case AddressRemoved():
            addresses = tuple(a for a in addresses if a.id != event.address_id)
    return replace(
        book, version=event.version, addresses=addresses, default_id=event.default_address_id
    )
