"""``AgentServer``: the actor that runs one agent (rules L1–L8, L14, L20–L26, L40–L49).

One server per agent id, with one mailbox and one status. Every command (add a message, execute,
resume, cancel, stop, replace the state) is a message processed in order by the server's own
task, so commands never interleave halfway; reads (status, state, info) are answered directly
because they change nothing. The server is deliberately small: the loop that talks to the model
is :class:`~sagents.execution.Run`, events go through the :class:`Publisher`, every save through
the :class:`Recorder`, viewers through a :class:`ViewerWatch`.

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
import dataclasses
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from langchain_core.messages import BaseMessage

from sagents import telemetry
from sagents._errors import (
    AgentNotRunning,
    InvalidDecision,
    InvalidTransition,
    RunError,
    StateConflict,
)
from sagents._interrupt import Decision
from sagents._state import State
from sagents._status import Status
from sagents.events import AgentShutdown, Event, SaveRefused, StateRestored, StatusChanged
from sagents.execution._agent import Agent
from sagents.execution._containment import (
    cancel_requests,
    contained,
    describe,
    reraise_cancellation,
)
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import MiddlewareContext, set_middleware_context
from sagents.execution._result import Done, Failed, Interrupted, RunResult
from sagents.execution._run import Run, answer_pending_calls, dismiss_interrupt
from sagents.runtime._context import apply_context
from sagents.runtime._info import AgentInfo
from sagents.runtime._options import AgentOptions
from sagents.runtime._presence import ViewerWatch
from sagents.runtime._publisher import Publisher, Subscription
from sagents.runtime._recorder import Recorder, common_prefix

if TYPE_CHECKING:
    from sagents.runtime._ownership import Ownership

    class ServerOwner(Protocol):
        """What a server reports to: the runtime's unit of the agent."""

        def server_ended(self, server: AgentServer, reason: str) -> None: ...

        def keep(self, state: State, version: int) -> None:
            """The state a restart after a crash resumes from."""
            ...

        def keep_display(self, operations: list[Any]) -> None:
            """Display operations a crashed server could not write, for its restart."""
            ...


__all__ = ["AgentServer"]

_log = logging.getLogger("sagents.server")

# Presence never ends these (L31): a run in progress, a pending approval, a node drain (L8).
_KEEP_WITH_NO_VIEWERS = frozenset({Status.RUNNING, Status.INTERRUPTED, Status.PAUSED})


_NO_SERVICES: Mapping[str, Any] = MappingProxyType({})
# The inactivity timer only posts a message (which runs in the server's context): one shared,
# empty context spares a copy of the caller's per timer handle.
_TIMER_CONTEXT = contextvars.Context()

#: A mailbox message: the function to run, its arguments, and the caller's future (None for an
#: internal message, whose failure is a crash).
_Message: TypeAlias = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any] | None"]


class _Stop(Exception):
    """Ends the mailbox loop after a graceful stop."""


#: Numbers server instances (``AgentInfo.instance``).
_INSTANCES = itertools.count(1)


class AgentServer:
    """The actor behind an :class:`~sagents.runtime.AgentHandle`; not used directly.

    Its life, driven by its :class:`~sagents.runtime._unit.AgentUnit`: :meth:`start` (synchronous;
    says whether :meth:`initialise` must run the async part), registration, :meth:`started`, then
    messages until a stop or a crash, after which the unit is told through ``server_ended``.
    """

    __slots__ = (
        "_context",
        "_deferred",
        "_end_waiters",
        "_ended",
        "_follow_ups",
        "_inactivity_handle",
        "_last_activity",
        "_last_result",
        "_live",
        "_loop",
        "_mailbox",
        "_middleware_context",
        "_publisher",
        "_queued",
        "_recorder",
        "_run",
        "_run_meta",
        "_run_task",
        "_services",
        "_started_at",
        "_task",
        "_task_context",
        "_unit",
        "_viewers",
        "agent",
        "agent_id",
        "closed",
        "instance",
        "options",
        "shutdown_reason",
        "state",
        "status",
    )

    def __init__(
        self,
        agent: Agent,
        state: State,
        options: AgentOptions,
        *,
        unit: ServerOwner | None = None,
        services: Mapping[str, Any] | None = None,
        context: contextvars.Context | None = None,
        version: int | None = None,
        restart: bool = False,
        ownership: Ownership | None = None,
        display_log: Sequence[Any] = (),
    ) -> None:
        agent_id = agent.agent_id
        self.agent = agent
        self.agent_id = agent_id
        self.instance = next(_INSTANCES)
        self.options = options
        self.state = state if state.agent_id == agent_id else _with_agent_id(state, agent_id)
        self.status = _initial_status(self.state)
        self._publisher: Publisher | None = None  # made by the first subscriber or event
        self._unit = unit
        self._services: Mapping[str, Any] = services if services is not None else _NO_SERVICES
        self._run_meta: dict[str, Any] | None = None
        loop = self._loop = asyncio.get_running_loop()
        # The mailbox exists while messages wait; the task draining it exists while it is not
        # empty (see _enqueue). An idle server has neither.
        self._mailbox: deque[_Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._task_context: contextvars.Context | None = None
        self._live = False  # registered and started: messages may be processed
        self.closed = False
        self._ended = False
        self._end_waiters: list[asyncio.Future[None]] | None = None
        self._run: Run | None = None
        self._run_task: asyncio.Task[RunResult] | None = None
        self._queued: list[BaseMessage] | tuple[()] = ()
        self._deferred: list[tuple[str, Any]] | tuple[()] = ()
        self._follow_ups = 0
        self._started_at = self._last_activity = loop.time()
        self._inactivity_handle: asyncio.TimerHandle | None = None
        self._recorder = Recorder(
            self,
            options,
            self.state,
            options.state_version if version is None else version,
            ownership=ownership,
            restart=restart,
            display_log=display_log,
        )
        self._last_result: Any = None
        self._viewers: ViewerWatch | None = None
        self._middleware_context: MiddlewareContext | None = None
        self._context = options.context if context is None else context
        self.shutdown_reason: str | None = None

    @property
    def publisher(self) -> Publisher:
        """The server's event fan-out, made on first use (an idle agent nobody watches has
        none)."""
        publisher = self._publisher
        if publisher is None:
            publisher = self._publisher = Publisher(
                self.agent_id,
                replay_size=self.options.replay_size,
                queue_size=self.options.queue_size,
            )
            if self._ended:
                publisher.close()  # as if it had been closed with the server
        return publisher

    # -- lifecycle (driven by the unit) ---------------------------------------------------------

    def start(self) -> bool:
        """The synchronous part of starting; True if :meth:`initialise` must run next (presence
        tracking or ``on_server_start`` hooks), before the server is registered."""
        for subscriber in self.options.initial_subscribers:
            subscriber.attach(self.publisher)
        presence = self.options.presence
        if (presence is not None and presence.enabled) or self._recorder.needs_claim:
            return True
        return any(mw.overrides("on_server_start") for mw in self.agent.middleware_instances)

    async def initialise(self) -> None:
        """Claim the conversation in storage (its lease, and the newest stored state), start
        presence tracking and run the ``on_server_start`` hooks, in the server's own context
        (as every message is). On failure nothing of the server is left running.

        Raises:
            Exception: whatever a hook or the presence raised.
        """
        # contained(): a hook's SystemExit must fail this start, not leave the task (asyncio
        # would re-raise it out of the event loop, ending every agent of the process).
        task = self._loop.create_task(contained(self._initialise()), context=self._own_context())
        self._task = task  # messages posted by hooks wait for started()
        try:
            await task
        except BaseException:
            await self.abort()
            raise
        finally:
            if self._task is task:
                self._task = None

    async def _initialise(self) -> None:
        stored = await self._recorder.claim()
        if stored is not None:
            # Storage is ahead of the state this server was given (a crash restart, or another
            # process saved between the load and the lease): it continues from storage.
            self.state = _with_agent_id(stored.state, self.agent_id)
            self.status = _initial_status(self.state)
        presence = self.options.presence
        if presence is not None and presence.enabled:
            self._viewers = ViewerWatch(presence, on_no_viewers=self._no_viewers)
            await self._viewers.start()
        for mw in self.agent.middleware_instances:
            if mw.overrides("on_server_start"):
                set_middleware_context(self.middleware_context())
                changed = await mw.on_server_start(self.state)
                if changed is not None:
                    self._set_state_from_hook(changed)

    def started(self) -> None:
        """Registered: arm the timers, report the start, process what is waiting."""
        self._live = True
        self._arm_inactivity()
        self._recorder.go_live()
        self._recorder.arm_interval()
        if self._viewers is not None:
            self._viewers.agent_status_changed(self.status)
        if telemetry.has_handlers(telemetry.AGENT_START):
            # In the server's context, as if the server's own task reported it.
            self._own_context().run(
                telemetry.execute,
                telemetry.AGENT_START,
                {"system_time": time.time(), "duration": self._loop.time() - self._started_at},
                self.telemetry_metadata(),
            )
        if self._mailbox and self._task is None:
            self._task = self._loop.create_task(self._drain(), context=self._own_context())

    async def abort(self) -> None:
        """Undo a start that failed before registration: close what was opened, silently."""
        self.closed = True
        try:
            if self._viewers is not None:
                await self._viewers.aclose()
            if self._middleware_context is not None:
                await self._middleware_context.aclose()  # what the hooks spawned
            await self._recorder.aclose()
        except Exception:
            _log.exception("agent %r: cleaning up a failed start raised", self.agent_id)
        self._flush_mailbox("it failed to start")
        self.publisher.close()
        self._mark_ended()

    async def stop(self, reason: str = "shutdown") -> None:
        """Stop gracefully (a final save, ``AgentShutdown``); return once it has ended."""
        if not self.closed and not self.stop_now(reason):
            with contextlib.suppress(AgentNotRunning):
                await self.call(self.do_stop, reason)
        await self.wait_ended()

    def stop_now(self, reason: str) -> bool:
        """Stop at once if a graceful stop has nothing to wait for (see :meth:`_quiet`);
        False, with nothing done, otherwise."""
        if self.closed or not self._quiet():
            return False
        self._own_context().run(self._stop_now, reason)
        return True

    async def kill(self) -> None:
        """End at once: cancel whatever the server is doing (a graceful stop took too long)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        if not self.closed:
            await self._end(self.shutdown_reason or "shutdown")
        await self.wait_ended()

    def _own_context(self) -> contextvars.Context:
        # The context every message, hook and timer of this server runs in (the server's
        # "task" context): a copy of the start context, kept across message bursts so that
        # update_context() and hooks' context variables persist as in one long-lived task.
        context = self._task_context
        if context is None:
            context = self._task_context = (
                contextvars.copy_context() if self._context is None else self._context.copy()
            )
        return context

    async def _drain(self) -> None:
        """Process the mailbox until it is empty, then end (one task per burst)."""
        try:
            stopped = await self._process_mailbox()
        except asyncio.CancelledError:
            # Cancelled by kill() (a stop that took too long) or the loop closing.
            await self._end(self.shutdown_reason or "shutdown")
            raise
        except BaseException as exc:
            _log.error("agent server %r crashed", self.agent_id, exc_info=exc)
            await self._end("crash")
            return  # the unit restarts the server; the error is logged, never re-raised
        if stopped:
            await self._end(self.shutdown_reason or "manual")

    async def _process_mailbox(self) -> bool:
        """One message at a time, in order; True once stopped, False once the mailbox is empty."""
        mailbox = self._mailbox
        while mailbox:
            fn, args, future = mailbox.popleft()
            if future is not None and future.cancelled():
                continue
            try:
                result = fn(*args)
                if asyncio.iscoroutine(result):
                    result = await result
            except _Stop:
                if future is not None and not future.done():
                    future.set_result(None)
                return True
            except _StopRequest as request:
                try:
                    await self.do_stop(request.reason)
                except _Stop:
                    return True
            except Exception as exc:
                if future is None:
                    raise  # an internal message failed: that is a crash
                if not future.done():
                    future.set_exception(exc)
                continue
            except BaseException:
                # Killed (a stop that took too long) while handling it: its caller must not
                # wait forever.
                if future is not None and not future.done():
                    future.set_exception(
                        AgentNotRunning(f"agent {self.agent_id!r} was stopped during this call")
                    )
                raise
            if future is not None and not future.done():
                future.set_result(result)
        # Empty: no await between the check above and here, so a message posted from now on
        # finds no task and starts the next one.
        self._mailbox = None
        self._task = None
        return False

    async def _end(self, reason: str) -> None:
        """Leave the registry and close every subscription; runs exactly once."""
        if self.closed:
            return
        self._close()
        try:
            if self._run_task is not None and not self._run_task.done():
                self._run_task.cancel()
                await asyncio.gather(self._run_task, return_exceptions=True)
            if self._viewers is not None:
                await self._viewers.aclose()
            self._flush_mailbox(f"stopped ({reason})")
            if self._middleware_context is not None:
                await self._middleware_context.aclose()
            # A graceful stop drained its saves already; a crash still saves what its last
            # lifecycle points produced (the restart resumes from it), a kill gives up.
            drain = self.options.shutdown_timeout if reason == "crash" else 0.0
            await self._recorder.aclose(drain=drain)
            if reason == "crash" and self._unit is not None:
                # What the drain could not write, the restarted server does.
                self._unit.keep_display(self._recorder.unwritten_display())
        finally:
            # Even if cancelled meanwhile: subscribers, the unit and waiters must hear of it.
            self._ended_now(reason)

    def _close(self) -> None:
        self.closed = True
        if self._inactivity_handle is not None:
            self._inactivity_handle.cancel()
            self._inactivity_handle = None
        self._recorder.close_timers()

    def _ended_now(self, reason: str) -> None:
        self._flush_mailbox(f"stopped ({reason})")
        publisher = self._publisher
        if publisher is not None:  # else nobody ever subscribed: nobody can see a final event
            publisher.close(AgentShutdown(reason=reason, metadata=self._shutdown_metadata()))
        self._mark_ended()
        if self._unit is not None:
            self._unit.server_ended(self, reason)
        event = telemetry.AGENT_CRASH if reason == "crash" else telemetry.AGENT_STOP
        if telemetry.has_handlers(event):
            telemetry.execute(
                event,
                {"duration": self._loop.time() - self._started_at},
                {**self.telemetry_metadata(), "reason": reason},
            )

    def _quiet(self) -> bool:
        """Whether a graceful stop has nothing to wait for: no message or run in progress, no
        save to make or finish, no presence, no hook resources. The usual idle agent, which
        then stops without a task (an inactivity expiry of a million agents allocates none)."""
        return (
            self._live
            and self._task is None
            and not self._mailbox
            and self._run_task is None
            and self._viewers is None
            and self._middleware_context is None
            and self._recorder.quiet
        )

    def _stop_now(self, reason: str) -> None:
        """``do_stop`` and ``_end`` for a :meth:`_quiet` server, where neither would await."""
        self.shutdown_reason = reason
        self._close()
        self._ended_now(reason)

    def _flush_mailbox(self, why: str) -> None:
        mailbox, self._mailbox = self._mailbox, None
        while mailbox:
            _, _, future = mailbox.popleft()
            if future is not None and not future.done():
                future.set_exception(AgentNotRunning(f"agent {self.agent_id!r} {why}"))

    def _mark_ended(self) -> None:
        self._ended = True
        waiters, self._end_waiters = self._end_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _shutdown_metadata(self) -> dict[str, Any]:
        return {
            "conversation_id": self.options.conversation_id,
            "status": self.status.value,
            "message_count": len(self.state.messages),
        }

    def telemetry_metadata(self) -> dict[str, Any]:
        """The metadata of this agent's telemetry events."""
        return {
            "agent_id": self.agent_id,
            "conversation_id": self.options.conversation_id,
            "status": self.status.value,
            **self.options.metadata,
        }

    # -- the mailbox -------------------------------------------------------------------------

    def _enqueue(self, message: _Message) -> None:
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        mailbox.append(message)
        if self._task is None and self._live:
            self._task = self._loop.create_task(self._drain(), context=self._own_context())

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue an internal message (no reply)."""
        if self.closed:
            return
        self._enqueue((fn, args, None))

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the mailbox and return its result.

        Raises:
            AgentNotRunning: the server stopped (before or while the call waited).
        """
        if self.closed:
            raise AgentNotRunning(f"agent {self.agent_id!r} is not running; start it again")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._enqueue((fn, args, future))
        return await future

    # -- activity and timers (L20–L26) ---------------------------------------------------------

    def touch(self) -> None:
        """Record activity: the inactivity deadline moves to now + timeout (O(1))."""
        self._last_activity = self._loop.time()
        if self._inactivity_handle is None:
            self._arm_inactivity()

    def _arm_inactivity(self) -> None:
        timeout = self.options.inactivity_timeout
        if timeout is None or self.closed or self.status is Status.RUNNING:
            return
        self._inactivity_handle = self._loop.call_at(
            self._last_activity + timeout, self, context=_TIMER_CONTEXT
        )

    def __call__(self) -> None:
        # The inactivity timer's callback is the server itself: a bound method per armed timer
        # would be one more object per idle agent (and for the garbage collector to visit).
        self._inactivity_due()

    def _inactivity_due(self) -> None:
        self._inactivity_handle = None
        timeout = self.options.inactivity_timeout
        if timeout is None or self.closed or self.status is Status.RUNNING:
            return  # a run is activity; the timer restarts when it ends (L22)
        if self._loop.time() >= self._last_activity + timeout:
            if not self.stop_now("inactivity"):
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
        self._recorder.changed(state, new_messages)

    def _set_state_from_hook(self, state: State) -> None:
        """A state a middleware hook returned: messages it appended are new messages like any
        other (saved one by one, shown to the user)."""
        old, new = self.state.messages, state.messages
        appended: Sequence[BaseMessage] = ()
        if len(new) > len(old) and common_prefix(old, new) == len(old):
            appended = new[len(old) :]
        self._set_state(state, appended)

    def _set_status(self, status: Status, data: Any = None) -> None:
        self.status = status
        self.publisher.publish(StatusChanged(status=status, data=data))
        if self._viewers is not None:
            self._viewers.agent_status_changed(status)

    def save_refused(self, conflict: StateConflict) -> None:
        """Storage refused a save (the recorder is fenced): say so, then stop — work done from
        now on could never be saved."""
        if self.closed:
            return
        self._own_context().run(self._report_refusal, conflict)

    def _report_refusal(self, conflict: StateConflict) -> None:
        self.publisher.publish(SaveRefused(reason=conflict.reason, error=str(conflict)))
        self._set_status(Status.ERROR, str(conflict))
        self._post(self._stop_refused)

    def _stop_refused(self) -> None:
        raise _StopRequest("save_refused")

    def checkpointed(self, state: State, version: int) -> None:
        if self._unit is not None:
            self._unit.keep(state, version)

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
                persist=lambda point: self._post(self._recorder.checkpoint, point),
            )
        return self._middleware_context

    async def _middleware_message(self, key: str, message: Any) -> None:
        # Sent by a middleware's background work: a failure is logged, never a crash.
        since = cancel_requests()
        try:
            await self.do_send_to_middleware(key, message)
        except BaseException as exc:
            reraise_cancellation(exc, since)  # a kill of the server is not the hook's failure
            _log.error(
                "agent %r: message to middleware %r failed", self.agent_id, key, exc_info=exc
            )

    # EventSink for runs --------------------------------------------------------------------

    @property
    def debug(self) -> bool:
        return self._publisher is not None and self._publisher.wants_debug()

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
            metadata=self._run_metadata(),
            middleware_context=self.middleware_context(),
        )
        if run.state is not self.state:
            self._set_state(run.state)
        self._run = run
        if self.status is not Status.RUNNING:  # a follow-up run continues the running one
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
            await self._recorder.caught_up()  # the durability bound: never two turns unsaved
            result: RunResult = await run.execute()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Cancelled. By cancel() or a stop, which handle it themselves; by anyone else
                # too, and then this message is what ends the run (the agent must not stay
                # "running" with no run).
                self._post(self._run_cancelled, run)
                raise
            result = _crashed(run, asyncio.CancelledError("raised inside the run"))
        except BaseException as exc:
            # The loop turns step failures into results; this is a failure around it. Whatever
            # it is (SystemExit from a tool included), it ends this run, never the process and
            # never with the run task gone and the agent "running" forever.
            result = _crashed(run, exc)
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
        follow_up = bool(self._queued) and self._follow_ups < self.options.max_follow_ups
        recorder = self._recorder
        match result:
            case Done(value=value):
                self._last_result = value
                recorder.checkpoint("idle")
                if not follow_up:
                    # A run that continues with queued messages never says idle in between:
                    # a UI treats idle as "done" and would re-enable its input (L7).
                    self._set_status(Status.IDLE, value)
            case Interrupted(interrupt=interrupt):
                self._last_result = None
                self._set_status(Status.INTERRUPTED, interrupt)
                recorder.tool_calls_interrupted(interrupt)
                recorder.checkpoint("interrupted")
            case Failed(error=error):
                self._last_result = None
                # A failure after the model asked for tools leaves calls without results, which
                # providers refuse from then on: each gets an error result.
                answered, results = answer_pending_calls(self.state, f"the run failed: {error}")
                if results:
                    self._set_state(answered, results)
                self._set_status(Status.ERROR, str(error))
                recorder.checkpoint("error")
        if self._queued:
            self._run_queued()
        auto_save = self.options.auto_save
        if self.status is not Status.RUNNING and auto_save is not None and auto_save.on_idle:
            recorder.auto_save("auto_save.on_idle")
        self._arm_inactivity()

    def _run_queued(self) -> None:
        messages, self._queued = self._queued, ()
        follow_up = self._follow_ups < self.options.max_follow_ups
        if self.status is Status.INTERRUPTED:
            self._dismiss_interrupt(announce=not follow_up)
        self._set_state(self.state.append(*messages), messages)
        if not follow_up:
            _log.warning(
                "agent %r reached max_follow_ups=%d; queued messages were added without a run",
                self.agent_id,
                self.options.max_follow_ups,
            )
            if self.status is Status.RUNNING:  # the ended run said nothing yet
                self._set_status(Status.IDLE)
            self._recorder.checkpoint("idle")
            return
        self._follow_ups += 1
        self._start()

    def _dismiss_interrupt(self, *, announce: bool = True) -> None:
        state, results = dismiss_interrupt(self.state)
        self._set_state(state, results)
        if announce:
            self._set_status(Status.IDLE)

    def do_add_message(self, message: BaseMessage, run: bool) -> None:
        if not isinstance(message, BaseMessage):
            raise TypeError(f"add_message takes a langchain message, got {type(message).__name__}")
        self.touch()
        if self.status is Status.RUNNING:
            if isinstance(self._queued, list):
                self._queued.append(message)
            else:
                self._queued = [message]
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
            if isinstance(self._deferred, list):
                self._deferred.append((key, message))
            else:
                self._deferred = [(key, message)]
            return
        await self._handle_middleware_message(middleware[key], message)

    async def _handle_middleware_message(self, mw: Middleware, message: Any) -> None:
        set_middleware_context(self.middleware_context())
        changed = await mw.handle_message(message, self.state)
        if changed is not None:
            self._set_state_from_hook(changed)

    async def _deliver_deferred(self) -> None:
        deferred, self._deferred = self._deferred, ()
        if not deferred:
            return
        middleware = {mw.key: mw for mw in self.agent.middleware_instances}
        for key, message in deferred:
            since = cancel_requests()
            try:
                await self._handle_middleware_message(middleware[key], message)
            except BaseException as exc:
                reraise_cancellation(exc, since)
                _log.error("agent %r: %s.handle_message failed", self.agent_id, key, exc_info=exc)

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
        if decisions is None:  # to a Run, None means "not a resume"
            raise InvalidDecision("decisions must be a list with one decision per pending call")
        interrupt = self.state.interrupt
        self._start(decisions)  # raises InvalidDecision with nothing changed
        if interrupt is not None and self._run is not None and self._run.decisions:
            self._recorder.decisions_recorded(interrupt, self._run.decisions)
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
        self._cancelled(status)

    def _run_cancelled(self, run: Run) -> None:
        """A run task ended cancelled: if nothing handled that (cancel() and stops do), the run
        ends as cancelled."""
        if run is self._run:
            self._cancelled(Status.CANCELLED)

    def _cancelled(self, status: Status) -> None:
        self._run = None
        self._run_task = None
        if self._queued:
            # Sent during the run, so they precede anything sent later: keep them, in order,
            # without starting a run the user just cancelled (L5, L7).
            messages, self._queued = self._queued, ()
            self._set_state(self.state.append(*messages), messages)
        self._set_status(status)
        self._recorder.checkpoint(status.value)
        self.touch()

    async def _finish_now(self, run: Run, task: asyncio.Task[RunResult]) -> None:
        """Report how a run ended when it finished before a stop could cancel it: its result
        message waits in the mailbox behind the stop and would never be processed."""
        # The stop keeps queued messages, but must not start a follow-up run for them.
        queued, self._queued = self._queued, ()
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
        self._recorder.checkpoint("paused")
        self._recorder.auto_save("auto_save.pause", force=True)
        await self._recorder.drain(self.options.shutdown_timeout)

    async def do_stop(self, reason: str) -> None:
        self.shutdown_reason = reason
        if self._run_task is not None:
            await self._cancel_run(self._run_task)
            if self._run is not None and self._run_task is not None:
                await self._finish_now(self._run, self._run_task)
        if self._queued:
            messages, self._queued = self._queued, ()
            self._set_state(self.state.append(*messages), messages)
        self._recorder.checkpoint(f"shutdown ({reason})")
        self._recorder.auto_save(f"auto_save.shutdown ({reason})", force=True)
        if not await self._recorder.drain(self.options.shutdown_timeout):
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
            subscriber_count=self.subscriber_count,
            viewer_count=0 if self._viewers is None else self._viewers.viewer_count,
            inactivity_remaining=self.inactivity_remaining(),
            queued_messages=len(self._queued),
            todo_count=len(self.state.todos),
            metadata=dict(self.options.metadata),
            scope=self.options.scope,
            instance=self.instance,
        )

    @property
    def subscriber_count(self) -> int:
        return 0 if self._publisher is None else self._publisher.subscriber_count

    def subscribe(self, channel: str, after_seq: int | None) -> Subscription:
        if self.closed:
            raise AgentNotRunning(f"agent {self.agent_id!r} is not running")
        return self.publisher.subscribe(channel, after_seq=after_seq)  # type: ignore[arg-type]

    async def wait_ended(self) -> None:
        """Return once the server has left the registry and closed its subscriptions."""
        if self._ended:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        if self._end_waiters is None:
            self._end_waiters = []
        self._end_waiters.append(waiter)
        await waiter

    @property
    def ended(self) -> bool:
        """Whether the server has ended (after its ``AgentShutdown``)."""
        return self._ended

    @property
    def last_result(self) -> Any:
        """The ``until_tool`` result of the last completed run (None without one)."""
        return self._last_result

    def _run_metadata(self) -> dict[str, Any]:
        meta = self._run_meta
        if meta is None:
            meta = self._run_meta = {
                "conversation_id": self.options.conversation_id,
                **self.options.metadata,
            }
        return meta


#: Metadata key of the runtime's own persisted marks (``{"paused": true}``).
RUNTIME_KEY = "sagents.runtime"


def _with_agent_id(state: State, agent_id: str) -> State:
    # State.replace would validate and copy every message again; the fields are already valid
    # and immutable, so the copy shares them (as State.append does).
    new = object.__new__(State)
    for name in _STATE_FIELDS:
        object.__setattr__(new, name, getattr(state, name))
    object.__setattr__(new, "agent_id", agent_id)
    return new


_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(State))


def _is_paused(state: State) -> bool:
    mark = state.metadata.get(RUNTIME_KEY)
    return isinstance(mark, dict) and bool(mark.get("paused"))


def _initial_status(state: State) -> Status:
    if state.interrupt is not None:
        return Status.INTERRUPTED
    return Status.PAUSED if _is_paused(state) else Status.IDLE


class _StopRequest(Exception):
    """Raised by an internal message to turn it into a graceful stop with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _crashed(run: Run, exc: BaseException) -> Failed:
    error = RunError(f"the run crashed: {describe(exc)}")
    error.__cause__ = exc
    _log.error("agent %r: the run crashed", run.agent.agent_id, exc_info=exc)
    return Failed(state=run.state, error=error)
