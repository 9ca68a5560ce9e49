"""Registering sent messages (`POST /messages`): lock, let the ledger fill in the metadata, write back."""

from __future__ import annotations

from collections.abc import Sequence

from service.ledger import Ledger, RegistrationDecision
from service.reports import Registration
from service.store.messages import Connection, lock, retrying_races, write_back


async def register_messages(
    conn: Connection, registrations: Sequence[Registration], *, lifetime: int
) -> list[RegistrationDecision]:
    """Fill in metadata, never touch statuses; create what is not stored yet. One decision per registration."""
    return await retrying_races(lambda: _register_batch(conn, registrations, lifetime))


async def _register_batch(
    conn: Connection, registrations: Sequence[Registration], lifetime: int
) -> list[RegistrationDecision]:
    async with conn.transaction():
        ledger = Ledger(await lock(conn, {reg.message_id for reg in registrations}), lifetime)
        decisions = [ledger.register(reg) for reg in registrations]
        await write_back(conn, ledger)
    return decisions
