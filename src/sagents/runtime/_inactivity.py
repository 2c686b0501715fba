"""``InactivityTimer``: the deadline after which an idle agent stops by itself.

The timer is a deadline, not a countdown restarted by every call: activity only records the time
(:meth:`InactivityTimer.touch`, O(1) and allocation-free, which matters because every handle
call is activity), and the one timer handle of the agent is re-armed lazily when it fires early
— at the deadline the activity moved, not at each activity. A fleet of a million idle agents so
costs one timer handle each and no churn in the event loop's heap.

Time is the event loop's clock (``loop.time()``), so tests drive it virtually. A run is
activity: while the owner reports a run in progress the deadline does not count, and it starts
again from the end of the run.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Protocol

__all__ = ["InactivityOwner", "InactivityTimer"]

# The timer only calls its owner back (which posts a message that runs in the owner's context):
# one shared, empty context spares a copy of the caller's per timer handle.
_TIMER_CONTEXT = contextvars.Context()


class InactivityOwner(Protocol):
    """What the timer needs from the agent server it watches."""

    @property
    def closed(self) -> bool:
        """Whether the server is ending (no deadline counts any more)."""
        ...

    @property
    def running(self) -> bool:
        """Whether a run is in progress (a run is activity: no deadline counts)."""
        ...

    def inactive(self) -> None:
        """The deadline passed with no activity."""
        ...


class InactivityTimer:
    """One agent's inactivity deadline: ``timeout`` seconds after the last activity.

    Made only for agents that have a timeout; its own object is the callback of its timer
    handle (a bound method per armed timer would be one more object per idle agent).
    """

    __slots__ = ("_handle", "_last", "_owner", "timeout")

    def __init__(self, owner: InactivityOwner, timeout: float, *, since: float) -> None:
        self._owner = owner
        self.timeout = timeout
        self._last = since  # the loop time of the last activity
        self._handle: asyncio.TimerHandle | None = None

    def touch(self) -> None:
        """Record activity: the deadline moves to now + timeout (O(1))."""
        self._last = asyncio.get_running_loop().time()
        if self._handle is None:
            self.arm()

    def arm(self) -> None:
        """Make sure the deadline is watched (unless a run is in progress or the server ends)."""
        owner = self._owner
        if self._handle is not None or owner.closed or owner.running:
            return
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(self._last + self.timeout, self, context=_TIMER_CONTEXT)

    def disarm(self) -> None:
        """Stop watching (a run starts, the server ends); :meth:`arm` resumes."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return asyncio.get_running_loop().time() >= self._last + self.timeout

    def remaining(self) -> float:
        """Seconds until the deadline (0 once it has passed)."""
        return max(0.0, self._last + self.timeout - asyncio.get_running_loop().time())

    def __call__(self) -> None:
        # The handle fired: at the deadline, or before it if activity moved it since.
        self._handle = None
        owner = self._owner
        if owner.closed or owner.running:
            return  # a run is activity; the timer is armed again when it ends
        if self.expired():
            owner.inactive()
        else:
            self.arm()
