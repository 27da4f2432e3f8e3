"""Embeddings in, issues out: the neighbour graph, SimiFeat's rules, cross-validated probabilities,
``noisylab.find_label_issues``, the scikit-learn estimator and ``noisylab find-issues``."""
import json

import numpy as np
import pytest

from noisylab.detect import neighbours as nb
from noisylab.detect.features import (cross_val_probs, encode_labels, find_issues_in_features,
                                      simifeat_rank_issues, wrong_share_by_given_label)


def blobs(n=600, classes=4, dim=8, noise_rate=0.1, seed=0, spread=3.0):
    """Well separated Gaussian blobs, ``noise_rate`` of the labels moved to the next class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 1, (classes, dim))[y] * spread + rng.normal(0, 1, (n, dim))
    wrong = rng.random(n) < noise_rate
    noisy = np.where(wrong, (y + 1) % classes, y)
    return x.astype(np.float32), noisy, wrong


def brute_force(x, k):
    """Nearest other rows by cosine distance, written out with numpy."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1.0 - unit @ unit.T
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_nearest_neighbours_are_the_exact_cosine_neighbours(backend):
    # faiss is in the test extra: without it the faiss case fails (ImportError), it does not skip
    x = np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32)
    graph = nb.nearest_neighbours(x, k=5, backend=backend, chunk=64)  # several chunks
    want_idx, want_dist = brute_force(x.astype(np.float64), 5)
    assert graph.index.shape == (300, 5) and graph.backend == backend
    assert not (graph.index == np.arange(300)[:, None]).any()
    np.testing.assert_allclose(graph.distance, want_dist, atol=1e-5)
    assert (graph.index == want_idx).mean() > 0.99  # ties of float32 rounding aside


def test_hnsw_search_above_the_exact_limit_finds_most_true_neighbours(monkeypatch):
    monkeypatch.setattr(nb, "EXACT_LIMIT", 100)
    x, _, _ = blobs(n=1500, dim=16, seed=2)
    graph = nb.nearest_neighbours(x, k=10, backend="faiss")
    want, _ = brute_force(x.astype(np.float64), 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(graph.index, want)])
    assert graph.backend == "faiss-hnsw" and recall > 0.9
    assert not (graph.index == np.arange(1500)[:, None]).any()


def test_an_exact_copy_is_a_neighbour_but_a_row_never_its_own():
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    x[7] = x[3]
    for backend in ["torch", "faiss"]:
        graph = nb.nearest_neighbours(x, k=3, backend=backend)
        assert graph.index[3, 0] == 7 and graph.index[7, 0] == 3, backend
        assert graph.distance[3, 0] == pytest.approx(0.0, abs=1e-6)
        dup, score, of = nb.near_duplicates(graph)
        assert set(np.flatnonzero(dup)) == {3, 7} and of[3] == 7 and of[7] == 3 and of[0] == -1
        assert score[3] == pytest.approx(0.0, abs=1e-3) and score[0] > 0.3


def test_neighbour_votes_count_the_neighbours_labels():
    graph = nb.Neighbours(index=np.array([[1, 2], [0, 2], [0, 1]]), distance=np.zeros((3, 2), np.float32),
                          backend="test")
    votes = nb.neighbour_label_votes(graph, np.array([0, 1, 1]), 3)
    np.testing.assert_allclose(votes, [[0, 1, 0], [0.5, 0.5, 0], [0.5, 0.5, 0]])


def test_outliers_lie_past_q3_plus_1_7_iqr_of_the_mean_distances():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5)).astype(np.float32) + 10.0  # one tight cloud far from the origin
    x[0] = -x[0]  # one point on the other side
    graph = nb.nearest_neighbours(x, k=10, backend="torch")
    flagged, score = nb.outliers(graph)
    mean = graph.distance.mean(axis=1)
    q1, q3 = np.percentile(mean, [25, 75])
    assert np.array_equal(flagged, mean > q3 + (1 / 0.37037 - 1) * (q3 - q1))
    assert flagged[0] and score[0] == score.min()


def test_simifeat_rank_flags_the_estimated_count_per_class_lowest_agreement_first():
    votes = np.array([[1.0, 0.0], [0.6, 0.4], [0.2, 0.8], [0.0, 1.0], [0.5, 0.5], [0.9, 0.1]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    flagged = simifeat_rank_issues(votes, labels, np.array([1 / 3, 2 / 3]))
    # class 0: one of three, the one with least agreement (row 2); class 1: two of three (rows 5, 4)
    assert np.flatnonzero(flagged).tolist() == [2, 4, 5]


def test_wrong_share_by_given_label_without_cleanlab_is_the_disagreeing_share(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cleanlab(name, *a, **kw):
        if name.startswith("cleanlab"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_cleanlab)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]])
    np.testing.assert_allclose(wrong_share_by_given_label(np.array([0, 0, 1, 1]), probs, 2), [0.5, 0.0])


def test_cross_val_probs_are_out_of_sample():
    """A 1-nearest-neighbour model is always right in-sample; out of sample, a flipped label in a
    clean blob gets no probability from its own (now held-out) copy."""
    from sklearn.neighbors import KNeighborsClassifier

    x, noisy, wrong = blobs(n=300, noise_rate=0.1, seed=4)
    probs = cross_val_probs(x, noisy, 4, folds=5, estimator=KNeighborsClassifier(n_neighbors=1))
    given_prob = probs[np.arange(300), noisy]
    assert given_prob[wrong].mean() < 0.2 and given_prob[~wrong].mean() > 0.8
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_cross_val_probs_with_a_class_of_one_example_still_gives_every_row():
    x, noisy, _ = blobs(n=60, classes=3, seed=5)
    noisy[0] = 3  # a fourth class with one example: no stratification possible
    probs = cross_val_probs(x, noisy, 4, folds=5)
    assert probs.shape == (60, 4) and probs[0, 3] == 0.0  # never in a training fold with itself
    assert probs.dtype == np.float32  # 4 GB, not 8, at a million rows x 1,000 classes
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_encode_labels_strings_ints_and_mistakes():
    y, names = encode_labels(np.array(["cat", "dog", "cat"]))
    assert y.tolist() == [0, 1, 0] and names == ["cat", "dog"]
    y, names = encode_labels([2, 0, 1], class_names=["a", "b", "c"])
    assert y.tolist() == [2, 0, 1] and names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="not one of the class names"):
        encode_labels(["cat", "emu"], class_names=["cat", "dog"])
    with pytest.raises(ValueError, match=">= 0"):
        encode_labels([-1, 0])


@pytest.mark.parametrize("filter_by", ["auto", "simifeat"])
def test_find_issues_in_features_finds_the_moved_labels(filter_by):
    x, noisy, wrong = blobs(n=800, noise_rate=0.15, seed=6)
    found = find_issues_in_features(x, noisy, filter_by=filter_by)
    caught = (found.is_label_issue & wrong).sum()
    precision, recall = caught / found.num_issues, caught / wrong.sum()
    assert precision > 0.9 and recall > 0.9, (precision, recall)
    assert abs(found.noise_rate_estimate - wrong.mean()) < 0.05
    assert set(found.sources) == {"knn", "logreg"} and found.filter_by == ("expected_f1" if filter_by == "auto"
                                                                          else "simifeat")


def test_nearly_clean_data_gets_a_nearly_clean_answer():
    """Under 1% wrong: the estimate stays under 2% and few correct labels are flagged."""
    x, noisy, wrong = blobs(n=2000, noise_rate=0.005, seed=7)
    found = find_issues_in_features(x, noisy)
    assert found.noise_rate_estimate < 0.02
    assert (found.is_label_issue & ~wrong).sum() <= 10 and (found.is_label_issue & wrong).sum() >= 0.8 * wrong.sum()


def test_result_table_orders_suspects_first_with_names():
    x, noisy, wrong = blobs(n=200, noise_rate=0.1, seed=8)
    names = [f"img_{i}.png" for i in range(200)]
    found = find_issues_in_features(x, noisy, class_names=["a", "b", "c", "d"], names=names)
    frame = found.to_pandas()
    assert len(frame) == 200 and frame["is_label_issue"].iloc[: found.num_issues].all()
    assert not frame["is_label_issue"].iloc[found.num_issues:].any()
    assert frame.index[0] == found.ranked_issues()[0] and frame["name"].iloc[0] == names[frame.index[0]]
    assert set(frame["given_label"]) <= {"a", "b", "c", "d"}
    top = found.summary(top=3)["top_suspects"]
    assert [t["row"] for t in top] == found.ranked_issues()[:3].tolist()
    assert found.summary()["neighbour_backend"] in ("torch", "faiss")  # exact at this size


def test_package_find_label_issues_takes_features_paths_and_cleanlab_form(tmp_path):
    import noisylab
    from noisylab.detect import find_label_issues as cleanlab_form

    x, noisy, wrong = blobs(n=300, seed=9)
    found = noisylab.find_label_issues(x, noisy)
    assert found.is_label_issue.shape == (300,) and (found.is_label_issue & wrong).sum() > 0.8 * wrong.sum()
    np.savez(tmp_path / "emb.npz", x=x, y=noisy)
    again = noisylab.find_label_issues(tmp_path / "emb.npz")
    assert np.array_equal(again.is_label_issue, found.is_label_issue)
    probs = found.probs
    assert np.array_equal(noisylab.find_label_issues(noisy, probs), cleanlab_form(noisy, probs))
    ranked = noisylab.find_label_issues(noisy, pred_probs=probs, return_indices_ranked_by="self_confidence")
    assert np.array_equal(ranked, cleanlab_form(noisy, probs, return_indices_ranked_by="self_confidence"))
    with pytest.raises(ValueError, match="carries its own labels"):
        noisylab.find_label_issues(tmp_path / "emb.npz", noisy)


# ----------------------------------------------------------------------------- scikit-learn
from noisylab.estimator import NoisyLabelClassifier  # noqa: E402

try:
    from sklearn.utils.estimator_checks import parametrize_with_checks
except ImportError:  # pragma: no cover
    parametrize_with_checks = None


@parametrize_with_checks([NoisyLabelClassifier()])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_classifier_in_a_pipeline_and_cross_val_score_with_string_labels():
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, noisy, wrong = blobs(n=400, noise_rate=0.2, seed=10)
    y = np.array(["ant", "bee", "cat", "dog"])[noisy]
    clf = NoisyLabelClassifier().fit(x, y)
    assert list(clf.classes_) == ["ant", "bee", "cat", "dog"]
    caught = clf.label_issues_.is_label_issue & wrong
    assert caught.sum() > 0.8 * wrong.sum()
    assert set(clf.predict(x[:5])) <= set(clf.classes_) and clf.predict_proba(x[:5]).shape == (5, 4)
    scores = cross_val_score(make_pipeline(StandardScaler(), NoisyLabelClassifier()), x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.5  # scored against noisy labels: 80% at best


def test_dropping_the_issues_fits_the_final_model_on_the_rest():
    x, noisy, _ = blobs(n=300, noise_rate=0.2, seed=11)
    kept = NoisyLabelClassifier().fit(x, noisy)
    everything = NoisyLabelClassifier(drop_issues=False).fit(x, noisy)
    n_flagged = kept.label_issues_.num_issues
    assert n_flagged > 0
    # the final logistic regression saw exactly the unflagged rows (its scaler's count says so)
    assert kept.estimator_[0].n_samples_seen_ == 300 - n_flagged
    assert everything.estimator_[0].n_samples_seen_ == 300


# ----------------------------------------------------------------------------- the command
def write_embeddings(tmp_path, n=300, seed=12):
    x, noisy, wrong = blobs(n=n, noise_rate=0.1, seed=seed)
    np.save(tmp_path / "emb.npy", x)
    names = ["ant", "bee", "cat", "dog"]
    (tmp_path / "y.csv").write_text("file,label\n" + "".join(f"img_{i}.jpg,{names[c]}\n" for i, c in enumerate(noisy)))
    return x, noisy, wrong


def test_find_issues_command_on_embeddings(tmp_path, capsys):
    from noisylab.cli import main

    write_embeddings(tmp_path)
    out_dir = tmp_path / "out"
    args = ["find-issues", "--features", str(tmp_path / "emb.npy"), "--labels", str(tmp_path / "y.csv"),
            "-o", str(out_dir), "--top", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["example", "given", "suggested", "score"] and lines[2].startswith("img_")
    assert "noise rate" in out and "near duplicates" in out
    folder = out_dir / "find_issues_emb"
    import csv

    rows = list(csv.DictReader(open(folder / "label_issues.csv")))
    assert len(rows) == 300 and rows[0]["name"] == lines[2].split()[0] and rows[0]["is_label_issue"] == "1"
    assert {"is_near_duplicate", "near_duplicate_of", "is_outlier", "outlier_score"} <= set(rows[0])
    page = (folder / "report.html").read_text()
    assert "Near duplicates and outliers" in page
    assert main(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 300 and len(report["top_suspects"]) == 3
    assert report["files"][0].endswith("label_issues.csv") and "find_issues_emb_2" in report["files"][0]


@pytest.mark.parametrize("args, message", [
    (["--features", "{d}/emb.npy"], "needs --labels"),
    (["--features", "{d}/emb.npy", "--labels", "{d}/short.csv"], "300 rows but labels"),
    (["--features", "{d}/missing.npy", "--labels", "{d}/y.csv"], "not found"),
    (["{d}", "--features", "{d}/emb.npy", "--labels", "{d}/y.csv"], "either DATA"),
    ([], "either DATA"),
    (["{d}/y.csv", "--recipe", "no_such_recipe"], "no_such_recipe"),
])
def test_find_issues_bad_input_is_one_line(tmp_path, capsys, args, message):
    from noisylab.cli import main

    write_embeddings(tmp_path)
    (tmp_path / "short.csv").write_text("0\n1\n")
    assert main(["find-issues", *(a.format(d=tmp_path) for a in args)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_find_issues_trains_on_an_image_folder(tmp_path, capsys):
    """DATA is a folder of class folders: the own-images recipe trains, the table names the files."""
    from PIL import Image

    from noisylab.cli import main

    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    wrong = set()
    for k, name in enumerate(colours):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(30):
            true = list(colours)[(k + 1) % 3] if i < 2 else name
            pixels = np.clip(np.array(colours[true]) + rng.integers(-25, 25, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{name}_{i:02d}.png")
            if true != name:
                wrong.add(f"{name}_{i:02d}.png")
    code = main(["-q", "find-issues", str(tmp_path / "photos"), "-o", str(tmp_path / "runs"),
                 "data.options.image_size=8", "model.arch=mlp", "model.options={hidden: [16]}", "optim.lr=0.01",
                 "train.epochs=8", "train.batch_size=16", "device=cpu", "train.tensorboard=false"])
    out = capsys.readouterr().out
    assert code == 0
    table = out.splitlines()
    assert table[0].split() == ["example", "given", "suggested", "score"]
    shown = {line.split()[0].rsplit("/", 1)[-1] for line in table[2:] if line.split() and ".png" in line.split()[0]}
    assert len(shown & wrong) >= 4  # most of the six wrongly filed images are among the top ten
    folder = tmp_path / "runs" / "find_issues_photos"
    assert (folder / "label_issues.csv").is_file() and (folder / "report.html").is_file()
    assert f"-> {folder / 'report.html'}" in out


def test_the_summary_gives_a_rate_the_check_cannot_pin_as_a_bound_only():
    """2 of 300 held-out examples disagree: the rate is somewhere in 0.2-2.4%, so the summary says
    "below 2.4%" and prints no point estimate; 24 of 300 pin it (5.4-11.6%); without a check (no
    model held anything out) the estimate stands alone."""
    from noisylab.detect.estimate import HeldOutCheck, wilson_interval
    from noisylab.detect.features import LabelIssues

    def issues(estimate, k=None):
        check = None if k is None else HeldOutCheck(300, k, *wilson_interval(k, 300))
        return LabelIssues(labels=np.zeros(4, np.int64), class_names=["a", "b"], probs=np.full((4, 2), 0.5),
                           quality=np.full(4, 0.5), is_label_issue=np.zeros(4, bool), suggested=np.zeros(4, np.int64),
                           noise_rate_estimate=estimate, noise_rate_check=None if check is None else check.as_dict(),
                           noise_rate_pinned=True if check is None else check.pinned)

    bound = issues(2 / 300, 2)
    assert bound.noise_rate_text.startswith("below 2.4%: 2 of the 300 held-out examples")
    assert bound.summary()["noise_rate"] == bound.noise_rate_text and bound.summary()["noise_rate_pinned"] is False
    pinned = issues(0.08, 24)
    assert pinned.noise_rate_text == "8.0% (the 300 held-out examples the model is surest of read 5.4-11.6%)"
    assert issues(0.3).noise_rate_text == "30.0%" and "noise_rate_check" not in issues(0.3).summary()


def test_softmax_regression_fits_scikit_learns_logistic_regression():
    """The large-problem estimator minimises the same objective as scikit-learn's lbfgs (mean
    cross-entropy + ||W||^2 / (2 C N)) on standardised features, so it gives the same probabilities."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from noisylab.detect._softmax_regression import SoftmaxRegression

    x, noisy, _ = blobs(n=600, classes=4, spread=0.8, seed=6)
    x = x * 3 + 5  # off-centre and scaled: the standardisation has work to do
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, noisy).predict_proba(x)
    for C in (1.0, 0.01):  # a strong penalty moves the optimum: the penalty is the same one
        ref = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)).fit(x, noisy).predict_proba(x)
        ours = clone(SoftmaxRegression(C=C)).fit(x, noisy).predict_proba(x)
        assert ours.dtype == np.float32 and ours.shape == (600, 4)
        assert np.abs(ours - ref).max() < 0.02
    assert np.abs(ref - reference).max() > 0.1  # (C = 0.01 is a different model)
    names = np.array(["ant", "bee", "cat", "dog"])
    model = SoftmaxRegression().fit(x, names[noisy])  # any labels: classes_ sorted, predict maps back
    assert model.classes_.tolist() == names.tolist()
    assert (model.predict(x) == names[reference.argmax(axis=1)]).mean() > 0.98
    with pytest.raises(ValueError, match="features"):
        model.predict_proba(x[:, :3])


def test_default_estimator_turns_to_mini_batches_above_the_large_problem_size():
    from noisylab.detect._softmax_regression import SoftmaxRegression
    from noisylab.detect.features import LARGE_PROBLEM, default_estimator

    assert not isinstance(default_estimator(10_000, 10), SoftmaxRegression)
    big = default_estimator(LARGE_PROBLEM // 1000 + 1, 1000, seed=7)
    assert isinstance(big, SoftmaxRegression) and big.random_state == 7


def test_softmax_regression_in_mini_batches_still_fits_the_same_model():
    """Mini-batches of 1,024 of 20,000 rows (the regime of large problems, where no step sees all
    rows): the probabilities stay within a few hundredths of lbfgs's on every row."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from noisylab.detect._softmax_regression import SoftmaxRegression

    x, noisy, _ = blobs(n=20_000, classes=10, dim=16, spread=0.8, noise_rate=0.05, seed=9)
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, noisy).predict_proba(x)
    ours = SoftmaxRegression(batch_size=1024).fit(x, noisy).predict_proba(x)
    assert np.abs(ours - ref).mean() < 0.002 and np.abs(ours - ref).max() < 0.05
    assert (ours.argmax(axis=1) == ref.argmax(axis=1)).mean() > 0.99
