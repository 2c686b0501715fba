"""Interrupts and the human decisions that answer them (rules L4, X24).

An :class:`Interrupt` is plain data kept in ``State.interrupt``, so it is persisted with the state
and survives a restart: the approval a user gives tomorrow resumes the run paused today.
Decisions are small frozen dataclasses; :func:`parse_decisions` also accepts their JSON form
(``{"type": "approve"}``, ``{"type": "edit", "arguments": {...}}``,
``{"type": "reject", "message": "..."}``) because decisions usually arrive from a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, get_args

from sagents._errors import InvalidDecision, StateError

__all__ = [
    "ActionRequest",
    "Approve",
    "Decision",
    "DecisionType",
    "Edit",
    "Interrupt",
    "Reject",
    "parse_decisions",
]

DecisionType: TypeAlias = Literal["approve", "edit", "reject"]
ALL_DECISIONS: tuple[DecisionType, ...] = get_args(DecisionType)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionRequest:
    """One tool call waiting for a human decision."""

    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    allowed_decisions: tuple[DecisionType, ...] = ALL_DECISIONS
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool_call_id": self.tool_call_id,
            "name": self.name,
            "arguments": self.arguments,
            "allowed_decisions": list(self.allowed_decisions),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActionRequest:
        if not isinstance(data, Mapping):
            raise StateError(f"an action request must be an object, got {type(data).__name__}")
        try:
            allowed = tuple(data.get("allowed_decisions", ALL_DECISIONS))
            if any(a not in ALL_DECISIONS for a in allowed):
                raise StateError(f"unknown decision type in {allowed!r}")
            request = cls(
                tool_call_id=str(data["tool_call_id"]),
                name=str(data["name"]),
                arguments=dict(data["arguments"]),
                allowed_decisions=allowed,
                description=data.get("description"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"malformed action request {data!r}: {exc}") from None
        return request


@dataclass(frozen=True, slots=True, kw_only=True)
class Interrupt:
    """A run paused for human approval.

    Attributes:
        action_requests: the pending calls, one decision expected for each, in this order.
        kind: who raised it (``"human_approval"``, or e.g. ``"sub_agent"``).
        data: extra JSON data for the raiser (e.g. which sub-agent is waiting).
    """

    action_requests: tuple[ActionRequest, ...]
    kind: str = "human_approval"
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "action_requests": [r.to_dict() for r in self.action_requests],
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interrupt:
        """Rebuild an interrupt from its JSON form.

        Raises:
            StateError: the data is malformed.
        """
        if not isinstance(data, Mapping):
            raise StateError(f"an interrupt must be an object, got {type(data).__name__}")
        requests = data.get("action_requests")
        if not isinstance(requests, list):
            raise StateError("an interrupt needs a list 'action_requests'")
        extra = data.get("data", {})
        if not isinstance(extra, dict):
            raise StateError("interrupt 'data' must be an object")
        return cls(
            action_requests=tuple(ActionRequest.from_dict(r) for r in requests),
            kind=str(data.get("kind", "human_approval")),
            data=dict(extra),
        )


@dataclass(frozen=True, slots=True)
class Approve:
    """Run the call as the model asked."""

    type: Literal["approve"] = "approve"


@dataclass(frozen=True, slots=True)
class Edit:
    """Run the call with these arguments instead."""

    arguments: dict[str, Any]
    type: Literal["edit"] = "edit"


@dataclass(frozen=True, slots=True)
class Reject:
    """Do not run the call; the model is told, with ``message`` when given."""

    message: str | None = None
    type: Literal["reject"] = "reject"


Decision: TypeAlias = Approve | Edit | Reject


def _parse_one(index: int, raw: Decision | Mapping[str, Any]) -> Decision:
    if isinstance(raw, Approve | Edit | Reject):
        decision: Decision = raw
    elif isinstance(raw, Mapping):
        kind = raw.get("type")
        extra = set(raw) - {"type", "arguments", "message"}
        if extra:
            raise InvalidDecision(
                f"decision {index}: unknown field(s) {sorted(extra)}; "
                "use 'type', 'arguments' (edit) or 'message' (reject)"
            )
        if kind not in ALL_DECISIONS:
            raise InvalidDecision(
                f"decision {index}: type {kind!r} is not one of 'approve', 'edit', 'reject'"
            )
        if "arguments" in raw and kind != "edit":
            raise InvalidDecision(f"decision {index}: only an edit takes 'arguments'")
        if "message" in raw and kind != "reject":
            raise InvalidDecision(f"decision {index}: only a reject takes a 'message'")
        if kind == "approve":
            decision = Approve()
        elif kind == "edit":
            decision = Edit(arguments=raw.get("arguments"))  # type: ignore[arg-type]
        elif kind == "reject":
            decision = Reject(message=raw.get("message"))
        else:
            raise InvalidDecision(
                f"decision {index}: type {kind!r} is not one of 'approve', 'edit', 'reject'"
            )
    else:
        raise InvalidDecision(
            f"decision {index}: expected Approve/Edit/Reject or a dict, got {type(raw).__name__}"
        )
    if isinstance(decision, Edit) and not isinstance(decision.arguments, dict):
        raise InvalidDecision(f"decision {index}: an edit needs 'arguments' as an object")
    if isinstance(decision, Reject) and not isinstance(decision.message, str | None):
        raise InvalidDecision(f"decision {index}: a reject 'message' must be a string")
    return decision


def parse_decisions(
    interrupt: Interrupt, decisions: Sequence[Decision | Mapping[str, Any]]
) -> tuple[Decision, ...]:
    """Validate ``decisions`` against ``interrupt``: one per action request, each allowed.

    Raises:
        InvalidDecision: wrong count, unknown or disallowed type, or a malformed edit/reject.
    """
    if isinstance(decisions, str | bytes | bytearray | Mapping) or not isinstance(
        decisions, Sequence
    ):
        raise InvalidDecision("decisions must be a list with one decision per pending call")
    expected = len(interrupt.action_requests)
    if len(decisions) != expected:
        names = ", ".join(r.name for r in interrupt.action_requests)
        raise InvalidDecision(
            f"expected {expected} decision(s), one per pending call ({names}), got {len(decisions)}"
        )
    parsed = tuple(_parse_one(i, raw) for i, raw in enumerate(decisions))
    for i, (request, decision) in enumerate(zip(interrupt.action_requests, parsed, strict=True)):
        if decision.type not in request.allowed_decisions:
            raise InvalidDecision(
                f"decision {i} for {request.name!r}: {decision.type!r} is not allowed; "
                f"allowed: {', '.join(request.allowed_decisions)}"
            )
    return parsed
