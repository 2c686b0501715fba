"""``SessionExecutor``: the conversations of a :class:`~sagents.SessionConfig` as an A2A agent.

The A2A **context id is the conversation id**, and a **task is one run** of the conversation's
agent. Every message goes through :meth:`Session.ensure_running`, so an A2A conversation is an
ordinary one: its agent is started, or restored from persistence, as the ``SessionConfig``
says; inactivity and presence stop it as they stop any agent; and another door onto the same
conversation (the web demo, a script) sees the same agent.

What a message does:

- **A new task** (no task id, or a task not waiting for input) adds the message to the
  conversation and follows the run to its end, publishing what :class:`RunMapper` makes of the
  agent's events. A conversation already running something refuses it (``rejected``): its agent
  runs one thing at a time, and joining the run in progress would mix two requests' answers in
  one task.
- **A message naming a task in ``input-required``** answers the approval or question it asked
  (:func:`decisions_from_reply`) and resumes the run in that same task. A reply the interrupt
  cannot take leaves it waiting (``input-required`` again, saying why). If what the task asked
  is no longer pending (answered elsewhere, or dismissed by a newer message on the
  conversation), the task is ``rejected``.
- **Cancel** cancels the task's run (``handle.cancel()``); a task waiting for input has its
  pending calls dismissed (``handle.dismiss_interrupt()``). Either way the task ends
  ``canceled``.

The executor's own calls for one conversation are serialised by a lock per context id, so two
messages arriving together cannot both find the agent idle and start two runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.types import Message, Task, TaskState, TaskStatus, TaskStatusUpdateEvent
from a2a.utils.errors import InvalidParamsError
from langchain_core.messages import HumanMessage

from sagents._errors import AgentNotRunning, InvalidDecision, InvalidTransition, SagentsError
from sagents._status import Status
from sagents.a2a._mapping import (
    TERMINAL_STATES,
    RunMapper,
    TaskUpdate,
    decisions_from_reply,
    input_required,
    interrupt_ids,
    pending_ids,
    status_update,
    user_text,
)
from sagents.persistence._protocols import Scope
from sagents.runtime._handle import AgentHandle
from sagents.runtime._runtime import Runtime
from sagents.session._config import SessionConfig
from sagents.session._session import Session

__all__ = ["ScopeOf", "SessionExecutor"]

#: The tenant a request acts for, from its context (e.g. the authenticated user of
#: ``context.call_context.user``).
ScopeOf: TypeAlias = Callable[[RequestContext], Scope]

_BUSY = (
    "This conversation is already running another request. Wait for it to end (or cancel "
    "it), then send again."
)
_STALE = (
    "What this task asked is no longer pending: it was answered or dismissed elsewhere (a new "
    "message on the conversation dismisses it). Send a new message to continue."
)


@dataclass(slots=True, eq=False, kw_only=True)
class _Run:
    """One task's updates, shared by its ``execute`` and a ``cancel`` so that the task ends
    exactly once."""

    task_id: str
    context_id: str
    queue: EventQueue
    launched: bool = False  # the message was added (or the decisions given): a run is ours
    cancel_requested: bool = False
    ended: bool = False  # no more updates from the run: it ended the task or asked for input
    terminal: bool = False

    async def publish(self, update: TaskUpdate) -> None:
        if self.ended:
            return
        if isinstance(update, TaskStatusUpdateEvent):
            state = update.status.state
            if state in TERMINAL_STATES or state == TaskState.TASK_STATE_INPUT_REQUIRED:
                self.ended = True
                self.terminal = state in TERMINAL_STATES
        await self.queue.enqueue_event(update)

    async def cancelled(self) -> None:
        """End the task ``canceled``, unless it ended already."""
        if self.terminal:
            return
        self.ended = self.terminal = True
        await self.queue.enqueue_event(
            status_update(
                self.task_id, self.context_id, TaskState.TASK_STATE_CANCELED, "Cancelled."
            )
        )

    async def fail(self, state: TaskState, text: str) -> None:
        await self.publish(status_update(self.task_id, self.context_id, state, text))


class SessionExecutor(AgentExecutor):
    """An A2A ``AgentExecutor`` over the conversations of ``config`` in ``runtime``.

    Args:
        runtime: the runtime the agents run in; started and shut down by the application.
        config: how conversations are built, restored and kept (see ``docs/protocols.md``).
        scope: the tenant of a request (default: None, a single-tenant application). A
            conversation is only reachable from its own scope: a context id of another tenant's
            conversation ends the task ``failed`` (``ConversationNotFound``).
    """

    def __init__(
        self, runtime: Runtime, config: SessionConfig, *, scope: ScopeOf | None = None
    ) -> None:
        self._runtime = runtime
        self._config = config
        self._scope_of = scope
        self._runs: dict[str, _Run] = {}
        # context id -> (lock, callers holding or waiting for it); an entry lives while used.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def _scope(self, context: RequestContext) -> Scope:
        return None if self._scope_of is None else self._scope_of(context)

    @contextlib.asynccontextmanager
    async def _lock(self, context_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(context_id, (asyncio.Lock(), 0))
        self._locks[context_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[context_id]
            if users == 1:
                del self._locks[context_id]
            else:
                self._locks[context_id] = (lock, users - 1)

    # -- a message -----------------------------------------------------------------------------

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Add the message to the conversation (or answer what the task asked) and publish the
        run's updates until it ends the task or asks for input."""
        task_id, context_id, message = context.task_id, context.context_id, context.message
        if not task_id or not context_id or message is None:
            raise InvalidParamsError(message="a message with a task id and a context id is needed")
        task = context.current_task
        if task is None:
            submitted = TaskStatus(state=TaskState.TASK_STATE_SUBMITTED)
            await event_queue.enqueue_event(
                Task(id=task_id, context_id=context_id, status=submitted, history=[message])
            )
        run = _Run(task_id=task_id, context_id=context_id, queue=event_queue)
        self._runs[task_id] = run
        events: Any = None
        try:
            async with self._lock(context_id):
                try:
                    session = await Session.ensure_running(
                        self._runtime,
                        self._config,
                        context_id,
                        scope=self._scope(context),
                        request_opts=context.metadata,
                    )
                    events = session.events
                    mapper = await self._start(run, session.handle, task, message)
                except SagentsError as exc:
                    await run.fail(TaskState.TASK_STATE_FAILED, str(exc))
                    return
            if mapper is None:
                return
            following, events = events, None  # _follow owns the subscription from here
            await self._follow(run, session.handle, following, mapper)
        finally:
            if self._runs.get(task_id) is run:
                del self._runs[task_id]
            if events is not None:
                await events.aclose()

    async def _start(
        self, run: _Run, handle: AgentHandle, task: Task | None, message: Message
    ) -> RunMapper | None:
        """Launch the task's run; None when nothing runs for it (its outcome is published)."""
        if run.cancel_requested:  # cancelled before it started: cancel() ends the task
            return None
        if task is not None and task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED:
            return await self._answer(run, handle, task, message)
        if await handle.get_status() is Status.RUNNING:
            await run.fail(TaskState.TASK_STATE_REJECTED, _BUSY)
            return None
        text = user_text(message)
        if not text:
            await run.fail(TaskState.TASK_STATE_REJECTED, "The message is empty.")
            return None
        await handle.add_message(HumanMessage(text))
        run.launched = True
        await run.publish(
            status_update(run.task_id, run.context_id, TaskState.TASK_STATE_WORKING, "")
        )
        return RunMapper(run.task_id, run.context_id)

    async def _answer(
        self, run: _Run, handle: AgentHandle, task: Task, message: Message
    ) -> RunMapper | None:
        asked = interrupt_ids(task.status.message if task.status.HasField("message") else None)
        interrupt = (await handle.get_state()).interrupt
        status = await handle.get_status()
        if status is not Status.INTERRUPTED or interrupt is None or pending_ids(interrupt) != asked:
            await run.fail(TaskState.TASK_STATE_REJECTED, _STALE)
            return None
        try:
            await handle.resume(decisions_from_reply(interrupt, message))
        except InvalidDecision as exc:
            await run.publish(
                input_required(run.task_id, run.context_id, interrupt, problem=str(exc))
            )
            return None
        run.launched = True
        await run.publish(
            status_update(run.task_id, run.context_id, TaskState.TASK_STATE_WORKING, "")
        )
        return RunMapper(run.task_id, run.context_id)

    async def _follow(self, run: _Run, handle: AgentHandle, events: Any, mapper: RunMapper) -> None:
        """Publish the run's updates until it ends the task or asks for input."""
        last_seq = 0
        try:
            while True:
                async for event in events:
                    last_seq = max(last_seq, event.seq)
                    for update in mapper.map(event):
                        await run.publish(update)
                    if mapper.ended or run.ended:
                        return
                # The subscription ended before the run did: it fell behind and was detached.
                # Pick up where it stopped, from the agent's replay buffer.
                await events.aclose()
                try:
                    events = handle.subscribe(after_seq=last_seq)
                except AgentNotRunning:
                    await run.fail(
                        TaskState.TASK_STATE_FAILED,
                        "The agent stopped before the run ended. Send a message to continue.",
                    )
                    return
        finally:
            await events.aclose()

    # -- cancel --------------------------------------------------------------------------------

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Cancel the task's run (or dismiss what it waits for) and end it ``canceled``."""
        task_id, context_id = context.task_id, context.context_id
        if not task_id or not context_id:
            raise InvalidParamsError(message="cancel needs a task id and a context id")
        run = self._runs.get(task_id)
        if run is not None:
            run.cancel_requested = True
        # Under the conversation's lock: a run being launched for this task is launched by the
        # time the cancel looks at the agent, so it is found and cancelled.
        async with self._lock(context_id):
            if run is not None:
                await self._cancel_run(run)
            else:
                await self._cancel_waiting(context, context_id)
        await (run or _Run(task_id=task_id, context_id=context_id, queue=event_queue)).cancelled()

    async def _cancel_run(self, run: _Run) -> None:
        if not run.launched or run.terminal:
            return
        try:
            handle = self._runtime.agent(self._config.agent_id_for(run.context_id))
            status = await handle.get_status()
            # It ended meanwhile (another status): nothing is left to stop.
            with contextlib.suppress(InvalidTransition):
                if status is Status.RUNNING:
                    await handle.cancel()
                elif status is Status.INTERRUPTED:
                    await handle.dismiss_interrupt()
        except AgentNotRunning:
            return

    async def _cancel_waiting(self, context: RequestContext, context_id: str) -> None:
        """A task parked in ``input-required``: dismiss its pending calls if they still wait
        (the interrupt is durable, so its agent is restored to do it)."""
        task = context.current_task
        if task is None or task.status.state != TaskState.TASK_STATE_INPUT_REQUIRED:
            return
        asked = interrupt_ids(task.status.message if task.status.HasField("message") else None)
        session = await Session.start(
            self._runtime, self._config, context_id, scope=self._scope(context)
        )
        interrupt = (await session.handle.get_state()).interrupt
        if interrupt is not None and pending_ids(interrupt) == asked:
            with contextlib.suppress(InvalidTransition):
                await session.handle.dismiss_interrupt()
