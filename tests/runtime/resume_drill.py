"""Pieces shared by the random-kill resume drills (runtime gang and sandbox TrainingJob).

A drill kills a training run several times at seeded random steps and compares the result
with an uninterrupted run, bitwise. :func:`plan` picks the kills; :func:`divergence` lists
every difference between two runs' per-step histories (from the trainer's ``--log-file``)
and final states (the final committed checkpoints, see ``llmops_runtime.checkpoint.compare``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from llmops_runtime.checkpoint.compare import differences
from runtime_harness import Timeline


@dataclass(frozen=True)
class Kill:
    step: int  # SIGKILL once the attempt has logged this step
    persist: bool  # the checkpoint of step - 1 is held in flight (drill_train.py) when the kill lands


def plan(seed: int, steps: int, every: int) -> list[Kill]:
    """2-3 kills at increasing random steps, one of them while a persist is in flight (pure).

    The held checkpoint ``c`` must be taken by the attempt killed right after it, so no other
    kill falls within a step of it (a kill at ``c`` could resume from ``c`` itself)."""
    rng = random.Random(f"drill-{seed}")
    held = rng.choice(range(every, steps - 2, every))
    others = [s for s in range(2, steps - 1) if s <= held - 2 or s >= held + 3]
    chosen = rng.sample(others, rng.choice([1, 2]))
    return sorted([Kill(held + 1, True), *(Kill(s, False) for s in chosen)], key=lambda k: k.step)


@dataclass
class Recovery:
    kill_to_first_step: float  # seconds from the SIGKILL to the next attempt's first step
    steps_lost: int  # steps done before the kill that the next attempt had to redo


def divergence(ref: list[Timeline], got: list[Timeline], ref_states: list[Any], got_states: list[Any],
               steps: int) -> list[str]:
    """Everything in which a run differs from the reference (empty: bitwise identical)."""
    out = []
    for rank, (r, g) in enumerate(zip(ref, got, strict=True)):
        if sorted(g.steps) != list(range(1, steps + 1)):
            out.append(f"rank {rank}: logged steps {sorted(g.steps)}")
        first = next((s for s in sorted(r.steps) if r.steps[s]["loss"] != g.steps.get(s, {}).get("loss")), None)
        if first is not None:
            out.append(f"rank {rank}: loss differs from step {first}")
        if r.ids() != g.ids():
            out.append(f"rank {rank}: sample order differs")
    for rank, (a, b) in enumerate(zip(ref_states, got_states, strict=True)):
        out += [f"rank {rank}: {d}" for d in differences(a, b)]
    return out


def figures(label: str, kills: list[Kill], recoveries: list[Recovery], cold_start: float) -> str:
    """One line per kill: recovery time over the cold start, and steps lost."""
    lines = []
    # not strict: a short drill prints what it has, and the caller then asserts one recovery per kill
    for kill, rec in zip(kills, recoveries, strict=False):
        lines.append(f"[{label}] kill at step {kill.step}{' (persist in flight)' if kill.persist else ''}: "
                     f"kill->first resumed step {rec.kill_to_first_step:.2f}s = "
                     f"{rec.kill_to_first_step / cold_start:.2f} x cold start ({cold_start:.2f}s); "
                     f"steps lost {rec.steps_lost}")
    return "\n".join(lines)
