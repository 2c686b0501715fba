"""Where a run reports its progress.

The execution loop knows nothing about servers, subscribers or storage: it reports to an
:class:`EventSink`. The agent server plugs in a sink that stamps sequence numbers and fans events
out to subscribers; a test or a script without a server can use :class:`CollectingSink`.

Every state a run hands to :meth:`EventSink.state_changed` is *consistent* (no half-streamed
message, no tool call without its result once tools have settled), so whoever keeps the latest
one can persist it or resume from it at any time, including after a cancel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from langchain_core.messages import BaseMessage

from sagents._state import State
from sagents.events import Event

__all__ = ["CollectingSink", "EventSink", "NullSink"]


class EventSink(Protocol):
    """Receives a run's events and state changes. Methods must not block or raise."""

    @property
    def debug(self) -> bool:
        """Whether debug-channel events are wanted (they are not even built otherwise)."""
        ...

    def emit(self, event: Event) -> None:
        """An event, in production order (``seq`` is 0; the server stamps it)."""

    def state_changed(self, state: State, new_messages: Sequence[BaseMessage]) -> None:
        """The run's state is now ``state``; ``new_messages`` entered it with this change."""


class NullSink:
    """A sink that ignores everything."""

    debug = False

    def emit(self, event: Event) -> None:
        pass

    def state_changed(self, state: State, new_messages: Sequence[BaseMessage]) -> None:
        pass


class CollectingSink:
    """A sink that records events, states and new messages (handy in tests and scripts)."""

    def __init__(self, *, debug: bool = True) -> None:
        self.debug = debug
        self.events: list[Event] = []
        self.states: list[State] = []
        self.messages: list[BaseMessage] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def state_changed(self, state: State, new_messages: Sequence[BaseMessage]) -> None:
        self.states.append(state)
        self.messages.extend(new_messages)

    def of_type(self, event_type: type[Event]) -> list[Event]:
        """The recorded events of one class."""
        return [e for e in self.events if isinstance(e, event_type)]
