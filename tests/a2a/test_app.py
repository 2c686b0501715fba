"""The A2A app: its agent card (skills from the agent's tools, streaming), its options, its
lifespan, and the import guard of ``sagents.a2a``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from a2a.client import A2ACardResolver
from a2a.types import AgentSkill

from sagents import InvalidOption, Runtime, SessionConfig
from sagents.a2a import CARD_CONVERSATION_ID, a2a_app, build_agent_card, tool_skills
from sagents.session import FactoryConfig, SingleFactoryRouter
from tests.a2a.conftest import DemoFactory, ScriptFactory, Served


async def test_the_served_card_lists_the_tools_as_skills_and_streams(demo: Served) -> None:
    card = await A2ACardResolver(demo.http, demo.base_url).get_agent_card()
    assert card.name == "Test agent"
    assert card.description == "Conversations over A2A."
    assert card.capabilities.streaming
    assert [(i.url, i.protocol_binding) for i in card.supported_interfaces] == [
        (f"{demo.base_url}/", "JSONRPC")
    ]
    skills = {s.id: s for s in card.skills}
    assert {"write_todos", "write_file", "read_file"} <= set(skills)
    assert list(skills["write_file"].tags) == ["tool", "FileSystem"]
    assert list(skills["write_todos"].tags) == ["tool", "TodoList"]
    assert skills["write_file"].description


async def test_skills_come_from_the_agent_given_or_the_factory() -> None:
    factory = ScriptFactory()
    config = SessionConfig(factory_router=SingleFactoryRouter(factory))
    card = await build_agent_card(config, url="http://a/", name="n", description="d")
    ids = [s.id for s in card.skills]
    assert ids == ["ask_user", "wait_for_release"]
    assert [list(s.tags) for s in card.skills] == [["tool", "AskUserQuestion"], ["tool"]]
    assert card.skills[1].description == "Wait until the test releases the call."

    agent, _ = DemoFactory().create_agent(
        config.agent_id_for(CARD_CONVERSATION_ID),
        factory_config(config),
    )
    from_agent = await build_agent_card(
        config, url="http://a/", name="n", description="d", agent=agent
    )
    assert [s.id for s in from_agent.skills] == [s.id for s in tool_skills(agent)]
    assert "write_file" in [s.id for s in from_agent.skills]

    given = AgentSkill(id="research", name="Research", description="Researches.", tags=["x"])
    explicit = await build_agent_card(
        config, url="http://a/", name="n", description="d", skills=[given]
    )
    assert list(explicit.skills) == [given]


def factory_config(config: SessionConfig) -> FactoryConfig:
    return FactoryConfig(
        conversation_id=CARD_CONVERSATION_ID,
        agent_id=config.agent_id_for(CARD_CONVERSATION_ID),
    )


async def test_paths_must_be_absolute() -> None:
    config = SessionConfig(factory_router=SingleFactoryRouter(ScriptFactory()))
    card = await build_agent_card(config, url="http://a/", name="n", description="d", skills=[])
    with pytest.raises(InvalidOption, match="rpc_path"):
        a2a_app(Runtime(), config, card, rpc_path="a2a")


@pytest.mark.parametrize("manage", [True, False])
async def test_the_runtime_is_the_apps_only_when_asked(manage: bool) -> None:
    config = SessionConfig(factory_router=SingleFactoryRouter(ScriptFactory()))
    card = await build_agent_card(config, url="http://a/", name="n", description="d", skills=[])
    runtime = Runtime()
    app = a2a_app(runtime, config, card, manage_runtime=manage)
    async with app.router.lifespan_context(app):
        assert runtime.ready() is manage
    assert not runtime.ready()
    if not manage:
        async with runtime, app.router.lifespan_context(app):
            pass
        assert not runtime.ready()


def test_without_the_sdk_the_import_error_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["a2a"] = None
        try:
            import sagents.a2a
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "pip install 'sagents[a2a]'" in out
