"""Handle calls batched per host (``sagents.ray._calls``), without a cluster: the batcher's
``send`` runs the host's side in this process, through the same pickles."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

pytest.importorskip("ray")

from sagents import AgentNotRunning, AgentUnavailable
from sagents.ray._calls import CallBatcher, Request, run_batch


class Host:
    """Runs requests ``(agent_id, method, args, kwargs)`` as the test says; records batches."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()

    async def run(self, request: Request) -> Any:
        agent_id, method, args, _ = request
        if method == "wait":
            await self.release.wait()
        if method == "fail":
            raise AgentNotRunning(agent_id)
        if method == "lock":
            return threading.Lock()  # cannot be pickled
        if method == "cancelled":
            raise asyncio.CancelledError
        return (agent_id, method, *args)

    async def send(self, batch: bytes) -> bytes:
        from sagents.ray import _wire

        self.batches.append([request[1] for request in _wire.loads(batch)])
        return await run_batch(batch, self.run)


def request(method: str, *args: Any, agent_id: str = "a") -> Request:
    return (agent_id, method, args, {})


async def test_an_idle_process_sends_each_call_at_once() -> None:
    host = Host()
    calls = CallBatcher(host.send)
    assert await calls.call(request("ping", 1)) == ("a", "ping", 1)
    assert await calls.call(request("ping", 2)) == ("a", "ping", 2)
    assert host.batches == [["ping"], ["ping"]]


async def test_calls_beyond_the_batches_in_flight_go_together_in_order() -> None:
    host = Host()
    calls = CallBatcher(host.send, in_flight=1)
    first = asyncio.create_task(calls.call(request("wait")))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(calls.call(request("ping", n))) for n in range(3)]
    await asyncio.sleep(0)
    assert host.batches == [["wait"]]  # the others wait for the first batch to come back
    host.release.set()
    assert await first == ("a", "wait")
    assert [await task for task in rest] == [("a", "ping", n) for n in range(3)]
    assert host.batches == [["wait"], ["ping", "ping", "ping"]]


async def test_each_call_of_a_batch_gets_its_own_outcome() -> None:
    host = Host()
    calls = CallBatcher(host.send, in_flight=1)
    blocker = asyncio.create_task(calls.call(request("wait")))
    await asyncio.sleep(0)
    tasks = {
        method: asyncio.create_task(calls.call(request(method)))
        for method in ("ping", "fail", "lock", "cancelled")
    }
    await asyncio.sleep(0)
    host.release.set()
    await blocker
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    outcome = dict(zip(tasks, results, strict=True))
    assert outcome["ping"] == ("a", "ping")
    assert isinstance(outcome["fail"], AgentNotRunning)  # the same type as on the host
    # What cannot travel back, or must not be raised here, is said instead.
    assert isinstance(outcome["lock"], RuntimeError)
    assert "cannot be sent back" in str(outcome["lock"])
    assert isinstance(outcome["cancelled"], AgentUnavailable)
    assert host.batches[-1] == ["ping", "fail", "lock", "cancelled"]


async def test_a_lone_call_that_fails_raises_its_error() -> None:
    calls = CallBatcher(Host().send)
    with pytest.raises(AgentNotRunning):
        await calls.call(request("fail"))
    with pytest.raises(RuntimeError, match="cannot be sent back"):
        await calls.call(request("lock"))


async def test_a_batch_that_is_not_answered_fails_each_of_its_calls() -> None:
    async def send(batch: bytes) -> bytes:
        raise AgentUnavailable("host gone")

    calls = CallBatcher(send)
    results = await asyncio.gather(
        calls.call(request("ping")), calls.call(request("ping")), return_exceptions=True
    )
    assert all(isinstance(result, AgentUnavailable) for result in results)
