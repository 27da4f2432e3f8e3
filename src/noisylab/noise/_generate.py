"""Synthetic label noise: :func:`make_noisy_labels`.

Randomness: every generator draws from ``numpy.random.Generator(PCG64(child))`` where the
children come from ``SeedSequence(seed).spawn(k)``; the global numpy RNG is never used. For
a given numpy version the labels are the same on every machine. Two caveats, both documented
where they apply: instance noise chooses the wrong class through a matrix product (BLAS may
differ in the last bit between machines, which can only matter at an exact tie; *which*
examples are flipped never depends on it), and numpy does not promise identical Generator
streams across future major versions — the saved label file is the source of truth.

Couplings that follow from the stream layout: with the same seed, the examples corrupted by
``symmetric``, ``asymmetric`` and ``pairflip`` noise at a lower rate are a subset of those
corrupted at a higher rate (selection compares one fixed uniform draw per example, or takes a
prefix of one fixed permutation, against the rate), and their new labels do not depend on
the rate.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from ._labels import KINDS, NoiseError, NoisyLabels, as_float, as_label_array, round_half_up

CIFAR10_ASYMMETRIC_MAP: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
"""CIFAR-10 asymmetric flips (Patrini et al. 2017; ELR repo ``data_loader/cifar10.py``):
truck -> automobile, bird -> airplane, deer -> horse, cat -> dog, dog -> cat."""

# every option each kind accepts, with its default (None = not given)
_OPTIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "symmetric": {"include_true": False, "exact": False},
    "asymmetric": {"dataset": None, "mapping": None, "superclass": None, "coarse_labels": None,
                   "coarse_of_class": None, "exact": None, "compat": None},
    "pairflip": {"exact": False},
    "instance": {"inputs": None, "variant": "xia", "std": 0.1, "inputs_sha256": None},
    "matrix": {"matrix": None, "exact": False},
    "human": {"path": None, "variant": None, "download": False, "labels_sha256": None},
}

_RATED = ("symmetric", "asymmetric", "pairflip", "instance")


def _streams(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from ``seed`` (SeedSequence spawning)."""
    return [np.random.Generator(np.random.PCG64(child)) for child in np.random.SeedSequence(seed).spawn(n)]


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise NoiseError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_rate(kind: str, rate: Any) -> float | None:
    if kind in ("matrix", "human"):
        if rate is not None:
            what = "the matrix" if kind == "matrix" else "the human label file"
            raise NoiseError(f"kind {kind!r} takes no rate ({what} sets the noise level); pass rate=None")
        return None
    if kind == "none":
        if rate is not None and (not isinstance(rate, (int, float, np.integer, np.floating)) or rate != 0):
            raise NoiseError(f"kind 'none' leaves labels unchanged; its rate must be None or 0, got {rate!r}")
        return None if rate is None else 0.0
    if rate is None:
        raise NoiseError(f"kind {kind!r} needs a rate in [0, 1), e.g. rate=0.4 for 40 % noise")
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise NoiseError(f"rate must be a number in [0, 1), got {rate!r}")
    value = as_float(rate)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        hint = " (a percentage must be divided by 100: 40 % is 0.4)" if 2.0 <= value <= 100.0 else ""
        raise NoiseError(f"rate must be in [0, 1), got {rate!r}{hint}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise NoiseError(f"option {name!r} must be True or False, got {value!r}")
    return bool(value)


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or int(num_classes) < 2:
        raise NoiseError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return int(num_classes)


def array_sha256(arr: np.ndarray) -> str:
    """sha256 (hex) of an array's dtype, shape and C-order bytes."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}{tuple(arr.shape)}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


# ---------------------------------------------------------------------------------- main entry
def check_noise_spec(kind: Any, rate: Any = None, seed: Any = 0, **options: Any) -> None:
    """Validate what can be checked without the data: the kind, the rate for that kind, the
    seed and the option names. For config validation before loading a dataset; raises
    :class:`NoiseError` naming the problem and the fix."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise NoiseError(f"unknown noise kind {kind!r} (valid: {', '.join(KINDS)})")
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        valid = ", ".join(sorted(_OPTIONS[kind])) or "none"
        raise NoiseError(f"option(s) {', '.join(map(repr, unknown))} not valid for kind {kind!r} "
                         f"(valid options: {valid})")
    _check_seed(seed)
    _check_rate(kind, rate)


def make_noisy_labels(labels: Any, kind: str, rate: float | None = None, num_classes: int | None = None,
                      seed: int = 0, **options: Any) -> NoisyLabels:
    """Corrupt ``labels`` with label noise of the given ``kind``.

    Args:
        labels: clean labels, int [N] (list, numpy or torch), each in ``[0, num_classes)``.
            Optional (None) only for ``kind="human"``, where the file's clean labels are used.
        kind: one of :data:`KINDS` (see below).
        rate: noise rate in [0, 1) for ``symmetric``, ``asymmetric``, ``pairflip`` and
            ``instance``; None for ``matrix`` and ``human``; None or 0 for ``none``.
        num_classes: C. Default: the matrix size for ``matrix``, the file's label set for
            ``human``, otherwise ``max(labels) + 1``.
        seed: non-negative integer; the same inputs and seed give the same labels.
        options: kind-specific, listed below. Unknown options raise :class:`NoiseError`.

    Kinds and options:

    * ``none``: labels unchanged.
    * ``symmetric`` (``include_true=False``, ``exact=False``): each example is selected with
      probability ``rate`` (or, with ``exact=True``, exactly ``round(rate*N)`` examples are
      selected) and its label is redrawn uniformly from the C-1 *other* classes — actual rate
      about ``rate`` (the convention of the Co-teaching family and the ICLR 2023 code, whose
      transition matrix has ``1-rate`` on the diagonal and ``rate/(C-1)`` elsewhere).
      ``include_true=True`` redraws from all C classes, the ELR / DivideMix convention (ELR repo
      ``data_loader/cifar10.py``: ``randint(C)`` on a random ``percent`` share of the
      examples), so the actual rate is about ``rate*(C-1)/C``; ``include_true=True,
      exact=True`` is that exact procedure (ELR rounds ``rate*N`` up and DivideMix down; we
      round to nearest, which agrees whenever ``rate*N`` is whole, as in all published settings).
    * ``asymmetric``: class-dependent flips to one fixed target class per source class.
      ``dataset="cifar10"`` (default when C = 10): truck->automobile, bird->airplane,
      deer->horse, cat->dog, dog->cat; by default exactly ``round(rate*n_s)`` examples of
      each source class s are flipped, chosen on the ORIGINAL labels (no example is flipped
      twice). ``compat="elr"`` reproduces the official ELR code instead, for comparison with
      published numbers: classes are processed 0..9 in order, and each class's pool is taken
      from the CURRENT, already partly corrupted labels (``ceil(rate*|pool|)`` flipped), so
      cats already turned into dogs can be flipped back: with equal class sizes about
      ``rate*(1-rate)`` of the cats end up as dogs while ``rate`` of the dogs become cats
      (shengliu66/ELR issue #16). The random stream is ours, as ELR never seeds it.
      ``dataset="cifar100"`` (default when C = 100): with ``superclass="blocks"`` (default)
      each class moves to the next index within consecutive blocks of 5 (0->1->...->4->0,
      5->6->...), which is what ELR ``data_loader/cifar100.py`` calls superclasses (fine
      labels are alphabetical, so these are not the real ones); with
      ``superclass="coarse"`` the next fine class (by index, circularly) within the real 20
      superclasses, which needs ``coarse_labels=`` (coarse label per example, [N]) or
      ``coarse_of_class=`` (coarse label per fine class, [C]). CIFAR-100 defaults to one
      Bernoulli(rate) draw per example as in ELR; ``exact=True`` flips an exact share per
      class (and ``exact=False`` gives Bernoulli draws for CIFAR-10). ``mapping=`` (dict
      ``{source: target}`` or a list of length C, ``target == source`` meaning no flip)
      gives any other one-target-per-class pattern (``dataset`` is then ``"custom"``).
    * ``pairflip`` (``exact=False``): class i -> (i+1) mod C with probability ``rate`` (ICLR
      2023 repo ``utils.py``, Han et al. 2018), or an exact share per class with ``exact=True``.
    * ``instance`` (``inputs=``, ``variant="xia"``, ``std=0.1``): instance-dependent noise of
      Xia et al. 2020 ("Part-dependent label noise", NeurIPS 2020). Per example a flip
      probability ``q_i`` ~ N(rate, std^2) truncated to (0, 1) (seeded rejection sampling);
      per true class y a projection ``W_y`` ~ N(0, 1) of shape [D, C]; for input x (uint8
      images scaled to [0, 1] as ``ToTensor`` does, then flattened in the given layout —
      ``DataBundle.train_x`` is CHW like ``ToTensor``; float features used as they are) the
      label stays with probability ``1 - q_i`` and otherwise becomes class j != y with
      probability ``softmax(x @ W_y)`` over the C-1 other classes. ``variant="shared"`` is
      the simplification in the ICLR 2023 code (``utils.py`` ``noisify_instance``): one
      projection ``W`` shared by all classes. The flip decision uses only ``q_i`` and a
      uniform draw, so which examples are flipped is exactly reproducible; the target class
      goes through a matrix product. The spec stores ``inputs_sha256`` instead of the array;
      passing it back checks that the same inputs are used.
    * ``matrix`` (``matrix=``, ``exact=False``): any row-stochastic C x C matrix T (rows =
      true class); each label y is redrawn from row T[y], or with ``exact=True`` each class's
      examples are split in exact counts (largest remainder of ``T[y] * n_y``), like
      cleanlab's noise generation.
    * ``human``: CIFAR-10N / CIFAR-100N human labels (Wei et al., ICLR 2022), see
      :func:`noisylab.noise.load_cifar_n`. Options ``path=`` (a ``CIFAR-10_human.pt`` /
      ``CIFAR-100_human.pt`` file, the npz equivalent, or a folder holding one),
      ``variant=`` (``aggre``, ``random1``, ``random2``, ``random3``, ``worst`` for CIFAR-10N;
      ``fine``, ``coarse`` for CIFAR-100N) and ``download=True`` (fetch the file into
      ``path`` when it is missing, checking its md5). ``labels`` must be the clean CIFAR
      training labels in the original order (fine or coarse labels for ``coarse``).

    Returns:
        :class:`NoisyLabels` with the noisy labels, the clean ones, the spec and the expected rate.

    Raises:
        NoiseError: invalid kind, rate, labels, option, matrix or label file.
    """
    check_noise_spec(kind, rate, seed, **options)
    opts = {**_OPTIONS[kind], **options}
    seed = _check_seed(seed)
    rate = _check_rate(kind, rate)

    if kind == "human":
        from ._human import human_noisy_labels

        return human_noisy_labels(labels, num_classes, seed, **opts)
    if labels is None:
        raise NoiseError(f"kind {kind!r} needs the clean labels (got labels=None)")

    if kind == "matrix":
        matrix = _check_matrix(opts["matrix"], num_classes)
        C = matrix.shape[0]
    else:
        if num_classes is None:
            probe = as_label_array(labels, "labels")
            if probe.size == 0:
                raise NoiseError("labels is empty: there is nothing to corrupt")
            num_classes = max(int(probe.max()) + 1, 2)
        C = _check_num_classes(num_classes)
    clean = as_label_array(labels, "labels", C)
    if clean.size == 0:
        raise NoiseError("labels is empty: there is nothing to corrupt")

    if kind == "none":
        noisy, stored, expected = clean.copy(), {}, 0.0
    elif kind == "symmetric":
        noisy, stored, expected = _symmetric(clean, C, rate, seed, _check_bool("include_true", opts["include_true"]),
                                             _check_bool("exact", opts["exact"]))
    elif kind == "pairflip":
        exact = _check_bool("exact", opts["exact"])
        target = (np.arange(C) + 1) % C
        noisy, expected = _flip_to_targets(clean, target, rate, seed, exact)
        stored = {"exact": exact}
    elif kind == "asymmetric":
        noisy, stored, expected = _asymmetric(clean, C, rate, seed, opts)
    elif kind == "instance":
        noisy, stored, expected = _instance(clean, C, rate, seed, opts)
    else:  # matrix
        exact = _check_bool("exact", opts["exact"])
        noisy, expected = _sample_matrix(clean, matrix, seed, exact)
        stored = {"matrix": matrix.tolist(), "exact": exact}
    return NoisyLabels(noisy=noisy, clean=clean, num_classes=C, kind=kind, rate=rate, seed=seed,
                       options=stored, expected_rate=expected)


# ---------------------------------------------------------------------------------- symmetric
def _symmetric(clean: np.ndarray, C: int, rate: float, seed: int, include_true: bool,
               exact: bool) -> tuple[np.ndarray, dict, float]:
    select_rng, class_rng = _streams(seed, 2)
    N = len(clean)
    if exact:
        k = round_half_up(rate * N)
        selected = np.zeros(N, dtype=bool)
        selected[select_rng.permutation(N)[:k]] = True
        share = k / N
    else:
        selected = select_rng.random(N) < rate
        share = rate
    if include_true:
        new = class_rng.integers(0, C, size=N)
        share *= (C - 1) / C
    else:  # uniform over the C-1 other classes: draw d in [0, C-1) and skip the true class
        d = class_rng.integers(0, C - 1, size=N)
        new = d + (d >= clean)
    noisy = np.where(selected, new, clean).astype(np.int64)
    return noisy, {"include_true": include_true, "exact": exact}, share


# ---------------------------------------------------------------------------------- one target per class
def _flip_to_targets(clean: np.ndarray, target: np.ndarray, rate: float, seed: int,
                     exact: bool) -> tuple[np.ndarray, float]:
    """Flip examples of class s to ``target[s]`` (classes with ``target[s] == s`` stay).

    Bernoulli: one uniform per example, flipped when below ``rate``. Exact: per source class
    (ascending), a seeded permutation of its examples; the first ``round(rate * n_s)`` flip.
    """
    (rng,) = _streams(seed, 1)
    N = len(clean)
    noisy = clean.copy()
    movable = target[clean] != clean
    if not exact:
        flip = (rng.random(N) < rate) & movable
        noisy[flip] = target[clean[flip]]
        return noisy, rate * float(movable.mean())
    flipped = 0
    for s in range(len(target)):
        if target[s] == s:
            continue
        idx = np.flatnonzero(clean == s)
        k = round_half_up(rate * len(idx))
        noisy[rng.permutation(idx)[:k]] = target[s]
        flipped += k
    return noisy, flipped / N


def _flip_in_place_elr(clean: np.ndarray, target: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """The ELR code's asymmetric loop (``data_loader/cifar10.py``): for class i = 0..C-1 in
    order, shuffle the indices whose CURRENT label is i and flip the first ``ceil(rate*n)``
    (the code's ``j < percent * len(indices)``) to ``target[i]``, updating labels in place."""
    (rng,) = _streams(seed, 1)
    noisy = clean.copy()
    for i in range(len(target)):
        if target[i] == i:
            continue
        pool = np.flatnonzero(noisy == i)
        k = min(len(pool), max(0, math.ceil(rate * len(pool))))
        noisy[rng.permutation(pool)[:k]] = target[i]
    return noisy


def _cifar10_targets() -> np.ndarray:
    target = np.arange(10)
    for s, t in CIFAR10_ASYMMETRIC_MAP.items():
        target[s] = t
    return target


def _block_targets(C: int, block: int = 5) -> np.ndarray:
    """Next index within consecutive blocks of ``block`` classes (ELR ``data_loader/cifar100.py``)."""
    c = np.arange(C)
    return (c // block) * block + (c % block + 1) % block


def _group_targets(groups: np.ndarray) -> np.ndarray:
    """Next class (by index, circularly) among the classes sharing a group id."""
    target = np.arange(len(groups))
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)  # ascending
        target[members] = np.roll(members, -1)
    return target


def _coarse_of_class(opts: dict, clean: np.ndarray, C: int) -> np.ndarray:
    """The superclass of each fine class, from ``coarse_of_class`` ([C]) and/or ``coarse_labels``
    ([N], one per example); when both are given they must agree."""
    per_example, per_class = opts["coarse_labels"], opts["coarse_of_class"]
    if per_class is not None:
        table = as_label_array(per_class, "coarse_of_class")
        if len(table) != C or (table.size and table.min() < 0):
            raise NoiseError(f"coarse_of_class must list a non-negative superclass for each of the {C} classes, "
                             f"got {len(table)} entries")
        if per_example is not None:
            coarse = as_label_array(per_example, "coarse_labels")
            if len(coarse) != len(clean) or not np.array_equal(table[clean], coarse):
                raise NoiseError("coarse_labels and coarse_of_class disagree; pass only one of them")
        return table
    if per_example is None:
        raise NoiseError("superclass='coarse' needs the coarse labels: pass coarse_labels=<[N] superclass per "
                         "example> (CIFAR-100 loaders put them in DataBundle.extra['coarse_labels']) or "
                         "coarse_of_class=<[C] superclass per fine class>")
    coarse = as_label_array(per_example, "coarse_labels")
    if len(coarse) != len(clean):
        raise NoiseError(f"coarse_labels has {len(coarse)} entries for {len(clean)} labels; pass one coarse "
                         "label per example (or coarse_of_class= with one per class)")
    if coarse.size and coarse.min() < 0:
        raise NoiseError("coarse_labels must be non-negative superclass ids")
    table = np.full(C, -1, dtype=np.int64)
    for c in range(C):
        found = np.unique(coarse[clean == c])
        if len(found) == 0:
            raise NoiseError(f"class {c} has no examples, so coarse_labels cannot tell its superclass; "
                             "pass coarse_of_class= (superclass per fine class) instead")
        if len(found) > 1:
            raise NoiseError(f"coarse_labels are inconsistent: examples of class {c} have superclasses "
                             f"{found.tolist()}; every fine class must belong to exactly one superclass")
        table[c] = found[0]
    return table


def _parse_mapping(mapping: Any, C: int) -> np.ndarray:
    target = np.arange(C)
    if isinstance(mapping, dict):
        items = list(mapping.items())
    else:
        values = as_label_array(mapping, "mapping")
        if len(values) != C:
            raise NoiseError(f"mapping as a list must give a target for each of the {C} classes "
                             f"(the class itself for no flip), got {len(values)}; or pass a dict {{source: target}}")
        items = list(enumerate(values.tolist()))
    for s, t in items:
        try:
            s_i, t_i = int(s), int(t)
        except (TypeError, ValueError):
            raise NoiseError(f"mapping entries must be integer classes, got {s!r}: {t!r}") from None
        if not (0 <= s_i < C and 0 <= t_i < C):
            raise NoiseError(f"mapping {s_i} -> {t_i} is outside the classes 0..{C - 1}")
        target[s_i] = t_i
    return target


def _asymmetric(clean: np.ndarray, C: int, rate: float, seed: int, opts: dict) -> tuple[np.ndarray, dict, float | None]:
    dataset, compat, exact = opts["dataset"], opts["compat"], opts["exact"]
    superclass = opts["superclass"]
    if compat not in (None, "elr"):
        raise NoiseError(f"compat must be None or 'elr', got {compat!r}")
    if exact is not None:
        exact = _check_bool("exact", exact)
    if opts["mapping"] is not None:
        if dataset not in (None, "custom"):
            raise NoiseError(f"mapping= replaces the built-in {dataset!r} flips; drop dataset= or the mapping")
        dataset = "custom"
    elif dataset is None:
        if C not in (10, 100):
            raise NoiseError(f"asymmetric noise has built-in flips for CIFAR-10 (10 classes) and CIFAR-100 "
                             f"(100 classes); for {C} classes pass mapping={{source: target, ...}}, "
                             "or use kind='pairflip' or kind='matrix'")
        dataset = "cifar10" if C == 10 else "cifar100"
    if dataset not in ("cifar10", "cifar100", "custom"):
        raise NoiseError(f"dataset must be 'cifar10' or 'cifar100' (or give mapping=), got {dataset!r}")
    if dataset == "custom" and opts["mapping"] is None:
        raise NoiseError("dataset='custom' needs mapping={source: target, ...}")
    if dataset != "cifar100" and (superclass is not None or opts["coarse_labels"] is not None
                                  or opts["coarse_of_class"] is not None):
        raise NoiseError("superclass / coarse_labels / coarse_of_class apply to CIFAR-100 asymmetric noise only")
    expected_classes = {"cifar10": 10, "cifar100": 100}.get(dataset)
    if expected_classes is not None and C != expected_classes:
        raise NoiseError(f"asymmetric noise for {dataset} needs {expected_classes} classes, got num_classes={C}")

    stored: dict[str, Any] = {"dataset": dataset}
    if dataset == "cifar10":
        target = _cifar10_targets()
        if exact is None:
            exact = True
    elif dataset == "cifar100":
        superclass = "blocks" if superclass is None else superclass
        if superclass == "blocks":
            if opts["coarse_labels"] is not None or opts["coarse_of_class"] is not None:
                raise NoiseError("coarse labels were given but superclass='blocks' ignores them; "
                                 "pass superclass='coarse' to use the real superclasses")
            target = _block_targets(C)
        elif superclass == "coarse":
            table = _coarse_of_class(opts, clean, C)
            target = _group_targets(table)
            stored["coarse_of_class"] = table.tolist()
        else:
            raise NoiseError(f"superclass must be 'blocks' (ELR: consecutive blocks of 5) or 'coarse' "
                             f"(the real CIFAR-100 superclasses), got {superclass!r}")
        stored["superclass"] = superclass
        if exact is None:
            exact = False
    else:
        target = _parse_mapping(opts["mapping"], C)
        stored["mapping"] = target.tolist()
        if exact is None:
            exact = True
    if compat == "elr":
        if dataset == "custom" or (dataset == "cifar100" and stored["superclass"] != "blocks"):
            raise NoiseError("compat='elr' exists for the ELR code's own settings: CIFAR-10, and CIFAR-100 with "
                             "superclass='blocks'")
        if dataset == "cifar100" and exact:
            raise NoiseError("ELR's CIFAR-100 asymmetric noise draws each label independently; "
                             "compat='elr' cannot be combined with exact=True")
        if dataset == "cifar10" and not exact:
            raise NoiseError("ELR's CIFAR-10 asymmetric noise flips an exact share per class; "
                             "compat='elr' cannot be combined with exact=False")
    stored.update({"exact": exact, "compat": compat})
    if compat == "elr" and dataset == "cifar10":
        return _flip_in_place_elr(clean, target, rate, seed), stored, None
    noisy, expected = _flip_to_targets(clean, target, rate, seed, exact)
    return noisy, stored, expected


# ---------------------------------------------------------------------------------- instance-dependent
def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def truncated_normal_mean(mean: float, std: float, low: float = 0.0, high: float = 1.0) -> float:
    """Mean of N(mean, std^2) truncated to (low, high)."""
    if std == 0:
        return mean
    a, b = (low - mean) / std, (high - mean) / std
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)  # noqa: E731
    mass = _normal_cdf(b) - _normal_cdf(a)
    return mean + std * (pdf(a) - pdf(b)) / mass


def truncated_normal(rng: np.random.Generator, mean: float, std: float, n: int) -> np.ndarray:
    """``n`` draws of N(mean, std^2) restricted to the open interval (0, 1), by rejection.

    Batches of standard normals are drawn from ``rng`` until ``n`` values are accepted, in
    draw order; the result depends only on the generator state, ``mean``, ``std`` and ``n``.
    With ``std == 0`` every value is ``mean``.
    """
    if std == 0:
        return np.full(n, mean, dtype=np.float64)
    accept = _normal_cdf((1.0 - mean) / std) - _normal_cdf(-mean / std)
    if n > 0 and not accept >= 1e-4:  # rejection would (almost) never end
        raise NoiseError(f"N({mean:g}, {std:g}^2) has only {accept:.3g} of its mass in (0, 1), too little to sample "
                         "by rejection; use a std of at most ~1000 (Xia et al. use 0.1)")
    parts, have = [], 0
    while have < n:
        batch = int((n - have) / accept * 1.1) + 64
        z = mean + std * rng.standard_normal(batch)
        z = z[(z > 0.0) & (z < 1.0)][: n - have]
        parts.append(z)
        have += len(z)
    return np.concatenate(parts) if parts else np.zeros(0)


def _input_matrix(inputs: Any, N: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate ``inputs`` ([N, ...] uint8 or float); return (inputs, view [N, D], is_uint8)."""
    if inputs is None:
        raise NoiseError("kind 'instance' needs the inputs: pass inputs=<array [N, ...]> (uint8 images are "
                         "scaled to [0, 1] like ToTensor; float features are used as they are)")
    if hasattr(inputs, "detach") and hasattr(inputs, "cpu"):
        inputs = inputs.detach().cpu().numpy()
    arr = np.asarray(inputs)
    if arr.ndim < 1 or len(arr) != N:
        raise NoiseError(f"inputs must have one row per label: got shape {arr.shape} for {N} labels")
    if arr.dtype == np.uint8:
        is_uint8 = True
    elif np.issubdtype(arr.dtype, np.floating):
        is_uint8 = False
        if not np.isfinite(arr).all():
            raise NoiseError("inputs contain NaN or infinite values")
    else:
        raise NoiseError(f"inputs must be uint8 images or floating-point features, got dtype {arr.dtype}")
    flat = arr.reshape(N, -1)
    if flat.shape[1] == 0:
        raise NoiseError(f"inputs have no features (shape {arr.shape})")
    return arr, flat, is_uint8


def _pick_other(logits: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Sample j != y[i] from softmax(logits[i]) restricted to the other classes, by inverse CDF
    with uniforms ``u`` in [0, 1). ``logits``: float [n, C]; returns int64 [n]."""
    n = len(logits)
    big = np.finfo(np.float64).max  # x @ W may overflow for huge inputs: keep every other class finite
    logits = np.nan_to_num(logits, nan=0.0, posinf=big, neginf=-big)
    logits[np.arange(n), y] = -np.inf
    with np.errstate(over="ignore"):
        logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)  # exactly 0 for the true class
    cum = np.cumsum(p, axis=1)
    v = u * cum[:, -1]
    # first index whose cumulative mass exceeds v; never y, since p[y] = 0 leaves cum flat there
    return (cum <= v[:, None]).sum(axis=1).astype(np.int64)


def _instance(clean: np.ndarray, C: int, rate: float, seed: int, opts: dict) -> tuple[np.ndarray, dict, float]:
    variant, std = opts["variant"], opts["std"]
    if variant not in ("xia", "shared"):
        raise NoiseError(f"instance noise variant must be 'xia' (one projection per true class, Xia et al. 2020) "
                         f"or 'shared' (one projection, ICLR 2023 code), got {variant!r}")
    if isinstance(std, bool) or not isinstance(std, (int, float, np.integer, np.floating)) \
            or not math.isfinite(as_float(std)) or float(std) < 0:
        raise NoiseError(f"std must be a finite number >= 0, got {std!r}")
    std = float(std)
    N = len(clean)
    arr, flat, is_uint8 = _input_matrix(opts["inputs"], N)
    digest = array_sha256(arr)
    if opts["inputs_sha256"] is not None and opts["inputs_sha256"] != digest:
        raise NoiseError("inputs do not match inputs_sha256 from the spec: these are not the inputs the labels "
                         "were generated from (check the dataset, its order and dtype)")
    D = flat.shape[1]
    q_rng, flip_rng, pick_rng, w_rng = _streams(seed, 4)
    q = truncated_normal(q_rng, rate, std, N)
    flip = flip_rng.random(N) < q
    u_pick = pick_rng.random(N)

    def rows(idx: np.ndarray) -> np.ndarray:
        x = flat[idx].astype(np.float64)
        if is_uint8:
            x /= 255.0
        return x

    noisy = clean.copy()
    chunk = 4096
    if variant == "xia":
        for c in range(C):
            W = w_rng.standard_normal((D, C))  # drawn for every class so the stream does not depend on the data
            idx = np.flatnonzero(flip & (clean == c))
            for start in range(0, len(idx), chunk):
                part = idx[start:start + chunk]
                noisy[part] = _pick_other(rows(part) @ W, clean[part], u_pick[part])
    else:
        W = w_rng.standard_normal((D, C))
        idx = np.flatnonzero(flip)
        for start in range(0, len(idx), chunk):
            part = idx[start:start + chunk]
            noisy[part] = _pick_other(rows(part) @ W, clean[part], u_pick[part])
    stored = {"variant": variant, "std": std, "inputs_sha256": digest}
    return noisy, stored, truncated_normal_mean(rate, std)


# ---------------------------------------------------------------------------------- transition matrix
def _check_matrix(matrix: Any, num_classes: Any) -> np.ndarray:
    if matrix is None:
        raise NoiseError("kind 'matrix' needs matrix=<C x C row-stochastic array> (row i: distribution of the "
                         "noisy label of an example of class i)")
    if hasattr(matrix, "detach") and hasattr(matrix, "cpu"):
        matrix = matrix.detach().cpu().numpy()
    try:
        T = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise NoiseError(f"matrix must be a numeric C x C array ({err})") from None
    if T.ndim != 2 or T.shape[0] != T.shape[1] or T.shape[0] < 2:
        raise NoiseError(f"matrix must be square C x C with C >= 2, got shape {T.shape}")
    if num_classes is not None and _check_num_classes(num_classes) != T.shape[0]:
        raise NoiseError(f"matrix is {T.shape[0]} x {T.shape[0]} but num_classes={num_classes}")
    if not np.isfinite(T).all():
        raise NoiseError("matrix contains NaN or infinite entries")
    if (T < 0).any():
        i, j = np.argwhere(T < 0)[0]
        raise NoiseError(f"matrix entry [{i}, {j}] = {T[i, j]} is negative; probabilities must be >= 0")
    sums = T.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        i = int(bad[0])
        raise NoiseError(f"row {i} of the transition matrix sums to {sums[i]:.6g}, not 1: each row i must be the "
                         "distribution of the noisy label for true class i (normalise with "
                         "T / T.sum(axis=1, keepdims=True))")
    return T


def _largest_remainder(weights: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to ``n`` closest to ``weights * n`` (largest remainder; ties -> lower index)."""
    quota = weights / weights.sum() * n
    counts = np.floor(quota).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:
        order = np.argsort(-(quota - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def _sample_matrix(clean: np.ndarray, T: np.ndarray, seed: int, exact: bool) -> tuple[np.ndarray, float]:
    (rng,) = _streams(seed, 1)
    N, C = len(clean), T.shape[0]
    noisy = clean.copy()
    if not exact:
        u = rng.random(N)
        cum = np.cumsum(T, axis=1)
        for y in range(C):
            idx = np.flatnonzero(clean == y)
            if idx.size:
                v = u[idx] * cum[y, -1]
                noisy[idx] = np.minimum(np.searchsorted(cum[y], v, side="right"), C - 1)
        prior = np.bincount(clean, minlength=C) / N
        return noisy, float(np.sum(prior * (1.0 - np.diag(T) / T.sum(axis=1))))
    kept = 0
    for y in range(C):
        idx = np.flatnonzero(clean == y)
        if not idx.size:
            continue
        counts = _largest_remainder(T[y], len(idx))
        noisy[rng.permutation(idx)] = np.repeat(np.arange(C), counts)
        kept += int(counts[y])
    return noisy, (N - kept) / N


def regenerate(record: NoisyLabels, labels: Any = None, **overrides: Any) -> NoisyLabels:
    """Run the generator again from ``record.spec``: ``make_noisy_labels(labels, kind, rate,
    num_classes, seed, **options, **overrides)``; equal labels prove the record reproducible.

    Args:
        record: a :class:`NoisyLabels` (e.g. ``NoisyLabels.load(path)``).
        labels: the clean labels; defaults to ``record.clean``.
        overrides: options that are not stored, e.g. ``inputs=`` for instance noise (checked
            against the stored sha256) or ``path=`` for human labels on another machine.
    """
    if "relabelled_from" in record.options:  # NoisyLabels.relabelled: a detector changed some labels
        raise NoiseError(f"these labels were relabelled by a detector on the run '{record.options['relabelled_from']}', "
                         "so no generator makes them again: regenerate that run's noisy_labels.npz instead")
    if labels is None:
        labels = record.clean
    return make_noisy_labels(labels, record.kind, record.rate, record.num_classes, record.seed,
                             **{**record.options, **overrides})
