"""``python -m bench``: run every workload for every system and write the report.

One job (workload × system) per subprocess, one at a time: no two systems ever run at once or
share a heap. ``--quick`` shrinks every size (a CI smoke run, under a minute; its numbers are not
meant to be reported) and runs one subprocess per system. Results go to ``--out``
(``docs/benchmarks/`` by default): ``run-<UTC stamp>.json``, ``results.md`` and ``w*.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._report import machine_info, write_report
from bench._systems import ALL_SYSTEMS, RAY_SYSTEMS, postgres_available

ROOT = Path(__file__).resolve().parent.parent

#: Which systems each workload measures (W6 and W7 have no LangGraph equivalent).
SYSTEMS = {
    "W1": ALL_SYSTEMS,
    "W2": ("raw", "langgraph-memory", "sagents"),
    "W3": tuple(s for s in ALL_SYSTEMS if s not in ("raw", "raw-actor", "langgraph")),
    "W4": ALL_SYSTEMS + RAY_SYSTEMS,
    "W5": ("langgraph-sqlite", "sagents-sqlite", "sagents-postgres"),
    "W6": ("sagents",),
    "W7": ("raw", "sagents"),
}


def _ints(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--workloads", default=",".join(SYSTEMS), help="e.g. W1,W4")
    parser.add_argument(
        "--systems", default=",".join(ALL_SYSTEMS + RAY_SYSTEMS), help="e.g. raw,sagents"
    )
    parser.add_argument("--reps", type=int, default=5, help="repetitions (median, min, max)")
    parser.add_argument("--w1-turns", type=int, default=50)
    parser.add_argument("--w2-conversations", type=int, default=10_000)
    parser.add_argument("--w2-turns", type=int, default=5)
    parser.add_argument("--w3-cycles", type=int, default=20)
    parser.add_argument("--w4-conversations", type=int, default=1_000)
    parser.add_argument("--w4-turns", type=int, default=5)
    parser.add_argument("--w4-latency", type=float, default=0.01, help="seconds per model call")
    parser.add_argument("--w5-turns", type=int, default=250, help="× 4 messages")
    parser.add_argument("--w6-sizes", type=_ints, default=[10_000, 100_000])
    parser.add_argument("--w7-subscribers", type=_ints, default=[1, 100, 1_000])
    parser.add_argument("--w7-deltas", type=int, default=1_000)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--merge",
        type=Path,
        help="a previous run-*.json: keep its results except for the workloads run now",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 2
        args.w1_turns, args.w2_conversations, args.w2_turns = 3, 20, 2
        args.w3_cycles, args.w4_conversations, args.w4_turns = 2, 10, 2
        args.w5_turns, args.w6_sizes = 5, [100]
        args.w7_subscribers, args.w7_deltas = [1, 10], 20
    return args


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The jobs to run, in order: one per workload × system (× size where sizes vary)."""
    wanted_w = set(args.workloads.split(","))
    wanted_s = set(args.systems.split(","))
    reps = args.reps
    params: dict[str, dict[str, Any]] = {
        "W1": {"turns": args.w1_turns, "reps": reps},
        "W3": {"cycles": args.w3_cycles, "reps": reps},
        "W4": {
            "conversations": args.w4_conversations,
            "turns": args.w4_turns,
            "latency": args.w4_latency,
            "reps": reps,
        },
        "W5": {"turns": args.w5_turns, "reps": reps},
        "W7": {"deltas": args.w7_deltas, "subscribers": args.w7_subscribers, "reps": reps},
    }
    jobs: list[dict[str, Any]] = []

    def add(workload: str, label: str, system: str, job_params: dict[str, Any]) -> None:
        jobs.append({"workload": workload, "label": label, "system": system, "params": job_params})

    for workload, systems in SYSTEMS.items():
        if workload not in wanted_w:
            continue
        for system in systems:
            if system not in wanted_s:
                continue
            if workload == "W2":
                w2 = {"conversations": args.w2_conversations, "turns": args.w2_turns}
                add(workload, system, system, w2)
                if system == "sagents":
                    add(workload, "sagents (empty)", system, {**w2, "turns": 0})
            elif workload == "W6":
                for n in args.w6_sizes:
                    add(workload, f"sagents N={n:,}", system, {"agents": n})
                    add(
                        workload,
                        f"sagents N={n:,} (gc threshold)",
                        system,
                        {"agents": n, "gc": "threshold"},
                    )
            else:
                add(workload, system, system, params[workload])
                if workload == "W4" and system == "sagents":
                    add(
                        workload,
                        "sagents (gc.freeze)",
                        system,
                        {**params[workload], "gc": "freeze"},
                    )
    return jobs


def run_jobs(batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for batch in batches:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bench._worker", json.dumps(batch)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        took = time.perf_counter() - started
        if done.returncode != 0 or not done.stdout.strip():
            for job in batch:
                results.append({**job, "result": {"error": f"worker exited {done.returncode}"}})
            continue
        finished = json.loads(done.stdout.strip().splitlines()[-1])
        for job in finished:
            job["seconds"] = took / len(finished)
        results.extend(finished)
        print(f"{batch[0]['workload']:>3} {batch[0]['label']:<28} {took:7.1f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = plan(args)
    skipped: list[str] = []
    if any(job["system"] == "sagents-postgres" for job in jobs) and not asyncio.run(
        postgres_available()
    ):
        skipped.append("sagents-postgres: PostgreSQL unreachable (SAGENTS_BENCH_POSTGRES_URL)")
        jobs = [job for job in jobs if job["system"] != "sagents-postgres"]
    if args.quick:
        by_system: dict[str, list[dict[str, Any]]] = {}
        for job in jobs:
            by_system.setdefault(job["system"], []).append(job)
        batches = list(by_system.values())
    else:
        batches = [[job] for job in jobs]
    started = time.time()
    results = run_jobs(batches)
    if args.merge is not None:
        previous = json.loads(args.merge.read_text())
        rerun = {job["workload"] for job in jobs}
        kept = [r for r in previous["results"] if r["workload"] not in rerun]
        order = list(SYSTEMS)
        results = sorted(kept + results, key=lambda r: order.index(r["workload"]))
        skipped += [s for s in previous["skipped"] if s not in skipped]
    run = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": time.time() - started,
        "quick": args.quick,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(),
        "skipped": skipped,
        "merged_from": None if args.merge is None else args.merge.name,
        "results": results,
    }
    paths = write_report(run, args.out, plots=not args.no_plots)
    for path in paths:
        print(f"wrote {path}")
    failed = [r for r in results if "error" in r["result"]]
    for r in failed:
        print(f"FAILED {r['workload']} {r['label']}: {r['result']['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
