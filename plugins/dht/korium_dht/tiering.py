"""Coral-style latency tiering: group network prefixes into a few tiers by round-trip time.

Lookups prefer candidates in faster tiers among candidates of equal progress, so a node learns
which parts of the network answer quickly. The state here is pure and synchronous: callers pass
``now`` in seconds, nothing reads a clock, nothing does I/O.

What is measured
    Round-trip times per *real* network prefix (``tiering_prefix``: the /16 of an IPv4 address,
    the /32 of an IPv6 one), smoothed by an EMA (alpha 0.3; the first sample sets it, rather than
    starting from an invented 150 ms). At most ``tiering_prefixes`` prefixes are kept; the least
    recently sampled is dropped.

How many tiers (``choose_tier_count``)
    Clustering works on ``log(RTT)``: what matters is the ratio between latencies (10 ms vs 20 ms
    is as different as 100 ms vs 200 ms), and in milliseconds squared the inertia of slow prefixes
    would swamp everything else. The tier count is:

    1. the smallest ``k`` in ``1..max_tiers`` whose k-means inertia is at most 10 % of the
       inertia of one tier (the tiers explain at least 90 % of the variance of ``log(RTT)``),
       or ``max_tiers`` if none does; 1 when the values are (all but) equal. Unlike the
       reference's ``inertia + penalty`` in ms², which picks as many tiers as allowed
       whenever RTTs differ, this is scale-free;
    2. while some larger ``k' <= max_tiers`` again explains 90 % of what ``k`` leaves
       (``inertia_k' <= 0.1 * inertia_k``), ``k`` moves to the smallest such ``k'``. Step 1
       alone stops early on many distinct groups (five equal, evenly spread groups: 3 tiers
       already explain 90 %; seven: 4), merging groups that are clearly apart; this step
       keeps them apart, yet stops on a continuum or on noise, where more tiers explain only
       a little more (a log-uniform spread gets 4 tiers, three noisy groups get 3);
    3. then ``k`` is lowered while two adjacent centroids of the ``k``-means solution are
       within a factor of 1.25 of each other: clusters at 10 ms and 11 ms are one tier, and
       noise around a single latency is one tier, not the four that step 1 would fit to it.

    Tier 0 is the fastest. A tier's centroid is the geometric mean RTT of its members.

Cost
    ``record_rtt`` runs for every lookup reply, so it is O(1) apart from a bisect over at most
    ``max_tiers`` boundaries: a tracked prefix is re-classified against the current centroids at
    every sample (its tier follows its RTT at once), while the centroids themselves are
    recomputed at most once per ``tiering_recompute_s`` (and once as soon as two prefixes are
    known, so a fresh node gets tiers quickly). 1-D k-means runs on sorted values with prefix
    sums, so a Lloyd step costs O(k log n); a recompute runs it for every k up to
    ``max_tiers`` and is still dominated by the O(n log n) sort and the O(n log k)
    classification (about 5 ms for 10,000 prefixes). ``tier_of`` is a dictionary lookup.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate, pairwise
from typing import Final

from korium.netaddr import IpAddress
from korium_dht.adaptive import lower_envelope
from korium_dht.config import DhtConfig
from korium_dht.netaddr import tiering_prefix

EMA_ALPHA: Final = 0.3
"""Weight of a new RTT sample in a prefix's smoothed RTT."""
EXPLAINED_VARIANCE: Final = 0.9
"""Fraction of the variance of log(RTT) the chosen tiers must explain."""
MIN_TIER_RATIO: Final = 1.25
"""Adjacent tier centroids closer than this factor are one tier."""
MIN_RTT: Final = 1e-4
"""RTTs below 0.1 ms are treated as 0.1 ms: below that, differences are scheduling noise, and
``log`` needs a positive number (simulated links may report 0)."""

_LOG_MIN_TIER_RATIO: Final = math.log(MIN_TIER_RATIO)
_NEGLIGIBLE_INERTIA: Final = 1e-12
"""Per value, in log(RTT) squared: below this the tiers fit exactly (and rounding dominates)."""


@lru_cache(maxsize=4096)
def _prefix_of(ip: IpAddress) -> str:
    """``tiering_prefix``, cached (process-wide, bounded): an ``ip_network`` per reply would
    dominate the cost."""
    return tiering_prefix(ip)


# -- 1-D k-means -----------------------------------------------------------------------------


def kmeans_1d(
    values: Sequence[float], k: int, iterations: int = 20
) -> tuple[list[float], list[int], float]:
    """Deterministic 1-D k-means (Lloyd) of *values* into at most *k* clusters.

    Centroids start at quantiles of the sorted values (centroid ``i`` at sorted index
    ``round((i + 0.5) / k * (n - 1))``); then up to *iterations* Lloyd steps run, stopping early
    once no assignment changes. A cluster left empty is re-seeded at the value farthest from
    its nearest centroid (the smallest such value on ties), which always exists because *k* is
    first clamped to the number of distinct values. A value equidistant from two centroids
    belongs to the lower one.

    Returns ``(centroids, assignment, inertia)``: centroids strictly ascending, ``assignment[i]``
    the index of the centroid nearest ``values[i]``, and ``inertia`` the sum of squared
    distances of the values to their centroids. There are ``min(k, distinct values)``
    centroids, except that a cluster still empty when the iterations run out is dropped, so
    every centroid has at least one value. Empty *values* give ``([], [], 0.0)``; values must
    be finite, and small enough that their sum is (``ValueError`` otherwise).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not values:
        return [], [], 0.0
    if not all(math.isfinite(value) for value in values):
        raise ValueError("kmeans_1d needs finite values")
    order = sorted(range(len(values)), key=values.__getitem__)
    xs = [float(values[i]) for i in order]
    sums = _prefix_sums(xs)
    if not math.isfinite(sums[-1]):
        raise ValueError("kmeans_1d: values too large to sum as floats")
    centroids, ends = _kmeans_sorted(xs, sums, _distinct(xs), k, iterations)
    assignment = [0] * len(xs)
    inertia = 0.0
    start = 0
    for cluster, (centroid, end) in enumerate(zip(centroids, ends, strict=True)):
        for position in range(start, end):
            assignment[order[position]] = cluster
        inertia += math.fsum((x - centroid) ** 2 for x in xs[start:end])
        start = end
    return centroids, assignment, inertia


def _distinct(xs: list[float]) -> list[float]:
    """The distinct values of the ascending list *xs*, ascending."""
    return [x for i, x in enumerate(xs) if i == 0 or x != xs[i - 1]]


def _prefix_sums(xs: list[float]) -> list[float]:
    """``p[i] = sum(x - m for x in xs[:i])``, ``m`` the median: shifted, to keep rounding small."""
    shift = xs[len(xs) // 2]
    return [0.0, *accumulate(x - shift for x in xs)]


def _ends(xs: list[float], centroids: list[float]) -> list[int]:
    """Exclusive end index in *xs* of each cluster: nearest centroid, ties to the lower one.

    *centroids* ascend. Of equal centroids the first takes their values and the rest stay
    empty. The boundary compares distances, not a midpoint, which can round onto a centroid.
    """
    n = len(xs)
    ends = [n] * len(centroids)
    upper: float | None = None  # the next centroid greater than the current one
    for j in range(len(centroids) - 2, -1, -1):
        c = centroids[j]
        if centroids[j + 1] > c:
            upper = centroids[j + 1]
        if upper is not None:
            b = upper
            ends[j] = bisect_right(xs, 0.0, key=lambda x: (x - c) - (b - x))
    return ends


def _kmeans_sorted(
    xs: list[float], sums: list[float], distinct: list[float], k: int, iterations: int
) -> tuple[list[float], list[int]]:
    """k-means of the ascending *xs*; returns ascending centroids and each cluster's end index.

    In 1-D the clusters of sorted values are contiguous runs split at the midpoints between
    centroids, so an assignment step is ``k - 1`` bisects and a cluster mean is a difference of
    prefix sums: a Lloyd step is O(k log n), not O(n k).
    """
    n = len(xs)
    k = min(k, len(distinct))
    shift = xs[n // 2]
    centroids = [xs[min(n - 1, int((i + 0.5) * (n - 1) / k + 0.5))] for i in range(k)]
    ends: list[int] | None = None
    for _ in range(max(0, iterations)):
        new_ends = _ends(xs, centroids)
        if new_ends == ends:
            break
        ends = new_ends
        empty: list[int] = []
        start = 0
        for cluster, end in enumerate(ends):
            if end > start:
                mean = (sums[end] - sums[start]) / (end - start) + shift
                centroids[cluster] = min(max(mean, xs[start]), xs[end - 1])
            else:
                empty.append(cluster)
            start = end
        if empty:
            _reseed(centroids, empty, distinct)
            ends = None
        centroids.sort()
    ends = _ends(xs, centroids)
    kept: list[float] = []
    kept_ends: list[int] = []
    start = 0
    for centroid, end in zip(centroids, ends, strict=True):
        if end > start:  # an empty cluster's run is zero-length; nobody is nearer to it
            kept.append(centroid)
            kept_ends.append(end)
            start = end
    return kept, kept_ends


def _reseed(centroids: list[float], empty: list[int], distinct: list[float]) -> None:
    """Move each empty cluster's centroid to the value farthest from every other centroid.

    That value is the one whose cluster the move helps most, and it is never a current
    centroid while there are more distinct values than distinct centroids.
    """
    empty_set = set(empty)
    taken = sorted(c for i, c in enumerate(centroids) if i not in empty_set)
    for cluster in empty:
        best, best_distance = distinct[0], -1.0
        for x in distinct:
            at = bisect_left(taken, x)
            distance = min(
                x - taken[at - 1] if at > 0 else math.inf,
                taken[at] - x if at < len(taken) else math.inf,
            )
            if distance > best_distance:
                best, best_distance = x, distance
        centroids[cluster] = best
        taken.insert(bisect_left(taken, best), best)


def _inertia(
    sums: list[float], squares: list[float], shift: float, centroids: list[float], ends: list[int]
) -> float:
    """Sum of squared distances of the runs to their centroids, from prefix sums: O(k)."""
    total = 0.0
    start = 0
    for centroid, end in zip(centroids, ends, strict=True):
        m = end - start
        s1 = sums[end] - sums[start]
        s2 = squares[end] - squares[start]
        c = centroid - shift
        total += max(0.0, s2 - 2.0 * c * s1 + m * c * c)
        start = end
    return total


# -- tier count ------------------------------------------------------------------------------


def _tier_centroids(sorted_logs: list[float], max_tiers: int) -> list[float]:
    """Centroids (ascending, in log space) of the tiers ``choose_tier_count`` describes."""
    n = len(sorted_logs)
    if n == 0:
        return []
    distinct = _distinct(sorted_logs)
    limit = min(max_tiers, len(distinct))
    if limit <= 1:
        return [math.fsum(sorted_logs) / n]
    shift = sorted_logs[n // 2]
    sums = _prefix_sums(sorted_logs)
    squares = [0.0, *accumulate((x - shift) ** 2 for x in sorted_logs)]
    solutions: list[list[float]] = []
    inertias: list[float] = []
    for k in range(1, limit + 1):
        centroids, ends = _kmeans_sorted(sorted_logs, sums, distinct, k, 20)
        solutions.append(centroids)
        inertias.append(_inertia(sums, squares, shift, centroids, ends))
    unexplained = 1.0 - EXPLAINED_VARIANCE
    k = 1
    while inertias[k - 1] > n * _NEGLIGIBLE_INERTIA:
        target = unexplained * inertias[k - 1]
        better = [j for j in range(k + 1, limit + 1) if inertias[j - 1] <= target]
        if not better:
            if k == 1:  # more structure than max_tiers tiers can explain: use them all
                k = limit
            break
        k = better[0]
    for centroids in reversed(solutions[:k]):
        if all(b - a >= _LOG_MIN_TIER_RATIO for a, b in pairwise(centroids)):
            return centroids
    return solutions[0]  # not reached: a single centroid has no close neighbour


def choose_tier_count(values: Sequence[float], max_tiers: int) -> int:
    """How many latency tiers *values* (positive RTTs, any unit) fall into; 1 to *max_tiers*.

    The criterion of the module docstring, on ``log(value)``: the smallest ``k`` whose
    k-means explains at least 90 % of the variance (else *max_tiers*); then, while a larger
    ``k'`` explains 90 % of the variance that ``k`` leaves, the smallest such ``k'``; then
    lowered while two adjacent centroids are within a factor of 1.25. Empty *values* give 1.
    """
    if max_tiers < 1:
        raise ValueError(f"max_tiers must be at least 1, got {max_tiers}")
    logs = []
    for value in values:
        if not (value > 0.0 and math.isfinite(value)):
            raise ValueError(f"choose_tier_count needs positive finite values, got {value!r}")
        logs.append(math.log(value))
    logs.sort()
    return max(1, len(_tier_centroids(logs, max_tiers)))


# -- per-node state ----------------------------------------------------------------------------


class _Prefix:
    """RTT statistics of one network prefix."""

    __slots__ = ("ema", "floor", "samples", "tier")

    def __init__(self, rtt: float) -> None:
        self.ema = rtt
        self.floor = rtt
        self.samples = 1
        self.tier = -1  # not classified yet


class LatencyTiers:
    """One node's RTT statistics per network prefix, and the latency tiers they fall into."""

    def __init__(self, config: DhtConfig) -> None:
        self.max_prefixes = config.tiering_prefixes
        self.recompute_interval = config.tiering_recompute_s
        self.max_tiers = config.max_tiers
        self._prefixes: OrderedDict[str, _Prefix] = OrderedDict()
        self._centroids: list[float] = []  # seconds, ascending
        self._bounds: list[float] = []  # log-space midpoints between adjacent centroids
        self._counts: list[int] = [0]
        self._middle = 0
        self._last_recompute: float | None = None
        self._clustered = False  # whether a recompute has seen two prefixes yet

    # -- measurements -----------------------------------------------------------------------

    def record_rtt(self, ip: IpAddress | None, rtt: float, now: float) -> None:
        """Fold one round-trip time (seconds) to *ip* into its prefix's statistics.

        Samples without an IP, or that are negative or not finite, are ignored: they say
        nothing about a prefix. Recomputes the tiers when due (``tiering_recompute_s`` after
        the last time, or at once when two prefixes are first known); otherwise re-classifies
        this prefix against the current centroids, so its tier follows its RTT.
        """
        if ip is None or not 0.0 <= rtt < math.inf:
            return
        key = _prefix_of(ip)
        prefixes = self._prefixes
        entry = prefixes.get(key)
        if entry is None:
            entry = prefixes[key] = _Prefix(rtt)
            if len(prefixes) > self.max_prefixes:
                _, dropped = prefixes.popitem(last=False)
                if dropped.tier >= 0:
                    self._counts[dropped.tier] -= 1
        else:
            entry.ema += EMA_ALPHA * (rtt - entry.ema)
            entry.floor = lower_envelope(entry.floor, rtt)
            entry.samples += 1
            prefixes.move_to_end(key)
        last = self._last_recompute
        if (not self._clustered and len(prefixes) >= 2) or (
            last is not None and now - last >= self.recompute_interval
        ):
            self.recompute(now)
            return
        if last is None:
            return
        if now < last:  # the clock went back: restart the interval rather than stall
            self._last_recompute = now
        tier = bisect_left(self._bounds, math.log(max(entry.ema, MIN_RTT)))
        if tier != entry.tier:
            if entry.tier >= 0:
                self._counts[entry.tier] -= 1
            self._counts[tier] += 1
            entry.tier = tier

    def recompute(self, now: float) -> None:
        """Cluster the prefixes' smoothed RTTs into tiers (tier 0 fastest) and classify them."""
        self._last_recompute = now
        entries = list(self._prefixes.values())
        self._clustered = len(entries) >= 2
        logs = [math.log(max(entry.ema, MIN_RTT)) for entry in entries]
        centroids = _tier_centroids(sorted(logs), self.max_tiers)
        self._centroids = [math.exp(c) for c in centroids]
        self._bounds = [(a + b) * 0.5 for a, b in pairwise(centroids)]
        tiers = max(1, len(centroids))
        self._middle = tiers // 2
        counts = [0] * tiers
        bounds = self._bounds
        for entry, value in zip(entries, logs, strict=True):
            tier = bisect_left(bounds, value)
            entry.tier = tier
            counts[tier] += 1
        self._counts = counts

    # -- queries --------------------------------------------------------------------------------

    def tier_of(self, ip: IpAddress | None) -> int:
        """The tier of *ip*'s prefix; unknown is the middle tier: neither preferred nor avoided."""
        if ip is None:
            return self._middle
        entry = self._prefixes.get(_prefix_of(ip))
        if entry is None or entry.tier < 0:
            return self._middle
        return entry.tier

    def smoothed_rtt(self, ip: IpAddress | None) -> float | None:
        """The smoothed RTT (seconds) of *ip*'s prefix, or None if it is not tracked."""
        entry = None if ip is None else self._prefixes.get(_prefix_of(ip))
        return None if entry is None else entry.ema

    def floor_rtt(self, ip: IpAddress | None) -> float | None:
        """The usual RTT (seconds) of *ip*'s prefix without queueing: the lower envelope of
        its samples (adaptive alpha measures congestion against it), or None if untracked."""
        entry = None if ip is None else self._prefixes.get(_prefix_of(ip))
        return None if entry is None else entry.floor

    def samples(self, ip: IpAddress | None) -> int:
        """How many RTT samples *ip*'s prefix has had while tracked (0 if not tracked)."""
        entry = None if ip is None else self._prefixes.get(_prefix_of(ip))
        return 0 if entry is None else entry.samples

    @property
    def tiers(self) -> int:
        """Number of tiers: 1 until the first clustering."""
        return len(self._counts)

    @property
    def centroids(self) -> list[float]:
        """Each tier's geometric-mean RTT in seconds, ascending; empty before any clustering."""
        return list(self._centroids)

    def __len__(self) -> int:
        return len(self._prefixes)

    def stats(self) -> dict[str, int | float]:
        """Telemetry: prefixes tracked, tiers, and per tier its prefixes and centroid in ms.

        ``tier{i}_prefixes`` counts tracked prefixes classified into tier ``i`` (prefixes not
        yet classified, before the first clustering, are in none); ``tier{i}_ms`` is 0.0 until
        a centroid is known.
        """
        result: dict[str, int | float] = {"prefixes": len(self._prefixes), "tiers": self.tiers}
        for i, count in enumerate(self._counts):
            result[f"tier{i}_prefixes"] = count
            result[f"tier{i}_ms"] = self._centroids[i] * 1000.0 if i < len(self._centroids) else 0.0
        return result
