"""One agent's background saves, run one at a time, off the agent's hot path.

Saving must never block the agent (it keeps accepting messages and streaming events while a
slow database write is in flight), yet two saves of one agent must never overlap or land out
of order. A :class:`SerialWorker` gives both: jobs are queued synchronously and run in
order by one worker task that exists only while there is work, so an idle agent costs no task.

Jobs come in two kinds. Ordered jobs (saving each new message) all run, in submission order.
A *coalesced* job (saving the latest state) runs at most once per burst: submitting it while an
identical one is still queued is a no-op, because the job reads the newest state when it runs —
so a save can only ever write a state at least as new as the previous one.

A failing job is reported through ``on_error`` and never stops the worker: the next trigger
retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["SerialWorker"]

_log = logging.getLogger("sagents.persistence")

Job = Callable[[], Awaitable[None]]


class SerialWorker:
    """Runs submitted jobs one at a time in an owned task."""

    __slots__ = ("_idle", "_on_error", "_queue", "_queued_keys", "_task")

    def __init__(self, on_error: Callable[[str, BaseException], None]) -> None:
        self._on_error = on_error
        self._queue: deque[tuple[str, Job]] = deque()
        self._queued_keys: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        # Made only while someone drains: most bursts of saves are never waited for.
        self._idle: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None

    def submit(self, operation: str, job: Job, *, coalesce: bool = False) -> None:
        """Queue ``job``; with ``coalesce``, skip it if one with this ``operation`` is queued."""
        if coalesce:
            if operation in self._queued_keys:
                return
            self._queued_keys.add(operation)
        self._queue.append((operation, job))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        try:
            while self._queue:
                operation, job = self._queue.popleft()
                self._queued_keys.discard(operation)
                try:
                    await job()
                except Exception as exc:
                    _log.warning("%s failed: %r", operation, exc)
                    try:
                        self._on_error(operation, exc)
                    except Exception:
                        _log.exception("reporting the failure of %s raised", operation)
        finally:
            self._task = None
            idle, self._idle = self._idle, None
            if idle is not None and not idle.done():
                idle.set_result(None)

    async def drain(self, timeout: float | None) -> bool:
        """Wait until every queued job ran; False if ``timeout`` expired first.

        The jobs themselves are shielded from the caller's cancellation: a save that started
        finishes (it is the one that must not be lost).
        """
        if self._task is None:
            return True
        if self._idle is None:
            self._idle = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._idle)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop now: cancel the job in flight and drop the queue."""
        self._queue.clear()
        self._queued_keys.clear()
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
