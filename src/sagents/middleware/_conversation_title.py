"""``ConversationTitle``: name the conversation after its first user message.

When a model call is about to happen, the state has no title yet and holds a user message, the
middleware spawns a background task (owned by the agent server) that asks a cheap model for a
title. The task never touches the state: it sends the title to this middleware through the
agent's mailbox (:meth:`MiddlewareContext.send`), and ``handle_message`` stores it in
``state.metadata["conversation_title"] = {"title": ...}``, broadcasts
:class:`~sagents.events.ConversationTitleGenerated` and asks for a save at the
``"title_generated"`` lifecycle point. Going through the mailbox means the title is applied to
the latest state, after the run in progress, never racing it.

Failures are ignored (logged at info level): a title is a nicety, and the agent must not notice.
There is at most one attempt per agent server: a failing title model is not called again on
every model call, only after the agent's server restarts. The title needs an agent server
(``Runtime.start_agent``): under a plain ``Agent.run`` there is no mailbox to bring it back, so
the attempt ends in the (logged, ignored) error of :meth:`MiddlewareContext.send`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from sagents._errors import InvalidMiddleware
from sagents._state import State
from sagents._title import TITLE_KEY, title_of
from sagents.events import ConversationTitleGenerated
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import MiddlewareContext, get_middleware_context
from sagents.middleware._summarization import is_summary

__all__ = ["ConversationTitle", "TitleReady"]

_log = logging.getLogger("sagents.middleware")

DEFAULT_TITLE_PROMPT = """\
Write a short title (at most six words) for a conversation that starts with the user message \
below. Answer with the title only: no quotes, no final period."""

#: Longest part of the first user message shown to the title model.
_MESSAGE_LIMIT = 2000
_QUOTES = "\"'`«»“”‘’*#"


@dataclass(frozen=True, slots=True, kw_only=True)
class TitleReady:
    """The message the title task sends to :class:`ConversationTitle` through the mailbox."""

    title: str


def clean_title(text: str, max_length: int) -> str:
    """The model's answer as a title: first line, no quotes or markdown, at most ``max_length``
    characters (cut at a word when possible)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    title = lines[0].strip() if lines else ""
    title = title.removeprefix("Title:").removeprefix("title:").strip().strip(_QUOTES).strip()
    title = title.rstrip(".").strip()
    if len(title) > max_length:
        cut = title[: max_length + 1].rsplit(" ", 1)[0]
        title = (cut if cut and len(cut) <= max_length else title[:max_length]).rstrip()
    return title


class ConversationTitle(Middleware):
    """Generates a title for the conversation from its first user message.

    Args:
        model: the (cheap) model that writes the title.
        max_length: longest title kept, in characters.
        prompt: the instructions given to the title model.
        fallbacks: models tried in order when the one before fails or gives no title.

    Raises:
        InvalidMiddleware: ``model`` or a fallback is not a chat model, or ``max_length`` is
            not positive.
    """

    key = TITLE_KEY

    def __init__(
        self,
        model: BaseChatModel,
        *,
        max_length: int = 80,
        prompt: str = DEFAULT_TITLE_PROMPT,
        fallbacks: Sequence[BaseChatModel] = (),
    ) -> None:
        self.model = model
        self.max_length = max_length
        self.prompt = prompt
        self.fallbacks = tuple(fallbacks)
        # The servers that already tried (by their middleware context, one per server
        # instance): a restarted server may try again, and an ended one is forgotten.
        self._attempted: weakref.WeakSet[MiddlewareContext] = weakref.WeakSet()
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.model, BaseChatModel):
            raise InvalidMiddleware("ConversationTitle(model=...) must be a langchain chat model")
        for index, fallback in enumerate(self.fallbacks):
            if not isinstance(fallback, BaseChatModel):
                raise InvalidMiddleware(
                    f"ConversationTitle(fallbacks=...)[{index}] must be a langchain chat model, "
                    f"got {type(fallback).__name__}"
                )
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise InvalidMiddleware("ConversationTitle(max_length=...) must be an int")
        if self.max_length < 1:
            raise InvalidMiddleware("ConversationTitle(max_length=...) must be >= 1")

    @staticmethod
    def title_of(state: State) -> str | None:
        """The title stored in ``state``, if any."""
        return title_of(state)

    async def before_model(self, state: State) -> State | None:
        if self.title_of(state) is not None:
            return None
        first = _first_user_text(state.messages)
        if first is None:
            return None
        ctx = get_middleware_context()
        if not ctx.can_send or ctx in self._attempted:
            return None  # no server to hand the title back to (plain Agent.run), or tried
        self._attempted.add(ctx)
        ctx.spawn(self._generate(ctx, first), name=f"sagents-title-{ctx.agent_id}")
        return None

    async def _generate(self, ctx: MiddlewareContext, first: str) -> None:
        prompt = [SystemMessage(self.prompt), HumanMessage(first[:_MESSAGE_LIMIT])]
        models = (self.model, *self.fallbacks)
        for attempt, model in enumerate(models, start=1):
            try:
                reply = await model.ainvoke(prompt)
                title = clean_title(reply.text, self.max_length)
                if not title:
                    raise ValueError("the title model returned no title")
            except Exception as exc:
                after = "trying the next model" if attempt < len(models) else "it stays untitled"
                _log.info(
                    "agent %r: no conversation title (%s: %s) from title model %d of %d; %s",
                    ctx.agent_id,
                    type(exc).__name__,
                    exc,
                    attempt,
                    len(models),
                    after,
                )
                continue
            ctx.send(self.key, TitleReady(title=title))
            return

    async def handle_message(self, message: Any, state: State) -> State | None:
        if not isinstance(message, TitleReady):
            return None
        ctx = get_middleware_context()
        if self.title_of(state) is not None:
            return None  # a title set meanwhile (by the application) wins
        new_state = state.with_metadata(self.key, {"title": message.title})
        ctx.emit(ConversationTitleGenerated(title=message.title))
        ctx.persist("title_generated")
        return new_state


def _first_user_text(messages: list[BaseMessage]) -> str | None:
    for message in messages:
        if isinstance(message, HumanMessage) and not is_summary(message):
            text = message.text.strip()
            if text:
                return text
    return None
