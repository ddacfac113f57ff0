"""Exact binomial confidence bounds for a loss rate measured on n independent pages: the one-sided
Clopper-Pearson upper bound the threshold selection tests against its budget
(classifier/thresholds.py). Pure Python (math.lgamma, log-space sums): the project does not
depend on scipy, and n is at most a few thousand validation pages."""

from __future__ import annotations

import math


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact up to float rounding)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
        + (n - i) * log_q
        for i in range(k + 1)
    ]
    top = max(log_terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms))


def clopper_pearson_upper(k: int, n: int, delta: float) -> float:
    """The exact one-sided upper bound at confidence 1 - delta on the rate of an event seen k
    times in n trials: the p where P(Binomial(n, p) <= k) = delta (closed form 1 - delta^(1/n)
    when k = 0; 1 when k = n or n = 0). A true rate above it would show k or fewer events with
    probability under delta."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), not {delta!r}")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, not k={k}, n={n}")
    if n == 0 or k == n:
        return 1.0
    if k == 0:
        return -math.expm1(math.log(delta) / n)
    lo, hi = k / n, 1.0  # the CDF falls as p rises; at p = k/n it is above delta for delta < 0.5
    if binomial_cdf(k, n, lo) <= delta:
        lo = 0.0
    for _ in range(100):  # bisection to float resolution
        mid = (lo + hi) / 2
        if binomial_cdf(k, n, mid) > delta:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return hi
