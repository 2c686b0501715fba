"""Binding tools to the model once per (model, tools): the cache behind ``Agent`` construction."""

from __future__ import annotations

import gc
import weakref

from langchain_core.tools import BaseTool, StructuredTool

from sagents import Agent
from sagents.execution import Reply, ScriptedChatModel, _agent


def model() -> ScriptedChatModel:
    return ScriptedChatModel(script=[Reply(text="x")])


def make_tool(name: str = "ping") -> BaseTool:
    def ping() -> str:
        """Ping."""
        return "pong"

    return StructuredTool.from_function(func=ping, name=name)


def test_agents_with_the_same_model_and_tools_share_one_binding() -> None:
    m, t = model(), make_tool()
    first = Agent(agent_id="a", model=m, tools=[t])
    second = Agent(agent_id="b", model=m, tools=[t])
    assert second.models[0] is first.models[0]
    assert first.models[0].kwargs["tools"][0]["function"]["name"] == "ping"  # type: ignore[attr-defined]


def test_equal_but_distinct_tools_or_models_are_bound_again() -> None:
    m = model()
    first = Agent(agent_id="a", model=m, tools=[make_tool()])
    second = Agent(agent_id="b", model=m, tools=[make_tool()])
    assert second.models[0] is not first.models[0]
    third = Agent(agent_id="c", model=model(), tools=list(first.all_tools.values()))
    assert third.models[0] is not first.models[0]


def test_the_order_of_the_tools_is_part_of_the_key() -> None:
    m, a, b = model(), make_tool("a"), make_tool("b")
    ab = Agent(agent_id="x", model=m, tools=[a, b])
    ba = Agent(agent_id="y", model=m, tools=[b, a])
    names = [t["function"]["name"] for t in ba.models[0].kwargs["tools"]]  # type: ignore[attr-defined]
    assert names == ["b", "a"]
    assert ab.models[0] is not ba.models[0]


def test_fallback_models_are_bound_and_named_each() -> None:
    main, fallback, t = model(), model(), make_tool()
    agent = Agent(agent_id="a", model=main, fallback_models=[fallback], tools=[t])
    again = Agent(agent_id="b", model=main, fallback_models=[fallback], tools=[t])
    assert all(x is y for x, y in zip(again.models, agent.models, strict=True))
    assert agent.models[0] is not agent.models[1]
    assert [bound.bound for bound in agent.models] == [main, fallback]  # type: ignore[attr-defined]


def test_model_names_are_computed_once_per_model() -> None:
    named = ScriptedChatModel(script=[Reply(text="x")], model_name="gpt-test")
    agent = Agent(agent_id="a", model=named, fallback_models=[model()], tools=[make_tool()])
    assert agent.model_names == ("gpt-test", "scripted")


def test_an_agent_without_tools_uses_the_model_itself() -> None:
    m = model()
    agent = Agent(agent_id="a", model=m)
    assert len(agent.models) == 1
    assert agent.models[0] is m


def test_the_cache_is_bounded_and_lets_evicted_tools_go() -> None:
    m = model()
    first = make_tool()
    Agent(agent_id="a", model=m, tools=[first])
    gone = weakref.ref(first)
    del first
    for i in range(_agent._BIND_CACHE_SIZE + 5):
        Agent(agent_id=f"a{i}", model=m, tools=[make_tool()])
    assert len(_agent._bind_cache) == _agent._BIND_CACHE_SIZE
    gc.collect()
    assert gone() is None


def test_the_most_recently_used_binding_is_kept() -> None:
    m, kept, dropped = model(), make_tool("kept"), make_tool("dropped")
    first = Agent(agent_id="a", model=m, tools=[kept]).models[0]
    old = Agent(agent_id="b", model=m, tools=[dropped]).models[0]
    for i in range(_agent._BIND_CACHE_SIZE * 2):
        Agent(agent_id=f"a{i}", model=m, tools=[make_tool()])
        # A hit moves the binding to the end, so it outlives the churn.
        assert Agent(agent_id="again", model=m, tools=[kept]).models[0] is first
    assert Agent(agent_id="c", model=m, tools=[dropped]).models[0] is not old
