"""Finding wrong labels: scores, filters (against cleanlab), metrics (against scikit-learn), noise
estimates, folds, the training record, the kNN vote, every detector on synthetic evidence with
known noise, and the label_issues.csv / predictions.npz files."""
import csv
import io
import math
import multiprocessing
import sys
import zipfile

import numpy as np
import pytest
import torch

from noisylab.detect import (CLEANLAB_FILTERS, DETECTORS, NEEDS_CLEANLAB, Detection, DetectorUnavailable, Evidence,
                             TrainingDynamics, auroc, average_precision, detect_label_issues, detection_metrics,
                             expected_f1_issues, find_label_issues,
                             knn_vote, label_quality_scores, noise_estimates, normalize_rows, paired_f1_difference,
                             precision_recall_curve, run_detector, write_label_issues_csv)
from noisylab.detect.io import EVIDENCE_ARRAYS, evidence_arrays, read_evidence
from noisylab.noise import NoiseError, stratified_folds
from noisylab.run_folder import save_arrays
from helpers import confident_class, expected_f1_flags


@pytest.fixture
def one_process(monkeypatch):
    """cleanlab forks a pool of ``multiprocessing.cpu_count()`` workers when psutil is absent; the
    tests stay on one core (results do not depend on it, cleanlab's docs say)."""
    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: 1)


def dirichlet_rows(rng, alpha):
    """One Dirichlet draw per row of ``alpha [n, C]`` (gamma draws normalised)."""
    g = rng.gamma(alpha)
    return g / g.sum(axis=1, keepdims=True)


def peaked(rng, main, side, c, a=6.0, b=2.0):
    """``[n, C]`` probabilities drawn around ``main`` (strength a) with some mass on ``side`` (b)."""
    n = len(main)
    alpha = np.ones((n, c))
    alpha[np.arange(n), main] += a
    alpha[np.arange(n), side] += b
    return dirichlet_rows(rng, alpha)


# ----------------------------------------------------------------------------- scores
def test_quality_scores_match_hand_formulas():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    y = np.array([0, 1, 1, 0])
    np.testing.assert_allclose(label_quality_scores(y, p), [0.7, 0.3, 0.5, 0.0])  # default: self_confidence
    np.testing.assert_allclose(label_quality_scores(y, p, "self_confidence"), [0.7, 0.3, 0.5, 0.0])
    # (p[y] - max_{k != y} p[k] + 1) / 2: the label's own probability never counts as "the other"
    np.testing.assert_allclose(label_quality_scores(y, p, "normalized_margin"),
                               [(0.7 - 0.2 + 1) / 2, (0.3 - 0.6 + 1) / 2, (0.5 - 0.5 + 1) / 2, (0 - 1 + 1) / 2])
    # unnormalised rows (ELR targets sum to 1 - beta^k) are scored as their normalised version
    t = np.array([[0.35, 0.1, 0.05], [0.0, 0.2, 0.6]])
    np.testing.assert_allclose(label_quality_scores([0, 1], t), [0.7, 0.25])
    np.testing.assert_allclose(label_quality_scores([0, 1], t, "normalized_margin"),
                               [(0.7 - 0.2 + 1) / 2, (0.25 - 0.75 + 1) / 2])
    # p[y] / (p[y] + max_{k != y} p[k]) = sigmoid(log p[y] - max_{k != y} log p[k]); 0 / 0 is a tie
    np.testing.assert_allclose(label_quality_scores(y, p, "relative_confidence"),
                               [0.7 / 0.9, 0.3 / 0.9, 0.5, 0.0])
    np.testing.assert_allclose(label_quality_scores([2], [[0.5, 0.5, 0.0]], "relative_confidence"), [0.0])
    np.testing.assert_allclose(label_quality_scores([2], [[0.0, 0.0, 0.0]], "relative_confidence"), [0.5])  # uniform
    np.testing.assert_allclose(label_quality_scores([0, 1], t, "relative_confidence"), [0.7 / 0.9, 0.25])
    # p[y] alone puts a label that leads every rival clearly (0.35 vs 0.30) below one that nearly
    # ties a rival (0.40 vs 0.38)
    q = np.array([[0.40, 0.38, 0.11, 0.11], [0.35, 0.05, 0.30, 0.30]])
    assert label_quality_scores([0, 0], q).argmin() == 1  # 0.40 > 0.35
    assert label_quality_scores([0, 0], q, "relative_confidence").argmin() == 0  # 0.40 / 0.78 < 0.35 / 0.65
    with pytest.raises(ValueError, match="unknown score method 'entropy'"):
        label_quality_scores(y, p, "entropy")


def test_normalize_rows_scales_targets_and_makes_zero_rows_uniform():
    t = np.array([[0.0, 0.3, 0.1], [0.0, 0.0, 0.0], [2.0, 1.0, 1.0]])
    np.testing.assert_allclose(normalize_rows(t), [[0, 0.75, 0.25], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25]])
    assert normalize_rows(t).dtype == np.float64
    np.testing.assert_allclose(t, [[0.0, 0.3, 0.1], [0.0, 0.0, 0.0], [2.0, 1.0, 1.0]])  # the input is untouched


# ----------------------------------------------------------------------------- filters
def test_core_filters_and_ranking_by_hand():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.45, 0.55], [0.6, 0.4], [0.05, 0.95], [0.3, 0.7]])
    y = np.array([0, 0, 0, 1, 1, 0])
    assert find_label_issues(y, p).tolist() == [False, True, True, True, False, True]  # argmax != label
    assert find_label_issues(y, p).dtype == bool
    # p[y] < threshold, strictly: 0.4 < 0.42, 0.45 is not; 0.3 < 0.42
    assert find_label_issues(y, p, filter_by="low_self_confidence", threshold=0.42).tolist() == \
        [False, True, False, True, False, True]
    assert find_label_issues(y, p, filter_by="low_self_confidence", threshold=0.45).tolist() == \
        [False, True, False, True, False, True]
    assert find_label_issues(y, p, filter_by="low_self_confidence", threshold=0.46).tolist() == \
        [False, True, True, True, False, True]
    # flagged indices, most suspicious first: p[y] = 0.2 (1), 0.3 (5), 0.4 (3), 0.45 (2)
    ranked = find_label_issues(y, p, return_indices_ranked_by="self_confidence")
    assert ranked.tolist() == [1, 5, 3, 2] and ranked.dtype == np.int64
    # normalized margin: (0.2-0.8+1)/2=0.2, (0.3-0.7+1)/2=0.3, (0.4-0.6+1)/2=0.4, (0.45-0.55+1)/2=0.45
    y2 = np.array([0, 0, 0, 0, 1, 0])
    p2 = np.array([[0.9, 0.1], [0.2, 0.8], [0.45, 0.55], [0.1, 0.9], [0.05, 0.95], [0.3, 0.7]])
    # 3 has p[y]=0.1 (margin 0.1), ranked before 1 (0.2)
    assert find_label_issues(y2, p2, return_indices_ranked_by="normalized_margin").tolist() == [3, 1, 5, 2]
    with pytest.raises(ValueError, match="unknown filter_by 'nope'"):
        find_label_issues(y, p, filter_by="nope")


def noisy_problem(seed=0, n=300, c=4, rate=0.25, sharpness=(4.0, 1.5)):
    """Given labels with known symmetric noise and informative probabilities around the true class
    (``sharpness``: ``peaked``'s ``a, b``)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    noisy = rng.random(n) < rate
    given = true.copy()
    given[noisy] = (true[noisy] + rng.integers(1, c, int(noisy.sum()))) % c
    a, b = sharpness
    return true, given, peaked(rng, true, given, c, a=a, b=b)


@pytest.mark.parametrize("filter_by", CLEANLAB_FILTERS)
def test_cleanlab_filters_equal_cleanlab(filter_by, one_process):
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    true, given, probs = noisy_problem()
    expected = cleanlab_filter.find_label_issues(given, probs, filter_by=filter_by, n_jobs=1)
    got = find_label_issues(given, probs, filter_by=filter_by)
    assert got.dtype == bool and np.array_equal(got, expected)
    assert 10 < got.sum() < 200  # a real verdict, not all or nothing
    # rows that do not sum to one (ELR targets: 1 - beta^k, k differing by row) are normalised first
    scale = np.random.default_rng(9).uniform(0.2, 1.0, (len(given), 1))
    assert np.array_equal(find_label_issues(given, scale * probs, filter_by=filter_by), expected)
    # the ranked form: the same set, most suspicious first
    ranked = find_label_issues(given, probs, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    assert sorted(ranked.tolist()) == np.flatnonzero(expected).tolist()
    assert np.all(np.diff(probs[ranked, given[ranked]]) >= 0)


def test_predicted_neq_given_equals_cleanlabs(one_process):
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    _, given, probs = noisy_problem(seed=1)
    assert np.array_equal(find_label_issues(given, probs),
                          cleanlab_filter.find_label_issues(given, probs, filter_by="predicted_neq_given", n_jobs=1))


@pytest.mark.parametrize("rate", [0.05, 0.25, 0.45])
def test_expected_f1_filter_from_its_definition(rate, one_process):
    pytest.importorskip("cleanlab.filter")
    true, given, probs = noisy_problem(seed=3, n=400, rate=rate)
    expected = expected_f1_flags(given, probs)  # tests/helpers.py: the rule written independently
    quality = label_quality_scores(given, probs, "relative_confidence")
    got = find_label_issues(given, probs, filter_by="expected_f1")
    assert np.array_equal(got, expected) and np.array_equal(expected_f1_issues(given, probs, quality), expected)
    assert 0 < got.sum() < len(given)
    # the flags are the lowest-quality examples: a prefix of the ranking label_issues.csv is sorted by
    assert quality[got].max() < quality[~got].min()
    # it ranks by the score it is given: p[y] here
    by_p_y = find_label_issues(given, probs, filter_by="expected_f1", rank_by="self_confidence")
    p_y = probs[np.arange(len(given)), given]
    assert p_y[by_p_y].max() < p_y[~by_p_y].min()
    # nothing confidently belongs elsewhere: nothing is flagged
    clean = np.eye(4)[given] * 0.9 + 0.025
    assert not find_label_issues(given, clean, filter_by="expected_f1").any()


def fitted_problem(rate, seed=0, n=2000, c=4, d=8):
    """In-sample probabilities of a softmax regression fitted to the given labels of overlapping
    Gaussian blobs with symmetric noise at ``rate``: the kind a trained model gives its own data."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    x = rng.normal(size=(c, d))[true] + rng.normal(size=(n, d))
    noisy = rng.random(n) < rate
    given = true.copy()
    given[noisy] = (true[noisy] + rng.integers(1, c, int(noisy.sum()))) % c
    return true, given, LogisticRegression(max_iter=500).fit(x, given).predict_proba(x)


def test_expected_f1_adapts_its_count_to_the_noise(one_process):
    """With 2% wrong labels it flags under half of what ``argmax != label`` flags and beats both
    argmax and cleanlab's per-class count; with 20% and 40% it beats argmax and stays within a few
    points of the per-class count, flagging nearly as many as argmax at 40%."""
    pytest.importorskip("cleanlab.filter")
    for rate, behind_class_count, least_share, most_share in ((0.02, -0.02, 0.0, 0.5), (0.2, 0.03, 0.5, 0.9),
                                                              (0.4, 0.01, 0.8, 1.0)):
        true, given, probs = fitted_problem(rate)
        noisy = given != true
        flags = {fb: find_label_issues(given, probs, filter_by=fb)
                 for fb in ("expected_f1", "predicted_neq_given", "prune_by_class")}
        f1 = {fb: detection_metrics(f, noisy).f1 for fb, f in flags.items()}
        share = flags["expected_f1"].sum() / flags["predicted_neq_given"].sum()
        assert f1["expected_f1"] > f1["predicted_neq_given"], (rate, f1)
        assert f1["expected_f1"] > f1["prune_by_class"] - behind_class_count, (rate, f1)
        assert least_share < share < most_share, (rate, share)
    assert f1["expected_f1"] > 0.8  # 40%: a real detector, not a near miss of two poor ones


def test_missing_cleanlab_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    _, given, probs = noisy_problem(n=40)
    for filter_by in NEEDS_CLEANLAB:
        with pytest.raises(ImportError, match="pip install"):
            find_label_issues(given, probs, filter_by=filter_by)
    # the two filters computed here need no cleanlab
    assert np.array_equal(find_label_issues(given, probs), probs.argmax(1) != given)
    assert np.array_equal(find_label_issues(given, probs, filter_by="low_self_confidence", threshold=0.3),
                          probs[np.arange(40), given] < 0.3)


@pytest.mark.parametrize("labels, probs, fragment", [
    ([0, 1], np.full((3, 2), 0.5), "must match"),
    ([[0, 1]], np.full((2, 2), 0.5), "must match"),
    ([0, 1], np.full(2, 0.5), "must match"),
    ([0, 2], np.full((2, 2), 0.5), r"lie in \[0, 2\)"),
    ([0, -1], np.full((2, 2), 0.5), r"lie in \[0, 2\)"),
    ([0.0, 1.0], np.full((2, 2), 0.5), "integers"),
    ([0, 1], [[np.nan, 1.0], [0.5, 0.5]], "finite"),
    ([0, 1], [[np.inf, 1.0], [0.5, 0.5]], "finite"),
    ([0, 1], [[-0.1, 1.1], [0.5, 0.5]], "non-negative"),
])
def test_bad_inputs_raise_value_error(labels, probs, fragment):
    with pytest.raises(ValueError, match=fragment):
        find_label_issues(np.asarray(labels), np.asarray(probs))
    with pytest.raises(ValueError, match=fragment):
        label_quality_scores(np.asarray(labels), np.asarray(probs))


# ----------------------------------------------------------------------------- metrics
def test_auroc_and_average_precision_equal_sklearn_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for n, share in ((200, 0.3), (57, 0.1), (31, 0.8)):
        pos = rng.random(n) < share
        score = np.round(rng.random(n) + pos * 0.4, 1)  # rounded: many ties, inside and across classes
        assert len(np.unique(score)) < n / 2
        assert auroc(pos, score) == pytest.approx(metrics.roc_auc_score(pos, score), abs=1e-12)
        assert average_precision(pos, score) == pytest.approx(metrics.average_precision_score(pos, score), abs=1e-12)
        # the whole curve, from the highest score down; the last point has recall 1
        precision, recall = precision_recall_curve(pos, score)
        sk_p, sk_r, _ = metrics.precision_recall_curve(pos, score)
        np.testing.assert_allclose(precision, sk_p[:-1][::-1])
        np.testing.assert_allclose(recall, sk_r[:-1][::-1])
        assert recall[-1] == 1.0 and precision[-1] == pytest.approx(pos.mean())
    # every score tied: AUROC 1/2, average precision = the share of positives
    pos = np.array([True, False, False, True, False])
    assert auroc(pos, np.ones(5)) == pytest.approx(0.5)
    assert average_precision(pos, np.ones(5)) == pytest.approx(0.4)
    # a perfect and a reversed ranking
    assert auroc(pos, pos * 1.0) == 1.0 and auroc(pos, pos * -1.0) == 0.0
    assert average_precision(pos, pos * 1.0) == 1.0


def test_ranking_metrics_are_none_when_a_class_is_empty():
    assert auroc(np.zeros(4, bool), np.arange(4.0)) is None
    assert auroc(np.ones(4, bool), np.arange(4.0)) is None
    assert average_precision(np.zeros(4, bool), np.arange(4.0)) is None
    assert average_precision(np.ones(4, bool), np.arange(4.0)) is None
    m = detection_metrics(np.array([True, False]), np.zeros(2, bool), quality=np.array([0.1, 0.9]))
    assert m.auroc is None and m.auprc is None and m.precision_at_noisy is None
    assert (m.num_noisy, m.precision, m.recall, m.f1) == (0, 0.0, 0.0, 0.0)


def test_detection_metrics_by_hand():
    flagged = np.array([True, True, True, True, False, False])
    noisy = np.array([True, False, False, False, True, False])
    m = detection_metrics(flagged, noisy)
    # 1 true positive among 4 flagged and 2 noisy
    assert (m.num_flagged, m.num_noisy) == (4, 2)
    assert m.precision == pytest.approx(0.25) and m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert m.auroc is None and m.precision_at_noisy is None  # no quality, no ranking
    # ranking by 1 - quality: the 2 least-quality rows are 0 (0.1) and 2 (0.2): one of them noisy
    quality = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.8])
    m = detection_metrics(flagged, noisy, quality)
    assert m.precision_at_noisy == pytest.approx(0.5)
    # suspicion 1 - q: noisy rows 0.9 and 0.7 against 0.5, 0.8, 0.1, 0.2 -> pairs won 4 + 3 = 7 of 8
    assert m.auroc == pytest.approx(7 / 8)
    # AP: ranks 0 (P 1), 2, 4 (2/3): (1/2)*1 + (1/2)*(2/3)
    assert m.auprc == pytest.approx(0.5 + 1 / 3)
    assert m.as_dict()["f1"] == pytest.approx(1 / 3) and set(m.as_dict()) >= {"auroc", "auprc", "precision_at_noisy"}
    nothing = detection_metrics(np.zeros(6, bool), noisy)
    assert (nothing.precision, nothing.recall, nothing.f1) == (0.0, 0.0, 0.0)


def test_paired_f1_difference_scores_both_verdicts_on_the_same_draws():
    from noisylab.detect.metrics import _f1_of_draws

    rng = np.random.default_rng(3)
    noisy = rng.random(400) < 0.3
    good = noisy ^ (rng.random(400) < 0.1)  # 10 % of verdicts wrong
    poor = noisy ^ (rng.random(400) < 0.3)
    # one draw's F1 from counts equals the F1 of the drawn examples, computed directly
    idx = rng.integers(0, 400, 400)
    weights = np.bincount(idx, minlength=400)[None].astype(float)
    assert _f1_of_draws(weights, good, noisy)[0] == pytest.approx(detection_metrics(good[idx], noisy[idx]).f1)
    d = paired_f1_difference(good, poor, noisy, draws=400)
    assert d.difference == pytest.approx(detection_metrics(good, noisy).f1 - detection_metrics(poor, noisy).f1)
    assert 0 < d.low < d.difference < d.high and d.share_ahead == 1.0
    # the same seed draws the same examples: swapping the verdicts mirrors everything
    back = paired_f1_difference(poor, good, noisy, draws=400)
    assert (back.difference, back.low, back.high) == pytest.approx((-d.difference, -d.high, -d.low))
    assert back.share_ahead == 0.0
    # pairing: a verdict against itself differs by exactly 0 in every draw
    same = paired_f1_difference(good, good, noisy, draws=50)
    assert (same.difference, same.low, same.high, same.share_ahead) == (0.0, 0.0, 0.0, 0.0)
    # two verdicts one example apart: an interval around a small difference, not a sure win
    near = good.copy()
    near[np.flatnonzero(noisy & good)[0]] = False
    close = paired_f1_difference(good, near, noisy, draws=400)
    assert close.low <= 0.0 < close.difference <= close.high and 0.3 < close.share_ahead < 1.0
    with pytest.raises(ValueError, match="must be"):
        paired_f1_difference(good, poor[:-1], noisy)
    with pytest.raises(ValueError, match="needs examples and draws"):
        paired_f1_difference(good[:0], poor[:0], noisy[:0])


# ----------------------------------------------------------------------------- noise estimates
def test_noise_estimates_by_hand():
    given = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2])
    flagged = np.array([False, True, False, True, False, True, False, True, False])
    suggested = np.array([1, 1, 1, 0, 2, 0, 0, 1, 0])  # row 7 is flagged but suggests its own label
    est = noise_estimates(given, flagged, suggested, num_classes=4)
    # estimated true = suggested where flagged: [0, 1, 1, 0, 2, 0, 0, 1, 2]
    # pairs (true, given): (0,0) (1,0) (1,1) (0,1) (2,2) (0,2) (0,0) (1,1) (2,2)
    assert est["noise_rate_estimate"] == pytest.approx(3 / 9)
    expected = [[2 / 4, 1 / 4, 1 / 4, 0],  # rows: estimated true class, columns: given label
                [1 / 3, 2 / 3, 0, 0],
                [0, 0, 1, 0],
                [0, 0, 0, 1]]  # class 3 is nobody's estimated class: identity row
    np.testing.assert_allclose(est["transition_estimate"], expected)
    np.testing.assert_allclose(np.sum(est["transition_estimate"], axis=1), 1.0)
    np.testing.assert_allclose(est["noise_rate_per_class_estimate"], [2 / 4, 1 / 3, 0.0, 0.0])
    nothing = noise_estimates(given, np.zeros(9, bool), suggested, 4)
    assert nothing["noise_rate_estimate"] == 0.0 and nothing["noise_estimated_by"] == "flags"
    np.testing.assert_allclose(nothing["transition_estimate"], np.eye(4))


def test_noise_estimates_from_the_confident_joint(one_process):
    """With probabilities and cleanlab: the calibrated confident joint, whatever the flags say."""
    pytest.importorskip("cleanlab.count")
    true, given, probs = fitted_problem(0.2)
    c = probs.shape[1]
    # the confident joint from its definition (tests/helpers.py): counts of (given label, confident
    # class) over the counted examples, at least 1 on the diagonal, each row rescaled to its label's
    # count (cleanlab also rounds the cells to integers)
    counted, guess = confident_class(given, probs)
    joint = np.zeros((c, c))
    np.add.at(joint, (given[counted], guess[counted]), 1.0)
    joint[np.diag_indices(c)] = np.maximum(joint.diagonal(), 1)
    joint = joint / joint.sum(1, keepdims=True) * np.bincount(given, minlength=c)[:, None]
    transition = joint.T / joint.T.sum(1, keepdims=True)  # rows: true class
    for flagged in (np.zeros(len(given), bool), np.ones(len(given), bool)):  # the flags do not matter
        est = noise_estimates(given, flagged, probs.argmax(1), c, probs)
        assert est["noise_estimated_by"] == "confident_joint"
        np.testing.assert_allclose(est["transition_estimate"], transition, atol=0.01)
        assert est["noise_rate_estimate"] == pytest.approx(1 - np.trace(joint) / joint.sum(), abs=0.002)
        np.testing.assert_allclose(est["noise_rate_per_class_estimate"], 1 - np.diag(transition), atol=0.01)
    assert abs(est["noise_rate_estimate"] - (given != true).mean()) < 0.03  # and close to the truth here


# ----------------------------------------------------------------------------- folds
@pytest.mark.parametrize("folds", [2, 3, 5, 7])
def test_stratified_folds_partition_balance_and_seed(folds):
    rng = np.random.default_rng(folds)
    labels = np.repeat([0, 2, 5, 6], [7, 50, 45, 1])[rng.permutation(103)]  # uneven classes, gaps in the ids
    parts = stratified_folds(labels, folds, seed=11)
    assert len(parts) == folds
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(103))  # a partition of range(N)
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)  # sorted, no repeats
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    for c in np.unique(labels):
        per_fold = [int((labels[p] == c).sum()) for p in parts]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    again = stratified_folds(labels, folds, seed=11)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = stratified_folds(labels, folds, seed=12)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other))


def test_stratified_folds_refuse_bad_counts():
    with pytest.raises(NoiseError, match="folds must be an integer >= 2"):
        stratified_folds([0, 1, 0, 1], 1)
    with pytest.raises(NoiseError, match="folds must be an integer >= 2"):
        stratified_folds([0, 1, 0, 1], True)
    with pytest.raises(NoiseError, match="5 folds need at least 5 examples, got 4"):
        stratified_folds([0, 1, 0, 1], 5)
    assert [len(p) for p in stratified_folds([0, 1, 0, 1], 4)] == [1, 1, 1, 1]


# ----------------------------------------------------------------------------- training dynamics
def softmax(z):
    e = np.exp(np.asarray(z, dtype=np.float64) - np.max(z, axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_dynamics_sums_counts_and_last_prediction():
    dyn = TrainingDynamics(5, 3, torch.device("cpu"))
    a = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.5]])
    b = np.array([[0.0, 0.0, 3.0], [1.0, 2.0, 0.0]])
    dyn.record_logits(torch.tensor(a), torch.tensor([0, 2]))
    dyn.record_logits(torch.tensor(b), torch.tensor([0, 3]))
    dyn.record_probs(np.array([[0.2, 0.5, 0.3]]), np.array([2]))
    sa, sb = softmax(a), softmax(b)
    expected_sum = np.zeros((5, 3))
    expected_sum[0] = sa[0] + sb[0]
    expected_sum[2] = sa[1] + [0.2, 0.5, 0.3]
    expected_sum[3] = sb[1]
    np.testing.assert_allclose(dyn.prob_sum.numpy(), expected_sum, rtol=1e-6)
    assert dyn.count.tolist() == [2, 0, 2, 1, 0]
    assert dyn.last_pred.tolist() == [2, -1, 1, 1, -1]  # argmax of the latest record; -1 never seen
    mean = dyn.mean_probs()
    assert mean.dtype == np.float64
    np.testing.assert_allclose(mean[[0, 2, 3]], expected_sum[[0, 2, 3]] / np.array([[2], [2], [1]]), rtol=1e-6)
    np.testing.assert_allclose(mean[[1, 4]], 1 / 3)  # never seen: uniform


def test_suspect_fit_by_hand():
    dyn = TrainingDynamics(6, 3, torch.device("cpu"))
    given = np.array([0, 1, 2, 0, 1, 2])
    first = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    latest = np.array([[0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.6, 0.1, 0.3], [0.2, 0.7, 0.1]])
    dyn.record_probs(first, np.arange(5))  # row 5 is never seen (uniform mean, argmax 0 != its label 2)
    dyn.record_probs(latest, np.arange(5))
    # means: 0 [.7,.2,.1] agrees; 1 [.5,.4,.1] suspected, latest 1 = label (fit);
    # 2 [.15,.75,.1] suspected, latest 1 != 2; 3 [.35,.1,.55] suspected, latest 0 = label (fit); 4 agrees
    fit, size = dyn.suspect_fit(given, np.arange(6))
    assert size == 3 and fit == pytest.approx(2 / 3)
    assert dyn.suspect_fit(given, np.array([0, 2, 4])) == (0.0, 1)
    assert dyn.suspect_fit(given, np.array([1, 3])) == (1.0, 2)
    for nothing in (np.array([0, 4]), np.array([5])):  # agreeing rows; a never-seen row
        fit, size = dyn.suspect_fit(given, nothing)
        assert math.isnan(fit) and size == 0


def test_history_is_a_bias_corrected_moving_average_that_stops_at_freeze():
    from noisylab.detect.dynamics import HISTORY_DECAY as d

    dyn = TrainingDynamics(3, 2, torch.device("cpu"))
    p1, p2, p3 = np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]]), np.array([[0.0, 1.0]])
    dyn.record_probs(p1, np.array([0]))
    np.testing.assert_allclose(dyn.history_probs()[0], p1[0], rtol=1e-6)  # one record: itself
    dyn.record_probs(p2, np.array([0]))
    expected = (d * (1 - d) * p1[0] + (1 - d) * p2[0]) / (d * (1 - d) + (1 - d))
    np.testing.assert_allclose(dyn.history_probs()[0], expected, rtol=1e-6)
    dyn.freeze()
    dyn.record_probs(p3, np.array([0]))  # after the alarm: the mean and latest prediction move, the history not
    np.testing.assert_allclose(dyn.history_probs()[0], expected, rtol=1e-6)
    np.testing.assert_allclose(dyn.mean_probs()[0], (p1[0] + p2[0] + p3[0]) / 3, rtol=1e-6)
    assert dyn.last_pred[0] == 1
    np.testing.assert_allclose(dyn.history_probs()[1:], 0.5)  # never seen: uniform
    other = TrainingDynamics(3, 2, torch.device("cpu"))
    other.load_state_dict(dyn.state_dict())
    other.record_probs(p3, np.array([1]))
    np.testing.assert_allclose(other.history_probs()[1], 0.5)  # the frozen flag survives a checkpoint


def test_freeze_goes_back_to_the_last_calm_epoch_and_survives_a_checkpoint():
    from noisylab.detect.dynamics import HISTORY_DECAY as d

    dyn = TrainingDynamics(2, 2, torch.device("cpu"))
    calm, rising = np.array([[0.8, 0.2]]), np.array([[0.1, 0.9]])
    dyn.record_probs(calm, np.array([0]))
    dyn.keep_calm(epoch=0)
    dyn.record_probs(rising, np.array([0]))  # the epoch the rise began: no copy kept
    moved = dyn.history_probs()[0]
    np.testing.assert_allclose(moved, (d * (1 - d) * calm[0] + (1 - d) * rising[0]) / (d * (1 - d) + (1 - d)),
                               rtol=1e-6)
    saved = TrainingDynamics(2, 2, torch.device("cpu"))
    saved.load_state_dict(dyn.state_dict())  # a checkpoint between the copy and the alarm
    for dynamics in (dyn, saved):
        assert dynamics.freeze() == 0  # the alarm: back to epoch 0's average
        np.testing.assert_allclose(dynamics.history_probs()[0], calm[0], rtol=1e-6)
        dynamics.record_probs(rising, np.array([0]))
        np.testing.assert_allclose(dynamics.history_probs()[0], calm[0], rtol=1e-6)
    fresh = TrainingDynamics(2, 2, torch.device("cpu"))
    fresh.record_probs(rising, np.array([1]))
    assert fresh.freeze() is None  # no calm epoch yet: the average stops as it is
    np.testing.assert_allclose(fresh.history_probs()[1], rising[0], rtol=1e-6)


def test_dynamics_state_round_trip():
    dyn = TrainingDynamics(4, 3, torch.device("cpu"))
    dyn.record_logits(torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]]), torch.tensor([1, 3]))
    buf = io.BytesIO()
    torch.save(dyn.state_dict(), buf)
    buf.seek(0)
    other = TrainingDynamics(4, 3, torch.device("cpu"))
    other.load_state_dict(torch.load(buf, weights_only=True))
    np.testing.assert_array_equal(other.mean_probs(), dyn.mean_probs())
    assert other.count.tolist() == [0, 1, 0, 1] and other.last_pred.tolist() == [-1, 2, -1, 1]
    dyn.record_probs(np.array([[1.0, 0.0, 0.0]]), np.array([0]))  # the copy does not follow the original
    assert other.count.tolist() == [0, 1, 0, 1]


# ----------------------------------------------------------------------------- kNN vote
def test_knn_vote_by_hand_with_a_duplicate():
    angles = np.radians([0.0, 0.0, 30.0, 100.0, 180.0])  # rows 0 and 1 are the same point
    features = 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # cosine similarity ignores the length
    given = np.array([0, 1, 2, 0, 1])
    k, tau = 2, 0.5
    votes = knn_vote(features, given, 3, k=k, tau=tau)
    assert votes.shape == (5, 3)
    np.testing.assert_allclose(votes.sum(axis=1), 1.0)
    # row 0: its duplicate (row 1, label 1, s = 1) and row 2 (label 2, s = cos 30) vote; its own label 0 gets nothing
    w1, w2 = 1.0, math.exp((math.cos(math.radians(30)) - 1) / tau)
    np.testing.assert_allclose(votes[0], [0.0, w1 / (w1 + w2), w2 / (w1 + w2)], rtol=1e-5, atol=1e-7)
    # every row from an independent loop: the k most similar other rows (no ties at the k-th place here)
    degrees = np.degrees(angles)
    for i in range(5):
        sims = [(math.cos(math.radians(degrees[i] - degrees[j])), j) for j in range(5) if j != i]
        sims.sort(reverse=True)
        assert sims[k - 1][0] > sims[k][0] + 1e-6
        expect = np.zeros(3)
        for s, j in sims[:k]:
            expect[given[j]] += math.exp((s - 1) / tau)
        np.testing.assert_allclose(votes[i], expect / expect.sum(), rtol=1e-5, atol=1e-7)
    # chunks of queries give the same votes; k larger than the others is cut to n - 1
    np.testing.assert_allclose(knn_vote(features, given, 3, k=k, tau=tau, chunk=2), votes, rtol=1e-6)
    everyone = knn_vote(features, given, 3, k=50, tau=tau)
    np.testing.assert_allclose(everyone.sum(axis=1), 1.0)
    assert np.all(everyone[0] > 0) and everyone[0][0] > 0  # the four others include row 3 (label 0)
    np.testing.assert_allclose(knn_vote(features[:1], given[:1], 3), [[1 / 3] * 3])  # nobody to ask


# ----------------------------------------------------------------------------- detectors
N, C = 600, 4


def synthetic_evidence(seed=0, memorized=0.5):
    """Evidence of a run on N examples with 30% symmetric noise, built from the true labels.

    history, targets and both networks: probabilities around the true class, with some mass on the
    given label; predictions: the same but a share ``memorized`` of the wrong labels fitted (centred
    on the given label), so the run's memorization alarm has stopped the history (``history_frozen``);
    knn: the vote of neighbours in Gaussian blobs around each true class; SOP's ``sop_s``: the
    share of the given label taken away, about 0.9 on the wrong labels and 0 on the right ones.
    A fifth of the rows are held out: their predictions do not depend on their given labels."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, C, N)
    noisy = rng.random(N) < 0.3
    given = true.copy()
    given[noisy] = (true[noisy] + rng.integers(1, C, int(noisy.sum()))) % C
    mem = noisy & (rng.random(N) < memorized)
    features = 3.0 * np.eye(C, 8)[true] + rng.normal(size=(N, 8))
    history = peaked(rng, true, given, C)
    predictions = peaked(rng, np.where(mem, given, true), np.where(mem, true, given), C)
    trained = rng.random(N) < 0.8
    # a held-out row's prediction cannot lean towards a label it never saw: centred on the true class,
    # its side class random (from a generator of its own, so the other arrays stay as they were)
    held = np.flatnonzero(~trained)
    side_rng = np.random.default_rng(seed + 1000)
    predictions[held] = peaked(side_rng, true[held], side_rng.integers(0, C, len(held)), C)
    ev = Evidence(given=given, history=history, predictions=predictions, in_training=trained,
                  targets=0.7 * peaked(rng, true, given, C),  # ELR targets sum to 1 - beta^k
                  networks=(peaked(rng, true, given, C), peaked(rng, true, given, C)),
                  knn=knn_vote(features, given, C), history_frozen=True,
                  signals={"sop_s": np.eye(C)[given] * np.clip(0.9 * noisy + rng.normal(0, 0.15, N), 0, 1)[:, None]})
    return true, ev


def shuffled(ev, seed=5):
    """The same evidence with its rows permuted against the labels: a detector that reads nothing."""
    perm = np.random.default_rng(seed).permutation(len(ev.given))
    return Evidence(given=ev.given, history=ev.history[perm], predictions=ev.predictions[perm],
                    in_training=ev.in_training, targets=ev.targets[perm],
                    networks=(ev.networks[0][perm], ev.networks[1][perm]), knn=ev.knn[perm],
                    history_frozen=ev.history_frozen, signals={k: v[perm] for k, v in ev.signals.items()})


@pytest.fixture(scope="module")
def evidence():
    return synthetic_evidence()


# (F1, AUROC) each detector must beat on this data; one that reads shuffled rows reaches ~0.43 / ~0.5
BOUNDS = {"ensemble": (0.97, 0.99), "history": (0.85, 0.97), "targets": (0.85, 0.97), "agreement": (0.9, 0.98),
          "knn": (0.85, 0.95), "predictions": (0.55, 0.85), "sop": (0.85, 0.97)}


@pytest.mark.parametrize("filter_by", ["predicted_neq_given", "auto"])
@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_finds_the_known_wrong_labels(name, filter_by, evidence):
    pytest.importorskip("cleanlab.filter")  # auto means expected_f1 with it
    assert set(BOUNDS) == set(DETECTORS)
    true, ev = evidence
    found = detect_label_issues(ev, name, filter_by)
    resolved = "expected_f1" if filter_by == "auto" else filter_by  # auto with cleanlab installed
    assert isinstance(found, Detection) and (found.method, found.filter_by) == (name, resolved)
    assert found.probs.shape == (N, C)
    np.testing.assert_allclose(found.probs.sum(axis=1), 1.0)
    p_y = found.probs[np.arange(N), ev.given]
    rival = np.where(np.eye(C, dtype=bool)[ev.given], -1.0, found.probs).max(axis=1)
    np.testing.assert_allclose(found.quality, p_y / (p_y + rival))  # the default rank_by, relative_confidence
    assert found.rank_by == "relative_confidence"
    assert np.array_equal(found.suggested, found.probs.argmax(axis=1))
    if filter_by == "auto":
        assert np.array_equal(found.flagged, expected_f1_flags(ev.given, found.probs))
    else:
        assert np.array_equal(found.flagged, found.suggested != ev.given)
    f1_min, auroc_min = BOUNDS[name]
    m = detection_metrics(found.flagged, ev.given != true, found.quality)
    blind = detect_label_issues(shuffled(ev), name, filter_by)
    b = detection_metrics(blind.flagged, ev.given != true, blind.quality)
    assert m.auroc > auroc_min and b.auroc < min(auroc_min, 0.6), (name, m, b)
    if filter_by == "auto":
        # a wrong label here takes mass from its true class, so fewer of them confidently belong there
        # than there are: the confident joint under-counts them, and auto flags almost only wrong labels
        assert m.precision > 0.9 and b.precision < 0.6, (name, m, b)
        if name != "predictions":  # the memorizing final model hides most wrong labels from any filter
            assert m.recall > 0.45 and m.f1 > b.f1 + 0.15, (name, m, b)
    else:
        assert m.f1 > f1_min and b.f1 < min(f1_min, 0.5), (name, m, b)


def test_history_beats_the_memorizing_final_predictions(evidence):
    true, ev = evidence
    score = {}
    tr = ev.in_training  # the rows a final model can memorize (held-out ones it never saw)
    for name in ("history", "predictions", "ensemble"):
        found = detect_label_issues(ev, name)
        score[name] = detection_metrics(found.flagged[tr], (ev.given != true)[tr], found.quality[tr])
    assert score["history"].f1 > score["predictions"].f1 + 0.15
    assert score["history"].recall > score["predictions"].recall + 0.2
    assert score["ensemble"].auroc >= score["history"].auroc


def test_detector_formulas(evidence):
    _, ev = evidence
    tr = ev.in_training
    hist = ev.history / ev.history.sum(1, keepdims=True)
    targ = ev.targets / ev.targets.sum(1, keepdims=True)
    pred = ev.predictions / ev.predictions.sum(1, keepdims=True)
    np.testing.assert_allclose(run_detector("history", ev), hist)  # the alarm sounded: the history alone
    # no alarm: the final model has not memorized, and joins the history with equal weight
    unfrozen = Evidence(**{**ev.__dict__, "history_frozen": False})
    np.testing.assert_allclose(run_detector("history", unfrozen), (hist + pred) / 2)
    np.testing.assert_allclose(run_detector("predictions", ev), ev.predictions / ev.predictions.sum(1, keepdims=True))
    np.testing.assert_allclose(run_detector("knn", ev), ev.knn)
    # targets: trained rows from the (normalised) targets, held-out rows from the history
    t = run_detector("targets", ev)
    np.testing.assert_allclose(t[tr], targ[tr])
    np.testing.assert_allclose(t[~tr], hist[~tr])
    # agreement: the normalised geometric mean of the two networks; held-out rows from the history
    h1, h2 = (h / h.sum(1, keepdims=True) for h in ev.networks)
    g = np.sqrt(h1 * h2)
    a = run_detector("agreement", ev)
    np.testing.assert_allclose(a[tr], (g / g.sum(1, keepdims=True))[tr])
    np.testing.assert_allclose(a[~tr], hist[~tr])
    # ensemble: the mean of history, targets (held-out rows: history) and kNN
    t_rows = np.where(tr[:, None], targ, hist)
    np.testing.assert_allclose(run_detector("ensemble", ev), (hist + t_rows + ev.knn) / 3)
    # without targets and kNN the ensemble is the history detector alone
    bare = Evidence(given=ev.given, history=ev.history, predictions=ev.predictions, in_training=tr)
    np.testing.assert_allclose(run_detector("ensemble", bare), (hist + pred) / 2)
    # a held-out row is scored from its history even when its targets say otherwise
    held = np.flatnonzero(~tr)[0]
    changed = Evidence(**{**ev.__dict__, "targets": ev.targets.copy()})
    changed.targets[held] = np.eye(C)[(ev.history[held].argmax() + 1) % C]
    assert run_detector("targets", changed)[held].argmax() == ev.history[held].argmax()


def test_the_history_detector_counts_wrong_labels_on_the_history_alone(one_process):
    """No alarm: the history detector ranks by history + final predictions but counts with the
    history alone, because a final model that fitted some wrong labels on its own training images
    hides them from the count (and ``expected_f1`` then flags too few)."""
    pytest.importorskip("cleanlab.filter")
    rng = np.random.default_rng(3)
    n, c = 600, 3
    true = rng.integers(0, c, n)
    wrong = rng.random(n) < 0.3
    given = np.where(wrong, (true + rng.integers(1, c, n)) % c, true)
    history = peaked(rng, true, given, c, a=8.0, b=1.5)  # doubts the wrong labels
    fitted = wrong & (rng.random(n) < 0.5)  # the final model has fitted half of them
    predictions = np.where(fitted[:, None], peaked(rng, given, true, c, a=8.0, b=1.5), peaked(rng, true, given, c))
    ev = Evidence(given=given, history=history, predictions=predictions, in_training=np.ones(n, bool))
    mix = (history / history.sum(1, keepdims=True) + predictions / predictions.sum(1, keepdims=True)) / 2
    for keep_probs in (True, False):  # the in-memory and the chunked paths
        found = detect_label_issues(ev, "history", keep_probs=keep_probs, chunk_entries=c * 128)
        p_y = mix[np.arange(n), given]
        rival = np.where(np.eye(c, dtype=bool)[given], -1.0, mix).max(axis=1)
        np.testing.assert_allclose(found.quality, p_y / (p_y + rival))  # ranked by the mix
        # the confident joint is the history's (rows: given label, columns: confident class)
        counted, guess = confident_class(given, history / history.sum(1, keepdims=True))
        expected = np.zeros((c, c), dtype=np.int64)
        np.add.at(expected, (given[counted], guess[counted]), 1)
        np.testing.assert_array_equal(found.confident_joint, expected)
        assert np.array_equal(found.flagged, expected_f1_flags(given, mix, counted_by=history))
    # cleanlab's filters that take a confident joint get the history's (calibrated, as cleanlab does)
    from cleanlab.count import calibrate_confident_joint
    from cleanlab.filter import find_label_issues as cleanlab_issues

    for name in ("prune_by_class", "prune_by_noise_rate"):
        theirs = cleanlab_issues(given, mix, filter_by=name, n_jobs=1,
                                 confident_joint=calibrate_confident_joint(expected, given))
        assert np.array_equal(detect_label_issues(ev, "history", name, keep_probs=False).flagged, theirs), name
    # counted on the mix, far fewer would be flagged: the fitted half hides from its joint
    on_mix = expected_f1_flags(given, mix)
    assert found.flagged.sum() > on_mix.sum() + 0.25 * fitted.sum()
    assert detection_metrics(found.flagged, wrong, found.quality).f1 > detection_metrics(on_mix, wrong, found.quality).f1
    # a detector without counts_with counts on its own estimate
    own = detect_label_issues(ev, "predictions")
    counted, guess = confident_class(given, predictions / predictions.sum(1, keepdims=True))
    expected = np.zeros((c, c), dtype=np.int64)
    np.add.at(expected, (given[counted], guess[counted]), 1)
    np.testing.assert_array_equal(own.confident_joint, expected)


def test_detectors_without_their_input_say_what_is_missing(evidence):
    _, ev = evidence
    bare = Evidence(given=ev.given, history=ev.history, predictions=ev.predictions, in_training=ev.in_training)
    for name, fragment in (("targets", "loss elr"), ("agreement", "elr_plus"), ("knn", "forward_features")):
        with pytest.raises(DetectorUnavailable, match=fragment):
            detect_label_issues(bare, name)
    assert issubclass(DetectorUnavailable, ValueError)
    for name in ("ensemble", "history", "predictions"):
        assert detect_label_issues(bare, name).probs.shape == (N, C)
    with pytest.raises(ValueError, match="unknown detector 'oracle'"):
        run_detector("oracle", ev)


def test_detect_with_another_filter(evidence):
    _, ev = evidence
    found = detect_label_issues(ev, "history", filter_by="low_self_confidence", threshold=0.3)
    p_y = found.probs[np.arange(N), ev.given]
    assert np.array_equal(found.flagged, p_y < 0.3) and found.filter_by == "low_self_confidence"
    by_p_y = detect_label_issues(ev, "history", "low_self_confidence", threshold=0.3, rank_by="self_confidence")
    np.testing.assert_allclose(by_p_y.quality, p_y)


# ----------------------------------------------------------------------------- files
def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


BASE_COLUMNS = ["index", "given_label", "suggested_label", "quality", "is_label_issue"]


def test_label_issues_csv_columns_and_order(tmp_path):
    given = np.array([0, 1, 1, 0, 1, 2])
    probs = np.array([[0.2, 0.8, 0.0], [0.9, 0.1, 0.0], [0.3, 0.7, 0.0], [0.6, 0.4, 0.0], [0.5, 0.3, 0.2],
                      [0.0, 0.0, 2.0]])  # the last row is unnormalised
    flagged = np.array([True, True, False, False, True, False])
    quality = np.array([0.2, 0.1, 0.7, 0.6, 0.65, 1.0])  # flagged 4 has a higher quality than unflagged 3
    suggested = probs.argmax(axis=1)
    n = write_label_issues_csv(tmp_path / "plain.csv", given, suggested, flagged, quality)
    rows = read_rows(tmp_path / "plain.csv")
    assert n == 6 and list(rows[0]) == BASE_COLUMNS
    # flagged first (qualities 0.1, 0.2, 0.65), then the others by rising quality (0.6, 0.7, 1.0)
    assert [r["index"] for r in rows] == ["1", "0", "4", "3", "2", "5"]
    assert [r["is_label_issue"] for r in rows] == ["1", "1", "1", "0", "0", "0"]
    assert [r["suggested_label"] for r in rows] == ["0", "1", "0", "0", "1", "2"]
    assert rows[0]["quality"] == "0.100000" and rows[1]["given_label"] == "0"

    n = write_label_issues_csv(tmp_path / "all.csv", given, suggested, flagged, quality, indices=np.arange(100, 106),
                               true_labels=np.array([1, 0, 1, 0, 0, 2]), class_names=["a", "b", "c"],
                               paths=[f"img{i}.png" for i in range(6)], in_training=np.array([1, 1, 0, 1, 0, 1], bool))
    rows = read_rows(tmp_path / "all.csv")
    assert list(rows[0]) == BASE_COLUMNS + ["part", "given_name", "suggested_name", "true_label", "is_noisy", "path"]
    assert [r["index"] for r in rows] == ["101", "100", "104", "103", "102", "105"]
    first = rows[0]  # example 1: given 1 (b), suggested 0 (a), truly 0, trained on
    assert (first["given_name"], first["suggested_name"], first["true_label"], first["is_noisy"], first["part"],
            first["path"]) == ("b", "a", "0", "1", "train", "img1.png")
    assert [r["part"] for r in rows] == ["train", "train", "val", "train", "val", "train"]
    assert [r["is_noisy"] for r in rows] == ["1", "1", "1", "0", "0", "0"]

    n = write_label_issues_csv(tmp_path / "flagged.csv", given, suggested, flagged, quality, only_flagged=True)
    assert n == 3 and [r["index"] for r in read_rows(tmp_path / "flagged.csv")] == ["1", "0", "4"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def write_predictions(path, ev, **extra):
    save_arrays(path, **evidence_arrays(ev, np.arange(10, 10 + len(ev.given)), **extra))


def test_evidence_file_round_trip(tmp_path, evidence):
    true, full = evidence
    ev = Evidence(given=full.given[:40], history=full.history[:40], predictions=full.predictions[:40],
                  in_training=full.in_training[:40], targets=full.targets[:40],
                  networks=(full.networks[0][:40], full.networks[1][:40]), knn=full.knn[:40],
                  history_frozen=True)
    write_predictions(tmp_path / "p.npz", ev, true_labels=true[:40], class_names=["a", "b", "c", "d"],
                      paths=[f"f{i}" for i in range(40)])
    arrays, back = read_evidence(tmp_path / "p.npz")
    path_keys = [k for k in arrays if k.endswith("path")]  # the example paths (file datasets)
    assert len(path_keys) == 1 and arrays[path_keys[0]].tolist() == [f"f{i}" for i in range(40)]
    assert set(arrays) == {*EVIDENCE_ARRAYS, "targets", "pred_hist1", "pred_hist2", "knn", "true_label",
                           "class_names", "history_frozen", *path_keys}
    assert back.history_frozen is True
    assert np.array_equal(arrays["index"], np.arange(10, 50)) and np.array_equal(arrays["true_label"], true[:40])
    assert arrays["class_names"].tolist() == ["a", "b", "c", "d"]
    assert back.given.dtype == np.int64 and np.array_equal(back.given, ev.given)
    assert back.in_training.dtype == bool and np.array_equal(back.in_training, ev.in_training)
    for name in ("history", "predictions", "targets", "knn"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ev, name).astype(np.float32), err_msg=name)
    np.testing.assert_array_equal(back.networks[1], ev.networks[1].astype(np.float32))
    # a detector gives the same verdict on the file as on the evidence it came from
    assert np.array_equal(detect_label_issues(back, "ensemble").flagged, detect_label_issues(ev, "ensemble").flagged)

    bare = Evidence(given=ev.given, history=ev.history, predictions=ev.predictions, in_training=ev.in_training)
    write_predictions(tmp_path / "bare.npz", bare)
    arrays, back = read_evidence(tmp_path / "bare.npz")
    assert set(arrays) == {*EVIDENCE_ARRAYS, "history_frozen"} and back.history_frozen is False
    assert back.targets is None and back.networks is None and back.knn is None
    # a file written before the flag existed reads as "no alarm"
    save_arrays(tmp_path / "old.npz", **{k: v for k, v in arrays.items() if k != "history_frozen"})
    assert read_evidence(tmp_path / "old.npz")[1].history_frozen is False


def one_line_value_error(path):
    with pytest.raises(ValueError) as err:
        read_evidence(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_damaged_or_incomplete_evidence_file(tmp_path, evidence):
    _, ev = evidence
    write_predictions(tmp_path / "p.npz", ev)
    raw = (tmp_path / "p.npz").read_bytes()
    for cut in (0, 10, len(raw) // 3, len(raw) // 2, len(raw) - 30, len(raw) - 1):
        (tmp_path / "cut.npz").write_bytes(raw[:cut])
        assert "damaged" in one_line_value_error(tmp_path / "cut.npz")
    np.savez(tmp_path / "old.npz", index=np.arange(3), given_label=np.zeros(3, int), pred_probs=np.ones((3, 2)) / 2)
    message = one_line_value_error(tmp_path / "old.npz")
    assert "lacks in_training, history" in message
    # arrays that do not fit together
    np.savez(tmp_path / "odd.npz", index=np.arange(3), in_training=np.ones(3, bool), given_label=np.zeros(3, int),
             pred_probs=np.ones((3, 2)) / 2, history=np.ones((3, 5)) / 5)
    assert "do not fit together" in one_line_value_error(tmp_path / "odd.npz")


def test_corrupted_compressed_member_is_a_value_error(tmp_path, evidence):
    _, ev = evidence
    write_predictions(tmp_path / "p.npz", ev)
    raw = bytearray((tmp_path / "p.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "p.npz") as z:
        first = z.infolist()[0]
    start = first.header_offset + 30 + int.from_bytes(raw[first.header_offset + 26:first.header_offset + 28], "little") \
        + int.from_bytes(raw[first.header_offset + 28:first.header_offset + 30], "little")
    raw[start] = 0xFF  # deflate block type 11: reserved, so decompressing fails
    (tmp_path / "p.npz").write_bytes(bytes(raw))
    one_line_value_error(tmp_path / "p.npz")


# ----------------------------------------------------------------------------- the held-out check
def test_wilson_interval_solves_its_quadratic():
    """The Wilson interval's ends are the two roots of (p_hat - p)^2 = z^2 p (1 - p) / n."""
    from noisylab.detect.estimate import WILSON_Z, wilson_interval

    z2 = WILSON_Z ** 2
    for k, n in ((0, 10), (3, 300), (24, 299), (150, 300), (300, 300)):
        ph = k / n
        roots = np.sort(np.roots([1 + z2 / n, -(2 * ph + z2 / n), ph * ph]).real)
        np.testing.assert_allclose(wilson_interval(k, n), np.clip(roots, 0, 1), atol=1e-12)
    assert wilson_interval(0, 10)[1] == pytest.approx(z2 / (10 + z2))  # the closed form at k = 0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_held_out_check_reads_the_most_confident_share():
    """Ten held-out rows, the 30% most confident read: rows whose top probability rounds to 1.0
    rank by their second probability; one of the three read disagrees with its label."""
    from noisylab.detect.estimate import held_out_check, wilson_interval

    probs = np.array([[0.6, 0.4], [1.0, 1e-9], [0.9, 0.1], [1.0, 1e-12], [0.8, 0.2],
                      [0.3, 0.7], [1.0, 1e-6], [0.55, 0.45], [0.7, 0.3], [0.2, 0.8]], dtype=np.float32)
    given = np.array([0, 1, 0, 0, 0, 1, 0, 1, 1, 0])
    # the most confident: row 3 (second 1e-12), row 1 (1e-9), row 6 (1e-6); row 1 says 0, its label is 1
    check = held_out_check(given, probs)
    assert (check.checked, check.disagreeing) == (3, 1)
    assert (check.low, check.high) == wilson_interval(1, 3) and check.rate == pytest.approx(1 / 3)
    assert not check.pinned  # 1 of 3: the interval spans far more than a factor of two
    given[6] = 1  # row 6 now disagrees too: 2 of the same 3
    assert held_out_check(given, probs).disagreeing == 2
    assert held_out_check(given[:0], probs[:0]) is None
    # read a few rows at a time (a million rows never make one float64 copy), and rows that do not
    # sum to 1 are normalised first: the same rows are read
    assert held_out_check(given, probs, chunk_rows=3) == held_out_check(given, probs)
    assert held_out_check(given, probs * np.arange(1, 11)[:, None], chunk_rows=4) == held_out_check(given, probs)


def test_held_out_check_is_pinned_only_when_its_interval_is_within_a_factor_of_two():
    from noisylab.detect.estimate import HeldOutCheck, held_out_check, wilson_interval

    rng = np.random.default_rng(0)
    m, wrong = 3000, 0.1
    true = rng.integers(0, 5, m)
    given = np.where(rng.random(m) < wrong, (true + rng.integers(1, 5, m)) % 5, true)
    probs = normalize_rows(np.eye(5)[true] * rng.uniform(5, 50, (m, 1)) + rng.random((m, 5)))  # right, unsure how much
    check = held_out_check(given, probs)
    assert check.checked == 900 and check.pinned and check.holds((given != true).mean())
    assert abs(check.rate - wrong) < 0.03
    assert not HeldOutCheck(300, 2, *wilson_interval(2, 300)).pinned  # 0.7%: between 0.2% and 2.4%
    assert not HeldOutCheck(300, 0, *wilson_interval(0, 300)).pinned
    assert HeldOutCheck(300, 24, *wilson_interval(24, 300)).pinned  # 8.0%: 5.4-11.6%


def test_noise_estimates_follow_a_check_that_refutes_them():
    """Flags say 20% wrong; a held-out check of 5% (4-6.5%) refutes that (20% is more than twice its
    upper end): the off-diagonal counts are scaled to 5% and each given label keeps its count. A
    check of 14% (12-16%) only reads lower, as it does where wrong labels gather on hard images: the
    20% stands, and so it does under a check that holds it."""
    from noisylab.detect.estimate import REFUTING_FACTOR, HeldOutCheck, noise_rate_text

    assert REFUTING_FACTOR == 2.0
    given = np.repeat([0, 1], 10)
    flagged = np.zeros(20, bool)
    flagged[[0, 1, 10, 11]] = True
    suggested = np.where(flagged, 1 - given, given)  # counts (rows true, columns given): [[8, 2], [2, 8]]
    plain = noise_estimates(given, flagged, suggested, 2)
    assert plain["noise_rate_estimate"] == pytest.approx(0.2) and "noise_rate_check" not in plain
    refuting = HeldOutCheck(1000, 50, 0.04, 0.065)
    est = noise_estimates(given, flagged, suggested, 2, check=refuting)
    assert est["noise_estimated_by"] == "held_out_check" and est["noise_rate_estimate"] == pytest.approx(0.05)
    np.testing.assert_allclose(est["transition_estimate"], [[0.95, 0.05], [0.05, 0.95]])  # [[9.5, .5], [.5, 9.5]]
    assert est["noise_rate_check"] == {"checked": 1000, "disagreeing": 50, "rate": 0.05, "low": 0.04, "high": 0.065}
    assert est["noise_rate_pinned"] is True
    assert noise_rate_text(est).startswith("5.0% (the 1000 held-out examples the model is surest of read 4.0-6.5%)")
    for check in (HeldOutCheck(1000, 140, 0.12, 0.16), HeldOutCheck(1000, 190, 0.17, 0.22)):
        kept = noise_estimates(given, flagged, suggested, 2, check=check)
        assert kept["noise_estimated_by"] == "flags" and kept["noise_rate_estimate"] == pytest.approx(0.2)
    bound = noise_estimates(given, flagged, suggested, 2, check=HeldOutCheck(300, 2, 0.002, 0.024))
    assert bound["noise_rate_pinned"] is False and bound["noise_estimated_by"] == "held_out_check"
    # a check that cannot pin its rate gets no factor: a rate above its interval is refuted however
    # close; one that pins its rate keeps the factor of two
    unpinned, pinned = HeldOutCheck(300, 2, 0.002, 0.024), HeldOutCheck(1000, 50, 0.04, 0.065)
    assert not unpinned.pinned and unpinned.refutes(0.025) and not unpinned.refutes(0.024)
    assert pinned.pinned and not pinned.refutes(0.13) and pinned.refutes(0.131)
    assert unpinned.refutes(0.0019) and not unpinned.refutes(0.002)
    assert pinned.refutes(0.0199) and not pinned.refutes(0.02)
    text = noise_rate_text(bound)
    assert text.startswith("below 2.4%: 2 of the 300 held-out examples") and "0.7" not in text
    assert noise_rate_text(plain) == "20.0%"


def test_expected_f1_spends_a_smaller_expected_count_on_the_top_of_the_ranking():
    """P(wrong) along the ranking [1, 1, 1, .5, .5, 0, 0, 0] (the monotone fit of the off-diagonal
    membership below) flags 5 (expected F1 8/9). Told to expect 3.5 wrong labels, P becomes P^2
    ([1, 1, 1, .25, .25]) and the best prefix is 3 (6/6.5 against 7/8.5 for 5)."""
    from noisylab.detect.scores import _power_to_sum, expected_f1_from

    quality = np.linspace(0.1, 0.8, 8)
    off = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    assert expected_f1_from(off, quality).sum() == 5
    assert _power_to_sum(np.array([1, 1, 1, 0.5, 0.5, 0, 0, 0]), 3.5) == pytest.approx(2.0, rel=1e-9)
    assert np.flatnonzero(expected_f1_from(off, quality, expected_wrong=3.5)).tolist() == [0, 1, 2]
    assert expected_f1_from(off, quality, expected_wrong=9.0).sum() == 5  # more than it counts: unchanged


def test_held_out_rows_check_the_rate_and_calm_the_flags():
    """A weak model: on the training rows it confidently gives another class to 30% of the labels
    (its own errors, which look like wrong labels), but on the held-out rows it is surest of it
    agrees with all labels. The check refutes the confident joint's 30%, the estimate follows it,
    and expected_f1 flags far fewer rows."""
    pytest.importorskip("cleanlab.count")
    rng = np.random.default_rng(3)
    n, c, held = 4000, 4, 1000
    given = rng.integers(0, c, n)
    other = (given + rng.integers(1, c, n)) % c
    doubted = rng.random(n) < 0.3
    probs = normalize_rows(np.eye(c)[np.where(doubted, other, given)] * rng.uniform(2, 20, (n, 1)) + rng.random((n, c)))
    in_training = np.arange(n) >= held
    probs[:held] = normalize_rows(np.eye(c)[given[:held]] * 40.0 + rng.random((held, c)))
    probs[:held:4] = normalize_rows(np.eye(c)[other[:held:4]] * 3.0 + 1.0)  # unsure ones that disagree
    ev = Evidence(given=given, history=probs, predictions=probs, in_training=in_training)
    found = detect_label_issues(ev, "predictions")
    assert found.check.checked == 300 and found.check.disagreeing == 0
    summary = noise_estimates(given, found.flagged, found.suggested, c, confident_joint=found.confident_joint,
                              check=found.check)
    assert summary["noise_estimated_by"] == "held_out_check" and summary["noise_rate_pinned"] is False
    no_check = detect_label_issues(Evidence(given=given, history=probs, predictions=probs,
                                            in_training=np.ones(n, bool)), "predictions")
    assert no_check.check is None and no_check.flagged.sum() > 800
    assert found.flagged.sum() < 50
