"""The steps of the execution loop.

Each step is a small async function of the :class:`~sagents.execution.Run`; see ``_mode.py`` for
how they are sequenced. Steps commit states through ``run.commit`` (which reports them to the
sink) and never mutate a state in place, so a step that fails leaves the previous state intact.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, SystemMessage, ToolCall, ToolMessage

from sagents._errors import (
    Halt,
    MaxRunsExceeded,
    ModelCallFailed,
    RunError,
    UntilToolNotCalled,
)
from sagents._interrupt import Decision, Edit, Interrupt, Reject, Respond
from sagents.events import (
    ChainError,
    LLMMessage,
    LLMTokenUsage,
    TodosUpdated,
    ToolExecutionCompleted,
    ToolExecutionFailed,
    ToolExecutionStarted,
)
from sagents.execution._containment import (
    cancel_requests,
    describe,
    log_contained,
    reraise_cancellation,
)
from sagents.execution._model_call import call_model
from sagents.execution._result import Done, Interrupted, RunResult
from sagents.execution._tool_context import ToolContext, ToolResume
from sagents.execution._tools import ToolOutcome, invalid_call_outcome, invoke_tool, tool_timeout

if TYPE_CHECKING:
    from sagents._state import State
    from sagents.execution._middleware import Middleware
    from sagents.execution._run import Run

__all__ = [
    "call_llm",
    "check_max_runs",
    "check_pre_tool_hitl",
    "check_tool_interrupts",
    "check_until_tool",
    "continue_or_done",
    "execute_tools",
    "propagate_state",
]


def _with_call_ids(message: AIMessage) -> AIMessage:
    # Tool results are matched to calls by id; a provider that omits ids would make results
    # unmatchable, so give such calls one.
    if all(call.get("id") for call in message.tool_calls) and all(
        call.get("id") for call in message.invalid_tool_calls
    ):
        return message
    return message.model_copy(
        update={
            "tool_calls": [_with_id(call) for call in message.tool_calls],
            "invalid_tool_calls": [_with_id(call) for call in message.invalid_tool_calls],
        }
    )


def _with_id(call: Any) -> Any:
    return call if call.get("id") else {**call, "id": f"call_{uuid.uuid4().hex[:16]}"}


async def call_llm(run: Run) -> RunResult | None:
    """Run before-model middleware, call the model, append its reply, run after-model middleware.

    When the model fails for good, the ``on_model_error`` hooks may offer a new state (a
    summarised history after a context overflow); the call is then made once more with it.

    Skipped when the last AI message still has tool calls without results (resuming after an
    approval, or restoring such a state): the model already asked for those tools.
    """
    if run.state.pending_tool_calls():
        return None
    agent = run.agent
    state = run.state
    for mw in agent.before_model_hooks:
        since = cancel_requests()
        try:
            changed = await mw.before_model(state)
        except BaseException as exc:  # the hook's failure, whatever it is: see _containment.py
            raise _hook_failed(run, mw, "before_model", exc, since) from exc
        if changed is not None:
            state = changed
    prompt = agent.system_prompt
    retried = False
    while True:
        messages = [SystemMessage(prompt), *state.messages] if prompt else list(state.messages)
        try:
            reply = _with_call_ids(await call_model(run, messages))
            break
        except ModelCallFailed as exc:
            recovered = None if retried else await _recover(run, state, exc)
            if recovered is None:
                run.sink.emit(ChainError(agent_id=agent.agent_id, error=str(exc)))
                raise
            # Committed now: a retry that fails too keeps what the hooks did (a summary),
            # so the next run starts from the smaller state.
            retried, state = True, recovered
            run.commit(state)
    run.model_calls += 1
    run.sink.emit(LLMMessage(agent_id=agent.agent_id, message=reply))
    if reply.usage_metadata:
        run.sink.emit(LLMTokenUsage(agent_id=agent.agent_id, usage=dict(reply.usage_metadata)))
    run.commit(state.append(reply), reply)
    for mw in agent.after_model_hooks:
        since = cancel_requests()
        try:
            outcome = await mw.after_model(run.state)
        except BaseException as exc:
            raise _hook_failed(run, mw, "after_model", exc, since) from exc
        if isinstance(outcome, Interrupt):
            run.pending_interrupt = outcome
            break
        if outcome is not None:
            run.commit(outcome)
    return None


async def _recover(run: Run, state: State, failure: ModelCallFailed) -> State | None:
    """The state the ``on_model_error`` hooks offer for one more model call, or None."""
    hooks = [mw for mw in run.agent.middleware_instances if mw.overrides("on_model_error")]
    error = failure.__cause__ or failure
    changed: State | None = None
    for mw in hooks:
        since = cancel_requests()
        try:
            offered = await mw.on_model_error(changed or state, error)
        except BaseException as exc:  # the hook's failure, whatever it is: see _containment.py
            hook_error = _hook_failed(run, mw, "on_model_error", exc, since)
            run.sink.emit(ChainError(agent_id=run.agent.agent_id, error=str(failure)))
            raise hook_error from exc
        if offered is not None:
            changed = offered
    return changed


def _hook_failed(run: Run, mw: Middleware, hook: str, exc: BaseException, since: int) -> RunError:
    """The run's error for a middleware hook that raised ``exc``, anything but a cancellation
    of the run or a :class:`Halt` (which are re-raised instead)."""
    reraise_cancellation(exc, since)
    if isinstance(exc, Halt):
        raise exc  # the mode ends the run cleanly
    where = f"{mw.name}.{hook}"
    log_contained(exc, where, run.agent.agent_id)
    return RunError(f"{where} failed: {describe(exc)}")


async def check_max_runs(run: Run) -> RunResult | None:
    """Fail when the model wants tools again after ``max_runs`` model calls."""
    limit = run.agent.max_runs
    if run.model_calls >= limit and run.state.pending_tool_calls():
        raise MaxRunsExceeded(
            f"the model asked for tools again after max_runs={limit} model calls; "
            "it is probably looping. Raise Agent(max_runs=...) if the task really needs more"
        )
    return None


def _apply_edits(run: Run, interrupt: Interrupt) -> None:
    edits = {
        request.tool_call_id: decision.arguments
        for request, decision in zip(interrupt.action_requests, run.decisions or (), strict=True)
        if isinstance(decision, Edit)
    }
    state = run.state.replace(interrupt=None)
    if edits:
        messages = list(state.messages)
        for index in range(len(messages) - 1, -1, -1):
            message = messages[index]
            if isinstance(message, AIMessage):
                calls = [
                    {**call, "args": edits[call_id]}
                    if (call_id := call.get("id") or "") in edits
                    else call
                    for call in message.tool_calls
                ]
                messages[index] = message.model_copy(update={"tool_calls": calls})
                break
        state = state.replace(messages=messages)
    run.commit(state)


async def check_pre_tool_hitl(run: Run) -> RunResult | None:
    """Pause before tools run when after-model middleware asked for approval; on resume, apply
    the human decisions (edits rewrite the call's arguments in the history). Decisions for
    suspended tool calls go to those calls (``ToolContext.resume``)."""
    if run.decisions is not None:
        interrupt = run.state.interrupt
        if interrupt is not None and SUSPENDED_CALLS in interrupt.data:
            run.tool_resume = _split_decisions(interrupt, run.decisions)
            run.commit(run.state.replace(interrupt=None))
        elif interrupt is not None:
            run.tool_decisions = {
                request.tool_call_id: decision
                for request, decision in zip(interrupt.action_requests, run.decisions, strict=True)
            }
            _apply_edits(run, interrupt)
        run.decisions = None
        return None
    interrupt = run.pending_interrupt
    if interrupt is None:
        return None
    run.pending_interrupt = None
    state = run.state.replace(interrupt=interrupt)
    run.commit(state)
    return Interrupted(state=state, interrupt=interrupt)


#: Key of ``Interrupt.data`` listing the tool calls that suspended (``ToolContext.suspend``).
SUSPENDED_CALLS = "suspended_tool_calls"


def _suspended_interrupt(parts: list[tuple[str, Interrupt]]) -> Interrupt:
    """One interrupt for every suspended call of a turn: their action requests in call order,
    and which call each slice of them belongs to."""
    kinds = {interrupt.kind for _, interrupt in parts}
    calls = [
        {
            "tool_call_id": call_id,
            "kind": interrupt.kind,
            "requests": len(interrupt.action_requests),
            "data": interrupt.data,
        }
        for call_id, interrupt in parts
    ]
    data: dict[str, Any] = dict(parts[0][1].data) if len(parts) == 1 else {}
    data[SUSPENDED_CALLS] = calls
    return Interrupt(
        action_requests=tuple(r for _, interrupt in parts for r in interrupt.action_requests),
        kind=kinds.pop() if len(kinds) == 1 else "tools",
        data=data,
    )


def _split_decisions(interrupt: Interrupt, decisions: Sequence[Decision]) -> dict[str, ToolResume]:
    resume: dict[str, ToolResume] = {}
    start = 0
    for part in interrupt.data[SUSPENDED_CALLS]:
        end = start + int(part["requests"])
        resume[str(part["tool_call_id"])] = ToolResume(
            decisions=tuple(decisions[start:end]), data=part["data"]
        )
        start = end
    return resume


def _rejected(call: ToolCall, decision: Reject) -> ToolOutcome:
    reason = decision.message or "The user rejected this tool call."
    message = ToolMessage(
        content=f"Rejected by the user: {reason}",
        tool_call_id=call["id"] or "",
        name=call["name"],
        status="error",
    )
    return ToolOutcome(message=message, value=None, error=f"rejected: {reason}", context=None)


def _responded(call: ToolCall, decision: Respond) -> ToolOutcome:
    # The human answered in place of the tool: their text is the call's result.
    message = ToolMessage(
        content=decision.message, tool_call_id=call["id"] or "", name=call["name"]
    )
    return ToolOutcome(message=message, value=decision.message, error=None, context=None)


async def execute_tools(run: Run) -> RunResult | None:
    """Run the pending tool calls concurrently, each with its timeout, and append the results in
    call order. Failures become error results for the model; only cancellation propagates."""
    run.tool_outcomes = []
    calls: list[Any] = run.state.pending_tool_calls()
    if not calls:
        return None
    agent = run.agent
    agent_id = agent.agent_id
    emit = run.sink.emit
    turn_state = run.state
    resume, run.tool_resume = run.tool_resume, {}
    sink = run.sink

    def wants_debug() -> bool:
        return sink.debug

    finished: dict[str, ToolOutcome] = {}
    run.tools_in_flight = finished

    async def one(call: ToolCall) -> None:
        call_id = call["id"] or ""
        decision = run.tool_decisions.get(call_id)
        if "invalid" in call:
            outcome = invalid_call_outcome(call)
        elif isinstance(decision, Reject):
            outcome = _rejected(call, decision)
        elif isinstance(decision, Respond):
            outcome = _responded(call, decision)
        else:
            tool = agent.all_tools.get(call["name"])
            if tool is not None:
                emit(
                    ToolExecutionStarted(
                        agent_id=agent_id,
                        tool_call_id=call_id,
                        name=call["name"],
                        arguments=call["args"],
                    )
                )
            context = ToolContext(
                agent_id=agent_id,
                tool_call_id=call_id,
                tool_name=call["name"],
                state=turn_state,
                emit=emit,
                services=run.services,
                agent=agent,
                resume=resume.pop(call_id, None),
                tool_context=run.tool_context,
                message_queue=run.message_queue,
                debug=wants_debug,
            )
            outcome = await invoke_tool(
                tool,
                call,
                timeout=tool_timeout(tool, agent.tool_timeout) if tool else None,
                context=context,
                known=agent.all_tools,
                metadata=run.metadata,
                callbacks=agent.callbacks,
            )
            if context.suspended is not None:
                outcome = dataclasses.replace(outcome, error=None, context=context)
        finished[call_id] = outcome
        if outcome.suspended:
            return
        if outcome.error is None:
            emit(
                ToolExecutionCompleted(
                    agent_id=agent_id,
                    tool_call_id=call_id,
                    name=call["name"],
                    result=outcome.message.content,
                )
            )
        else:
            emit(
                ToolExecutionFailed(
                    agent_id=agent_id,
                    tool_call_id=call_id,
                    name=call["name"],
                    error=outcome.error,
                )
            )

    if len(calls) == 1:
        await one(calls[0])
    else:
        async with asyncio.TaskGroup() as group:
            for call in calls:
                group.create_task(one(call))
    run.tools_in_flight = None
    run.tool_decisions = {}
    run.tool_outcomes = [(call, finished[call["id"]]) for call in calls]
    results = [outcome.message for _, outcome in run.tool_outcomes if not outcome.suspended]
    run.commit(run.state.append(*results), *results)
    return None


async def propagate_state(run: Run) -> RunResult | None:
    """Apply the state changes tools asked for (``ToolContext.update_state``), in call order."""
    updates = [
        update
        for _, outcome in run.tool_outcomes
        if outcome.context is not None
        for update in outcome.context.updates
    ]
    if not updates:
        return None
    before = run.state
    state = before
    for update in updates:
        state = update(state)
    if state.todos != before.todos:
        run.sink.emit(TodosUpdated(agent_id=run.agent.agent_id, todos=list(state.todos)))
    run.commit(state)
    return None


async def check_tool_interrupts(run: Run) -> RunResult | None:
    """End the run when a tool raised :class:`Halt` (before any pause: the calls a halt leaves
    waiting are answered as not run); otherwise pause when tools suspended
    (``ToolContext.suspend``) or asked for it (``ToolContext.request_interrupt``).

    Raises:
        Halt: a tool of the turn halted the run (the mode ends it cleanly).
    """
    for _, outcome in run.tool_outcomes:
        if outcome.halt is not None:
            raise Halt(outcome.halt)
    suspended = [
        (call["id"] or "", outcome.context.suspended)
        for call, outcome in run.tool_outcomes
        if outcome.context is not None and outcome.context.suspended is not None
    ]
    if suspended:
        interrupt = _suspended_interrupt(suspended)
        state = run.state.replace(interrupt=interrupt)
        run.commit(state)
        return Interrupted(state=state, interrupt=interrupt)
    for _, outcome in run.tool_outcomes:
        if outcome.context is not None and outcome.context.interrupt is not None:
            interrupt = outcome.context.interrupt
            state = run.state.replace(interrupt=interrupt)
            run.commit(state)
            return Interrupted(state=state, interrupt=interrupt)
    return None


async def check_until_tool(run: Run) -> RunResult | None:
    """End the run with the ``until_tool`` result as soon as one of those tools ran
    successfully (the first of the turn's calls that did)."""
    targets = run.agent.until_tools
    if not targets:
        return None
    for call, outcome in run.tool_outcomes:
        if call["name"] in targets and outcome.error is None:
            return Done(state=run.state, value=outcome.value)
    return None


async def continue_or_done(run: Run) -> RunResult | None:
    """End the run when the model answered without tool calls; otherwise loop."""
    messages = run.state.messages
    last = messages[-1] if messages else None
    if isinstance(last, AIMessage) and not last.tool_calls:
        targets = run.agent.until_tools
        if targets:
            named = " or ".join(targets)
            raise UntilToolNotCalled(
                f"the model finished without calling {named}; tell it in the prompt to call "
                f"{named} with its final result"
            )
        return Done(state=run.state)
    return None
