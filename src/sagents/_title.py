"""Where a conversation's title lives in its state: ``metadata["conversation_title"]["title"]``.

The ``ConversationTitle`` middleware writes it and the agent server's recorder copies it to the
conversation row. Both read it here, so the runtime never imports a middleware to know it.
"""

from __future__ import annotations

from sagents._state import State

__all__ = ["TITLE_KEY", "title_of"]

#: The metadata key the title is kept under (the ``ConversationTitle`` middleware's key).
TITLE_KEY = "conversation_title"


def title_of(state: State) -> str | None:
    """The title stored in ``state``, if any."""
    data = state.metadata.get(TITLE_KEY)
    title = data.get("title") if isinstance(data, dict) else None
    return title if isinstance(title, str) and title else None
