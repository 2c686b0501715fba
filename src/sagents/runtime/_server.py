"""``AgentServer``: the actor that runs one agent (rules L1–L8, L14, L20–L26, L40–L49).

One server per agent id, with one mailbox and one status. Every command (add a message, execute,
resume, cancel, stop, replace the state) is a message processed in order by the server's own
task, so commands never interleave halfway; reads (status, state, info) are answered directly
because they change nothing. The server is deliberately small: the loop that talks to the model
is :class:`~sagents.execution.Run`, events go through the :class:`Publisher`, saves through a
:class:`SerialWorker`, viewers through a :class:`ViewerWatch`.

A run is a separate task owned by the server, so the mailbox stays responsive while the model
streams (``cancel()`` is processed at once). When the run ends it posts its result back to the
mailbox, where the status changes; messages that arrived meanwhile are queued and run next as one
follow-up turn (L7).

Timers are deadlines: activity only records the time (O(1), no timer-handle churn, L26), and the
single inactivity handle re-arms itself lazily when it fires early.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, ToolMessage

from sagents import telemetry
from sagents._errors import AgentNotRunning, InvalidTransition, RunError, SagentsError
from sagents._interrupt import Decision, Edit, Interrupt, Reject
from sagents._state import State
from sagents._status import Status
from sagents.events import (
    AgentShutdown,
    DisplayMessageSaved,
    Event,
    PersistenceError,
    StateRestored,
    StatusChanged,
)
from sagents.execution._agent import Agent
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import MiddlewareContext, set_middleware_context
from sagents.execution._result import Done, Failed, Interrupted, RunResult
from sagents.execution._run import Run, dismiss_interrupt
from sagents.persistence._protocols import ConversationStore, StateSnapshot
from sagents.runtime._context import apply_context
from sagents.runtime._display import display_messages_for, tool_result_status
from sagents.runtime._info import AgentInfo
from sagents.runtime._options import AgentOptions
from sagents.runtime._presence import ViewerWatch
from sagents.runtime._publisher import Publisher, Subscription
from sagents.runtime._serial import SerialWorker

if TYPE_CHECKING:
    from sagents.runtime._supervisor import Ready

__all__ = ["AgentServer"]

_log = logging.getLogger("sagents.server")

#: Where the ``ConversationTitle`` middleware keeps ``{"title": ...}`` in ``State.metadata``;
#: a save that carries a new title also sets the conversation's title in a ConversationStore.
TITLE_KEY = "conversation_title"

# Presence never ends these (L31): a run in progress, a pending approval, a node drain (L8).
_KEEP_WITH_NO_VIEWERS = frozenset({Status.RUNNING, Status.INTERRUPTED, Status.PAUSED})


class _Stop(Exception):
    """Ends the mailbox loop after a graceful stop."""


class AgentServer:
    """The actor behind an :class:`~sagents.runtime.AgentHandle`; not used directly."""

    def __init__(
        self,
        agent: Agent,
        state: State,
        options: AgentOptions,
        *,
        on_registered: Callable[[AgentServer], None],
        on_ended: Callable[[AgentServer, str], None],
        services: Mapping[str, Any] | None = None,
    ) -> None:
        self.agent = agent
        self.agent_id = agent.agent_id
        self.options = options
        self.state = (
            state if state.agent_id == agent.agent_id else state.replace(agent_id=agent.agent_id)
        )
        self.status = _initial_status(self.state)
        self.publisher = Publisher(
            agent.agent_id, replay_size=options.replay_size, queue_size=options.queue_size
        )
        self._on_registered = on_registered
        self._on_ended = on_ended
        self._services: Mapping[str, Any] = services if services is not None else {}
        self._run_meta = {"conversation_id": options.conversation_id, **options.metadata}
        self._loop = asyncio.get_running_loop()
        self._mailbox: deque[
            tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any] | None]
        ] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._closed = False
        self._run: Run | None = None
        self._run_task: asyncio.Task[RunResult] | None = None
        self._queued: list[BaseMessage] = []
        self._deferred: list[tuple[str, Any]] = []
        self._follow_ups = 0
        self._started_at = self._loop.time()
        self._last_activity = self._started_at
        self._inactivity_handle: asyncio.TimerHandle | None = None
        self._save_handle: asyncio.TimerHandle | None = None
        # Versions of the state: +1 per change, continuing the stored version when restored.
        self._version = options.state_version or 0
        self._saved_version = -1
        # What the agent persistence holds (messages, version), for delta saves.
        self._persisted: tuple[Sequence[BaseMessage], int | None] = (
            (self.state.messages, options.state_version)
            if options.state_version is not None
            else ((), None)
        )
        self._saver = SerialWorker(self._report_persistence_error)
        self._persist_next: tuple[State, int] | None = None
        # The title the conversation row holds, as far as this server knows.
        self._stored_title = conversation_title(self.state)
        self._viewers: ViewerWatch | None = None
        self._middleware_context: MiddlewareContext | None = None
        self._context = options.context
        self._ended = asyncio.Event()
        self.shutdown_reason: str | None = None

    # -- lifecycle (the supervisor's Child protocol) ----------------------------------------

    async def run(self, ready: Ready) -> None:
        """Register, signal ready, then process the mailbox until stopped."""
        started = time.perf_counter()
        if self._context is not None:
            apply_context(self._context)  # for hooks run in the mailbox
        for subscriber in self.options.initial_subscribers:
            subscriber.attach(self.publisher)
        if self.options.presence is not None and self.options.presence.enabled:
            self._viewers = ViewerWatch(self.options.presence, on_no_viewers=self._no_viewers)
            await self._viewers.start()
        for mw in self.agent.middleware_instances:
            if mw.overrides("on_server_start"):
                set_middleware_context(self.middleware_context())
                changed = await mw.on_server_start(self.state)
                if changed is not None:
                    self._set_state(changed)
        self._on_registered(self)
        self._arm_inactivity()
        self._arm_interval_save()
        if self._viewers is not None:
            self._viewers.agent_status_changed(self.status)
        telemetry.execute(
            ("sagents", "agent", "start"),
            {"system_time": time.time(), "duration": time.perf_counter() - started},
            self._meta(),
        )
        ready.started(self)
        reason = "crash"
        try:
            await self._process_mailbox()
            reason = self.shutdown_reason or "manual"
        except asyncio.CancelledError:
            # Cancelled by our supervisor (its shutdown timeout elapsed) or the runtime.
            reason = self.shutdown_reason or "shutdown"
            raise
        except BaseException as exc:
            _log.error("agent server %r crashed", self.agent_id, exc_info=exc)
            raise
        finally:
            await self._end(reason)

    async def stop(self) -> None:
        """Graceful stop requested by a supervisor (runtime shutdown)."""
        if not self._closed:
            with contextlib.suppress(AgentNotRunning):
                await self.call(self.do_stop, "shutdown")

    async def _process_mailbox(self) -> None:
        while True:
            while not self._mailbox:
                self._wakeup = self._loop.create_future()
                await self._wakeup
                self._wakeup = None
            fn, args, future = self._mailbox.popleft()
            if future is not None and future.cancelled():
                continue
            try:
                result = fn(*args)
                if asyncio.iscoroutine(result):
                    result = await result
            except _Stop:
                if future is not None and not future.done():
                    future.set_result(None)
                return
            except _StopRequest as request:
                try:
                    await self.do_stop(request.reason)
                except _Stop:
                    return
            except Exception as exc:
                if future is None:
                    raise  # an internal message failed: that is a crash
                if not future.done():
                    future.set_exception(exc)
                continue
            if future is not None and not future.done():
                future.set_result(result)

    async def _end(self, reason: str) -> None:
        """Leave the registry and close every subscription; runs exactly once."""
        self._closed = True
        for handle in (self._inactivity_handle, self._save_handle):
            if handle is not None:
                handle.cancel()
        if self._run_task is not None and not self._run_task.done():
            self._run_task.cancel()
            await asyncio.gather(self._run_task, return_exceptions=True)
        if self._viewers is not None:
            await self._viewers.aclose()
        while self._mailbox:
            _, _, future = self._mailbox.popleft()
            if future is not None and not future.done():
                future.set_exception(AgentNotRunning(f"agent {self.agent_id!r} stopped ({reason})"))
        if self._middleware_context is not None:
            await self._middleware_context.aclose()
        if reason == "crash":
            await self._saver.aclose()
        self.publisher.close(AgentShutdown(reason=reason, metadata=self._shutdown_metadata()))
        self._on_ended(self, reason)
        self._ended.set()
        event = "crash" if reason == "crash" else "stop"
        telemetry.execute(
            ("sagents", "agent", event),
            {"duration": self._loop.time() - self._started_at},
            {**self._meta(), "reason": reason},
        )

    def _shutdown_metadata(self) -> dict[str, Any]:
        return {
            "conversation_id": self.options.conversation_id,
            "status": self.status.value,
            "message_count": len(self.state.messages),
        }

    def _meta(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "conversation_id": self.options.conversation_id,
            "status": self.status.value,
            **self.options.metadata,
        }

    # -- the mailbox -------------------------------------------------------------------------

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue an internal message (no reply)."""
        if self._closed:
            return
        self._mailbox.append((fn, args, None))
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the mailbox and return its result.

        Raises:
            AgentNotRunning: the server stopped (before or while the call waited).
        """
        if self._closed:
            raise AgentNotRunning(f"agent {self.agent_id!r} is not running; start it again")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._mailbox.append((fn, args, future))
        self._wake()
        return await future

    # -- activity and timers (L20–L26) ---------------------------------------------------------

    def touch(self) -> None:
        """Record activity: the inactivity deadline moves to now + timeout (O(1))."""
        self._last_activity = self._loop.time()
        if self._inactivity_handle is None:
            self._arm_inactivity()

    def _arm_inactivity(self) -> None:
        timeout = self.options.inactivity_timeout
        if timeout is None or self._closed or self.status is Status.RUNNING:
            return
        self._inactivity_handle = self._loop.call_at(
            self._last_activity + timeout, self._inactivity_due
        )

    def _inactivity_due(self) -> None:
        self._inactivity_handle = None
        timeout = self.options.inactivity_timeout
        if timeout is None or self._closed or self.status is Status.RUNNING:
            return  # a run is activity; the timer restarts when it ends (L22)
        if self._loop.time() >= self._last_activity + timeout:
            self._post(self._stop_if_inactive)
        else:
            self._arm_inactivity()

    def _stop_if_inactive(self) -> None:
        timeout = self.options.inactivity_timeout
        if timeout is None or self.status is Status.RUNNING:
            return
        if self._loop.time() < self._last_activity + timeout:
            self._arm_inactivity()  # activity arrived while this message waited
            return
        raise _StopRequest("inactivity")

    def inactivity_remaining(self) -> float | None:
        timeout = self.options.inactivity_timeout
        if timeout is None or self.status is Status.RUNNING:
            return None
        return max(0.0, self._last_activity + timeout - self._loop.time())

    def _arm_interval_save(self) -> None:
        auto_save = self.options.auto_save
        if auto_save is None or auto_save.interval is None or self._closed:
            return
        self._save_handle = self._loop.call_later(auto_save.interval, self._interval_due)

    def _interval_due(self) -> None:
        self._save_handle = None
        self._request_save("auto_save.interval")
        self._arm_interval_save()

    # -- presence (L30–L36) ----------------------------------------------------------------

    def _no_viewers(self) -> None:
        self._post(self._stop_if_no_viewers)

    async def _stop_if_no_viewers(self) -> None:
        viewers = self._viewers
        if viewers is None:
            return
        if viewers.viewer_count == 0 and self.status not in _KEEP_WITH_NO_VIEWERS:
            raise _StopRequest("no_viewers")
        # Someone came back while the notice waited in the mailbox. A watch fires once, so a
        # fresh one takes over; it starts a new grace period when the condition holds again.
        await viewers.aclose()
        self._viewers = ViewerWatch(viewers.tracking, on_no_viewers=self._no_viewers)
        self._viewers.agent_status_changed(self.status)
        await self._viewers.start()

    # -- state, events, saving ---------------------------------------------------------------

    def _set_state(self, state: State, new_messages: Sequence[BaseMessage] = ()) -> None:
        self.state = state
        self._version += 1
        if new_messages and self.options.display_message_persistence is not None:
            self._save_display_messages(new_messages)
        save_message = self.options.save_new_message
        if save_message is not None:
            conversation_id = self.options.conversation_id
            for message in new_messages:
                self._saver.submit(
                    "save_new_message", _bind(save_message, conversation_id, message)
                )

    def _set_status(self, status: Status, data: Any = None) -> None:
        self.status = status
        self.publisher.publish(StatusChanged(status=status, data=data))
        if self._viewers is not None:
            self._viewers.agent_status_changed(status)

    def _request_save(self, operation: str, *, force: bool = False) -> None:
        auto_save = self.options.auto_save
        if auto_save is None or (not force and self._version == self._saved_version):
            return
        callback = auto_save.callback

        async def save() -> None:
            version = self._version
            await callback(self.agent_id, self.state.to_dict())
            self._saved_version = max(self._saved_version, version)

        self._saver.submit(operation, save, coalesce=True)

    # Display messages (S2): submitted in order, saved off the hot path, each save broadcast.

    def _display(self, operation: str, job: Callable[[Any, str], Awaitable[None]]) -> None:
        store = self.options.display_message_persistence
        conversation_id = self.options.conversation_id
        if store is None or conversation_id is None:
            return
        self._saver.submit(operation, lambda: job(store, conversation_id))

    def _save_display_messages(self, messages: Sequence[BaseMessage]) -> None:
        scope = self.options.scope

        async def save(store: Any, conversation_id: str) -> None:
            rows = [row for m in messages for row in display_messages_for(conversation_id, m)]
            saved = await store.append_display_messages(scope, conversation_id, rows)
            for row in saved:
                if not self.publisher.closed:
                    self.publisher.publish(DisplayMessageSaved(display_message=row.to_dict()))
            for message in messages:
                if isinstance(message, ToolMessage):
                    await store.update_tool_call_status(
                        scope, conversation_id, message.tool_call_id, tool_result_status(message)
                    )

        self._display("display_messages.append", save)

    def _display_interrupt(self, interrupt: Interrupt) -> None:
        scope = self.options.scope

        async def mark(store: Any, conversation_id: str) -> None:
            for request in interrupt.action_requests:
                await store.update_tool_call_status(
                    scope, conversation_id, request.tool_call_id, "interrupted"
                )

        self._display("display_messages.interrupted", mark)

    def _display_decisions(self, interrupt: Interrupt, decisions: Sequence[Decision]) -> None:
        scope = self.options.scope

        async def record(store: Any, conversation_id: str) -> None:
            for request, decision in zip(interrupt.action_requests, decisions, strict=True):
                await store.record_decision(
                    scope, conversation_id, request.tool_call_id, _decision_dict(decision)
                )

        self._display("display_messages.decision", record)

    def _request_persist(self, point: str) -> None:
        """Save through the agent persistence at a lifecycle point (S1b), as a delta.

        The snapshot is the state *at this point* (a completed run, an interrupt...), not
        whatever the state has become when the save runs: storage only ever holds states a
        lifecycle point produced. Requests made while a save is queued replace its snapshot.
        """
        persistence = self.options.agent_persistence
        if persistence is None or self._version == self._persisted[1]:
            return
        self._persist_next = (self.state, self._version)

        async def persist() -> None:
            pending = self._persist_next
            if pending is None:
                return
            self._persist_next = None
            state, version = pending
            base_messages, base_version = self._persisted
            if base_version is not None and version <= base_version:
                return
            snapshot = StateSnapshot(
                state=state,
                version=version,
                base_version=base_version,
                unchanged_prefix=_common_prefix(base_messages, state.messages),
            )
            started = time.perf_counter()
            written = await persistence.save_state(
                self.options.scope, self.options.conversation_id, snapshot
            )
            if not written:
                raise StaleState(
                    f"a newer state of conversation {self.options.conversation_id!r} is stored "
                    f"(this server holds version {version}); another server may own it"
                )
            self._persisted = (state.messages, version)
            title = conversation_title(state)
            conversation_id = self.options.conversation_id
            if (
                title != self._stored_title
                and conversation_id is not None
                and isinstance(persistence, ConversationStore)
            ):
                await persistence.update_conversation(
                    self.options.scope, conversation_id, title=title
                )
                self._stored_title = title
            telemetry.execute(
                ("sagents", "persistence", "save"),
                {
                    "duration": time.perf_counter() - started,
                    "messages_written": len(state.messages) - snapshot.unchanged_prefix,
                },
                {**self._meta(), "version": version, "message_count": len(state.messages)},
            )

        self._saver.submit("agent_persistence.save", persist, coalesce=True)

    def _report_persistence_error(self, operation: str, error: BaseException) -> None:
        if self.publisher.wants_debug():
            self.publisher.publish(
                PersistenceError(operation=operation, error=f"{type(error).__name__}: {error}")
            )
        telemetry.execute(
            ("sagents", "persistence", "error"),
            {"system_time": time.time()},
            {**self._meta(), "operation": operation, "error": repr(error)},
        )

    def middleware_context(self) -> MiddlewareContext:
        """What this agent's middleware get from ``get_middleware_context()`` (made on first
        use: most agents never need one outside a run)."""
        if self._middleware_context is None:
            self._middleware_context = MiddlewareContext(
                self.agent_id,
                services=self._services,
                emit=self.emit,
                send=lambda key, message: self._post(self._middleware_message, key, message),
                # Through the mailbox: a hook asks before it returns the state to save.
                persist=lambda point: self._post(self._request_persist, point),
            )
        return self._middleware_context

    async def _middleware_message(self, key: str, message: Any) -> None:
        # Sent by a middleware's background work: a failure is logged, never a crash.
        try:
            await self.do_send_to_middleware(key, message)
        except Exception:
            _log.exception("agent %r: message to middleware %r failed", self.agent_id, key)

    # EventSink for runs --------------------------------------------------------------------

    @property
    def debug(self) -> bool:
        return self.publisher.wants_debug()

    def emit(self, event: Event) -> None:
        self.publisher.publish(event)

    def state_changed(self, state: State, new_messages: Sequence[BaseMessage]) -> None:
        self._set_state(state, new_messages)

    # -- commands (run inside the mailbox) ---------------------------------------------------

    def _start(self, decisions: Sequence[Decision | Mapping[str, Any]] | None = None) -> None:
        run = Run(  # validates the decisions before anything changes
            self.agent,
            self._unpaused(self.state),
            sink=self,
            decisions=decisions,
            services=self._services,
            metadata=self._run_meta,
            middleware_context=self.middleware_context(),
        )
        if run.state is not self.state:
            self._set_state(run.state)
        self._run = run
        self._set_status(Status.RUNNING)
        if self._inactivity_handle is not None:
            self._inactivity_handle.cancel()
            self._inactivity_handle = None
        self._run_task = self._loop.create_task(
            self._drive(run), context=None if self._context is None else self._context.copy()
        )

    @staticmethod
    def _unpaused(state: State) -> State:
        # A run continues a paused agent (L8): the persisted mark goes.
        if RUNTIME_KEY not in state.metadata:
            return state
        return state.replace(metadata={k: v for k, v in state.metadata.items() if k != RUNTIME_KEY})

    async def _drive(self, run: Run) -> RunResult:
        try:
            result: RunResult = await run.execute()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The loop turns step failures into results; this is a failure around it.
            error = RunError(f"the run crashed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            result = Failed(state=run.state, error=error)
        self._post(self._finish, run, result)
        return result  # also kept on the task, for a stop that overtakes the message

    async def _finish(self, run: Run, result: RunResult) -> None:
        if run is not self._run:
            return  # a cancelled run's late result
        self._run = None
        self._run_task = None
        self._last_activity = self._loop.time()
        # Handled before the status changes, so whoever sees the new status sees their effect.
        await self._deliver_deferred()
        match result:
            case Done():
                self._set_status(Status.IDLE)
            case Interrupted(interrupt=interrupt):
                self._set_status(Status.INTERRUPTED, interrupt)
                self._display_interrupt(interrupt)
            case Failed(error=error):
                self._set_status(Status.ERROR, str(error))
        if self._queued:
            self._run_queued()
        auto_save = self.options.auto_save
        if self.status is not Status.RUNNING:
            self._request_persist(self.status.value)
            if auto_save is not None and auto_save.on_idle:
                self._request_save("auto_save.on_idle")
        self._arm_inactivity()

    def _run_queued(self) -> None:
        messages, self._queued = self._queued, []
        if self.status is Status.INTERRUPTED:
            self._dismiss_interrupt()
        self._set_state(self.state.append(*messages), messages)
        if self._follow_ups >= self.options.max_follow_ups:
            _log.warning(
                "agent %r reached max_follow_ups=%d; queued messages were added without a run",
                self.agent_id,
                self.options.max_follow_ups,
            )
            return
        self._follow_ups += 1
        self._start()

    def _dismiss_interrupt(self) -> None:
        state, results = dismiss_interrupt(self.state)
        self._set_state(state, results)
        self._set_status(Status.IDLE)

    def do_add_message(self, message: BaseMessage, run: bool) -> None:
        if not isinstance(message, BaseMessage):
            raise TypeError(f"add_message takes a langchain message, got {type(message).__name__}")
        self.touch()
        if self.status is Status.RUNNING:
            self._queued.append(message)
            return
        if self.status is Status.INTERRUPTED:
            self._dismiss_interrupt()
        self._set_state(self.state.append(message), (message,))
        if run:
            self._follow_ups = 0
            self._start()

    async def do_send_to_middleware(self, key: str, message: Any) -> None:
        middleware = {mw.key: mw for mw in self.agent.middleware_instances}
        if key not in middleware:
            raise InvalidTransition(
                f"agent {self.agent_id!r} has no middleware with key {key!r}; "
                f"keys: {sorted(middleware)}"
            )
        if self.status is Status.RUNNING:
            # The run owns the state until it ends; the message is handled right after.
            self._deferred.append((key, message))
            return
        await self._handle_middleware_message(middleware[key], message)

    async def _handle_middleware_message(self, mw: Middleware, message: Any) -> None:
        set_middleware_context(self.middleware_context())
        changed = await mw.handle_message(message, self.state)
        if changed is not None:
            self._set_state(changed)

    async def _deliver_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        middleware = {mw.key: mw for mw in self.agent.middleware_instances}
        for key, message in deferred:
            try:
                await self._handle_middleware_message(middleware[key], message)
            except Exception:
                _log.exception("agent %r: %s.handle_message failed", self.agent_id, key)

    def do_update_context(self, context: contextvars.Context) -> None:
        self._context = context
        apply_context(context)

    def do_execute(self) -> None:
        self.touch()
        if self.status is Status.RUNNING:
            raise InvalidTransition(f"agent {self.agent_id!r} is already running")
        if self.status is Status.INTERRUPTED:
            raise InvalidTransition(
                f"agent {self.agent_id!r} is waiting for approval: resume it with decisions"
            )
        self._follow_ups = 0
        self._start()

    def do_resume(self, decisions: Sequence[Decision | Mapping[str, Any]]) -> None:
        self.touch()
        if self.status is not Status.INTERRUPTED:
            raise InvalidTransition(
                f"agent {self.agent_id!r} is {self.status.value}, not interrupted: "
                "nothing to resume"
            )
        interrupt = self.state.interrupt
        self._start(decisions)  # raises InvalidDecision with nothing changed
        if interrupt is not None and self._run is not None and self._run.decisions:
            self._display_decisions(interrupt, self._run.decisions)
        self._follow_ups = 0

    async def do_cancel(self) -> None:
        task = self._run_task
        if self.status is not Status.RUNNING or task is None:
            raise InvalidTransition(
                f"agent {self.agent_id!r} is {self.status.value}: there is no run to cancel"
            )
        await self._cancel_run(task)

    async def _cancel_run(
        self, task: asyncio.Task[RunResult], status: Status = Status.CANCELLED
    ) -> None:
        run = self._run
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if run is not self._run or not task.cancelled():
            # The run finished before the cancel reached it: its result, already posted to the
            # mailbox, decides the status.
            return
        self._run = None
        self._run_task = None
        if self._queued:
            # Sent during the run, so they precede anything sent later: keep them, in order,
            # without starting a run the user just cancelled (L5, L7).
            messages, self._queued = self._queued, []
            self._set_state(self.state.append(*messages), messages)
        self._set_status(status)
        self._request_persist(status.value)
        self.touch()

    async def _finish_now(self, run: Run, task: asyncio.Task[RunResult]) -> None:
        """Report how a run ended when it finished before a stop could cancel it: its result
        message waits in the mailbox behind the stop and would never be processed."""
        # The stop keeps queued messages, but must not start a follow-up run for them.
        queued, self._queued = self._queued, []
        await self._finish(run, task.result())  # the late mailbox message then finds no run
        self._queued = queued

    async def do_pause(self) -> None:
        """Infrastructure pause (L8): stop any run, mark the state paused, save it.

        The mark is persisted with the state, so a server restarted from it (on this node or
        another) starts ``paused`` and ``execute()`` continues the conversation.
        """
        if self.status is Status.INTERRUPTED:
            raise InvalidTransition(
                f"agent {self.agent_id!r} is waiting for approval, which already survives a "
                "restart: there is nothing to pause"
            )
        if self._run_task is not None:
            await self._cancel_run(self._run_task, Status.PAUSED)
        self._set_state(self.state.with_metadata(RUNTIME_KEY, {"paused": True}))
        if self.status is not Status.PAUSED:
            self._set_status(Status.PAUSED)
        self._request_persist("paused")
        self._request_save("auto_save.pause", force=True)
        await self._saver.drain(self.options.shutdown_timeout)

    async def do_stop(self, reason: str) -> None:
        self.shutdown_reason = reason
        if self._run_task is not None:
            await self._cancel_run(self._run_task)
            if self._run is not None and self._run_task is not None:
                await self._finish_now(self._run, self._run_task)
        if self._queued:
            messages, self._queued = self._queued, []
            self._set_state(self.state.append(*messages), messages)
        self._request_persist(f"shutdown ({reason})")
        self._request_save(f"auto_save.shutdown ({reason})", force=True)
        if not await self._saver.drain(self.options.shutdown_timeout):
            _log.error("agent %r: saves did not finish within shutdown_timeout", self.agent_id)
        raise _Stop

    def do_replace_state(self, state: State, agent: Agent | None) -> None:
        if self.status is Status.RUNNING:
            raise InvalidTransition(f"agent {self.agent_id!r} is running: cancel it first")
        if agent is not None:
            if agent.agent_id != self.agent_id:
                raise InvalidTransition("update_agent_and_state cannot change the agent_id")
            self.agent = agent
        state = state.replace(agent_id=self.agent_id)
        self._set_state(state)
        self.touch()
        self.publisher.publish(StateRestored(state=state))
        status = Status.INTERRUPTED if state.interrupt is not None else Status.IDLE
        if status is not self.status:
            self._set_status(status, state.interrupt)

    # -- reads (answered directly) -----------------------------------------------------------

    def info(self) -> AgentInfo:
        return AgentInfo(
            agent_id=self.agent_id,
            status=self.status,
            message_count=len(self.state.messages),
            has_interrupt=self.state.interrupt is not None,
            uptime=self._loop.time() - self._started_at,
            conversation_id=self.options.conversation_id,
            subscriber_count=self.publisher.subscriber_count,
            viewer_count=0 if self._viewers is None else self._viewers.viewer_count,
            inactivity_remaining=self.inactivity_remaining(),
            queued_messages=len(self._queued),
            todo_count=len(self.state.todos),
            metadata=dict(self.options.metadata),
            scope=self.options.scope,
        )

    def subscribe(self, channel: str, after_seq: int | None) -> Subscription:
        if self._closed:
            raise AgentNotRunning(f"agent {self.agent_id!r} is not running")
        return self.publisher.subscribe(channel, after_seq=after_seq)  # type: ignore[arg-type]

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_ended(self) -> None:
        """Return once the server has left the registry and closed its subscriptions."""
        await self._ended.wait()


class StaleState(SagentsError):
    """The agent persistence holds a newer state than this server: it was not overwritten."""


def _decision_dict(decision: Decision) -> dict[str, Any]:
    match decision:
        case Edit(arguments=arguments):
            return {"type": "edit", "arguments": arguments}
        case Reject(message=message):
            return {"type": "reject", "message": message}
        case _:
            return {"type": "approve"}


def _common_prefix(before: Sequence[BaseMessage], after: Sequence[BaseMessage]) -> int:
    # States are immutable values: an unchanged message is the very same object, so identity
    # finds the unchanged prefix in a pointer comparison per message, without serialising.
    n = min(len(before), len(after))
    for i in range(n):
        if before[i] is not after[i]:
            return i
    return n


#: Metadata key of the runtime's own persisted marks (``{"paused": true}``).
RUNTIME_KEY = "sagents.runtime"


def conversation_title(state: State) -> str | None:
    """The title the ``ConversationTitle`` middleware stored in the state, if any."""
    data = state.metadata.get(TITLE_KEY)
    title = data.get("title") if isinstance(data, Mapping) else None
    return title if isinstance(title, str) and title else None


def _is_paused(state: State) -> bool:
    mark = state.metadata.get(RUNTIME_KEY)
    return isinstance(mark, dict) and bool(mark.get("paused"))


def _initial_status(state: State) -> Status:
    if state.interrupt is not None:
        return Status.INTERRUPTED
    return Status.PAUSED if _is_paused(state) else Status.IDLE


class _StopRequest(SagentsError):
    """Raised by an internal message to turn it into a graceful stop with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _bind(
    fn: Callable[[str | None, BaseMessage], Awaitable[None]],
    conversation_id: str | None,
    message: BaseMessage,
) -> Callable[[], Awaitable[None]]:
    return lambda: fn(conversation_id, message)
