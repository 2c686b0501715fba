"""An event loop whose clock can be moved forward: inactivity expiry without waiting (W6).

asyncio schedules timers against ``loop.time()``; adding an offset to it makes every timer whose
deadline falls within the offset due at the next iteration, exactly as if that much time had
passed. Nothing in sagents reads another clock for inactivity, so this is the "controllable
clock" the lifecycle workload is allowed.
"""

from __future__ import annotations

import asyncio

__all__ = ["AdvanceableLoop"]


class AdvanceableLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self._offset = 0.0

    def time(self) -> float:
        return super().time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._offset += seconds
