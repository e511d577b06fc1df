"""Small multiples of the music statistics: per statistic, real vs generated histograms on shared bins.

The picture behind `music.distributions` in eval.json (see pipeline/distributions.py): each panel's title gives
the overlapping area of the two value densities (value OA, 1 = the same, 0 = disjoint) and, after it, the
Yang & Lerch relative OA (generated-to-real distances vs real-to-real). The same input gives the same bytes
(Agg, no Software or date metadata).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.distributions import values_of

REAL, GENERATED = "#3b6fb6", "#d9472b"  # the sample pictures' blue and red: blue the real music, red the model's
COLUMNS = 4
MAX_BINS = 20


def shared_bins(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bin edges covering both sets: one bin per integer when every value is an integer and there are few of
    them (counts such as pitches_used), else at most MAX_BINS equal bins; a single value gets a unit-wide bin."""
    both = np.concatenate([a, b])
    lo, hi = float(both.min()), float(both.max())
    if np.all(both == np.round(both)) and hi - lo + 1 <= MAX_BINS:
        return np.arange(lo - 0.5, hi + 1.5)
    if hi == lo:
        return np.array([lo - 0.5, lo + 0.5])
    return np.linspace(lo, hi, MAX_BINS + 1)


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _title(name: str, d: dict | None, n_gen: int, n_real: int) -> str:
    oa = ("OA –" if d is None or d["value_oa"] is None else
          f"OA {d['value_oa']:.2f}, relative {d['oa']:.2f}")
    return f"{name}\n{oa}; n {n_real} real, {n_gen} gen."


def _panel(ax, name: str, gen: np.ndarray, real: np.ndarray, d: dict | None) -> None:
    ax.set_title(_title(name, d, len(gen), len(real)), fontsize=9)
    ax.tick_params(labelsize=7)
    if not len(gen) and not len(real):
        ax.text(0.5, 0.5, "undefined", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    bins = shared_bins(gen, real)
    # shares of each set rather than counts, so sets of different sizes compare
    for vals, colour in ((real, REAL), (gen, GENERATED)):
        if len(vals):
            ax.hist(vals, bins=bins, weights=np.full(len(vals), 1 / len(vals)), color=colour, alpha=0.45,
                    histtype="stepfilled", edgecolor=colour, linewidth=1)


def write_png(path: Path | str, generated: list[dict], real: list[dict], dist: dict, names) -> None:
    """Draw one panel per statistic of `names` (histograms of `generated` vs `real` per-stretch statistics,
    dicts as music.describe gives them; `dist`: distributions.distributions' result) to `path`, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = list(names)
    rows = math.ceil(len(names) / COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(3.2 * COLUMNS, 2.6 * rows), dpi=100, squeeze=False)
    for ax, name in zip(axes.flat, names):
        _panel(ax, name, values_of(generated, name), values_of(real, name), dist["statistics"].get(name))
    for ax in axes.flat[len(names):]:
        ax.set_axis_off()
    fig.legend(handles=[Patch(color=REAL, alpha=0.45, label="real test windows"),
                        Patch(color=GENERATED, alpha=0.45, label="generated samples")],
               loc="upper right", fontsize=8, frameon=False)
    fig.suptitle("Music statistics: share of stretches per bin\n"
                 f"OA: overlap of the two value densities (mean {_num(dist['mean_value_oa'])}); relative: "
                 "Yang & Lerch's OA, generated-to-real vs real-to-real distances "
                 f"(mean {_num(dist['mean_oa'])})", fontsize=9, x=0.02, ha="left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
