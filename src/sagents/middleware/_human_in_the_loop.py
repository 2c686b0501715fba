"""``HumanInTheLoop``: pause before protected tool calls run.

After each model call, if the reply calls protected tools, the middleware returns an
:class:`~sagents.Interrupt` listing every protected call of the turn (parallel calls each get their
own decision); the loop pauses before *any* tool of that turn runs. On resume, approved and edited
calls run, rejected ones get a rejection result, responded ones get the human's text as their
result without running, and unprotected calls of the same turn run once, with them.

Configuration per tool name::

    HumanInTheLoop(interrupt_on={
        "write_file": True,                                    # approve / edit / reject
        "delete_file": {"allowed_decisions": ["approve", "reject"],
                        "description": "Deleting files cannot be undone"},
        "lookup": {"allowed_decisions": ["approve", "respond"]},  # or answer in its place
        "read_file": False,                                    # not protected
    })

``respond`` is opt-in: ``True`` keeps the three decisions every approval UI already offers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from langchain_core.messages import AIMessage

from sagents._errors import InvalidMiddleware
from sagents._interrupt import APPROVAL_DECISIONS, ActionRequest, DecisionType, Interrupt
from sagents._state import State
from sagents.execution._middleware import Middleware

__all__ = ["HumanInTheLoop"]

_POLICY_KEYS = {"allowed_decisions", "description"}
#: What a policy may allow, in the order a UI shows them (``answer`` is for questions).
_DECISIONS: tuple[DecisionType, ...] = (*APPROVAL_DECISIONS, "respond")


class HumanInTheLoop(Middleware):
    """Interrupts the run for human approval of the tools named in ``interrupt_on``."""

    key = "human_in_the_loop"

    def __init__(self, interrupt_on: Mapping[str, bool | Mapping[str, Any]]) -> None:
        if not isinstance(interrupt_on, Mapping):
            raise InvalidMiddleware(
                "HumanInTheLoop(interrupt_on=...) must map tool names to True, False or a policy "
                f"dict, got {type(interrupt_on).__name__}"
            )
        self.interrupt_on = dict(interrupt_on)
        self._policies: dict[str, tuple[tuple[DecisionType, ...], str | None]] = {}
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.interrupt_on, dict) or not self.interrupt_on:
            raise InvalidMiddleware("HumanInTheLoop(interrupt_on=...) needs at least one tool name")
        policies: dict[str, tuple[tuple[DecisionType, ...], str | None]] = {}
        for name, policy in self.interrupt_on.items():
            where = f"HumanInTheLoop.interrupt_on[{name!r}]"
            if not isinstance(name, str) or not name:
                raise InvalidMiddleware(f"{where}: keys must be tool names (non-empty strings)")
            if policy is False:
                continue
            if policy is True:
                policies[name] = (APPROVAL_DECISIONS, None)
                continue
            if not isinstance(policy, Mapping):
                raise InvalidMiddleware(f"{where} must be True, False or a dict")
            unknown = set(policy) - _POLICY_KEYS
            if unknown:
                raise InvalidMiddleware(
                    f"{where}: unknown key(s) {sorted(unknown)}; use {sorted(_POLICY_KEYS)}"
                )
            raw = policy.get("allowed_decisions", APPROVAL_DECISIONS)
            given = set(raw) if isinstance(raw, list | tuple | set | frozenset) else set()
            # Canonical order, so a UI gets the same buttons in the same order every time.
            allowed = tuple(d for d in _DECISIONS if d in given)
            if not given or not given <= set(_DECISIONS):
                raise InvalidMiddleware(
                    f"{where}: allowed_decisions must be a non-empty subset of {_DECISIONS}"
                )
            description = policy.get("description")
            if description is not None and not isinstance(description, str):
                raise InvalidMiddleware(f"{where}: description must be a string")
            policies[name] = (allowed, description)
        self._policies = policies

    def check_tools(self, tool_names: Collection[str]) -> None:
        unknown = sorted(set(self._policies) - set(tool_names))
        if unknown:
            raise InvalidMiddleware(
                f"HumanInTheLoop.interrupt_on names tools the agent does not have: {unknown} "
                f"(a typo would leave the real tool unprotected); tools: {sorted(tool_names)}"
            )

    def protects(self, tool_name: str) -> bool:
        """Whether calls to ``tool_name`` need approval."""
        return tool_name in self._policies

    async def after_model(self, state: State) -> State | Interrupt | None:
        last = state.messages[-1] if state.messages else None
        if not isinstance(last, AIMessage) or not last.tool_calls:
            return None
        requests = []
        for call in last.tool_calls:
            policy = self._policies.get(call["name"])
            if policy is None:
                continue
            allowed, description = policy
            requests.append(
                ActionRequest(
                    tool_call_id=call["id"] or "",
                    name=call["name"],
                    arguments=dict(call["args"]),
                    allowed_decisions=allowed,
                    description=description,
                )
            )
        if not requests:
            return None
        return Interrupt(action_requests=tuple(requests))
