"""``Run``: one execution of an agent's mode over a state, until done, interrupt or error.

The agent server wraps exactly this object. ``run.state`` is always the last *consistent* state:
steps only replace it through :meth:`Run.commit`. When the run is cancelled (plain asyncio
cancellation), the tool calls it had started are settled before the ``CancelledError``
propagates: finished tools keep their results, the others get a "cancelled" error result, so the
history stays valid for the next model call and nothing complete is lost. Every other
way a run can end — any failure, of any exception type — is a :class:`Failed` result, so a host
awaiting :meth:`Run.execute` always learns how the run ended unless it cancelled it itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, ToolCall, ToolMessage

from sagents import telemetry
from sagents._errors import InvalidTransition, RunError
from sagents._interrupt import Decision, Interrupt, parse_decisions
from sagents._state import State
from sagents.events import AgentStateUpdate
from sagents.execution._containment import cancel_requests, describe, log_contained
from sagents.execution._middleware_context import MiddlewareContext
from sagents.execution._middleware_context import _current as _middleware_context
from sagents.execution._result import Done, Failed, Interrupted, RunResult
from sagents.execution._sink import EventSink, NullSink

if TYPE_CHECKING:
    from sagents.execution._agent import Agent
    from sagents.execution._tool_context import MessageQueue, ToolResume
    from sagents.execution._tools import ToolOutcome

__all__ = ["Run", "answer_pending_calls", "dismiss_interrupt"]

_START = telemetry.EXECUTION_START
_STOP = telemetry.EXECUTION_STOP
_INTERRUPT = telemetry.EXECUTION_INTERRUPT
_HALT = telemetry.EXECUTION_HALT

CANCELLED_TOOL_RESULT = "Cancelled: the run was stopped before this tool call finished."


class Run:
    """The working context of one run; steps read and commit through it.

    Attributes:
        agent: the agent being run.
        state: the last committed (consistent) state.
        sink: where events and state changes go.
        model_calls: model calls made in this run (``max_runs`` counts these).
        decisions: validated human decisions to apply (set when resuming).
        pending_interrupt: an interrupt requested by after-model middleware, not yet raised.
        tool_decisions: decision per tool call id for the tools about to run.
        tool_resume: decisions per suspended tool call id, for the tools about to run again.
        tool_outcomes: ``(call, outcome)`` pairs of the last tool execution, in call order.
        tools_in_flight: outcomes of tools finished so far while tools run (for a cancel).
        services: handed to every tool through ``ToolContext.services``.
        tool_context: handed to every tool as ``ToolContext.tool_context``.
        message_queue: where ``ToolContext.queue_message`` puts messages (None: nowhere).
        middleware_context: what middleware hooks get from ``get_middleware_context()``.
        metadata: added to the metadata of every telemetry event of the run (e.g.
            ``conversation_id``).
    """

    def __init__(
        self,
        agent: Agent,
        state: State | None = None,
        *,
        sink: EventSink | None = None,
        decisions: Sequence[Decision | Mapping[str, Any]] | None = None,
        services: Mapping[str, Any] | None = None,
        tool_context: Mapping[str, Any] | None = None,
        message_queue: MessageQueue | None = None,
        metadata: Mapping[str, Any] | None = None,
        middleware_context: MiddlewareContext | None = None,
    ) -> None:
        state = state if state is not None else State()
        if state.agent_id is None:
            state = state.replace(agent_id=agent.agent_id)
        if decisions is None and state.interrupt is not None:
            raise InvalidTransition(
                "the state has a pending interrupt: resume it with decisions, "
                "or dismiss it with dismiss_interrupt() before running"
            )
        parsed: tuple[Decision, ...] | None = None
        if decisions is not None:
            if state.interrupt is None:
                raise InvalidTransition("nothing to resume: the state has no pending interrupt")
            parsed = parse_decisions(state.interrupt, decisions)
        self.agent = agent
        self.state = state
        self.sink: EventSink = sink if sink is not None else NullSink()
        self.model_calls = 0
        self.decisions: tuple[Decision, ...] | None = parsed
        self.pending_interrupt: Interrupt | None = None
        self.tool_decisions: dict[str, Decision] = {}
        self.tool_resume: dict[str, ToolResume] = {}
        self.tool_outcomes: list[tuple[ToolCall, ToolOutcome]] = []
        self.tools_in_flight: dict[str, ToolOutcome] | None = None
        self.services: Mapping[str, Any] = services if services is not None else {}
        self.tool_context: Mapping[str, Any] = tool_context if tool_context is not None else {}
        self.message_queue = message_queue
        self.metadata: Mapping[str, Any] = metadata if metadata is not None else {}
        self.middleware_context = middleware_context or MiddlewareContext(
            agent.agent_id, services=self.services, emit=self.sink.emit
        )
        # A host's context outlives its runs, and the host may swap the agent between them.
        self.middleware_context.agent = agent

    def commit(self, state: State, *new_messages: BaseMessage) -> None:
        """Make ``state`` the run's state; ``new_messages`` are the messages it adds."""
        self.state = state
        sink = self.sink
        if sink.debug:
            sink.emit(AgentStateUpdate(agent_id=self.agent.agent_id, state=state))
        sink.state_changed(state, new_messages)

    async def execute(self) -> RunResult:
        """Drive the agent's mode to a result.

        Every failure, whatever its type (``BaseException`` included), ends the run as
        :class:`Failed`; nothing else escapes.

        Raises:
            asyncio.CancelledError: the task running it was cancelled (a ``CancelledError``
                raised without a cancel request is a failure); ``self.state`` is consistent.
        """
        agent = self.agent
        started = time.perf_counter()
        if telemetry.has_handlers(_START):
            telemetry.execute(_START, {"system_time": time.time()}, self._telemetry_metadata())
        token = _middleware_context.set(self.middleware_context)
        since = cancel_requests()
        try:
            result = await agent.mode.run(self)
        except BaseException as exc:
            if cancel_requests() <= since:
                # ``Mode.run`` contains the steps' failures; this one came from around them.
                log_contained(exc, f"mode {agent.mode.name!r}", agent.agent_id)
                error = RunError(f"mode {agent.mode.name!r} crashed: {describe(exc)}")
                error.__cause__ = exc
                result = Failed(state=self.state, error=error)
            else:
                self._settle_cancelled()
                if telemetry.has_handlers(_STOP):
                    telemetry.execute(
                        _STOP,
                        {
                            "duration": time.perf_counter() - started,
                            "model_calls": self.model_calls,
                        },
                        {**self._telemetry_metadata(), "status": "cancelled"},
                    )
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise asyncio.CancelledError from exc  # cancellation wins over what was raised
        finally:
            _middleware_context.reset(token)
        match result:
            case Interrupted():
                event, status = _INTERRUPT, None
            case Done():
                event, status = _STOP, "idle"
            case Failed():
                event, status = _STOP, "error"
            case _:  # pragma: no cover - a mode returns one of the three
                return result
        # Payloads only when someone listens: a run is the hot path of every turn.
        if telemetry.has_handlers(event):
            measurements = {
                "duration": time.perf_counter() - started,
                "model_calls": self.model_calls,
            }
            meta = self._telemetry_metadata()
            telemetry.execute(
                event, measurements, meta if status is None else {**meta, "status": status}
            )
        if isinstance(result, Done) and result.halted is not None and telemetry.has_handlers(_HALT):
            measurements = {
                "duration": time.perf_counter() - started,
                "model_calls": self.model_calls,
            }
            telemetry.execute(
                _HALT, measurements, {**self._telemetry_metadata(), "reason": result.halted}
            )
        return result

    def _telemetry_metadata(self) -> dict[str, Any]:
        agent = self.agent
        return {"agent_id": agent.agent_id, "mode": agent.mode.name, **self.metadata}

    def _settle_cancelled(self) -> None:
        pending = self.state.pending_tool_calls()
        if not pending or self.state.interrupt is not None:
            return
        finished = self.tools_in_flight or {}
        results: list[BaseMessage] = []
        for call in pending:
            outcome = finished.get(call["id"])
            if outcome is not None and not outcome.suspended:
                results.append(outcome.message)
            else:
                results.append(
                    ToolMessage(
                        content=CANCELLED_TOOL_RESULT,
                        tool_call_id=call["id"],
                        name=call["name"],
                        status="error",
                    )
                )
        self.tools_in_flight = None
        self.commit(self.state.append(*results), *results)


def dismiss_interrupt(
    state: State, reason: str = "not approved: the user sent a new message"
) -> tuple[State, list[ToolMessage]]:
    """Drop a pending interrupt, answering each pending call with ``reason``.

    Returns the new state and the tool results it added (so they can be saved as new messages).
    """
    if state.interrupt is None:
        return state, []
    return answer_pending_calls(state.replace(interrupt=None), reason)


def answer_pending_calls(state: State, reason: str) -> tuple[State, list[ToolMessage]]:
    """Answer every tool call of the last AI message that has no result with an error result
    ``"Not run: <reason>"``: a history where a call has no result is refused by providers.

    Returns the new state and the results it added.
    """
    results = [
        ToolMessage(
            content=f"Not run: {reason}",
            tool_call_id=call["id"],
            name=call["name"],
            status="error",
        )
        for call in state.pending_tool_calls()
    ]
    if not results:
        return state, []
    return state.append(*results), results
