"""A conversation's scope may be any hashable value (issue 15, item 5), end to end: sessions,
the agent server's saves, restores, and the memory, SQLite and PostgreSQL stores.

A tuple scope and a frozen-dataclass scope each own a conversation; every other scope — the
text a naive ``str()`` or ``repr()`` of it would give, the text of its stored key, a value of
another type with the same parts — sees nothing of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from sqlalchemy import select

from sagents import (
    Agent,
    ConfigurationError,
    ConversationNotFound,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    State,
    Status,
)
from sagents.events import StatusChanged
from sagents.execution import Reply, RetryPolicy, ScriptedChatModel
from sagents.persistence import scope_key
from sagents.persistence.sql import SqlPersistence
from sagents.session import FactoryConfig
from tests.persistence.conftest import Store


@dataclasses.dataclass(frozen=True)
class Tenant:
    org: str
    user: int


@dataclasses.dataclass(frozen=True)
class Team:
    org: str
    user: int


TUPLE = ("acme", 42)
TENANT = Tenant(org="acme", user=42)


def _equal_copy(scope: Any) -> Any:
    """An equal scope that is another object (as the next request, or a restart, builds it)."""
    if isinstance(scope, Tenant):
        return Tenant(org="".join(["ac", "me"]), user=int("42"))
    return tuple(part for part in scope)


def _strangers(scope: Any) -> list[Any]:
    """Scopes that must see nothing of ``scope``'s conversations."""
    key = scope_key(scope)
    return [
        None,
        "acme",
        str(scope),  # "('acme', 42)", or "Tenant(org='acme', user=42)"
        repr(scope),
        key,  # the text of its stored key: a str scope of its own
        ("acme", "42"),
        ("acme", 43),
        Tenant(org="acme", user=43),
        Team(org="acme", user=42),  # the same fields, another type
        ("acme", 42) if isinstance(scope, Tenant) else Tenant(org="acme", user=42),
    ]


def respond(messages: list[Any]) -> Reply:
    return Reply(text=f"echo: {messages[-1].content}")


class Factory:
    def __init__(self) -> None:
        self.built: list[FactoryConfig] = []
        self.model = ScriptedChatModel(responder=respond, record_prompts=False)

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        self.built.append(config)
        agent = Agent(agent_id=agent_id, model=self.model, retry=RetryPolicy(max_attempts=1))
        return agent, SessionOptions(fresh_state=State())


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def config(store: Store, factory: Factory) -> SessionConfig:
    return SessionConfig(
        factory_router=SingleFactoryRouter(factory),
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=None,  # the tests stop the agents themselves
    )


@pytest.fixture
async def runtime(store: Store) -> Any:
    # Depends on the store so that the store closes after the runtime's final saves.
    async with Runtime() as rt:
        yield rt


async def run_turn(session: Session, text: str) -> None:
    async with session.events as events:
        await session.handle.add_message(text)
        async for event in events:
            if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                return
    raise AssertionError("the turn never ended")


@pytest.mark.parametrize("scope", [TUPLE, TENANT], ids=["tuple", "dataclass"])
async def test_a_conversation_lives_and_is_restored_under_an_object_scope(
    runtime: Runtime, config: SessionConfig, store: Store, factory: Factory, scope: Any
) -> None:
    session = await Session.ensure_running(runtime, config, "c1", scope=scope)
    assert session.started
    assert not session.restored
    assert factory.built[0].scope == scope
    info = await session.handle.info()
    assert info.scope == scope  # the value itself, not its key
    await run_turn(session, "hello")

    # Running: found from an equal scope, from no other.
    running = await Session.fetch_running(runtime, config, "c1", scope=_equal_copy(scope))
    assert running is not None
    for stranger in _strangers(scope):
        with pytest.raises(ConversationNotFound):
            await Session.fetch_running(runtime, config, "c1", scope=stranger)
        with pytest.raises(ConversationNotFound):
            await Session.ensure_running(runtime, config, "c1", scope=stranger)
        with pytest.raises(ConversationNotFound):
            await Session.stop(runtime, config, "c1", scope=stranger)

    assert await Session.stop(runtime, config, "c1", scope=scope)  # waits for its saves
    assert await Session.fetch_running(runtime, config, "c1", scope=scope) is None

    # Stored under the scope: every read from an equal scope finds it, from others nothing.
    same = _equal_copy(scope)
    conversations = await store.list_conversations(same)
    assert [c.id for c in conversations] == ["c1"]
    assert conversations[0].scope == scope
    found = await store.get_conversation(same, "c1")
    assert found is not None
    assert found.scope == scope
    stored = await store.load_state(same, "c1")
    assert stored is not None
    assert [m.content for m in stored.state.messages] == ["hello", "echo: hello"]
    shown = await store.list_display_messages(same, "c1")
    assert [row.type for row in shown] == ["user", "assistant"]
    for stranger in _strangers(scope):
        assert await store.list_conversations(stranger) == []
        assert await store.get_conversation(stranger, "c1") is None
        assert await store.load_state(stranger, "c1") is None
        assert await store.list_display_messages(stranger, "c1") == []
        assert await Session.delete(runtime, config, "c1", scope=stranger) is False
        with pytest.raises(ConversationNotFound):  # its agent cannot take the conversation
            await Session.start(runtime, config, "c1", scope=stranger)
        assert not Session.is_running(runtime, config, "c1")

    # Restored from an equal scope, and it carries on where it stopped.
    again = await Session.ensure_running(runtime, config, "c1", scope=same)
    assert again.started
    assert again.restored
    state = await again.handle.get_state()
    assert [type(m) for m in state.messages] == [HumanMessage, AIMessage]
    await run_turn(again, "again")
    await Session.stop(runtime, config, "c1")
    stored = await store.load_state(scope, "c1")
    assert stored is not None
    assert stored.state.messages[-1].content == "echo: again"

    if isinstance(store, SqlPersistence):
        await _check_the_stored_rows(store, scope)

    assert await Session.delete(runtime, config, "c1", scope=same) is True
    assert await store.list_conversations(scope) == []


async def _check_the_stored_rows(store: SqlPersistence, scope: Any) -> None:
    """The SQL rows hold the scope's key; another store on the same tables (a restarted
    process) reads them back with an equal scope."""
    conversations = store.tables.conversations
    async with store.engine.connect() as conn:
        keys = (await conn.execute(select(conversations.c.scope))).scalars().all()
    assert keys == [scope_key(scope)]
    reopened = SqlPersistence(store.engine, table_prefix=store.tables.prefix)
    try:
        stored = await reopened.load_state(_equal_copy(scope), "c1")
        assert stored is not None
        assert stored.state.messages[-1].content == "echo: again"
        assert await reopened.load_state(scope_key(scope), "c1") is None
    finally:
        await reopened.aclose()


async def test_scopes_that_look_alike_keep_their_own_conversations(
    runtime: Runtime, config: SessionConfig, store: Store
) -> None:
    lookalikes = [TUPLE, TENANT, str(TUPLE), scope_key(TUPLE), ("acme", 42.0), Team("acme", 42)]
    for i, scope in enumerate(lookalikes):
        session = await Session.ensure_running(runtime, config, f"c{i}", scope=scope)
        await run_turn(session, f"hi {i}")
        await Session.stop(runtime, config, session.conversation_id)
    for i, scope in enumerate(lookalikes):
        assert [c.id for c in await store.list_conversations(scope)] == [f"c{i}"]
        stored = await store.load_state(scope, f"c{i}")
        assert stored is not None
        assert stored.state.messages[0].content == f"hi {i}"


@pytest.mark.parametrize(
    ("scope", "advice"),
    [(["acme", 42], "use a tuple"), ({"org": "acme"}, "frozen dataclass"), (object(), "scope_key")],
    ids=["list", "dict", "object"],
)
async def test_a_scope_without_a_stable_key_is_refused_before_anything_runs(
    runtime: Runtime,
    config: SessionConfig,
    store: Store,
    factory: Factory,
    scope: Any,
    advice: str,
) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: Session.start(runtime, config, "x", scope=scope),
        lambda: Session.ensure_running(runtime, config, "x", scope=scope),
        lambda: Session.fetch_running(runtime, config, "x", scope=scope),
        lambda: Session.delete(runtime, config, "x", scope=scope),
        lambda: Session.stop(runtime, config, "x", scope=scope),
        lambda: Session.resume(runtime, config, "x", [], scope=scope),
        lambda: Session.dismiss(runtime, config, "x", scope=scope),
    ]
    for call in calls:
        with pytest.raises(ConfigurationError, match=advice):
            await call()
    assert factory.built == []
    assert runtime.agent_count() == 0
    with pytest.raises(ConfigurationError, match=advice):  # the stores refuse it too
        await store.list_conversations(scope)


def test_the_debugger_shows_a_scope_as_its_key() -> None:
    import json

    from sagents.runtime import AgentInfo
    from sagents.web import agent_json

    def row(scope: Any) -> Any:
        info = AgentInfo(
            agent_id="a", status=Status.IDLE, message_count=0, has_interrupt=False, uptime=1.0
        )
        return json.loads(json.dumps(agent_json(dataclasses.replace(info, scope=scope))))

    assert row(TENANT)["scope"] == scope_key(TENANT)
    assert row(TUPLE)["scope"] == '§("acme",42)'
    assert row("alice")["scope"] == "alice"
    assert row(None)["scope"] is None
    assert row(object())["scope"].startswith("<object object")  # no key: shown, still JSON
