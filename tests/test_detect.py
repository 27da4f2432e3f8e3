import csv

import numpy as np
import pytest

from noisylab.detect import (auroc, detection_metrics, find_label_issues, label_quality_scores, normalize_rows,
                             write_label_issues_csv)


def test_scores_match_definitions():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.5, 0.0]])
    y = np.array([0, 1, 1])
    np.testing.assert_allclose(label_quality_scores(y, p, "self_confidence"), [0.7, 0.3, 0.5])
    np.testing.assert_allclose(label_quality_scores(y, p, "normalized_margin"),
                               [(0.7 - 0.2 + 1) / 2, (0.3 - 0.6 + 1) / 2, (0.5 - 0.5 + 1) / 2])
    h = lambda r: -sum(v * np.log(v) for v in r if v > 0) / np.log(3)  # noqa: E731
    np.testing.assert_allclose(label_quality_scores(y, p, "confidence_weighted_entropy"),
                               [1 / (1 + h(p[i]) / p[i, y[i]]) for i in range(3)])


def test_filters_and_ranking():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.45, 0.55], [0.6, 0.4], [0.05, 0.95]])
    y = np.array([0, 0, 0, 1, 1])
    assert find_label_issues(y, p).tolist() == [False, True, True, True, False]
    ranked = find_label_issues(y, p, return_indices_ranked_by="self_confidence")
    assert ranked.tolist() == [1, 3, 2]  # p[y] = 0.2, 0.4, 0.45
    assert find_label_issues(y, p, filter_by="low_self_confidence", threshold=0.42).tolist() == \
        [False, True, False, True, False]
    # confident learning: t_0 = mean(p0 | y=0) = (0.9+0.2+0.45)/3, t_1 = mean(p1 | y=1) = (0.4+0.95)/2
    t0, t1 = (0.9 + 0.2 + 0.45) / 3, (0.4 + 0.95) / 2
    expect = []
    for pi, yi in zip(p, y):
        above = [k for k, t in enumerate((t0, t1)) if pi[k] >= t]
        expect.append(bool(above) and max(above, key=lambda k: pi[k]) != yi)
    assert find_label_issues(y, p, filter_by="confident_learning").tolist() == expect


def test_elr_targets_are_normalised_and_zero_rows_uniform():
    t = np.array([[0.0, 0.3], [0.0, 0.0]])
    np.testing.assert_allclose(normalize_rows(t), [[0, 1], [0.5, 0.5]])


def test_bad_inputs():
    with pytest.raises(ValueError, match="must match"):
        find_label_issues(np.array([0, 1]), np.ones((3, 2)) / 2)
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        find_label_issues(np.array([0, 2]), np.ones((2, 2)) / 2)
    with pytest.raises(ValueError, match="finite"):
        find_label_issues(np.array([0, 1]), np.array([[np.nan, 1], [0.5, 0.5]]))


def test_auroc_against_pairwise_definition():
    rng = np.random.default_rng(0)
    pos = rng.random(200) < 0.3
    score = np.round(rng.random(200) + pos * 0.5, 1)  # rounded: many ties
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a in score[pos] for b in score[~pos]]
    assert auroc(pos, score) == pytest.approx(np.mean(pairs))
    assert auroc(np.zeros(3, bool), np.arange(3)) is None


def test_detection_metrics_and_csv(tmp_path):
    flagged = np.array([True, True, False, False, True])
    noisy = np.array([True, False, True, False, True])
    m = detection_metrics(flagged, noisy)
    assert (m.num_flagged, m.num_noisy) == (3, 3)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3) and m.f1 == pytest.approx(2 / 3)
    given = np.array([0, 1, 1, 0, 1])
    probs = np.array([[0.2, 0.8], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.55, 0.45]])
    q = label_quality_scores(given, probs)
    n = write_label_issues_csv(tmp_path / "x.csv", given, probs, flagged, q, indices=np.arange(10, 15),
                               true_labels=np.array([1, 1, 0, 0, 0]), class_names=["a", "b"])
    rows = list(csv.DictReader((tmp_path / "x.csv").open()))
    assert n == 5 and [r["index"] for r in rows] == ["11", "10", "14", "13", "12"]  # flagged first, by quality
    assert rows[0]["suggested_name"] == "a" and rows[0]["is_noisy"] == "0" and rows[1]["is_noisy"] == "1"
