"""``DisplayLog``: the display rows of one agent's conversation, written behind the agent.

A chat UI shows rows, not the model's messages (see ``_display.py``): they are appended as
messages enter the state, and each tool call's row is updated as it runs, is interrupted or is
decided; every append is broadcast as ``DisplayMessageSaved`` and every update as
``DisplayMessageUpdated``. The log holds the display operations not written yet, in order, and
one *flush* writes them, consecutive appends merged into one, so a fast agent never builds a
backlog of row writes.

The log has no worker of its own: its flushes run in its :class:`Recorder`'s serial worker,
coalesced, between the state saves, and the state save flushes the log first, so rows are never
behind the stored state. They can be *ahead* of it after a kill (a turn shown, then lost with
the process): each row carries the state version its message entered, so the next start
(:meth:`reconcile`) deletes the rows of messages the stored state does not have and settles tool
calls left "executing".

Every write names the recorder's lease token, and a write storage refuses (``StateConflict``)
clears the log and goes to the recorder's refusal path, like a refused state save: a writer
that lost the conversation changes none of the new owner's rows. The recorder makes a log only
when the agent has a display persistence, so an idle agent without one pays nothing for it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from langchain_core.messages import BaseMessage, ToolMessage

from sagents._errors import StateConflict
from sagents._interrupt import Answer, Decision, Edit, Interrupt, Reject, Respond
from sagents._state import State
from sagents.events import DisplayMessageSaved, DisplayMessageUpdated
from sagents.persistence._leases import takes_lease_token
from sagents.persistence._protocols import (
    DisplayMessage,
    DisplayMessagePersistence,
    DisplayReconciliation,
    Lease,
    ToolCallStatus,
)
from sagents.runtime._display import display_messages_for, tool_result_status
from sagents.runtime._options import AgentOptions
from sagents.runtime._serial import SerialWorker

if TYPE_CHECKING:
    from sagents.execution._agent import Agent
    from sagents.execution._middleware import Middleware
    from sagents.runtime._publisher import Publisher

__all__ = ["DisplayHost", "DisplayLog", "DisplayOperation", "DisplayOwner"]

_log = logging.getLogger("sagents.persistence")


class DisplayHost(Protocol):
    """What a display log needs from its agent server."""

    agent_id: str
    agent: Agent

    @property
    def publisher(self) -> Publisher: ...


class DisplayOwner(Protocol):
    """What a display log needs from the recorder that owns it: the state's version (a
    ``reset`` row carries it), whether storage refused a write already (``fenced``: nothing
    more is written), the lease whose token every write names, the serial worker the flushes
    run in (the state saves' own), and the refusal path a refused write takes."""

    @property
    def version(self) -> int: ...

    @property
    def fenced(self) -> StateConflict | None: ...

    @property
    def lease(self) -> Lease | None: ...

    def worker(self) -> SerialWorker: ...

    def refuse(self, conflict: StateConflict) -> None: ...


class DisplayLog:
    """The display operations of one agent server not written yet (see the module docstring)."""

    __slots__ = (
        "_dropped",
        "_failures",
        "_host",
        "_in_flight",
        "_live",
        "_operations",
        "_owner",
        "_shown",
        "options",
    )

    def __init__(
        self,
        owner: DisplayOwner,
        host: DisplayHost,
        options: AgentOptions,
        operations: Sequence[DisplayOperation] = (),
    ) -> None:
        self._owner = owner
        self._host = host
        self.options = options
        # Display operations not written yet, in order: a list is an append of rows (of
        # messages, with the state version each entered), a function any other operation.
        self._operations: list[DisplayOperation] | None = list(operations) or None
        self._in_flight: DisplayOperation | None = None
        self._failures = 0
        self._dropped = False
        # id(message) -> (message, the user's version): rewritten messages not displayed yet
        self._shown: dict[int, tuple[BaseMessage, BaseMessage | None]] | None = None
        self._live = False

    @property
    def pending(self) -> bool:
        """Whether operations wait to be written."""
        return bool(self._operations)

    @property
    def settled(self) -> bool:
        """Whether every operation logged was written (none waits, none was dropped)."""
        return not self._dropped and not self._operations

    def go_live(self) -> None:
        """The server is registered: write what the start queued."""
        self._live = True
        if self._operations:
            self.flush_soon()

    def unwritten(self) -> list[DisplayOperation]:
        """Take the display operations not written yet (a crashed server hands them to the
        one that replaces it)."""
        operations, self._operations = self._operations, None
        return operations or []

    # -- what the recorder and the server report -----------------------------------------------

    def show_as(self, message: BaseMessage, shown: BaseMessage | None) -> None:
        """The display rows of ``message``, when it enters the state, are ``shown``'s (the
        user's version of a message a preprocessor rewrote for the model); None: it has
        none (a message for the model only)."""
        if self._shown is None:
            self._shown = {}
        self._shown[id(message)] = (message, shown)

    def append(self, messages: Sequence[BaseMessage], version: int) -> None:
        """``messages`` entered the state at ``version``: log their rows (as the agent's
        ``transform_display_message`` hooks show them)."""
        if self._shown:
            shown = [self._user_version(message) for message in messages]
            messages = [message for message in shown if message is not None]
            if not messages:
                return
        hooks = self._host.agent.display_hooks
        if hooks:
            messages = [self._transformed(message, hooks) for message in messages]
        log = self._operations
        if log and isinstance(log[-1], list) and log[-1] is not self._in_flight:
            # The last operation is an append, not being written yet: these join it.
            log[-1].extend((message, version) for message in messages)
            self.flush_soon()
        else:
            self._log([(message, version) for message in messages])

    def _transformed(self, message: BaseMessage, hooks: Sequence[Middleware]) -> BaseMessage:
        for mw in hooks:
            try:
                changed = mw.transform_display_message(message)
            except Exception:
                _log.exception(
                    "agent %r: %s.transform_display_message failed; the message is shown as it was",
                    self._host.agent_id,
                    mw.name,
                )
                continue
            if changed is not None:
                message = changed
        return message

    def _user_version(self, message: BaseMessage) -> BaseMessage | None:
        shown = self._shown
        entry = None if shown is None else shown.pop(id(message), None)
        if shown is not None and not shown:
            self._shown = None
        return message if entry is None or entry[0] is not message else entry[1]

    def reconcile(self, state: State, version: int) -> None:
        """After an unclean end, queue the reconciliation of the rows with ``state`` (at
        ``version``), the durable one this server starts from: first in the log, before any
        row this server appends."""
        store = self.options.display_message_persistence
        if not isinstance(store, DisplayReconciliation):
            return
        statuses = _tool_call_statuses(state)

        async def settle(
            display: DisplayLog, store: DisplayMessagePersistence, conversation_id: str
        ) -> None:
            assert isinstance(store, DisplayReconciliation)
            rows: list[DisplayMessage] = await display._write(
                store,
                "reconcile_display_messages",
                conversation_id,
                state_version=version,
                tool_call_statuses=statuses,
            )
            for row in rows:
                display._updated(row)

        self._log(settle)

    def tool_calls_interrupted(self, interrupt: Interrupt) -> None:
        """The calls of ``interrupt`` wait for a human: their rows say so."""

        async def mark(
            display: DisplayLog, store: DisplayMessagePersistence, conversation_id: str
        ) -> None:
            for request in interrupt.action_requests:
                await display._set_status(
                    store, conversation_id, request.tool_call_id, "interrupted"
                )

        self._log(mark)

    def decisions_recorded(self, interrupt: Interrupt, decisions: Sequence[Decision]) -> None:
        """A human decided on the calls of ``interrupt``: each row records its decision."""

        async def record(
            display: DisplayLog, store: DisplayMessagePersistence, conversation_id: str
        ) -> None:
            for request, decision in zip(interrupt.action_requests, decisions, strict=True):
                await display._record_decision(
                    store, conversation_id, request.tool_call_id, _decision_dict(decision)
                )

        self._log(record)

    def synthetic(
        self, type: str, content: dict[str, Any], content_type: str, metadata: dict[str, Any]
    ) -> bool:
        """A row no message stands behind (``MiddlewareContext.save_display_message``), at
        the state's current version; whether it will be written."""
        version = self._owner.version

        async def add(
            display: DisplayLog, store: DisplayMessagePersistence, conversation_id: str
        ) -> None:
            row = DisplayMessage(
                conversation_id=conversation_id,
                type=type,
                content=content,
                content_type=content_type,
                metadata=metadata,
                state_version=version,
            )
            await display._append(store, conversation_id, [row])

        return self._log(add)

    def reset_recorded(self, files: str) -> None:
        """The agent was reset (``handle.reset()``): a ``reset`` row marks where its fresh
        conversation starts. Rows are a transcript and are never deleted; a page shows what
        follows the last ``reset`` row."""
        self.synthetic("reset", {"files": files}, "text", {})

    # -- writing -------------------------------------------------------------------------------

    def _log(self, operation: DisplayOperation) -> bool:
        """Log a display operation (written in order by the next flush); whether it was."""
        if (
            self.options.display_message_persistence is None
            or self.options.conversation_id is None
            or self._owner.fenced is not None
        ):
            return False
        if self._operations is None:
            self._operations = []
        self._operations.append(operation)
        self.flush_soon()
        return True

    def flush_soon(self) -> None:
        """Queue a flush in the owner's worker (coalesced with one already queued)."""
        # Not before the server is registered: a watch attached at registration must see every
        # display event (a start's reconciliation included).
        if self._live:
            self._owner.worker().submit("display_messages", self.flush, coalesce=True)

    async def flush(self) -> None:
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
        log = self._operations
        budget = 0 if log is None else len(log)
        while budget > 0 and log and store is not None and conversation_id is not None:
            operation = self._in_flight = log[0]
            try:
                if isinstance(operation, list):
                    follow_up = await self._append_rows(store, conversation_id, operation)
                else:
                    # Written by this log (with its lease, to its subscribers), also when
                    # logged by a crashed server this one replaces.
                    await operation(self, store, conversation_id)
                    follow_up = None
            except StateConflict as conflict:
                log.clear()  # nothing of this writer's may be written any more
                self._owner.refuse(conflict)
                return
            except Exception:
                self._failures += 1
                if self._failures >= _ATTEMPTS:
                    log.pop(0)
                    self._failures = 0
                    self._dropped = True  # the end is not clean: the next start settles
                    _log.error(
                        "agent %r: a display operation failed %d times and was dropped",
                        self._host.agent_id,
                        _ATTEMPTS,
                    )
                raise
            finally:
                self._in_flight = None
            self._failures = 0
            if follow_up is None:
                log.pop(0)
                budget -= 1
            else:
                log[0] = follow_up  # the rows are written: only their statuses remain

    async def _append_rows(
        self,
        store: DisplayMessagePersistence,
        conversation_id: str,
        batch: list[tuple[BaseMessage, int]],
    ) -> Callable[[DisplayLog, DisplayMessagePersistence, str], Awaitable[None]] | None:
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
            display: DisplayLog, store: DisplayMessagePersistence, conversation_id: str
        ) -> None:
            for tool_call_id, status in finished.items():  # calls an earlier batch wrote
                await display._set_status(store, conversation_id, tool_call_id, status)

        return statuses

    # Each display write names the lease's token when the store takes one (both shipped stores
    # do): a writer that lost the conversation changes none of the new owner's rows, and a
    # refusal (StateConflict) fences the owner (see flush).

    async def _write(
        self, store: DisplayMessagePersistence, method: str, *args: Any, **kwargs: Any
    ) -> Any:
        """``store.<method>(scope, *args, **kwargs)``, naming the lease's token when the store
        takes one (the shipped stores do; another store is written unfenced)."""
        lease = self._owner.lease
        if lease is not None and takes_lease_token(type(store), method):
            kwargs["lease_token"] = lease.token
        return await getattr(store, method)(self.options.scope, *args, **kwargs)

    async def _append(
        self, store: DisplayMessagePersistence, conversation_id: str, rows: list[DisplayMessage]
    ) -> None:
        saved: list[DisplayMessage] = await self._write(
            store, "append_display_messages", conversation_id, rows
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
        self._updated(
            await self._write(
                store, "update_tool_call_status", conversation_id, tool_call_id, status
            )
        )

    async def _record_decision(
        self,
        store: DisplayMessagePersistence,
        conversation_id: str,
        tool_call_id: str,
        decision: dict[str, Any],
    ) -> None:
        self._updated(
            await self._write(store, "record_decision", conversation_id, tool_call_id, decision)
        )

    def _updated(self, row: DisplayMessage | None) -> None:
        if row is not None:
            self._broadcast(DisplayMessageUpdated(display_message=row.to_dict()))

    def _broadcast(self, event: DisplayMessageSaved | DisplayMessageUpdated) -> None:
        publisher = self._host.publisher
        if not publisher.closed:
            publisher.publish(event)


#: How many times a display operation is tried before it is dropped.
_ATTEMPTS = 3

#: An operation of the display log: rows to append, or a write of its own, made by the log
#: that writes it (the one of a restarted server, for a crashed server's log).
DisplayOperation: TypeAlias = (
    "list[tuple[BaseMessage, int]] "
    "| Callable[[DisplayLog, DisplayMessagePersistence, str], Awaitable[None]]"
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
