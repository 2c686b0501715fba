"""The status of an agent: one value at a time."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Status"]


class Status(StrEnum):
    """Status of an agent server.

    A ``str`` enum, so ``Status.IDLE == "idle"`` and it serialises as its value.
    """

    IDLE = "idle"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    ERROR = "error"
    PAUSED = "paused"
