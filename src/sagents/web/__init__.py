"""Conversations over the web: a router for any FastAPI app, and the demo (``sagents demo``).

Import this sub-namespace explicitly; ``import sagents`` never imports FastAPI or Starlette::

    from sagents.web import conversation_router

    app.include_router(conversation_router(runtime, config, scope=current_user), prefix="/chat")

    from sagents.web import WebConfig, create_app

    app = create_app(WebConfig(data_dir=Path("data")))   # the demo; then uvicorn, or serve

See ``docs/web.md`` for the router, its browser client, the websocket protocol and the demo.
"""

from sagents._public import publish as _publish
from sagents.web._app import create_app, serve, serve_workers, worker_app
from sagents.web._config import WebConfig
from sagents.web._conversations import ConversationAction
from sagents.web._debugger import DebuggerApp, agent_json, debugger_app
from sagents.web._demo_factory import DemoFactory, build_model, check_model
from sagents.web._router import conversation_router
from sagents.web._services import ServiceDraining, WebServices

__all__ = [
    "ConversationAction",
    "DebuggerApp",
    "DemoFactory",
    "ServiceDraining",
    "WebConfig",
    "WebServices",
    "agent_json",
    "build_model",
    "check_model",
    "conversation_router",
    "create_app",
    "debugger_app",
    "serve",
    "serve_workers",
    "worker_app",
]

_publish(globals(), __all__, __name__)
