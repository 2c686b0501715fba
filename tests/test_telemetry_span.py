"""telemetry.span: start / stop / exception around a block, sync and async (L70, L71)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from sagents import SagentsError, telemetry

Record = tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]
PREFIX = ("app", "work")
EVENTS = [(*PREFIX, "start"), (*PREFIX, "stop"), (*PREFIX, "exception")]


@pytest.fixture
def seen() -> list[Record]:
    records: list[Record] = []

    def handle(
        event: Any, measurements: Mapping[str, Any], metadata: Mapping[str, Any], _: Any
    ) -> None:
        records.append((event, dict(measurements), dict(metadata)))

    telemetry.attach_many("span-test", EVENTS, handle)
    return records


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The telemetry module's own view of ``time``: perf_counter reads 10.0, then 12.5."""
    ticks = iter([10.0, 12.5, 100.0])
    clock = SimpleNamespace(perf_counter=lambda: next(ticks), time=time.time)
    monkeypatch.setattr(telemetry, "time", clock)


def test_a_block_emits_start_then_stop_with_its_duration(
    seen: list[Record], fake_clock: None
) -> None:
    with telemetry.span(PREFIX, {"job": "index"}) as span:
        span.metadata["status"] = "ok"
        span.measurements["items"] = 3
    (start, start_m, start_meta), (stop, stop_m, stop_meta) = seen
    assert start == (*PREFIX, "start")
    assert start_m["monotonic_time"] == 10.0
    assert isinstance(start_m["system_time"], float)
    assert start_meta["job"] == "index"
    assert "status" not in start_meta  # start saw the metadata as it was on entry
    assert stop == (*PREFIX, "stop")
    assert stop_m == {"duration": 2.5, "monotonic_time": 12.5, "items": 3}
    assert stop_meta["job"] == "index"
    assert stop_meta["status"] == "ok"
    assert stop_meta["telemetry_span_context"] == start_meta["telemetry_span_context"]


async def test_async_with_works_the_same(seen: list[Record]) -> None:
    async with telemetry.span(PREFIX, {"job": "a"}) as span:
        await asyncio.sleep(0)
        span.metadata["extra"] = True
    assert [r[0][-1] for r in seen] == ["start", "stop"]
    assert seen[1][1]["duration"] >= 0
    assert seen[1][2]["extra"] is True


def test_an_exception_is_reported_then_reraised(seen: list[Record], fake_clock: None) -> None:
    error = ValueError("bad input")

    def work() -> None:
        with telemetry.span(PREFIX, {"job": "x"}) as span:
            span.metadata["step"] = 2
            raise error

    with pytest.raises(ValueError, match="bad input"):
        work()
    assert [r[0][-1] for r in seen] == ["start", "exception"]
    _, measurements, metadata = seen[1]
    assert measurements["duration"] == 2.5
    assert metadata["kind"] is ValueError
    assert metadata["reason"] is error
    chain, tb = [], error.__traceback__
    while tb is not None:
        chain.append(tb)
        tb = tb.tb_next
    assert metadata["stacktrace"] in chain  # the traceback as it was when the block exited
    assert metadata["job"] == "x"
    assert metadata["step"] == 2


async def test_cancellation_is_reported_as_an_exception_and_propagates(
    seen: list[Record],
) -> None:
    started = asyncio.Event()

    async def work() -> None:
        async with telemetry.span(PREFIX, {}):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen[-1][0] == (*PREFIX, "exception")
    assert seen[-1][2]["kind"] is asyncio.CancelledError


def test_overlapping_spans_have_distinct_contexts(seen: list[Record]) -> None:
    with telemetry.span(PREFIX, {"n": 1}), telemetry.span(PREFIX, {"n": 2}):
        pass
    contexts = {(r[2]["n"], r[0][-1]): r[2]["telemetry_span_context"] for r in seen}
    assert contexts[1, "start"] == contexts[1, "stop"]
    assert contexts[2, "start"] == contexts[2, "stop"]
    assert contexts[1, "start"] != contexts[2, "start"]


def test_nothing_is_built_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_wall_clock() -> float:
        raise AssertionError("the wall clock was read with no handler attached")

    monkeypatch.setattr(
        telemetry, "time", SimpleNamespace(perf_counter=time.perf_counter, time=no_wall_clock)
    )
    executed: list[Any] = []
    monkeypatch.setattr(telemetry, "execute", lambda *args: executed.append(args))
    with telemetry.span(PREFIX, {}) as span:
        span.metadata["ignored"] = True
    with pytest.raises(KeyError), telemetry.span(PREFIX, {}):
        raise KeyError("k")
    assert executed == []


def test_a_handler_attached_mid_block_gets_a_true_duration(fake_clock: None) -> None:
    stops: list[Mapping[str, Any]] = []
    with telemetry.span(PREFIX, {}):
        telemetry.attach("late", (*PREFIX, "stop"), lambda _e, m, _md, _c: stops.append(m))
    assert stops[0]["duration"] == 2.5


def test_the_caller_metadata_is_not_mutated(seen: list[Record]) -> None:
    metadata = {"job": "y"}
    with telemetry.span(PREFIX, metadata) as span:
        span.metadata["added"] = 1
    assert metadata == {"job": "y"}


def test_a_span_is_used_once() -> None:
    span = telemetry.span(PREFIX, {})
    with span:
        pass
    with pytest.raises(SagentsError, match="already entered"), span:
        pass
