"""Runs benchmark jobs in this process and prints their results as one JSON document.

``python -m bench._worker '<jobs JSON>'``: the orchestrator (:mod:`bench.__main__`) starts one
worker per job (per system in ``--quick`` mode), one at a time, so no two systems ever share a
process or a core, and one system's garbage never counts against another.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import traceback
from typing import Any

__all__ = ["WORKLOADS", "run_job"]

WORKLOADS = {
    "W1": "bench.w1_turns",
    "W2": "bench.w2_memory",
    "W3": "bench.w3_hitl",
    "W4": "bench.w4_concurrency",
    "W5": "bench.w5_persistence",
    "W6": "bench.w6_lifecycle",
    "W7": "bench.w7_fanout",
}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job in a fresh event loop; errors become ``{"error": ...}``."""
    module = importlib.import_module(WORKLOADS[job["workload"]])
    factory = getattr(module, "LOOP_FACTORY", None)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            result: dict[str, Any] = runner.run(module.run(job["system"], job["params"]))
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}
    return result


def main() -> None:
    jobs = json.loads(sys.argv[1])
    results = []
    for job in jobs:
        print(f"  {job['workload']} {job['label']} ...", file=sys.stderr, flush=True)
        results.append({**job, "result": run_job(job)})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
