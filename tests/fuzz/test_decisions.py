"""Fuzzing ``AgentHandle.resume``: random decisions against an agent waiting for approval.

Each example starts an agent whose model calls one to three protected tools in one turn
(``HumanInTheLoop``, each tool with its own random ``allowed_decisions``), and throws a few
random decision lists at it: wrong containers, wrong counts, unknown types and fields, edits
without arguments, rejections with odd messages, junk elements, decision objects with bad fields.
An independent oracle (:func:`expected`, the documented rules) says whether each list is valid.

* Refused (the oracle agrees it is invalid): ``InvalidDecision`` with a message, and nothing
  changed — the agent is still interrupted with the same state, and no tool ran.
* Accepted (the oracle agrees it is valid): the run finishes, every call got the decision it was
  given (approve: the original arguments, edit: the edited ones, reject: no run, an error
  result), and a further ``resume`` raises ``InvalidTransition``.
* Whatever happened, a valid decision afterwards still resumes the agent to ``idle``.

Among them are the inputs of three defects this campaign found (``test_found.py``): decision
objects whose ``type`` disagrees with their class (``Edit(type="approve")``), edited arguments
that are not JSON (NaN, sets, bytes, non-string keys), and ``resume(None)``.
"""

from __future__ import annotations

import asyncio
import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage, ToolMessage

from sagents import (
    Agent,
    AgentHandle,
    Approve,
    Edit,
    InvalidDecision,
    InvalidTransition,
    PendingSubscription,
    Reject,
    RetryPolicy,
    Runtime,
    State,
    Status,
    get_tool_context,
)
from sagents.events import StatusChanged
from sagents.middleware import HumanInTheLoop
from sagents.testing import Reply, ScriptedChatModel, ToolCall
from tests.fuzz import fuzz_settings

KINDS = ("approve", "edit", "reject")
TOOLS = ("delete", "archive", "publish")

# -- the agent -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """A protected tool call the model makes, and who may decide what about it."""

    tool: str
    path: str
    allowed: tuple[str, ...]


def protected_tool(name: str, ran: dict[str, str]) -> Any:
    """A tool called ``name`` that records, in ``ran``, the path each call got."""

    async def tool(path: str) -> str:
        ran[get_tool_context().tool_call_id] = path
        return f"{name} {path}"

    tool.__name__ = name
    tool.__doc__ = f"{name.capitalize()} a file."
    return tool


@dataclass
class Waiting:
    """A started agent, interrupted on ``calls``; ``ran`` maps call id to the path a tool got."""

    handle: AgentHandle
    events: PendingSubscription
    calls: list[Call]
    ran: dict[str, str]

    @property
    def call_ids(self) -> list[str]:
        return [f"call-{i}" for i in range(len(self.calls))]

    async def until(self, *statuses: Status) -> Status:
        """Wait for the next ``StatusChanged`` to one of ``statuses`` (a hang is a failure)."""
        async with asyncio.timeout(10):
            async for event_ in self.events:
                if isinstance(event_, StatusChanged) and event_.status in statuses:
                    return event_.status
        raise AssertionError(f"the agent stopped before reaching {statuses}")


async def interrupted_agent(runtime: Runtime, calls: list[Call]) -> Waiting:
    """Start an agent whose model makes ``calls`` in one turn, and wait until it is
    interrupted for them; after the decisions, the model answers "done"."""
    ran: dict[str, str] = {}
    policies = {call.tool: {"allowed_decisions": list(call.allowed)} for call in calls}
    model = ScriptedChatModel(
        script=[
            Reply(
                tool_calls=[
                    ToolCall(name=call.tool, args={"path": call.path}, id=f"call-{i}")
                    for i, call in enumerate(calls)
                ]
            ),
            Reply(text="done"),
        ]
    )
    agent = Agent(
        agent_id="fuzzed",
        model=model,
        tools=[protected_tool(name, ran) for name in sorted(policies)],
        middleware=[HumanInTheLoop(interrupt_on=policies)],
        retry=RetryPolicy(max_attempts=1),
    )
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent, State(messages=[HumanMessage("go")]), initial_subscribers=[events]
    )
    await handle.execute()
    waiting = Waiting(handle=handle, events=events, calls=calls, ran=ran)
    assert await waiting.until(Status.INTERRUPTED, Status.ERROR) is Status.INTERRUPTED
    return waiting


@dataclass(frozen=True)
class Setup:
    """The protected calls of one example."""

    calls: list[Call]


_allowed = st.lists(st.sampled_from(KINDS), min_size=1, max_size=3, unique=True).map(
    lambda kinds: tuple(k for k in KINDS if k in kinds)
)


@st.composite
def setups(draw: st.DrawFn) -> Setup:
    """One to three protected calls, each tool with its own allowed decisions."""
    count = draw(st.integers(1, 3))
    tools = draw(st.lists(st.sampled_from(TOOLS), min_size=count, max_size=count))
    allowed = {tool: draw(_allowed) for tool in sorted(set(tools))}
    return Setup(calls=[Call(tool, f"/file-{i}", allowed[tool]) for i, tool in enumerate(tools)])


# -- random decisions ----------------------------------------------------------------------------

_odd_text = st.text(
    st.characters() | st.characters(categories=["Cs"]) | st.sampled_from(["\x00", "\u2028"]),
    max_size=12,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _odd_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_odd_text, children),
    max_leaves=8,
)
#: What JSON cannot hold (or a store would not keep as given).
not_json = st.builds(set) | st.sampled_from(
    [float("nan"), float("inf"), -float("inf"), b"/a", ("/a",)]
)
#: Edited arguments: often the tool's own shape, sometimes anything JSON, sometimes not JSON.
edited_arguments = st.one_of(
    st.fixed_dictionaries({"path": _odd_text | json_values}),
    st.dictionaries(_odd_text | st.just("path"), json_values, max_size=3),
    st.dictionaries(_odd_text | st.integers() | st.none(), json_values | not_json, max_size=2),
)
junk = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | _odd_text
    | st.sampled_from(["approve", "Approve", " edit", "REJECT", b"approve", ()])
    | st.builds(list)
    | st.builds(dict)  # built, not shared: a run may keep (and a tool change) what it got
    | st.lists(json_values, max_size=2)
)
_kinds = st.sampled_from(KINDS)


@st.composite
def mapping_decisions(draw: st.DrawFn) -> Mapping[str, Any]:
    """A decision as JSON: often close to valid, with a random field wrong, missing or added."""
    decision: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        decision["type"] = draw(_kinds | junk) if draw(st.integers(0, 4)) else draw(junk)
    kind = decision.get("type")
    if (kind == "edit" and draw(st.integers(0, 5))) or not draw(st.integers(0, 6)):
        decision["arguments"] = draw(edited_arguments) if draw(st.integers(0, 3)) else draw(junk)
    if (kind == "reject" and draw(st.booleans())) or not draw(st.integers(0, 6)):
        decision["message"] = draw(st.none() | _odd_text | junk)
    if not draw(st.integers(0, 8)):
        decision[draw(_odd_text | st.sampled_from(["ref", "Type", "args", "id"]))] = draw(junk)
    if not draw(st.integers(0, 9)):
        return types.MappingProxyType(decision)  # a Mapping that is not a dict
    return decision


#: Decision objects, mostly with the ``type`` of their class, sometimes another.
_object_types = st.sampled_from(KINDS) | junk
object_decisions = st.one_of(
    st.builds(Approve),
    st.builds(Edit, arguments=edited_arguments | junk),
    st.builds(Reject, message=st.none() | _odd_text | junk),
    st.builds(Approve, type=_object_types),
    st.builds(Edit, arguments=edited_arguments, type=_object_types),
    st.builds(Reject, message=st.none() | _odd_text, type=_object_types),
)
elements = mapping_decisions() | object_decisions | junk


@st.composite
def valid_element(draw: st.DrawFn, call: Call) -> Any:
    """A decision ``call`` allows, as an object or as JSON."""
    kind = draw(st.sampled_from(call.allowed))
    as_object = draw(st.booleans())
    if kind == "approve":
        return Approve() if as_object else {"type": "approve"}
    if kind == "edit":
        arguments = draw(edited_arguments)
        return Edit(arguments=arguments) if as_object else {"type": "edit", "arguments": arguments}
    message = draw(st.none() | _odd_text)
    if as_object:
        return Reject(message=message)
    return {"type": "reject"} if message is None else {"type": "reject", "message": message}


@st.composite
def decision_lists(draw: st.DrawFn, calls: Sequence[Call]) -> Any:
    """What a caller may pass to ``resume``: a third of the time a valid list (maybe with one
    element spoiled), otherwise random, mostly of the right length."""
    count = len(calls)
    if not draw(st.integers(0, 2)):
        items = [draw(valid_element(call)) for call in calls]
        if draw(st.booleans()):
            items[draw(st.integers(0, count - 1))] = draw(elements)
        return tuple(items) if not draw(st.integers(0, 4)) else items
    size = draw(st.sampled_from([count] * 6 + [0, count - 1, count + 1, 100]))
    items = draw(st.lists(elements, min_size=size, max_size=size))
    shape = draw(st.integers(0, 12))
    if shape == 0:
        return tuple(items)
    if shape == 1:
        return draw(junk | st.builds(dict) | st.just(range(count)))
    if shape == 2:
        return iter(items)  # an iterator is not a sequence
    if shape == 3 and items:
        return items[0]  # one decision, not a list of them
    return items


# -- the oracle ----------------------------------------------------------------------------------


def is_json(value: Any, depth: int = 0) -> bool:
    """JSON a store keeps as given: string keys, finite numbers, lists and dicts only, nested
    at most 100 levels."""
    if depth > 100:
        return False
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(is_json(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json(v, depth + 1) for k, v in value.items())
    return False


def is_json_object(value: Any) -> bool:
    return isinstance(value, dict) and is_json(value)


def effective(raw: Any) -> tuple[str, Any] | None:
    """What one decision means, ``(kind, arguments or message)``, or None when malformed."""
    for cls, kind in ((Approve, "approve"), (Edit, "edit"), (Reject, "reject")):
        if isinstance(raw, cls) and raw.type != kind:
            return None  # applied by its class, allowed by its type: the two must agree
    if isinstance(raw, Approve):
        return ("approve", None)
    if isinstance(raw, Edit):
        return ("edit", raw.arguments) if is_json_object(raw.arguments) else None
    if isinstance(raw, Reject):
        return ("reject", raw.message) if isinstance(raw.message, str | None) else None
    if not isinstance(raw, Mapping):
        return None
    kind = raw.get("type")
    if set(raw) - {"type", "arguments", "message"} or kind not in KINDS:
        return None
    if kind == "approve":
        return ("approve", None) if set(raw) == {"type"} else None
    if kind == "edit":
        arguments = raw.get("arguments")
        return ("edit", arguments) if is_json_object(arguments) and "message" not in raw else None
    message = raw.get("message")
    return (
        ("reject", message) if isinstance(message, str | None) and "arguments" not in raw else None
    )


def expected(decisions: Any, calls: Sequence[Call]) -> list[tuple[str, Any]] | None:
    """The decision each call gets, or None when ``resume`` must refuse ``decisions``."""
    if not isinstance(decisions, list | tuple) or len(decisions) != len(calls):
        return None
    meanings = [effective(raw) for raw in decisions]
    for meaning, call in zip(meanings, calls, strict=True):
        if meaning is None or meaning[0] not in call.allowed:
            return None
    return [m for m in meanings if m is not None]


def a_valid_decision(call: Call) -> Approve | Edit | Reject:
    kind = call.allowed[0]
    if kind == "approve":
        return Approve()
    if kind == "edit":
        return Edit(arguments={"path": "/edited"})
    return Reject(message="no")


# -- checks --------------------------------------------------------------------------------------


async def check_refused(waiting: Waiting, decisions: Any, before: State) -> None:
    handle = waiting.handle
    with pytest.raises(InvalidDecision) as refused:
        await handle.resume(decisions)
    message = str(refused.value)
    assert message.strip(), "an InvalidDecision without a message"
    event(f"refused: {message.split(':')[0][:30]}")
    assert await handle.get_status() is Status.INTERRUPTED
    assert (await handle.info()).has_interrupt
    assert await handle.get_state() == before, "a refused resume changed the state"
    assert waiting.ran == {}, "a tool ran although the decisions were refused"


async def check_applied(waiting: Waiting, meanings: list[tuple[str, Any]]) -> None:
    assert await waiting.until(Status.IDLE, Status.ERROR) is Status.IDLE
    state = await waiting.handle.get_state()
    assert state.interrupt is None
    results = {m.tool_call_id: m for m in state.messages if isinstance(m, ToolMessage)}
    for call_id, call, (kind, value) in zip(waiting.call_ids, waiting.calls, meanings, strict=True):
        result = results[call_id]  # every call has its result
        if kind == "approve":
            assert waiting.ran.get(call_id) == call.path
        elif kind == "reject":
            assert call_id not in waiting.ran
            assert result.status == "error"
            assert str(result.content).startswith("Rejected by the user")
        elif call_id in waiting.ran:
            assert waiting.ran[call_id] == value.get("path")
        else:  # edited into arguments the tool does not take: an error result
            assert result.status == "error"
    assert len(waiting.ran) <= len(waiting.calls)


@given(setup=setups(), data=st.data())
@fuzz_settings(60)
async def test_random_decisions_are_refused_cleanly_or_applied_exactly(
    setup: Setup, data: st.DataObject
) -> None:
    async with Runtime() as runtime:
        waiting = await interrupted_agent(runtime, setup.calls)
        handle = waiting.handle
        resumed = False
        for _ in range(data.draw(st.integers(1, 4), label="attempts")):
            decisions = data.draw(decision_lists(setup.calls), label="decisions")
            meanings = expected(decisions, setup.calls)
            before = await handle.get_state()
            if resumed:
                # Nothing waits any more: any resume is the wrong transition, and harmless.
                with pytest.raises(InvalidTransition, match="resume"):
                    await handle.resume(decisions)
                assert await handle.get_state() == before
                continue
            if meanings is None:
                await check_refused(waiting, decisions, before)
                continue
            event("accepted")
            await handle.resume(decisions)
            await check_applied(waiting, meanings)
            resumed = True
        if not resumed:
            # After any number of refusals, a valid decision still resumes the run.
            valid = [a_valid_decision(call) for call in setup.calls]
            await handle.resume(valid)
            await check_applied(waiting, [m for m in map(effective, valid) if m is not None])


@given(setup=setups(), garbage=st.lists(st.lists(elements, max_size=4) | junk, max_size=3))
@fuzz_settings(15)
async def test_decisions_while_running_or_done_are_refused(
    setup: Setup, garbage: list[Any]
) -> None:
    async with Runtime() as runtime:
        waiting = await interrupted_agent(runtime, setup.calls)
        await waiting.handle.resume([a_valid_decision(call) for call in setup.calls])
        # Resumed (running or already idle): there is nothing to decide about.
        for decisions in garbage:
            with pytest.raises(InvalidTransition):
                await waiting.handle.resume(decisions)
        assert await waiting.until(Status.IDLE, Status.ERROR) is Status.IDLE


@given(decisions=st.lists(elements, max_size=3) | junk)
@fuzz_settings(20)
async def test_decisions_for_an_agent_that_is_not_interrupted_are_refused(decisions: Any) -> None:
    async with Runtime() as runtime:
        model = ScriptedChatModel(script=[Reply(text="hello")])
        agent = Agent(agent_id="idle", model=model, retry=RetryPolicy(max_attempts=1))
        handle = await runtime.start_agent(agent, State(messages=[HumanMessage("hi")]))
        before = await handle.get_state()
        with pytest.raises(InvalidTransition, match="nothing to resume"):
            await handle.resume(decisions)
        assert await handle.get_status() is Status.IDLE
        assert await handle.get_state() == before


@given(setup=setups(), data=st.data())
@fuzz_settings(20)
async def test_concurrent_random_decisions_resume_at_most_once(
    setup: Setup, data: st.DataObject
) -> None:
    """Several callers (two tabs, a retry) decide at once: at most one list wins."""
    async with Runtime() as runtime:
        waiting = await interrupted_agent(runtime, setup.calls)
        attempts = data.draw(
            st.lists(
                decision_lists(setup.calls) | st.just([a_valid_decision(c) for c in setup.calls]),
                min_size=2,
                max_size=5,
            ),
            label="attempts",
        )
        outcomes = await asyncio.gather(
            *(waiting.handle.resume(a) for a in attempts), return_exceptions=True
        )
        accepted = [a for a, o in zip(attempts, outcomes, strict=True) if o is None]
        for outcome in outcomes:
            assert outcome is None or isinstance(outcome, InvalidDecision | InvalidTransition), (
                outcome
            )
        assert len(accepted) <= 1
        if accepted:
            meanings = expected(accepted[0], setup.calls)
            assert meanings is not None, f"accepted invalid decisions {accepted[0]!r:.300}"
            await check_applied(waiting, meanings)
        else:
            assert all(expected(a, setup.calls) is None for a in attempts)
            assert await waiting.handle.get_status() is Status.INTERRUPTED
