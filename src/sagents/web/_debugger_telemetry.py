"""Telemetry counters of the live debugger: how many times each sagents event fired.

One :class:`TelemetryCounters` attaches one handler (a unique id per instance) to every event the
runtime emits, for as long as its debugger app lives. ``sagents.telemetry`` is process wide, so
the counts cover every runtime of the process, not only the one the debugger shows.

The handler holds the counters, never the app, so a debugger app dropped without being closed can
still be garbage-collected, and a finalizer then detaches the handler: handlers never pile up in
the global table across apps (or tests).
"""

from __future__ import annotations

import itertools
import weakref
from collections import Counter
from collections.abc import Mapping
from typing import Any

from sagents import telemetry

__all__ = ["TELEMETRY_EVENTS", "TelemetryCounters"]

#: Every telemetry event sagents emits.
TELEMETRY_EVENTS = telemetry.EVENTS

_ids = itertools.count(1)


class _Count:
    """The handler: a plain callable over a counter (no reference to the app)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(
        self,
        event: telemetry.EventName,
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
        config: Any,
    ) -> None:
        self.counts[".".join(event)] += 1


class TelemetryCounters:
    """Counts every sagents telemetry event while attached.

    It attaches when built; :meth:`detach` (or garbage collection) removes the handler and
    :meth:`attach` puts it back, counting on from where it was.
    """

    def __init__(self) -> None:
        self.handler_id = f"sagents.web.debugger-{next(_ids)}"
        self._count = _Count()
        self._finalizer: weakref.finalize[Any, TelemetryCounters] | None = None
        self.attach()

    @property
    def attached(self) -> bool:
        return self._finalizer is not None and self._finalizer.alive

    def attach(self) -> None:
        """Attach the handler (does nothing when attached)."""
        if self.attached:
            return
        telemetry.attach_many(self.handler_id, TELEMETRY_EVENTS, self._count)
        self._finalizer = weakref.finalize(self, telemetry.detach, self.handler_id)

    def detach(self) -> None:
        """Detach the handler (does nothing when detached); the counts are kept."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None

    def snapshot(self) -> dict[str, int]:
        """Counts by dotted event name (``"sagents.llm.response"``), every event listed."""
        counts = self._count.counts
        return {".".join(event): counts[".".join(event)] for event in TELEMETRY_EVENTS}
