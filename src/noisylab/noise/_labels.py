"""The :class:`NoisyLabels` record: noisy labels plus everything needed to report, save and
regenerate them.

File formats (chosen by the suffix of the path):

* ``.npz`` — arrays ``noisy`` (int64 [N]), ``is_noisy`` (bool [N]), optionally ``clean``
  (int64 [N]), and ``spec``: a 0-d unicode array holding a JSON object (format name, version,
  kind, rate, num_classes, seed, options, expected_rate, class_names, a sha256 of the noisy
  labels). No object arrays: ``np.load(path, allow_pickle=False)`` reads it.
* ``.csv`` — first line ``# noisylab-noisy-labels <the same JSON>``, then a header
  ``index,clean,noisy,is_noisy`` (``clean`` omitted when unknown) and one row per example,
  ``is_noisy`` written as 0/1.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "noisylab-noisy-labels"
FORMAT_VERSION = 1

DAMAGED_NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError)
"""What ``np.load`` of a damaged ``.npz`` raises: a broken archive, a broken deflate stream, a
truncated file, or (zipfile) a header naming a compression method that does not exist."""

KINDS: tuple[str, ...] = ("none", "symmetric", "asymmetric", "pairflip", "instance", "matrix", "human")
"""Valid values of ``kind`` for :func:`noisylab.noise.make_noisy_labels`."""

_MAX_PRINTED_CLASSES = 20


class NoiseError(ValueError):
    """Invalid noise request, option, matrix or label file. The message names the problem and the fix."""


def labels_sha256(labels: np.ndarray) -> str:
    """sha256 (hex) of a label array as little-endian int64, independent of the input dtype."""
    arr = np.ascontiguousarray(np.asarray(labels, dtype="<i8"))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def as_label_array(labels: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    """Validate a 1-D integer label array (list, numpy or torch) and return it as int64 [N].

    Float arrays are accepted only when every value is integral. With ``num_classes`` every
    label must lie in ``[0, num_classes)``.
    """
    if hasattr(labels, "detach") and hasattr(labels, "cpu"):  # torch tensor
        labels = labels.detach().cpu().numpy()
    try:
        arr = np.asarray(labels)
    except (TypeError, ValueError) as err:
        raise NoiseError(f"{name} must be a 1-D array of integer class labels ({err})") from None
    if arr.ndim != 1:
        raise NoiseError(f"{name} must be a 1-D array of class labels, got shape {arr.shape}; "
                         "pass one integer label per example")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise NoiseError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise NoiseError(f"{name} must hold integer class labels; found non-integer values "
                             "(convert one-hot or soft labels with argmax first)")
    out = arr.astype(np.int64)
    if num_classes is not None and out.size:
        lo, hi = int(out.min()), int(out.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise NoiseError(f"{name} contains label {bad}, outside [0, {num_classes}); "
                             f"labels must be 0..{num_classes - 1} (remap them, or pass the right num_classes)")
    return out


def _check_json(options: dict, what: str) -> None:
    try:
        json.dumps(options, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise NoiseError(f"{what} must be JSON-serialisable ({err}); store arrays as lists or hashes") from None


@dataclass(eq=False)
class NoisyLabels:
    """Noisy training labels with their provenance.

    Attributes:
        noisy: int64 [N], the labels to train on, each in ``[0, num_classes)``.
        clean: int64 [N], the labels before corruption, or None when unknown (then
            ``is_noisy`` must be given and ``transition_matrix`` is unavailable).
        num_classes: number of classes C.
        kind: one of :data:`KINDS`.
        rate: the requested noise rate (float in [0, 1)) or None for kinds whose noise level
            is not a single rate (``matrix``, ``human``, ``none``).
        seed: the integer seed the labels were generated with.
        options: the kind's options, normalised and JSON-serialisable (large inputs such as
            ``inputs=`` arrays are replaced by their sha256). ``make_noisy_labels(clean, kind,
            rate, num_classes, seed, **options)`` regenerates the same labels (see
            :func:`noisylab.noise.regenerate`).
        is_noisy: bool [N], ``noisy != clean``; computed when ``clean`` is given.
        expected_rate: the expected share of changed labels under the generating process
            (e.g. ``rate * (C-1)/C`` for symmetric noise that may redraw the true class), or
            None when it is not known in closed form.
        class_names: optional C class names used in reports and plots.
    """

    noisy: np.ndarray
    clean: np.ndarray | None
    num_classes: int
    kind: str
    rate: float | None
    seed: int | None
    options: dict = field(default_factory=dict)
    is_noisy: np.ndarray | None = None
    expected_rate: float | None = None
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)) \
                or int(self.num_classes) < 1:
            raise NoiseError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        self.num_classes = int(self.num_classes)
        if self.kind not in KINDS:
            raise NoiseError(f"unknown noise kind {self.kind!r} (valid: {', '.join(KINDS)})")
        self.noisy = as_label_array(self.noisy, "noisy labels", self.num_classes)
        if self.clean is not None:
            self.clean = as_label_array(self.clean, "clean labels", self.num_classes)
            if len(self.clean) != len(self.noisy):
                raise NoiseError(f"clean labels have {len(self.clean)} entries but noisy labels "
                                 f"{len(self.noisy)}; both must describe the same examples")
            computed = self.clean != self.noisy
            if self.is_noisy is not None:
                given = np.asarray(self.is_noisy)
                if given.shape != computed.shape or not np.array_equal(given.astype(bool), computed):
                    raise NoiseError("is_noisy disagrees with clean != noisy; leave it out to have it computed")
            self.is_noisy = computed
        else:
            if self.is_noisy is None:
                raise NoiseError("is_noisy is required when the clean labels are unknown (clean=None)")
            arr = np.asarray(self.is_noisy)
            if arr.shape != self.noisy.shape or not (arr.dtype == bool or np.isin(arr, (0, 1)).all()):
                raise NoiseError(f"is_noisy must be a bool array of shape {self.noisy.shape}")
            self.is_noisy = arr.astype(bool)
        if self.rate is not None:
            self.rate = float(self.rate)
        if self.seed is not None:
            self.seed = int(self.seed)
        if self.expected_rate is not None:
            self.expected_rate = float(self.expected_rate)
        self.options = dict(self.options)
        _check_json(self.options, "options")
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]
            if len(self.class_names) != self.num_classes:
                raise NoiseError(f"class_names has {len(self.class_names)} names for {self.num_classes} classes")

    # ------------------------------------------------------------------ statistics
    def __len__(self) -> int:
        return len(self.noisy)

    @property
    def num_noisy(self) -> int:
        """Number of examples whose label was changed."""
        return int(np.count_nonzero(self.is_noisy))

    @property
    def before_noise(self) -> np.ndarray:
        """``int [N]``: the labels before any noise or relabelling (``clean``), or the given ones
        when those are all there is: which examples these are, in dataset order."""
        return self.noisy if self.clean is None else self.clean

    @property
    def actual_rate(self) -> float:
        """Share of examples whose noisy label differs from the clean one (0.0 when N = 0)."""
        return float(self.num_noisy / len(self.noisy)) if len(self.noisy) else 0.0

    @property
    def transition_counts(self) -> np.ndarray:
        """int64 [C, C]: ``counts[i, j]`` = number of examples with clean label i and noisy label j."""
        if self.clean is None:
            raise NoiseError("the transition matrix needs the clean labels, which this record does not have")
        C = self.num_classes
        return np.bincount(self.clean * C + self.noisy, minlength=C * C).reshape(C, C).astype(np.int64)

    @property
    def transition_matrix(self) -> np.ndarray:
        """float64 [C, C], the empirical transition matrix: rows = true class, columns = noisy
        label, each row the normalised counts of that true class (so it sums to one).

        Rows of classes that have no examples are all zero (not identity): there is no evidence
        about them.
        """
        counts = self.transition_counts.astype(np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    @property
    def spec(self) -> dict:
        """What generated the labels: ``{"kind", "rate", "num_classes", "seed", "options"}``."""
        return {"kind": self.kind, "rate": self.rate, "num_classes": self.num_classes,
                "seed": self.seed, "options": json.loads(json.dumps(self.options))}

    def relabelled(self, index: np.ndarray, labels: np.ndarray, **provenance: Any) -> "NoisyLabels":
        """A copy whose labels at ``index`` (int [k]) are ``labels`` (int [k]), e.g. a detector's
        suggested labels for its flagged examples; the rest stays as it is.

        The clean labels, kind, rate and seed carry over and ``provenance`` (JSON values) is added
        to the options, so the file says where it came from. With clean labels known, ``is_noisy``
        is recomputed; without them it carries over (whether a relabelled example is right is
        unknown).
        """
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        labels = as_label_array(labels, "new labels", self.num_classes)
        if len(index) != len(labels):
            raise NoiseError(f"{len(index)} indices for {len(labels)} new labels")
        if len(index) and (index.min() < 0 or index.max() >= len(self.noisy)):
            raise NoiseError(f"relabelled indices must lie in [0, {len(self.noisy)})")
        noisy = self.noisy.copy()
        noisy[index] = labels
        return NoisyLabels(noisy, self.clean, self.num_classes, self.kind, self.rate, self.seed,
                           {**self.options, **provenance},
                           is_noisy=None if self.clean is not None else self.is_noisy.copy(),
                           expected_rate=self.expected_rate, class_names=self.class_names)

    # ------------------------------------------------------------------ report
    def _name(self, c: int) -> str:
        if self.class_names and self.class_names[c] != str(c):
            return f"{c} {self.class_names[c]}"
        return str(c)

    def summary(self) -> str:
        """A plain-text report: spec, requested / expected / actual rate, per-class flip counts
        and the transition matrix (in percent; for more than 20 classes only the largest
        off-diagonal cells are listed)."""
        N, C = len(self.noisy), self.num_classes
        lines = [f"noisy labels: kind={self.kind}, N={N}, classes={C}, seed={self.seed}"]
        if self.options:
            opts = ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.options.items()))
            lines.append(f"options: {opts}")
        req = "n/a" if self.rate is None else f"{self.rate:.4f}"
        exp = "n/a" if self.expected_rate is None else f"{self.expected_rate:.4f}"
        lines.append(f"rate: requested {req}, expected {exp}, actual {self.actual_rate:.4f} "
                     f"({self.num_noisy} of {N} labels changed)")
        if self.clean is None:
            lines.append("(clean labels unknown: no per-class report)")
            return "\n".join(lines)
        counts = self.transition_counts
        totals = counts.sum(axis=1)
        changed = totals - np.diag(counts)
        lines.append("per true class: changed / total (share), most common wrong label")
        off = counts.copy()
        np.fill_diagonal(off, -1)
        for c in range(C):
            if totals[c] == 0:
                lines.append(f"  {self._name(c)}: no examples")
                continue
            share = changed[c] / totals[c]
            entry = f"  {self._name(c)}: {changed[c]} / {totals[c]} ({share:.1%})"
            if changed[c]:
                j = int(np.argmax(off[c]))
                entry += f", mostly -> {self._name(j)} ({counts[c, j]})"
            lines.append(entry)
        P = self.transition_matrix
        if C <= _MAX_PRINTED_CLASSES:
            lines.append("transition matrix, % (rows = true class, columns = noisy label):")
            width = 6
            lines.append(" " * 5 + "".join(f"{j:>{width}d}" for j in range(C)))
            for i in range(C):
                lines.append(f"{i:>4d} " + "".join(f"{100 * P[i, j]:>{width}.1f}" for j in range(C)))
        else:
            cells = [(P[i, j], i, j) for i, j in zip(*np.nonzero(counts)) if i != j]
            cells.sort(key=lambda t: (-t[0], t[1], t[2]))
            lines.append(f"transition matrix: {C}x{C}, {len(cells)} non-zero off-diagonal cells; largest:")
            for p, i, j in cells[:_MAX_PRINTED_CLASSES]:
                lines.append(f"  {self._name(int(i))} -> {self._name(int(j))}: {100 * p:.1f}%")
        return "\n".join(lines)

    # ------------------------------------------------------------------ files
    def _spec_json(self) -> str:
        doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **self.spec,
               "expected_rate": self.expected_rate, "class_names": self.class_names,
               "num_examples": len(self.noisy), "has_clean": self.clean is not None,
               "noisy_sha256": labels_sha256(self.noisy)}
        return json.dumps(doc, sort_keys=True, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        """Write the record to ``path`` (``.npz`` or ``.csv``, by suffix) and return the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".npz", ".csv"):
            raise NoiseError(f"cannot save noisy labels to {path}: use a .npz or .csv file name")
        spec = self._spec_json()
        if suffix == ".npz":
            arrays = {"noisy": self.noisy.astype("<i8"), "is_noisy": self.is_noisy.astype(bool),
                      "spec": np.array(spec)}
            if self.clean is not None:
                arrays["clean"] = self.clean.astype("<i8")
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)  # a file object keeps numpy from appending ".npz"
            path.write_bytes(buf.getvalue())
        else:
            cols = ["index"] + (["clean"] if self.clean is not None else []) + ["noisy", "is_noisy"]
            data = [np.arange(len(self.noisy))]
            if self.clean is not None:
                data.append(self.clean)
            data += [self.noisy, self.is_noisy.astype(np.int64)]
            table = np.stack(data, axis=1) if len(self.noisy) else np.zeros((0, len(cols)), np.int64)
            with open(path, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(f"# {FORMAT_NAME} {spec}\n")
                fh.write(",".join(cols) + "\n")
                np.savetxt(fh, table, fmt="%d", delimiter=",")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NoisyLabels":
        """Read a file written by :meth:`save`, checking its structure and the stored hash.

        Raises:
            NoiseError: missing file, unknown suffix, not a noisylab label file, or contents
                that are inconsistent (length, range, hash, is_noisy).
        """
        path = Path(path)
        if not path.is_file():
            raise NoiseError(f"noisy-label file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            spec, arrays = _read_npz(path)
        elif suffix == ".csv":
            spec, arrays = _read_csv(path)
        else:
            raise NoiseError(f"cannot read noisy labels from {path}: expected a .npz or .csv file")
        return _from_parts(path, spec, arrays)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad_file(path: Path, why: str) -> NoiseError:
    return NoiseError(f"{path} is not a valid noisylab noisy-label file: {why}. "
                      "Re-create it with NoisyLabels.save or `noisylab noise -o FILE`")


def _parse_spec(path: Path, text: str) -> dict:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise _bad_file(path, f"the spec is not valid JSON ({err})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT_NAME:
        raise _bad_file(path, f"the spec does not declare format {FORMAT_NAME!r}")
    if spec.get("version") != FORMAT_VERSION:
        raise _bad_file(path, f"format version {spec.get('version')!r} is not supported (expected {FORMAT_VERSION})")
    for key in ("kind", "num_classes", "num_examples", "noisy_sha256", "options", "has_clean"):
        if key not in spec:
            raise _bad_file(path, f"the spec lacks the key {key!r}")
    return spec


def _read_npz(path: Path) -> tuple[dict, dict]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, *DAMAGED_NPZ_ERRORS) as err:
        raise _bad_file(path, f"it cannot be read as a pickle-free npz archive ({err or type(err).__name__})") from None
    for key in ("noisy", "is_noisy", "spec"):
        if key not in arrays:
            raise _bad_file(path, f"the array {key!r} is missing (found: {', '.join(sorted(arrays)) or 'none'})")
    spec_arr = arrays.pop("spec")
    if spec_arr.ndim != 0 or spec_arr.dtype.kind != "U":
        raise _bad_file(path, "'spec' must be a 0-d string array")
    return _parse_spec(path, str(spec_arr[()])), arrays


def _read_csv(path: Path) -> tuple[dict, dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline().rstrip("\n")
            header = fh.readline().strip()
            body = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise _bad_file(path, f"it cannot be read as UTF-8 text ({err})") from None
    prefix = f"# {FORMAT_NAME} "
    if not first.startswith(prefix):
        raise _bad_file(path, f"the first line must start with {prefix.strip()!r}")
    spec = _parse_spec(path, first[len(prefix):])
    cols = header.split(",")
    expected = ["index"] + (["clean"] if spec["has_clean"] else []) + ["noisy", "is_noisy"]
    if cols != expected:
        raise _bad_file(path, f"the header is {header!r}, expected {','.join(expected)!r}")
    try:
        table = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as err:
        raise _bad_file(path, f"a row is not {len(cols)} comma-separated integers ({err})") from None
    if table.size == 0:
        table = np.zeros((0, len(cols)), np.int64)
    if table.shape[1] != len(cols):
        raise _bad_file(path, f"rows have {table.shape[1]} columns, expected {len(cols)}")
    if not np.array_equal(table[:, 0], np.arange(len(table))):
        raise _bad_file(path, "the index column must be 0, 1, 2, ... in order")
    arrays = {name: table[:, i] for i, name in enumerate(cols)}
    if not np.isin(arrays["is_noisy"], (0, 1)).all():
        raise _bad_file(path, "is_noisy must be 0 or 1")
    arrays["is_noisy"] = arrays["is_noisy"].astype(bool)
    return spec, arrays


def _from_parts(path: Path, spec: dict, arrays: dict) -> NoisyLabels:
    noisy = arrays["noisy"]
    if noisy.ndim != 1 or len(noisy) != spec["num_examples"]:
        raise _bad_file(path, f"'noisy' has shape {noisy.shape}, the spec says {spec['num_examples']} examples")
    if not np.issubdtype(noisy.dtype, np.integer):
        raise _bad_file(path, f"'noisy' has dtype {noisy.dtype}, expected int64")
    if labels_sha256(noisy) != spec["noisy_sha256"]:
        raise _bad_file(path, "the noisy labels do not match the stored sha256 (the file was modified or damaged)")
    clean = arrays.get("clean")
    if spec["has_clean"] and clean is None:
        raise _bad_file(path, "the spec says clean labels are stored but 'clean' is missing")
    if clean is not None and (clean.ndim != 1 or not np.issubdtype(clean.dtype, np.integer)):
        raise _bad_file(path, f"'clean' must be a 1-D integer array, got {clean.dtype} {clean.shape}")
    is_noisy = arrays["is_noisy"]
    if is_noisy.dtype != bool:
        raise _bad_file(path, f"'is_noisy' has dtype {is_noisy.dtype}, expected bool")
    if not isinstance(spec["options"], dict):
        raise _bad_file(path, "'options' in the spec must be an object")
    try:
        return NoisyLabels(noisy=noisy, clean=clean, num_classes=spec["num_classes"], kind=spec["kind"],
                           rate=spec.get("rate"), seed=spec.get("seed"), options=spec["options"],
                           is_noisy=is_noisy, expected_rate=spec.get("expected_rate"),
                           class_names=spec.get("class_names"))
    except NoiseError as err:
        raise _bad_file(path, str(err)) from None


def plot_transition_matrix(noisy_labels: NoisyLabels, path: str | Path, *, title: str | None = None) -> Path:
    """Save a heatmap of ``noisy_labels.transition_matrix`` (rows = true class) as an image.

    Uses matplotlib's object-oriented Agg canvas, so the global pyplot backend is untouched.
    Cells are annotated with percentages when there are at most 20 classes.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is a core dependency
        raise NoiseError("plotting needs matplotlib: pip install matplotlib") from err
    P = noisy_labels.transition_matrix
    C = noisy_labels.num_classes
    size = min(12.0, 3.0 + 0.5 * C)
    fig = Figure(figsize=(size, size * 0.9))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(P, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="P(noisy label | true class)")
    ax.set_xlabel("noisy label")
    ax.set_ylabel("true class")
    if C <= _MAX_PRINTED_CLASSES:
        from ..report.plots import annotate_matrix

        annotate_matrix(ax, P, noisy_labels.class_names or [str(c) for c in range(C)])
    rate = "" if noisy_labels.rate is None else f" {noisy_labels.rate:g}"
    ax.set_title(title or f"{noisy_labels.kind}{rate}: actual rate {noisy_labels.actual_rate:.3f}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def as_float(value: Any) -> float:
    """``float(value)``, with integers beyond the float range mapped to +-inf instead of OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def round_half_up(x: float) -> int:
    """Round a non-negative float to the nearest integer, halves up (not banker's rounding)."""
    return int(math.floor(x + 0.5))
