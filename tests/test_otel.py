"""The OpenTelemetry bridge (L72): a real run becomes spans and metrics.

Providers are passed explicitly, never set globally, so these tests leave no process state behind.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from langchain_core.messages import HumanMessage
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, get_current_span

from sagents import Agent, SagentsError, State, Status, otel, telemetry
from sagents.events import StatusChanged
from sagents.execution import Fail, Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.runtime import PendingSubscription, Runtime


class Bridge:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.instrumentation = otel.instrument(self.tracer_provider, self.meter_provider)

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name → ``(attributes, data point)`` pairs."""
        data = self.reader.get_metrics_data()
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out[metric.name] = [
                        (dict(p.attributes or {}), p) for p in metric.data.data_points
                    ]
        return out

    def close(self) -> None:
        self.instrumentation.uninstrument()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    b = Bridge()
    yield b
    b.close()


def ping() -> str:
    """Ping."""
    return "pong"


def broken() -> str:
    """Always fails."""
    raise RuntimeError("disk on fire")


def scripted_agent(agent_id: str = "t", tool: str = "ping") -> Agent:
    model = ScriptedChatModel(
        script=[
            Fail(error=TimeoutError()),
            Reply(
                tool_calls=[ToolCall(name=tool, args={})],
                usage={"input_tokens": 7, "output_tokens": 3},
            ),
            Reply(text="done", usage={"input_tokens": 11, "output_tokens": 5}),
        ]
    )
    return Agent(
        agent_id=agent_id, model=model, tools=[ping, broken], retry=RetryPolicy(initial_delay=0)
    )


def total(points: list[tuple[dict[str, Any], Any]]) -> Any:
    return sum(p.value for _, p in points)


async def test_a_run_becomes_nested_spans(bridge: Bridge) -> None:
    await scripted_agent().run(State(messages=[HumanMessage("hi")]))

    names = [s.name for s in bridge.spans()]
    assert names == [
        "sagents.llm",  # the transient failure
        "sagents.llm",  # the tool call
        "sagents.tool",
        "sagents.llm",  # the answer
        "sagents.execution",
    ]
    (execution,) = bridge.spans("sagents.execution")
    failed, tool_turn, answer = bridge.spans("sagents.llm")
    (tool,) = bridge.spans("sagents.tool")

    assert execution.parent is None
    assert execution.attributes is not None
    assert execution.attributes["sagents.agent_id"] == "t"
    assert execution.attributes["sagents.status"] == "idle"
    assert execution.attributes["sagents.model_calls"] == 2
    assert execution.status.status_code is StatusCode.UNSET
    for child in (failed, tool_turn, tool, answer):
        assert child.parent is not None
        assert child.parent.span_id == execution.context.span_id
        assert child.context.trace_id == execution.context.trace_id
        assert child.attributes is not None
        assert child.attributes["sagents.agent_id"] == "t"
        assert child.start_time is not None
        assert child.end_time is not None
        assert child.start_time <= child.end_time

    starts = [s.start_time or 0 for s in (failed, tool_turn, tool, answer)]
    assert starts == sorted(starts)
    assert execution.start_time is not None
    assert execution.end_time is not None
    tolerance = 1_000_000  # 1 ms: wall-clock span times, durations from perf_counter
    assert execution.start_time <= starts[0] + tolerance
    assert (answer.end_time or 0) <= execution.end_time + tolerance

    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description is not None
    assert failed.status.description.startswith("TimeoutError")
    assert failed.kind is SpanKind.CLIENT
    assert failed.attributes is not None
    assert failed.attributes["sagents.attempt"] == 1
    assert "duration" not in str(dict(failed.attributes))  # clock readings are span times

    assert tool_turn.status.status_code is StatusCode.UNSET
    assert tool_turn.attributes is not None
    assert tool_turn.attributes["sagents.attempt"] == 2
    assert tool_turn.attributes["sagents.model"] == "scripted"
    assert tool_turn.attributes["sagents.input_tokens"] == 7
    assert tool_turn.attributes["sagents.output_tokens"] == 3
    assert answer.attributes is not None
    assert answer.attributes["sagents.attempt"] == 1  # attempts count within one model call

    assert tool.attributes is not None
    assert tool.attributes["sagents.tool"] == "ping"
    assert isinstance(tool.attributes["sagents.tool_call_id"], str)
    assert tool.status.status_code is StatusCode.UNSET


async def test_a_run_records_metrics(bridge: Bridge) -> None:
    await scripted_agent().run(State(messages=[HumanMessage("hi")]))
    metrics = bridge.metrics()

    assert total(metrics["sagents.llm.requests"]) == 3
    assert total(metrics["sagents.llm.errors"]) == 1
    assert total(metrics["sagents.llm.input_tokens"]) == 7 + 11
    assert total(metrics["sagents.llm.output_tokens"]) == 3 + 5
    assert [a for a, _ in metrics["sagents.llm.input_tokens"]] == [{"sagents.model": "scripted"}]
    assert [a for a, _ in metrics["sagents.llm.requests"]] == [{"sagents.model": "scripted"}]

    tool_calls = metrics["sagents.tool.calls"]
    assert [(a, p.value) for a, p in tool_calls] == [({"sagents.tool": "ping"}, 1)]
    assert "sagents.tool.errors" not in metrics

    llm_durations = {a["sagents.outcome"]: p for a, p in metrics["sagents.llm.duration"]}
    assert llm_durations["response"].count == 2
    assert llm_durations["error"].count == 1
    assert all(p.sum >= 0 for p in llm_durations.values())
    ((tool_attrs, tool_duration),) = metrics["sagents.tool.duration"]
    assert tool_attrs == {"sagents.tool": "ping", "sagents.outcome": "stop"}
    assert tool_duration.count == 1
    ((exec_attrs, exec_duration),) = metrics["sagents.execution.duration"]
    assert exec_attrs["sagents.status"] == "idle"
    assert exec_duration.count == 1
    # no high-cardinality ids on metrics
    for points in metrics.values():
        for attributes, _ in points:
            assert "sagents.agent_id" not in attributes
            assert "sagents.tool_call_id" not in attributes


async def test_a_failing_tool_gives_an_error_span_and_counter(bridge: Bridge) -> None:
    await scripted_agent(tool="broken").run(State(messages=[HumanMessage("hi")]))
    (tool,) = bridge.spans("sagents.tool")
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.attributes is not None
    assert tool.attributes["sagents.tool"] == "broken"
    metrics = bridge.metrics()
    assert [(a, p.value) for a, p in metrics["sagents.tool.errors"]] == [
        ({"sagents.tool": "broken"}, 1)
    ]


async def test_concurrent_runs_nest_under_their_own_execution(bridge: Bridge) -> None:
    await asyncio.gather(
        scripted_agent("a").run(State(messages=[HumanMessage("hi")])),
        scripted_agent("b").run(State(messages=[HumanMessage("hi")])),
    )
    executions = {
        (s.attributes or {})["sagents.agent_id"]: s for s in bridge.spans("sagents.execution")
    }
    assert set(executions) == {"a", "b"}
    assert executions["a"].context.trace_id != executions["b"].context.trace_id
    children = [s for s in bridge.spans() if s.name != "sagents.execution"]
    assert len(children) == 8
    for child in children:
        owner = executions[(child.attributes or {})["sagents.agent_id"]]
        assert child.parent is not None
        assert child.parent.span_id == owner.context.span_id


async def test_a_run_nests_under_the_callers_span_and_restores_it(bridge: Bridge) -> None:
    tracer = bridge.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        await scripted_agent().run(State(messages=[HumanMessage("hi")]))
        assert get_current_span() is request
    (execution,) = bridge.spans("sagents.execution")
    assert execution.parent is not None
    assert execution.parent.span_id == request.get_span_context().span_id
    assert not get_current_span().get_span_context().is_valid


def test_an_end_without_its_start_still_makes_a_whole_span(bridge: Bridge) -> None:
    # As when instrumenting while a run is in flight: nothing was opened at start.
    telemetry.execute(
        ("sagents", "execution", "stop"),
        {"duration": 0.5, "model_calls": 1},
        {"agent_id": "late", "status": "error", "mode": "default", "extra": {"no": "dicts"}},
    )
    (span,) = bridge.spans("sagents.execution")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "sagents.agent_id": "late",
        "sagents.status": "error",
        "sagents.mode": "default",
        "sagents.model_calls": 1,
    }
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.end_time - span.start_time == pytest.approx(500_000_000, abs=1_000)


def test_interrupt_ends_the_execution_span_as_interrupted(bridge: Bridge) -> None:
    telemetry.execute(("sagents", "execution", "start"), {"system_time": 1.0}, {"agent_id": "i"})
    telemetry.execute(("sagents", "execution", "interrupt"), {"duration": 0.1}, {"agent_id": "i"})
    (span,) = bridge.spans("sagents.execution")
    assert span.attributes is not None
    assert span.attributes["sagents.status"] == "interrupted"
    assert span.status.status_code is StatusCode.UNSET
    assert not get_current_span().get_span_context().is_valid  # the context was restored


def test_agent_crash_is_an_error_span(bridge: Bridge) -> None:
    meta = {"agent_id": "c", "conversation_id": "conv", "status": "running"}
    telemetry.execute(("sagents", "agent", "start"), {"duration": 0.01}, meta)
    telemetry.execute(("sagents", "agent", "crash"), {"duration": 3.0}, {**meta, "reason": "crash"})
    (span,) = bridge.spans("sagents.agent")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["sagents.reason"] == "crash"
    assert span.attributes["sagents.conversation_id"] == "conv"
    metrics = bridge.metrics()
    assert total(metrics["sagents.agent.starts"]) == 1
    assert total(metrics["sagents.agent.crashes"]) == 1
    assert "sagents.agent.stops" not in metrics


async def test_an_agent_server_lifetime_is_a_span(bridge: Bridge) -> None:
    async with Runtime() as runtime:
        events = PendingSubscription()
        handle = await runtime.start_agent(
            scripted_agent("srv"),
            State(messages=[HumanMessage("hi")]),
            conversation_id="conv-1",
            initial_subscribers=[events],
        )
        await handle.execute()
        async for event in events:
            if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                break
        await handle.stop(reason="user_left")
    (agent,) = bridge.spans("sagents.agent")
    assert agent.attributes is not None
    assert agent.attributes["sagents.agent_id"] == "srv"
    assert agent.attributes["sagents.conversation_id"] == "conv-1"
    assert agent.attributes["sagents.reason"] == "user_left"
    assert agent.status.status_code is StatusCode.UNSET
    (execution,) = bridge.spans("sagents.execution")
    assert execution.attributes is not None
    assert execution.attributes["sagents.agent_id"] == "srv"
    assert execution.attributes["sagents.conversation_id"] == "conv-1"
    for child in bridge.spans("sagents.llm") + bridge.spans("sagents.tool"):
        assert child.parent is not None
        assert child.parent.span_id == execution.context.span_id
        assert (child.attributes or {})["sagents.conversation_id"] == "conv-1"
    metrics = bridge.metrics()
    assert total(metrics["sagents.agent.starts"]) == 1
    assert metrics["sagents.agent.stops"][0][0] == {"sagents.reason": "user_left"}


async def test_the_start_metadata_is_on_every_span(bridge: Bridge) -> None:
    """Sagents' ``:otel_attributes``: what the application adds at start reaches the agent,
    run, model and tool spans alike."""
    async with Runtime() as runtime:
        events = PendingSubscription()
        handle = await runtime.start_agent(
            scripted_agent("tagged"),
            State(messages=[HumanMessage("hi")]),
            metadata={"tenant": "acme", "plan": "pro"},
            initial_subscribers=[events],
        )
        await handle.execute()
        async for event in events:
            if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                break
        await handle.stop()
    names = ["sagents.agent", "sagents.execution", "sagents.llm", "sagents.tool"]
    spans = [span for name in names for span in bridge.spans(name)]
    assert {span.name for span in spans} == set(names)
    for span in spans:
        attributes = span.attributes or {}
        assert (attributes["sagents.tenant"], attributes["sagents.plan"]) == ("acme", "pro"), (
            span.name
        )


def test_instrumenting_twice_is_refused_until_uninstrumented(bridge: Bridge) -> None:
    assert bridge.instrumentation.active
    with pytest.raises(SagentsError, match="already instrumented"):
        otel.instrument(bridge.tracer_provider, bridge.meter_provider)
    bridge.instrumentation.uninstrument()
    bridge.instrumentation.uninstrument()  # idempotent
    assert not bridge.instrumentation.active
    assert telemetry.list_handlers(("sagents",)) == []
    with otel.instrument(bridge.tracer_provider, bridge.meter_provider) as again:
        assert again.active
        # the old handle must not detach the new one
        bridge.instrumentation.uninstrument()
        assert again.active
    assert not again.active


def test_uninstrumented_events_make_no_spans(bridge: Bridge) -> None:
    bridge.instrumentation.uninstrument()
    telemetry.execute(("sagents", "tool", "stop"), {"duration": 0.1}, {"agent_id": "x"})
    assert bridge.spans() == []


def test_import_sagents_does_not_import_opentelemetry() -> None:
    code = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Block())
        import sagents, sagents.execution, sagents.middleware, sagents.events, sagents.telemetry
        import sagents.runtime
        assert not any(m.split(".")[0] == "opentelemetry" for m in sys.modules)
        try:
            import sagents.otel
        except ImportError as exc:
            print("ok", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok blocked: opentelemetry")
