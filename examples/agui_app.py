"""An AG-UI endpoint for resident sagents agents, in one file (``docs/protocols.md``).

    uvicorn examples.agui_app:app        # then: new HttpAgent({url: "http://127.0.0.1:8000/agui",
                                          #   headers: {"X-User": "ada"}}) from @ag-ui/client

Each AG-UI thread is a conversation served by its own agent (the demo's: todos, files, an
approval before every write), with the offline scripted model. Needs ``sagents[agui,web]``.
"""

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Header

from sagents import LocalPresence, Runtime, SessionConfig, SingleFactoryRouter
from sagents.agui import agui_router
from sagents.persistence import MemoryPersistence
from sagents.web import DemoFactory, build_model

config = SessionConfig(
    factory_router=SingleFactoryRouter(DemoFactory(build_model(None))),  # or "openai:gpt-4o"
    agent_persistence=MemoryPersistence(),  # restores a conversation after an inactivity stop
    presence=LocalPresence(),  # an open AG-UI stream is a viewer of its conversation
    inactivity_timeout=600,
)


def user(x_user: str = Header()) -> str:
    """Your auth goes here: the scope every conversation of this caller belongs to."""
    return x_user


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with Runtime() as runtime:
        app.state.runtime = runtime
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(
    agui_router(lambda request: request.app.state.runtime, config, scope=user), prefix="/agui"
)
