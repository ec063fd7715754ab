"""Means with 95% confidence intervals (Student t), for tables over clips and seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# two-sided 95% quantiles t_{0.975, df} of Student's t for df = 1..30
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: exact table up to df 30, then the Cornish-Fisher expansion (error < 1e-4)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` values and its 95% t-interval [low, high]; None bounds when n < 2."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def as_dict(self) -> dict[str, object]:
        return {"mean": self.mean, "ci95": None if self.low is None else [self.low, self.high], "n": self.n}


def mean_ci(values: Sequence[float]) -> MeanCI:
    """Mean and 95% confidence interval of the mean (t distribution, sample standard deviation)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_ci needs at least one value")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return MeanCI(mean, None, None, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n)
