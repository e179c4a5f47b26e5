"""A lower bound on the GPU-hours any autoscaler needs to reach a given attainment on a trace.

The bound is a relaxation of the fleet the simulator models (``sim.py``): every schedule the
simulator can run, by any controller, online or clairvoyant, costs at least this much. It
solves the relaxation exactly by dynamic programming over time buckets and Lagrangian
duality over the attainment constraint, so the figure is a bound, not a heuristic.

The fleet, as the simulator has it. ``n0`` replicas are ready at t = 0 at no cost; a replica
started at s >= 0 costs GPU time from s and serves from s + L; GPU time counts on
``[0, end]``; at most ``max_replicas`` replicas; a replica runs at most ``max_num_seqs``
requests at once; request i, arriving at a_i with service time s_i, meets the SLO when it
starts by a_i + slo, and then runs on one slot for s_i.

Relaxation, step by step (each step can only lower the optimum):

1. Buckets. Cut ``[0, end]`` into buckets of length B (the last one shorter). Let N(t) be the
   number of replicas that are ready (serving or draining) and ``x_k`` the replica-seconds
   of ready time in bucket k. Cost >= sum_k x_k + L * (replica starts), since every
   replica that becomes ready before ``end`` was started at least L earlier, at or after 0.
2. Starts. Let ``c_k = ceil(x_k / B_k)``. Some instant of bucket k-1 has N <= c_{k-1}
   (N is at most its mean somewhere), and some instant of bucket k has N >= c_k (N is an
   integer above c_k - 1 somewhere). Chaining these instants over each maximal run of rising
   c, runs being disjoint in time, N rises by at least ``sum_k max(0, c_k - c_{k-1})`` with
   ``c_{-1} = n0``; each rise is a replica becoming ready, i.e. a distinct start. So
   starts >= that sum. No replica but the first ``n0`` is ready before L: ``c_k <= n0`` for
   every bucket that ends by L. ``minReplicas`` keeps N >= m throughout: ``x_k >= m B_k``.
3. Work. A request meeting the SLO runs on ``[st, st + s_i]`` with ``st`` in
   ``[a_i, a_i + slo]``. Its overlap with a bucket is a concave function of ``st``, so its
   least value over that range, ``g_ik``, is at an end of the range: whatever the schedule,
   the request puts at least ``g_ik`` slot-seconds into bucket k. We keep only the bucket
   with the largest ``g_ik`` (dropping work lowers the bound). Slots are a fluid: the work
   kept in bucket k is at most ``max_num_seqs * x_k`` (no KV-cache limit, no packing).
4. Attainment. Serving at least K = ceil(a * n) requests within the SLO is moved into the
   objective with a multiplier lambda >= 0 (Lagrangian relaxation): for every lambda,
   ``lambda * K + min over schedules of (cost - lambda * served)`` is <= the optimum. For a
   fixed lambda the inner minimum separates by bucket given ``c``: in bucket k with level
   c, x ranges over ``[(c - 1) B_k, c B_k]`` (0 for c = 0) and the best served set is the
   requests with the least work first. Over ``c`` a DP with the start cost
   ``L * max(0, c - c_prev)`` gives the exact minimum. The bound is the largest value over a
   grid of lambda, and over several bucket lengths (each gives a valid bound).

What the relaxation forgives (why the bound is below what any policy can reach): requests
that must share a replica's 8 slots and KV cache are a fluid; a replica can be ready for
part of a bucket; the SLO's slack lets work near a bucket edge go unaccounted; and draining
costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.autoscaling.sim import FleetModel, Request

__all__ = ["Bound", "bucket_works", "lower_bound", "relaxed_minimum"]

DEFAULT_BUCKETS = (10.0, 30.0, 60.0)
_HUGE_LAMBDA = 1e9  # seconds per request: far above any schedule's cost, so it finds the most servable


def _overlap(st: float, s: float, lo: float, hi: float) -> float:
    return max(0.0, min(st + s, hi) - max(st, lo))


def bucket_works(reqs: list[Request], model: FleetModel, slo: float, end: float, bucket: float) -> tuple[list[float], list[list[float]]]:
    """Bucket lengths, and per bucket the guaranteed work (slot-seconds) of the requests kept
    there (step 3 of the module docstring)."""
    n = max(1, math.ceil(end / bucket - 1e-9)) if end > 0 else 1
    lengths = [min(bucket, end - k * bucket) if end > 0 else 0.0 for k in range(n)]
    works: list[list[float]] = [[] for _ in range(n)]
    for r in reqs:
        s = model.service(r)
        best_k, best_g = min(n - 1, int(r.arrival // bucket)), 0.0
        k = best_k
        while k < n and k * bucket < r.arrival + slo + s:
            lo, hi = k * bucket, k * bucket + lengths[k]
            g = min(_overlap(r.arrival, s, lo, hi), _overlap(r.arrival + slo, s, lo, hi))
            if g > best_g:
                best_k, best_g = k, g
            k += 1
        works[best_k].append(best_g)
    return lengths, works


def relaxed_minimum(lengths: list[float], works: list[list[float]], lams: np.ndarray, L: float, n0: int,
                    max_replicas: int, slots: int, min_replicas: int = 0) -> np.ndarray:
    """For each lambda: min over levels c and served sets of ``sum x_k + L * starts -
    lambda * served`` (step 4). Exact for the relaxed problem; vectorised over lambda."""
    C = max_replicas
    cs = np.arange(C + 1)
    lam = lams[:, None]
    big = 1e18
    V = np.full((len(lams), C + 1), big)
    V[:, n0] = 0.0
    t = 0.0
    for Bk, w in zip(lengths, works, strict=True):
        w_sorted = np.sort(np.asarray(w, dtype=float))
        P = np.concatenate(([0.0], np.cumsum(w_sorted))) / slots  # replica-seconds to serve j requests
        # f(c): min over x in [lo_c, hi_c] of x - lam * count(x); count(x) = max j with P_j <= x.
        lo = np.maximum(np.maximum(cs - 1, 0), min_replicas) * Bk  # N >= min_replicas throughout
        hi = cs * Bk
        cnt_lo = np.searchsorted(P, lo + 1e-9, side="right") - 1  # count at x = lo
        f = lo[None, :] - lam * cnt_lo[None, :]
        # breakpoints x = P_j inside (lo_c, hi_c]: value P_j - lam * j
        j_hi = np.searchsorted(P, hi + 1e-9, side="right") - 1
        js = np.arange(len(P))
        vals = P[None, :] - lam * js[None, :]
        for c in range(C + 1):
            a, b = cnt_lo[c] + 1, j_hi[c]
            if b >= a:
                f[:, c] = np.minimum(f[:, c], vals[:, a : b + 1].min(axis=1))
        # transition: min over c' of V(c') + L * max(0, c - c')
        suffix = np.minimum.accumulate(V[:, ::-1], axis=1)[:, ::-1]  # min over c' >= c
        shifted = V - L * cs[None, :]
        prefix = np.minimum.accumulate(shifted, axis=1)  # min over c' <= c of V(c') - L c'
        from_below = np.full_like(V, big)
        from_below[:, 1:] = prefix[:, :-1] + L * cs[None, 1:]
        best = np.minimum(suffix, from_below)
        t += Bk
        newV = best + f
        if t <= L + 1e-9:  # no replica but the initial ones is ready before L
            newV[:, n0 + 1 :] = big
        newV[:, :min_replicas] = big
        V = np.minimum(newV, big)
    return V.min(axis=1)


@dataclass(frozen=True)
class Bound:
    """The dual values for a grid of lambda, per bucket length; ``gpu_hours(a)`` is the bound
    for attainment ``a``."""

    n: int
    lams: np.ndarray
    inner: list[np.ndarray]  # per bucket length: relaxed_minimum over lams
    servable: int  # the most requests the relaxation can serve within the SLO at any cost

    def gpu_hours(self, attainment: float) -> float:
        """The bound for attainment ``a``; ``inf`` when even the relaxation cannot reach it
        (too much work before any added replica can be ready)."""
        k = math.ceil(attainment * self.n - 1e-9)
        if k > self.servable:
            return math.inf
        best = max(float(np.max(self.lams * k + v)) for v in self.inner)
        return max(0.0, best) / 3600.0


def lower_bound(reqs: list[Request], model: FleetModel, slo: float, n0: int, max_replicas: int, min_replicas: int = 0,
                buckets: tuple[float, ...] = DEFAULT_BUCKETS, lams: np.ndarray | None = None) -> Bound:
    """The bound's dual for this trace and fleet: call ``.gpu_hours(a)`` for attainment ``a``."""
    end = reqs[-1].arrival if reqs else 0.0
    L = model.cold_start
    if lams is None:
        lams = np.concatenate(([0.0], np.geomspace(1e-3, 20.0 * (L + max(buckets)), 96)))
    inner = []
    servable = len(reqs)
    for b in buckets:
        lengths, works = bucket_works(reqs, model, slo, end, b)
        all_lams = np.concatenate((lams, [_HUGE_LAMBDA]))
        v = relaxed_minimum(lengths, works, all_lams, L, n0, max_replicas, model.max_num_seqs, min_replicas)
        inner.append(v[:-1])
        # at a huge lambda the minimum is -lambda * (most servable) + a cost far below lambda
        servable = min(servable, math.floor(-v[-1] / _HUGE_LAMBDA + 0.5))
    return Bound(len(reqs), lams, inner, servable)
