"""The chaos suite at full size (issue 16): 1,000 agents under seeded faults, then a summary.

Runs the same rounds and checks as ``tests/chaos/test_chaos.py`` — tools raising every kind of
exception or hanging, failing model calls and middleware, failing and stalling saves, subscribers
that never read, crashed servers — on virtual time (a ``looptime`` event loop: hangs, stalls and
timeouts cost no wall time), and prints the faults injected by kind, the fleet, and the
violations of each invariant (all 0 on a healthy runtime). It exits 1 if any invariant broke,
printing the violations and the seed that reproduces them.

Run: ``python -m bench.chaos [--agents 1000] [--rounds 10] [--turns 3] [--seed N] [--rate 0.2]``
(defaults from ``SAGENTS_CHAOS_*`` when set).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import looptime
from tests.chaos.conftest import ChaosConfig, Report
from tests.chaos.test_chaos import Chaos


def parse_args(argv: list[str] | None = None) -> ChaosConfig:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=int(env.get("SAGENTS_CHAOS_AGENTS", 1000)))
    parser.add_argument("--rounds", type=int, default=int(env.get("SAGENTS_CHAOS_ROUNDS", 10)))
    parser.add_argument("--turns", type=int, default=int(env.get("SAGENTS_CHAOS_TURNS", 3)))
    parser.add_argument("--rate", type=float, default=float(env.get("SAGENTS_CHAOS_RATE", 0.2)))
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    args = parser.parse_args(argv)
    overrides = {"agents": args.agents, "rounds": args.rounds, "turns": args.turns}
    overrides["rate"] = args.rate
    if args.seed is not None:
        overrides["seed"] = args.seed
    return ChaosConfig.from_env(env, **overrides)


def run(config: ChaosConfig) -> Report:
    """Run the chaos rounds on a virtual-time event loop."""
    with asyncio.Runner(loop_factory=looptime.new_event_loop) as runner:
        return runner.run(Chaos(config).run())


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    print(f"chaos seed {config.seed}", flush=True)
    report = run(config)
    if report.violations:
        print(report.failure())
        return 1
    print(report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
