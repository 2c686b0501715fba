"""The benchmark's ``--quick`` mode runs every workload for every system and writes its report.

The numbers of a quick run are not meaningful; this checks that each workload × system produced
a complete, plausible result (the report's shape), never how fast anything is.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.__main__ import SYSTEMS, parse_args, plan

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _medians(result: dict[str, Any], *path: str) -> float:
    for key in path:
        result = result[key]
    return float(result["median"]) if isinstance(result, dict) else float(result)


def test_quick_plan_covers_every_workload_and_system() -> None:
    jobs = plan(parse_args(["--quick"]))
    pairs = {(job["workload"], job["system"]) for job in jobs}
    assert pairs == {(w, s) for w, systems in SYSTEMS.items() for s in systems}


def test_quick_run_writes_every_workload_for_every_system(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [data] = tmp_path.glob("run-*.json")
    run = json.loads(data.read_text())
    assert run["quick"] is True
    assert run["machine"]["versions"]["langgraph"]
    results = {(r["workload"], r["label"]): r["result"] for r in run["results"]}
    skipped_postgres = any("sagents-postgres" in note for note in run["skipped"])
    for workload, systems in SYSTEMS.items():
        for system in systems:
            if system == "sagents-postgres" and skipped_postgres:
                continue
            labels = [label for (w, label) in results if w == workload and label.startswith(system)]
            assert labels, f"{workload} {system} missing"
    for (workload, label), result in results.items():
        assert "error" not in result, f"{workload} {label}: {result}"
        numbers = _numbers(result)
        assert numbers, (workload, label)
        assert all(math.isfinite(n) for n in numbers), (workload, label)
        match workload:
            case "W1":
                for path in ("invoke", "stream"):
                    assert 0 < _medians(result, path, "cpu_us") < 1e6
            case "W2":
                assert result["bytes_per_conversation"] >= 0
            case "W3":
                assert 0 < _medians(result, "cycle_cpu_us") < 1e6
            case "W4":
                # No system beats the model's own latency.
                assert _medians(result, "wall_seconds") >= result["ideal_seconds"]
            case "W5":
                assert result["stored_messages"] >= result["messages"]
                assert result["storage_bytes"] > 0
                assert _medians(result, "restore_ms") > 0
            case "W6":
                assert result["starts_per_second"] > 0
                assert result["tasks_left"] == 0
            case "W7":
                subscribers = [k for k in result if k != "deltas"]
                assert subscribers
                for k in subscribers:
                    assert 0 < _medians(result[k], "p50_us") <= _medians(result[k], "p99_us")
    table = (tmp_path / "results.md").read_text()
    for workload in SYSTEMS:
        assert f"## {workload} " in table
    assert sorted(p.name for p in tmp_path.glob("w*.png")) == [f"w{i}.png" for i in range(1, 8)]
