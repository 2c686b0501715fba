"""Event feeds and the client processes they serve (one local Ray for the module): a client
process that dies without a word (SIGKILL, as the kernel's OOM killer or a recycled web
worker) leaves no feed on the host and no subscription on its agents, while a live idle
client's subscriptions keep their events."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from sagents import Agent, Runtime, Status  # noqa: E402
from sagents.ray import RayBackend  # noqa: E402
from sagents.testing import ScriptedChatModel  # noqa: E402
from tests.runtime.conftest import until_status  # noqa: E402
from tests.session import test_session  # noqa: E402
from tests.session.test_session import respond  # noqa: E402
from tests.web.conftest import wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(120)

# The agent's responder travels to the host by value (the host cannot import tests).
ray.cloudpickle.register_pickle_by_value(test_session)

_ROOT = Path(__file__).parent.parent.parent


@pytest.fixture
async def runtime(namespace: str) -> AsyncIterator[Runtime]:
    backend = RayBackend(hosts=1, host_cpus=0, namespace=namespace, stop_hosts=True)
    async with Runtime(backend=backend) as runtime:
        yield runtime


def _feeds(host: Any) -> list[str]:
    """The clients a host has an event feed for (run on the host)."""
    return list(host._feeds)


async def subscriber_count(runtime: Runtime, agent_id: str) -> int:
    info = await runtime.agent_info(agent_id)
    assert info is not None
    return info.subscriber_count


async def start_client(
    ray_cluster: str, namespace: str, agent_id: str
) -> asyncio.subprocess.Process:
    """Another client process of the cluster, subscribed to ``agent_id`` (attached once it
    has printed its line), then idle."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        import ray
        sys.path.insert(0, {str(_ROOT)!r})
        from sagents import Runtime
        from sagents.ray import RayBackend

        async def main():
            ray.init(address={ray_cluster!r}, namespace="sagents-tests", log_to_driver=False)
            backend = RayBackend(hosts=1, host_cpus=0, namespace={namespace!r})
            async with Runtime(backend=backend) as runtime:
                handle = runtime.agent({agent_id!r})
                events = handle.subscribe()
                await handle.get_status()  # sent once the host has attached the subscription
                print("subscribed", flush=True)
                async for _ in events:
                    pass

        asyncio.run(main())
        """
    )
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert client.stdout is not None
    async with asyncio.timeout(60):
        line = await client.stdout.readline()
    if line.strip() != b"subscribed":
        client.kill()
        _, err = await client.communicate()
        pytest.fail(f"the client did not subscribe: {err.decode()[-2000:]}")
    return client


async def test_a_dead_client_leaves_no_feed_and_no_subscription_on_the_host(
    runtime: Runtime, namespace: str, ray_cluster: str
) -> None:
    handle = await runtime.start_agent(
        Agent(agent_id="a1", model=ScriptedChatModel(responder=respond)), inactivity_timeout=None
    )
    backend = runtime.backend
    assert isinstance(backend, RayBackend)
    [name] = list(await backend.hosts())
    host = ray.get_actor(name, namespace=namespace)
    # This process: a live client, subscribed and idle meanwhile.
    events = handle.subscribe()
    await handle.get_status()  # sent once the host has attached the subscription
    [ours] = await host.__ray_call__.remote(_feeds)
    assert await subscriber_count(runtime, "a1") == 1

    client = await start_client(ray_cluster, namespace, "a1")
    try:
        assert len(await host.__ray_call__.remote(_feeds)) == 2
        assert await subscriber_count(runtime, "a1") == 2
    finally:
        os.kill(client.pid, signal.SIGKILL)
        await client.wait()

    async def forgotten() -> bool:
        return await host.__ray_call__.remote(_feeds) == [ours]

    await wait_until(forgotten, timeout=60)
    await wait_until(lambda: _equals(subscriber_count(runtime, "a1"), 1), timeout=10)

    # The live client's subscription was idle all along, and still gets the agent's events.
    await handle.add_message("still there?")
    seen = await until_status(events, Status.IDLE)
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    await events.aclose()
    await wait_until(lambda: _equals(subscriber_count(runtime, "a1"), 0), timeout=10)
    assert await host.__ray_call__.remote(_feeds) == [ours]  # the feed stays for the next one


async def test_a_client_that_closes_its_runtime_leaves_no_feed(
    runtime: Runtime, namespace: str
) -> None:
    await runtime.start_agent(
        Agent(agent_id="a2", model=ScriptedChatModel(responder=respond)), inactivity_timeout=None
    )
    backend = runtime.backend
    assert isinstance(backend, RayBackend)
    [name] = list(await backend.hosts())
    host = ray.get_actor(name, namespace=namespace)
    other = Runtime(backend=RayBackend(hosts=1, host_cpus=0, namespace=namespace))
    async with other:
        handle = other.agent("a2")
        events = handle.subscribe()
        await handle.get_status()
        assert await subscriber_count(runtime, "a2") == 1
        assert len(await host.__ray_call__.remote(_feeds)) == 1
    del events  # left open: the runtime's end closed its feed
    await wait_until(lambda: _equals(host.__ray_call__.remote(_feeds), []), timeout=30)
    await wait_until(lambda: _equals(subscriber_count(runtime, "a2"), 0), timeout=10)


async def _equals(value: Any, expected: Any) -> bool:
    return await value == expected
