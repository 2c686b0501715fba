"""``Recorder``: everything an agent server saves, off its hot path.

The agent server is a mailbox and a status; saving is this collaborator's job. The server tells
it two kinds of things — the state changed (with the messages that entered it), a lifecycle
point was reached (a run completed, an interrupt, an error, a stop) — and the recorder turns
them into the four save channels an agent can have:

* ``save_new_message``: the application's callback, awaited for each new message, in order.
* ``auto_save``: the application's state callback, on idle, on an interval (only when the state
  changed since the last save) and at shutdown.
* **display messages**: the rows a chat UI shows, kept by the recorder's :class:`DisplayLog`
  (``_display_log.py``, made only with a display persistence): the recorder tells it the
  messages that entered the state, the server which tool calls were interrupted or decided.
* **agent persistence**: the state at each lifecycle point, as a delta on what storage
  holds, with the conversation's title copied to its row when it changed.

All of it runs in one :class:`SerialWorker` per agent, so saves never overlap or reorder and the
agent never waits for the database. Two jobs coalesce because only their latest content matters:
the state save (a burst of lifecycle points writes the newest one) and the display log's flush.
The state save first flushes that log, so rows are never behind the stored state (they can be
ahead of it after a kill, and the next start reconciles them: see ``_display_log.py``).

**Nothing is refused silently.** With a persistence that has ownership leases, the recorder takes
the conversation's lease before the server starts (:meth:`claim`) and checks that storage does
not already hold a newer state than the one it starts from — after a crash restart, or when
another process saved between the load and the lease — and adopts it if so. A save storage
refuses (a newer state is stored, another process took the conversation over, the conversation
was deleted) fences the recorder: it saves nothing more and tells the server, which reports it
and stops, because work it does from then on could never be saved. A display write refused
under the lease fences it the same way (the recorder lends its display log its worker, lease
and refusal path: :class:`DisplayOwner`), and so does a write of the conversation's files (the
file store reports it through the runtime's ownership, see ``_ownership.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.messages import BaseMessage

from sagents import telemetry
from sagents._errors import StateConflict
from sagents._state import State
from sagents._title import title_of
from sagents.events import SaveFailed
from sagents.persistence._leases import takes_lease_token
from sagents.persistence._protocols import (
    ConversationLeases,
    ConversationStore,
    Lease,
    StateSnapshot,
    StoredState,
)
from sagents.runtime._display_log import DisplayHost, DisplayLog, DisplayOperation
from sagents.runtime._options import AgentOptions
from sagents.runtime._serial import SerialWorker

if TYPE_CHECKING:
    from sagents.runtime._ownership import Ownership

__all__ = ["Recorder", "RecorderHost", "common_prefix"]

_log = logging.getLogger("sagents.persistence")

_SAVE = telemetry.PERSISTENCE_SAVE
_ERROR = telemetry.PERSISTENCE_ERROR
_NOTHING_PERSISTED: tuple[Sequence[BaseMessage], int | None] = ((), None)


class RecorderHost(DisplayHost, Protocol):
    """What a recorder needs from its agent server."""

    @property
    def debug(self) -> bool: ...

    def telemetry_metadata(self) -> dict[str, Any]: ...

    def save_refused(self, conflict: StateConflict) -> None:
        """Storage refused a state save: report it and stop taking work."""
        ...

    def checkpointed(self, state: State, version: int) -> None:
        """A lifecycle point was reached with ``state`` (what a restart resumes from)."""
        ...


class Recorder:
    """The save channels of one agent server (see the module docstring)."""

    __slots__ = (
        "_host",
        "_interval_handle",
        "_lease",
        "_ownership",
        "_pending",
        "_persist_next",
        "_persisted",
        "_reconcile",
        "_restart",
        "_resume",
        "_save_failed",
        "_save_waiters",
        "_saved_version",
        "_saver",
        "_state",
        "_stored_title",
        "display",
        "fenced",
        "options",
        "version",
    )

    def __init__(
        self,
        host: RecorderHost,
        options: AgentOptions,
        state: State,
        version: int | None,
        *,
        ownership: Ownership | None = None,
        restart: bool = False,
        display_log: Sequence[DisplayOperation] = (),
    ) -> None:
        self._host = host
        self._restart = restart
        self.options = options
        self._state = state
        self._ownership = ownership
        #: +1 per change of the state, continuing the stored version when restored.
        self.version = version or 0
        # The auto-save's last saved version: a state nothing changed is not saved again.
        self._saved_version = self.version
        # What the agent persistence holds (messages, version), for delta saves; after a crash
        # restart unknown until claim() asks.
        self._persisted = (
            _NOTHING_PERSISTED if version is None or restart else (state.messages, version)
        )
        self._persist_next: tuple[State, int] | None = None
        # Lifecycle points asked to be saved, not known durable yet (see caught_up). This and
        # the two containers below are made on first use: most idle agents never need them,
        # and a fleet of idle agents pays for every object (an empty deque is 600 bytes).
        self._pending: deque[int] | None = None
        self._save_waiters: list[asyncio.Future[None]] | None = None
        self._save_failed = False
        self._stored_title = title_of(state)  # the title the conversation row holds
        self._saver: SerialWorker | None = None  # made by the first save
        #: The display rows, when the agent has a display persistence (None: it has none, and
        #: an idle fleet without one pays nothing for them).
        self.display: DisplayLog | None = (
            None
            if options.display_message_persistence is None
            else DisplayLog(self, host, options, display_log)
        )
        self._resume = False
        self._reconcile = restart  # display rows may be ahead of storage: settle them at start
        self._interval_handle: asyncio.TimerHandle | None = None
        self._lease: Lease | None = None
        #: Set once storage refused a save: nothing more is saved.
        self.fenced: StateConflict | None = None

    # -- starting and ending -------------------------------------------------------------------

    @property
    def needs_claim(self) -> bool:
        """Whether :meth:`claim` has work to do (the server then starts asynchronously)."""
        return (
            self.options.agent_persistence is not None
            and self.options.conversation_id is not None
            and (self._restart or self._leases is not None)
        )

    @property
    def _leases(self) -> ConversationLeases | None:
        persistence = self.options.agent_persistence
        if (
            self._ownership is None
            or self.options.lease_ttl is None
            or not isinstance(persistence, ConversationLeases)
        ):
            return None
        return persistence

    async def claim(self) -> StoredState | None:
        """Take the conversation's lease (if storage has leases) and return the stored state
        when it is at least as new as the one this server starts from (the server adopts it).

        After a crash restart the server starts from the last state its unit kept, which may
        be behind storage (another lifecycle point was saved) or ahead of it (its save was lost
        with the crash); without leases storage is asked only then.

        Raises:
            ConversationOwnedElsewhere: another process runs the conversation.
            PersistenceFailed: storage failed.
        """
        stored = await self._claim()
        if self._reconcile:
            # After an unclean end, the display rows are reconciled with the state this server
            # starts from, the durable one (adopted from storage, or stored now): first in the
            # display log, before any row this server appends.
            self._reconcile = False
            if self.display is not None:
                self.display.reconcile(self._state, self.version)
        return stored

    async def _claim(self) -> StoredState | None:
        persistence = self.options.agent_persistence
        conversation_id = self.options.conversation_id
        if persistence is None or conversation_id is None:
            return None
        scope = self.options.scope
        stored: StoredState | None = None
        leases = self._leases
        if leases is not None and self._ownership is not None:
            self._lease = await self._ownership.acquire(
                leases,
                scope,
                conversation_id,
                self.options.lease_ttl or 0.0,
                create=self.options.create_conversation,
                on_lost=self._lease_lost,
                on_refused=self.refuse,
            )
            stored_version = self._lease.state_version
            # Its previous holder died without releasing it: what it stored may need settling.
            self._reconcile = self._reconcile or self._lease.recovered
        elif self._restart:
            stored = await self._load()
            stored_version = None if stored is None else stored.version
        else:
            return None
        persisted = self._persisted[1]
        if stored_version is not None and stored_version == persisted:
            return None  # storage holds exactly the state this server starts from
        if stored_version is None and persisted is None and self.version == 0:
            return None  # a new conversation: nothing stored, nothing to store yet
        if stored_version is not None and stored_version >= self.version:
            if stored is None:
                stored = await self._load()
            if stored is not None:
                self.adopt(stored)
                return stored
        # Storage is behind the state this server starts from (its save was lost with a
        # crash): store it as soon as the server runs, whole, rather than at the next
        # lifecycle point.
        self._persisted = _NOTHING_PERSISTED
        self._resume = True
        return None

    def go_live(self) -> None:
        """The server is registered: write what the start queued."""
        if self._resume:
            self._resume = False
            self.checkpoint("resume")
        if self.display is not None:
            self.display.go_live()

    def adopt(self, stored: StoredState) -> None:
        """Start from ``stored`` (newer than the state this server was given)."""
        self._state = stored.state
        self.version = self._saved_version = stored.version
        self._persisted = (stored.state.messages, stored.version)
        self._stored_title = title_of(stored.state)

    @property
    def lease(self) -> Lease | None:
        """The conversation's lease, once :meth:`claim` took it."""
        return self._lease

    def _lease_lost(self) -> None:
        self.refuse(
            StateConflict(
                f"conversation {self.options.conversation_id!r} was taken over by another "
                "process while this one stalled; this agent stops without saving",
                reason="owned_elsewhere",
            )
        )

    @property
    def quiet(self) -> bool:
        """Whether nothing is or may be saved (a graceful stop needs no task)."""
        options = self.options
        return (
            (self._saver is None or not self._saver.busy)
            and options.auto_save is None
            and options.agent_persistence is None
        )

    @property
    def busy(self) -> bool:
        return self._saver is not None and self._saver.busy

    async def drain(self, timeout: float | None) -> bool:
        """Wait for every queued save (and for display operations a failure left behind);
        False if ``timeout`` expired first."""
        if self.display is not None and self.display.pending:
            self.display.flush_soon()
        if self._saver is None:
            return True
        return await self._saver.drain(timeout)

    async def aclose(self, *, drain: float | None = 0.0) -> None:
        """End: finish queued saves within ``drain`` seconds (None: no limit; 0: drop them),
        then give the lease back (or, if something is left unsaved, let it expire)."""
        self.close_timers()
        saver = self._saver
        if saver is not None:
            if drain != 0.0 and not await saver.drain(drain):
                _log.error(
                    "agent %r: saves did not finish within %s s; the rest is dropped",
                    self._host.agent_id,
                    drain,
                )
            await saver.aclose()
        lease, self._lease = self._lease, None
        leases = self._leases
        conversation_id = self.options.conversation_id
        if lease is not None and leases is not None and conversation_id is not None:
            assert self._ownership is not None
            # An end that left something unsaved is not a clean one: the lease is not marked
            # released (only no longer renewed), so the next start knows to reconcile.
            clean = (
                self.fenced is None
                and (self.display is None or self.display.settled)
                and self.version == self._persisted[1]
                and not (self._unsaved() or self._persist_next)
            )
            await self._ownership.release(
                leases, self.options.scope, conversation_id, lease, clean=clean
            )

    # -- timers --------------------------------------------------------------------------------

    def arm_interval(self) -> None:
        """Schedule the next interval auto-save (when configured)."""
        auto_save = self.options.auto_save
        if auto_save is None or auto_save.interval is None or self.fenced is not None:
            return
        loop = asyncio.get_running_loop()
        self._interval_handle = loop.call_later(auto_save.interval, self._interval_due)

    def _interval_due(self) -> None:
        self._interval_handle = None
        self.auto_save("auto_save.interval")
        self.arm_interval()

    def close_timers(self) -> None:
        if self._interval_handle is not None:
            self._interval_handle.cancel()
            self._interval_handle = None

    # -- what the server reports ---------------------------------------------------------------

    def changed(self, state: State, new_messages: Sequence[BaseMessage]) -> None:
        """The state is now ``state``; ``new_messages`` entered it (in order)."""
        self._state = state
        self.version += 1
        if not new_messages or self.fenced is not None:
            return
        if self.display is not None:
            self.display.append(new_messages, self.version)
        save_message = self.options.save_new_message
        if save_message is not None:
            conversation_id = self.options.conversation_id
            saver = self.worker()
            for message in new_messages:
                saver.submit("save_new_message", _bind(save_message, conversation_id, message))

    def checkpoint(self, point: str) -> None:
        """A lifecycle point: keep the state for restarts and save it through the agent
        persistence, as a delta.

        The snapshot is the state *at this point*, not whatever the state has become when the
        save runs: storage only ever holds states a lifecycle point produced. Points reached
        while a save is queued replace its snapshot.
        """
        state, version = self._state, self.version
        self._host.checkpointed(state, version)
        persistence = self.options.agent_persistence
        if persistence is None or self.fenced is not None or version == self._persisted[1]:
            return
        self._persist_next = (state, version)
        if self._pending is None:
            self._pending = deque()
        self._pending.append(version)
        self.worker().submit("agent_persistence.save", self._persist, coalesce=True)

    async def caught_up(self) -> None:
        """Wait until at most one lifecycle point is not stored yet (called before a run starts).

        This is the durability bound: a run never starts while two completed turns are
        unsaved, so a process killed at any moment loses at most the turn in progress and the
        one before it, however fast the agent and slow the database (a fast agent otherwise
        completes turns faster than its saves land, and they fall hundreds behind). When saves
        keep up, as they do behind a real model, this never waits. A save that fails does not
        hold the agent (it is reported, and the wait ends), nor does one that stalls for longer
        than ``shutdown_timeout`` (logged): availability wins over the bound then.
        """
        if self._unsaved() <= 1 or self.fenced is not None:
            return
        try:
            async with asyncio.timeout(self.options.shutdown_timeout):
                while self._unsaved() > 1 and self.fenced is None:
                    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    if self._save_waiters is None:
                        self._save_waiters = []
                    self._save_waiters.append(waiter)
                    await waiter
                    if self._save_failed:
                        return
        except TimeoutError:
            _log.warning(
                "agent %r: its saves are %d lifecycle points behind after %s s; the run starts "
                "anyway",
                self._host.agent_id,
                self._unsaved(),
                self.options.shutdown_timeout,
            )

    def _unsaved(self) -> int:
        durable = self._persisted[1]
        pending = self._pending
        if pending is None:
            return 0
        while pending and durable is not None and pending[0] <= durable:
            pending.popleft()
        return len(pending)

    def _saved(self, *, failed: bool) -> None:
        self._save_failed = failed
        waiters, self._save_waiters = self._save_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def _persist(self) -> None:
        try:
            await self._persist_latest()
        except BaseException:
            self._saved(failed=True)
            raise
        self._saved(failed=False)

    async def _persist_latest(self) -> None:
        pending, self._persist_next = self._persist_next, None
        persistence = self.options.agent_persistence
        conversation_id = self.options.conversation_id
        if pending is None or persistence is None or conversation_id is None:
            return
        if self.fenced is not None:
            return
        state, version = pending
        base_messages, base_version = self._persisted
        if base_version is not None and version <= base_version:
            return
        display = self.display
        if display is not None and display.pending:
            # The rows of this state's messages are written first: a stored message always has
            # its rows (they may be ahead after a kill, which the next start reconciles, never
            # behind). If they cannot be written, the state waits for them: this save fails,
            # is reported, and the next trigger retries both.
            try:
                await display.flush()
            except BaseException:
                if self._persist_next is None:
                    self._persist_next = pending
                raise
        snapshot = StateSnapshot(
            state=state,
            version=version,
            base_version=base_version,
            unchanged_prefix=common_prefix(base_messages, state.messages),
            lease_token=None if self._lease is None else self._lease.token,
        )
        started = time.perf_counter()
        scope = self.options.scope
        try:
            written = await persistence.save_state(scope, conversation_id, snapshot)
        except StateConflict as conflict:
            self.refuse(conflict)
            return
        if not written and await self._already_stored(state, version):
            written = True  # an earlier attempt was stored, its acknowledgement lost
        if not written:
            self.refuse(
                StateConflict(
                    f"a newer state of conversation {conversation_id!r} is stored (this agent "
                    f"holds version {version}); another server saved it, so this one stops "
                    "rather than lose its turns silently: start it again to continue",
                    reason="stale",
                )
            )
            return
        self._persisted = (state.messages, version)
        title = title_of(state)
        if title != self._stored_title and isinstance(persistence, ConversationStore):
            # Named with the lease's token when the store takes one: a writer that lost the
            # conversation does not retitle the new owner's.
            fencing: dict[str, int] = {}
            update = persistence.update_conversation
            kind: type = type(persistence)
            if self._lease is not None and takes_lease_token(kind, update.__name__):
                fencing["lease_token"] = self._lease.token
            try:
                await update(scope, conversation_id, title=title, **fencing)  # type: ignore[arg-type]
            except StateConflict as conflict:
                self.refuse(conflict)
                return
            self._stored_title = title
        if telemetry.has_handlers(_SAVE):
            telemetry.execute(
                _SAVE,
                {
                    "duration": time.perf_counter() - started,
                    "messages_written": len(state.messages) - snapshot.unchanged_prefix,
                },
                {
                    **self._host.telemetry_metadata(),
                    "version": version,
                    "message_count": len(state.messages),
                },
            )

    async def _already_stored(self, state: State, version: int) -> bool:
        """Whether storage holds exactly this version of this state: a retried save whose
        first attempt was written but reported failed (the connection dropped after the
        commit) is refused as not newer, and must not be taken for a stale writer."""
        stored = await self._load()
        return stored is not None and stored.version == version and stored.state == state

    async def _load(self) -> StoredState | None:
        persistence = self.options.agent_persistence
        conversation_id = self.options.conversation_id
        if persistence is None or conversation_id is None:
            return None
        loaded: StoredState | None = await persistence.load_state(
            self.options.scope, conversation_id
        )
        return loaded

    def refuse(self, conflict: StateConflict) -> None:
        """Storage refused a write under this recorder (a state save, a display write, a file
        write under the lease): save nothing more, and tell the server, which stops."""
        if self.fenced is not None:
            return
        self.fenced = conflict
        self._persist_next = None
        self.close_timers()
        _log.error("agent %r: %s", self._host.agent_id, conflict)
        telemetry.execute(
            _ERROR,
            {"system_time": time.time()},
            {
                **self._host.telemetry_metadata(),
                "operation": "agent_persistence.save",
                "error": repr(conflict),
            },
        )
        self._host.save_refused(conflict)

    def auto_save(self, operation: str, *, force: bool = False) -> None:
        """Save through the ``auto_save`` callback (only if the state changed, unless
        ``force``)."""
        auto_save = self.options.auto_save
        if auto_save is None or self.fenced is not None:
            return
        if not force and self.version == self._saved_version:
            return
        callback = auto_save.callback

        async def save() -> None:
            version = self.version
            await callback(self._host.agent_id, self._state.to_dict())
            self._saved_version = max(self._saved_version, version)

        self.worker().submit(operation, save, coalesce=True)

    # -- the worker ----------------------------------------------------------------------------

    def worker(self) -> SerialWorker:
        """The serial worker every save runs in (the display log's flushes included)."""
        saver = self._saver
        if saver is None:
            saver = self._saver = SerialWorker(self._report_error)
        return saver

    def _report_error(self, operation: str, error: BaseException) -> None:
        host = self._host
        if host.debug:
            host.publisher.publish(
                SaveFailed(operation=operation, error=f"{type(error).__name__}: {error}")
            )
        telemetry.execute(
            _ERROR,
            {"system_time": time.time()},
            {**host.telemetry_metadata(), "operation": operation, "error": repr(error)},
        )


def common_prefix(before: Sequence[BaseMessage], after: Sequence[BaseMessage]) -> int:
    # States are immutable values: an unchanged message is the very same object, so identity
    # finds the unchanged prefix in a pointer comparison per message, without serialising.
    n = min(len(before), len(after))
    for i in range(n):
        if before[i] is not after[i]:
            return i
    return n


def _bind(
    fn: Callable[[str | None, BaseMessage], Awaitable[None]],
    conversation_id: str | None,
    message: BaseMessage,
) -> Callable[[], Awaitable[None]]:
    return lambda: fn(conversation_id, message)
