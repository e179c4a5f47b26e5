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
5. Peaks and the FIFO router (a second, usually tighter, relaxation; the bound is the larger
   of the two). Let ``M_k`` be the most replicas ready at once in bucket k (``M_k >= c_k``).
   The router admits in arrival order, so if request j meets the SLO every earlier request
   was admitted by ``T = a_j + slo``; at most ``slots * M_k`` of them still run at T (T in
   the bucket), so for every earlier arrival u of the bucket the fleet did at least the
   work of requests u..j less their ``slots * M_k`` largest in ``[a_u, T]``, and it can do
   at most ``slots * M_k * (T - a_u)``. The same holds for u in the previous bucket, where
   the fleet can do at most ``slots * (M_{k-1} (start_k - a_u) + M_k (T - start_k))``: a
   backlog carried over from the previous bucket counts. Requests failing that for some u
   cannot meet the SLO: ``caps[k][M_{k-1}, M_k]`` counts the rest, and the DP carries the
   previous peak in its state. Its top level C stands for "C or more": served capped at
   ``max_replicas``, costs counted at C, so any C keeps it a relaxation. Starts: bucket k has an instant with
   N <= c_k (a low) and one with N >= M_k (a high), in some order; along those instants N
   rises by at least (a high) - (the lowest low since the last rise counted), summed. The
   DP takes the cheapest order in every bucket, so the count holds whatever the order.

What the relaxations forgive (why the bound is below what any policy can reach): requests
that must share a replica's 8 slots and KV cache are a fluid; a replica can be ready for
part of a bucket; a replica needed for a burst is charged its load but only the ready time
the mean level implies; the SLO's slack lets work near a bucket edge go unaccounted; a
backlog older than the previous bucket is not counted; requests still running at T are
assumed to have done no work yet; and draining costs nothing.
So a ratio to the bound above 1.25 is a miss against the target, but not proof that a
policy with 1.25 exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.autoscaling.sim import FleetModel, Request

__all__ = ["Bound", "bucket_works", "fifo_caps", "lower_bound", "relaxed_minimum", "relaxed_minimum_peaks"]

DEFAULT_BUCKETS = (10.0, 30.0, 60.0)
_HUGE_LAMBDA = 1e9  # seconds per request: far above any schedule's cost, so it finds the most servable


def _overlap(st: float, s: float, lo: float, hi: float) -> float:
    return max(0.0, min(st + s, hi) - max(st, lo))


def bucket_works(reqs: list[Request], model: FleetModel, slo: float, end: float, bucket: float,
                 members: list[list[int]] | None = None) -> tuple[list[float], list[list[float]]]:
    """Bucket lengths, and per bucket the guaranteed work (slot-seconds) of the requests kept
    there (step 3 of the module docstring). ``members``, if given, receives per bucket the
    indices (in ``reqs``) of those requests."""
    n = max(1, math.ceil(end / bucket - 1e-9)) if end > 0 else 1
    lengths = [min(bucket, end - k * bucket) if end > 0 else 0.0 for k in range(n)]
    works: list[list[float]] = [[] for _ in range(n)]
    if members is not None:
        members[:] = [[] for _ in range(n)]
    for idx, r in enumerate(reqs):
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
        if members is not None:
            members[best_k].append(idx)
    return lengths, works


def _prefix_top(sv: np.ndarray) -> np.ndarray:
    """``top[j, q]``: the sum of the q largest of ``sv[: j + 1]`` (q up to len(sv))."""
    m = len(sv)
    tri = np.where(np.tri(m, dtype=bool), sv[None, :], 0.0)
    return np.concatenate((np.zeros((m, 1)), np.cumsum(-np.sort(-tri, axis=1), axis=1)), axis=1)


def fifo_caps(reqs: list[Request], model: FleetModel, slo: float, lengths: list[float], bucket: float,
              members: list[list[int]], p_levels: np.ndarray, m_levels: np.ndarray) -> list[np.ndarray]:
    """Per bucket, ``U[i, j]``: at most this many of its requests meet the SLO while at most
    P = ``p_levels[i]`` replicas are ready in the previous bucket and at most M =
    ``m_levels[j]`` in this one (step 5). The router
    is FIFO: if request j is admitted by ``T = a_j + slo``, so is every earlier one; at most
    ``slots * M`` of them still run at T (T in the bucket), so for every earlier arrival u of
    this bucket or the previous one the fleet did at least ``sum(s_u..s_j)`` less the
    ``slots * M`` largest service times since the earlier bucket start (a superset, so no
    more work than the bound claims) in ``[a_u, T]``, and it can do at most ``slots * M *
    (T - a_u)`` there (u in this bucket) or ``slots * (P * (start - a_u) + M * (T - start))``
    (u in the previous one: a backlog carried over). Requests for which that fails cannot
    meet the SLO; requests whose T falls past the bucket are not capped."""
    slots = model.max_num_seqs
    n = len(lengths)
    arrivals: list[list[int]] = [[] for _ in range(n)]
    for i, r in enumerate(reqs):
        arrivals[min(n - 1, int(r.arrival // bucket))].append(i)
    ok = np.ones((len(p_levels), len(m_levels), len(reqs)), dtype=bool)
    Ps = np.asarray(p_levels)
    for k, idx in enumerate(arrivals):
        if not idx:
            continue
        prev = arrivals[k - 1] if k > 0 else []
        p, start, hi = len(prev), k * bucket, k * bucket + lengths[k]
        a = np.array([reqs[i].arrival for i in prev + idx])
        sv = np.array([model.service(reqs[i]) for i in prev + idx])
        S = np.cumsum(sv)
        S_prev = S - sv
        top_all = _prefix_top(sv)[p:]  # over the previous bucket's arrivals and this one's
        top_cur = _prefix_top(sv[p:])  # over this bucket's only
        ac, Sc = a[p:], S[p:]
        capped = ac + slo <= hi
        for jM, M in enumerate(m_levels):
            # u in this bucket
            R = np.maximum.accumulate(slots * M * ac - S_prev[p:])
            fits = top_cur[:, min(slots * M, len(idx))] + slots * M * (ac + slo) - Sc >= R - 1e-9
            ok[:, jM, idx] = fits | ~capped
            if p == 0:
                continue
            # u in the previous bucket, for every P at once
            lhs = top_all[:, min(slots * M, p + len(idx))] + slots * M * (ac + slo) - Sc  # per j
            R_prev = (slots * Ps[:, None] * a[None, :p] - S_prev[None, :p]).max(axis=1) + slots * (M - Ps) * start  # per P
            ok[:, jM, idx] &= (lhs[None, :] >= R_prev[:, None] - 1e-9) | ~capped[None, :]
    return [ok[:, :, mem].sum(axis=2) if mem else np.zeros(ok.shape[:2], dtype=np.int64) for mem in members]


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


def _level_costs(Bk: float, w: list[float], U: np.ndarray | None, lams: np.ndarray, C: int, slots: int, min_replicas: int) -> np.ndarray:
    """f[l, c, M] = min over x in [lo_c, hi_c] of x - lam * min(count(x), U[M]): the bucket's
    ready time less lambda per request served, at mean level c and peak M (step 4)."""
    cs = np.arange(C + 1)
    P = np.concatenate(([0.0], np.cumsum(np.sort(np.asarray(w, dtype=float))))) / slots
    lo = np.maximum(np.maximum(cs - 1, 0), min_replicas) * Bk
    hi = cs * Bk
    cnt_lo = np.searchsorted(P, lo + 1e-9, side="right") - 1
    j_hi = np.searchsorted(P, hi + 1e-9, side="right") - 1
    Ucap = np.full(C + 1, len(P) - 1) if U is None else U
    vals = P[None, :] - lams[:, None] * np.arange(len(P))[None, :]
    f = lo[None, :, None] - lams[:, None, None] * np.minimum(cnt_lo[:, None], Ucap[None, :])[None, :, :]
    for c in range(C + 1):
        a, b = cnt_lo[c] + 1, j_hi[c]
        if b >= a:
            run = np.minimum.accumulate(vals[:, a : b + 1], axis=1)  # best breakpoint up to j
            top = np.minimum(b, Ucap)  # the last breakpoint each M's cap allows
            ok = top >= a
            if ok.any():
                f[:, c, ok] = np.minimum(f[:, c, ok], run[:, top[ok] - a])
    return f


def relaxed_minimum_peaks(lengths: list[float], works: list[list[float]], caps: list[np.ndarray], lams: np.ndarray, L: float,
                          n0: int, max_replicas: int, slots: int, min_replicas: int) -> np.ndarray:
    """The relaxation with each bucket's peak M as well as its mean level c (step 5): served
    requests are capped by ``caps[k][P, M]`` (P: the previous bucket's peak; ``n0`` before
    the first), and starts are counted along the instants where N is at most c_k (a low) or
    at least M_k (a high), in whichever order inside each bucket costs least: a high above
    the lowest low since the last counted rise counts that rise. State: that lowest low (or
    none), and the previous peak. Exact for this relaxation; vectorised over lambda."""
    C = max_replicas
    cs = np.arange(C + 1)
    big = 1e18
    nl = len(lams)
    V = np.full((nl, C + 2, C + 1), big)  # [lambda, pending low (C + 1: none), previous peak]
    V[:, n0, n0] = 0.0
    t = 0.0
    below_mask = cs[None, :] > cs[:, None]  # (c, M): M > c
    rise_from_c = np.where(below_mask, L * (cs[None, :] - cs[:, None]), big)
    for Bk, w, U in zip(lengths, works, caps, strict=True):
        t += Bk
        allowed = (cs[None, :] >= cs[:, None]) & (cs[:, None] >= min_replicas)  # (c, M): peak >= mean's ceiling
        if t <= L + 1e-9:
            allowed &= (cs[:, None] <= n0) & (cs[None, :] <= n0)
        newV = np.full_like(V, big)
        for P in range(C + 1):
            Vm, Vnone = V[:, : C + 1, P], V[:, C + 1 :, P]
            if Vm.min() >= big and Vnone.min() >= big:
                continue
            f = np.where(allowed[None], _level_costs(Bk, w, U[P], lams, C, slots, min_replicas), big)
            # high first, then low: a high M above the pending low m counts M - m; ends with low c
            below = np.minimum.accumulate(Vm - L * cs[None, :], axis=1) + L * cs[None, :]  # m <= M
            above = np.minimum.accumulate(Vm[:, ::-1], axis=1)[:, ::-1]  # m >= M
            W = np.minimum(np.minimum(below, above), Vnone)
            to_c = f + W[:, None, :]  # [l, c, M] -> state (low c, peak M)
            # low first, then high: the pending low becomes min(m, c); a high M above it counts
            # the rise and leaves none pending
            ge = np.minimum(np.minimum.accumulate(Vm[:, ::-1], axis=1)[:, ::-1], Vnone)  # m >= c (or none)
            lt = np.full_like(Vm, big)
            lt[:, 1:] = np.minimum.accumulate(Vm - L * cs[None, :], axis=1)[:, :-1]  # m < c: min V(m) - L m
            via = np.minimum(ge[:, :, None] + rise_from_c[None], lt[:, :, None] + L * cs[None, None, :])
            to_none = (f + via).min(axis=1)  # [l, M] -> state (none, peak M)
            newV[:, : C + 1, :] = np.minimum(newV[:, : C + 1, :], to_c)
            newV[:, C + 1, :] = np.minimum(newV[:, C + 1, :], to_none)
        V = np.minimum(newV, big)
    return V.min(axis=(1, 2))


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
                buckets: tuple[float, ...] = DEFAULT_BUCKETS, lams: np.ndarray | None = None, peaks: bool = True) -> Bound:
    """The bound's dual for this trace and fleet: call ``.gpu_hours(a)`` for attainment ``a``."""
    end = reqs[-1].arrival if reqs else 0.0
    L = model.cold_start
    if lams is None:
        lams = np.concatenate(([0.0], np.geomspace(1e-3, 20.0 * (L + max(buckets)), 96)))
    inner = []
    servable = len(reqs)
    all_lams = np.concatenate((lams, [_HUGE_LAMBDA]))
    for b in buckets:
        members: list[list[int]] = []
        lengths, works = bucket_works(reqs, model, slo, end, b, members)
        v = relaxed_minimum(lengths, works, all_lams, L, n0, max_replicas, model.max_num_seqs, min_replicas)
        results = [v]
        if peaks:
            # Levels 0..C-1 as they are; the top level C stands for "C or more": its served cap
            # is taken at max_replicas and its costs at C, so the DP stays a relaxation for any
            # C. C: one above the most replicas any bucket's FIFO cap can use.
            top = np.array([max_replicas])
            sat = fifo_caps(reqs, model, slo, lengths, b, members, top, np.arange(max_replicas + 1))
            need = max(int(np.searchsorted(u[0], u[0, -1])) for u in sat)
            need = max(need, max(math.ceil(sum(w) / model.max_num_seqs / Bk) if Bk > 0 else 0
                                 for w, Bk in zip(works, lengths, strict=True)))
            C = min(max_replicas, max(need, n0, min_replicas) + 1)
            levels = np.append(np.arange(C), max_replicas)
            caps = fifo_caps(reqs, model, slo, lengths, b, members, levels, levels)
            results.append(relaxed_minimum_peaks(lengths, works, caps, all_lams, L, n0, C, model.max_num_seqs, min_replicas))
        for v in results:
            inner.append(v[:-1])
            # at a huge lambda the minimum is -lambda * (most servable) + a cost far below lambda
            servable = min(servable, math.floor(-v[-1] / _HUGE_LAMBDA + 0.5))
    return Bound(len(reqs), lams, inner, servable)
