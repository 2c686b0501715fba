"""``Recorder``: everything an agent server saves, off its hot path.

The agent server is a mailbox and a status; saving is this collaborator's job. The server tells
it three kinds of things — the state changed (with the messages that entered it), a lifecycle
point was reached (a run completed, an interrupt, an error, a stop), a tool call was interrupted
or decided — and the recorder turns them into the four save channels an agent can have:

* ``save_new_message``: the application's callback, awaited for each new message, in order.
* ``auto_save``: the application's state callback, on idle, on an interval (only when the state
  changed since the last save) and at shutdown.
* **display messages**: the rows a chat UI shows, appended as messages enter the state, and
  each tool call's row updated as it runs, is interrupted or is decided; every append is
  broadcast as ``DisplayMessageSaved`` and every update as ``DisplayMessageUpdated``.
* **agent persistence**: the state at each lifecycle point, as a delta on what storage
  holds, with the conversation's title copied to its row when it changed.

All of it runs in one :class:`SerialWorker` per agent, so saves never overlap or reorder and the
agent never waits for the database. Two jobs coalesce because only their latest content matters:
the state save (a burst of lifecycle points writes the newest one) and the display flush, which
writes the *display log* — the display operations not written yet, in order, consecutive appends
merged into one — so a fast agent never builds a backlog of row writes. The state save first
flushes that log, so rows are never behind the stored state; they can be *ahead* of it after a
kill (a turn shown, then lost with the process), and each row carries the state version its
message entered, so the next start deletes the rows of messages the stored state does not have
and settles tool calls left "executing".

**Nothing is refused silently.** With a persistence that has ownership leases, the recorder takes
the conversation's lease before the server starts (:meth:`claim`) and checks that storage does
not already hold a newer state than the one it starts from — after a crash restart, or when
another process saved between the load and the lease — and adopts it if so. A save storage
refuses (a newer state is stored, another process took the conversation over, the conversation
was deleted) fences the recorder: it saves nothing more and tells the server, which reports it
and stops, because work it does from then on could never be saved. Every display write — an
append, a tool call's status, a decision, the reconciliation — names the lease's token too, and
one refused fences the recorder the same way; so does a write of the conversation's files
refused under the lease (the file store reports it through the runtime's ownership, see
``_ownership.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, cast

from langchain_core.messages import BaseMessage, ToolMessage

from sagents import telemetry
from sagents._errors import StateConflict
from sagents._interrupt import Answer, Decision, Edit, Interrupt, Reject, Respond
from sagents._state import State
from sagents._title import title_of
from sagents.events import DisplayMessageSaved, DisplayMessageUpdated, SaveFailed
from sagents.persistence._leases import takes_lease_token
from sagents.persistence._protocols import (
    ConversationLeases,
    ConversationStore,
    DisplayMessage,
    DisplayMessagePersistence,
    DisplayReconciliation,
    Lease,
    Scope,
    StateSnapshot,
    StoredState,
    ToolCallStatus,
)
from sagents.runtime._display import display_messages_for, tool_result_status
from sagents.runtime._options import AgentOptions
from sagents.runtime._serial import SerialWorker

if TYPE_CHECKING:
    from sagents.runtime._ownership import Ownership
    from sagents.runtime._publisher import Publisher

__all__ = ["Recorder", "RecorderHost", "common_prefix"]

_log = logging.getLogger("sagents.persistence")

_SAVE = telemetry.PERSISTENCE_SAVE
_ERROR = telemetry.PERSISTENCE_ERROR
_NOTHING_PERSISTED: tuple[Sequence[BaseMessage], int | None] = ((), None)


class RecorderHost(Protocol):
    """What a recorder needs from its agent server."""

    agent_id: str

    @property
    def publisher(self) -> Publisher: ...

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
        "_display_dropped",
        "_display_failures",
        "_display_log",
        "_host",
        "_in_flight",
        "_interval_handle",
        "_lease",
        "_live",
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
        "_shown",
        "_state",
        "_stored_title",
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
        display_log: Sequence[_DisplayOperation] = (),
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
        # Display operations not written yet, in order: a list is an append of rows (of
        # messages, with the state version each entered), a function any other operation.
        self._display_log: list[_DisplayOperation] | None = list(display_log) or None
        self._in_flight: _DisplayOperation | None = None
        self._display_failures = 0
        self._display_dropped = False
        # id(message) -> (message, the user's version): rewritten messages not displayed yet
        self._shown: dict[int, tuple[BaseMessage, BaseMessage | None]] | None = None
        self._live = False
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
            self._settle_display()
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
                on_refused=self._refuse,
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
        self._live = True
        if self._resume:
            self._resume = False
            self.checkpoint("resume")
        if self._display_log:
            self._flush_soon()

    def _settle_display(self) -> None:
        """After an unclean end, queue the reconciliation of the display rows with the state
        this server starts from, which is the durable one (adopted from storage, or stored now):
        first in the queue, before any row this server appends."""
        self._reconcile = False
        store = self.options.display_message_persistence
        if not isinstance(store, DisplayReconciliation):
            return
        scope = self.options.scope
        version, statuses = self.version, _tool_call_statuses(self._state)

        async def settle(
            recorder: Recorder, store: DisplayMessagePersistence, conversation_id: str
        ) -> None:
            assert isinstance(store, DisplayReconciliation)
            token = recorder._lease_token(store, "reconcile_display_messages")
            if token is None:
                rows = await store.reconcile_display_messages(
                    scope, conversation_id, state_version=version, tool_call_statuses=statuses
                )
            else:
                rows = await cast(_FencedDisplay, store).reconcile_display_messages(
                    scope,
                    conversation_id,
                    state_version=version,
                    tool_call_statuses=statuses,
                    lease_token=token,
                )
            for row in rows:
                recorder._updated(row)

        self._display(settle)

    def adopt(self, stored: StoredState) -> None:
        """Start from ``stored`` (newer than the state this server was given)."""
        self._state = stored.state
        self.version = self._saved_version = stored.version
        self._persisted = (stored.state.messages, stored.version)
        self._stored_title = title_of(stored.state)

    def _lease_lost(self) -> None:
        self._refuse(
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
        if self._display_log:
            self._flush_soon()
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
                and not self._display_dropped
                and self.version == self._persisted[1]
                and not (self._unsaved() or self._display_log or self._persist_next)
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
        if self.options.display_message_persistence is not None:
            self._append_display(new_messages, self.version)
        save_message = self.options.save_new_message
        if save_message is not None:
            conversation_id = self.options.conversation_id
            saver = self._worker()
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
        self._worker().submit("agent_persistence.save", self._persist, coalesce=True)

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
        if self._display_log:
            # The rows of this state's messages are written first: a stored message always has
            # its rows (they may be ahead after a kill, which the next start reconciles, never
            # behind). If they cannot be written, the state waits for them: this save fails,
            # is reported, and the next trigger retries both.
            try:
                await self._flush_display()
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
            self._refuse(conflict)
            return
        if not written and await self._already_stored(state, version):
            written = True  # an earlier attempt was stored, its acknowledgement lost
        if not written:
            self._refuse(
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
            await persistence.update_conversation(scope, conversation_id, title=title)
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

    def _refuse(self, conflict: StateConflict) -> None:
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

        self._worker().submit(operation, save, coalesce=True)

    # Display messages: appended in order, updated rows broadcast.

    def show_as(self, message: BaseMessage, shown: BaseMessage | None) -> None:
        """The display rows of ``message``, when it enters the state, are ``shown``'s (the
        user's version of a message a preprocessor rewrote for the model); None: it has
        none (a message for the model only)."""
        if self.options.display_message_persistence is not None:
            if self._shown is None:
                self._shown = {}
            self._shown[id(message)] = (message, shown)

    def _append_display(self, messages: Sequence[BaseMessage], version: int) -> None:
        if self._shown:
            shown = [self._user_version(message) for message in messages]
            messages = [message for message in shown if message is not None]
            if not messages:
                return
        log = self._display_log
        if log and isinstance(log[-1], list) and log[-1] is not self._in_flight:
            # The last operation is an append, not being written yet: these join it.
            log[-1].extend((message, version) for message in messages)
            self._flush_soon()
        else:
            self._display([(message, version) for message in messages])

    def _user_version(self, message: BaseMessage) -> BaseMessage | None:
        shown = self._shown
        entry = None if shown is None else shown.pop(id(message), None)
        if shown is not None and not shown:
            self._shown = None
        return message if entry is None or entry[0] is not message else entry[1]

    async def _append_rows(
        self,
        store: DisplayMessagePersistence,
        conversation_id: str,
        batch: list[tuple[BaseMessage, int]],
    ) -> Callable[[Recorder, DisplayMessagePersistence, str], Awaitable[None]] | None:
        """Append the rows of ``batch``; what remains to do (status updates of calls whose row
        an earlier batch wrote) is returned, to be done as an operation of its own."""
        rows = [
            row
            for message, version in batch
            for row in display_messages_for(conversation_id, message, state_version=version)
        ]
        # A call whose result is in the same batch is written with its final status: one
        # statement for the batch, not one more per tool call (a fast agent's batch holds many).
        finished = {
            m.tool_call_id: tool_result_status(m) for m, _ in batch if isinstance(m, ToolMessage)
        }
        for i, row in enumerate(rows):
            if row.type == "tool_call" and row.tool_call_id in finished:
                rows[i] = dataclasses.replace(row, status=finished.pop(row.tool_call_id))
        await self._append(store, conversation_id, rows)
        if not finished:
            return None

        async def statuses(
            recorder: Recorder, store: DisplayMessagePersistence, conversation_id: str
        ) -> None:
            for tool_call_id, status in finished.items():  # calls an earlier batch wrote
                await recorder._set_status(store, conversation_id, tool_call_id, status)

        return statuses

    # Each display write names the lease's token when the store takes one (both shipped stores
    # do): a writer that lost the conversation changes none of the new owner's rows, and a
    # refusal (StateConflict) fences this recorder (see _flush_display).

    def _lease_token(self, store: DisplayMessagePersistence, method: str) -> int | None:
        """The token a display write through ``store.method`` names (None: written unfenced,
        without a lease or to a store whose method takes none)."""
        lease = self._lease
        if lease is None or not takes_lease_token(type(store), method):
            return None
        return lease.token

    async def _append(
        self, store: DisplayMessagePersistence, conversation_id: str, rows: list[DisplayMessage]
    ) -> None:
        scope = self.options.scope
        token = self._lease_token(store, "append_display_messages")
        if token is None:
            saved = await store.append_display_messages(scope, conversation_id, rows)
        else:
            saved = await cast(_FencedDisplay, store).append_display_messages(
                scope, conversation_id, rows, lease_token=token
            )
        for row in saved:
            self._broadcast(DisplayMessageSaved(display_message=row.to_dict()))

    async def _set_status(
        self,
        store: DisplayMessagePersistence,
        conversation_id: str,
        tool_call_id: str,
        status: ToolCallStatus,
    ) -> None:
        scope = self.options.scope
        token = self._lease_token(store, "update_tool_call_status")
        if token is None:
            row = await store.update_tool_call_status(scope, conversation_id, tool_call_id, status)
        else:
            row = await cast(_FencedDisplay, store).update_tool_call_status(
                scope, conversation_id, tool_call_id, status, lease_token=token
            )
        self._updated(row)

    async def _record_decision(
        self,
        store: DisplayMessagePersistence,
        conversation_id: str,
        tool_call_id: str,
        decision: dict[str, Any],
    ) -> None:
        scope = self.options.scope
        token = self._lease_token(store, "record_decision")
        if token is None:
            row = await store.record_decision(scope, conversation_id, tool_call_id, decision)
        else:
            row = await cast(_FencedDisplay, store).record_decision(
                scope, conversation_id, tool_call_id, decision, lease_token=token
            )
        self._updated(row)

    def tool_calls_interrupted(self, interrupt: Interrupt) -> None:
        """The calls of ``interrupt`` wait for a human: their rows say so."""

        async def mark(
            recorder: Recorder, store: DisplayMessagePersistence, conversation_id: str
        ) -> None:
            for request in interrupt.action_requests:
                await recorder._set_status(
                    store, conversation_id, request.tool_call_id, "interrupted"
                )

        self._display(mark)

    def decisions_recorded(self, interrupt: Interrupt, decisions: Sequence[Decision]) -> None:
        """A human decided on the calls of ``interrupt``: each row records its decision."""

        async def record(
            recorder: Recorder, store: DisplayMessagePersistence, conversation_id: str
        ) -> None:
            for request, decision in zip(interrupt.action_requests, decisions, strict=True):
                await recorder._record_decision(
                    store, conversation_id, request.tool_call_id, _decision_dict(decision)
                )

        self._display(record)

    def reset_recorded(self, files: str) -> None:
        """The agent was reset (``handle.reset()``): a ``reset`` row marks where its fresh
        conversation starts. Rows are a transcript and are never deleted; a page shows what
        follows the last ``reset`` row."""
        version = self.version

        async def mark(
            recorder: Recorder, store: DisplayMessagePersistence, conversation_id: str
        ) -> None:
            row = DisplayMessage(
                conversation_id=conversation_id,
                type="reset",
                content={"files": files},
                state_version=version,
            )
            await recorder._append(store, conversation_id, [row])

        self._display(mark)

    def _display(self, operation: _DisplayOperation) -> None:
        """Log a display operation (written in order by the next flush)."""
        if (
            self.options.display_message_persistence is None
            or self.options.conversation_id is None
            or self.fenced is not None
        ):
            return
        if self._display_log is None:
            self._display_log = []
        self._display_log.append(operation)
        self._flush_soon()

    def _flush_soon(self) -> None:
        # Not before the server is registered: a watch attached at registration must see every
        # display event (a start's reconciliation included).
        if self._live:
            self._worker().submit("display_messages", self._flush_display, coalesce=True)

    async def _flush_display(self) -> None:
        """Write the display operations logged so far, in order (consecutive appends as one).

        Only those: operations logged meanwhile wait for the next flush, so a busy agent cannot
        keep one flush going while the state save waits behind it. An operation that fails
        stays first in the log and is retried by the next flush (the next display operation,
        state save or drain), up to three times, then dropped with an error: one that can
        never be written must not hold back every row after it. One cut short (a crash, a
        kill) stays too, and the restarted server writes it.
        """
        store = self.options.display_message_persistence
        conversation_id = self.options.conversation_id
        log = self._display_log
        budget = 0 if log is None else len(log)
        while budget > 0 and log and store is not None and conversation_id is not None:
            operation = self._in_flight = log[0]
            try:
                if isinstance(operation, list):
                    follow_up = await self._append_rows(store, conversation_id, operation)
                else:
                    # Written by this recorder (with its lease, to its subscribers), also when
                    # logged by a crashed server this one replaces.
                    await operation(self, store, conversation_id)
                    follow_up = None
            except StateConflict as conflict:
                log.clear()  # nothing of this writer's may be written any more
                self._refuse(conflict)
                return
            except Exception:
                self._display_failures += 1
                if self._display_failures >= _DISPLAY_ATTEMPTS:
                    log.pop(0)
                    self._display_failures = 0
                    self._display_dropped = True  # the end is not clean: the next start settles
                    _log.error(
                        "agent %r: a display operation failed %d times and was dropped",
                        self._host.agent_id,
                        _DISPLAY_ATTEMPTS,
                    )
                raise
            finally:
                self._in_flight = None
            self._display_failures = 0
            if follow_up is None:
                log.pop(0)
                budget -= 1
            else:
                log[0] = follow_up  # the rows are written: only their statuses remain

    def unwritten_display(self) -> list[_DisplayOperation]:
        """Take the display operations not written yet (a crashed server hands them to the
        one that replaces it)."""
        log, self._display_log = self._display_log, None
        return log or []

    def _updated(self, row: DisplayMessage | None) -> None:
        if row is not None:
            self._broadcast(DisplayMessageUpdated(display_message=row.to_dict()))

    def _broadcast(self, event: DisplayMessageSaved | DisplayMessageUpdated) -> None:
        publisher = self._host.publisher
        if not publisher.closed:
            publisher.publish(event)

    # -- the worker ----------------------------------------------------------------------------

    def _worker(self) -> SerialWorker:
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


class _FencedDisplay(Protocol):
    """A display store whose writes also take the writer's lease token (both shipped stores;
    each method is called so only when :func:`takes_lease_token` says it takes one)."""

    async def append_display_messages(
        self,
        scope: Scope,
        conversation_id: str,
        messages: Sequence[DisplayMessage],
        *,
        lease_token: int | None = None,
    ) -> list[DisplayMessage]: ...

    async def update_tool_call_status(
        self,
        scope: Scope,
        conversation_id: str,
        tool_call_id: str,
        status: ToolCallStatus,
        metadata: Mapping[str, Any] | None = None,
        *,
        lease_token: int | None = None,
    ) -> DisplayMessage | None: ...

    async def record_decision(
        self,
        scope: Scope,
        conversation_id: str,
        tool_call_id: str,
        decision: Mapping[str, Any],
        *,
        lease_token: int | None = None,
    ) -> DisplayMessage | None: ...

    async def reconcile_display_messages(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        state_version: int | None,
        tool_call_statuses: Mapping[str, ToolCallStatus],
        lease_token: int | None = None,
    ) -> list[DisplayMessage]: ...


#: How many times a display operation is tried before it is dropped.
_DISPLAY_ATTEMPTS = 3

#: An operation of the display log: rows to append, or a write of its own, made by the
#: recorder that writes the log (the one of a restarted server, for a crashed server's log).
_DisplayOperation: TypeAlias = (
    "list[tuple[BaseMessage, int]] "
    "| Callable[[Recorder, DisplayMessagePersistence, str], Awaitable[None]]"
)


def _tool_call_statuses(state: State) -> dict[str, ToolCallStatus]:
    """The status of every tool call whose result is in ``state``."""
    return {
        message.tool_call_id: tool_result_status(message)
        for message in state.messages
        if isinstance(message, ToolMessage)
    }


def _decision_dict(decision: Decision) -> dict[str, Any]:
    match decision:
        case Edit(arguments=arguments):
            return {"type": "edit", "arguments": arguments}
        case Reject(message=message):
            return {"type": "reject", "message": message}
        case Respond(message=message):
            return {"type": "respond", "message": message}
        case Answer(answers=answers):
            return {"type": "answer", "answers": list(answers)}
        case _:
            return {"type": "approve"}


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
