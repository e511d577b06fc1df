"""Distribution measures of generated vs real music (Yang & Lerch 2020), each against a hand computation or a
closed form."""
import json
import math

import numpy as np
import pytest

from pipeline import distributions as D
from pipeline import music_plot


def normal(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def stretches(name, values):
    """Per-stretch statistics dicts holding only `name`."""
    return [{name: v} for v in values]


# ---- the pure helpers ---------------------------------------------------------------------------------------

def test_two_uniform_densities_overlapping_by_half_have_overlap_area_one_half():
    x = np.linspace(-1, 2.5, 35001)  # 0, 0.5, 1 and 1.5 fall on grid points; the step is 1e-4
    p = ((x >= 0) & (x <= 1)).astype(float)
    q = ((x >= 0.5) & (x <= 1.5)).astype(float)
    assert D.overlap_area(p, q, x) == pytest.approx(0.5, abs=1e-3)
    assert D.overlap_area(p, p, x) == pytest.approx(1.0, abs=1e-3)


def test_identical_densities_overlap_fully_and_diverge_by_nothing():
    x = np.linspace(-10, 10, 4001)
    p = normal(x, 0.3, 1.2)
    assert D.overlap_area(p, p, x) == pytest.approx(1.0, abs=1e-9)
    assert D.kl_divergence(p, p, x) == 0.0


def test_kl_of_two_gaussians_matches_the_closed_form():
    x = np.linspace(-12, 13, 20001)
    # KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2
    assert D.kl_divergence(normal(x, 0, 1), normal(x, 1, 1), x) == pytest.approx(0.5, abs=1e-3)
    assert D.kl_divergence(normal(x, 0, 1), normal(x, 1, 2), x) == pytest.approx(math.log(2) + 2 / 8 - 0.5, abs=1e-3)
    # and their overlap: 2 * Phi(-|m1 - m2| / 2) for equal variances
    assert D.overlap_area(normal(x, 0, 1), normal(x, 1, 1), x) == pytest.approx(
        1 + math.erf(-0.5 / math.sqrt(2)), abs=1e-4)


def test_kl_is_finite_where_q_vanishes():
    x = np.linspace(0, 10, 1001)
    p, q = normal(x, 2, 0.1), normal(x, 8, 0.1)
    kl = D.kl_divergence(p, q, x)
    assert math.isfinite(kl) and kl > 15


def test_kde_and_scott_bandwidth_by_hand():
    # two points 0 and 2, h = 1, at x = 1: the mean of two N(1; 0 or 2, 1) densities = N(1; 0, 1) = 0.24197
    assert D.kde(np.array([0.0, 2.0]), np.array([1.0]), 1.0)[0] == pytest.approx(0.2419707245)
    # a repeated value weighs as often as it occurs
    assert D.kde(np.array([0.0, 0.0, 2.0]), np.array([0.0]), 1.0)[0] == pytest.approx(
        (2 * normal(0, 0, 1) + normal(0, 2, 1)) / 3)
    # Scott: std(ddof=1) * n^(-1/5); [1, 1, 2, 2, 3, 3]: std = sqrt(4/5)
    assert D.scott_bandwidth(np.array([1.0, 1, 2, 2, 3, 3])) == pytest.approx(math.sqrt(0.8) * 6 ** -0.2)
    assert D.scott_bandwidth(np.array([4.0, 4.0])) == 0.0


# ---- the relative-metric protocol ---------------------------------------------------------------------------

def test_intra_and_inter_distances_match_the_hand_lists():
    real, gen = np.array([1.0, 2.0, 4.0]), np.array([0.0, 5.0])
    # every real stretch against the other two (leave-one-out): each pair twice
    assert sorted(D.intra_distances(real)) == [1, 1, 2, 2, 3, 3]
    # every real stretch against every generated one: |1-0| |1-5| |2-0| |2-5| |4-0| |4-5|
    assert list(D.inter_distances(real, gen)) == [1, 4, 2, 3, 4, 1]


def test_protocol_on_a_tiny_case_matches_a_brute_force_integration():
    intra, inter = np.array([1.0, 1, 2, 2, 3, 3]), np.array([1.0, 4, 2, 3, 4, 1])
    hp, hq = math.sqrt(0.8) * 6 ** -0.2, np.std(inter, ddof=1) * 6 ** -0.2
    x = np.linspace(-8, 12, 400001)  # wider (about 10 bandwidths) and finer than the module's own grid
    p = sum(normal(x, v, hp) for v in intra) / 6
    q = sum(normal(x, v, hq) for v in inter) / 6
    want_oa = float(np.minimum(p, q).sum() * (x[1] - x[0]))
    want_kl = float((p * np.log(p / q)).sum() * (x[1] - x[0]))
    out = D.distributions(stretches("notes", [0, 5]), stretches("notes", [1, 2, 4]), names=("notes",))
    s = out["statistics"]["notes"]
    assert s["oa"] == pytest.approx(want_oa, abs=2e-6) and 0.5 < s["oa"] < 0.9
    assert s["kl"] == pytest.approx(want_kl, abs=2e-6) and s["kl"] > 0
    assert (s["n_generated"], s["n_real"]) == (2, 3)
    assert out["mean_oa"] == s["oa"] and out["mean_value_oa"] == s["value_oa"]


def test_disjoint_value_sets_barely_overlap():
    out = D.distributions(stretches("notes", [0, 1, 2, 3]), stretches("notes", [100, 101, 103, 104]),
                          names=("notes",))["statistics"]["notes"]
    assert out["value_oa"] < 1e-6 and out["oa"] < 1e-6
    assert out["value_kl"] > 10 and out["kl"] > 10


def test_the_same_values_overlap_fully():
    vals = [3.0, 1.5, 2.0, 7.25]
    s = D.distributions(stretches("density", vals), stretches("density", vals[::-1]),
                        names=("density",))["statistics"]["density"]
    assert s["value_oa"] == pytest.approx(1.0, abs=1e-6) and s["value_kl"] == 0.0
    # the relative OA is high but not 1: each real stretch's distance 0 to its own generated copy is an inter
    # distance, while leave-one-out keeps it out of the intra ones (n^2 vs n(n - 1) distances)
    assert 0.8 < s["oa"] < 0.95 and 0 < s["kl"] < 0.5


# ---- degenerate cases ---------------------------------------------------------------------------------------

def test_undefined_values_are_dropped_and_too_few_give_none_not_numbers():
    gen = [{"notes": 3, "pitch_range": None, "polyphony": math.nan}, {"notes": 5, "pitch_range": 7,
                                                                      "polyphony": 2.0}, {"notes": None}]
    real = [{"notes": 4, "pitch_range": 9, "polyphony": 1.5}, {"notes": 6, "pitch_range": 12, "polyphony": 2.5}]
    out = D.distributions(gen, real, names=("notes", "pitch_range", "polyphony", "drum_pattern_consistency"))
    st = out["statistics"]
    assert (st["notes"]["n_generated"], st["notes"]["n_real"]) == (2, 2) and st["notes"]["oa"] is not None
    for name in ("pitch_range", "polyphony"):  # one defined generated value: no spread to estimate
        assert st[name]["n_generated"] == 1
        assert all(st[name][k] is None for k in ("oa", "kl", "value_oa", "value_kl"))
    assert st["drum_pattern_consistency"] == {"oa": None, "kl": None, "value_oa": None, "value_kl": None,
                                              "n_generated": 0, "n_real": 0}
    assert out["mean_oa"] == st["notes"]["oa"]  # the mean skips the undefined
    json.dumps(out, allow_nan=False)  # JSON-safe: null, never NaN
    assert D.distributions([], [], names=("notes",))["mean_oa"] is None


def test_constant_sets_same_value_overlap_fully_different_values_not_at_all():
    same = D.distributions(stretches("polyphony_rate", [1.0] * 3), stretches("polyphony_rate", [1.0] * 5),
                           names=("polyphony_rate",))["statistics"]["polyphony_rate"]
    assert (same["oa"], same["kl"], same["value_oa"], same["value_kl"]) == (1.0, 0.0, 1.0, 0.0)
    apart = D.distributions(stretches("pitch_range", [5] * 4), stretches("pitch_range", [7] * 4),
                            names=("pitch_range",))["statistics"]["pitch_range"]
    assert apart["value_oa"] < 1e-6 and apart["oa"] < 1e-6
    assert math.isfinite(apart["value_kl"]) and apart["value_kl"] > 10


# ---- the picture ----------------------------------------------------------------------------------------------

def test_shared_bins_are_one_per_integer_for_small_counts_and_cover_both_sets():
    assert list(music_plot.shared_bins(np.array([2.0, 4.0]), np.array([3.0]))) == [1.5, 2.5, 3.5, 4.5]
    edges = music_plot.shared_bins(np.array([0.1, 0.5]), np.array([0.9]))
    assert len(edges) == music_plot.MAX_BINS + 1 and edges[0] == 0.1 and edges[-1] == 0.9


def test_the_picture_is_a_png_with_the_same_bytes_every_time(tmp_path):
    names = ("notes", "density", "drum_pattern_consistency")
    gen = [{"notes": n, "density": d, "drum_pattern_consistency": None} for n, d in ((3, 1.0), (5, 2.5), (9, 0.5))]
    real = [{"notes": n, "density": d, "drum_pattern_consistency": None} for n, d in ((8, 3.0), (12, 2.0))]
    dist = D.distributions(gen, real, names=names)
    a, b = tmp_path / "a.png", tmp_path / "sub" / "b.png"
    music_plot.write_png(a, gen, real, dist, names)
    music_plot.write_png(b, gen, real, dist, names)
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and a.read_bytes() == b.read_bytes()
    assert b"Software" not in a.read_bytes() and not list(tmp_path.rglob(".*.tmp"))
