"""Agent configuration (X1, X4): validated at construction, each error naming its field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.tools import BaseTool, tool

from sagents import Agent, InvalidAgent, InvalidMiddleware, Middleware, SagentsError
from sagents.execution import DEFAULT_MODE, Reply, ScriptedChatModel
from sagents.middleware import FileSystem, HumanInTheLoop, TodoList


def model() -> ScriptedChatModel:
    return ScriptedChatModel(script=[Reply(text="x")])


def ping() -> str:
    """Ping."""
    return "pong"


@pytest.mark.parametrize("agent_id", ["", "   ", None, 42])
def test_empty_or_non_string_agent_id_is_rejected(agent_id: Any) -> None:
    with pytest.raises(InvalidAgent, match=r"Agent\.agent_id") as info:
        Agent(agent_id=agent_id, model=model())
    assert info.value.field == "agent_id"


def test_model_must_be_a_chat_model() -> None:
    with pytest.raises(InvalidAgent, match=r"Agent\.model: must be a langchain BaseChatModel"):
        Agent(agent_id="a", model="gpt-4")  # type: ignore[arg-type]


def test_duplicate_tool_names_are_rejected_naming_the_source() -> None:
    @tool
    def write_todos(x: str) -> str:
        """Clashes with TodoList's tool."""
        return x

    with pytest.raises(InvalidAgent, match="duplicate tool name 'write_todos'"):
        Agent(agent_id="a", model=model(), middleware=[TodoList()], tools=[write_todos])
    with pytest.raises(InvalidAgent, match="duplicate tool name 'ping'"):
        Agent(agent_id="a", model=model(), tools=[ping, ping])


@pytest.mark.parametrize("bad", [object(), "TodoList", 3, FileSystem.tools])
def test_non_middleware_entries_are_rejected(bad: Any) -> None:
    with pytest.raises(InvalidMiddleware, match=r"Agent\.middleware: \[0\]"):
        Agent(agent_id="a", model=model(), middleware=[bad])


def test_middleware_classes_are_built_with_defaults() -> None:
    agent = Agent(agent_id="a", model=model(), middleware=[TodoList, FileSystem])
    assert [type(m) for m in agent.middleware_instances] == [TodoList, FileSystem]
    assert {"write_todos", "ls", "read_file"} <= set(agent.all_tools)


def test_middleware_class_that_needs_arguments_gives_a_clear_error() -> None:
    with pytest.raises(InvalidMiddleware, match="HumanInTheLoop"):
        Agent(agent_id="a", model=model(), middleware=[HumanInTheLoop])


def test_middleware_failing_its_own_validation() -> None:
    class Picky(Middleware):
        def validate(self) -> None:
            raise ValueError("needs a budget")

    with pytest.raises(InvalidMiddleware, match="Picky failed validation: needs a budget"):
        Agent(agent_id="a", model=model(), middleware=[Picky()])


def test_two_middleware_with_one_metadata_key_are_rejected() -> None:
    with pytest.raises(InvalidMiddleware, match="metadata key 'todo_list'"):
        Agent(agent_id="a", model=model(), middleware=[TodoList(), TodoList()])


def test_a_middleware_s_debug_summary_is_its_tools_and_public_attributes() -> None:
    class Quoting(Middleware):
        def __init__(self) -> None:
            self.style = "smart"
            self.corpus = "x" * 500
            self._cache: dict[str, str] = {}

        def tools(self) -> Sequence[BaseTool]:
            return [tool(ping)]

    summary = Quoting().debug_summary()
    assert isinstance(summary, Mapping)
    assert list(summary) == ["tools", "corpus", "style"]
    assert summary["tools"] == "ping"
    assert summary["style"] == "'smart'"
    corpus = str(summary["corpus"])
    assert len(corpus) == 200  # a short repr: the debugger shows it, it does not dump it
    assert corpus.endswith("…")

    class Slotted(Middleware):
        __slots__ = ("limit",)

    assert Slotted().debug_summary() == {}


def test_middleware_key_defaults_to_snake_case_class_name() -> None:
    class MyAuditTrail(Middleware):
        pass

    assert MyAuditTrail().key == "my_audit_trail"
    assert TodoList().key == "todo_list"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_runs": 0}, "max_runs"),
        ({"max_runs": "many"}, "max_runs"),
        ({"tool_timeout": 0}, "tool_timeout"),
        ({"tool_timeout": -1.0}, "tool_timeout"),
        ({"until_tool": "missing"}, "until_tool"),
        ({"base_system_prompt": 3}, "base_system_prompt"),
        ({"fallback_models": ["gpt"]}, "fallback_models"),
        ({"mode": "fast"}, "mode"),
        ({"tools": [42]}, "tools"),
    ],
)
def test_invalid_fields_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidAgent) as info:
        Agent(agent_id="a", model=model(), tools=kwargs.pop("tools", [ping]), **kwargs)
    assert info.value.field == field
    assert f"Agent.{field}" in str(info.value)


def test_a_function_without_docstring_cannot_be_a_tool() -> None:
    def undocumented(x: int) -> int:
        return x

    with pytest.raises(InvalidAgent, match="cannot turn undocumented into a tool"):
        Agent(agent_id="a", model=model(), tools=[undocumented])


def test_a_model_without_tool_calling_is_rejected_only_when_tools_exist() -> None:
    plain = FakeListChatModel(responses=["hi"])
    Agent(agent_id="a", model=plain)  # no tools: fine
    with pytest.raises(InvalidAgent, match="does not support tool calling"):
        Agent(agent_id="a", model=plain, tools=[ping])


def test_agent_is_frozen_and_derives_everything_once() -> None:
    agent = Agent(agent_id="a", model=model(), base_system_prompt="base", middleware=[TodoList()])
    with pytest.raises(AttributeError):
        agent.agent_id = "b"  # type: ignore[misc]
    assert agent.mode is DEFAULT_MODE
    assert agent.system_prompt.startswith("base\n\n## Todo list")
    assert len(agent.models) == 1


def test_errors_are_sagents_errors() -> None:
    assert issubclass(InvalidAgent, SagentsError)
    assert issubclass(InvalidMiddleware, InvalidAgent)
