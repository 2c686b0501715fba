"""OpenTelemetry bridge: sagents' telemetry events as spans and metrics.

An optional dependency (``pip install sagents[otel]``); ``import sagents`` never imports it::

    from sagents import otel

    instrumentation = otel.instrument()  # the global providers, or pass your own
    ...
    instrumentation.uninstrument()

Spans:

======================  ===================================================  ================
name                    from                                                 error status on
======================  ===================================================  ================
``sagents.execution``   execution ``start`` → ``stop`` / ``interrupt``       ``status=error``
``sagents.llm``         llm ``request`` → ``response`` / ``error``           ``error``
``sagents.tool``        tool ``start`` → ``stop`` / ``error``                ``error``
``sagents.agent``       agent ``start`` → ``stop`` / ``crash``               ``crash``
======================  ===================================================  ================

Attributes are the events' metadata and measurements whose values are primitives (``str``,
``bool``, ``int``, ``float``), named ``sagents.<key>``: ``sagents.agent_id``,
``sagents.conversation_id``, ``sagents.status``, ``sagents.reason``, ``sagents.attempt``,
``sagents.model``, ``sagents.tool``, ``sagents.tool_call_id``, ``sagents.input_tokens`` …
Clock readings (``duration``, ``system_time``, ``monotonic_time``) become the span's times instead.

**Why most spans are made at their end event.** A start and its end arrive as two separate
calls, and pairing them through a table keyed by ``agent_id`` + ``attempt`` or ``tool_call_id``
is fragile: a cancelled tool or model call emits a start and never an end, so the table leaks;
two runs of one agent id overlap; and a bridge instrumented mid-run sees ends without starts.
So the llm, tool and agent spans are created whole when the end event arrives, with
``start_time`` set back by the measured ``duration``: nothing is held between the two calls, so
nothing can leak or be mismatched.

The execution span is the exception, because it is the parent of the others: it opens at
execution ``start`` and becomes the *current* OpenTelemetry span of the task running the loop
(handlers run synchronously in the emitting task). Tool calls run in tasks that copy that
context, so llm and tool spans, any span your own tool code opens, and nested sub-agent runs all
nest under it, while concurrent runs, each in its own task, never see each other's. Execution
``stop`` / ``interrupt`` ends it and restores the context from before ``start``. The open span
lives only in that task's context, never in a global table: if a run dies without its end event
(or you uninstrument mid-run), the span is simply never exported, and stays the current span of
that task only (an agent server's run task ends with the run). Agent spans are not parents of
executions: a server lives for hours, a trace should cover one run, and the agent span is only
made when the server ends.

Metrics (no agent, conversation or tool-call ids as metric attributes: cardinality stays bounded):

=================================  ==============  =============================================
instrument                         kind            attributes
=================================  ==============  =============================================
``sagents.llm.requests``           counter         ``sagents.model`` (llm ``request``)
``sagents.llm.errors``             counter         ``sagents.model``
``sagents.llm.input_tokens``       counter         ``sagents.model`` (llm ``response``)
``sagents.llm.output_tokens``      counter         ``sagents.model`` (llm ``response``)
``sagents.llm.duration``           histogram, s    ``sagents.model``, ``sagents.outcome``
``sagents.tool.calls``             counter         ``sagents.tool`` (tool ``start``)
``sagents.tool.errors``            counter         ``sagents.tool``
``sagents.tool.duration``          histogram, s    ``sagents.tool``, ``sagents.outcome``
``sagents.execution.duration``     histogram, s    ``sagents.mode``, ``sagents.status``
``sagents.agent.starts``           counter         —
``sagents.agent.stops``            counter         ``sagents.reason``
``sagents.agent.crashes``          counter         —
``sagents.persistence.errors``     counter         ``sagents.operation``
=================================  ==============  =============================================
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider, get_meter_provider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from sagents import __version__, telemetry
from sagents._errors import SagentsError

__all__ = ["Instrumentation", "instrument"]

_HANDLER_PREFIX = "sagents.otel"
_handler_numbers = itertools.count(1)
_CLOCK_KEYS = frozenset({"duration", "system_time", "monotonic_time"})
_OPEN_EXECUTION = otel_context.create_key("sagents.open_execution")

_Attributes = dict[str, AttributeValue]


def _attributes(*sources: Mapping[str, Any]) -> _Attributes:
    """``sagents.<key>`` for each primitive value; later sources win."""
    out: _Attributes = {}
    for source in sources:
        for key, value in source.items():
            if key not in _CLOCK_KEYS and isinstance(value, str | bool | int | float):
                out[f"sagents.{key}"] = value
    return out


def _pick(metadata: Mapping[str, Any], *keys: str) -> _Attributes:
    return _attributes({k: metadata[k] for k in keys if k in metadata})


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


@dataclass(frozen=True, slots=True)
class _OpenExecution:
    span: trace.Span
    agent_id: Any
    previous: otel_context.Context


class Instrumentation:
    """The handlers :func:`instrument` attached; :meth:`uninstrument` removes them.

    Also a context manager that uninstruments on exit.
    """

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        self._handler_id = f"{_HANDLER_PREFIX}/{next(_handler_numbers)}"
        self._tracer = tracer_provider.get_tracer("sagents", __version__)
        meter = meter_provider.get_meter("sagents", __version__)
        self._llm_requests = meter.create_counter(
            "sagents.llm.requests", "{request}", "Model call attempts"
        )
        self._llm_errors = meter.create_counter(
            "sagents.llm.errors", "{request}", "Model call attempts that failed"
        )
        self._input_tokens = meter.create_counter(
            "sagents.llm.input_tokens", "{token}", "Input tokens reported by the model"
        )
        self._output_tokens = meter.create_counter(
            "sagents.llm.output_tokens", "{token}", "Output tokens reported by the model"
        )
        self._llm_duration = meter.create_histogram(
            "sagents.llm.duration", "s", "Duration of one model call attempt"
        )
        self._tool_calls = meter.create_counter("sagents.tool.calls", "{call}", "Tool calls")
        self._tool_errors = meter.create_counter(
            "sagents.tool.errors", "{call}", "Tool calls that failed"
        )
        self._tool_duration = meter.create_histogram(
            "sagents.tool.duration", "s", "Duration of one tool call"
        )
        self._execution_duration = meter.create_histogram(
            "sagents.execution.duration", "s", "Duration of one run of the agent loop"
        )
        self._agent_starts = meter.create_counter(
            "sagents.agent.starts", "{agent}", "Agent servers started"
        )
        self._agent_stops = meter.create_counter(
            "sagents.agent.stops", "{agent}", "Agent servers stopped (not crashed)"
        )
        self._agent_crashes = meter.create_counter(
            "sagents.agent.crashes", "{agent}", "Agent servers that crashed"
        )
        self._persistence_errors = meter.create_counter(
            "sagents.persistence.errors", "{error}", "Failed saves of agent state"
        )
        self._dispatch: dict[
            telemetry.EventName, Callable[[str, Mapping[str, Any], Mapping[str, Any]], None]
        ] = {
            telemetry.AGENT_START: self._agent_start,
            telemetry.AGENT_STOP: self._agent_end,
            telemetry.AGENT_CRASH: self._agent_end,
            telemetry.EXECUTION_START: self._execution_start,
            telemetry.EXECUTION_STOP: self._execution_end,
            telemetry.EXECUTION_INTERRUPT: self._execution_end,
            telemetry.LLM_REQUEST: self._llm_request,
            telemetry.LLM_RESPONSE: self._llm_end,
            telemetry.LLM_ERROR: self._llm_end,
            telemetry.TOOL_START: self._tool_start,
            telemetry.TOOL_STOP: self._tool_end,
            telemetry.TOOL_ERROR: self._tool_end,
            telemetry.PERSISTENCE_ERROR: self._persistence_error,
        }

    @property
    def active(self) -> bool:
        """Whether the handlers are attached (a handler that raised is detached by telemetry)."""
        return any(h == self._handler_id for h, _ in telemetry.list_handlers(("sagents",)))

    def uninstrument(self) -> None:
        """Detach the handlers; calling it again does nothing.

        An execution span open at that moment is never ended, so never exported.
        """
        telemetry.detach(self._handler_id)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.uninstrument()

    # -- wiring -------------------------------------------------------------------------------

    def _attach(self) -> None:
        telemetry.attach_many(self._handler_id, list(self._dispatch), self._handle)

    def _handle(
        self,
        event: telemetry.EventName,
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
        config: Any,
    ) -> None:
        self._dispatch[event](event[-1], measurements, metadata)

    def _finished_span(
        self,
        name: str,
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        error: str | None = None,
    ) -> None:
        """A span whose end is now and whose start is ``duration`` earlier."""
        end = time.time_ns()
        start = end - _ns(float(measurements.get("duration", 0.0)))
        span = self._tracer.start_span(
            name, kind=kind, attributes=_attributes(metadata, measurements), start_time=start
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end)

    # -- agent --------------------------------------------------------------------------------

    def _agent_start(
        self, _: str, measurements: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        self._agent_starts.add(1)

    def _agent_end(
        self, end: str, measurements: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        crashed = end == "crash"
        if crashed:
            self._agent_crashes.add(1)
        else:
            self._agent_stops.add(1, _pick(meta, "reason"))
        error = f"agent server {meta.get('agent_id')!r} crashed" if crashed else None
        self._finished_span("sagents.agent", measurements, meta, error=error)

    # -- execution ----------------------------------------------------------------------------

    def _execution_start(
        self, _: str, measurements: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        previous = otel_context.get_current()
        span = self._tracer.start_span(
            "sagents.execution", context=previous, attributes=_attributes(meta, measurements)
        )
        record = _OpenExecution(span=span, agent_id=meta.get("agent_id"), previous=previous)
        current = trace.set_span_in_context(span, previous)
        # The token is dropped on purpose: the end event restores ``previous`` by value, which
        # works even if the run ended in a task other than the one it started in.
        otel_context.attach(otel_context.set_value(_OPEN_EXECUTION, record, current))

    def _execution_end(
        self, end: str, measurements: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        if end == "interrupt":
            meta = {**meta, "status": "interrupted"}
        self._execution_duration.record(
            float(measurements.get("duration", 0.0)), _pick(meta, "mode", "status")
        )
        error = "the run ended in error" if meta.get("status") == "error" else None
        record = otel_context.get_value(_OPEN_EXECUTION)
        if not isinstance(record, _OpenExecution) or record.agent_id != meta.get("agent_id"):
            # Instrumented mid-run: this end has no open span, so make the whole span now.
            self._finished_span("sagents.execution", measurements, meta, error=error)
            return
        otel_context.attach(record.previous)
        record.span.set_attributes(_attributes(meta, measurements))
        if error is not None:
            record.span.set_status(Status(StatusCode.ERROR, error))
        record.span.end()

    # -- llm ----------------------------------------------------------------------------------

    def _llm_request(
        self, _: str, measurements: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        self._llm_requests.add(1, _pick(meta, "model"))

    def _llm_end(self, end: str, measurements: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        tags = _pick(meta, "model")
        duration = float(measurements.get("duration", 0.0))
        self._llm_duration.record(duration, {**tags, **_attributes({"outcome": end})})
        error: str | None = None
        if end == "error":
            self._llm_errors.add(1, tags)
            error = str(meta.get("error") or "the model call failed")
        else:
            self._input_tokens.add(int(measurements.get("input_tokens", 0)), tags)
            self._output_tokens.add(int(measurements.get("output_tokens", 0)), tags)
        self._finished_span("sagents.llm", measurements, meta, kind=SpanKind.CLIENT, error=error)

    # -- tools --------------------------------------------------------------------------------

    def _tool_start(self, _: str, measurements: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self._tool_calls.add(1, _pick(meta, "tool"))

    def _tool_end(self, end: str, measurements: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        tags = _pick(meta, "tool")
        self._tool_duration.record(
            float(measurements.get("duration", 0.0)), {**tags, **_attributes({"outcome": end})}
        )
        error: str | None = None
        if end == "error":
            self._tool_errors.add(1, tags)
            error = f"tool {meta.get('tool')!r} failed"
        self._finished_span("sagents.tool", measurements, meta, error=error)

    # -- persistence --------------------------------------------------------------------------

    def _persistence_error(
        self, _: str, measurements: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        self._persistence_errors.add(1, _pick(meta, "operation"))


def instrument(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> Instrumentation:
    """Turn sagents' telemetry events into OpenTelemetry spans and metrics.

    Args:
        tracer_provider: where spans go; the global one (``trace.get_tracer_provider()``) if None.
        meter_provider: where metrics go; the global one if None.

    Returns:
        The :class:`Instrumentation`; call its ``uninstrument()`` to stop.

    Raises:
        SagentsError: sagents is already instrumented; uninstrument the first one before
            instrumenting again (two bridges would report every span twice).
    """
    if any(h.startswith(_HANDLER_PREFIX + "/") for h, _ in telemetry.list_handlers(("sagents",))):
        raise SagentsError(
            "sagents is already instrumented for OpenTelemetry; call uninstrument() on the "
            "Instrumentation that instrument() returned before instrumenting again"
        )
    instrumentation = Instrumentation(
        tracer_provider if tracer_provider is not None else trace.get_tracer_provider(),
        meter_provider if meter_provider is not None else get_meter_provider(),
    )
    instrumentation._attach()
    return instrumentation
