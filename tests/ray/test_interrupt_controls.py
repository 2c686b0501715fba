"""Questions, dismissals and resets through the Ray backend (issue 15): the new handle methods
reach the agent's host, and ``Session.dismiss`` runs where the agent runs."""

from __future__ import annotations

import inspect
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from sagents import (  # noqa: E402
    AgentHandle,
    Runtime,
    Session,
    SessionConfig,
    SingleFactoryRouter,
    Status,
)
from sagents.events import AgentReset  # noqa: E402
from sagents.persistence.sql import SqlPersistence, sqlite_url  # noqa: E402
from sagents.ray import RayBackend  # noqa: E402
from sagents.ray._handle import RemoteAgentHandle  # noqa: E402
from sagents.ray._host import HANDLE_METHODS, SESSION_METHODS  # noqa: E402
from tests.runtime.conftest import until_status  # noqa: E402
from tests.session import test_questions  # noqa: E402
from tests.session.test_questions import Factory  # noqa: E402

pytestmark = pytest.mark.timeout(120)

for _module in (sys.modules[__name__], test_questions):
    ray.cloudpickle.register_pickle_by_value(_module)

#: Handle methods that do not go to the host as themselves: ``stop`` goes through the
#: runtime (the whole unit stops), ``update_context`` cannot leave its process.
_NOT_FORWARDED = {"stop", "update_context"}


def test_every_async_handle_method_is_forwarded_to_the_host() -> None:
    methods = {
        name
        for name, value in vars(AgentHandle).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    }
    assert {"dismiss_interrupt", "reset"} <= methods
    assert methods - _NOT_FORWARDED <= HANDLE_METHODS
    assert all(name in vars(RemoteAgentHandle) for name in methods)
    assert "dismiss" in SESSION_METHODS


@pytest.fixture
async def runtime(ray_cluster: str) -> AsyncIterator[Runtime]:
    backend = RayBackend(hosts=2, host_cpus=0, namespace="sagents-questions", stop_hosts=True)
    async with Runtime(backend=backend) as runtime:
        yield runtime


@pytest.fixture
async def config(tmp_path: Path) -> AsyncIterator[SessionConfig]:
    store = SqlPersistence(sqlite_url(tmp_path / "sagents.db"), create_tables=True)
    yield SessionConfig(
        factory_router=SingleFactoryRouter(Factory()),
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=None,
    )
    await store.aclose()


async def test_questions_dismissals_and_resets_on_a_host(
    runtime: Runtime, config: SessionConfig
) -> None:
    session = await Session.ensure_running(runtime, config, "c1")
    await session.handle.add_message("ask me")
    await until_status(session.events, Status.INTERRUPTED)
    await session.events.aclose()
    assert await Session.stop(runtime, config, "c1")

    # Restarted from storage on whichever host, the question is dismissed there.
    dismissed = await Session.dismiss(runtime, config, "c1")
    assert dismissed.restored
    assert await dismissed.handle.get_status() is Status.IDLE

    async with dismissed.handle.subscribe() as events:
        await dismissed.handle.add_message("ask me again")
        await until_status(events, Status.INTERRUPTED)
        await dismissed.handle.dismiss_interrupt()
        await until_status(events, Status.IDLE)
        await dismissed.handle.reset()
        async for event in events:
            if isinstance(event, AgentReset):
                break
    state = await dismissed.handle.get_state()
    assert state.messages == []
    assert await Session.delete(runtime, config, "c1")
