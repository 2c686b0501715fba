"""The Ray backend on a simulated cluster: a head and a worker node on this machine.

A node removed mid-conversation: calls to its agents fail clearly (never a hang), and the next
``Session.ensure_running`` brings each conversation back on the surviving node with every
saved turn. Ray's health checks are tuned (as a deployment should) so that the loss is seen in
about a second.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from sagents import (  # noqa: E402
    AgentUnavailable,
    Runtime,
    Session,
    SessionConfig,
    Status,
)
from sagents.persistence.sql import SqlPersistence  # noqa: E402
from sagents.ray import RayBackend  # noqa: E402
from tests.ray import test_backend  # noqa: E402
from tests.runtime.conftest import until_status  # noqa: E402
from tests.session import test_session  # noqa: E402

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

for _module in (sys.modules[__name__], test_backend, test_session):
    ray.cloudpickle.register_pickle_by_value(_module)

_FAST_HEALTH_CHECKS = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_timeout_ms": 500,
    "health_check_initial_delay_ms": 0,
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    cluster = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "_system_config": _FAST_HEALTH_CHECKS,
        },
    )
    try:
        cluster.add_node(num_cpus=1, labels={"sagents": "agents"})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="sagents-cluster", log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
async def runtime(cluster: Any) -> AsyncIterator[Runtime]:
    # One host per node (each has one CPU), so each conversation lives on a known node.
    backend = RayBackend(
        hosts=2, host_cpus=1, namespace="sagents-cluster", stop_hosts=True, call_timeout=5.0
    )
    async with Runtime(backend=backend) as runtime:
        yield runtime


@pytest.fixture
async def config(tmp_path: Path) -> AsyncIterator[SessionConfig]:
    config = test_backend.session_config(tmp_path / "sagents.db")
    yield config
    assert isinstance(config.agent_persistence, SqlPersistence)
    await config.agent_persistence.aclose()


async def test_hosts_run_on_the_nodes_with_their_labels(cluster: Any) -> None:
    labelled = [n["NodeID"] for n in ray.nodes() if n["Labels"].get("sagents") == "agents"]
    assert len(labelled) == 1
    backend = RayBackend(
        hosts=2,
        host_cpus=0,
        namespace="sagents-labels",
        node_labels={"sagents": "agents"},
        stop_hosts=True,
    )
    async with Runtime(backend=backend):
        names = list(await backend.hosts())
        handles = [ray.get_actor(name, namespace="sagents-labels") for name in names]
        nodes = await asyncio.gather(*(host.node_id.remote() for host in handles))
    assert nodes == labelled * 2


async def test_a_lost_node_s_conversations_come_back_on_the_surviving_one(
    cluster: Any, runtime: Runtime, config: SessionConfig
) -> None:
    backend = runtime.backend
    assert isinstance(backend, RayBackend)
    ids = [f"c{i}" for i in range(8)]
    sessions = await asyncio.gather(*(Session.ensure_running(runtime, config, c) for c in ids))
    for session in sessions:
        await session.handle.add_message("hello")
    for session in sessions:
        await until_status(session.events, Status.IDLE)
    await asyncio.gather(*(test_backend.saved(config, c, 2) for c in ids))
    worker = next(node for node in cluster.worker_nodes)
    on_worker = []
    for c in ids:
        host = backend.host_of(f"conversation-{c}")
        assert host is not None
        node = await ray.get_actor(host, namespace=backend.namespace).node_id.remote()
        if node == worker.node_id:
            on_worker.append(c)
    assert 0 < len(on_worker) < len(ids)  # spread over both nodes

    cluster.remove_node(worker, allow_graceful=False)

    # The node's processes may answer for a moment after their node is gone; then every call
    # fails with AgentUnavailable, each within the call timeout, never a hang.
    lost = sessions[ids.index(on_worker[0])]

    async def until_unreachable() -> None:
        for _ in range(300):
            await asyncio.wait_for(lost.handle.get_state(), 10)
            await asyncio.sleep(0.1)

    with pytest.raises(AgentUnavailable):
        await until_unreachable()
    # Every conversation answers again, those of the lost node restored elsewhere at once (the
    # dead host's ownership leases are taken over, not waited out).
    for c in ids:
        again = None
        for _ in range(200):
            try:
                again = await Session.ensure_running(runtime, config, c)
                break
            except AgentUnavailable:  # a call reached the dead host first: it is forgotten now
                await asyncio.sleep(0.1)
        assert again is not None, c
        state = await again.handle.get_state()
        assert [m.content for m in state.messages] == ["hello", "echo: hello"]
        assert again.restored == (c in on_worker)
        await again.events.aclose()
    for session in sessions:
        await session.events.aclose()
