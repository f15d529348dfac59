"""A customer's address book, `/v1/me/addresses`, kept in step on every device.

Each change is one script in the customer's slot that writes the book and appends its
event (`address_added`, `address_changed`, `address_removed`,
`default_address_changed`) to the customer's inbox stream, so every socket open on the
customer's token (app, mini-program, web) hears of it at once, and a device that was
away reads it from its cursor. The book has no entity host: the customer is its only
writer, and the script is guarded by the book's version, so a change that loses a race
with another device's is judged again on the book as it is now (`RACE_TRIES`).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from domain import addresses as a
from domain.errors import DomainError
from domain.geo import Point
from serve_app.auth import Caller
from serve_app.deps import customer, services
from serve_app.openapi import answers
from serve_app.schemas import AddressChangeIn, AddressIn, ExpectVersion, Id
from serve_app.services import Services, as_json, creation_key, now

router = APIRouter()

# How often a change is judged again after another device's change won the race.
RACE_TRIES = 5


def address_id_for(who: Caller, idempotency_key: str | None) -> str:
    """The same key always names the same address, so a retry never adds two."""
    if idempotency_key:
        digest = hashlib.blake2b(f"{who.sub}\n{idempotency_key}".encode(), digest_size=8)
        return f"a_{digest.hexdigest()}"
    return f"a_{uuid.uuid4().hex[:16]}"


def entry(book: a.AddressBook, address: a.Address) -> dict[str, Any]:
    return {**address.as_dict(), "default": address.id == book.default_id}


def book_view(book: a.AddressBook) -> dict[str, Any]:
    return {
        "customer_id": book.customer_id,
        "version": book.version,
        "default_address_id": book.default_id,
        "addresses": [entry(book, address) for address in book.addresses],
    }


def address_view(book: a.AddressBook, address_id: str) -> dict[str, Any]:
    """One address as the book has it now, with the book's version."""
    address = book.find(address_id)
    if address is None:  # removed by another device meanwhile
        raise DomainError("address_not_found", "no such address", id=address_id)
    return {**entry(book, address), "version": book.version}


async def change(app: Services, customer_id: str, command: a.BookCommand) -> a.AddressBook:
    """Load, decide, commit the book with its events; the book as it is after."""
    for _ in range(RACE_TRIES):
        book = await app.addresses.load(customer_id)
        events = a.decide(book, command)
        after = book
        for event in events:
            after = a.evolve(after, event)
        if not events:
            return after
        try:
            await app.addresses.commit(book, after, events)
        except DomainError as err:
            if err.code != "stale_version":
                raise
            continue
        return after
    raise DomainError("stale_version", "the address book kept changing; try again")


@router.get("/v1/me/addresses")
async def list_addresses(
    who: Caller = Depends(customer), app: Services = Depends(services)
) -> Response:
    """The caller's address book: its addresses (oldest first), which is the default, and
    the version its events carry."""
    return as_json(book_view(await app.addresses.load(who.sub)))


@router.post("/v1/me/addresses", status_code=201, responses=answers(409))
async def add_address(
    body: AddressIn,
    request: Request,
    who: Caller = Depends(customer),
    app: Services = Depends(services),
) -> Response:
    """Add an address (`address_added` on the caller's stream). 409 `address_book_full`
    past `domain.addresses.MAX_ADDRESSES`."""
    address = a.Address(
        id=address_id_for(who, creation_key(request)),
        point=Point(body.lat, body.lng),
        address=body.address,
        phone=body.phone,
        label=body.label,
    )
    command = a.AddAddress(at=now(), address=address, make_default=body.default)

    async def run() -> Response:
        book = await change(app, who.sub, command)
        return as_json(address_view(book, address.id), 201)

    return await app.idempotent(request, who, run)


@router.patch("/v1/me/addresses/{address_id}", responses=answers(404, 409))
async def change_address(
    address_id: Id,
    body: AddressChangeIn,
    request: Request,
    who: Caller = Depends(customer),
    app: Services = Depends(services),
) -> Response:
    """Change an address (`address_changed`); what the body leaves out stays."""
    command = a.ChangeAddress(
        at=now(),
        expected_version=body.expected_version,
        address_id=address_id,
        point=Point(body.lat, body.lng) if body.lat is not None and body.lng is not None else None,
        address=body.address,
        phone=body.phone,
        label=body.label,
    )

    async def run() -> Response:
        return as_json(address_view(await change(app, who.sub, command), address_id))

    return await app.idempotent(request, who, run)


@router.delete("/v1/me/addresses/{address_id}", status_code=204, responses=answers(404, 409))
async def remove_address(
    address_id: Id,
    request: Request,
    body: ExpectVersion | None = None,
    who: Caller = Depends(customer),
    app: Services = Depends(services),
) -> Response:
    """Remove an address (`address_removed`); the default's place goes to the oldest
    address left. An optional body `{"expected_version": n}` guards it like a change."""
    expected = body.expected_version if body else None
    command = a.RemoveAddress(at=now(), expected_version=expected, address_id=address_id)

    async def run() -> Response:
        await change(app, who.sub, command)
        return Response(status_code=204)

    return await app.idempotent(request, who, run)


@router.post("/v1/me/addresses/{address_id}/default", responses=answers(404, 409))
async def make_default(
    address_id: Id,
    request: Request,
    body: ExpectVersion | None = None,
    who: Caller = Depends(customer),
    app: Services = Depends(services),
) -> Response:
    """Make an address the default (`default_address_changed`)."""
    expected = body.expected_version if body else None
    command = a.SetDefaultAddress(at=now(), expected_version=expected, address_id=address_id)

    async def run() -> Response:
        return as_json(address_view(await change(app, who.sub, command), address_id))

    return await app.idempotent(request, who, run)
