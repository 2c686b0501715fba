"""SubAgent: a ``task`` tool that delegates work to sub-agents with their own history.

Each ``task`` call builds a sub-agent (from a named :class:`SubAgentSpec`, a pre-built agent, or
the ``general-purpose`` agent, which is the parent minus this middleware) and runs it to its
answer, which becomes the tool result. Under a :class:`~sagents.Runtime` the sub-agent is an
agent server of its own (``<parent>-sub-<n>``) under the parent's sub-agents supervisor, so it
is observable, its crash never reaches the parent, and stopping the parent ends it. Under a
plain ``Agent.run`` it runs in the tool's task. Parallel ``task`` calls run in parallel because
the loop runs a turn's tool calls concurrently.

A sub-agent that needs human approval suspends the ``task`` call (``ToolContext.suspend``): the
parent becomes ``interrupted`` with the sub-agent's pending calls as its own action requests and
the sub-agent's state in the interrupt data, so the approval survives a restart of either. The
parent's ``resume`` calls ``task`` again with the decisions, which resumes the sub-agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import re
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool

from sagents._errors import InvalidMiddleware, SagentsError
from sagents._interrupt import Interrupt
from sagents._messages import message_to_json
from sagents._state import State
from sagents._status import Status
from sagents.events import AgentShutdown, LLMMessage, StatusChanged, SubAgentActivity
from sagents.execution._agent import Agent
from sagents.execution._host import AgentHost, HostedAgent, agent_host
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import MiddlewareContext, get_middleware_context
from sagents.execution._result import Done, Failed, Interrupted
from sagents.execution._tool_context import ToolContext, ToolResume, get_tool_context
from sagents.middleware._human_in_the_loop import HumanInTheLoop

__all__ = ["GENERAL_PURPOSE", "SubAgent", "SubAgentSpec"]

#: Name of the sub-agent that inherits the parent's configuration.
GENERAL_PURPOSE = "general-purpose"

_GENERAL_DESCRIPTION = (
    "A general-purpose agent with your own tools, for a self-contained piece of work whose "
    "intermediate steps you do not need to see."
)

# Phrases that try to override instructions; a general-purpose system prompt is written by the
# model, so it is treated as untrusted input.
_INJECTION = re.compile(
    r"ignore\s+(all\s+|any\s+)?(the\s+)?(previous|prior|above|earlier)\s+(instructions|prompts?)"
    r"|disregard\s+(all\s+|any\s+)?(the\s+)?(previous|prior|above|earlier|your)"
    r"|forget\s+(all\s+|everything\s+)?(you|your|the)\s+(instructions|were told|rules)"
    r"|you\s+are\s+no\s+longer"
    r"|(reveal|print|show|repeat)\s+(your|the)\s+(system\s+prompt|instructions)"
    r"|developer\s+mode|jailbreak|do\s+anything\s+now",
    re.IGNORECASE,
)

_TERMINAL = frozenset({Status.IDLE, Status.INTERRUPTED, Status.ERROR, Status.CANCELLED})


@dataclass(frozen=True, slots=True, kw_only=True)
class SubAgentSpec:
    """A named sub-agent the ``task`` tool can delegate to.

    Args:
        name: what the model passes as ``task_name``.
        description: when to use it (shown to the model).
        system_prompt: the sub-agent's instructions.
        tools: its tools (langchain tools or typed functions).
        model: its model; None: the parent's.
        middleware: its middleware.
        interrupt_on: tools that need human approval (a ``HumanInTheLoop`` is added).
        until_tool: end the sub-agent when it calls this tool (or any of these); its result
            is the answer.
        max_runs: model calls allowed in one task.
        agent: a pre-built agent to run instead (its ``agent_id`` is replaced per task); the
            other fields but ``name``, ``description``, ``use_instructions`` and
            ``suppress_debug_events`` are then ignored.
        use_instructions: a longer guide to using this sub-agent, which the model fetches with
            the ``get_task_instructions(task_name)`` tool before delegating (offered when a
            sub-agent has one), rather than carrying it in every prompt.
        suppress_debug_events: publish nothing of this sub-agent's work on the parent's
            ``debug`` channel (``SubAgentActivity`` carries its messages): for a sub-agent that
            reads what must not leave it but its answer.
    """

    name: str
    description: str
    system_prompt: str = ""
    tools: Sequence[BaseTool | Callable[..., Any]] = ()
    model: BaseChatModel | None = None
    middleware: Sequence[Middleware | type[Middleware]] = ()
    interrupt_on: Mapping[str, Any] | None = None
    until_tool: str | Sequence[str] | None = None
    max_runs: int = 50
    agent: Agent | None = None
    use_instructions: str | None = None
    suppress_debug_events: bool = False


class SubAgent(Middleware):
    """Delegation to sub-agents through a ``task(instructions, task_name, system_prompt)`` tool.

    Args:
        subagents: the named sub-agents.
        general_purpose: offer the ``general-purpose`` sub-agent (the parent's model, tools and
            middleware, minus this one and ``block_middleware``).
        block_middleware: middleware the general-purpose sub-agent must not inherit, by class
            or class name (e.g. ``"ConversationTitle"``).
        timeout: seconds one task may take (None: no limit).
        max_system_prompt: longest ``system_prompt`` argument accepted, in characters.
        include_task_list: list the sub-agents in the system prompt; False when the
            application names the task to use itself (the model is then told to delegate only
            when directed to a task; ``task_name`` is still checked).
    """

    key = "sub_agent"

    def __init__(
        self,
        subagents: Sequence[SubAgentSpec] = (),
        *,
        general_purpose: bool = True,
        block_middleware: Collection[str | type[Middleware]] = (),
        timeout: float | None = 600.0,
        max_system_prompt: int = 4000,
        include_task_list: bool = True,
    ) -> None:
        self.include_task_list = include_task_list
        self.subagents = {spec.name: spec for spec in subagents}
        self._specs = tuple(subagents)
        self.general_purpose = general_purpose
        self.block_middleware = frozenset(
            b if isinstance(b, str) else b.__name__ for b in block_middleware
        )
        self.timeout = timeout
        self.max_system_prompt = max_system_prompt
        self._numbers = itertools.count(1)  # shared by every parent: ids never repeat
        # Sub-agent servers waiting for an approval, by parent: if the parent moves on without
        # resuming them (a new message dismisses the approval), nobody else would stop them.
        self._waiting: weakref.WeakKeyDictionary[MiddlewareContext, set[str]] = (
            weakref.WeakKeyDictionary()
        )

    def validate(self) -> None:
        names = [spec.name for spec in self._specs]
        for spec in self._specs:
            if not isinstance(spec, SubAgentSpec):
                raise InvalidMiddleware(f"SubAgent: {spec!r} is not a SubAgentSpec")
            if not spec.name.strip() or not spec.description.strip():
                raise InvalidMiddleware("SubAgent: every sub-agent needs a name and a description")
            if spec.use_instructions is not None and (
                not isinstance(spec.use_instructions, str) or not spec.use_instructions.strip()
            ):
                raise InvalidMiddleware(
                    f"SubAgent: {spec.name!r}: use_instructions must be a non-empty string or None"
                )
        if len(set(names)) != len(names):
            raise InvalidMiddleware(f"SubAgent: duplicate sub-agent names in {names}")
        if self.general_purpose and GENERAL_PURPOSE in self.subagents:
            raise InvalidMiddleware(
                f"SubAgent: {GENERAL_PURPOSE!r} is reserved; rename your sub-agent or pass "
                "general_purpose=False"
            )
        if not self.general_purpose and not self._specs:
            raise InvalidMiddleware("SubAgent: no sub-agents to delegate to")
        if self.timeout is not None and not self.timeout > 0:
            raise InvalidMiddleware("SubAgent: timeout must be a positive number of seconds")

    def _catalogue(self) -> list[tuple[str, str]]:
        entries = [(spec.name, spec.description) for spec in self._specs]
        if self.general_purpose:
            entries.insert(0, (GENERAL_PURPOSE, _GENERAL_DESCRIPTION))
        return entries

    def debug_summary(self) -> Mapping[str, object]:
        # The specs hold models and pre-built agents: their names say enough.
        return {
            "subagents": [name for name, _ in self._catalogue()],
            "block_middleware": sorted(self.block_middleware),
            "timeout": self.timeout,
            "include_task_list": self.include_task_list,
            "quiet": [spec.name for spec in self._specs if spec.suppress_debug_events],
        }

    def _guides(self) -> dict[str, str]:
        return {spec.name: spec.use_instructions for spec in self._specs if spec.use_instructions}

    def system_prompt(self) -> str:
        intro = (
            "## Delegating with `task`\n"
            "Use the `task` tool to hand a self-contained piece of work to a sub-agent. It starts "
            "with no memory of this conversation, so give it complete instructions; its final "
            "answer comes back as the tool result. Independent tasks can run in parallel: call "
            "`task` several times in one turn."
        )
        if not self.include_task_list:
            return (
                f"{intro}\nDelegate only when the user or the conversation directs you to a "
                "specific task type; pass it as `task_name`, and never guess one."
            )
        guides = self._guides()
        lines = [
            f"- {name}: {description}"
            + (f" Call `get_task_instructions({name!r})` first." if name in guides else "")
            for name, description in self._catalogue()
        ]
        return f"{intro}\nAvailable sub-agents (`task_name`):\n" + "\n".join(lines)

    def tools(self) -> Sequence[BaseTool]:
        async def task(instructions: str, task_name: str, system_prompt: str | None = None) -> str:
            return await self._task(instructions, task_name, system_prompt)

        names = ", ".join(name for name, _ in self._catalogue())
        tools: list[BaseTool] = [
            StructuredTool.from_function(
                coroutine=task,
                name="task",
                description=(
                    "Delegate a self-contained task to a sub-agent and get its final answer. "
                    f"task_name is one of: {names}. system_prompt optionally sets the "
                    f"{GENERAL_PURPOSE} sub-agent's instructions."
                ),
                metadata={"timeout": self.timeout, "display_text": "Delegating a task"},
            )
        ]
        guides = self._guides()
        if guides:

            def get_task_instructions(task_name: str) -> str:
                """How to use a sub-agent: read it before delegating to it with `task`."""
                guide = guides.get(task_name)
                if guide is None:
                    raise SagentsError(
                        f"no instructions for task_name {task_name!r}; those with some: "
                        f"{', '.join(guides)}"
                    )
                return guide

            tools.append(
                StructuredTool.from_function(
                    func=get_task_instructions,
                    name="get_task_instructions",
                    metadata={"display_text": "Reading a task's instructions"},
                )
            )
        return tools

    async def before_model(self, state: State) -> None:
        # The parent calls its model again: any sub-agent still waiting was dismissed (a resume
        # would have run its task first).
        if not self._waiting:
            return
        ctx = get_middleware_context()
        orphans = self._waiting.pop(ctx, None)
        runtime = agent_host(ctx.services) if orphans else None
        for sub_id in orphans or ():
            if runtime is not None and runtime.get_status_nowait(sub_id) is not None:
                ctx.spawn(_stop_quietly(runtime, sub_id, "dismissed"))

    # -- one task --------------------------------------------------------------------------------

    async def _task(self, instructions: str, task_name: str, system_prompt: str | None) -> str:
        ctx = get_tool_context()
        parent = ctx.agent
        if parent is None:
            raise SagentsError("the task tool runs only inside a sagents agent")
        resume = ctx.resume
        if resume is not None:
            sub_id = str(resume.data["sub_agent_id"])
            state = State.from_dict(resume.data["sub_agent_state"])
        else:
            sub_id = self._next_id(ctx)
            state = State(messages=[HumanMessage(instructions)])
        agent = self._build(task_name, system_prompt, sub_id, parent)
        runtime = agent_host(ctx.services)
        spec = self.subagents.get(task_name)
        report = _Reporter(ctx, sub_id, quiet=spec is not None and spec.suppress_debug_events)
        report("started", {"task_name": task_name, "resumed": bool(resume)})
        if runtime is None:
            status, final, error = await _run_inline(agent, state, resume)
        else:
            host = get_middleware_context()  # the parent's server, as its hooks see it
            self._waiting.get(host, set()).discard(sub_id)
            status, final, error = await self._run_on(runtime, ctx, agent, state, resume, report)
            if status is Status.INTERRUPTED:
                self._waiting.setdefault(host, set()).add(sub_id)
        if status is Status.IDLE:
            answer = _answer(final, agent.until_tools)
            report("completed", answer)
            return answer
        if status is Status.INTERRUPTED and final.interrupt is not None:
            report("status", Status.INTERRUPTED.value)
            self._suspend(ctx, agent, final, final.interrupt, task_name)
            return ""
        report("failed", error)
        raise SagentsError(f"sub-agent {task_name!r} failed: {error}")

    def _next_id(self, ctx: ToolContext) -> str:
        counter = self._numbers
        runtime = agent_host(ctx.services)
        while True:
            sub_id = f"{ctx.agent_id}-sub-{next(counter)}"
            if runtime is None or runtime.get_status_nowait(sub_id) is None:
                return sub_id

    def _build(
        self, task_name: str, system_prompt: str | None, sub_id: str, parent: Agent
    ) -> Agent:
        if task_name == GENERAL_PURPOSE and self.general_purpose:
            prompt = parent.base_system_prompt
            if system_prompt is not None:
                prompt = self._checked_prompt(system_prompt)
            inherited = [
                mw
                for mw in parent.middleware_instances
                if not isinstance(mw, SubAgent)
                and not any(cls.__name__ in self.block_middleware for cls in type(mw).__mro__)
            ]
            # The parent's configuration (model, tools, limits, retries, mode...), minus the
            # delegation itself and the parent's own way of ending a run.
            return dataclasses.replace(
                parent,
                agent_id=sub_id,
                base_system_prompt=prompt,
                middleware=inherited,
                until_tool=None,
            )
        spec = self.subagents.get(task_name)
        if spec is None:
            known = ", ".join(name for name, _ in self._catalogue())
            raise SagentsError(f"unknown task_name {task_name!r}; use one of: {known}")
        if system_prompt is not None:
            raise SagentsError(
                f"system_prompt is only accepted by the {GENERAL_PURPOSE} sub-agent; "
                f"{task_name!r} has its own instructions"
            )
        if spec.agent is not None:
            return dataclasses.replace(spec.agent, agent_id=sub_id)
        middleware: list[Middleware | type[Middleware]] = list(spec.middleware)
        if spec.interrupt_on:
            middleware.append(HumanInTheLoop(interrupt_on=dict(spec.interrupt_on)))
        return Agent(
            agent_id=sub_id,
            model=spec.model or parent.model,
            base_system_prompt=spec.system_prompt,
            middleware=middleware,
            tools=spec.tools,
            until_tool=spec.until_tool,
            max_runs=spec.max_runs,
            retry=parent.retry,
            stream=parent.stream,
        )

    def _checked_prompt(self, prompt: str) -> str:
        if len(prompt) > self.max_system_prompt:
            raise SagentsError(
                f"system_prompt is {len(prompt)} characters; the limit is "
                f"{self.max_system_prompt}. Put the details in the instructions instead"
            )
        if _INJECTION.search(prompt):
            raise SagentsError(
                "system_prompt was refused: it tries to override instructions. Describe the "
                "sub-agent's role and put the work in the instructions"
            )
        return prompt

    # -- running it ------------------------------------------------------------------------------

    async def _run_on(
        self,
        runtime: AgentHost,
        ctx: ToolContext,
        agent: Agent,
        state: State,
        resume: ToolResume | None,
        report: _Reporter,
    ) -> tuple[Status, State, Any]:
        """Run the sub-agent as a server under the parent; it is stopped afterwards unless it
        waits for an approval."""
        sub_id = agent.agent_id
        handle: HostedAgent | None = None
        status = Status.ERROR
        try:
            if resume is not None and runtime.get_status_nowait(sub_id) is Status.INTERRUPTED:
                handle = runtime.agent(sub_id)  # still waiting since the parent paused
            else:
                if runtime.get_status_nowait(sub_id) is not None:
                    await runtime.stop(sub_id, reason="replaced")
                # The caller's data reaches the sub-agent's tools too.
                handle = await runtime.start_sub_agent(
                    ctx.agent_id,
                    agent,
                    state,
                    inactivity_timeout=None,
                    tool_context=ctx.tool_context,
                )
            events = handle.subscribe()
            try:
                if resume is None:
                    await handle.execute()
                else:
                    await handle.resume(resume.decisions)
                status, data = await _follow(events, report)
            finally:
                await events.aclose()
            return status, await handle.get_state(), data
        finally:
            if handle is not None and status is not Status.INTERRUPTED:
                # Also on cancellation: a cancelled parent leaves no sub-agent running.
                with contextlib.suppress(SagentsError):
                    await asyncio.shield(runtime.stop(sub_id, reason="task_finished"))

    def _suspend(
        self,
        ctx: ToolContext,
        agent: Agent,
        final: State,
        interrupt: Interrupt,
        task_name: str,
    ) -> None:
        ctx.suspend(
            Interrupt(
                action_requests=interrupt.action_requests,
                kind="sub_agent",
                data={
                    "sub_agent_id": agent.agent_id,
                    "task_name": task_name,
                    "sub_agent_interrupt": interrupt.to_dict(),
                    "sub_agent_state": final.to_dict(),
                },
            )
        )


class _Reporter:
    """Tells the parent's ``debug`` channel what one sub-agent does (``SubAgentActivity``),
    unless its spec suppresses that."""

    __slots__ = ("_ctx", "_quiet", "_sub_id")

    def __init__(self, ctx: ToolContext, sub_id: str, *, quiet: bool) -> None:
        self._ctx = ctx
        self._sub_id = sub_id
        self._quiet = quiet

    def __call__(self, activity: str, data: Any) -> None:
        ctx = self._ctx
        if not self._quiet and ctx.wants_debug():
            ctx.emit(
                SubAgentActivity(
                    sub_agent_id=self._sub_id,
                    tool_call_id=ctx.tool_call_id,
                    activity=activity,
                    data=data,
                )
            )


async def _follow(events: Any, report: _Reporter) -> tuple[Status, Any]:
    """Forward the sub-agent's activity until its run ends; its final status and data."""
    running = False
    async for event in events:
        match event:
            case StatusChanged(status=status, data=data):
                report("status", status.value)
                if status is Status.RUNNING:
                    running = True
                elif running and status in _TERMINAL:
                    return status, data
            case LLMMessage(message=message):
                report("message", message_to_json(message))
            case AgentShutdown(reason=reason):
                return Status.ERROR, f"the sub-agent stopped ({reason})"
    return Status.ERROR, "the sub-agent's event stream ended"


async def _run_inline(
    agent: Agent, state: State, resume: ToolResume | None
) -> tuple[Status, State, Any]:
    """Run the sub-agent in this task (no runtime: a plain ``Agent.run`` parent)."""
    if resume is None:
        result = await agent.run(state)
    else:
        result = await agent.resume(state, resume.decisions)
    match result:
        case Done():
            return Status.IDLE, result.state, None
        case Interrupted():
            return Status.INTERRUPTED, result.state, None
        case Failed(error=error):
            return Status.ERROR, result.state, str(error)
    raise AssertionError(f"unexpected run result {result!r}")


async def _stop_quietly(runtime: AgentHost, agent_id: str, reason: str) -> None:
    # It may have ended on its own meanwhile: that is fine.
    with contextlib.suppress(SagentsError):
        await runtime.stop(agent_id, reason=reason)


def _answer(state: State, until_tools: tuple[str, ...]) -> str:
    messages: Sequence[BaseMessage] = state.messages
    if until_tools:
        for message in reversed(messages):
            if (
                isinstance(message, ToolMessage)
                and message.name in until_tools
                and message.status != "error"
            ):
                content = message.content
                return content if isinstance(content, str) else json.dumps(content)
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return message.text
    return ""
