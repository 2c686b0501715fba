"""``AgentServer``: the actor that runs one agent (docs/runtime.md).

One server per agent id: a mailbox and a status. Every command (add a message, execute, resume,
dismiss, reset, cancel, stop, replace the state: ``_commands.py``) is a message its
:class:`Mailbox` processes in order, so commands never interleave halfway; reads (status,
state, info) are answered directly because they change nothing. The behaviour lives in
collaborators: runs are the :class:`Runner`'s (and the model loop
:class:`~sagents.execution.Run`'s), events go through the :class:`Publisher`, saves through the
:class:`Recorder`, middleware hooks through :class:`MiddlewareHooks`, viewers through a
:class:`ViewerWatch`, the idle deadline through an :class:`InactivityTimer`, a reset through
``_reset.py``. An idle agent has only the server, its recorder and its timer; the others exist
while they have work.

Its life, driven by its :class:`~sagents.runtime._unit.AgentUnit`, is a line of phases::

    STARTING --started()--> LIVE --graceful wind-down--> CLOSED --> ENDING --> ENDED
        `------------- shutdown(graceful=False), a crash, a failed start ---^

Every ending goes through :meth:`AgentServer.shutdown` (or :meth:`~AgentServer.shutdown_nowait`,
its task-free twin for a server with nothing to wait for) and the one ``_end``. A graceful
shutdown first winds down in the mailbox, after the commands already queued: the run is
cancelled, its queued messages kept, the state saved. A server whose start failed ends silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage

from sagents import telemetry
from sagents._errors import AgentNotRunning, StateConflict
from sagents._state import State
from sagents._status import Status
from sagents.events import AgentShutdown, Event, SaveRefused, StatusChanged
from sagents.execution._agent import Agent
from sagents.execution._containment import contained
from sagents.runtime._hooks import MiddlewareHooks, has_stop_hooks
from sagents.runtime._inactivity import InactivityTimer
from sagents.runtime._info import AgentInfo
from sagents.runtime._mailbox import Mailbox
from sagents.runtime._options import AgentOptions
from sagents.runtime._presence import ViewerWatch
from sagents.runtime._publisher import Publisher, Subscription
from sagents.runtime._recorder import Recorder
from sagents.runtime._runner import Runner, initial_status

if TYPE_CHECKING:
    from sagents.runtime._ownership import Ownership
    from sagents.runtime._unit import ServerOwner


__all__ = ["AgentServer"]

_log = logging.getLogger("sagents.server")

# Presence never ends these: a run in progress, a pending approval, a node drain.
_KEEP_WITH_NO_VIEWERS = frozenset({Status.RUNNING, Status.INTERRUPTED, Status.PAUSED})

_NO_SERVICES: Mapping[str, Any] = MappingProxyType({})

# The phases of a server's life (see the module docstring), in order.
_STARTING = 0  # built; start-up may still await (claim, presence, hooks); messages wait
_LIVE = 1  # registered: messages are processed
_CLOSED = 2  # a graceful stop was processed: no more messages, the ending follows at once
_ENDING = 3  # releasing what it holds
_ENDED = 4  # gone: unregistered, subscriptions closed, waiters released

#: Numbers server instances (``AgentInfo.instance``). Each process starts at a random point, so
#: that an agent moved to another process (a distributed backend's host) gets a number no client
#: has seen for it: a client resumes from its last seq only within one instance. Below 2**53, so
#: a browser reads it exactly.
_INSTANCES = itertools.count(1 + secrets.randbelow(1 << 52))


class AgentServer:
    """The actor behind an :class:`~sagents.runtime.AgentHandle`; not used directly.

    Started by its unit: :meth:`start`, :meth:`initialise` if that says so, registration,
    :meth:`started`; it tells the unit how it ended through ``server_ended``.
    """

    __slots__ = (
        "_end_waiters",
        "_hooks",
        "_inactivity",
        "_loop",
        "_mailbox",
        "_phase",
        "_publisher",
        "_runner",
        "_started_at",
        "_task_context",
        "_unit",
        "_viewers",
        "agent",
        "agent_id",
        "context",
        "instance",
        "last_result",
        "options",
        "recorder",
        "services",
        "shutdown_reason",
        "state",
        "status",
        "tool_context",
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
        self.state = state if state.agent_id == agent_id else state._shared(agent_id=agent_id)
        self.status = initial_status(self.state)
        self._phase = _STARTING
        self._unit = unit
        self.services: Mapping[str, Any] = services if services is not None else _NO_SERVICES
        #: The context runs start in (a copy each); ``update_context()`` replaces it.
        self.context = options.context if context is None else context
        self.tool_context: Mapping[str, Any] = options.tool_context
        self._task_context: contextvars.Context | None = None
        self._loop = asyncio.get_running_loop()
        self._started_at = self._loop.time()
        self.recorder = Recorder(
            self,
            options,
            self.state,
            options.state_version if version is None else version,
            ownership=ownership,
            restart=restart,
            display_log=display_log,
        )
        # Made when they have something to do (see the module docstring).
        self._mailbox: Mailbox | None = None  # while messages wait
        self._runner: Runner | None = None  # while a run is in progress or awaited
        self._inactivity: InactivityTimer | None = None  # once live, with a timeout
        self._publisher: Publisher | None = None  # by the first subscriber or event
        self._viewers: ViewerWatch | None = None  # with presence tracking
        self._hooks: MiddlewareHooks | None = None  # for middleware hooks and runs
        self._end_waiters: list[asyncio.Future[None]] | None = None
        #: The ``until_tool`` result of the last completed run (None without one).
        self.last_result: Any = None
        self.shutdown_reason: str | None = None

    @property
    def closed(self) -> bool:
        """Whether the server takes no more messages (it is ending or has ended)."""
        return self._phase >= _CLOSED

    @property
    def ended(self) -> bool:
        """Whether the server has ended (after its ``AgentShutdown``)."""
        return self._phase == _ENDED

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self.status is Status.RUNNING

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
            if self._phase == _ENDED:
                publisher.close()  # as if it had been closed with the server
        return publisher

    # -- starting (driven by the unit) -----------------------------------------------------------

    def start(self) -> bool:
        """The synchronous part of starting; True if :meth:`initialise` must run next (presence
        tracking or ``on_server_start`` hooks), before the server is registered."""
        for subscriber in self.options.initial_subscribers:
            subscriber.attach(self.publisher)
        presence = self.options.presence
        if (presence is not None and presence.enabled) or self.recorder.needs_claim:
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
        task = self._loop.create_task(contained(self._initialise()), context=self.own_context())
        try:
            await task
        except BaseException:
            await self.shutdown("start failed", graceful=False)
            raise

    async def _initialise(self) -> None:
        stored = await self.recorder.claim()
        if stored is not None:
            # Storage is ahead of the state this server was given (a crash restart, or another
            # process saved between the load and the lease): it continues from storage.
            self.state = stored.state._shared(agent_id=self.agent_id)
            self.status = initial_status(self.state)
        presence = self.options.presence
        if presence is not None and presence.enabled:
            self._viewers = ViewerWatch(presence, on_no_viewers=self._no_viewers)
            await self._viewers.start()
        if any(mw.overrides("on_server_start") for mw in self.agent.middleware_instances):
            await self.hooks().server_started()

    def started(self) -> None:
        """Registered: arm the timers, report the start, process what is waiting."""
        self._phase = _LIVE
        timeout = self.options.inactivity_timeout
        if timeout is not None:
            # From now, not from the server's creation: the start (the claim, presence, the
            # ``on_server_start`` hooks: an MCP server given up to its connect timeout) may have
            # taken longer than the timeout, and would leave an agent no time at all.
            self._inactivity = InactivityTimer(self, timeout, since=self._loop.time())
            self._inactivity.arm()
        self.recorder.go_live()
        self.recorder.arm_interval()
        if self._viewers is not None:
            self._viewers.agent_status_changed(self.status)
        if telemetry.has_handlers(telemetry.AGENT_START):
            # In the server's context, as if the server's own task reported it.
            self.own_context().run(
                telemetry.execute,
                telemetry.AGENT_START,
                {"system_time": time.time(), "duration": self._loop.time() - self._started_at},
                self.telemetry_metadata(),
            )
        if self._mailbox is not None:
            self._mailbox.start()  # what start-up hooks posted

    def own_context(self) -> contextvars.Context:
        """The context every message, hook and timer of this server runs in (the server's
        "task" context): a copy of the start context, kept across message bursts so that
        update_context() and hooks' context variables persist as in one long-lived task."""
        context = self._task_context
        if context is None:
            context = self._task_context = (
                contextvars.copy_context() if self.context is None else self.context.copy()
            )
        return context

    # -- ending: one path ------------------------------------------------------------------------

    async def shutdown(self, reason: str, *, graceful: bool) -> None:
        """End the server; return once it has ended (left the registry, subscriptions closed).

        Args:
            reason: the ``AgentShutdown.reason`` subscribers get.
            graceful: wind down first, in the mailbox after the commands already queued:
                cancel the run (keeping the messages queued for it), save, wait for the saves
                within ``shutdown_timeout``. Otherwise cancel whatever the server is doing (a
                graceful shutdown that took too long) and end now, dropping unsaved work. A
                server whose start failed, never registered, always ends silently.
        """
        if graceful:
            if not self.closed and not self.shutdown_nowait(reason):
                with contextlib.suppress(AgentNotRunning):  # it ended meanwhile
                    await self.call(self._wind_down, reason)
        else:
            if self._mailbox is not None:
                await self._mailbox.cancel()  # the cancelled burst ends the server itself
            await self._end(self.shutdown_reason or reason)
        await self.wait_ended()

    def shutdown_nowait(self, reason: str) -> bool:
        """A graceful :meth:`shutdown` at once, without a task, when it has nothing to wait
        for (see :meth:`_quiet`); False, with nothing done, otherwise."""
        if not self._quiet():
            return False
        self.own_context().run(self._end_quietly, reason)
        return True

    def _quiet(self) -> bool:
        """Whether a graceful shutdown has nothing to wait for: no message or run in progress,
        no save to make or finish, no presence, no hook resources. The usual idle agent, which
        then stops without a task (an inactivity expiry of a million agents allocates none)."""
        return (
            self._phase == _LIVE
            and self._mailbox is None
            and (self._runner is None or self._runner.task is None)
            and self._viewers is None
            and self._hooks is None
            and self.recorder.quiet
            and not has_stop_hooks(self.agent)
        )

    async def _wind_down(self, reason: str) -> None:
        """The graceful part of a shutdown, as a message: after it the mailbox takes nothing
        more and the server ends."""
        self.shutdown_reason = reason
        if self._runner is not None:
            await self._runner.stop()
        self.recorder.checkpoint(f"shutdown ({reason})")
        self.recorder.auto_save(f"auto_save.shutdown ({reason})", force=True)
        if not await self.recorder.drain(self.options.shutdown_timeout):
            _log.error("agent %r: saves did not finish within shutdown_timeout", self.agent_id)
        self._phase = _CLOSED

    async def mailbox_ended(self, error: BaseException | None) -> None:
        """The mailbox's burst ends the server: after a graceful wind-down, a crash (one of its
        own messages failed) or a cancellation."""
        if error is None:
            reason = self.shutdown_reason or "manual"
        elif isinstance(error, asyncio.CancelledError):
            reason = self.shutdown_reason or "shutdown"
        else:
            _log.error("agent server %r crashed", self.agent_id, exc_info=error)
            reason = "crash"  # the unit restarts the server; the error is logged, not raised
        await self._end(reason)

    def mailbox_empty(self) -> None:
        self._mailbox = None
        if self._runner is not None and self._runner.at_rest:
            self._runner = None  # an idle agent carries no runner

    async def _end(self, reason: str) -> None:
        """The one ending of every server: release what it holds, then announce it (see
        :meth:`_ended`). Runs once."""
        went_live = self._phase != _STARTING
        if not self._close():
            return
        why = f"stopped ({reason})" if went_live else "failed to start"
        try:
            if self._runner is not None:
                await self._runner.abandon()
            if self._viewers is not None:
                await self._viewers.aclose()
            self._flush(why)
            if self._hooks is not None or has_stop_hooks(self.agent):
                # The on_server_stop hooks, then what the hooks spawned.
                await self.hooks().close(reason, self.options.shutdown_timeout)
            # A graceful stop drained its saves already; a crash still saves what its last
            # lifecycle points produced (the restart resumes from it), a kill gives up.
            await self.recorder.aclose(
                drain=self.options.shutdown_timeout if reason == "crash" else 0.0
            )
            display = self.recorder.display
            if reason == "crash" and self._unit is not None and display is not None:
                # What the drain could not write, the restarted server does.
                self._unit.keep_display(display.unwritten())
        except Exception:
            if went_live:
                raise
            # The start's own failure is what its caller sees.
            _log.exception("agent %r: cleaning up a failed start raised", self.agent_id)
        finally:
            # Even if cancelled meanwhile: subscribers, the unit and waiters must hear of it.
            self._ended(reason, why, announce=went_live)

    def _end_quietly(self, reason: str) -> None:
        """:meth:`_wind_down` and :meth:`_end` for a :meth:`_quiet` server, where neither
        would await."""
        self.shutdown_reason = reason
        self._close()
        self._ended(reason, f"stopped ({reason})", announce=True)

    def _close(self) -> bool:
        """Take no more messages and stop the timers; False if the ending had begun."""
        if self._phase >= _ENDING:
            return False
        self._phase = _ENDING
        if self._inactivity is not None:
            self._inactivity.disarm()
        self.recorder.close_timers()
        return True

    def _ended(self, reason: str, why: str, *, announce: bool) -> None:
        """Gone: fail the calls still waiting, close subscriptions (with ``AgentShutdown`` if
        the server was ever live), release waiters, tell the unit and telemetry."""
        self._flush(why)
        publisher = self._publisher
        if publisher is not None:  # else nobody ever subscribed: nobody can see a final event
            metadata = {
                "conversation_id": self.options.conversation_id,
                "status": self.status.value,
                "message_count": len(self.state.messages),
            }
            publisher.close(AgentShutdown(reason=reason, metadata=metadata) if announce else None)
        self._phase = _ENDED
        waiters, self._end_waiters = self._end_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        if not announce:
            return
        if self._unit is not None:
            self._unit.server_ended(self, reason)
        event = telemetry.AGENT_CRASH if reason == "crash" else telemetry.AGENT_STOP
        if telemetry.has_handlers(event):
            telemetry.execute(
                event,
                {"duration": self._loop.time() - self._started_at},
                {**self.telemetry_metadata(), "reason": reason},
            )

    def _flush(self, why: str) -> None:
        if self._mailbox is not None:
            self._mailbox.flush(why)  # kept: a kill may still have its task to cancel

    async def wait_ended(self) -> None:
        """Return once the server has left the registry and closed its subscriptions."""
        if self._phase == _ENDED:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        if self._end_waiters is None:
            self._end_waiters = []
        self._end_waiters.append(waiter)
        await waiter

    def telemetry_metadata(self) -> dict[str, Any]:
        """The metadata of this agent's telemetry events."""
        return {
            "agent_id": self.agent_id,
            "conversation_id": self.options.conversation_id,
            "status": self.status.value,
            **self.options.metadata,
        }

    # -- the mailbox -----------------------------------------------------------------------------

    def _enqueue(self, fn: Callable[..., Any], args: tuple[Any, ...], future: Any) -> None:
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = Mailbox(self)
        mailbox.put((fn, args, future), start=self._phase == _LIVE)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue the server's own message (no reply; its failure is a crash)."""
        if not self.closed:
            self._enqueue(fn, args, None)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the mailbox and return its result.

        Raises:
            AgentNotRunning: the server stopped (before or while the call waited).
        """
        if self.closed:
            raise AgentNotRunning(f"agent {self.agent_id!r} is not running; start it again")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._enqueue(fn, args, future)
        return await future

    # -- activity ------------------------------------------------------------------------------

    def touch(self) -> None:
        """Record activity: the inactivity deadline moves to now + timeout (O(1))."""
        if self._inactivity is not None:
            self._inactivity.touch()

    def inactivity_remaining(self) -> float | None:
        timer = self._inactivity
        if timer is None or self.status is Status.RUNNING:
            return None
        return timer.remaining()

    def inactive(self) -> None:
        """The inactivity deadline passed: stop (through the mailbox if it is busy)."""
        if not self.shutdown_nowait("inactivity"):
            self.post(self._stop_if_inactive)

    async def _stop_if_inactive(self) -> None:
        timer = self._inactivity
        if timer is None or self.status is Status.RUNNING:
            return
        if not timer.expired():
            timer.arm()  # activity arrived while this message waited
            return
        await self._wind_down("inactivity")

    # -- presence ------------------------------------------------------------------------------

    def _no_viewers(self) -> None:
        self.post(self._stop_if_no_viewers)

    async def _stop_if_no_viewers(self) -> None:
        viewers = self._viewers
        if viewers is None:
            return
        if viewers.viewer_count == 0 and self.status not in _KEEP_WITH_NO_VIEWERS:
            await self._wind_down("no_viewers")
            return
        # Someone came back while the notice waited in the mailbox. A watch fires once, so a
        # fresh one takes over; it starts a new grace period when the condition holds again.
        await viewers.aclose()
        self._viewers = ViewerWatch(viewers.tracking, on_no_viewers=self._no_viewers)
        self._viewers.agent_status_changed(self.status)
        await self._viewers.start()

    # -- state, status, events -------------------------------------------------------------------

    def set_state(self, state: State, new_messages: Sequence[BaseMessage] = ()) -> None:
        self.state = state
        self.recorder.changed(state, new_messages)

    def set_status(self, status: Status, data: Any = None) -> None:
        self.status = status
        self.publisher.publish(StatusChanged(status=status, data=data))
        if self._viewers is not None:
            self._viewers.agent_status_changed(status)

    # EventSink of the runs
    @property
    def debug(self) -> bool:
        return self._publisher is not None and self._publisher.wants_debug()

    def emit(self, event: Event) -> None:
        self.publisher.publish(event)

    def state_changed(self, state: State, new_messages: Sequence[BaseMessage]) -> None:
        self.set_state(state, new_messages)

    # -- what the recorder reports (RecorderHost) ------------------------------------------------

    def save_refused(self, conflict: StateConflict) -> None:
        """Storage refused a save (the recorder is fenced): say so, then stop — work done from
        now on could never be saved."""
        if not self.closed:
            self.own_context().run(self._report_refusal, conflict)

    def _report_refusal(self, conflict: StateConflict) -> None:
        self.publisher.publish(SaveRefused(reason=conflict.reason, error=str(conflict)))
        self.set_status(Status.ERROR, str(conflict))
        self.post(self._wind_down, "save_refused")

    def checkpointed(self, state: State, version: int) -> None:
        if self._unit is not None:
            self._unit.keep(state, version)

    # -- middleware -----------------------------------------------------------------------------

    def hooks(self) -> MiddlewareHooks:
        """The agent's middleware hooks outside runs, made on first use."""
        if self._hooks is None:
            self._hooks = MiddlewareHooks(self)
        return self._hooks

    # -- runs (RunnerHost) -----------------------------------------------------------------------

    def runs(self) -> Runner:
        # Resolved inside the mailbox (never by a caller before its message is processed): an
        # idle runner is forgotten at the end of each burst.
        runner = self._runner
        if runner is None:
            runner = self._runner = Runner(self)
        return runner

    def run_started(self) -> None:
        if self._inactivity is not None:
            self._inactivity.disarm()

    def run_ended(self) -> None:
        if self._inactivity is not None:
            self._inactivity.arm()

    # -- reads (answered directly) ---------------------------------------------------------------

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
            queued_messages=0 if self._runner is None else self._runner.queued_count,
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
