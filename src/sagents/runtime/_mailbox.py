"""``Mailbox``: the messages waiting for an agent server and the task that processes them.

Every command to an agent server (add a message, execute, cancel, stop...) is a message: a
function, its arguments and the caller's future (none for the server's own messages). The
mailbox runs them one at a time, in order, each to its end, so commands never interleave
halfway; a caller's future gets the function's result or exception, while a failure of the
server's own message is a crash of the server.

**A task per burst, not per server.** A fleet of mostly idle agents cannot afford a task (nor a
queue) per agent, so a mailbox exists only while messages wait: the first message of a burst
makes it and starts its task, and the task ends once the queue is empty, with no await between
that check and the owner forgetting the mailbox, so the next message finds none and starts the
next burst. Messages posted before the owner goes live (by its start-up hooks) wait for
:meth:`Mailbox.start`.

When the owner closes (a graceful stop processed as a message), the task processes nothing more
and lets the owner end; when the owner ends, the callers still waiting get
:class:`~sagents.AgentNotRunning` rather than hang (:meth:`Mailbox.flush`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

from sagents._errors import AgentNotRunning

__all__ = ["Mailbox", "MailboxOwner", "Message"]

#: A message: the function to run, its arguments, and the caller's future (None for the
#: owner's own message, whose failure is a crash).
Message: TypeAlias = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any] | None"]


class MailboxOwner(Protocol):
    """What a mailbox needs from the actor it serves."""

    agent_id: str

    @property
    def closed(self) -> bool:
        """Whether the owner takes no more messages (checked after each one)."""
        ...

    def own_context(self) -> contextvars.Context:
        """The context every message runs in (the owner's "task" context)."""
        ...

    def mailbox_empty(self) -> None:
        """The burst is over: the owner forgets this mailbox."""
        ...

    async def mailbox_ended(self, error: BaseException | None) -> None:
        """The burst ends the owner: after it closed (``error`` None), or because one of its
        own messages failed (a crash) or the task was cancelled (``CancelledError``)."""
        ...


class Mailbox:
    """One burst of messages of one owner, and the task draining it."""

    __slots__ = ("_messages", "_owner", "_task")

    def __init__(self, owner: MailboxOwner) -> None:
        self._owner = owner
        self._messages: deque[Message] = deque()
        self._task: asyncio.Task[None] | None = None

    def put(self, message: Message, *, start: bool) -> None:
        """Queue ``message``; ``start``: begin processing (the owner is live)."""
        self._messages.append(message)
        if start and self._task is None:
            self.start()

    def start(self) -> None:
        """Start the task that processes the queue (once: a mailbox serves one burst)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._drain(), context=self._owner.own_context()
            )

    async def cancel(self) -> None:
        """Cancel the task (a stop that took too long) and wait until it is done; its
        cancellation ends the owner."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    def flush(self, why: str) -> None:
        """Fail every waiting call with ``AgentNotRunning`` (the owner ended ``why``)."""
        messages = self._messages
        while messages:
            _, _, future = messages.popleft()
            if future is not None and not future.done():
                future.set_exception(AgentNotRunning(f"agent {self._owner.agent_id!r} {why}"))

    async def _drain(self) -> None:
        owner = self._owner
        try:
            closed = await self._process()
        except asyncio.CancelledError as exc:
            # Cancelled by a stop that took too long, or by the loop closing.
            await owner.mailbox_ended(exc)
            raise
        except BaseException as exc:
            await owner.mailbox_ended(exc)  # a crash: the owner's unit restarts it
            return
        if closed:
            await owner.mailbox_ended(None)

    async def _process(self) -> bool:
        """One message at a time, in order; True once the owner closed, False once empty."""
        messages, owner = self._messages, self._owner
        while messages:
            fn, args, future = messages.popleft()
            if future is not None and future.cancelled():
                continue
            try:
                result = fn(*args)
                if asyncio.iscoroutine(result):
                    result = await result
            except Exception as exc:
                if future is None:
                    raise  # the owner's own message failed: that is a crash
                if not future.done():
                    future.set_exception(exc)
            except BaseException:
                # Killed (a stop that took too long) while handling it: its caller must not
                # wait forever.
                if future is not None and not future.done():
                    future.set_exception(
                        AgentNotRunning(f"agent {owner.agent_id!r} was stopped during this call")
                    )
                raise
            else:
                if future is not None and not future.done():
                    future.set_result(result)
            if owner.closed:
                return True
        # Empty: no await between the check above and here, so a message posted from now on
        # finds no mailbox and starts the next burst.
        owner.mailbox_empty()
        return False
