"""Adaptive bucket size *k* and lookup parallelism *alpha*, from observed request outcomes.

Why: a fixed k and alpha are either wasteful in a calm network or fragile under churn. Two
signals, measured over the last ``churn_window`` DHT requests this node made:

* **churn** ``F``: the fraction of requests that got no answer (timeout, unreachable, connection
  lost). Contacts that stop answering are what churn looks like from one node.
* **congestion** ``C``: queueing delay in the requests that *did* answer. A dead peer and a
  congested path both time out, but only congestion slows the answers that arrive, so the signal
  is RTT inflation ``Q``: an EWMA (weight 0.1) of ``rtt / max(path_floor, 20 ms)`` per answer,
  where ``path_floor`` is the usual RTT of the peer's network prefix (the lower envelope that
  latency tiering keeps: drops at once, rises 1% of the gap per sample, so a route change is
  learnt but a burst of queueing is not). Comparing each answer with its own path matters: far
  and near peers mixed together would otherwise read as congestion. For an answer whose path
  has no history yet, ``srtt / max(baseline, 20 ms)`` over all answers stands in. The 20 ms floor
  keeps sub-millisecond jitter on a LAN or loopback from reading as congestion.

Formulas (``ramp(x, a, b)`` is 0 below *a*, 1 above *b*, linear between; ``rnd`` rounds half up)::

    S     = ramp(F, 0.05, 0.50)                 # churn above 5% starts to matter, saturates at 50%
    C     = ramp(Q, 1.5, 4.0)                   # answers 1.5x slower than usual start to matter
    k     = clamp(rnd(k0 + (k_max - k0) * S), k_min, k_max)
    alpha = clamp(rnd(a0 + (a_max - a0) * S - (a_max - a_min) * C), a_min, a_max)

A healthy network (F <= 5%, Q <= 1.5) stays at the defaults ``k0 = 20, a0 = 3``. Churn grows k
(more replicas of routing knowledge) and alpha (more parallel probes route around dead
contacts); congestion shrinks alpha (fewer requests into full queues). Until
``MIN_SAMPLES`` outcomes are in, the defaults hold.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import Final

from korium_dht.config import DhtConfig

MIN_SAMPLES: Final = 20
"""Outcomes needed before k and alpha move from their defaults."""
SRTT_WEIGHT: Final = 0.1
BASELINE_RISE: Final = 0.01
RTT_FLOOR: Final = 0.020
"""Seconds; queueing below this is not congestion worth slowing down for."""


class Outcome(enum.Enum):
    """How one DHT request ended."""

    ANSWERED = "answered"
    NO_ANSWER = "no-answer"


def ramp(x: float, low: float, high: float) -> float:
    """0 at or below *low*, 1 at or above *high*, linear between."""
    if x <= low:
        return 0.0
    if x >= high:
        return 1.0
    return (x - low) / (high - low)


def lower_envelope(floor: float, sample: float) -> float:
    """Follow the lowest values: drop to a lower *sample* at once, rise 1% of the gap for a
    higher one, so a lasting change is learnt but a burst of queueing is not."""
    return sample if sample < floor else floor + BASELINE_RISE * (sample - floor)


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (Python's round() goes to even)."""
    return math.floor(x + 0.5)


class AdaptiveParams:
    """Pure state: feed it outcomes, read ``k`` and ``alpha``."""

    def __init__(self, config: DhtConfig) -> None:
        self.config = config
        self._outcomes: deque[bool] = deque(maxlen=config.churn_window)
        self._failures = 0
        self.srtt: float | None = None
        self._path_q: float | None = None
        self.baseline: float | None = None
        self.k = config.k
        self.alpha = config.alpha

    def record(
        self, outcome: Outcome, rtt: float | None = None, path_floor: float | None = None
    ) -> bool:
        """Add one request outcome (*rtt* in seconds if answered, *path_floor* the usual RTT
        of the peer's path if known); True if k changed."""
        failed = outcome is Outcome.NO_ANSWER
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._failures -= 1
        self._outcomes.append(failed)
        self._failures += failed
        if not failed and rtt is not None and math.isfinite(rtt) and rtt >= 0:
            self._sample_rtt(rtt)
            if path_floor is not None:
                ratio = rtt / max(path_floor, RTT_FLOOR)
                q = self._path_q
                self._path_q = ratio if q is None else q + SRTT_WEIGHT * (ratio - q)
        old_k = self.k
        self._update()
        return self.k != old_k

    def _sample_rtt(self, rtt: float) -> None:
        self.srtt = rtt if self.srtt is None else self.srtt + SRTT_WEIGHT * (rtt - self.srtt)
        self.baseline = (
            self.srtt if self.baseline is None else lower_envelope(self.baseline, self.srtt)
        )

    @property
    def churn(self) -> float:
        """F: the failure fraction of the recent outcomes."""
        return self._failures / len(self._outcomes) if self._outcomes else 0.0

    @property
    def inflation(self) -> float:
        """Q: how much slower answers are than the baseline (1.0 = as usual)."""
        if self._path_q is not None:
            return self._path_q
        if self.srtt is None or self.baseline is None:
            return 1.0
        return self.srtt / max(self.baseline, RTT_FLOOR)

    def _update(self) -> None:
        c = self.config
        if len(self._outcomes) < MIN_SAMPLES:
            self.k, self.alpha = c.k, c.alpha
            return
        s = ramp(self.churn, 0.05, 0.50)
        congestion = ramp(self.inflation, 1.5, 4.0)
        k = round_half_up(c.k + (c.k_max - c.k) * s)
        alpha = round_half_up(
            c.alpha + (c.alpha_max - c.alpha) * s - (c.alpha_max - c.alpha_min) * congestion
        )
        self.k = min(max(k, c.k_min), c.k_max)
        self.alpha = min(max(alpha, c.alpha_min), c.alpha_max)

    def stats(self) -> dict[str, int | float]:
        return {
            "k": self.k,
            "alpha": self.alpha,
            "churn": round(self.churn, 4),
            "rtt_inflation": round(self.inflation, 3),
        }
