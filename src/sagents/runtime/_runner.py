"""``Runner``: an agent server's runs, from their start to the status they end in.

A run is a separate task owned by the server, so the mailbox stays responsive while the model
streams (``cancel()`` is processed at once). When the run ends its task posts the result back to
the mailbox (:meth:`Runner.completed`), where the status changes: a user-visible status never
races the mailbox. While a run is in progress:

- messages that arrive are **queued** and run next as one follow-up turn, without an ``idle`` in
  between (a UI treats idle as "done"); past ``max_follow_ups`` chained turns they are only
  added to the state;
- middleware messages are **deferred**: the run owns the state until it ends, so each is handled
  right after it, before the status changes (whoever sees the new status sees their effect);
- a cancel settles the run (its finished tools keep their results) and keeps the queued
  messages, in order, without starting the run the user just cancelled.

A pending interrupt ends in one of three ways: ``resume`` continues the run with decisions, a
new message dismisses it and runs (the message is the user's answer), and ``dismiss`` clears it
without a run. Dismissing answers every pending call with a "not run" result, so the history
stays valid for the next model call.

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

from langchain_core.messages import BaseMessage, HumanMessage

from sagents._errors import InvalidDecision, InvalidOption, InvalidTransition, RunError
from sagents._interrupt import Decision
from sagents._state import State
from sagents._status import Status
from sagents.events import FollowUpsLimited, MessageQueued
from sagents.execution._agent import Agent
from sagents.execution._containment import describe
from sagents.execution._result import Done, Failed, Interrupted, RunResult
from sagents.execution._run import Run, answer_pending_calls, dismiss_interrupt
from sagents.execution._sink import EventSink
from sagents.execution._tool_context import Display, shown_as
from sagents.runtime._hooks import middleware_named
from sagents.runtime._options import AgentOptions, MessagePreprocessor

if TYPE_CHECKING:
    from sagents.runtime._hooks import MiddlewareHooks
    from sagents.runtime._recorder import Recorder

__all__ = ["DISMISSED", "RUNTIME_KEY", "Runner", "RunnerHost", "initial_status"]

_log = logging.getLogger("sagents.server")

#: Metadata key of the runtime's own persisted marks (``{"paused": true}``).
RUNTIME_KEY = "sagents.runtime"

#: Why the calls of a dismissed interrupt did not run (their results say "Not run: ...").
DISMISSED = "the user dismissed it without a decision"


class RunnerHost(EventSink, Protocol):
    """What a runner needs from its agent server (which is also the runs' event sink)."""

    agent: Agent
    agent_id: str
    options: AgentOptions
    state: State
    status: Status
    last_result: Any
    recorder: Recorder
    services: Mapping[str, Any]
    #: What tools read as ``ToolContext.tool_context`` (the start option, with the latest
    #: message's on top).
    tool_context: Mapping[str, Any]
    #: The context runs start in (a copy each).
    context: contextvars.Context | None

    def hooks(self) -> MiddlewareHooks: ...

    def set_state(self, state: State, new_messages: Sequence[BaseMessage] = ()) -> None: ...

    def set_status(self, status: Status, data: Any = None) -> None: ...

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue the server's own message (the run task reports through the mailbox)."""
        ...

    def touch(self) -> None:
        """Record activity."""
        ...

    def run_started(self) -> None:
        """A run began (the inactivity deadline stops counting)."""
        ...

    def run_ended(self) -> None:
        """A run ended and its outcome is handled (the deadline counts again)."""
        ...


class Runner:
    """The run in progress of one agent server and what waits for its end."""

    __slots__ = (
        "_deferred",
        "_follow_ups",
        "_from_tools",
        "_host",
        "_queued",
        "_queued_context",
        "run",
        "task",
    )

    def __init__(self, host: RunnerHost) -> None:
        self._host = host
        self.run: Run | None = None
        self.task: asyncio.Task[RunResult] | None = None
        self._queued: list[BaseMessage] | tuple[()] = ()
        self._queued_context: Mapping[str, Any] | None = None  # the queued messages' latest
        # Queued by tools (ToolContext.queue_message): they go first in the next turn, after
        # the run that queued them; one that ends waiting for a decision holds them.
        self._from_tools: list[BaseMessage] | tuple[()] = ()
        self._deferred: list[tuple[str, Any]] | tuple[()] = ()
        self._follow_ups = 0  # turns chained on queued messages since the user's last run

    @property
    def at_rest(self) -> bool:
        """Whether nothing is running, queued or deferred (the server then forgets the runner
        at the end of its mailbox burst)."""
        return self.run is None and not self._queued and not self._deferred and not self._from_tools

    @property
    def queued_count(self) -> int:
        """Messages waiting for the next turn (sent during the run, or queued by its tools)."""
        return len(self._queued) + len(self._from_tools)

    # -- commands (each one a message in the server's mailbox) -----------------------------------

    def add_message(
        self,
        message: BaseMessage,
        run: bool,
        tool_context: Mapping[str, Any] | None = None,
        display: Display = True,
    ) -> None:
        """Append ``message`` and, with ``run``, start a run. During a run it is queued
        for the next turn; it dismisses a pending approval. Its ``tool_context`` is what
        tools read from then on (over the start option's); ``display`` what its display rows
        show (True: what the preprocessor gives for the user, else the message)."""
        host = self._host
        shown = message if display is True else shown_as(message, display)  # checked first
        preprocess = host.options.message_preprocessor
        if preprocess is not None:
            message, for_user = self._preprocessed(preprocess, message)
            if display is True:
                shown = for_user
        if shown is not message and (display_log := host.recorder.display) is not None:
            display_log.show_as(message, shown)
        if host.status is Status.RUNNING:
            if isinstance(self._queued, list):
                self._queued.append(message)
            else:
                self._queued = [message]
            if tool_context is not None:
                self._queued_context = tool_context
            self._announce_queued(shown, from_tool=False)
            return
        if tool_context is not None:
            host.tool_context = {**host.options.tool_context, **tool_context}
        messages: tuple[BaseMessage, ...] = (message,)
        if host.status is Status.INTERRUPTED:
            self._dismiss_interrupt()
            messages = (*self._take_from_tools(), message)  # their run is over
        host.set_state(host.state.append(*messages), messages)
        if run:
            self._launch()
            self._follow_ups = 0

    def _preprocessed(
        self, preprocess: MessagePreprocessor, message: BaseMessage
    ) -> tuple[BaseMessage, BaseMessage]:
        """The model's and the user's versions of ``message`` (see
        ``AgentOptions.message_preprocessor``)."""
        host = self._host
        result = preprocess(message, host.state)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise InvalidOption(
                "message_preprocessor must return (for_the_model, for_the_user), got "
                f"{type(result).__name__}"
            )
        for_model, for_user = result
        if not isinstance(for_model, BaseMessage):
            raise InvalidOption(
                "message_preprocessor: the model's version must be a langchain message, got "
                f"{type(for_model).__name__}"
            )
        if isinstance(for_user, str):
            for_user = HumanMessage(for_user)
        if not isinstance(for_user, BaseMessage):
            raise InvalidOption(
                "message_preprocessor: the user's version must be a message or its text, got "
                f"{type(for_user).__name__}"
            )
        return for_model, for_user

    def execute(self) -> None:
        """Start a run."""
        host = self._host
        if host.status is Status.RUNNING:
            raise InvalidTransition(f"agent {host.agent_id!r} is already running")
        if host.status is Status.INTERRUPTED:
            raise InvalidTransition(
                f"agent {host.agent_id!r} is waiting for approval: resume it with decisions"
            )
        self._launch()
        self._follow_ups = 0

    def resume(self, decisions: Sequence[Decision | Mapping[str, Any]]) -> None:
        """Continue an interrupted run with the user's decisions."""
        host = self._host
        if host.status is not Status.INTERRUPTED:
            raise InvalidTransition(
                f"agent {host.agent_id!r} is {host.status.value}, not interrupted: "
                "nothing to resume"
            )
        if decisions is None:  # to a Run, None means "not a resume"
            raise InvalidDecision("decisions must be a list with one decision per pending call")
        interrupt = host.state.interrupt
        run = self._launch(decisions)  # raises InvalidDecision with nothing changed
        display_log = host.recorder.display
        if interrupt is not None and run.decisions and display_log is not None:
            display_log.decisions_recorded(interrupt, run.decisions)
        self._follow_ups = 0

    def dismiss(self) -> None:
        """Clear the pending interrupt without a new message: each pending call is answered
        as not run, and the agent becomes idle."""
        host = self._host
        if host.status is not Status.INTERRUPTED:
            raise InvalidTransition(
                f"agent {host.agent_id!r} is {host.status.value}, not interrupted: "
                "nothing to dismiss"
            )
        self._dismiss_interrupt(reason=DISMISSED)
        held = self._take_from_tools()  # their run is over: kept, without a run
        if held:
            host.set_state(host.state.append(*held), held)
        host.touch()
        host.recorder.checkpoint("idle")
        auto_save = host.options.auto_save
        if auto_save is not None and auto_save.on_idle:
            host.recorder.auto_save("auto_save.on_idle")

    async def clear(self) -> None:
        """The runs' part of a reset: cancel the run in progress (handling its result if it
        finished before the cancel reached it, as a stop does) and drop the queued messages."""
        self._queued = self._from_tools = ()
        self._queued_context = None
        self._follow_ups = 0
        await self.cancel()
        run, task = self.run, self.task
        if run is not None and task is not None:
            await self.completed(run, task.result())  # its late message then finds no run

    async def send_to_middleware(self, key: str, message: Any) -> None:
        """Hand ``message`` to middleware ``key`` — right after the run in progress, which owns
        the state until it ends."""
        host = self._host
        mw = middleware_named(host.agent, key)
        if host.status is not Status.RUNNING:
            await host.hooks().deliver(mw, message)
        elif isinstance(self._deferred, list):
            self._deferred.append((key, message))
        else:
            self._deferred = [(key, message)]

    async def cancel_run(self) -> None:
        """Cancel the run in progress."""
        host = self._host
        if host.status is not Status.RUNNING or self.task is None:
            raise InvalidTransition(
                f"agent {host.agent_id!r} is {host.status.value}: there is no run to cancel"
            )
        await self.cancel()

    async def pause(self) -> None:
        """Infrastructure pause: stop any run, mark the state paused, save it.

        The mark is persisted with the state, so a server restarted from it (on this node or
        another) starts ``paused`` and ``execute()`` continues the conversation.
        """
        host = self._host
        if host.status is Status.INTERRUPTED:
            raise InvalidTransition(
                f"agent {host.agent_id!r} is waiting for approval, which already survives a "
                "restart: there is nothing to pause"
            )
        await self.cancel(Status.PAUSED)
        host.set_state(host.state.with_metadata(RUNTIME_KEY, {"paused": True}))
        if host.status is not Status.PAUSED:
            host.set_status(Status.PAUSED)
        host.recorder.checkpoint("paused")
        host.recorder.auto_save("auto_save.pause", force=True)
        await host.recorder.drain(host.options.shutdown_timeout)

    # -- cancelling ------------------------------------------------------------------------------

    async def cancel(self, status: Status = Status.CANCELLED) -> None:
        """Cancel the run in progress, if any; the agent's status becomes ``status``."""
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
            queued, from_tools = self._queued, self._from_tools
            self._queued = self._from_tools = ()
            await self.completed(run, task.result())  # the late message then finds no run
            self._queued, self._from_tools = queued, from_tools
        host = self._host
        if host.status is Status.INTERRUPTED and self._from_tools:
            # After pending tool calls a message would leave the history invalid, and the
            # interrupt outlives this server: what tools queued for after it is lost. Said.
            _log.warning(
                "agent %r stopped while waiting for a decision: %d message(s) queued by its "
                "tools for after it were dropped",
                host.agent_id,
                len(self._from_tools),
            )
            self._from_tools = ()
        messages = self._take_queued()
        if messages:
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
            tool_context=host.tool_context,
            message_queue=self._queue_from_tool,
            metadata={"conversation_id": host.options.conversation_id, **host.options.metadata},
            middleware_context=host.hooks().context,
        )
        if run.state is not host.state:
            host.set_state(run.state)
        self.run = run
        if host.status is not Status.RUNNING:  # a follow-up run continues the running one
            host.set_status(Status.RUNNING)
        host.run_started()
        self.task = asyncio.get_running_loop().create_task(
            self._drive(run), context=None if host.context is None else host.context.copy()
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
        pending = bool(self._queued) or (
            bool(self._from_tools) and not isinstance(result, Interrupted)
        )
        limit = host.options.max_follow_ups
        follow_up = pending and self._follow_ups < limit
        if pending and not follow_up:  # said before the status that follows
            host.emit(FollowUpsLimited(max_follow_ups=limit, added=self.queued_count))
        self._report(result, follow_up=follow_up)
        if pending:
            self._run_queued(follow_up=follow_up)
        auto_save = host.options.auto_save
        if host.status is not Status.RUNNING and auto_save is not None and auto_save.on_idle:
            host.recorder.auto_save("auto_save.on_idle")
        host.run_ended()

    def _report(self, result: RunResult, *, follow_up: bool) -> None:
        host = self._host
        recorder = host.recorder
        match result:
            case Done(value=value):
                host.last_result = value
                recorder.checkpoint("idle")
                if not follow_up:
                    # A run that continues with queued messages never says idle in between:
                    # a UI treats idle as "done" and would re-enable its input.
                    host.set_status(Status.IDLE, value)
            case Interrupted(interrupt=interrupt):
                host.last_result = None
                host.set_status(Status.INTERRUPTED, interrupt)
                if recorder.display is not None:
                    recorder.display.tool_calls_interrupted(interrupt)
                recorder.checkpoint("interrupted")
            case Failed(error=error):
                host.last_result = None
                # A failure after the model asked for tools leaves calls without results, which
                # providers refuse from then on: each gets an error result.
                answered, results = answer_pending_calls(host.state, f"the run failed: {error}")
                if results:
                    host.set_state(answered, results)
                # Said in the log too: an operator sees it with no page open.
                _log.warning("agent %r: the run failed: %s", host.agent_id, error)
                host.set_status(Status.ERROR, str(error))
                recorder.checkpoint("error")

    def _queue_from_tool(self, message: BaseMessage, shown: BaseMessage | None) -> None:
        """``ToolContext.queue_message``: called in the run's task, kept for its end."""
        if shown is not message and (display_log := self._host.recorder.display) is not None:
            display_log.show_as(message, shown)
        if isinstance(self._from_tools, list):
            self._from_tools.append(message)
        else:
            self._from_tools = [message]
        self._announce_queued(shown, from_tool=True)

    def _announce_queued(self, shown: BaseMessage | None, *, from_tool: bool) -> None:
        event = MessageQueued(message=shown, queued=self.queued_count, from_tool=from_tool)
        self._host.emit(event)

    def _take_from_tools(self) -> tuple[BaseMessage, ...]:
        messages, self._from_tools = tuple(self._from_tools), ()
        return messages

    def _take_queued(self) -> tuple[BaseMessage, ...]:
        """The messages of the next turn: the tools' first, then those sent meanwhile (whose
        latest ``tool_context`` takes effect)."""
        messages = (*self._take_from_tools(), *self._queued)
        self._queued = ()
        context, self._queued_context = self._queued_context, None
        if context is not None:
            host = self._host
            host.tool_context = {**host.options.tool_context, **context}
        return messages

    def _run_queued(self, *, follow_up: bool) -> None:
        host = self._host
        messages = self._take_queued()
        if host.status is Status.INTERRUPTED:
            self._dismiss_interrupt(announce=not follow_up)
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
            await self._host.hooks().deliver_deferred(key, message)

    def _dismiss_interrupt(self, *, announce: bool = True, reason: str | None = None) -> None:
        # A new message (or dismiss()) dismisses a pending interrupt: its calls are answered as
        # not run.
        host = self._host
        if reason is None:
            state, results = dismiss_interrupt(host.state)
        else:
            state, results = dismiss_interrupt(host.state, reason)
        host.set_state(state, results)
        if announce:
            host.set_status(Status.IDLE)

    def _cancelled_elsewhere(self, run: Run) -> None:
        """A run task ended cancelled: if nothing handled that (cancel() and stops do), the run
        ends as cancelled."""
        if run is self.run:
            self._cancelled(Status.CANCELLED)

    def _cancelled(self, status: Status) -> None:
        host = self._host
        self.run = None
        self.task = None
        # Sent during the run, so they precede anything sent later: keep them, in order,
        # without starting a run the user just cancelled.
        messages = self._take_queued()
        if messages:
            host.set_state(host.state.append(*messages), messages)
        host.set_status(status)
        host.recorder.checkpoint(status.value)
        host.touch()
        host.run_ended()


def initial_status(state: State) -> Status:
    """The status of an agent that starts from ``state``: waiting for approval, paused by an
    infrastructure pause (the mark is persisted with the state), or idle."""
    if state.interrupt is not None:
        return Status.INTERRUPTED
    mark = state.metadata.get(RUNTIME_KEY)
    paused = isinstance(mark, dict) and bool(mark.get("paused"))
    return Status.PAUSED if paused else Status.IDLE


def _unpaused(state: State) -> State:
    # A run continues a paused agent: the persisted mark goes.
    if RUNTIME_KEY not in state.metadata:
        return state
    return state.replace(metadata={k: v for k, v in state.metadata.items() if k != RUNTIME_KEY})


def _crashed(run: Run, exc: BaseException) -> Failed:
    error = RunError(f"the run crashed: {describe(exc)}")
    error.__cause__ = exc
    _log.error("agent %r: the run crashed", run.agent.agent_id, exc_info=exc)
    return Failed(state=run.state, error=error)
