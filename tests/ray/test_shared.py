"""Models and tools travel to a host once and are shared by the agents that use them."""

from __future__ import annotations

import gc

import pytest

pytest.importorskip("ray")

from langchain_core.tools import tool

from sagents import Agent
from sagents.execution import DEFAULT_MODE
from sagents.ray._shared import SharedMissing, SharedObjects, SharedPickler
from sagents.testing import Reply, ScriptedChatModel


@tool
def shout(text: str) -> str:
    """Say it louder."""
    return text.upper()


def agent(agent_id: str, model: ScriptedChatModel) -> Agent:
    return Agent(agent_id=agent_id, model=model, tools=[shout])


def test_agents_started_on_a_host_share_their_model_and_tools() -> None:
    model = ScriptedChatModel(script=[Reply(text="hi")])
    client, host = SharedPickler(), SharedObjects()
    first, shared = client.dumps(agent("a1", model))
    assert len(shared) == 2  # the model and the tool, each pickled apart
    second, again = client.dumps(agent("a2", model))
    assert again.keys() == shared.keys()
    a1 = host.loads(first, shared)
    a2 = host.loads(second, {})  # already there: nothing is sent again
    assert a1.agent_id == "a1"
    assert a2.agent_id == "a2"
    assert a1.model is a2.model
    assert a1.tools[0] is a2.tools[0]
    assert a1.model is not model  # (a copy on the host, shared by its agents)
    assert a1.mode is DEFAULT_MODE  # the default pipeline travels as a name
    # The model bound to the tools' schemas is derived again on the host, not carried by
    # each agent: one binding for both, as in one process.
    assert a1.models[0] is a2.models[0]
    assert a1.all_tools.keys() == {"shout"}


def test_a_shared_object_no_agent_uses_any_more_is_sent_again() -> None:
    model = ScriptedChatModel(script=[Reply(text="hi")])
    client, host = SharedPickler(), SharedObjects()
    # Without tools: a model bound to tools is also kept by the bounded cache of bindings
    # (as in one process), for as long as that keeps it.
    payload, shared = client.dumps(Agent(agent_id="a1", model=model))
    loaded = host.loads(payload, shared)
    del loaded
    gc.collect()
    with pytest.raises(SharedMissing):
        host.loads(payload, {})
    assert host.loads(payload, shared).agent_id == "a1"


def test_a_different_model_is_a_different_object() -> None:
    client, host = SharedPickler(), SharedObjects()
    p1, s1 = client.dumps(agent("a1", ScriptedChatModel(script=[Reply(text="one")])))
    p2, s2 = client.dumps(agent("a2", ScriptedChatModel(script=[Reply(text="two")])))
    a1, a2 = host.loads(p1, s1), host.loads(p2, s2)
    assert a1.model is not a2.model
    assert a1.tools[0] is a2.tools[0]  # the same tool object on the client
