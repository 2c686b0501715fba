"""AG-UI over the Ray backend: the router in the web process, the agent on a Ray host.

The router only uses ``Session.ensure_running`` and the agent's handle, which a runtime with a
backend sends to the host running the conversation, so a run streams, stops at an approval and
resumes as in one process, and the state's ``files`` come from the host that has them open.
One local Ray for the module (real processes, seconds to start): the test is slow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sagents import Runtime, SessionConfig, SingleFactoryRouter
from sagents.agui import agui_router
from sagents.persistence.sql import SqlPersistence, sqlite_url
from sagents.web import DemoFactory, build_model
from tests.agui.conftest import AguiClient
from tests.agui.test_router import apply

ray = pytest.importorskip("ray")

from sagents.ray import RayBackend, RayPresence  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NAMESPACE = "sagents-agui-test"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
async def config(ray_cluster: None, tmp_path: Path) -> AsyncIterator[SessionConfig]:
    # What travels to the hosts must pickle: a store by its URL, presence by its namespace.
    store = SqlPersistence(sqlite_url(tmp_path / "sagents.db"), create_tables=True)
    presence = RayPresence(namespace=NAMESPACE)
    yield SessionConfig(
        factory_router=SingleFactoryRouter(DemoFactory(build_model(None))),
        agent_persistence=store,
        display_message_persistence=store,
        presence=presence,
        inactivity_timeout=None,
    )
    await presence.aclose()
    await store.aclose()


async def test_a_run_streams_interrupts_and_resumes_on_a_ray_host(config: SessionConfig) -> None:
    backend = RayBackend(hosts=1, host_cpus=0, namespace=f"{NAMESPACE}-hosts", stop_hosts=True)
    async with Runtime(backend=backend) as runtime:
        app = FastAPI()
        app.include_router(agui_router(runtime, config, scope=lambda: "ada"), prefix="/agui")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            ada = AguiClient(client)
            first = await ada.say("Otters")
            assert first.status == 200
            assert first.text().startswith("Let me plan how to research 'Otters'.")
            assert first.interrupts()  # the demo's approval of its notes
            info = await runtime.agent_info(config.agent_id_for(ada.thread_id))
            assert info is not None
            assert info.node is not None  # on a host, not in this process
            done = await ada.approve_all(first)
            assert done.last["outcome"] == {"type": "success"}
            assert "Otters" in done.text()
            # The resumed run's snapshot: the todos the first run made, from the host.
            snapshot = done.of("STATE_SNAPSHOT")[0]["snapshot"]
            assert [todo["id"] for todo in snapshot["todos"]] == ["research", "write", "review"]
            # The files, from the host that has them open: the note the approved call wrote.
            state = apply(snapshot, done)
            assert state["files"] == ["/notes/otters.md"]
