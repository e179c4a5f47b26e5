"""Randomised lifecycle simulation of the TrainingJob plan against a toy cluster.

A seeded toy world executes each plan (creates desired pods, deletes undesired ones with a
random termination delay) and injects faults (crashes, OOM, preemption, node loss, hangs,
success). Invariants after every reconcile, for every seed:

* never two non-terminal pods for the same rank (the no-duplicate-rank guarantee);
* a pod is created only when no non-terminal pod of another attempt exists;
* the attempt number and the restart counters never go back;
* counted restarts never exceed maxRestarts, and the run ends Succeeded or Failed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest
from cr_factories import make_training_job
from llmops.api import conditions as C
from llmops.observe.pods import ContainerFacts, NodeFacts, PodConditionFacts, PodFacts
from llmops.plan import Observed, plan

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STEP = dt.timedelta(seconds=7)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def terminated(p: PodFacts, code: int, reason: str = "Error") -> PodFacts:
    return dataclasses.replace(p, phase="Succeeded" if code == 0 else "Failed",
                               containers=(ContainerFacts("trainer", "terminated", reason, None, code),))


@pytest.mark.parametrize("seed", range(24))
def test_random_lifecycle_keeps_invariants(seed):
    rng = random.Random(seed)
    nodes_n = rng.choice([1, 2, 4])
    job = make_training_job("sim").nodes(nodes_n).failure_policy(maxRestarts=3, backoff={"initialSeconds": 5, "maxSeconds": 20}).build()
    world: dict[str, PodFacts] = {}
    dying: dict[str, int] = {}  # pod -> reconciles until it is terminal
    node_ready = {f"n{i}": NodeFacts(True) for i in range(nodes_n)}
    now = T0
    last_attempt = last_total = 0
    remembered = None  # what the kube layer persists between reconciles (Plan.last_failure)
    for _ in range(400):
        p = plan(job, Observed(pods=tuple(world.values()), nodes=dict(node_ready), last_failure=remembered), now)
        remembered = p.last_failure
        st = p.status
        assert st.attempt >= last_attempt and st.restarts.total >= last_total
        assert st.restarts.counted <= job.spec.failure_policy.max_restarts
        last_attempt, last_total = st.attempt, st.restarts.total

        # execute the plan
        desired = {o["metadata"]["name"]: o for o in p.desired if o["kind"] == "Pod"}
        creating = [n for n in desired if n not in world]
        if creating:
            others_live = [q for q in world.values() if q.attempt != st.attempt and not q.terminal]
            assert not others_live, f"created {creating} while {[q.name for q in others_live]} still live"
        for name, obj in desired.items():
            if name not in world:
                lab = obj["metadata"]["labels"]
                world[name] = PodFacts(name=name, rank=int(lab["llmops.dev/node-rank"]), attempt=int(lab["llmops.dev/attempt"]),
                                       created=iso(now))
        for name in [n for n in world if n not in desired]:
            q = world[name]
            if q.terminal:
                del world[name]
            elif q.deletion_timestamp is None:
                world[name] = dataclasses.replace(q, deletion_timestamp=iso(now + dt.timedelta(seconds=30)))
                dying[name] = rng.randint(0, 4)
        job = job.model_copy(update={"status": st})
        done = C.is_true(st.conditions, C.SUCCEEDED) or C.is_true(st.conditions, C.FAILED)
        if done and all(q.terminal for q in world.values()):
            break

        # the world moves on
        now += STEP
        for name in list(dying):
            dying[name] -= 1
            if dying[name] < 0 and name in world:
                world[name] = terminated(world[name], 143)
                del dying[name]
        for name, q in list(world.items()):
            if q.terminal or q.deletion_timestamp:
                continue
            if q.phase == "Pending" and rng.random() < 0.6:
                node = f"n{q.rank}"
                world[name] = dataclasses.replace(q, phase="Running", node_name=node, containers=(ContainerFacts("trainer", "running"),),
                                                  conditions=(PodConditionFacts("PodScheduled", "True"),))
            elif q.phase == "Running":
                r = rng.random()
                if r < 0.02:
                    world[name] = terminated(q, 1)
                elif r < 0.03:
                    world[name] = terminated(q, 137, "OOMKilled")
                elif r < 0.04:
                    preempted = PodConditionFacts("DisruptionTarget", "True", "PreemptionByScheduler")
                    world[name] = dataclasses.replace(q, conditions=(*q.conditions, preempted))
                elif r < 0.05:
                    node_ready[q.node_name] = NodeFacts(False, iso(now - dt.timedelta(minutes=5)))
                elif r < 0.08 and q.rank == 0:
                    world[name] = terminated(q, 0, "Completed")
        for n, f in list(node_ready.items()):
            if not f.ready and rng.random() < 0.3:
                node_ready[n] = NodeFacts(True, iso(now))

        # the no-duplicate-rank guarantee, checked on the world itself
        live = [q.rank for q in world.values() if not q.terminal]
        assert len(live) == len(set(live)), f"duplicate live ranks: {sorted(live)}"
    else:
        pytest.fail("the simulated job did not finish")
    assert C.is_true(job.status.conditions, C.SUCCEEDED) or C.is_true(job.status.conditions, C.FAILED)
