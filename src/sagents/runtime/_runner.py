"""``Runner``: an agent server's runs, from their start to the status they end in (rules L2–L8).

A run is a separate task owned by the server, so the mailbox stays responsive while the model
streams (``cancel()`` is processed at once). When the run ends its task posts the result back to
the mailbox (:meth:`Runner.completed`), where the status changes: a user-visible status never
races the mailbox. While a run is in progress:

- messages that arrive are **queued** and run next as one follow-up turn, without an ``idle`` in
  between (a UI treats idle as "done"); past ``max_follow_ups`` chained turns they are only
  added to the state (L7);
- middleware messages are **deferred**: the run owns the state until it ends, so each is handled
  right after it, before the status changes (whoever sees the new status sees their effect);
- a cancel settles the run (its finished tools keep their results) and keeps the queued
  messages, in order, without starting the run the user just cancelled (L5).

The runner is made when a run starts and forgotten once nothing is left to do (no run, nothing
queued or deferred), so an idle agent carries none: what it keeps between runs (the last
result, the inactivity deadline) is the server's.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.messages import BaseMessage

from sagents._errors import RunError
from sagents._interrupt import Decision
from sagents._state import State
from sagents._status import Status
from sagents.execution._agent import Agent
from sagents.execution._containment import describe
from sagents.execution._middleware_context import MiddlewareContext
from sagents.execution._result import Done, Failed, Interrupted, RunResult
from sagents.execution._run import Run
from sagents.execution._sink import EventSink
from sagents.runtime._options import AgentOptions

if TYPE_CHECKING:
    from sagents.runtime._recorder import Recorder

__all__ = ["RUNTIME_KEY", "Runner", "RunnerHost"]

_log = logging.getLogger("sagents.server")

#: Metadata key of the runtime's own persisted marks (``{"paused": true}``).
RUNTIME_KEY = "sagents.runtime"


class RunnerHost(EventSink, Protocol):
    """What a runner needs from its agent server (which is also the runs' event sink)."""

    agent: Agent
    agent_id: str
    options: AgentOptions
    state: State
    status: Status
    last_result: Any

    @property
    def recorder(self) -> Recorder: ...

    @property
    def services(self) -> Mapping[str, Any]: ...

    def run_context(self) -> contextvars.Context | None:
        """The context a new run's task starts in."""
        ...

    def run_metadata(self) -> Mapping[str, Any]: ...

    def middleware_context(self) -> MiddlewareContext: ...

    def set_state(self, state: State, new_messages: Sequence[BaseMessage] = ()) -> None: ...

    def set_status(self, status: Status, data: Any = None) -> None: ...

    def dismiss_interrupt(self, *, announce: bool = True) -> None: ...

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue the server's own message (the run task reports through the mailbox)."""
        ...

    def touch(self) -> None:
        """Record activity."""
        ...

    def run_started(self) -> None:
        """A run began (the inactivity deadline stops counting)."""
        ...

    def runs_settled(self, runner: Runner) -> None:
        """A run ended and its outcome is handled (the deadline counts again; a runner with
        nothing left to do can be forgotten)."""
        ...

    async def deliver_deferred(self, key: str, message: Any) -> None:
        """Hand ``message`` to middleware ``key``'s ``handle_message`` hook (a failure is
        logged: the run that deferred it is over)."""
        ...


class Runner:
    """The run in progress of one agent server and what waits for its end."""

    __slots__ = ("_deferred", "_follow_ups", "_host", "_queued", "run", "task")

    def __init__(self, host: RunnerHost) -> None:
        self._host = host
        self.run: Run | None = None
        self.task: asyncio.Task[RunResult] | None = None
        self._queued: list[BaseMessage] | tuple[()] = ()
        self._deferred: list[tuple[str, Any]] | tuple[()] = ()
        self._follow_ups = 0  # turns chained on queued messages since the user's last run

    @property
    def at_rest(self) -> bool:
        """Whether nothing is running, queued or deferred (the server may forget the runner)."""
        return self.run is None and not self._queued and not self._deferred

    @property
    def queued_count(self) -> int:
        return len(self._queued)

    # -- what the server's commands ask ----------------------------------------------------------

    def start(self, decisions: Sequence[Decision | Mapping[str, Any]] | None = None) -> Run:
        """Start a run asked for by the user (``decisions`` resume an interrupt).

        Raises:
            InvalidDecision: the decisions do not fit; nothing changed.
        """
        run = self._launch(decisions)
        self._follow_ups = 0
        return run

    def queue(self, message: BaseMessage) -> None:
        """``message`` arrived during the run: it runs next (L7)."""
        if isinstance(self._queued, list):
            self._queued.append(message)
        else:
            self._queued = [message]

    def defer(self, key: str, message: Any) -> None:
        """A message for middleware ``key`` arrived during the run: handled right after it."""
        if isinstance(self._deferred, list):
            self._deferred.append((key, message))
        else:
            self._deferred = [(key, message)]

    async def cancel(self, status: Status = Status.CANCELLED) -> None:
        """Cancel the run in progress; the agent's status becomes ``status``."""
        run, task = self.run, self.task
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if run is not self.run or not task.cancelled():
            # The run finished before the cancel reached it: its result, already posted to the
            # mailbox, decides the status.
            return
        self._cancelled(status)

    async def stop(self) -> None:
        """The runs' part of a graceful stop: cancel the run in progress and keep the queued
        messages in the state, without running them."""
        await self.cancel()
        run, task = self.run, self.task
        if run is not None and task is not None:
            # It finished before the cancel could reach it: its result waits in the mailbox
            # behind the stop and would never be processed, so it is handled here — without
            # the follow-up run its queued messages would start.
            queued, self._queued = self._queued, ()
            await self.completed(run, task.result())  # the late message then finds no run
            self._queued = queued
        if self._queued:
            host = self._host
            messages, self._queued = self._queued, ()
            host.set_state(host.state.append(*messages), messages)

    async def abandon(self) -> None:
        """The server ends: cancel the run's task and wait for it, changing nothing else."""
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- a run's life ----------------------------------------------------------------------------

    def _launch(self, decisions: Sequence[Decision | Mapping[str, Any]] | None = None) -> Run:
        host = self._host
        run = Run(  # validates the decisions before anything changes
            host.agent,
            _unpaused(host.state),
            sink=host,
            decisions=decisions,
            services=host.services,
            metadata=host.run_metadata(),
            middleware_context=host.middleware_context(),
        )
        if run.state is not host.state:
            host.set_state(run.state)
        self.run = run
        if host.status is not Status.RUNNING:  # a follow-up run continues the running one
            host.set_status(Status.RUNNING)
        host.run_started()
        self.task = asyncio.get_running_loop().create_task(
            self._drive(run), context=host.run_context()
        )
        return run

    async def _drive(self, run: Run) -> RunResult:
        """The run's task: execute, then post the result to the mailbox."""
        try:
            await self._host.recorder.caught_up()  # the durability bound: never two turns unsaved
            result: RunResult = await run.execute()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Cancelled. By cancel() or a stop, which handle it themselves; by anyone else
                # too, and then this message is what ends the run (the agent must not stay
                # "running" with no run).
                self._host.post(self._cancelled_elsewhere, run)
                raise
            result = _crashed(run, asyncio.CancelledError("raised inside the run"))
        except BaseException as exc:
            # The loop turns step failures into results; this is a failure around it. Whatever
            # it is (SystemExit from a tool included), it ends this run, never the process and
            # never with the run task gone and the agent "running" forever.
            result = _crashed(run, exc)
        self._host.post(self.completed, run, result)
        return result  # also kept on the task, for a stop that overtakes the message

    async def completed(self, run: Run, result: RunResult) -> None:
        """A run's result, posted by its task: the status follows from it."""
        if run is not self.run:
            return  # a cancelled run's late result
        host = self._host
        self.run = None
        self.task = None
        host.touch()
        # Handled before the status changes, so whoever sees the new status sees their effect.
        await self._deliver_deferred()
        self._report(result, follow_up=self._follows_up())
        if self._queued:
            self._run_queued()
        auto_save = host.options.auto_save
        if host.status is not Status.RUNNING and auto_save is not None and auto_save.on_idle:
            host.recorder.auto_save("auto_save.on_idle")
        host.runs_settled(self)

    def _follows_up(self) -> bool:
        return bool(self._queued) and self._follow_ups < self._host.options.max_follow_ups

    def _report(self, result: RunResult, *, follow_up: bool) -> None:
        host = self._host
        recorder = host.recorder
        match result:
            case Done(value=value):
                host.last_result = value
                recorder.checkpoint("idle")
                if not follow_up:
                    # A run that continues with queued messages never says idle in between:
                    # a UI treats idle as "done" and would re-enable its input (L7).
                    host.set_status(Status.IDLE, value)
            case Interrupted(interrupt=interrupt):
                host.last_result = None
                host.set_status(Status.INTERRUPTED, interrupt)
                recorder.tool_calls_interrupted(interrupt)
                recorder.checkpoint("interrupted")
            case Failed(error=error):
                host.last_result = None
                host.set_status(Status.ERROR, str(error))
                recorder.checkpoint("error")

    def _run_queued(self) -> None:
        host = self._host
        messages, self._queued = self._queued, ()
        follow_up = self._follow_ups < host.options.max_follow_ups
        if host.status is Status.INTERRUPTED:
            host.dismiss_interrupt(announce=not follow_up)
        host.set_state(host.state.append(*messages), messages)
        if not follow_up:
            _log.warning(
                "agent %r reached max_follow_ups=%d; queued messages were added without a run",
                host.agent_id,
                host.options.max_follow_ups,
            )
            if host.status is Status.RUNNING:  # the ended run said nothing yet
                host.set_status(Status.IDLE)
            host.recorder.checkpoint("idle")
            return
        self._follow_ups += 1
        self._launch()

    async def _deliver_deferred(self) -> None:
        deferred, self._deferred = self._deferred, ()
        for key, message in deferred:
            await self._host.deliver_deferred(key, message)

    def _cancelled_elsewhere(self, run: Run) -> None:
        """A run task ended cancelled: if nothing handled that (cancel() and stops do), the run
        ends as cancelled."""
        if run is self.run:
            self._cancelled(Status.CANCELLED)

    def _cancelled(self, status: Status) -> None:
        host = self._host
        self.run = None
        self.task = None
        if self._queued:
            # Sent during the run, so they precede anything sent later: keep them, in order,
            # without starting a run the user just cancelled (L5, L7).
            messages, self._queued = self._queued, ()
            host.set_state(host.state.append(*messages), messages)
        host.set_status(status)
        host.recorder.checkpoint(status.value)
        host.touch()
        host.runs_settled(self)


def _unpaused(state: State) -> State:
    # A run continues a paused agent (L8): the persisted mark goes.
    if RUNTIME_KEY not in state.metadata:
        return state
    return state.replace(metadata={k: v for k, v in state.metadata.items() if k != RUNTIME_KEY})


def _crashed(run: Run, exc: BaseException) -> Failed:
    error = RunError(f"the run crashed: {describe(exc)}")
    error.__cause__ = exc
    _log.error("agent %r: the run crashed", run.agent.agent_id, exc_info=exc)
    return Failed(state=run.state, error=error)
