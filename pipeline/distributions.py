"""Generated vs real music judged by distributions, not only means (Yang & Lerch 2020; their toolbox mgeval).

Yang, L.-C. and Lerch, A. (2020), "On the evaluation of generative models in music", Neural Computing and
Applications 32, 4773-4784. Their relative-metric protocol, per statistic (one number per stretch of music):

1. intra-set distances of the real set: |r_i - r_j| for every ordered pair of distinct real stretches (mgeval
   takes each stretch in turn, leave-one-out, against the n - 1 others: n(n - 1) distances, each pair twice);
2. inter-set distances: |r_i - g_k| for every real stretch against every generated one (n_real * n_gen);
3. a Gaussian kernel density estimate (KDE) of each list, then
   - `oa` = overlapping area of the two densities, integral of min(p, q) dx: 1 = the generated stretches lie
     as far from the real ones as real ones lie from each other; 0 = nothing in common;
   - `kl` = KL(intra_real || inter) = integral of p log(p / q) dx, in nats: 0 = the same, larger = worse.

`value_oa` / `value_kl` apply the same two measures to the densities of the statistic's values themselves
(KL(real || generated)): how much the two histograms overlap, the most readable of the figures.

Numerics (numpy only). Bandwidth: Scott's rule, h = std(ddof=1) * n^(-1/5), the default of
scipy.stats.gaussian_kde (Scott 1992, "Multivariate Density Estimation"), floored at BANDWIDTH_FLOOR times the
span of the values compared (so a constant set is a narrow spike rather than a division by zero: two identical
constant sets give OA 1 and KL 0, two different ones OA ~0). Integrals: the trapezoid rule on GRID_POINTS
equally spaced points covering both sets with MARGIN bandwidths beyond the outermost value, so the densities'
mass off the grid is under 1e-8. Unlike mgeval (scipy.integrate.quad between the data's extremes for OA;
scipy.stats.entropy of the pdfs sampled on 1000 points for KL) both measures use this one grid. Distances are
never negative, but, as in mgeval, their KDE is not reflected at 0.

A caveat of Scott's rule: one bandwidth for a whole set, so a set with a few outliers is smoothed wide. Beside
a (near) constant set, drawn as a narrow spike, its density is low everywhere, and OA reads lower than the
histograms' overlap (polyphony_rate: every real window 1.0, most samples 1.0 but one 0.0). The histograms that
evaluate draws (music_plot.py) show such cases.

A caveat of the relative protocol: it sees distances only. Generated stretches all far from real ones can
still score a high `oa` when that distance is of the size of the real set's spread (all samples silent, 0 notes,
beside real windows of 4, 5 and 9 notes: oa 0.65, while value_oa is 0.005); read it beside value_oa.

Degenerate cases never give a number that looks real: a statistic with fewer than 2 defined values (None or NaN
are undefined and dropped) in either set gets None for all four measures.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.music import NAMES

GRID_POINTS = 4001
MARGIN = 6.0  # bandwidths beyond the outermost value: the Gaussian tail past 6 sigma is 1e-9
# Share of the compared values' span: a KDE narrower than that (a constant set) still spans ~2.3 grid steps at
# worst, enough for the trapezoid rule on a Gaussian, and is far narrower than any real spread of the values.
BANDWIDTH_FLOOR = 0.005
# KL's floor, as a share of the uniform density over the grid: where q vanishes and p does not, KL is finite
# (about 20-30 nats for disjoint sets) instead of infinite. Scale-free, since it follows the grid's width.
KL_FLOOR = 1e-10
DIGITS = 6  # the integrals are good to about 1e-6; further digits would be noise in eval.json
_CHUNK = 1 << 22  # grid cells evaluated at once by kde(): bounds its memory at ~32 MB


def values_of(stats: list[dict], name: str) -> np.ndarray:
    """(n,) float64: the statistic `name` over the stretches where it is defined (None, NaN, absent dropped)."""
    vals = [s.get(name) for s in stats]
    return np.array([float(v) for v in vals if v is not None and not math.isnan(v)], dtype=float)


def intra_distances(values: np.ndarray) -> np.ndarray:
    """(n(n-1),) |v_i - v_j| over ordered pairs i != j: mgeval's leave-one-out intra-set distances."""
    d = np.abs(values[:, None] - values[None, :])
    return d[~np.eye(len(values), dtype=bool)]


def inter_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a) * len(b),) |a_i - b_k| for every pair across the two sets."""
    return np.abs(a[:, None] - b[None, :]).ravel()


def scott_bandwidth(values: np.ndarray) -> float:
    """Scott's rule, scipy.stats.gaussian_kde's default: std(ddof=1) * n^(-1/5) (0 for a constant set)."""
    return float(np.std(values, ddof=1) * len(values) ** -0.2)


def kde(values: np.ndarray, x: np.ndarray, bandwidth: float) -> np.ndarray:
    """(len(x),) Gaussian KDE of `values` (n,) with `bandwidth` (> 0, the values' unit) at the points `x`.

    p(x) = 1/n * sum_i N(x; v_i, h^2), in 1 / the values' unit. Repeated values are evaluated once and
    weighted by their count (integer statistics have few distinct values), in chunks to bound memory.
    """
    points, counts = np.unique(values, return_counts=True)
    out = np.zeros(len(x))
    step = max(1, _CHUNK // max(len(x), 1))
    for a in range(0, len(points), step):
        z = (x[None, :] - points[a:a + step, None]) / bandwidth
        out += counts[a:a + step] @ np.exp(-0.5 * z * z)
    return out / (len(values) * bandwidth * math.sqrt(2 * math.pi))


def _integrate(y: np.ndarray, x: np.ndarray) -> float:
    """The trapezoid rule (np.trapz was renamed np.trapezoid in numpy 2: written out for both)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def overlap_area(p: np.ndarray, q: np.ndarray, x: np.ndarray) -> float:
    """Overlapping area of two densities sampled on the grid `x`: integral of min(p, q) dx, in [0, 1]."""
    return _integrate(np.minimum(p, q), x)


def kl_divergence(p: np.ndarray, q: np.ndarray, x: np.ndarray, floor: float = KL_FLOOR) -> float:
    """KL(p || q) = integral of p log(p / q) dx in nats, for densities sampled on the grid `x`.

    Both densities are floored at `floor` / (x[-1] - x[0]) inside the logarithm so the result is finite where q
    vanishes; the weight is p itself, so identical p and q give exactly 0. Clipped at 0 (a tiny negative value
    can only be rounding).
    """
    eps = floor / (x[-1] - x[0])
    return max(0.0, _integrate(p * np.log(np.maximum(p, eps) / np.maximum(q, eps)), x))


def compare_densities(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(OA, KL(a || b)) of the KDEs of two samples `a`, `b` (each at least 2 values) on one shared grid.

    Bandwidths: Scott's rule, floored at BANDWIDTH_FLOOR times the span of a and b together (or of |value|, at
    least 1, when every value is the same: then the two densities are identical, OA 1 and KL 0).
    """
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    scale = hi - lo if hi > lo else max(abs(hi), 1.0)
    ha, hb = (max(scott_bandwidth(v), BANDWIDTH_FLOOR * scale) for v in (a, b))
    x = np.linspace(min(a.min() - MARGIN * ha, b.min() - MARGIN * hb),
                    max(a.max() + MARGIN * ha, b.max() + MARGIN * hb), GRID_POINTS)
    p, q = kde(a, x, ha), kde(b, x, hb)
    return overlap_area(p, q, x), kl_divergence(p, q, x)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, DIGITS)


def statistic(generated: np.ndarray, real: np.ndarray) -> dict:
    """The four measures for one statistic from its defined values in each set ((n_gen,), (n_real,))."""
    out = {"oa": None, "kl": None, "value_oa": None, "value_kl": None,
           "n_generated": len(generated), "n_real": len(real)}
    if len(generated) < 2 or len(real) < 2:  # no spread to estimate, no intra-set distance to compare with
        return out
    oa, kl = compare_densities(intra_distances(real), inter_distances(real, generated))
    value_oa, value_kl = compare_densities(real, generated)
    return {**out, "oa": _round(oa), "kl": _round(kl), "value_oa": _round(value_oa), "value_kl": _round(value_kl)}


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return _round(float(np.mean(vals))) if vals else None


def distributions(generated: list[dict], real: list[dict], names=NAMES) -> dict:
    """Per statistic of `names`, OA and KL of generated vs real (see the module's docstring), JSON-safe.

    `generated`, `real`: per-stretch statistics as music.describe or music.finite give them. Returns
    {"statistics": {name: {"oa", "kl", "value_oa", "value_kl", "n_generated", "n_real"}},
     "mean_oa", "mean_value_oa": means over the statistics where defined (None where none is)}.
    """
    per = {name: statistic(values_of(generated, name), values_of(real, name)) for name in names}
    return {"statistics": per, "mean_oa": _mean([s["oa"] for s in per.values()]),
            "mean_value_oa": _mean([s["value_oa"] for s in per.values()])}
