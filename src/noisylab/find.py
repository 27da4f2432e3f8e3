"""One call from a dataset to its suspected wrong labels: :func:`find_label_issues`.

    import noisylab
    issues = noisylab.find_label_issues(X, y)             # embeddings [N, D] and labels [N]: seconds
    issues = noisylab.find_label_issues("photos/")        # a folder of class folders: trains a model
    issues.to_pandas().head(20)                           # the top suspects
    mask = noisylab.find_label_issues(labels, pred_probs)  # cleanlab's form: a boolean mask

Features go to :func:`noisylab.detect.features.find_issues_in_features` (neighbour votes and a
cross-validated logistic regression, no network). Anything else is data to train on: an image
folder (one sub-folder per class), a CSV of ``path,label`` rows, an ``.npz`` of arrays or a
Hugging Face dataset saved with ``save_to_disk``; :func:`recipe_for` picks the packaged recipe,
the run folder keeps everything (``label_issues.csv``, ``report.html``, the model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data.custom import data_kind, npz_holds_features
from .detect.features import LabelIssues, find_issues_in_features


def recipe_for(kind: str, num_examples: int | None = None) -> str:
    """The packaged recipe for a dataset kind: images get ``own_images_elr`` (CE until the
    memorization alarm, then ELR, with a held-out part of the labels; ``noisylab configs
    own_images_elr``). ``own_images_fast`` (``--recipe``) trains twice as fast and detects less
    well (docs/results.md, "Your own image folder")."""
    if kind in ("folder", "csv", "npz", "hf"):
        return "own_images_elr"
    raise ValueError(f"no recipe for data of kind '{kind}'")


def training_config(data: str | Path, *, output_dir: str | Path = "runs", name: str | None = None,
                    overrides: Sequence[str] = (), recipe: str | None = None):
    """The validated :class:`~noisylab.config.Config` that ``find-issues`` trains for ``data``."""
    from .config import apply_overrides, build_config, read_yaml, resolve_config

    kind = data_kind(data)
    base = read_yaml(str(resolve_config(recipe or recipe_for(kind))))
    base["data"]["dataset"] = kind
    base["data"]["root"] = str(Path(data).expanduser())
    base["name"] = name or f"find_issues_{Path(data).expanduser().resolve().stem or 'data'}"
    base["output_dir"] = str(output_dir)
    return build_config(apply_overrides(base, list(overrides)))


def issues_from_run(run_dir: str | Path) -> LabelIssues:
    """The :class:`LabelIssues` of a finished run folder: its detector on ``predictions.npz``, with
    the file names, and the noise estimate of that verdict (made again, so that a run written by an
    earlier version gets the rate of today's flags)."""
    import json

    from .detect import detect_label_issues, detection_summary
    from .detect.io import read_evidence

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    det = summary.get("detect") or {}
    arrays, ev = read_evidence(run_dir / "predictions.npz")
    found = detect_label_issues(ev, det.get("method", "history"), det.get("filter_by", "auto"),
                                rank_by=det.get("rank_by", "relative_confidence"))
    noise = detection_summary(found, ev.given, None, ev.num_classes)
    order = np.argsort(arrays["index"], kind="stable")  # rows in dataset order
    names = arrays["example_path"][order].tolist() if "example_path" in arrays else None
    classes = arrays["class_names"].tolist() if "class_names" in arrays else [str(c) for c in range(ev.num_classes)]
    return LabelIssues(labels=ev.given[order], class_names=classes, probs=found.probs[order],
                       quality=found.quality[order], is_label_issue=found.flagged[order],
                       suggested=found.suggested[order],
                       noise_rate_estimate=float(noise["noise_rate_estimate"]),
                       filter_by=found.filter_by, rank_by=found.rank_by, names=names,
                       seconds={"training": float(summary.get("wall_time_s", 0.0))},
                       noise_rate_check=noise.get("noise_rate_check"), noise_rate_pinned=noise.get("noise_rate_pinned", True))


RUN_FILES = ("noisy_labels.npz", "predictions.npz", "split.npz", "summary.json", "config.yaml", "metrics.csv")
"""A run folder's own files, which a relabelled label file never replaces."""


def check_relabel_target(out: str | Path, *, also_written: Sequence[str | Path] = ()) -> Path:
    """``out`` as a path a relabelled label file may be written to: a new ``.npz`` / ``.csv`` file
    in an existing folder, none of a run folder's own files and none of ``also_written`` (the
    command's other outputs). Raises one-line :class:`~noisylab.config.ConfigError`s."""
    from .config import ConfigError

    out = Path(out)
    if out.suffix.lower() not in (".npz", ".csv"):
        raise ConfigError(f"relabelled labels go to a .npz or .csv file, not '{out}'")
    if out.exists():
        raise ConfigError(f"'{out}' already exists: give a new file name for the relabelled labels (or remove it)")
    if not out.parent.is_dir():
        raise ConfigError(f"the folder of '{out}' does not exist: create it or give another file name")
    if out.name in RUN_FILES or out.name.startswith("label_issues") \
            or any(out.resolve() == Path(p).resolve() for p in also_written):
        raise ConfigError(f"'{out}' is a run's own file or this command's other output: give another file name")
    return out


def relabel_run(run_dir: str | Path, out: str | Path, *, method: str = "history", filter_by: str = "auto",
                threshold: float = 0.5, rank_by: str = "relative_confidence", detection=None):
    """Write ``out`` (a new ``.npz`` or ``.csv``): the run's label file with every flagged training
    label replaced by the detector's suggested label (its most likely class), ready to train a
    second run on with ``noise.file=out``. Held-out labels stay as they were, and the split is made
    on the labels before any relabelling (:attr:`~noisylab.noise.NoisyLabels.clean`), so a second
    run with the same seed and ``data.val_fraction`` holds out the same examples with the same
    labels and its noisy validation accuracy compares with the first's.

    ``detection``: ``(arrays, evidence, found)`` of this run's ``predictions.npz`` when the caller
    has already detected (``noisylab detect``), else the detector runs here.

    The idea of training again on labels corrected by a first model's predictions is old (Reed
    et al., "Training deep neural networks on noisy labels with bootstrapping", 2015, hard
    bootstrapping; Tanaka et al., "Joint optimization framework for learning with noisy labels",
    CVPR 2018); this is its simplest two-run form. Returns the new
    :class:`~noisylab.noise.NoisyLabels`; its options say where it came from, how many labels
    changed (``relabelled``) and the SHA-256 of the ``predictions.npz`` they came from
    (``relabelled_predictions_sha256``).
    """
    from .checkpoint import atomic_write, file_sha256
    from .config import ConfigError
    from .detect import detect_label_issues
    from .detect.io import read_evidence
    from .noise import NoiseError, NoisyLabels

    run_dir, out = Path(run_dir), check_relabel_target(out)
    try:
        labels = NoisyLabels.load(run_dir / "noisy_labels.npz")
    except NoiseError as err:
        raise ConfigError(f"relabelling reads the run's label file: {err}") from None
    if detection is None:
        arrays, ev = read_evidence(run_dir / "predictions.npz")
        found = detect_label_issues(ev, method, filter_by, threshold, rank_by, keep_probs=False)
    else:
        arrays, ev, found = detection
    index = np.asarray(arrays["index"], dtype=np.int64)
    if index.max(initial=-1) >= len(labels) or not np.array_equal(labels.noisy[index], ev.given):
        raise ConfigError(f"'{run_dir}': predictions.npz and noisy_labels.npz disagree on the given labels "
                          "(files from different runs?)")
    change = np.flatnonzero(found.flagged & np.asarray(ev.in_training, dtype=bool) & (found.suggested != ev.given))
    # the hash ties the file to the very predictions it came from: a run trained again in the same
    # folder writes new predictions, and a stale relabelled file can be told apart
    new = labels.relabelled(index[change], found.suggested[change], relabelled_from=str(run_dir),
                            relabelled=int(len(change)), relabelled_by=f"{method}, {found.filter_by}",
                            relabelled_predictions_sha256=file_sha256(run_dir / "predictions.npz"))
    atomic_write(out, new.save)  # save picks the format by the suffix, which the temporary name keeps
    return new


def find_label_issues(data, labels=None, *, pred_probs=None, names: Sequence[str] | None = None,
                      class_names: Sequence[str] | None = None, k: int = 10, folds: int = 5, seed: int = 0,
                      filter_by: str | None = None, output_dir: str | Path = "runs", overrides: Sequence[str] = (),
                      backbone: str | None = None, checkpoint: str | Path | None = None, **cleanlab_options: Any):
    """Suspected wrong labels of a dataset.

    Forms:
        - ``find_label_issues(features [N, D], labels [N])``: embeddings or any numeric
          features; returns :class:`~noisylab.detect.features.LabelIssues` in seconds.
        - ``find_label_issues(path)``: a dataset to train on (see the module doc; ``labels``
          must be None: they are in the data); trains the packaged recipe into
          ``output_dir`` (``overrides``: ``key=value`` config settings) and returns its
          :class:`LabelIssues`.
        - ``find_label_issues(path, backbone="timm:NAME")``: the frozen pretrained backbone's
          embeddings of the images (:func:`noisylab.embed.embed_dataset`, cached; ``checkpoint``:
          a local weights file), then the features form.
        - ``find_label_issues(labels [N], pred_probs [N, C], ...)``: cleanlab's form, the boolean
          mask of :func:`noisylab.detect.find_label_issues` (keyword options pass through).

    Args:
        names: one name per example (file names, ids) for the features form.
        class_names: the class order for integer labels, or the names of string labels.
        k, folds: neighbours per example and cross-validation folds (features form).
        filter_by: how the probabilities become flags; default ``auto`` (expected F1 with
            cleanlab), in cleanlab's form ``predicted_neq_given`` as there.
    """
    from .detect.scores import find_label_issues as from_probs

    if pred_probs is not None or (labels is not None and np.ndim(labels) == 2 and np.ndim(data) == 1):
        probs = labels if pred_probs is None else pred_probs
        given = data if pred_probs is None or labels is None else labels
        return from_probs(given, probs, filter_by=filter_by or "predicted_neq_given", **cleanlab_options)
    filter_by = filter_by or "auto"
    if cleanlab_options:
        raise TypeError(f"unexpected options {sorted(cleanlab_options)} (they belong to the labels, pred_probs form)")
    if isinstance(data, (str, Path)):
        if labels is not None:
            raise ValueError("a dataset path carries its own labels: call find_label_issues(path) without labels")
        if backbone is not None:
            from .embed import embed_dataset

            emb = embed_dataset(data, backbone, checkpoint=checkpoint)
            return find_issues_in_features(emb.features, emb.labels, k=k, folds=folds, seed=seed, filter_by=filter_by,
                                           class_names=emb.class_names, names=emb.names)
        if data_kind(data) == "npz" and npz_holds_features(data):
            with np.load(Path(data), allow_pickle=False) as z:
                return find_issues_in_features(z["x"], z["y"], k=k, folds=folds, seed=seed, filter_by=filter_by,
                                               class_names=[str(c) for c in z["class_names"]]
                                               if "class_names" in z.files else class_names, names=names)
        from .training import train

        result = train(training_config(data, output_dir=output_dir, overrides=overrides))
        return issues_from_run(result.run_dir)
    if labels is None:
        raise ValueError("features need their labels: find_label_issues(features, labels)")
    return find_issues_in_features(data, labels, k=k, folds=folds, seed=seed, filter_by=filter_by,
                                   class_names=class_names, names=names)
