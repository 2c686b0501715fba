"""From AG-UI to sagents: what a ``RunAgentInput`` asks the agent to do.

An AG-UI client sends the whole conversation it knows with every run, plus, when the previous
run ended on an interrupt, one resume entry per interrupt. The agent already holds the
conversation, so the input is read for what is *new*: the user messages at its end that the
agent has not seen (matched by message id, which the agent keeps), and the decisions in the
resume entries. :func:`plan_run` turns both into a :class:`RunPlan` against the agent's state,
before anything is sent to the agent.

Interrupts follow the protocol's rules. An entry answers one pending call (its id is the call's
id); the list must cover every pending call. A list that leaves one open is not taken as
abandoning it: nothing runs and the run ends by presenting the open interrupts again. Entries
all ``cancelled`` abandon the approval: with a new message, the message runs (the agent answers
the pending calls "not approved"), without one the approval is dismissed. Entries for calls
that are not pending are ignored.

A resolved entry's ``payload`` is one decision in the JSON form ``handle.resume`` takes
(``{"type": "approve"}``, ``{"type": "edit", "arguments": {...}}``, ``{"type": "reject",
"message": ...}``, ``{"type": "respond", "message": ...}``, ``{"type": "answer", "answers":
[...]}``). Shorthands other AG-UI agents accept are read too: no payload or ``true`` approves,
``false`` rejects, ``{"approved": bool, "editedArgs"?: {...}, "message"?: ...}``, and for a
question a list of answers, ``{"answers": [...]}``, or the answer text of its one question.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import Message, ResumeEntry, RunAgentInput, TextPart, UserMessage
from langchain_core.messages import HumanMessage

from sagents._errors import InvalidDecision
from sagents._interrupt import ActionRequest, Interrupt
from sagents._state import State

__all__ = [
    "CANCELLED_MESSAGE",
    "RunPlan",
    "UnsupportedInput",
    "decision_from_entry",
    "plan_run",
    "user_texts",
]

_log = logging.getLogger("sagents.agui")

#: What the model reads for a call whose interrupt the user abandoned.
CANCELLED_MESSAGE = "The user cancelled this request without deciding."


class UnsupportedInput(ValueError):
    """A message this adapter cannot give the agent (e.g. an image without text)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """What one AG-UI run does to the agent.

    Attributes:
        messages: user messages to add, in order (the first one starts a run).
        decisions: one decision per pending call, to resume with; None: no resume.
        dismiss: dismiss the pending interrupt (every entry was ``cancelled``, no message).
        still_open: the pending interrupt stays open (the resume entries do not cover it):
            nothing runs, the run ends presenting it again.
    """

    messages: list[HumanMessage] = field(default_factory=list)
    decisions: list[dict[str, Any]] | None = None
    dismiss: bool = False
    still_open: bool = False

    @property
    def runs(self) -> bool:
        """Whether the plan starts a run (or continues one)."""
        return bool(self.messages) or self.decisions is not None


def _content_text(message: UserMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append(part.text)
        else:
            raise UnsupportedInput(
                f"message {message.id!r}: only text content is supported, not "
                f"{getattr(part, 'type', type(part).__name__)!r} parts"
            )
    return "".join(parts)


def _trailing_users(messages: Sequence[Message]) -> list[UserMessage]:
    trailing: list[UserMessage] = []
    for message in reversed(messages):
        if not isinstance(message, UserMessage):
            break
        trailing.append(message)
    trailing.reverse()
    return trailing


def user_texts(run: RunAgentInput) -> list[tuple[str, str]]:
    """The user messages at the end of the input (the candidates for new messages), as
    ``(id, text)``.

    Raises:
        UnsupportedInput: one of them holds something other than text.
    """
    return [(m.id, _content_text(m)) for m in _trailing_users(run.messages)]


def decision_from_entry(request: ActionRequest, entry: ResumeEntry) -> dict[str, Any]:
    """The decision a resume entry gives for ``request``, in ``handle.resume``'s JSON form.

    Raises:
        InvalidDecision: the payload says no decision this adapter understands.
    """
    if entry.status == "cancelled":
        return {"type": "reject", "message": CANCELLED_MESSAGE}
    payload = entry.payload
    if payload is None or payload is True:
        return {"type": "approve"}
    if payload is False:
        return {"type": "reject"}
    if isinstance(payload, str):
        if payload in ("approve", "reject"):
            return {"type": payload}
        if len(request.questions) == 1:
            return {"type": "answer", "answers": [payload]}
    elif isinstance(payload, list):
        return {"type": "answer", "answers": payload}
    elif isinstance(payload, dict):
        if "type" in payload:
            return dict(payload)
        if "answers" in payload and set(payload) == {"answers"}:
            return {"type": "answer", "answers": payload["answers"]}
        if isinstance(payload.get("approved"), bool):
            edited = payload.get("editedArgs", payload.get("arguments"))
            message = payload.get("message", payload.get("reason"))
            if not payload["approved"]:
                rejected: dict[str, Any] = {"type": "reject"}
                return rejected if message is None else {**rejected, "message": message}
            if edited is None:
                return {"type": "approve"}
            return {"type": "edit", "arguments": edited}
    raise InvalidDecision(
        f"resume entry {entry.interrupt_id!r}: the payload is not a decision; send one of "
        f'{", ".join(request.allowed_decisions)} as {{"type": ...}} (see the interrupt\'s '
        "responseSchema)"
    )


def _new_messages(run: RunAgentInput, state: State) -> list[HumanMessage]:
    known = {m.id for m in state.messages if m.id}
    return [
        HumanMessage(content=text, id=message_id)
        for message_id, text in user_texts(run)
        if message_id not in known
    ]


def plan_run(run: RunAgentInput, state: State) -> RunPlan:
    """What ``run`` does to an agent in ``state`` (see the module docs).

    Raises:
        InvalidDecision: a resume entry's payload is not a decision.
        UnsupportedInput: a new message holds something other than text.
    """
    messages = _new_messages(run, state)
    entries = {e.interrupt_id: e for e in run.resume or ()}
    pending: Interrupt | None = state.interrupt
    if pending is None:
        if entries:
            _log.warning(
                "AG-UI run %s of thread %s: resume entries %s answer no pending interrupt; ignored",
                run.run_id,
                run.thread_id,
                sorted(entries),
            )
        return RunPlan(messages=messages)
    requests = pending.action_requests
    known = {r.tool_call_id for r in requests}
    unknown = sorted(set(entries) - known)
    if unknown:
        _log.warning(
            "AG-UI run %s of thread %s: resume entries %s answer no pending interrupt; ignored",
            run.run_id,
            run.thread_id,
            unknown,
        )
    if not known <= set(entries):
        return RunPlan(still_open=True)
    chosen = [entries[r.tool_call_id] for r in requests]
    if all(e.status == "cancelled" for e in chosen):
        # A new message answers the pending calls itself ("not approved: the user sent a new
        # message"); without one, the approval is dismissed and nothing runs.
        return RunPlan(messages=messages, dismiss=not messages)
    decisions = [decision_from_entry(r, e) for r, e in zip(requests, chosen, strict=True)]
    return RunPlan(messages=messages, decisions=decisions)
