"""The demo's AG-UI endpoint: ``POST /agui``, for ``@ag-ui/client`` and the UIs built on it.

A third door onto the demo's conversations, beside the REST API and the websocket: the thread id
is the conversation id, the caller is the browser identity of the cookie (the scope of
everything it touches), and the conversation is created on the thread's first run, since AG-UI
clients name their own threads. The same rules as the other doors hold: only the app's own
pages (or clients sending no ``Origin``) may act for an identity, the body limit applies, and
a message is at most ``max_message_chars`` long. See ``docs/protocols.md``.

The endpoint needs the ``agui`` extra (``ag-ui-protocol``); without it the demo runs without
the endpoint, and says so once in its log.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request

from sagents._errors import ConversationNotFound
from sagents.web._identity import identity_of
from sagents.web._origin import same_origin
from sagents.web._services import WebServices

__all__ = ["AGUI_PATH", "mount_agui"]

_log = logging.getLogger("sagents.web")

#: Where the demo serves AG-UI.
AGUI_PATH = "/agui"


def _identity(request: Request) -> str:
    """The caller's identity (the scope), for a request from the app's own origin."""
    if not same_origin(request.headers):
        raise HTTPException(403, "cross-origin requests are refused; use the app's own page")
    identity = identity_of(request.scope)
    if identity is None:  # pragma: no cover - the identity middleware gives every request one
        raise HTTPException(403, "no identity")
    return identity


def mount_agui(app: FastAPI, services: WebServices) -> bool:
    """Serve AG-UI at :data:`AGUI_PATH`; False when the ``agui`` extra is not installed."""
    try:
        from sagents.agui import ThreadRun, agui_router
    except ImportError:
        _log.info("the AG-UI endpoint is off: pip install 'sagents[agui]' to serve it")
        return False

    async def open_thread(thread: ThreadRun) -> None:
        if thread.scope is None:  # pragma: no cover - _identity always answers one
            raise ConversationNotFound("no identity")
        first = thread.user_texts[0] if thread.user_texts else None
        await services.open_thread(thread.scope, thread.thread_id, first)

    router = agui_router(
        services.runtime,
        services.session_config,
        scope=_identity,
        prepare_thread=open_thread,
        max_message_chars=services.config.max_message_chars,
    )
    app.include_router(router, prefix=AGUI_PATH, tags=["AG-UI"])
    return True
