"""How a run ends: :class:`Done`, :class:`Interrupted` or :class:`Failed`.

Cancellation is not a result: a cancelled run raises ``asyncio.CancelledError`` like any other
asyncio operation, and its last consistent state is on the :class:`~sagents.execution.Run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from sagents._errors import RunError
from sagents._interrupt import Interrupt
from sagents._state import State
from sagents._status import Status

__all__ = ["Done", "Failed", "Interrupted", "RunResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """The model answered without tool calls, ``until_tool`` was called, or the run was
    halted (``raise Halt(reason)``).

    Attributes:
        value: the ``until_tool`` result as a structured value, else None.
        halted: the reason of a halt, else None.
    """

    state: State
    value: Any = None
    halted: str | None = None

    @property
    def status(self) -> Status:
        return Status.IDLE


@dataclass(frozen=True, slots=True, kw_only=True)
class Interrupted:
    """The run waits for human decisions on ``interrupt`` (also in ``state.interrupt``)."""

    state: State
    interrupt: Interrupt

    @property
    def status(self) -> Status:
        return Status.INTERRUPTED


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """The run failed; ``state`` is the state before the failing step."""

    state: State
    error: RunError

    @property
    def status(self) -> Status:
        return Status.ERROR


RunResult: TypeAlias = Done | Interrupted | Failed
