"""Registering sent messages (`POST /messages`): read, let the ledger fill in the metadata, write back."""

from __future__ import annotations

from collections.abc import Sequence

from service.ledger import Ledger, RegistrationDecision
from service.reports import Registration
from service.store.messages import Connection, read, retrying_races, write_back
from service.store.reports import transaction


async def register_messages(
    conn: Connection, registrations: Sequence[Registration], *, lifetime: int
) -> list[RegistrationDecision]:
    """Fill in metadata, never touch statuses; create what is not stored yet. One decision per registration."""
    return await retrying_races(conn, lambda lock: _register_batch(conn, registrations, lifetime, lock))


async def _register_batch(
    conn: Connection, registrations: Sequence[Registration], lifetime: int, lock: bool
) -> list[RegistrationDecision]:
    async with transaction(conn, lock):
        found = await read(conn, {reg.message_id for reg in registrations}, lock=lock)
        ledger = Ledger(found.records, lifetime)
        decisions = [ledger.register(reg) for reg in registrations]
        await write_back(conn, ledger, found.versions)
    return decisions
