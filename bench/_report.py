"""Turns a run's results into ``run-<stamp>.json``, ``results.md`` and ``w*.png``.

The markdown puts every number next to its ratio to the floor (``raw``) and next to the target
of the benchmark issue, so a reader sees where sagents stands without doing arithmetic.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "render_markdown", "write_report"]

_PACKAGES = (
    "sagents",
    "langchain-core",
    "langchain",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
)


def machine_info() -> dict[str, Any]:
    """Versions and machine facts stamped on every run."""
    import psutil

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "commit": commit,
        "versions": versions,
    }


# -- markdown ---------------------------------------------------------------------------------


def _by(run: dict[str, Any], workload: str) -> dict[str, dict[str, Any]]:
    return {
        r["label"]: r["result"]
        for r in run["results"]
        if r["workload"] == workload and "error" not in r["result"]
    }


def _range(s: dict[str, float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "–"
    return f"{value / base:.2f}×"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _w1(run: dict[str, Any]) -> list[str]:
    data = _by(run, "W1")
    raw = data.get("raw", {})
    rows = []
    for label, r in data.items():
        row = [label]
        for path in ("invoke", "stream"):
            cpu = r[path]["cpu_us"]
            base = raw.get(path, {}).get("cpu_us", {}).get("median")
            over = "–" if base is None else f"{cpu['median'] - base:,.0f}"
            row += [_range(cpu), _ratio(cpu["median"], base), over]
        rows.append(row)
    header = ["system", "invoke: CPU µs/turn", "× raw", "overhead µs"]
    header += ["stream: CPU µs/turn", "× raw", "overhead µs"]
    return _table(header, rows)


def _w2(run: dict[str, Any]) -> list[str]:
    rows = [
        [
            label,
            str(r["conversations"]),
            str(r["messages_per_conversation"]),
            f"{r['bytes_per_conversation'] / 1024:,.1f}",
        ]
        for label, r in _by(run, "W2").items()
    ]
    return _table(["system", "conversations", "messages each", "KiB per conversation"], rows)


def _w3(run: dict[str, Any]) -> list[str]:
    rows = [
        [
            label,
            _range(r["cycle_cpu_us"]),
            _range(r["turn_cpu_us"]),
            _range(r["overhead_cpu_us"]),
        ]
        for label, r in _by(run, "W3").items()
    ]
    header = ["system", "HITL cycle CPU µs", "plain turn CPU µs", "interrupt+resume overhead µs"]
    return _table(header, rows)


def _w4(run: dict[str, Any]) -> list[str]:
    data = _by(run, "W4")
    base = data.get("raw", {}).get("wall_seconds", {}).get("median")
    rows = []
    for label, r in data.items():
        wall = r["wall_seconds"]
        rows.append(
            [
                label,
                _range(wall, "{:,.2f}"),
                _ratio(wall["median"], base),
                _ratio(wall["median"], r["ideal_seconds"]),
                f"{r['turns_per_second']['median']:,.0f}",
                f"{r['cpu_seconds']['median']:,.2f}",
                f"{r['gc_seconds']['median']:,.2f}",
            ]
        )
    header = ["system", "wall s", "× raw", "× ideal", "turns/s", "CPU s", "GC s"]
    return _table(header, rows)


def _w5(run: dict[str, Any]) -> list[str]:
    rows = []
    for label, r in _by(run, "W5").items():
        delta = r.get("delta_save_ms")
        rows.append(
            [
                label,
                str(r["stored_messages"]),
                f"{r['storage_bytes'] / 1e6:,.2f}",
                _range(r["turn_ms_at_end"], "{:,.1f}"),
                _range(r["full_save_ms"], "{:,.1f}"),
                "–" if delta is None else _range(delta, "{:,.1f}"),
                _range(r["restore_ms"], "{:,.1f}"),
            ]
        )
    header = ["system", "messages", "storage MB", "turn ms (at the end)", "full save ms"]
    header += ["delta save ms (+4 msgs)", "restore ms"]
    return _table(header, rows)


def _w6(run: dict[str, Any]) -> list[str]:
    rows = [
        [
            label,
            f"{r['starts_per_second']:,.0f}",
            f"{r['agent_builds_per_second']:,.0f}",
            f"{r['config_bytes_per_agent'] / 1024:,.1f}"
            f" + {r['server_bytes_per_agent'] / 1024:,.1f}",
            f"{r['tasks_per_agent']:.1f} / {r['gc_objects_per_agent']:.0f}",
            f"{r['start_gc_seconds']:,.2f}",
            f"{r['expiries_per_second']:,.0f}",
            f"{r['all_gone_seconds']:,.1f}",
            f"{r['rss_growth_after_expiry_bytes'] / 1e6:,.1f}",
            f"{r['objects_left']:,}",
            str(r["tasks_left"]),
        ]
        for label, r in _by(run, "W6").items()
    ]
    header = ["run", "starts/s", "Agent builds/s", "KiB per agent (config + server)"]
    header += ["tasks / GC objects per agent", "GC s (starts)", "expiries/s", "all tasks gone (s)"]
    header += ["RSS growth after (MB)"]
    header += ["objects left", "tasks left"]
    return _table(header, rows)


def _w7(run: dict[str, Any]) -> list[str]:
    rows = []
    for label, r in _by(run, "W7").items():
        for subscribers, s in r.items():
            if subscribers == "deltas":
                continue
            rows.append(
                [
                    label,
                    subscribers,
                    _range(s["p50_us"]),
                    _range(s["p99_us"]),
                    f"{s['events_per_second']['median']:,.0f}",
                    f"{s['deliveries_per_second']['median']:,.0f}",
                ]
            )
    header = ["system", "subscribers", "p50 µs", "p99 µs", "events/s", "deliveries/s"]
    return _table(header, rows)


def _get(run: dict[str, Any], workload: str, label: str, *keys: str) -> float | None:
    value: Any = _by(run, workload).get(label)
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def _targets(run: dict[str, Any]) -> list[str]:
    g = _get
    rows: list[list[str]] = []

    def check(name: str, value: float | None, limit: float, fmt: str, *, above: bool = False):
        if value is None:
            rows.append([name, "–", fmt.format(limit), "not measured"])
            return
        met = value >= limit if above else value <= limit
        bound = "≥ " if above else "≤ "
        rows.append(
            [name, fmt.format(value), bound + fmt.format(limit), "met" if met else "MISSED"]
        )

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    raw = g(run, "W1", "raw", "invoke", "cpu_us", "median")
    check(
        "W1 sagents / raw (invoke)",
        ratio(g(run, "W1", "sagents", "invoke", "cpu_us", "median"), raw),
        1.2,
        "{:.2f}×",
    )
    check(
        "W1 sagents-sqlite / raw (invoke)",
        ratio(g(run, "W1", "sagents-sqlite", "invoke", "cpu_us", "median"), raw),
        1.5,
        "{:.2f}×",
    )
    empty = g(run, "W2", "sagents (empty)", "bytes_per_conversation")
    check(
        "W2 KiB per idle server beyond messages",
        None if empty is None else empty / 1024,
        4,
        "{:.1f}",
    )
    check(
        "W2 KiB per 20-message idle conversation",
        (lambda v: None if v is None else v / 1024)(
            g(run, "W2", "sagents", "bytes_per_conversation")
        ),
        30,
        "{:.1f}",
    )
    for lg, sa in (("langgraph-memory", "sagents"), ("langgraph-sqlite", "sagents-sqlite")):
        check(
            f"W3 overhead {sa} / {lg}",
            ratio(
                g(run, "W3", sa, "overhead_cpu_us", "median"),
                g(run, "W3", lg, "overhead_cpu_us", "median"),
            ),
            0.2,
            "{:.2f}",
        )
    check(
        "W4 sagents wall / raw",
        ratio(
            g(run, "W4", "sagents", "wall_seconds", "median"),
            g(run, "W4", "raw", "wall_seconds", "median"),
        ),
        1.2,
        "{:.2f}×",
    )
    ray2 = g(run, "W4", "sagents-ray-2", "turns_per_second", "median")
    check(
        "W4 turns/s sagents-ray-2 / sagents",
        ratio(ray2, g(run, "W4", "sagents", "turns_per_second", "median")),
        1.6,
        "{:.2f}×",
        above=True,
    )
    peer = g(run, "W5", "langgraph-sqlite", "restore_ms", "median")
    for s in ("sagents-sqlite", "sagents-postgres"):
        size = g(run, "W5", s, "storage_bytes")
        check(f"W5 {s} storage MB", None if size is None else size / 1e6, 2, "{:.2f}")
        restore = g(run, "W5", s, "restore_ms", "median")
        check(f"W5 {s} restore / langgraph-sqlite", ratio(restore, peer), 1.0, "{:.2f}×")
    w6 = [k for k in _by(run, "W6") if "gc" not in k]
    if w6:
        check(
            f"W6 starts/s ({w6[-1]})",
            g(run, "W6", w6[-1], "starts_per_second"),
            50_000,
            "{:,.0f}",
            above=True,
        )
    w7 = _by(run, "W7").get("sagents", {})
    most = max((k for k in w7 if k != "deltas"), key=int, default=None)
    if most is not None:
        check(f"W7 p99 µs at {most} subscribers", w7[most]["p99_us"]["median"], 2000, "{:,.0f}")
    return _table(["target", "measured", "goal", ""], rows)


_SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], list[str]]]] = [
    ("W1", "turn overhead (one conversation, sequential turns)", _w1),
    ("W2", "memory per idle conversation", _w2),
    ("W3", "human-in-the-loop (interrupt + resume with approval)", _w3),
    ("W4", "concurrency (model awaits a fixed latency per call)", _w4),
    ("W5", "persistence of a long conversation", _w5),
    ("W6", "lifecycle scale (idle agent servers, expiry by inactivity)", _w6),
    ("W7", "fan-out (one agent streaming deltas to many subscribers)", _w7),
]


def render_markdown(run: dict[str, Any]) -> str:
    m = run["machine"]
    v = m["versions"]
    quick = ", QUICK: not for reporting" if run["quick"] else ""
    lines = [
        f"# Benchmark results ({run['started']}{quick})",
        "",
        f"Generated by `python -m bench` in {run['seconds']:.0f} s. "
        f"Medians of {run['args']['reps']} repetitions, (min–max) in brackets. Machine: "
        f"{m['cpu']}, {m['cpus']} CPUs, {m['memory_bytes'] / 2**30:.0f} GiB, {m['platform']}, "
        f"{m['implementation']} {m['python']}; commit {m['commit'] or '?'}.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
    ]
    if run.get("merged_from"):
        lines += [f"Workloads not re-run were kept from `{run['merged_from']}`.", ""]
    for note in run["skipped"]:
        lines += [f"Skipped: {note}.", ""]
    errors = [r for r in run["results"] if "error" in r["result"]]
    for r in errors:
        lines += [f"Failed: {r['workload']} {r['label']}: {r['result']['error']}", ""]
    lines += ["## Targets", "", *_targets(run)]
    for workload, title, render in _SECTIONS:
        if _by(run, workload):
            lines += [f"## {workload} {title}", "", *render(run)]
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------------------


def _plots(run: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []

    def bars(
        name: str, title: str, ylabel: str, series: dict[str, dict[str, Any]], log: bool = False
    ) -> None:
        if not series:
            return
        fig, ax = plt.subplots(figsize=(8, 4))
        labels = list(series)
        med = [series[k]["median"] for k in labels]
        err = [
            [m - series[k].get("min", m) for k, m in zip(labels, med, strict=True)],
            [series[k].get("max", m) - m for k, m in zip(labels, med, strict=True)],
        ]
        colors = [
            "#888" if k.startswith("raw") else "#d62" if k.startswith("langgraph") else "#26a"
            for k in labels
        ]
        ax.bar(labels, med, yerr=err, color=colors, capsize=3)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=30)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    w1 = _by(run, "W1")
    bars(
        "w1",
        "W1: CPU µs per turn (ainvoke path; lower is better)",
        "µs",
        {k: r["invoke"]["cpu_us"] for k, r in w1.items()},
    )
    w2 = _by(run, "W2")
    bars(
        "w2",
        "W2: KiB per idle conversation",
        "KiB",
        {k: {"median": r["bytes_per_conversation"] / 1024} for k, r in w2.items()},
    )
    w3 = _by(run, "W3")
    bars(
        "w3",
        "W3: interrupt + resume overhead, CPU µs",
        "µs",
        {k: r["overhead_cpu_us"] for k, r in w3.items()},
    )
    w4 = _by(run, "W4")
    bars(
        "w4",
        "W4: wall seconds, concurrent conversations (lower is better)",
        "s",
        {k: r["wall_seconds"] for k, r in w4.items()},
    )
    w5 = _by(run, "W5")
    bars(
        "w5",
        "W5: storage of one long conversation (MB, log scale)",
        "MB",
        {k: {"median": r["storage_bytes"] / 1e6} for k, r in w5.items()},
        log=True,
    )
    w6 = _by(run, "W6")
    bars(
        "w6",
        "W6: agent servers started per second",
        "starts/s",
        {k: {"median": r["starts_per_second"]} for k, r in w6.items()},
    )
    w7 = _by(run, "W7")
    if w7:
        fig, ax = plt.subplots(figsize=(8, 4))
        for label, r in w7.items():
            subs = sorted(int(k) for k in r if k != "deltas")
            for q, style in (("p50_us", "-o"), ("p99_us", "--o")):
                ax.plot(
                    subs, [r[str(s)][q]["median"] for s in subs], style, label=f"{label} {q[:3]}"
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("subscribers")
        ax.set_ylabel("delivery latency µs")
        ax.set_title("W7: delivery latency per event")
        ax.legend()
        fig.tight_layout()
        path = out / "w7.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def write_report(run: dict[str, Any], out: Path, *, plots: bool = True) -> list[Path]:
    """Write the run's JSON, ``results.md`` and the plots into ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = run["started"].replace("-", "").replace(":", "")
    data = out / f"run-{stamp}.json"
    data.write_text(json.dumps(run, indent=1) + "\n")
    table = out / "results.md"
    table.write_text(render_markdown(run) + "\n")
    paths = [data, table]
    if plots:
        paths += _plots(run, out)
    return paths
