"""AG-UI: sagents conversations for agent UIs (CopilotKit, ``@ag-ui/client`` ...).

``agui_router(runtime, session_config, scope=...)`` is a FastAPI router whose one route runs a
conversation over the AG-UI event stream (server-sent events): the thread id is the conversation
id, so each thread is served by the conversation's resident agent — restored after an
inactivity shutdown, watched by presence like any tab. Install with
``pip install 'sagents[agui]'``; see ``docs/protocols.md``::

    from fastapi import FastAPI
    from sagents.agui import agui_router

    app = FastAPI(lifespan=lifespan)          # starts a Runtime in app.state.runtime
    app.include_router(
        agui_router(lambda request: request.app.state.runtime, session_config, scope=user_id),
        prefix="/agui",
    )
"""

try:
    import ag_ui.core as _ag_ui_core  # noqa: F401
    import fastapi as _fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "sagents.agui needs the AG-UI protocol package and FastAPI: pip install 'sagents[agui]'"
    ) from exc

from sagents._public import publish as _publish
from sagents.agui._input import CANCELLED_MESSAGE, RunPlan, decision_from_entry, plan_run
from sagents.agui._mapping import EventMapper, agui_interrupts, agui_messages, default_state_view
from sagents.agui._router import StateView, ThreadRun, agui_router

__all__ = [
    "CANCELLED_MESSAGE",
    "EventMapper",
    "RunPlan",
    "StateView",
    "ThreadRun",
    "agui_interrupts",
    "agui_messages",
    "agui_router",
    "decision_from_entry",
    "default_state_view",
    "plan_run",
]

_publish(globals(), __all__, __name__)
