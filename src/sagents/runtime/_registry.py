"""The registry: which agent ids run in this runtime.

A plain dict owned by one :class:`~sagents.Runtime` (two runtimes never share one), so lookups,
counts and listings are O(1) or one pass over the keys and never message an agent.

While the runtime is starting or shutting down the registry is *unavailable*: lookups raise
:class:`RegistryUnavailable` rather than answering "not running", because a caller that reads
"not running" would start a duplicate agent somewhere else.

The registry also holds *watchers*: callbacks waiting for an agent id to be registered, which is
how a durable ``runtime.watch`` subscription attaches to an agent that starts later, before that
agent publishes its first event.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sagents._errors import AgentAlreadyRunning, RegistryUnavailable

__all__ = ["Registry", "glob_pattern"]

_log = logging.getLogger("sagents.registry")

T = TypeVar("T")


def glob_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a ``*`` glob (``"conversation-*"``); every other character is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


class Registry(Generic[T]):
    """Agent id → server, plus watchers waiting for ids to appear."""

    def __init__(self) -> None:
        self._entries: dict[str, T] = {}
        self._watchers: dict[str, list[Callable[[T], None]]] = {}
        self.available = False
        #: Told ``(agent_id, True)`` on each registration and ``(agent_id, False)`` when it
        #: leaves (a distributed backend's directory follows the runtime this way).
        self.listener: Callable[[str, bool], None] | None = None

    def check(self) -> None:
        """Raise :class:`RegistryUnavailable` unless the runtime is running."""
        if not self.available:
            raise RegistryUnavailable(
                "the runtime is not running (starting or shutting down); retry shortly and do "
                "not start the agent elsewhere"
            )

    def register(self, agent_id: str, entry: T) -> None:
        """Register ``entry``; watchers of ``agent_id`` are told before this returns.

        Raises:
            AgentAlreadyRunning: the id is taken.
            RegistryUnavailable: the runtime is not running.
        """
        self.check()
        if agent_id in self._entries:
            raise AgentAlreadyRunning(
                f"agent {agent_id!r} is already running; use runtime.agent({agent_id!r})"
            )
        self._entries[agent_id] = entry
        if self.listener is not None:
            self.listener(agent_id, True)
        for watcher in list(self._watchers.get(agent_id, ())):
            try:
                watcher(entry)
            except Exception:
                _log.exception("registry watcher for %r raised", agent_id)

    def unregister(self, agent_id: str, entry: T) -> None:
        """Remove ``agent_id`` if it is still registered to ``entry``."""
        if self._entries.get(agent_id) is entry:
            del self._entries[agent_id]
            if not self._entries:
                # A dict never shrinks: once a wave of agents is gone, give its table back.
                self._entries = {}
            if self.listener is not None:
                self.listener(agent_id, False)

    def lookup(self, agent_id: str) -> T | None:
        """The entry for ``agent_id``, or None when not running.

        Raises:
            RegistryUnavailable: the runtime is not running.
        """
        self.check()
        return self._entries.get(agent_id)

    def get(self, agent_id: str) -> T | None:
        """Like :meth:`lookup` but never raises (for internal use during shutdown)."""
        return self._entries.get(agent_id)

    def ids(self) -> list[str]:
        self.check()
        return list(self._entries)

    def entries(self) -> Iterator[T]:
        return iter(list(self._entries.values()))

    def registered(self) -> list[str]:
        """The registered ids; unlike :meth:`ids`, also while the runtime is not running."""
        return list(self._entries)

    def watched(self) -> list[str]:
        """The ids that watchers wait on."""
        return list(self._watchers)

    def count(self) -> int:
        self.check()
        return len(self._entries)

    def matching(self, pattern: str) -> list[str]:
        self.check()
        if "*" not in pattern:
            return [pattern] if pattern in self._entries else []
        regex = glob_pattern(pattern)
        return [agent_id for agent_id in self._entries if regex.fullmatch(agent_id)]

    def add_watcher(self, agent_id: str, watcher: Callable[[T], None]) -> Callable[[], None]:
        """Call ``watcher(entry)`` each time ``agent_id`` is registered; returns a remover."""
        self._watchers.setdefault(agent_id, []).append(watcher)

        def remove() -> None:
            watchers = self._watchers.get(agent_id)
            if watchers and watcher in watchers:
                watchers.remove(watcher)
                if not watchers:
                    del self._watchers[agent_id]

        return remove
