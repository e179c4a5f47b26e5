"""A discrete-event simulator of a vLLM fleet behind a request-holding router.

Model (stated, so the figures can be judged):
- A request holds one of ``max_num_seqs`` slots of a replica and ``prompt + output`` tokens of
  its KV cache from admission to completion; its service time is
  ``prompt / prefill_tok_s + output / decode_tok_s`` (no batching interference: a
  deliberately simple replica).
- Requests wait in one FIFO in front of the fleet (a router that holds requests, as llm-d's
  flow control or Knative's activator do, which is also what makes scale-from-zero lossless).
  The head is admitted to the ready replica with the fewest running requests that has a free
  slot and room in its KV cache. Queueing delay = admission time - arrival time.
- A new replica costs GPU time from the moment it is started; it serves after ``cold_start``
  seconds. A removed replica stops taking requests, finishes what it runs (drain) and costs
  GPU time until then. Loading replicas are removed first (newest first).
- Every ``sync`` seconds a controller sees one scrape of the ready replicas (the router's
  queue is split evenly over them as ``vllm:num_requests_waiting``; at zero replicas it is
  reported as held requests) and returns the desired replica count. A controller with an
  ``observe_ready(started, ready_at)`` method is told when a replica it started is ready
  (the operator measures load times from pod start and ready timestamps).
GPU-hours are counted from t=0 to the last arrival; requests still queued then are served
(controllers keep running) so that every request gets a delay.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Protocol

from llmops.autoscaling.policy import FleetSample, ReplicaSignal

__all__ = ["Controller", "FleetModel", "Request", "SimResult", "simulate"]


@dataclass(frozen=True)
class Request:
    arrival: float
    prompt: int
    output: int


@dataclass(frozen=True)
class FleetModel:
    prefill_tok_s: float = 8000.0
    decode_tok_s: float = 25.0
    max_num_seqs: int = 8
    kv_tokens: int = 32768
    cold_start: float = 300.0

    def service(self, r: Request) -> float:
        return r.prompt / self.prefill_tok_s + r.output / self.decode_tok_s

    def kv(self, r: Request) -> int:
        return min(r.prompt + r.output, self.kv_tokens)  # a request larger than the cache still runs alone


class Controller(Protocol):
    name: str
    sync: float

    def step(self, now: float, sample: FleetSample, ready: int, loading_since: tuple[float, ...]) -> int: ...


@dataclass
class _Replica:
    rid: int
    started: float
    ready_at: float
    running: int = 0
    kv_used: int = 0
    draining: bool = False
    gone: bool = False


@dataclass
class SimResult:
    name: str
    delays: list[float]
    gpu_seconds: float
    max_replicas: int
    scale_ups: int

    def attainment(self, slo: float) -> float:
        return sum(1 for d in self.delays if d <= slo) / max(len(self.delays), 1)

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0


def simulate(requests: list[Request], model: FleetModel, ctl: Controller, initial_ready: int) -> SimResult:
    end = requests[-1].arrival if requests else 0.0
    L = model.cold_start
    seq = itertools.count()
    events: list[tuple[float, int, str, object]] = []
    reps: dict[int, _Replica] = {}
    rid = itertools.count()
    for _ in range(initial_ready):
        i = next(rid)
        reps[i] = _Replica(i, -L, 0.0)
    for k, r in enumerate(requests):
        heapq.heappush(events, (r.arrival, next(seq), "arr", k))
    heapq.heappush(events, (0.0, next(seq), "tick", None))
    queue: list[int] = []  # request indices, FIFO (head at qh)
    qh = 0
    delays = [float("inf")] * len(requests)  # never admitted: counts as a miss
    horizon = end + 4 * L + 3600.0  # a controller that never serves the rest must not loop forever
    done = 0
    gpu = 0.0
    last_t = 0.0
    alive = initial_ready
    peak = initial_ready
    ups = 0

    def account(t: float) -> None:
        nonlocal gpu, last_t
        t2 = min(t, end)
        if t2 > last_t:
            gpu += alive * (t2 - last_t)
            last_t = t2

    def ready_list(now: float) -> list[_Replica]:
        return [r for r in reps.values() if not r.gone and not r.draining and r.ready_at <= now]

    def dispatch(now: float) -> None:
        nonlocal qh
        while qh < len(queue):
            req = requests[queue[qh]]
            need = model.kv(req)
            best = None
            for r in ready_list(now):
                fits = r.running < model.max_num_seqs and r.kv_used + need <= model.kv_tokens
                if fits and (best is None or r.running < best.running):
                    best = r
            if best is None:
                return
            best.running += 1
            best.kv_used += need
            delays[queue[qh]] = now - req.arrival
            heapq.heappush(events, (now + model.service(req), next(seq), "done", (best.rid, need)))
            qh += 1

    def remove(rep: _Replica, now: float) -> None:
        nonlocal alive
        account(now)
        rep.gone = True
        alive -= 1

    while events:
        now, _, kind, payload = heapq.heappop(events)
        account(now)
        if kind == "arr":
            queue.append(payload)  # type: ignore[arg-type]
        elif kind == "done":
            i, need = payload  # type: ignore[misc]
            rep = reps[i]
            rep.running -= 1
            rep.kv_used -= need
            done += 1
            if rep.draining and rep.running == 0 and not rep.gone:
                remove(rep, now)
        elif kind == "ready":
            rep = reps[payload]  # type: ignore[index]
            hook = getattr(ctl, "observe_ready", None)
            if hook is not None and not rep.gone and not rep.draining:
                hook(rep.started, now)  # the operator reads a pod's start and ready times
        elif kind == "tick":
            ready = ready_list(now)
            waiting = len(queue) - qh
            if ready:
                base, extra = divmod(waiting, len(ready))
                sig = tuple(
                    ReplicaSignal(
                        waiting=float(base + (1 if j < extra else 0)),
                        running=float(r.running),
                        kv_cache_usage=r.kv_used / model.kv_tokens,
                    )
                    for j, r in enumerate(ready)
                )
                sample = FleetSample(now, sig, completed=float(done))
            else:
                sample = FleetSample(now, (), unrouted_waiting=float(waiting), completed=float(done))
            loading = tuple(sorted(r.started for r in reps.values() if not r.gone and not r.draining and r.ready_at > now))
            current = len(ready) + len(loading)
            desired = max(0, ctl.step(now, sample, len(ready), loading))
            if desired > current:
                ups += 1
                for _ in range(desired - current):
                    i = next(rid)
                    reps[i] = _Replica(i, now, now + L)
                    alive += 1
                    heapq.heappush(events, (now + L, next(seq), "ready", i))
                peak = max(peak, alive)
            elif desired < current:
                cut = current - desired
                loaders = sorted((r for r in reps.values() if not r.gone and not r.draining and r.ready_at > now), key=lambda r: -r.started)
                for r in loaders[:cut]:
                    remove(r, now)
                cut -= min(cut, len(loaders))
                for r in sorted(ready, key=lambda r: (r.running, -r.rid))[:cut]:
                    r.draining = True
                    if r.running == 0:
                        remove(r, now)
            if done < len(requests) and now < horizon:
                heapq.heappush(events, (now + ctl.sync, next(seq), "tick", None))
        dispatch(now)
    account(end)
    return SimResult(ctl.name, delays, gpu, peak, ups)
