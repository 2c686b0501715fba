"""``Ownership``: the conversation leases a runtime holds, renewed in one batch per store.

With a persistence adapter that implements
:class:`~sagents.persistence.ConversationLeases`, every agent server that saves a conversation
first takes its lease (see ``_recorder.py``), so two processes sharing a database never both run
it. A lease must be renewed before it expires; renewing one per agent would cost a database
write per agent every few seconds, so the runtime renews *all* the leases it holds in a store
with one statement (``renew_leases(owner)``), every third of the shortest ``ttl`` in use.

A lease the renewal no longer finds was taken over by another process (this one stalled past the
expiry): its agent is told at once, and stops, rather than discovering it at its next save. A
failed renewal (the database is down) is logged and retried at the next tick; the agents carry
on, because their saves name the fencing token and can never overwrite a new owner's state.

Some writes of a conversation are not made by its agent server: its files are written by the
filesystem server of its scope, for the agent and its sub-agents. They are fenced all the same
(:meth:`Ownership.writer`): each names the token of the lease this runtime holds on the
conversation — kept after the lease was lost, until its agent gives it back, so that a stalled
process's writes stay refused — and a refusal is reported to the agent holding the lease, which
stops exactly as when its own save is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sagents import telemetry
from sagents._errors import StateConflict
from sagents.persistence._protocols import ConversationLeases, Lease, Scope

__all__ = ["ConversationWriter", "Ownership", "default_owner_id"]

_log = logging.getLogger("sagents.ownership")


def default_owner_id() -> str:
    """``host:pid:random``: names this runtime in ``ConversationOwnedElsewhere`` errors."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class _Held:
    """The leases held in one store, and the task that renews them."""

    store: ConversationLeases
    lost: dict[str, Callable[[], None]] = field(default_factory=dict)
    ttls: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


@dataclass(slots=True, frozen=True)
class _Holder:
    """The lease an agent server of this runtime took on a conversation, and how to tell it
    that storage refused a write made under it."""

    token: int
    refused: Callable[[StateConflict], None] | None


class ConversationWriter:
    """The fencing of the writes of one conversation made outside its agent server (its
    files): the token they name, and whom to tell when storage refuses one.

    The token is the one of the lease this runtime's agent holds on the conversation; once that
    agent gave it back, the last one seen (a write arriving late, from a sub-agent still ending,
    is checked against it rather than passing unfenced). None: no lease was ever held here (the
    conversation runs without leases), and the writes are not fenced.
    """

    __slots__ = ("_conversation_id", "_last", "_ownership", "_store")

    def __init__(self, ownership: Ownership, store: object, conversation_id: str) -> None:
        self._ownership = ownership
        self._store = store
        self._conversation_id = conversation_id
        self._last: int | None = None

    def lease_token(self) -> int | None:
        """The fencing token a write of the conversation names now."""
        holder = self._ownership._holder(self._store, self._conversation_id)
        if holder is not None:
            self._last = holder.token
        return self._last

    def refused(self, conflict: StateConflict) -> None:
        """Storage refused the write made under the last :meth:`lease_token`: the agent
        holding that lease is told (it reports the refusal and stops). Nobody is told once it
        has ended, nor when the lease is another one by now (the agent crashed and its
        restarted server took the lease again, which a write begun before is no reason to
        give up).

        Told at the next turn of the event loop rather than from inside the write: the write
        is a tool call's, which fails with the refusal as it returns, and the agent's stop
        cancels its run; deferred, the call's own failure normally reaches the run first, so
        the run records why the call failed rather than a bare cancellation. Either way the
        call does not succeed, and the agent stops.
        """
        holder = self._ownership._holder(self._store, self._conversation_id)
        if holder is not None and holder.token == self._last and holder.refused is not None:
            asyncio.get_running_loop().call_soon(holder.refused, conflict)


class Ownership:
    """Takes, renews and gives back the ownership leases of one runtime's agents."""

    def __init__(self, owner_id: str) -> None:
        self.owner_id = owner_id
        self._held: dict[int, _Held] = {}  # by id(store): stores need not be hashable
        # The lease each conversation's agent took, by (id(store), conversation id): from the
        # acquisition to the release, a loss included (see ConversationWriter).
        self._holders: dict[tuple[int, str], _Holder] = {}
        self._closed = False

    async def acquire(
        self,
        store: ConversationLeases,
        scope: Scope,
        conversation_id: str,
        ttl: float,
        *,
        create: bool,
        on_lost: Callable[[], None],
        on_refused: Callable[[StateConflict], None] | None = None,
    ) -> Lease:
        """Take the lease and keep it renewed until :meth:`release`.

        Args:
            on_lost: called when a renewal finds the lease taken over.
            on_refused: called when storage refuses a write another part of this runtime
                made under the lease (see :meth:`writer`).

        Raises:
            ConversationOwnedElsewhere: another process holds it.
            ConversationNotFound: in another scope, or missing and ``create`` is False.
            PersistenceFailed: the store failed.
        """
        lease = await store.acquire_lease(scope, conversation_id, self.owner_id, ttl, create=create)
        self._holders[id(store), conversation_id] = _Holder(lease.token, on_refused)
        held = self._held.get(id(store))
        if held is None:
            held = self._held[id(store)] = _Held(store)
        held.lost[conversation_id] = on_lost
        held.ttls[conversation_id] = ttl
        if held.task is None and not self._closed:
            held.task = asyncio.get_running_loop().create_task(
                self._renew(held), name="sagents lease renewal"
            )
        return lease

    async def release(
        self,
        store: ConversationLeases,
        scope: Scope,
        conversation_id: str,
        lease: Lease,
        *,
        clean: bool = True,
    ) -> None:
        """Stop renewing the lease and let it expire now (a failure is logged: it expires by
        itself after its ttl). Not ``clean`` (the agent ended with something unsaved): it is
        only no longer renewed, so that whoever takes it next sees it recovered and reconciles
        what the agent left behind."""
        holder = self._holders.get((id(store), conversation_id))
        if holder is not None and holder.token == lease.token:
            del self._holders[id(store), conversation_id]
        held = self._held.get(id(store))
        if held is not None:
            held.lost.pop(conversation_id, None)
            held.ttls.pop(conversation_id, None)
        if not clean:
            return
        try:
            await store.release_lease(scope, conversation_id, lease)
        except Exception as exc:
            _log.warning(
                "releasing the lease of conversation %r failed (it expires by itself): %r",
                conversation_id,
                exc,
            )

    async def _renew(self, held: _Held) -> None:
        """Renew until the store has no lease of ours left."""
        try:
            while held.ttls:
                await asyncio.sleep(min(held.ttls.values()) / 3)
                if not held.ttls:
                    break
                # Only leases held when the statement is issued can be judged by its answer: one
                # taken meanwhile may have committed after the statement read the rows.
                asked = set(held.lost)
                try:
                    kept = await held.store.renew_leases(self.owner_id, max(held.ttls.values()))
                except Exception as exc:
                    _log.warning("renewing the ownership leases failed (retried): %r", exc)
                    telemetry.execute(
                        telemetry.PERSISTENCE_ERROR,
                        {"system_time": time.time()},
                        {"operation": "renew_leases", "error": repr(exc)},
                    )
                    continue
                for conversation_id in [c for c in asked if c not in kept and c in held.lost]:
                    _log.error(
                        "conversation %r was taken over by another process; its agent stops",
                        conversation_id,
                    )
                    held.ttls.pop(conversation_id, None)
                    held.lost.pop(conversation_id)()
        finally:
            held.task = None
            if not held.ttls:
                self._held.pop(id(held.store), None)

    def writer(self, store: object, conversation_id: str) -> ConversationWriter:
        """The fencing of the writes of ``conversation_id`` in ``store`` that its agent server
        does not make itself (a persisted file store's)."""
        return ConversationWriter(self, store, conversation_id)

    def _holder(self, store: object, conversation_id: str) -> _Holder | None:
        return self._holders.get((id(store), conversation_id))

    def held(self) -> list[tuple[str, ...]]:
        """Per store with leases held or still renewed: the conversation ids held there."""
        return [tuple(sorted(held.ttls)) for held in self._held.values()]

    async def aclose(self) -> None:
        """Stop renewing (the runtime's agents have released their leases by then)."""
        self._closed = True
        tasks = [held.task for held in self._held.values() if held.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
