"""Tests for noisylab.noise: each noise kind's defining property, rates within binomial bounds
(z = 4), exact counts, determinism, files, CIFAR-N and bad input.

Real data (CIFAR-10 JPEGs, CIFAR-N labels) is read from the shared data folder next to the
repository and the tests that need it are skipped when it is absent.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noisylab.noise import (
    regenerate,
    KINDS,
    NoiseError,
    NoisyLabels,
    down_sample,
    download_cifar_n,
    load_cifar_n,
    make_noisy_labels,
    split_per_class,
    truncated_normal,
)
from noisylab.noise import _human

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
Z = 4.0


def binomial_ok(count: int, n: int, p: float) -> bool:
    """|count - n p| <= 4 sd of Binomial(n, p)."""
    return abs(count - n * p) <= Z * math.sqrt(n * p * (1.0 - p)) + 1e-9


def shuffled_labels(sizes, seed=0) -> np.ndarray:
    """Labels with ``sizes[c]`` examples of class c, in a fixed random order."""
    y = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.Generator(np.random.PCG64(seed)).permutation(y)


def half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def digest(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<i8").tobytes()).hexdigest()[:16]


def truncnorm_mean_numeric(mu: float, sd: float, m: int = 400_000) -> float:
    """Mean of N(mu, sd^2) restricted to (0, 1) by the midpoint rule (independent of the library)."""
    x = (np.arange(m) + 0.5) / m
    w = np.exp(-0.5 * ((x - mu) / sd) ** 2)
    return float((x * w).sum() / w.sum())


# ---------------------------------------------------------------------------------- basics
def test_kinds_and_error_type():
    assert set(KINDS) == {"none", "symmetric", "asymmetric", "pairflip", "instance", "matrix", "human"}
    assert issubclass(NoiseError, ValueError)


def test_none_leaves_labels_unchanged():
    y = shuffled_labels([30] * 4)
    nl = make_noisy_labels(y, "none", None, 4, 3)
    assert np.array_equal(nl.noisy, y) and nl.noisy is not y
    assert not nl.is_noisy.any() and nl.actual_rate == 0.0
    assert np.array_equal(nl.transition_matrix, np.eye(4))
    assert make_noisy_labels(y, "none", 0, 4).rate == 0.0


def test_golden_outputs_are_stable():
    """Same inputs and seed give these exact labels on every machine (pinned sha256 prefixes)."""
    y = np.arange(1000) % 10
    feats = np.random.Generator(np.random.PCG64(123)).standard_normal((1000, 16))
    got = {
        "symmetric": make_noisy_labels(y, "symmetric", 0.4, 10, 7),
        "symmetric_incl_exact": make_noisy_labels(y, "symmetric", 0.4, 10, 7, include_true=True, exact=True),
        "asymmetric": make_noisy_labels(y, "asymmetric", 0.4, 10, 7),
        "pairflip": make_noisy_labels(y, "pairflip", 0.4, 10, 7),
        "instance": make_noisy_labels(y, "instance", 0.4, 10, 7, inputs=feats),
        "matrix": make_noisy_labels(y, "matrix", None, None, 7, matrix=np.full((10, 10), 0.1)),
    }
    expected = {"symmetric": "2dc0d77b7b123942", "symmetric_incl_exact": "222009bcc963b4e7",
                "asymmetric": "174b855a7f7cac71", "pairflip": "28bdf3ad1dfa17d1",
                "instance": "5f140211b2b6966f", "matrix": "13f41b67148614e5"}
    assert {k: digest(v.noisy) for k, v in got.items()} == expected
    # and a rerun in the same process is identical
    again = make_noisy_labels(y, "instance", 0.4, 10, 7, inputs=feats)
    assert np.array_equal(again.noisy, got["instance"].noisy)


def test_global_numpy_rng_is_neither_used_nor_disturbed():
    y = shuffled_labels([100] * 10)
    np.random.seed(1)
    a = make_noisy_labels(y, "symmetric", 0.3, 10, 5)
    after_a = np.random.random()
    np.random.seed(2)
    b = make_noisy_labels(y, "symmetric", 0.3, 10, 5)
    np.random.seed(1)
    np.random.random()  # the value make_noisy_labels would have shifted if it drew from the global RNG
    assert np.array_equal(a.noisy, b.noisy)
    np.random.seed(1)
    assert np.random.random() == after_a


# ---------------------------------------------------------------------------------- symmetric
@pytest.mark.parametrize("C", [2, 10, 100])
@pytest.mark.parametrize("rate", [0.1, 0.4, 0.8])
def test_symmetric_rate_within_binomial_bounds(C, rate):
    y = shuffled_labels([2000 // C + (c < 2000 % C) for c in range(C)], seed=C)
    for seed in range(10):
        nl = make_noisy_labels(y, "symmetric", rate, C, seed)
        assert binomial_ok(nl.num_noisy, len(y), rate), (seed, nl.num_noisy)
        assert np.array_equal(nl.is_noisy, nl.noisy != y)
        assert nl.noisy.dtype == np.int64 and nl.noisy.min() >= 0 and nl.noisy.max() < C
        assert nl.expected_rate == pytest.approx(rate)


def test_symmetric_excluding_true_class_is_uniform_over_the_other_classes():
    C, n_per, rate = 5, 4000, 0.5
    y = shuffled_labels([n_per] * C)
    nl = make_noisy_labels(y, "symmetric", rate, C, 11)
    counts = nl.transition_counts
    for t in range(C):
        flipped = n_per - counts[t, t]
        assert binomial_ok(flipped, n_per, rate)
        for j in range(C):
            if j != t:
                assert binomial_ok(counts[t, j], flipped, 1.0 / (C - 1)), (t, j, counts[t])


def test_symmetric_include_true_draws_from_all_classes():
    """ELR/DivideMix convention: P(noisy=j | y) = r/C for j != y and 1 - r + r/C for j = y."""
    C, n_per, rate = 4, 5000, 0.6
    y = shuffled_labels([n_per] * C)
    nl = make_noisy_labels(y, "symmetric", rate, C, 2, include_true=True)
    counts = nl.transition_counts
    for t in range(C):
        for j in range(C):
            p = 1 - rate + rate / C if j == t else rate / C
            assert binomial_ok(counts[t, j], n_per, p), (t, j, counts[t])
    assert nl.expected_rate == pytest.approx(rate * (C - 1) / C)
    # actual rate ~ r (C-1)/C, e.g. 80 % nominal -> ~72 % on 10 classes, and ~r/2 with 2 classes
    y10 = shuffled_labels([500] * 10)
    for seed in range(10):
        assert binomial_ok(make_noisy_labels(y10, "symmetric", 0.8, 10, seed, include_true=True).num_noisy,
                           5000, 0.72)
        two = make_noisy_labels(y10 % 2, "symmetric", 0.9, 2, seed, include_true=True)
        assert binomial_ok(two.num_noisy, 5000, 0.45)


@pytest.mark.parametrize("N", [5, 7, 99, 1000, 4321])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.5, 0.9])
def test_symmetric_exact_flips_exactly_round_rN(N, rate):
    y = np.arange(N) % 3
    for seed in range(3):
        nl = make_noisy_labels(y, "symmetric", rate, 3, seed, exact=True)
        assert nl.num_noisy == half_up(rate * N)
        assert nl.expected_rate == pytest.approx(half_up(rate * N) / N)
    # with include_true, exactly round(rN) are redrawn; each keeps its label with probability 1/C
    y = np.arange(3000) % 10
    for seed in range(5):
        nl = make_noisy_labels(y, "symmetric", 0.5, 10, seed, include_true=True, exact=True)
        assert nl.num_noisy <= 1500 and binomial_ok(nl.num_noisy, 1500, 0.9)


def test_same_seed_nests_lower_rates_inside_higher_rates():
    y = shuffled_labels([300] * 10)
    for kind, extra in [("symmetric", {}), ("symmetric", {"exact": True}), ("pairflip", {}),
                        ("asymmetric", {}), ("asymmetric", {"exact": False})]:
        low = make_noisy_labels(y, kind, 0.2, 10, 9, **extra)
        high = make_noisy_labels(y, kind, 0.4, 10, 9, **extra)
        assert low.num_noisy < high.num_noisy
        assert not (low.is_noisy & ~high.is_noisy).any(), kind
        assert np.array_equal(low.noisy[low.is_noisy], high.noisy[low.is_noisy]), kind


def test_different_seeds_give_different_noise():
    y = shuffled_labels([200] * 10)
    a = make_noisy_labels(y, "symmetric", 0.4, 10, 0)
    b = make_noisy_labels(y, "symmetric", 0.4, 10, 1)
    assert not np.array_equal(a.noisy, b.noisy)
    # overlap of two independent 40 % selections is ~16 %, far from identical
    assert binomial_ok(int((a.is_noisy & b.is_noisy).sum()), len(y), 0.16)


# ---------------------------------------------------------------------------------- asymmetric CIFAR-10
CIFAR10_FLIPS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}  # truck->automobile, bird->airplane, deer->horse, cat<->dog


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.4, 0.45])
def test_asymmetric_cifar10_exact_share_per_source_class(rate):
    sizes = [300 + 37 * c for c in range(10)]
    y = shuffled_labels(sizes, seed=4)
    expected = np.diag(sizes).astype(np.int64)
    for s, t in CIFAR10_FLIPS.items():
        k = half_up(rate * sizes[s])
        expected[s, s] -= k
        expected[s, t] += k
    for seed in range(4):
        nl = make_noisy_labels(y, "asymmetric", rate, 10, seed)
        assert np.array_equal(nl.transition_counts, expected)
        assert nl.options == {"dataset": "cifar10", "exact": True, "compat": None}
        assert nl.expected_rate * len(y) == pytest.approx(len(y) - np.trace(expected))


def test_asymmetric_cifar10_bernoulli_option():
    y = shuffled_labels([1000] * 10)
    nl = make_noisy_labels(y, "asymmetric", 0.4, 10, 3, exact=False)
    counts = nl.transition_counts
    allowed = np.eye(10, dtype=bool)
    for s, t in CIFAR10_FLIPS.items():
        allowed[s, t] = True
        assert binomial_ok(counts[s, t], 1000, 0.4)
    assert (counts[~allowed] == 0).all()
    assert nl.expected_rate == pytest.approx(0.4 * 5 / 10)


def test_asymmetric_cifar10_compat_elr_flips_in_place():
    """ELR processes classes 0..9 on the current labels: the dog pool includes cats already
    turned into dogs, so (dogs->cat) - (cats->dog) = ceil(r (n_dog + k_cat)) - k_cat, and the
    cats drawn from that pool are flipped back."""
    sizes = [500] * 10
    sizes[3], sizes[5] = 800, 600
    y = shuffled_labels(sizes, seed=8)
    rate = 0.35
    k_cat = math.ceil(rate * 800)
    k_dog_pool = math.ceil(rate * (600 + k_cat))
    reverted_total = 0
    for seed in range(20):
        nl = make_noisy_labels(y, "asymmetric", rate, 10, seed, compat="elr")
        c = nl.transition_counts
        assert c[5, 3] - c[3, 5] == k_dog_pool - k_cat
        reverted = k_cat - c[3, 5]  # cats sent to dog and back to cat
        assert 0 <= reverted <= k_cat
        reverted_total += reverted
        for s, t in ((9, 1), (2, 0), (4, 7)):
            assert c[s, t] == math.ceil(rate * 500)
        # some cats are flipped twice, so fewer than `rate` of them stay dogs (ELR issue #16)
        assert c[3, 5] / 800 < rate - 0.05
        assert nl.expected_rate is None and nl.options["compat"] == "elr"
    # on average k_dog_pool * k_cat / (600 + k_cat) cats are flipped back per run
    mean_reverted = reverted_total / 20
    expected_reverted = k_dog_pool * k_cat / (600 + k_cat)
    assert abs(mean_reverted - expected_reverted) < 0.15 * expected_reverted


# ---------------------------------------------------------------------------------- asymmetric CIFAR-100
def _block_next(c: int) -> int:
    return c + 1 if (c + 1) % 5 else c - 4


def test_asymmetric_cifar100_blocks_structure_and_rate():
    y = shuffled_labels([100] * 100, seed=1)
    rate = 0.4
    nl = make_noisy_labels(y, "asymmetric", rate, 100, 5)
    counts = nl.transition_counts
    allowed = np.eye(100, dtype=bool)
    for c in range(100):
        allowed[c, _block_next(c)] = True
        assert binomial_ok(counts[c, _block_next(c)], 100, rate)
    assert (counts[~allowed] == 0).all()
    assert binomial_ok(nl.num_noisy, len(y), rate)
    assert nl.options == {"dataset": "cifar100", "superclass": "blocks", "exact": False, "compat": None}
    assert np.allclose(nl.transition_matrix.sum(axis=1), 1.0)
    exact = make_noisy_labels(y, "asymmetric", rate, 100, 5, exact=True)
    assert all(exact.transition_counts[c, _block_next(c)] == 40 for c in range(100))
    elr = make_noisy_labels(y, "asymmetric", rate, 100, 5, compat="elr")
    assert np.array_equal(elr.noisy, nl.noisy)


def _group_next_table(coarse_of_class: np.ndarray) -> np.ndarray:
    nxt = np.arange(len(coarse_of_class))
    for g in set(coarse_of_class.tolist()):
        members = sorted(np.flatnonzero(coarse_of_class == g).tolist())
        for i, m in enumerate(members):
            nxt[m] = members[(i + 1) % len(members)]
    return nxt


def test_asymmetric_cifar100_real_superclass_option():
    rng = np.random.Generator(np.random.PCG64(3))
    coarse_of_class = np.empty(100, dtype=np.int64)
    coarse_of_class[rng.permutation(100)] = np.repeat(np.arange(20), 5)
    nxt = _group_next_table(coarse_of_class)
    y = shuffled_labels([60] * 100, seed=2)
    nl = make_noisy_labels(y, "asymmetric", 0.5, 100, 1, superclass="coarse", coarse_labels=coarse_of_class[y],
                           exact=True)
    counts = nl.transition_counts
    for c in range(100):
        assert counts[c, nxt[c]] == 30 and counts[c, c] == 30
    assert nl.options["coarse_of_class"] == coarse_of_class.tolist()
    # changed labels stay within the superclass
    assert np.array_equal(coarse_of_class[nl.noisy], coarse_of_class[y])
    # the stored spec regenerates the same labels without the per-example array, or with it
    assert np.array_equal(regenerate(nl).noisy, nl.noisy)
    assert np.array_equal(regenerate(nl, coarse_labels=coarse_of_class[y]).noisy, nl.noisy)
    with pytest.raises(NoiseError, match="disagree"):
        regenerate(nl, coarse_labels=(coarse_of_class[y] + 1) % 20)


@pytest.mark.skipif(not (SHARED / "cifar100n_labels.npz").is_file(), reason="shared CIFAR-100N labels absent")
def test_asymmetric_cifar100_on_real_superclasses():
    d = np.load(SHARED / "cifar100n_labels.npz")
    fine, coarse = d["clean_label"], d["clean_coarse_label"]
    table = np.zeros(100, dtype=np.int64)
    table[fine] = coarse
    real = make_noisy_labels(fine, "asymmetric", 0.4, 100, 0, superclass="coarse", coarse_labels=coarse)
    assert np.array_equal(table[real.noisy], coarse)  # never leaves the true superclass
    assert binomial_ok(real.num_noisy, len(fine), 0.4)
    blocks = make_noisy_labels(fine, "asymmetric", 0.4, 100, 0)
    leaves = table[blocks.noisy[blocks.is_noisy]] != coarse[blocks.is_noisy]
    assert leaves.mean() > 0.5  # index blocks are mostly not superclasses (alphabetical fine labels)


def test_inconsistent_or_missing_coarse_labels_are_rejected():
    y = shuffled_labels([10] * 100)
    coarse = y // 5
    coarse_bad = coarse.copy()
    coarse_bad[np.flatnonzero(y == 7)[0]] = 19
    with pytest.raises(NoiseError, match="class 7 have superclasses"):
        make_noisy_labels(y, "asymmetric", 0.3, 100, 0, superclass="coarse", coarse_labels=coarse_bad)
    with pytest.raises(NoiseError, match="coarse_labels="):
        make_noisy_labels(y, "asymmetric", 0.3, 100, 0, superclass="coarse")
    with pytest.raises(NoiseError, match="one coarse label per example"):
        make_noisy_labels(y, "asymmetric", 0.3, 100, 0, superclass="coarse", coarse_labels=coarse[:-1])


def test_asymmetric_custom_mapping_and_bad_class_count():
    y = shuffled_labels([100] * 7)
    nl = make_noisy_labels(y, "asymmetric", 0.3, 7, 0, mapping={0: 6, 2: 3})
    expected = np.diag([100] * 7)
    expected[0, 0], expected[0, 6], expected[2, 2], expected[2, 3] = 70, 30, 70, 30
    assert np.array_equal(nl.transition_counts, expected)
    assert nl.options["mapping"] == [6, 1, 3, 3, 4, 5, 6]
    with pytest.raises(NoiseError, match="mapping="):
        make_noisy_labels(y, "asymmetric", 0.3, 7, 0)
    with pytest.raises(NoiseError, match="needs 10 classes"):
        make_noisy_labels(y, "asymmetric", 0.3, 7, 0, dataset="cifar10")


# ---------------------------------------------------------------------------------- pairflip
def test_pairflip_moves_only_to_the_next_class():
    C = 6
    y = shuffled_labels([1500] * C)
    rate = 0.45
    nl = make_noisy_labels(y, "pairflip", rate, C, 4)
    counts = nl.transition_counts
    for i in range(C):
        j = (i + 1) % C
        assert counts[i, i] + counts[i, j] == 1500
        assert binomial_ok(counts[i, j], 1500, rate)
    exact = make_noisy_labels(y, "pairflip", 0.3, C, 4, exact=True)
    expected = np.diag([1050] * C)
    for i in range(C):
        expected[i, (i + 1) % C] = 450
    assert np.array_equal(exact.transition_counts, expected)


# ---------------------------------------------------------------------------------- instance-dependent
def _features(n, d=24, seed=0):
    return np.random.Generator(np.random.PCG64(seed)).standard_normal((n, d))


def test_truncated_normal_sampler():
    for mu in (0.0, 0.2, 0.4, 0.95):
        q = truncated_normal(np.random.Generator(np.random.PCG64(1)), mu, 0.1, 200_000)
        assert q.shape == (200_000,) and q.min() > 0.0 and q.max() < 1.0
        exact_mean = truncnorm_mean_numeric(mu, 0.1)
        sd = q.std()
        assert abs(q.mean() - exact_mean) < Z * sd / math.sqrt(len(q))


@pytest.mark.parametrize("variant", ["xia", "shared"])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5])
def test_instance_rate_matches_truncated_normal_mean(variant, rate):
    y = shuffled_labels([300] * 10, seed=5)
    x = _features(len(y))
    expected = truncnorm_mean_numeric(rate, 0.1)
    for seed in range(6):
        nl = make_noisy_labels(y, "instance", rate, 10, seed, inputs=x, variant=variant)
        assert binomial_ok(nl.num_noisy, len(y), expected), (seed, nl.actual_rate, expected)
        assert nl.expected_rate == pytest.approx(expected, abs=1e-6)
    assert set(nl.options) == {"variant", "std", "inputs_sha256"}
    json.dumps(nl.options)


def test_instance_wrong_label_follows_the_image():
    """Reordering the inputs (with their labels) keeps each image's wrong label: the target
    class is a function of the image, far above the agreement of class-conditional noise."""
    y = shuffled_labels([400] * 10, seed=6)
    x = _features(len(y), d=256, seed=6)  # image-like dimension: the softmax is nearly one-hot
    perm = np.random.Generator(np.random.PCG64(1)).permutation(len(y))
    for variant in ("xia", "shared"):
        a = make_noisy_labels(y, "instance", 0.4, 10, 0, inputs=x, variant=variant)
        b = make_noisy_labels(y[perm], "instance", 0.4, 10, 0, inputs=x[perm], variant=variant)
        both = a.is_noisy[perm] & b.is_noisy
        agree = np.mean(a.noisy[perm][both] == b.noisy[both])
        off = a.transition_counts.astype(float)
        np.fill_diagonal(off, 0)
        p = off / off.sum(axis=1, keepdims=True)
        chance = np.mean((p ** 2).sum(axis=1)[y[perm][both]])
        assert both.sum() > 300 and agree > 0.85 and agree > chance + 0.5, (variant, agree, chance)


def test_instance_variants_differ_in_projection_sharing():
    """'shared' uses one projection for all classes: the same image under two true classes
    goes to the same wrong class (unless that is one of the two); 'xia' uses one per class."""
    n = 3000
    x1 = _features(n, d=256, seed=9)
    y1 = np.arange(n) % 10
    y2 = (y1 + 3) % 10
    x, y = np.concatenate([x1, x1]), np.concatenate([y1, y2])
    rates = {}
    for variant in ("xia", "shared"):
        nl = make_noisy_labels(y, "instance", 0.5, 10, 2, inputs=x, variant=variant)
        both = nl.is_noisy[:n] & nl.is_noisy[n:]
        a, b = nl.noisy[:n][both], nl.noisy[n:][both]
        usable = (a != y2[both]) & (b != y1[both])  # neither copy's choice was masked for the other
        rates[variant] = np.mean(a[usable] == b[usable])
    assert rates["shared"] > 0.85 and rates["xia"] < 0.3, rates


def test_instance_inputs_are_checked():
    y = shuffled_labels([50] * 4)
    x = np.random.Generator(np.random.PCG64(0)).integers(0, 256, (200, 3, 4, 4), dtype=np.uint8)
    nl = make_noisy_labels(y, "instance", 0.3, 4, 0, inputs=x)
    assert np.array_equal(regenerate(nl, inputs=x).noisy, nl.noisy)
    other = x.copy()
    other[0, 0, 0, 0] ^= 1
    with pytest.raises(NoiseError, match="inputs_sha256"):
        regenerate(nl, inputs=other)
    with pytest.raises(NoiseError, match="needs the inputs"):
        make_noisy_labels(y, "instance", 0.3, 4, 0)
    with pytest.raises(NoiseError, match="one row per label"):
        make_noisy_labels(y, "instance", 0.3, 4, 0, inputs=x[:-1])
    with pytest.raises(NoiseError, match="uint8 images or floating"):
        make_noisy_labels(y, "instance", 0.3, 4, 0, inputs=x.astype(np.int32))
    with pytest.raises(NoiseError, match="variant"):
        make_noisy_labels(y, "instance", 0.3, 4, 0, inputs=x, variant="part")
    # uint8 images are scaled by 1/255 (like ToTensor): same labels as the float copy in [0, 1]
    scaled = make_noisy_labels(y, "instance", 0.3, 4, 0, inputs=x.astype(np.float64) / 255.0)
    assert np.array_equal(scaled.noisy, nl.noisy)


def _decode_first_cifar10(n: int):
    from PIL import Image

    d = np.load(SHARED / "cifar10_jpeg.npz")
    buf, off = d["train_jpeg"], d["train_offsets"]
    x = np.stack([np.asarray(Image.open(io.BytesIO(buf[off[i]:off[i + 1]].tobytes())).convert("RGB"))
                  for i in range(n)])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), d["y_train"][:n]  # CHW like DataBundle/ToTensor


@pytest.mark.skipif(not (SHARED / "cifar10_jpeg.npz").is_file(), reason="shared CIFAR-10 JPEG copy absent")
def test_instance_noise_on_real_cifar10_images():
    x, y = _decode_first_cifar10(5000)
    perm = np.random.Generator(np.random.PCG64(1)).permutation(len(y))
    for variant in ("xia", "shared"):
        for rate in (0.2, 0.4):
            nl = make_noisy_labels(y, "instance", rate, 10, 0, inputs=x, variant=variant)
            assert abs(nl.actual_rate - rate) <= 0.02, (variant, rate, nl.actual_rate)
            # the wrong label depends on the image: reordering the images keeps it
            other = make_noisy_labels(y[perm], "instance", rate, 10, 0, inputs=x[perm], variant=variant)
            both = nl.is_noisy[perm] & other.is_noisy
            assert np.mean(nl.noisy[perm][both] == other.noisy[both]) > 0.9
            if variant == "xia":  # images of one class go to several different wrong classes
                targets = [len(np.unique(nl.noisy[nl.is_noisy & (y == c)])) for c in range(10)]
                assert min(targets) >= 2, targets


# ---------------------------------------------------------------------------------- matrix
def test_matrix_noise_follows_the_given_rows():
    T = np.array([[0.7, 0.2, 0.1, 0.0],
                  [0.0, 0.5, 0.5, 0.0],
                  [0.25, 0.25, 0.25, 0.25],
                  [0.0, 0.0, 0.0, 1.0]])
    y = shuffled_labels([4000] * 4)
    nl = make_noisy_labels(y, "matrix", None, None, 3, matrix=T)
    counts = nl.transition_counts
    for i in range(4):
        for j in range(4):
            assert binomial_ok(counts[i, j], 4000, T[i, j]), (i, j)
    assert nl.num_classes == 4
    assert nl.expected_rate == pytest.approx((0.3 + 0.5 + 0.75 + 0.0) / 4)
    assert nl.options["matrix"] == T.tolist()


def test_matrix_exact_uses_largest_remainder_counts():
    T = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    y = shuffled_labels([7, 20, 5])
    nl = make_noisy_labels(y, "matrix", None, 3, 0, matrix=T, exact=True)
    # row 0: quotas 3.5, 1.75, 1.75 -> floors 3, 1, 1 and the two largest remainders get +1
    assert np.array_equal(nl.transition_counts, [[3, 2, 2], [2, 16, 2], [0, 0, 5]])


@pytest.mark.parametrize("bad, message", [
    ([[0.9, 0.2], [0.0, 1.0]], "row 0 of the transition matrix sums to 1.1"),
    ([[1.0, 0.0], [0.3, 0.6]], "row 1 of the transition matrix sums to 0.9"),
    ([[1.2, -0.2], [0.0, 1.0]], "negative"),
    ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "square"),
    ([[np.nan, 1.0], [0.0, 1.0]], "NaN"),
])
def test_matrix_validation(bad, message):
    with pytest.raises(NoiseError, match=message):
        make_noisy_labels([0, 1, 1, 0], "matrix", None, None, 0, matrix=bad)


def test_matrix_class_count_must_agree():
    with pytest.raises(NoiseError, match="num_classes=3"):
        make_noisy_labels([0, 1], "matrix", None, 3, 0, matrix=np.eye(2))
    with pytest.raises(NoiseError, match=r"outside \[0, 2\)"):
        make_noisy_labels([0, 2], "matrix", None, None, 0, matrix=np.eye(2))
    with pytest.raises(NoiseError, match="takes no rate"):
        make_noisy_labels([0, 1], "matrix", 0.2, None, 0, matrix=np.eye(2))


# ---------------------------------------------------------------------------------- human (CIFAR-N)
def _fake_cifar10n(n=200, seed=0) -> dict:
    rng = np.random.Generator(np.random.PCG64(seed))
    clean = rng.integers(0, 10, n)
    out = {"clean_label": clean}
    for i, key in enumerate(["aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"]):
        noisy = clean.copy()
        flip = rng.random(n) < 0.1 * (i + 1)
        noisy[flip] = rng.integers(0, 10, int(flip.sum()))
        out[key] = noisy
    return out


def _fake_cifar100n(n=300, seed=0) -> dict:
    rng = np.random.Generator(np.random.PCG64(seed))
    clean = rng.integers(0, 100, n)
    noisy = np.where(rng.random(n) < 0.4, rng.integers(0, 100, n), clean)
    return {"clean_label": clean, "noisy_label": noisy, "clean_coarse_label": clean // 5,
            "noisy_coarse_label": noisy // 5}


def test_human_labels_from_npz(tmp_path):
    data = _fake_cifar10n()
    path = tmp_path / "c10n.npz"
    np.savez(path, **data)
    for variant, key in [("aggre", "aggre_label"), ("worst", "worse_label"), ("worse", "worse_label"),
                         ("random2", "random_label2"), ("rand3", "random_label3")]:
        nl = make_noisy_labels(data["clean_label"], "human", path=path, variant=variant)
        assert np.array_equal(nl.noisy, data[key]) and np.array_equal(nl.clean, data["clean_label"])
        assert nl.actual_rate == pytest.approx(np.mean(data[key] != data["clean_label"]))
        assert nl.rate is None and nl.num_classes == 10
    assert nl.options["variant"] == "random3"
    # labels=None takes the clean labels from the file; a folder holding the npz works too
    np.savez(tmp_path / "cifar10n_labels.npz", **data)
    by_folder = make_noisy_labels(None, "human", path=tmp_path, variant="worst")
    assert np.array_equal(by_folder.noisy, data["worse_label"])


def test_human_coarse_variant_accepts_fine_labels(tmp_path):
    data = _fake_cifar100n()
    path = tmp_path / "c100n.npz"
    np.savez(path, **data)
    nl = make_noisy_labels(data["clean_label"], "human", path=path, variant="coarse")
    assert nl.num_classes == 20
    assert np.array_equal(nl.clean, data["clean_coarse_label"]) and np.array_equal(nl.noisy, data["noisy_coarse_label"])
    fine = make_noisy_labels(data["clean_label"], "human", path=path, variant="fine")
    assert fine.num_classes == 100 and np.array_equal(fine.noisy, data["noisy_label"])


def test_human_bad_files_and_labels(tmp_path):
    data = _fake_cifar10n()
    path = tmp_path / "c10n.npz"
    np.savez(path, **data)
    with pytest.raises(NoiseError, match="200 labels but 199 were given"):
        make_noisy_labels(data["clean_label"][1:], "human", path=path, variant="aggre")
    # the first N images in original order (a dataset loaded with a limit) take the first N labels
    first = make_noisy_labels(data["clean_label"][:150], "human", path=path, variant="aggre")
    assert np.array_equal(first.noisy, data["aggre_label"][:150])
    assert np.array_equal(first.clean, data["clean_label"][:150])
    shifted = (data["clean_label"] + 1) % 10
    with pytest.raises(NoiseError, match="differ from the clean labels .* at 200 of 200"):
        make_noisy_labels(shifted, "human", path=path, variant="aggre")
    with pytest.raises(NoiseError, match="'fine' is a cifar100n label set but .* holds cifar10n"):
        make_noisy_labels(data["clean_label"], "human", path=path, variant="fine")
    with pytest.raises(NoiseError, match="variant= one of"):
        make_noisy_labels(data["clean_label"], "human", path=path, variant="best")
    other = tmp_path / "other.npz"
    np.savez(other, labels=data["clean_label"])
    with pytest.raises(NoiseError, match="not a CIFAR-N label file"):
        make_noisy_labels(data["clean_label"], "human", path=other, variant="aggre")
    partial = tmp_path / "partial.npz"
    np.savez(partial, **{k: v for k, v in data.items() if k != "random_label2"})
    with pytest.raises(NoiseError, match="lacks random_label2"):
        load_cifar_n(partial)
    ragged = tmp_path / "ragged.npz"
    np.savez(ragged, **{**data, "worse_label": data["worse_label"][:-5]})
    with pytest.raises(NoiseError, match="different lengths"):
        load_cifar_n(ragged)
    out_of_range = tmp_path / "range.npz"
    np.savez(out_of_range, **{**data, "aggre_label": data["aggre_label"] + 10})
    with pytest.raises(NoiseError, match=r"outside \[0, 10\)"):
        load_cifar_n(out_of_range)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(NoiseError, match="neither an npz nor a torch.save zip"):
        load_cifar_n(junk)
    with pytest.raises(NoiseError, match="does not exist"):
        make_noisy_labels(data["clean_label"], "human", path=tmp_path / "missing.pt", variant="aggre")
    with pytest.raises(NoiseError, match="needs path="):
        make_noisy_labels(data["clean_label"], "human", variant="aggre")
    with pytest.raises(NoiseError, match="takes no rate"):
        make_noisy_labels(data["clean_label"], "human", 0.2, path=path, variant="aggre")


def _numpy1_style(src: Path, dst: Path) -> None:
    """Rewrite a torch.save file so its pickle names numpy.core.* like files saved with numpy 1.x."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            blob = zin.read(name)
            if name.endswith("data.pkl"):
                blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(name, blob)


def test_human_labels_from_official_style_pt_file(tmp_path):
    torch = pytest.importorskip("torch")
    data = _fake_cifar10n()
    modern = tmp_path / "modern.pt"
    torch.save(data, modern)
    official = tmp_path / "CIFAR-10_human.pt"
    _numpy1_style(modern, official)
    for path in (modern, official):
        which, arrays = load_cifar_n(path)
        assert which == "cifar10n" and np.array_equal(arrays["worse_label"], data["worse_label"])
    nl = make_noisy_labels(data["clean_label"], "human", path=tmp_path, variant="worst")  # folder lookup
    assert np.array_equal(nl.noisy, data["worse_label"])
    # anything beyond plain arrays is refused by the weights-only loader
    from fractions import Fraction

    evil = tmp_path / "evil.pt"
    torch.save({**data, "extra": Fraction(1, 3)}, evil)
    with pytest.raises(NoiseError, match="objects other than label arrays"):
        load_cifar_n(evil)


def test_human_spec_detects_a_changed_file(tmp_path):
    data = _fake_cifar10n()
    path = tmp_path / "c10n.npz"
    np.savez(path, **data)
    nl = make_noisy_labels(data["clean_label"], "human", path=path, variant="aggre")
    assert np.array_equal(regenerate(nl).noisy, nl.noisy)
    changed = dict(data)
    changed["aggre_label"] = data["aggre_label"].copy()
    changed["aggre_label"][0] = (changed["aggre_label"][0] + 1) % 10
    np.savez(path, **changed)
    with pytest.raises(NoiseError, match="labels_sha256"):
        regenerate(nl)


@pytest.mark.skipif(not (SHARED / "cifar10n_labels.npz").is_file(), reason="shared CIFAR-10N labels absent")
def test_real_cifar10n_noise_rates():
    path = SHARED / "cifar10n_labels.npz"
    clean = np.load(path)["clean_label"]
    assert clean[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    published = {"aggre": 0.0901, "random1": 0.1723, "random2": 0.1812, "random3": 0.1764, "worst": 0.4021}
    for variant, rate in published.items():
        nl = make_noisy_labels(clean, "human", path=path, variant=variant)
        assert abs(nl.actual_rate - rate) < 5e-5, (variant, nl.actual_rate)
        assert np.allclose(nl.transition_matrix.sum(axis=1), 1.0)


@pytest.mark.skipif(not (SHARED / "cifar100n_labels.npz").is_file(), reason="shared CIFAR-100N labels absent")
def test_real_cifar100n_noise_rates():
    path = SHARED / "cifar100n_labels.npz"
    fine = np.load(path)["clean_label"]
    assert abs(make_noisy_labels(fine, "human", path=path, variant="fine").actual_rate - 0.4020) < 5e-5
    coarse = make_noisy_labels(fine, "human", path=path, variant="coarse")
    assert coarse.num_classes == 20 and abs(coarse.actual_rate - 0.2640) < 5e-5


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def test_download_cifar_n_error_paths_and_md5_check(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(NoiseError, match="could not download cifar10n labels .* Without network access"):
        download_cifar_n(tmp_path, "cifar10n")
    assert list(tmp_path.iterdir()) == []  # no partial file left behind

    payload = b"pretend CIFAR-100N label file"
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: _FakeResponse(payload))
    with pytest.raises(NoiseError, match="has md5 .* expected a67b45c1d7992051865b5c755bd68bb1"):
        download_cifar_n(tmp_path, "cifar100n")
    assert list(tmp_path.iterdir()) == []

    info = dict(_human.CIFAR_N_FILES["cifar100n"], md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(_human.CIFAR_N_FILES, "cifar100n", info)
    got = download_cifar_n(tmp_path, "CIFAR100")
    assert got == tmp_path / "CIFAR-100_human.pt" and got.read_bytes() == payload
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert download_cifar_n(tmp_path, "cifar100n") == got  # a verified file is reused without network
    got.write_bytes(b"tampered")
    with pytest.raises(NoiseError, match="exists but its md5"):
        download_cifar_n(tmp_path, "cifar100n")


def test_download_cifar_n_connection_refused(tmp_path):
    with pytest.raises(NoiseError, match="could not download"):
        download_cifar_n(tmp_path / "sub", "cifar10n", url="http://127.0.0.1:9/CIFAR-10_human.pt", timeout=5)
    with pytest.raises(NoiseError, match="which must be"):
        download_cifar_n(tmp_path, "cifar20n")


# ---------------------------------------------------------------------------------- the record and files
def test_transition_matrix_and_rates_by_hand():
    nl = NoisyLabels(noisy=[0, 1, 1, 1, 0, 2], clean=[0, 0, 0, 1, 1, 2], num_classes=4, kind="matrix",
                     rate=None, seed=0)
    assert nl.is_noisy.tolist() == [False, True, True, False, True, False]
    assert nl.actual_rate == pytest.approx(0.5)
    assert np.allclose(nl.transition_matrix, [[1 / 3, 2 / 3, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    with pytest.raises(NoiseError, match="is_noisy disagrees"):
        NoisyLabels(noisy=[0, 1], clean=[0, 0], num_classes=2, kind="matrix", rate=None, seed=0,
                    is_noisy=[False, False])
    with pytest.raises(NoiseError, match="is_noisy is required"):
        NoisyLabels(noisy=[0, 1], clean=None, num_classes=2, kind="human", rate=None, seed=0)
    unknown = NoisyLabels(noisy=[0, 1], clean=None, num_classes=2, kind="human", rate=None, seed=0,
                          is_noisy=[False, True])
    assert unknown.actual_rate == 0.5
    with pytest.raises(NoiseError, match="needs the clean labels"):
        unknown.transition_matrix
    with pytest.raises(NoiseError, match="JSON"):
        NoisyLabels(noisy=[0], clean=[0], num_classes=2, kind="none", rate=None, seed=0,
                    options={"inputs": np.zeros(3)})


def _examples() -> list[NoisyLabels]:
    y = shuffled_labels([40] * 10)
    coarse = shuffled_labels([5] * 100, seed=3) // 5
    x = _features(len(y), d=8)
    out = [
        make_noisy_labels(y, "none"),
        make_noisy_labels(y, "symmetric", 0.4, 10, 1, include_true=True, exact=True),
        make_noisy_labels(y, "asymmetric", 0.3, 10, 2, compat="elr"),
        make_noisy_labels(np.arange(500) % 100, "asymmetric", 0.4, 100, 3, superclass="coarse",
                          coarse_of_class=coarse[:100]),
        make_noisy_labels(y, "pairflip", 0.2, 10, 4),
        make_noisy_labels(y, "instance", 0.3, 10, 5, inputs=x, variant="shared"),
        make_noisy_labels(y, "matrix", None, 10, 6, matrix=np.full((10, 10), 0.1), exact=True),
    ]
    out[1].class_names = [f"class{c}" for c in range(10)]
    return out


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_save_load_round_trip_and_regenerate(tmp_path, suffix):
    x = _features(400, d=8)
    for i, nl in enumerate(_examples()):
        path = nl.save(tmp_path / f"labels{i}{suffix}")
        back = NoisyLabels.load(path)
        assert np.array_equal(back.noisy, nl.noisy) and np.array_equal(back.clean, nl.clean)
        assert np.array_equal(back.is_noisy, nl.is_noisy) and back.is_noisy.dtype == bool
        assert back.noisy.dtype == np.int64
        assert back.spec == nl.spec and back.expected_rate == nl.expected_rate
        assert back.class_names == nl.class_names
        extra = {"inputs": x} if nl.kind == "instance" else {}
        assert np.array_equal(regenerate(back, **extra).noisy, nl.noisy), nl.kind
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as raw:
                assert set(raw.files) == {"noisy", "clean", "is_noisy", "spec"}
                assert json.loads(str(raw["spec"][()]))["kind"] == nl.kind


def test_load_rejects_corrupt_and_foreign_files(tmp_path):
    nl = make_noisy_labels(shuffled_labels([20] * 5), "symmetric", 0.4, 5, 0)
    good = nl.save(tmp_path / "good.npz")
    nl.save(tmp_path / "good.csv")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(NoiseError, match="cannot be read as a pickle-free npz"):
        NoisyLabels.load(truncated)
    with np.load(good) as raw:
        parts = {k: raw[k] for k in raw.files}
    tampered = dict(parts, noisy=(parts["noisy"] + 1) % 5)
    np.savez(tmp_path / "tampered.npz", **tampered)
    with pytest.raises(NoiseError, match="sha256"):
        NoisyLabels.load(tmp_path / "tampered.npz")
    np.savez(tmp_path / "foreign.npz", labels=parts["noisy"])
    with pytest.raises(NoiseError, match="'noisy' is missing"):
        NoisyLabels.load(tmp_path / "foreign.npz")
    spec = json.loads(str(parts["spec"][()]))
    np.savez(tmp_path / "format.npz", **dict(parts, spec=np.array(json.dumps({**spec, "format": "other"}))))
    with pytest.raises(NoiseError, match="does not declare format"):
        NoisyLabels.load(tmp_path / "format.npz")
    np.savez(tmp_path / "version.npz", **dict(parts, spec=np.array(json.dumps({**spec, "version": 99}))))
    with pytest.raises(NoiseError, match="version 99"):
        NoisyLabels.load(tmp_path / "version.npz")
    np.savez(tmp_path / "objects.npz", **dict(parts, spec=np.array([{"a": 1}], dtype=object)))
    with pytest.raises(NoiseError, match="pickle-free"):
        NoisyLabels.load(tmp_path / "objects.npz")
    lines = (tmp_path / "good.csv").read_text().splitlines()
    (tmp_path / "nohead.csv").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(NoiseError, match="first line"):
        NoisyLabels.load(tmp_path / "nohead.csv")
    bad_row = lines[:5] + ["4,1,x,0"] + lines[6:]
    (tmp_path / "badrow.csv").write_text("\n".join(bad_row) + "\n")
    with pytest.raises(NoiseError, match="comma-separated integers"):
        NoisyLabels.load(tmp_path / "badrow.csv")
    flipped = lines[:2] + [",".join(lines[2].split(",")[:-1] + [str(1 - int(lines[2].split(",")[-1]))])] + lines[3:]
    (tmp_path / "flag.csv").write_text("\n".join(flipped) + "\n")
    with pytest.raises(NoiseError, match="is_noisy disagrees"):
        NoisyLabels.load(tmp_path / "flag.csv")
    with pytest.raises(NoiseError, match="does not exist"):
        NoisyLabels.load(tmp_path / "missing.npz")


def damaged_members(path):
    """Two broken copies of the compressed npz ``path``: a deflate stream that cannot be inflated
    (zlib.error), and a header naming a compression method that does not exist (NotImplementedError)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        first = z.infolist()[0]
    h = first.header_offset
    start = h + 30 + int.from_bytes(raw[h + 26:h + 28], "little") + int.from_bytes(raw[h + 28:h + 30], "little")
    inflate = bytearray(raw)
    inflate[start] = 0xFF  # deflate block type 11: reserved
    method = bytearray(raw)
    method[h + 8:h + 10] = (99).to_bytes(2, "little")  # the local header's compression method...
    for c in range(len(method) - 4):  # ...and every central-directory entry's
        if method[c:c + 4] == b"PK\x01\x02":
            method[c + 10:c + 12] = (99).to_bytes(2, "little")
    return bytes(inflate), bytes(method)


def test_load_rejects_broken_compressed_files(tmp_path):
    nl = make_noisy_labels(shuffled_labels([20] * 5), "symmetric", 0.4, 5, 0)
    with np.load(nl.save(tmp_path / "good.npz")) as raw:
        np.savez_compressed(tmp_path / "zipped.npz", **{k: raw[k] for k in raw.files})
    assert NoisyLabels.load(tmp_path / "zipped.npz").noisy.tolist() == nl.noisy.tolist()
    for i, (broken, raises) in enumerate(zip(damaged_members(tmp_path / "zipped.npz"),
                                             (zlib.error, NotImplementedError))):
        (tmp_path / f"broken{i}.npz").write_bytes(broken)
        with pytest.raises(raises), np.load(tmp_path / f"broken{i}.npz") as z:  # what numpy raises...
            [z[k] for k in z.files]
        with pytest.raises(NoiseError, match="cannot be read as a pickle-free npz"):
            NoisyLabels.load(tmp_path / f"broken{i}.npz")
        with pytest.raises(NoiseError, match="cannot read .* as a CIFAR-N label file"):  # the CIFAR-N reader too
            load_cifar_n(tmp_path / f"broken{i}.npz")
    with pytest.raises(NoiseError, match=".npz or .csv"):
        nl.save(tmp_path / "labels.json")


def test_summary_reports_rates_counts_and_matrix():
    y = shuffled_labels([100] * 10)
    nl = make_noisy_labels(y, "symmetric", 0.4, 10, 0, include_true=True)
    nl.class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    text = nl.summary()
    assert f"requested 0.4000, expected 0.3600, actual {nl.actual_rate:.4f} ({nl.num_noisy} of 1000" in text
    changed_cat = 100 - nl.transition_counts[3, 3]
    assert f"3 cat: {changed_cat} / 100" in text
    assert "transition matrix, % (rows = true class" in text
    row0 = next(line for line in text.splitlines() if line.startswith("   0 "))
    assert row0.split()[1] == f"{100 * nl.transition_matrix[0, 0]:.1f}"
    big = make_noisy_labels(np.arange(1000) % 100, "pairflip", 0.3, 100, 0)
    big_text = big.summary()
    cells = int(np.count_nonzero(big.transition_counts - np.diag(np.diag(big.transition_counts))))
    assert 50 < cells <= 100  # pairflip: at most one wrong cell per class
    assert f"100x100, {cells} non-zero off-diagonal cells; largest:" in big_text
    assert len(big_text.splitlines()) < 140


def test_plot_writes_a_png(tmp_path):
    from noisylab.noise import plot_transition_matrix

    nl = make_noisy_labels(shuffled_labels([50] * 10), "pairflip", 0.3, 10, 0)
    out = plot_transition_matrix(nl, tmp_path / "t.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("rate", [-0.1, 1.0, 40, float("nan"), "0.4", True])
def test_rate_outside_unit_interval_is_rejected(rate):
    with pytest.raises(NoiseError, match=r"rate must be"):
        make_noisy_labels([0, 1, 2], "symmetric", rate, 3, 0)


def test_bad_labels_kinds_and_options():
    with pytest.raises(NoiseError, match=r"label 10, outside \[0, 10\)"):
        make_noisy_labels([0, 3, 10], "symmetric", 0.2, 10, 0)
    with pytest.raises(NoiseError, match=r"label -1, outside"):
        make_noisy_labels([0, -1], "pairflip", 0.2, 10, 0)
    with pytest.raises(NoiseError, match="non-integer"):
        make_noisy_labels([0.0, 1.5], "symmetric", 0.2, 3, 0)
    with pytest.raises(NoiseError, match="1-D"):
        make_noisy_labels(np.zeros((3, 2), int), "symmetric", 0.2, 3, 0)
    with pytest.raises(NoiseError, match="empty"):
        make_noisy_labels([], "symmetric", 0.2, 3, 0)
    with pytest.raises(NoiseError, match="unknown noise kind 'sym'.*symmetric"):
        make_noisy_labels([0, 1], "sym", 0.2, 2, 0)
    with pytest.raises(NoiseError, match="'include_tru' not valid for kind 'symmetric'.*exact, include_true"):
        make_noisy_labels([0, 1], "symmetric", 0.2, 2, 0, include_tru=True)
    with pytest.raises(NoiseError, match="needs a rate"):
        make_noisy_labels([0, 1], "pairflip", None, 2, 0)
    with pytest.raises(NoiseError, match="seed"):
        make_noisy_labels([0, 1], "pairflip", 0.1, 2, -1)
    with pytest.raises(NoiseError, match="num_classes"):
        make_noisy_labels([0, 0], "symmetric", 0.1, 1, 0)
    with pytest.raises(NoiseError, match="True or False"):
        make_noisy_labels([0, 1], "symmetric", 0.1, 2, 0, exact="yes")
    with pytest.raises(NoiseError, match="compat"):
        make_noisy_labels(np.arange(10), "asymmetric", 0.1, 10, 0, compat="dividemix")
    with pytest.raises(NoiseError, match="cannot be combined with exact=False"):
        make_noisy_labels(np.arange(10), "asymmetric", 0.1, 10, 0, compat="elr", exact=False)
    # torch tensors are accepted as labels
    torch = pytest.importorskip("torch")
    assert make_noisy_labels(torch.arange(10), "symmetric", 0.5, 10, 0).noisy.dtype == np.int64


# ---------------------------------------------------------------------------------- splits
def test_split_per_class_holds_out_a_fraction_of_every_class():
    sizes = [500, 499, 37, 5, 1]
    y = shuffled_labels(sizes, seed=12)
    train, val = split_per_class(y, 0.1, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(y)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.bincount(y[val], minlength=5).tolist() == [half_up(0.1 * n) for n in sizes]
    again = split_per_class(y, 0.1, seed=3)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(split_per_class(y, 0.1, seed=4)[1], val)
    # ELR's CIFAR setting: 5,000 per class -> 4,500 train / 500 validation per class
    t, v = split_per_class(np.repeat(np.arange(10), 5000), 0.1, seed=0)
    assert len(t) == 45000 and len(v) == 5000
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(NoiseError, match="fraction"):
            split_per_class(y, bad)


def test_down_sample_balances_noisy_classes():
    y = shuffled_labels([300] * 10, seed=1)
    nl = make_noisy_labels(y, "asymmetric", 0.4, 10, 0)  # class sizes now differ: 180 .. 420
    counts = np.bincount(nl.noisy, minlength=10)
    m = counts.min()
    kept = down_sample(nl, seed=5)
    assert len(kept) == 10 * m and np.all(np.diff(kept) > 0)
    assert np.bincount(nl.noisy[kept], minlength=10).tolist() == [m] * 10
    assert np.array_equal(down_sample(nl.noisy, seed=5), kept)
    assert not np.array_equal(down_sample(nl, seed=6), kept)
    missing = NoisyLabels(noisy=[0, 0, 1, 1, 1], clean=[0, 0, 1, 1, 1], num_classes=3, kind="none", rate=None, seed=0)
    with pytest.raises(NoiseError, match="noisy class 2 has no examples"):
        down_sample(missing)
    balanced = down_sample(missing.noisy)  # plain array: only the classes that occur, m = 2
    assert balanced[:2].tolist() == [0, 1] and len(balanced) == 4 and set(balanced[2:]) <= {2, 3, 4}


# ---------------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None, derandomize=True)
@given(C=st.integers(2, 12), n=st.integers(1, 300), rate=st.floats(0.0, 0.95), seed=st.integers(0, 2**32),
       kind=st.sampled_from(["symmetric", "pairflip", "instance", "matrix"]), exact=st.booleans())
def test_generic_invariants(C, n, rate, seed, kind, exact):
    rng = np.random.Generator(np.random.PCG64(seed))
    y = rng.integers(0, C, n)
    opts: dict = {}
    r: float | None = rate
    if kind == "instance":
        opts["inputs"] = rng.standard_normal((n, 3))
    elif kind == "matrix":
        T = rng.random((C, C)) * (rng.random((C, C)) < 0.5) + np.eye(C)
        opts = {"matrix": T / T.sum(axis=1, keepdims=True), "exact": exact}
        r = None
    else:
        opts["exact"] = exact
    nl = make_noisy_labels(y, kind, r, C, seed, **opts)
    again = make_noisy_labels(y, kind, r, C, seed, **opts)
    assert np.array_equal(nl.noisy, again.noisy)
    assert nl.noisy.shape == (n,) and nl.noisy.min() >= 0 and nl.noisy.max() < C
    assert np.array_equal(nl.is_noisy, nl.noisy != y)
    P = nl.transition_matrix
    present = np.bincount(y, minlength=C) > 0
    assert np.allclose(P[present].sum(axis=1), 1.0) and np.all(P[~present] == 0)
    if kind == "pairflip":
        off = ~(np.eye(C, dtype=bool) | np.roll(np.eye(C, dtype=bool), 1, axis=1))
        assert np.all(P[off] == 0)
    if kind == "matrix":
        assert np.all(P[opts["matrix"] == 0] == 0)  # impossible transitions never happen
    if kind == "symmetric" and exact:
        assert nl.num_noisy == half_up(rate * n)
    json.dumps(nl.options)


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_relabelled_replaces_only_the_given_labels_and_says_where_they_came_from(tmp_path, suffix):
    nl = NoisyLabels(np.array([1, 1, 2, 2, 0]), np.array([0, 1, 2, 0, 0]), 3, "symmetric", 0.4, 7)
    new = nl.relabelled(np.array([0, 3]), np.array([0, 1]), relabelled_from="runs/a", relabelled=2)
    assert new.noisy.tolist() == [0, 1, 2, 1, 0] and nl.noisy.tolist() == [1, 1, 2, 2, 0]  # a copy
    assert new.is_noisy.tolist() == [False, False, False, True, False]  # against the clean labels
    assert new.actual_rate == pytest.approx(0.2)
    assert (new.kind, new.rate, new.seed) == ("symmetric", 0.4, 7)
    back = NoisyLabels.load(new.save(tmp_path / f"r{suffix}"))
    assert back.noisy.tolist() == new.noisy.tolist()
    assert back.options == {"relabelled_from": "runs/a", "relabelled": 2}
    with pytest.raises(NoiseError, match="relabelled by a detector on the run 'runs/a'"):
        regenerate(back)
    # clean labels unknown: whether a relabelled label is right is unknown, so is_noisy carries over
    own = NoisyLabels(np.array([2, 0, 1]), None, 3, "none", 0.0, 0, is_noisy=np.array([False, True, False]))
    assert own.relabelled(np.array([1]), np.array([2])).is_noisy.tolist() == [False, True, False]
    with pytest.raises(NoiseError, match=r"\[0, 5\)"):
        nl.relabelled(np.array([5]), np.array([0]))
    with pytest.raises(NoiseError, match="2 indices for 1 new labels"):
        nl.relabelled(np.array([0, 1]), np.array([0]))


def test_a_run_on_relabelled_labels_holds_out_what_the_first_run_held_out_without_the_truth(tmp_path):
    from helpers import image_npz

    from noisylab.config import build_config
    from noisylab.data.prepare import prepare_data

    cfg = {"name": "t", "device": "cpu", "data": {"dataset": "npz", "root": str(image_npz(tmp_path, n=60)),
                                                  "val_fraction": 0.25}}
    first = prepare_data(build_config(cfg))
    assert not first.truth_known and len(first.val_idx) == 15
    # relabel a third of the training part so that the classes' counts change: a split made on the
    # new labels would hold out other examples
    labels = first.labels
    moved = first.train_idx[::3]
    new = labels.relabelled(moved, (labels.noisy[moved] + 1) % 3, relabelled_from="runs/t", relabelled=len(moved))
    new.save(tmp_path / "relabelled.npz")
    second = prepare_data(build_config({**cfg, "noise": {"kind": "none", "file": str(tmp_path / "relabelled.npz")}}))
    assert np.array_equal(second.val_idx, first.val_idx) and np.array_equal(second.train_idx, first.train_idx)
    assert np.array_equal(second.labels.noisy[second.val_idx], labels.noisy[first.val_idx])
    assert np.array_equal(second.labels.noisy[moved], (labels.noisy[moved] + 1) % 3)
