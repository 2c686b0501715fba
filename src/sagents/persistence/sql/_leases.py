"""The ownership leases of ``SqlPersistence``: :class:`~sagents.persistence.ConversationLeases`.

The rules (who may take a lease, the next fencing token, whether the last holder crashed) are
``sagents.persistence._leases``'s, shared with the in-memory store; this part runs them in SQL.
An acquisition holds the conversation row's lock — the same lock every write of the
conversation takes before it checks its token — so no write can pass its fence while a
takeover commits. Renewals and expiries are one ``UPDATE`` each, over all of an owner's leases.
A released lease keeps its row and token, so tokens keep increasing across owners.
"""

from __future__ import annotations

from sqlalchemy import insert, select, update

from sagents._errors import ConversationNotFound
from sagents.persistence._common import check_target
from sagents.persistence._leases import check_owner, check_ttl, recovered, take
from sagents.persistence._protocols import Lease, Scope
from sagents.persistence.sql._part import StorePart, scope_is

__all__ = ["SqlLeases"]


class SqlLeases(StorePart):
    """:class:`~sagents.persistence.ConversationLeases` in SQL (a part of ``SqlPersistence``)."""

    async def acquire_lease(
        self,
        scope: Scope,
        conversation_id: str,
        owner: str,
        ttl: float,
        *,
        create: bool = True,
    ) -> Lease:
        """Take the conversation's lease (see :class:`~sagents.persistence.ConversationLeases`),
        in one transaction that holds the conversation row's lock.

        Raises:
            ConversationOwnedElsewhere: another owner holds a live lease.
            ConversationNotFound: in another scope, or missing and ``create`` is False.
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        check_owner(owner)
        duration = check_ttl(ttl)
        tables = self._tables
        leases, states = tables.leases, tables.agent_states
        async with self._write(f"take the lease of conversation {conversation_id!r}") as conn:
            now = self._clock.now()
            if not await self._lock_conversation(
                conn, key, conversation_id, {}, now, create=create
            ):
                raise ConversationNotFound(
                    f"no conversation {conversation_id!r} in this scope; create it first"
                )
            current = await self._lease_row(conn, conversation_id)
            row = take(current, conversation_id, owner, duration, now)
            values = {
                "owner": row.owner,
                "token": row.token,
                "expires_at": row.expires_at,
                "released": False,
            }
            if current is None:
                await conn.execute(insert(leases).values(conversation_id=conversation_id, **values))
            else:
                await conn.execute(
                    update(leases)
                    .where(leases.c.conversation_id == conversation_id)
                    .values(**values)
                )
            version = (
                await conn.execute(
                    select(states.c.version).where(states.c.conversation_id == conversation_id)
                )
            ).scalar()
        return Lease(
            conversation_id=conversation_id,
            owner=owner,
            token=row.token,
            expires_at=row.expires_at,
            state_version=version,
            recovered=recovered(current),
        )

    async def renew_leases(self, owner: str, ttl: float) -> set[str]:
        """Extend every lease of ``owner`` in one statement; the ids it still holds.

        Raises:
            PersistenceFailed: the database failed.
        """
        check_owner(owner)
        duration = check_ttl(ttl)
        leases = self._tables.leases
        async with self._write("renew the ownership leases") as conn:
            result = await conn.execute(
                update(leases)
                .where(leases.c.owner == owner, leases.c.released.is_(False))
                .values(expires_at=self._clock.now() + duration)
                .returning(leases.c.conversation_id)
            )
            return set(result.scalars())

    async def expire_leases(self, owner: str) -> int:
        """Let every live lease of ``owner`` expire now, for an owner known to be gone (its
        process or node died): its conversations can then be taken over at once rather than
        after their ttl. Safe even if it still runs somewhere: its saves carry the old tokens
        and are refused (fencing). Returns how many leases expired."""
        check_owner(owner)
        leases = self._tables.leases
        async with self._write(f"expire the leases of {owner!r}") as conn:
            now = self._clock.now()
            expired = await conn.execute(
                update(leases)
                .where(leases.c.owner == owner, leases.c.expires_at > now)
                .values(expires_at=now)
            )
        return int(expired.rowcount)

    async def release_lease(self, scope: Scope, conversation_id: str, lease: Lease) -> None:
        """Let ``lease`` expire now if it is still the conversation's (the row and its token
        stay, so tokens keep increasing).

        Raises:
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        leases, conversations = self._tables.leases, self._tables.conversations
        async with self._write(f"release the lease of conversation {conversation_id!r}") as conn:
            await conn.execute(
                update(leases)
                .where(
                    leases.c.conversation_id == conversation_id,
                    leases.c.token == lease.token,
                    leases.c.conversation_id.in_(
                        select(conversations.c.id).where(scope_is(conversations.c.scope, key))
                    ),
                )
                .values(expires_at=self._clock.now(), released=True)
            )
