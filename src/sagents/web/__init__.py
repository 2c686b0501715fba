"""The web demo (``sagents demo``): a FastAPI app showing the whole lifecycle of agents.

Import this sub-namespace explicitly; ``import sagents`` never imports FastAPI or Starlette::

    from sagents.web import WebConfig, create_app

    app = create_app(WebConfig(data_dir=Path("data")))   # then: uvicorn, or sagents.web.serve

See ``docs/web.md`` for the pages, the REST API and the websocket protocol.
"""

from sagents._public import publish as _publish
from sagents.web._app import create_app, serve, serve_workers, worker_app
from sagents.web._config import WebConfig
from sagents.web._debugger import DebuggerApp, agent_json, debugger_app
from sagents.web._demo_factory import DemoFactory, build_model, check_model
from sagents.web._services import ServiceDraining, WebServices

__all__ = [
    "DebuggerApp",
    "DemoFactory",
    "ServiceDraining",
    "WebConfig",
    "WebServices",
    "agent_json",
    "build_model",
    "check_model",
    "create_app",
    "debugger_app",
    "serve",
    "serve_workers",
    "worker_app",
]

_publish(globals(), __all__, __name__)
