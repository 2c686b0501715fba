"""Calls from a client process to one host, several per Ray task when they come faster than
the host answers.

A Ray actor call costs both processes a fixed amount of CPU (serialising, a task, a hand-over
between Ray's threads and the host's event loop), about as much as a whole agent turn in one
process. So a process does not send a call per handle call: it sends at once while fewer than
``in_flight`` of its batches are on their way to the host, and otherwise queues the call for
the next batch. An idle process pays no delay; a busy one sends one task per batch of calls.

The host runs a batch's calls concurrently, each as it would run alone, and answers with one
outcome per call: its result or its exception (re-raised in the caller's process as the same
type). A batch and its answer travel pickled (:mod:`sagents.ray._wire`). Calls to one agent
keep their order: a batch starts its calls in order, and batches start in the order they were
sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sagents._errors import AgentUnavailable
from sagents.ray import _wire as wire

__all__ = ["CallBatcher", "Request", "run_batch"]

#: ``(agent_id, method, args, kwargs)``.
Request = tuple[str, str, tuple[Any, ...], Mapping[str, Any]]


class CallBatcher:
    """The calls of this process to one host (see the module docstring).

    Args:
        send: ``send(batch)`` sends one batch (the requests, pickled) to the host and returns
            its answer: the outcomes pickled, a list of ``(True, result)`` or ``(False,
            exception)`` in request order; an exception it raises fails every call of the
            batch.
        in_flight: batches that may be on their way at once.
    """

    def __init__(self, send: Callable[[bytes], Awaitable[bytes]], in_flight: int = 4) -> None:
        self._send = send
        self._in_flight = in_flight
        self._sending = 0
        self._queue: list[tuple[Request, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, request: Request) -> Any:
        """Send ``request`` (now, or with the next batch); its result, or its exception."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if self._sending < self._in_flight:
            # Sent from this caller's own task: an idle process pays no task per call.
            batch, self._queue = self._queue, []
            self._sending += 1
            await self._run(batch)
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        self._sending += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[Request, asyncio.Future[Any]]]) -> None:
        try:
            answer = await self._send(wire.dumps([request for request, _ in batch]))
            outcomes: list[tuple[bool, Any]] = wire.loads(answer)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # its caller gave up (a timeout)
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        finally:
            self._sending -= 1
            if self._queue and self._sending < self._in_flight:
                self._flush()


async def run_batch(batch: bytes, run: Callable[[Request], Awaitable[Any]]) -> bytes:
    """The host's side: ``run(request)`` for each request of ``batch``, concurrently, started
    in order; the outcomes in request order, pickled, each one that can travel back."""
    requests: list[Request] = wire.loads(batch)
    outcomes: list[tuple[bool, Any]]
    if len(requests) == 1:  # the common case when the client is not busy: no task
        try:
            outcomes = [(True, await run(requests[0]))]
        except Exception as exc:
            outcomes = [(False, exc)]
    else:
        results = await asyncio.gather(*map(run, requests), return_exceptions=True)
        outcomes = [(not isinstance(result, BaseException), result) for result in results]
    if all(ok or isinstance(value, Exception) for ok, value in outcomes):
        with contextlib.suppress(Exception):  # else one cannot travel: say which, below
            return wire.dumps(outcomes)
    return wire.dumps([_travelling(ok, value) for ok, value in outcomes])


def _travelling(ok: bool, value: Any) -> tuple[bool, Any]:
    """The outcome ``(ok, value)``, or a stand-in when it cannot be pickled or must not be
    raised elsewhere (a cancellation here is not one of the caller's)."""
    if not ok and not isinstance(value, Exception):
        return False, AgentUnavailable(
            f"the call was interrupted on its host ({type(value).__name__}): it is stopping; "
            "retry once the agent runs again"
        )
    try:
        wire.dumps(value)
    except Exception as exc:
        what = "its result" if ok else f"its error ({type(value).__name__}: {value})"
        return False, RuntimeError(f"{what} cannot be sent back from the host: {exc}")
    return ok, value
