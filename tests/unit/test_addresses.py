"""A customer's address book: its rules, its events, and how it is sealed at rest."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import addresses as a
from domain.errors import DomainError
from domain.geo import Point
from storage import keys
from storage.sealing import PREFIX, Sealer

T0 = datetime(2025, 3, 1, 11, 30, tzinfo=UTC)
HOME = a.Address("a_home", Point(30.27, 120.12), "1 Shuguang Rd", "+86 138 0000 0000", "mum's flat")
WORK = a.Address("a_work", Point(30.25, 120.16), "8 Hubin Rd", label="work")


def add(address: a.Address, default: bool = False) -> a.AddAddress:
    return a.AddAddress(at=T0, address=address, make_default=default)


def run(book: a.AddressBook, *commands: a.BookCommand) -> a.AddressBook:
    for command in commands:
        for event in a.decide(book, command):
            book = a.evolve(book, event)
    return book


def refused(book: a.AddressBook, command: a.BookCommand) -> DomainError:
    with pytest.raises(DomainError) as err:
        a.decide(book, command)
    return err.value


EMPTY = a.AddressBook("c-1")


def test_the_first_address_is_the_default_and_each_event_says_the_default() -> None:
    (added,) = a.decide(EMPTY, add(HOME))
    assert isinstance(added, a.AddressAdded)
    assert (added.version, added.default_address_id) == (1, "a_home")
    book = a.evolve(EMPTY, added)
    (second,) = a.decide(book, add(WORK))
    assert second.default_address_id == "a_home"
    book = a.evolve(book, second)
    assert [x.id for x in book.addresses] == ["a_home", "a_work"]
    assert (book.version, book.default_id) == (2, "a_home")


def test_an_address_added_as_default_takes_over() -> None:
    book = run(EMPTY, add(HOME), add(WORK, default=True))
    assert book.default_id == "a_work"


def test_setting_the_default_is_its_own_event_and_idempotent() -> None:
    book = run(EMPTY, add(HOME), add(WORK))
    (event,) = a.decide(book, a.SetDefaultAddress(at=T0, address_id="a_work"))
    assert isinstance(event, a.DefaultAddressChanged) and event.default_address_id == "a_work"
    book = a.evolve(book, event)
    assert a.decide(book, a.SetDefaultAddress(at=T0, address_id="a_work")) == []


def test_removing_the_default_hands_it_to_the_oldest_left_and_the_last_leaves_none() -> None:
    third = a.Address("a_gym", Point(30.26, 120.13), "3 Gym St")
    book = run(
        EMPTY, add(HOME), add(WORK), add(third), a.SetDefaultAddress(at=T0, address_id="a_work")
    )
    (removed,) = a.decide(book, a.RemoveAddress(at=T0, address_id="a_work"))
    assert isinstance(removed, a.AddressRemoved) and removed.default_address_id == "a_home"
    book = run(
        book,
        a.RemoveAddress(at=T0, address_id="a_work"),
        a.RemoveAddress(at=T0, address_id="a_home"),
    )
    assert book.default_id == "a_gym"
    book = run(book, a.RemoveAddress(at=T0, address_id="a_gym"))
    assert (book.addresses, book.default_id) == ((), None)


def test_a_change_keeps_what_it_leaves_out() -> None:
    book = run(EMPTY, add(HOME))
    (event,) = a.decide(book, a.ChangeAddress(at=T0, address_id="a_home", address="2 Shuguang Rd"))
    assert isinstance(event, a.AddressChanged)
    assert event.address == a.Address("a_home", HOME.point, "2 Shuguang Rd", HOME.phone, HOME.label)
    assert a.decide(book, a.ChangeAddress(at=T0, address_id="a_home", label=HOME.label)) == []


def test_unknown_ids_are_address_not_found() -> None:
    book = run(EMPTY, add(HOME))
    for command in (
        a.ChangeAddress(at=T0, address_id="a_else", label="x"),
        a.RemoveAddress(at=T0, address_id="a_else"),
        a.SetDefaultAddress(at=T0, address_id="a_else"),
    ):
        assert refused(book, command).code == "address_not_found"


def test_the_same_address_added_twice_is_done_once_and_another_under_its_id_is_refused() -> None:
    book = run(EMPTY, add(HOME))
    assert a.decide(book, add(HOME)) == []
    assert refused(book, add(a.Address("a_home", WORK.point, "other"))).code == "address_exists"


def test_the_book_is_bounded() -> None:
    book = EMPTY
    for n in range(a.MAX_ADDRESSES):
        book = run(book, add(a.Address(f"a_{n}", Point(30.0, 120.0 + n / 1000), f"{n} Rd")))
    err = refused(book, add(WORK))
    assert err.code == "address_book_full"
    assert err.details == {"max_addresses": a.MAX_ADDRESSES}


def test_coordinates_are_checked_by_the_geo_bounds() -> None:
    with pytest.raises(DomainError) as err:
        a.Address("a_x", Point(91.0, 0.0), "nowhere")
    assert err.value.code == "invalid_request"


def test_a_stale_version_is_refused() -> None:
    book = run(EMPTY, add(HOME))
    command = a.ChangeAddress(at=T0, address_id="a_home", label="x", expected_version=0)
    assert refused(book, command).code == "stale_version"


def test_the_wire_form_is_a_sync_event_without_an_order() -> None:
    (event,) = a.decide(EMPTY, add(HOME))
    assert event.as_dict() == {
        "type": "address_added",
        "order_id": None,
        "version": 1,
        "at": T0.isoformat(),
        "data": {
            "customer_id": "c-1",
            "default_address_id": "a_home",
            "address": HOME.as_dict(),
        },
    }


def test_the_book_round_trips() -> None:
    book = run(EMPTY, add(HOME), add(WORK))
    assert a.AddressBook.from_dict(book.as_dict()) == book


_commands = st.sampled_from(
    [add(HOME), add(WORK), add(HOME, default=True)]
    + [a.RemoveAddress(at=T0, address_id=i) for i in ("a_home", "a_work")]
    + [a.SetDefaultAddress(at=T0, address_id=i) for i in ("a_home", "a_work")]
    + [a.ChangeAddress(at=T0, address_id="a_work", label="office")]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_commands, max_size=20))
def test_one_default_while_there_is_any_address_and_one_version_per_event(
    commands: list[a.BookCommand],
) -> None:
    book = EMPTY
    for command in commands:
        try:
            events = a.decide(book, command)
        except DomainError:
            continue
        assert len(events) <= 1
        for event in events:
            assert event.version == book.version + 1
            book = a.evolve(book, event)
        ids = [x.id for x in book.addresses]
        assert len(ids) == len(set(ids))
        assert (book.default_id is None) == (not ids)
        assert book.default_id is None or book.default_id in ids


# -- sealed at rest -----------------------------------------------------------------

SEALER = Sealer(base64.b64encode(os.urandom(32)).decode())


def test_a_stored_book_holds_no_text_in_clear_and_opens_for_its_customer_only() -> None:
    book = run(EMPTY, add(HOME), add(WORK)).as_dict()
    stored = SEALER.seal_book(book)
    dump = str(stored)
    for text in (HOME.address, HOME.phone, HOME.label, WORK.address):
        assert text not in dump
    assert stored["addresses"][0]["lat"] == HOME.point.lat  # the point stays clear
    assert SEALER.open_book(stored) == book
    moved = {**stored, "customer_id": "c-2"}
    with pytest.raises(Exception):  # noqa: B017 - the AEAD's InvalidTag
        SEALER.open_book(moved)


def test_events_with_personal_text_are_sealed_on_the_stream_and_others_left_alone() -> None:
    (added,) = a.decide(EMPTY, add(HOME))
    wire = added.as_dict()
    sealed = SEALER.seal_event(wire)
    assert sealed["data"]["address"]["address"].startswith(PREFIX)
    assert HOME.address not in str(sealed) and HOME.phone not in str(sealed)
    assert SEALER.open_event(sealed) == wire
    changed = {
        "type": "delivery_changed",
        "order_id": "o1_x",
        "version": 3,
        "at": T0.isoformat(),
        "data": {"lat": 1.0, "lng": 2.0, "address": "1 Near Rd", "phone": "+86 1", "refund_fen": 0},
    }
    sealed = SEALER.seal_event(changed)
    assert "1 Near Rd" not in str(sealed) and SEALER.open_event(sealed) == changed
    plain = {"type": "order_paid", "order_id": "o1_x", "version": 2, "at": "", "data": {}}
    assert SEALER.seal_event(plain) is plain


def test_the_book_is_in_the_customers_slot_beside_its_inbox() -> None:
    assert keys.tag_of(keys.address_book("c-1")) == keys.tag_of(keys.inbox("customer", "c-1"))
