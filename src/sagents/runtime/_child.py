"""The vocabulary of supervision: children, their specs, restart types, strategies, events.

A *child* is anything with ``async run(ready)`` and ``async stop()``: ``run`` calls
``ready.started(value)`` once initialised and then runs until it returns (a normal exit), raises
(a crash) or is cancelled (killed by its supervisor). A :class:`ChildSpec` tells a supervisor how
to build a fresh child for each (re)start and when to bring it back. The engine that applies
these rules is ``_supervisor.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeAlias

from sagents._errors import ConfigurationError

__all__ = [
    "Child",
    "ChildExited",
    "ChildInfo",
    "ChildRestarted",
    "ChildSpec",
    "ChildStarted",
    "ExitReason",
    "GaveUp",
    "Ready",
    "RestartType",
    "Strategy",
    "SupervisorEvent",
]


# -- vocabulary ---------------------------------------------------------------------------------


class RestartType(StrEnum):
    """Whether a child that exited is started again."""

    PERMANENT = "permanent"
    """Always restarted."""
    TRANSIENT = "transient"
    """Restarted only after a crash; a normal exit leaves it stopped (but listed)."""
    TEMPORARY = "temporary"
    """Never restarted, and removed from the children when it exits."""


class Strategy(StrEnum):
    """Which children are restarted with one that exited."""

    ONE_FOR_ONE = "one_for_one"
    """Only that child."""
    REST_FOR_ONE = "rest_for_one"
    """That child and every child added after it (they depend on it)."""
    ONE_FOR_ALL = "one_for_all"
    """Every child."""


class ExitReason(StrEnum):
    """Why a child incarnation ended."""

    NORMAL = "normal"
    """``run()`` returned on its own."""
    CRASH = "crash"
    """``run()`` raised, failed before ready, or was cancelled by someone else."""
    SHUTDOWN = "shutdown"
    """The supervisor stopped it (stop, terminate, restart of a group, giving up)."""


class Ready(Protocol):
    """Handed to :meth:`Child.run`; the child calls :meth:`started` once it is initialised."""

    def started(self, value: Any = None) -> None:
        """Report the child ready; ``value`` is what ``start_child``/``restart_child`` return."""


class Child(Protocol):
    """One incarnation of a supervised thing (a :class:`Supervisor` is one too)."""

    async def run(self, ready: Ready) -> None:
        """Run until done. Returning is a normal exit, raising a crash, cancellation a kill."""

    async def stop(self) -> None:
        """Ask for a graceful stop; ``run()`` should then return soon."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """How to start and stop one child.

    Attributes:
        id: unique among the supervisor's children.
        start: builds a fresh :class:`Child` for each start and restart.
        restart: whether the child comes back after it exits.
        shutdown_timeout: seconds allowed for ``stop()`` and ``run()`` to finish before the task
            is cancelled; ``0`` cancels at once without calling ``stop()`` (OTP's
            ``brutal_kill``); ``None`` (or ``math.inf``) waits forever, as a nested supervisor
            usually should.

    Raises:
        ConfigurationError: ``id`` is not hashable, ``start`` is not callable, ``restart`` is not
            a restart type, or ``shutdown_timeout`` is negative.
    """

    id: Hashable
    start: Callable[[], Child]
    restart: RestartType = RestartType.PERMANENT
    shutdown_timeout: float | None = 5.0

    def __post_init__(self) -> None:
        try:
            hash(self.id)
        except TypeError as exc:
            raise ConfigurationError(f"ChildSpec.id must be hashable, got {self.id!r}") from exc
        if not callable(self.start):
            raise ConfigurationError(
                f"ChildSpec {self.id!r}: start must be a callable returning a fresh Child"
            )
        try:
            # frozen: coercing "transient" to the enum is the one write __post_init__ makes.
            object.__setattr__(self, "restart", RestartType(self.restart))
        except ValueError as exc:
            raise ConfigurationError(
                f"ChildSpec {self.id!r}: restart must be one of {[t.value for t in RestartType]}"
            ) from exc
        timeout = self.shutdown_timeout
        if timeout is not None:
            if not timeout >= 0:  # also rejects NaN
                raise ConfigurationError(
                    f"ChildSpec {self.id!r}: shutdown_timeout must be >= 0 or None"
                )
            if math.isinf(timeout):
                object.__setattr__(self, "shutdown_timeout", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildInfo:
    """A snapshot of one child, as :meth:`Supervisor.which_children` reports it.

    Attributes:
        id: the child's id.
        restart: its restart type.
        running: whether an incarnation is running now.
        restarts: how many times it was restarted (automatically or by ``restart_child``).
    """

    id: Hashable
    restart: RestartType
    running: bool
    restarts: int


# -- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildStarted:
    """A child was added and reported ready (``value`` is what it passed to ``started``)."""

    supervisor: str
    id: Hashable
    value: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildRestarted:
    """A new incarnation of a child reported ready; ``restarts`` counts them so far."""

    supervisor: str
    id: Hashable
    restarts: int
    value: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildExited:
    """A child incarnation ended (or failed to start, reported as a crash).

    ``error`` is what the child raised: the crash, a :class:`ChildExitedBeforeReady`, a
    ``CancelledError`` if something other than the supervisor cancelled it, or — for a shutdown —
    an exception raised while stopping. ``None`` for a clean exit.
    """

    supervisor: str
    id: Hashable
    reason: ExitReason
    error: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GaveUp:
    """The supervisor exceeded its restart intensity; ``run()`` raises SupervisorGaveUp next."""

    supervisor: str
    max_restarts: int
    max_seconds: float
    error: BaseException | None


SupervisorEvent: TypeAlias = ChildStarted | ChildRestarted | ChildExited | GaveUp
