"""The neighbour graph of a feature space, and what it says about each example.

One search, :func:`nearest_neighbours`, feeds three questions:

- is the label right? the neighbours' labels vote (:func:`neighbour_label_votes`, SimiFeat's
  voting, Zhu, Song and Liu, "Detecting Corrupted Labels Without Training a Model to Predict",
  ICML 2022, arXiv 2110.06283);
- is the example (almost) a copy of another? :func:`near_duplicates`;
- is it unlike the rest of the data? :func:`outliers`.

The last two follow the definitions of cleanlab's Datalab issue types ``near_duplicate`` and
``outlier`` (docs.cleanlab.ai, "Datalab Issue Types"), computed here on the same graph.

Distances are cosine distances ``1 - cos(a, b)`` in ``[0, 2]``. The search is exact (chunked
matrix products in PyTorch) unless faiss is installed (``pip install 'noisylab[features]'``):
then exact for up to :data:`EXACT_LIMIT` rows and an HNSW graph above, so that a million rows
take minutes rather than hours.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

EXACT_LIMIT = 200_000
"""Above this many rows, the faiss backend searches an HNSW graph (approximate) instead of all pairs."""
NEAR_DUPLICATE_THRESHOLD = 0.13
"""cleanlab Datalab's default: a near duplicate lies closer to its nearest neighbour than this
fraction of the median nearest-neighbour distance."""
OUTLIER_THRESHOLD = 0.37037
"""cleanlab Datalab's default for features: an outlier's mean distance to its neighbours exceeds
``Q3 + (1 / threshold - 1) * IQR`` of those means (1.7 interquartile ranges above Q3)."""


@dataclass
class Neighbours:
    """The ``k`` nearest other rows of each row, nearest first.

    Attributes:
        index: ``int64 [n, k]`` row numbers of the neighbours (never the row itself).
        distance: ``float32 [n, k]`` cosine distances, rising along each row.
        backend: ``torch`` (exact), ``faiss`` (exact) or ``faiss-hnsw`` (approximate).
    """

    index: np.ndarray
    distance: np.ndarray
    backend: str

    @property
    def k(self) -> int:
        return self.index.shape[1]


def _normalised(features) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features must be finite (found NaN or inf)")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0))


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def nearest_neighbours(features, k: int = 10, backend: str = "auto", chunk: int = 2048) -> Neighbours:
    """The ``k`` nearest other rows of every row of ``features [N, D]`` by cosine similarity.

    Args:
        k: neighbours per row (at most ``N - 1``).
        backend: ``torch`` (exact), ``faiss`` (exact up to :data:`EXACT_LIMIT` rows, HNSW above),
            or ``auto`` (faiss when installed, else torch).
    """
    x = _normalised(features)
    n = len(x)
    k = min(int(k), n - 1)
    if k < 1:
        raise ValueError(f"neighbours need at least 2 rows, got {n}")
    if backend == "auto":
        backend = "faiss" if faiss_available() else "torch"
    if backend == "torch":
        index, sim = _torch_search(x, k, max(1, min(chunk, 2**27 // n)))  # a block of at most 512 MB
        name = "torch"
    elif backend == "faiss":
        if not faiss_available():
            raise ImportError("backend 'faiss' needs faiss: pip install 'noisylab[features]' (or pip install faiss-cpu)")
        index, sim, name = _faiss_search(x, k)
    else:
        raise ValueError(f"unknown neighbour backend '{backend}' (valid: auto, torch, faiss)")
    distance = np.clip(1.0 - sim, 0.0, 2.0).astype(np.float32)
    return Neighbours(index.astype(np.int64), distance, name)


def _torch_search(x: np.ndarray, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    f = torch.from_numpy(x)
    idx, sims = [], []
    for lo in range(0, len(f), chunk):
        sim = f[lo:lo + chunk] @ f.T  # [q, n]
        rows = torch.arange(len(sim))
        sim[rows, rows + lo] = -float("inf")  # a row is not its own neighbour
        top_sim, top_idx = sim.topk(k, dim=1)
        idx.append(top_idx)
        sims.append(top_sim)
    return torch.cat(idx).numpy(), torch.cat(sims).numpy()


def _faiss_search(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, str]:
    import faiss

    n, d = x.shape
    if n <= EXACT_LIMIT:
        index, name = faiss.IndexFlatIP(d), "faiss"
    else:
        index, name = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT), "faiss-hnsw"
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(64, 2 * k)
    index.add(x)
    sim, found = index.search(x, k + 1)
    # drop the row itself; where an exact copy came first, drop the last hit instead
    own = found == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    return found[keep].reshape(n, k), sim[keep].reshape(n, k), name


def neighbour_label_votes(neighbours: Neighbours, labels, num_classes: int) -> np.ndarray:
    """``float32 [n, C]``: the share of each row's ``k`` neighbours given each label (SimiFeat's
    vote: an unweighted count, so that no feature scale matters); rows sum to 1. float32: a
    million rows at 1,000 classes is 4 GB."""
    labels = np.asarray(labels, dtype=np.int64)
    votes = np.zeros((len(labels), num_classes), dtype=np.float32)
    rows = np.arange(len(labels))
    for j in range(neighbours.k):  # each row once per column of neighbours: plain indexed adds are exact
        votes[rows, labels[neighbours.index[:, j]]] += 1.0
    votes /= neighbours.k
    return votes


def near_duplicates(neighbours: Neighbours, threshold: float = NEAR_DUPLICATE_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows that nearly copy another row.

    Returns:
        ``is_near_duplicate bool [n]``: the nearest-neighbour distance is below ``threshold``
        times the median nearest-neighbour distance (with a median of 0, exact copies only);
        ``score float64 [n]`` in [0, 1), ``tanh(d / median)``, lower = more of a copy;
        ``duplicate_of int64 [n]``: the nearest row for a flagged row, else -1.
    """
    nearest = neighbours.distance[:, 0].astype(np.float64)
    median = float(np.median(nearest))
    if median > 0:
        flagged = nearest < threshold * median
        score = np.tanh(nearest / median)
    else:
        flagged = nearest <= 0.0
        score = np.where(flagged, 0.0, np.tanh(nearest))
    return flagged, score, np.where(flagged, neighbours.index[:, 0], -1)


def outliers(neighbours: Neighbours, threshold: float = OUTLIER_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Rows far from every other row.

    Returns:
        ``is_outlier bool [n]``: the mean distance to the ``k`` neighbours exceeds
        ``Q3 + (1 / threshold - 1) * IQR`` of those means;
        ``score float64 [n]`` in (0, 1], ``exp(-mean / median of the means)``, lower = further out.
    """
    mean = neighbours.distance.astype(np.float64).mean(axis=1)
    q1, median, q3 = np.percentile(mean, [25, 50, 75])
    flagged = mean > q3 + (1.0 / threshold - 1.0) * (q3 - q1)
    score = np.exp(-mean / median) if median > 0 else np.where(mean > 0, 0.0, 1.0)
    return flagged, score
