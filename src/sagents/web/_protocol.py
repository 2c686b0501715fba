"""The frames a client sends on the conversation socket, and the decisions both doors take.

One pydantic model per frame (extra fields refused), told apart by ``type``; each may carry a
``ref`` of up to 64 characters that the server echoes in its answer. The bounds are the edge's
(``_limits.py``): storable text, the shape of edited tool arguments, how many answers and
choices a decision holds. Whether a decision fits the pending call is not checked here but by
the core (``parse_decisions``), which names the call and the problem; the REST door takes the
same :data:`DecisionFrame` values.

The frames the server sends are plain JSON objects, listed in ``_socket.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sagents._interrupt import MAX_CHOICES, MAX_QUESTIONS
from sagents.runtime._reset import ResetFiles
from sagents.web._limits import StorableText, ToolArguments

__all__ = [
    "MAX_REF_CHARS",
    "AnyFrame",
    "CancelFrame",
    "ClientFrame",
    "DecideFrame",
    "DecisionFrame",
    "DismissFrame",
    "PingFrame",
    "ResetFrame",
    "RetryFrame",
    "SendFrame",
    "frames",
]

#: The longest ``ref`` a frame may carry.
MAX_REF_CHARS = 64


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ref: Annotated[str, Field(max_length=MAX_REF_CHARS)] | None = None


class SendFrame(_Frame):
    type: Literal["send"]
    # The length limit is the configuration's (max_message_chars), checked on use.
    text: Annotated[StorableText, Field(min_length=1)]


class CancelFrame(_Frame):
    type: Literal["cancel"]


class PingFrame(_Frame):
    type: Literal["ping"]


class RetryFrame(_Frame):
    type: Literal["retry"]


class ApproveDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["approve"]


class EditDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["edit"]
    arguments: ToolArguments


class RejectDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["reject"]
    message: Annotated[StorableText, Field(max_length=2000)] | None = None


class RespondDecision(BaseModel):
    """The person answers in place of the call (a question, or an approval that allows it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["respond"]
    # Empty or overlong text is refused by the core, with the words a person reads.
    message: StorableText


#: One answer: a choice or text, or the choices of a multiple-choice question.
AnswerValue = StorableText | Annotated[list[StorableText], Field(max_length=MAX_CHOICES)]


class AnswerDecision(BaseModel):
    """The answers to a call's questions, one per question, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["answer"]
    answers: Annotated[list[AnswerValue], Field(max_length=MAX_QUESTIONS)]


#: One decision on a pending call, as both doors take it.
DecisionFrame = Annotated[
    ApproveDecision | EditDecision | RejectDecision | RespondDecision | AnswerDecision,
    Field(discriminator="type"),
]


class DecideFrame(_Frame):
    type: Literal["decide"]
    decisions: Annotated[list[DecisionFrame], Field(min_length=1, max_length=100)]


class DismissFrame(_Frame):
    type: Literal["dismiss"]


class ResetFrame(_Frame):
    type: Literal["reset"]
    files: ResetFiles = "keep"


AnyFrame = (
    SendFrame | CancelFrame | DecideFrame | DismissFrame | ResetFrame | RetryFrame | PingFrame
)
#: A frame a client sends, told apart by its ``type``.
ClientFrame = Annotated[AnyFrame, Field(discriminator="type")]
#: Validates a decoded frame (``frames.validate_python(raw)``).
frames: TypeAdapter[AnyFrame] = TypeAdapter(ClientFrame)
