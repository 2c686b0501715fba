"""The chaos suite's configuration and report (see ``test_chaos.py``).

:class:`ChaosConfig` is the size and the knobs of a run — the CI size by default, or what the
``SAGENTS_CHAOS_*`` environment variables ask for — and :class:`Report` what the run did: the
faults injected by kind, the fleet, and every invariant it saw broken. ``python -m bench.chaos``
prints the same report for the full-size run.
"""

from __future__ import annotations

import enum
import os
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import pytest

from .injector import Fault, Profile

#: The seed CI runs (a run of 1,000 agents × 10 rounds on it kept every invariant).
CI_SEED = 20261206


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosConfig:
    """The size and the knobs of a chaos run (times are virtual seconds)."""

    seed: int
    agents: int = 200
    rounds: int = 3
    turns: int = 3
    rate: float = 0.2
    max_restarts: int = 2
    max_seconds: float = 60.0
    tool_timeout: float = 2.0
    shutdown_timeout: float = 5.0
    stall: float = 20.0
    settle_within: float = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> ChaosConfig:
        """The CI size, changed by ``SAGENTS_CHAOS_{AGENTS,ROUNDS,TURNS,SEED,RATE}``. The seed
        is fixed, so that CI is deterministic; ``SAGENTS_CHAOS_SEED=random`` draws one (printed,
        to replay a failure)."""
        values: dict[str, Any] = {"seed": CI_SEED}
        if environ.get("SAGENTS_CHAOS_SEED") == "random":
            environ = {k: v for k, v in environ.items() if k != "SAGENTS_CHAOS_SEED"}
            values["seed"] = random.SystemRandom().randrange(1 << 32)
        for f in fields(cls):
            raw = environ.get(f"SAGENTS_CHAOS_{f.name.upper()}")
            if raw is not None:
                values[f.name] = float(raw) if f.type == "float" else int(raw)
        values.update(overrides)
        return cls(**values)


class Invariant(enum.StrEnum):
    LOST = "lost"
    LEAKED = "leaked"
    LET_IN = "let in"
    UNFINISHED = "unfinished"
    UNCONFINED = "unconfined"
    INTENSITY = "restart intensity"
    EVENTS = "events"
    WARNED = "warnings"
    HARNESS = "harness"


@dataclass(eq=False)
class Report:
    """What a chaos run did and every invariant it saw broken."""

    config: ChaosConfig
    faults: Counter[Fault] = field(default_factory=Counter)
    profiles: Counter[Profile] = field(default_factory=Counter)
    violations: list[tuple[Invariant, str]] = field(default_factory=list)
    excused: Counter[str] = field(default_factory=Counter)
    logged: Counter[str] = field(default_factory=Counter)
    turns: int = 0
    accepted: int = 0
    restarts: int = 0
    killed: int = 0
    stops: int = 0
    lease_waits: int = 0
    overflowed: int = 0
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0

    def violate(self, invariant: Invariant, where: str, what: str) -> None:
        self.violations.append((invariant, f"{where}: {what}"))

    def count(self, invariant: Invariant) -> int:
        return sum(1 for kind, _ in self.violations if kind is invariant)

    def table(self) -> str:
        """The summary: faults injected by kind, the fleet, and the invariants' counts."""
        c = self.config
        rows: list[tuple[str, str]] = [(str(f), f"{self.faults[f]:,}") for f in Fault]
        rows.append(("total faults injected", f"{sum(self.faults.values()):,}"))
        width = max(len(name) for name, _ in rows) + 2
        lines = [
            f"sagents chaos: seed {c.seed}; {c.agents:,} agents x {c.rounds} rounds x "
            f"{c.turns} turns; fault rate {c.rate}; max_restarts={c.max_restarts} within "
            f"{c.max_seconds:g} s",
            "",
            f"{'fault':<{width}}{'injected':>10}",
            *(f"{name:<{width}}{count:>10}" for name, count in rows),
            "",
        ]
        profiles = ", ".join(f"{p} {self.profiles[p]:,}" for p in Profile)
        facts = [
            ("agent-rounds", f"{sum(self.profiles.values()):,} ({profiles})"),
            ("turns settled", f"{self.turns:,}"),
            ("messages accepted", f"{self.accepted:,}"),
            ("restarts seen / agents stopped by intensity", f"{self.restarts:,} / {self.killed:,}"),
            ("stopped by their user, then started again", f"{self.stops:,}"),
            ("starts that waited for an unclean end's lease", f"{self.lease_waits:,}"),
            ("stalled subscribers detached", f"{self.overflowed:,}"),
            ("logged by sagents (warnings, errors)", f"{sum(self.logged.values()):,}"),
            ("virtual / wall time", f"{self.virtual_seconds:,.0f} s / {self.wall_seconds:.1f} s"),
        ]
        width = max(len(name) for name, _ in facts) + 2
        lines += [f"{name:<{width}}{value}" for name, value in facts]
        lines += ["", f"{'invariant':<{width}}{'violations':>10}"]
        lines += [f"{i!s:<{width}}{self.count(i):>10}" for i in Invariant]
        for reason, count in sorted(self.excused.items()):
            lines.append(f"excused: {reason}: {count:,}")
        return "\n".join(lines)

    def failure(self, limit: int = 40) -> str:
        shown = "\n".join(f"  [{kind}] {text}" for kind, text in self.violations[:limit])
        more = len(self.violations) - limit
        return (
            f"chaos run failed with {len(self.violations)} violation(s); reproduce with "
            f"SAGENTS_CHAOS_SEED={self.config.seed} SAGENTS_CHAOS_AGENTS={self.config.agents} "
            f"SAGENTS_CHAOS_ROUNDS={self.config.rounds} SAGENTS_CHAOS_TURNS={self.config.turns}"
            f"\n{shown}" + (f"\n  ... and {more} more" if more > 0 else "") + f"\n\n{self.table()}"
        )


@pytest.fixture
def chaos_config() -> ChaosConfig:
    """``ChaosConfig.from_env()``: ``SAGENTS_CHAOS_SEED`` replays a run."""
    return ChaosConfig.from_env()
