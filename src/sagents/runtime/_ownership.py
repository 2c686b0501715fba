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
from sagents.persistence._protocols import ConversationLeases, Lease, Scope

__all__ = ["Ownership", "default_owner_id"]

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


class Ownership:
    """Takes, renews and gives back the ownership leases of one runtime's agents."""

    def __init__(self, owner_id: str) -> None:
        self.owner_id = owner_id
        self._held: dict[int, _Held] = {}  # by id(store): stores need not be hashable
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
    ) -> Lease:
        """Take the lease and keep it renewed until :meth:`release`.

        Raises:
            ConversationOwnedElsewhere: another process holds it.
            ConversationNotFound: in another scope, or missing and ``create`` is False.
            PersistenceFailed: the store failed.
        """
        lease = await store.acquire_lease(scope, conversation_id, self.owner_id, ttl, create=create)
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
