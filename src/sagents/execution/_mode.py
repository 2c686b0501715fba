"""Modes: an execution pipeline as an explicit sequence of steps.

A step is ``async def step(run: Run) -> RunResult | None``: it reads and commits ``run.state``
and returns None to hand over to the next step, or a result to end the run. A mode runs its steps
in order and starts again from the first one until a step returns a result, so the default loop
reads as its definition::

    DEFAULT_MODE = Mode(name="agent", steps=(
        call_llm, check_max_runs, check_pre_tool_hitl, execute_tools,
        propagate_state, check_tool_interrupts, check_until_tool, continue_or_done,
    ))

A custom mode reuses these steps, drops some, or adds its own. A step that raises a
:class:`RunError` (or crashes, with anything: ``BaseException`` included) ends the run as
:class:`Failed` with the state as it was before that step, except :class:`Halt`, which ends it
cleanly as :class:`Done` (see ``_halt.py``); a cycle that neither calls the model nor
changes the state ends it too, so a mode missing ``continue_or_done`` fails loudly instead of
spinning. Only a cancellation of the task ends a run without a result (see ``_containment.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, SupportsIndex, TypeAlias

from sagents._errors import InvalidAgent, RunError
from sagents.execution._containment import (
    cancel_requests,
    describe,
    log_contained,
    reraise_cancellation,
)
from sagents.execution._halt import Halt, halted
from sagents.execution._result import Failed, RunResult
from sagents.execution._steps import (
    call_llm,
    check_max_runs,
    check_pre_tool_hitl,
    check_tool_interrupts,
    check_until_tool,
    continue_or_done,
    execute_tools,
    propagate_state,
)

if TYPE_CHECKING:
    from sagents.execution._run import Run

__all__ = ["DEFAULT_MODE", "Mode", "Step"]

Step: TypeAlias = Callable[["Run"], Awaitable[RunResult | None]]


@dataclass(frozen=True, slots=True, init=False)
class Mode:
    """A named sequence of steps, repeated until one returns a result."""

    name: str
    steps: tuple[Step, ...]

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[Any, ...]:
        # The default pipeline is pickled as a name: agents sent to another process (a
        # distributed backend's host) share that process's one, as agents do in one process.
        if self is DEFAULT_MODE:
            return "DEFAULT_MODE"
        return object.__reduce_ex__(self, protocol)  # (slots: no zero-argument super)

    def __init__(self, *, name: str, steps: Sequence[Step]) -> None:
        if not steps:
            raise InvalidAgent("mode", f"mode {name!r} has no steps")
        for step in steps:
            if not callable(step):
                raise InvalidAgent("mode", f"mode {name!r}: {step!r} is not a step function")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "steps", tuple(steps))

    async def run(self, run: Run) -> RunResult:
        """Drive ``run`` through the steps until one of them ends it.

        Raises:
            asyncio.CancelledError: the task was cancelled (only then: a ``CancelledError`` a
                step raises without a cancel request is that step's failure).
        """
        since = cancel_requests()
        while True:
            before = (run.model_calls, run.state)
            for step in self.steps:
                try:
                    result = await step(run)
                except BaseException as exc:  # the step's failure, whatever it is
                    reraise_cancellation(exc, since)
                    if isinstance(exc, Halt):  # not a failure: a clean end, on purpose
                        return halted(run, exc.reason)
                    return Failed(state=run.state, error=_step_error(step, exc, run))
                if cancel_requests() > since:
                    # The step swallowed the run's cancellation (a tool or a hook caught it and
                    # returned): what it committed stays, and the run still stops, as asked.
                    raise asyncio.CancelledError
                if result is not None:
                    return result
            if run.model_calls == before[0] and run.state is before[1]:
                return Failed(
                    state=run.state,
                    error=RunError(
                        f"mode {self.name!r} made no progress in a full cycle "
                        "(does it end with continue_or_done?)"
                    ),
                )


def _step_error(step: Step, exc: BaseException, run: Run) -> RunError:
    if isinstance(exc, RunError):
        return exc
    name = getattr(step, "__name__", repr(step))
    log_contained(exc, f"step {name}", run.agent.agent_id)
    error = RunError(f"step {name} crashed: {describe(exc)}")
    error.__cause__ = exc
    return error


DEFAULT_MODE = Mode(
    name="agent",
    steps=(
        call_llm,
        check_max_runs,
        check_pre_tool_hitl,
        execute_tools,
        propagate_state,
        check_tool_interrupts,
        check_until_tool,
        continue_or_done,
    ),
)
