"""The membership attack's statistics: AUC, its bootstrap interval, ROC points, row handling."""

from __future__ import annotations

import numpy as np
import pytest

from teamsrl.evaluate.mia import (
    MIAResult,
    auc_with_interval,
    plot_roc,
    roc_points,
    sample_rows,
    usable_rows,
)


def test_separated_scores_give_an_interval_above_half():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(1.0, 1.0, 60), rng.normal(0.0, 1.0, 60)
    auc, low, high = auc_with_interval(members, nonmembers, n_boot=500, seed=1)
    assert 0.7 < auc < 0.85  # the theoretical AUC of a unit shift is Phi(1/sqrt 2) = 0.76
    assert 0.5 < low < auc < high


def test_same_distribution_gives_an_interval_around_half():
    rng = np.random.default_rng(2)
    auc, low, high = auc_with_interval(rng.normal(size=60), rng.normal(size=60), n_boot=500)
    assert low < 0.5 < high and high - low < 0.4


def test_perfect_and_inverted_attacks():
    assert auc_with_interval([5, 6, 7], [1, 2, 3], n_boot=100) == (1.0, 1.0, 1.0)
    assert auc_with_interval([1, 2, 3], [5, 6, 7], n_boot=100) == (0.0, 0.0, 0.0)


def test_interval_is_reproducible_and_narrows_with_confidence():
    a, b = [0.1, 0.5, 0.9, 0.3, 0.8], [0.2, 0.4, 0.1, 0.6, 0.0]
    assert auc_with_interval(a, b, seed=3) == auc_with_interval(a, b, seed=3)
    _, low95, high95 = auc_with_interval(a, b, confidence=0.95, seed=3)
    _, low80, high80 = auc_with_interval(a, b, confidence=0.8, seed=3)
    assert low95 <= low80 and high80 <= high95


def _sklearn_bootstrap(pos, neg, n_boot, confidence, seed):
    """The percentile interval of roc_auc_score over stratified resamples (members and
    non-members drawn separately with replacement, each keeping its size)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    boots = [roc_auc_score(labels, np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
             for _ in range(n_boot)]
    alpha = (1.0 - confidence) / 2
    return tuple(np.quantile(boots, [alpha, 1.0 - alpha]))


def test_auc_and_bootstrap_interval_match_scikit_learn_on_resampled_rows():
    """`auc_with_interval` itself against scikit-learn, on scores with many ties (where a lost
    tie term would show): the estimate is roc_auc_score's, and the interval is, within
    Monte-Carlo error (about 0.007 here), the one a plain resample-then-roc_auc_score bootstrap
    gives; it holds the estimate and has a width."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(-1, 4, 30).astype(float)
    auc, low, high = auc_with_interval(pos, neg, n_boot=4000, confidence=0.9, seed=11)
    assert auc == roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[pos, neg]) == 0.655
    ref_low, ref_high = _sklearn_bootstrap(pos, neg, 1000, 0.9, seed=12)
    assert low == pytest.approx(ref_low, abs=0.025), (low, ref_low)
    assert high == pytest.approx(ref_high, abs=0.025), (high, ref_high)
    assert low < auc < high and high - low > 0.1


def test_known_intervals_separated_and_identical_scores():
    """Perfectly separated scores: every resample is separated too, [1, 1]; identical scores:
    every pair is a tie, 0.5 with a zero-width interval."""
    assert auc_with_interval([0.9, 0.8, 0.95, 0.7], [0.1, 0.3, 0.2], n_boot=200) == (1.0, 1.0, 1.0)
    assert auc_with_interval([0.4] * 5, [0.4] * 6, n_boot=200) == (0.5, 0.5, 0.5)


def test_too_few_rows_is_a_clear_error():
    with pytest.raises(ValueError, match="1 members and 3 non-members; expected at least 2"):
        auc_with_interval([1.0], [0.0, 1.0, 2.0])


def test_roc_points_run_from_origin_to_corner():
    roc = roc_points([3.0, 2.0], [1.0, 2.5])
    assert roc["fpr"][0] == 0.0 and roc["tpr"][0] == 0.0
    assert roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert roc["fpr"] == sorted(roc["fpr"]) and roc["tpr"] == sorted(roc["tpr"])


def test_unscorable_rows_are_counted_and_sampling_is_seeded():
    rows = [{"instruction": "a", "output": "x"}, {"instruction": "b", "output": "  "},
            {"instruction": "c"}, {"instruction": "d", "output": 3}]
    ok, skipped = usable_rows(rows)
    assert ok == rows[:1] and skipped == 3
    many = [{"instruction": str(i), "output": "o"} for i in range(50)]
    assert sample_rows(many, 10, seed=4) == sample_rows(many, 10, seed=4)
    assert sample_rows(many, 10, seed=4) != sample_rows(many, 10, seed=5)
    assert sample_rows(many, None, seed=4) == many and len(sample_rows(many, 60, 0)) == 50


def test_roc_png_is_drawn(tmp_path):
    import matplotlib.image

    a, b = [0.9, 0.8, 0.4, 0.7], [0.3, 0.5, 0.2, 0.6]
    auc, low, high = auc_with_interval(a, b, n_boot=100)
    result = MIAResult(auc=auc, ci_low=low, ci_high=high, confidence=0.95, n_members=4,
                       n_nonmembers=4, attack="loss", member_loss_mean=1.0,
                       nonmember_loss_mean=2.0, roc=roc_points(a, b))
    path = plot_roc(result, tmp_path / "roc.png")
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 400 and pixels.std() > 0.05


def test_too_few_rows_on_a_side_are_called_not_informative():
    from teamsrl.evaluate.config import MIAConfig
    from teamsrl.evaluate.mia import interval_method, uninformative_note

    assert MIAConfig().min_per_side == 30
    assert uninformative_note(30, 30, 30) == "" and uninformative_note(300, 40, 30) == ""
    note = uninformative_note(51, 6, 30)  # the quickstart's attack: AUC 1.000 [1.000, 1.000]
    assert note.startswith("not informative: 51 members and 6 non-members, fewer than "
                           "evaluate.mia.min_per_side = 30")
    assert uninformative_note(6, 51, 30).startswith("not informative")
    method = interval_method(MIAConfig(bootstrap=500, confidence=0.9))
    assert "members and non-members resampled separately" in method
    assert "500 resamples, 90% interval" in method
