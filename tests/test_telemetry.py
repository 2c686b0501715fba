"""Telemetry (L70, L71): attach / detach, failing handlers detached, loop events emitted."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from sagents import Agent, SagentsError, State, telemetry
from sagents.execution import Fail, Reply, RetryPolicy, ScriptedChatModel, ToolCall

Record = tuple[tuple[str, ...], Mapping[str, Any], Mapping[str, Any], Any]


def recorder(into: list[Record]) -> telemetry.Handler:
    def handle(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        into.append((event, measurements, metadata, config))

    return handle


def test_attach_executes_with_config_and_detach_stops() -> None:
    seen: list[Record] = []
    telemetry.attach("h1", ("app", "thing"), recorder(seen), config={"k": 1})
    telemetry.execute(("app", "thing"), {"n": 1}, {"who": "me"})
    telemetry.execute(("app", "other"), {"n": 2}, {})
    assert seen == [(("app", "thing"), {"n": 1}, {"who": "me"}, {"k": 1})]
    assert telemetry.detach("h1") is True
    assert telemetry.detach("h1") is False
    telemetry.execute(("app", "thing"), {"n": 3}, {})
    assert len(seen) == 1


def test_attaching_an_id_twice_is_an_error() -> None:
    telemetry.attach("dup", ("a",), recorder([]))
    with pytest.raises(SagentsError, match="already attached"):
        telemetry.attach_many("dup", [("b",)], recorder([]))


def test_attach_many_and_list_handlers() -> None:
    seen: list[Record] = []
    telemetry.attach_many("many", [("x", "1"), ("x", "2")], recorder(seen))
    telemetry.execute(("x", "1"), {}, {})
    telemetry.execute(("x", "2"), {}, {})
    assert [r[0] for r in seen] == [("x", "1"), ("x", "2")]
    assert sorted(telemetry.list_handlers(("x",))) == [("many", ("x", "1")), ("many", ("x", "2"))]
    assert telemetry.has_handlers(("x", "1"))


def test_a_raising_handler_is_detached_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Record] = []

    def broken(*args: Any) -> None:
        raise RuntimeError("observer bug")

    telemetry.attach("broken", ("e",), broken)
    telemetry.attach("good", ("e",), recorder(seen))
    with caplog.at_level(logging.ERROR, logger="sagents.telemetry"):
        telemetry.execute(("e",), {}, {})
    assert "broken" in caplog.text
    assert [h for h, _ in telemetry.list_handlers()] == ["good"]
    telemetry.execute(("e",), {}, {})
    assert len(seen) == 2


async def test_a_run_emits_execution_llm_and_tool_events() -> None:
    seen: list[Record] = []
    telemetry.attach_many(
        "all",
        [
            ("sagents", "execution", "start"),
            ("sagents", "execution", "stop"),
            ("sagents", "llm", "request"),
            ("sagents", "llm", "response"),
            ("sagents", "llm", "error"),
            ("sagents", "tool", "start"),
            ("sagents", "tool", "stop"),
        ],
        recorder(seen),
    )

    def ping() -> str:
        """Ping."""
        return "pong"

    model = ScriptedChatModel(
        script=[
            Fail(error=TimeoutError("blip")),
            Reply(
                tool_calls=[ToolCall(name="ping", args={})],
                usage={"input_tokens": 7, "output_tokens": 3},
            ),
            Reply(text="done"),
        ]
    )
    agent = Agent(agent_id="t", model=model, tools=[ping], retry=RetryPolicy(initial_delay=0))
    await agent.run(State(messages=[HumanMessage("hi")]))
    names = [r[0][1:] for r in seen]
    assert names == [
        ("execution", "start"),
        ("llm", "request"),
        ("llm", "error"),
        ("llm", "request"),
        ("llm", "response"),
        ("tool", "start"),
        ("tool", "stop"),
        ("llm", "request"),
        ("llm", "response"),
        ("execution", "stop"),
    ]
    response = next(r for r in seen if r[0][1:] == ("llm", "response"))
    assert response[1]["input_tokens"] == 7
    assert response[1]["output_tokens"] == 3
    assert response[1]["duration"] >= 0
    assert all(r[2]["agent_id"] == "t" for r in seen)
    assert seen[-1][2]["status"] == "idle"
    assert seen[-1][1]["model_calls"] == 2
