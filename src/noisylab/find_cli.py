"""``noisylab find-issues``: one command from a dataset, or from embeddings, to the list of suspects.

    noisylab find-issues photos/                         # a folder of class folders: trains own_images_elr
    noisylab find-issues labels.csv                      # path,label rows
    noisylab find-issues --features emb.npy --labels y.csv [--names files.txt]
    noisylab find-issues photos/ --backbone timm:convnext_tiny         # frozen backbone: embed once, cached
    noisylab find-issues photos/ --backbone timm:convnext_tiny --finetune   # or train it (own_images_elr)

Standard output gets the table of the top suspects, the estimated noise rate and where the files
are (``--json``: the same as one JSON object); progress and logs go to standard error.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

LABEL_HEADERS = ("label", "labels", "y", "class", "target")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="an image folder (one sub-folder per class), a CSV of path,label rows, "
                                           "an .npz, or a Hugging Face save_to_disk folder")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides for the training recipe")
    p.add_argument("--features", help="embeddings instead of data: .npy [N, D] (or .npz with x)")
    p.add_argument("--labels", help="with --features: .npy, or a CSV/text file of one label (or name,label) per row")
    p.add_argument("--names", help="with --features: a text file of one name per row (file names, ids)")
    p.add_argument("--backbone", metavar="LIB:NAME",
                   help="a pretrained backbone (timm:NAME or torchvision:NAME): frozen, its embeddings are "
                        "computed once (cached) and read as --features are; with --finetune, trained")
    p.add_argument("--checkpoint", help="with --backbone: a local weights file instead of the library's cache")
    p.add_argument("--finetune", action="store_true", help="with --backbone: fine-tune it with the recipe")
    p.add_argument("-k", type=int, default=10, help="neighbours per example (features; default 10)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (features; default 5)")
    p.add_argument("--filter-by", dest="filter_by", default="auto",
                   help="how probabilities become flags (auto, predicted_neq_given, simifeat, a cleanlab filter)")
    p.add_argument("--top", type=int, default=10, help="suspects shown (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--recipe", help="a packaged recipe or YAML file to train instead of the automatic choice")
    p.add_argument("-o", "--output-dir", dest="output_dir", default="runs", help="where the result folder goes")
    p.add_argument("--name", help="result folder name (default find_issues_<data name>)")


def read_label_file(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """``(labels [N], names or None)`` from ``.npy`` or a CSV/text file of ``label`` or ``name,label``
    rows (an optional header row names the label column ``label``, ``y``, ``class`` ...)."""
    from .config import ConfigError

    if path.suffix == ".npy":
        return load_npy(path, "labels"), None
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read labels file '{path}': {err}") from None
    if rows and rows[0][-1].strip().lower() in LABEL_HEADERS:
        rows = rows[1:]
    widths = {len(r) for r in rows}
    if not rows or len(widths) != 1 or widths.pop() not in (1, 2):
        raise ConfigError(f"labels file '{path}' must have one label, or name,label, on every row")
    labels = np.asarray([r[-1].strip() for r in rows])
    if all(_is_int(t) for t in labels):
        labels = labels.astype(np.int64)
    return labels, [r[0].strip() for r in rows] if len(rows[0]) == 2 else None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def load_npy(path: Path, what: str) -> np.ndarray:
    from .config import ConfigError

    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise ConfigError(f"{what} file '{path}' has no array 'x' (found: {', '.join(z.files)})")
                return z["x"]
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError(f"{what} file '{path}' not found") from None
    except (ValueError, OSError, EOFError) as err:
        raise ConfigError(f"cannot read {what} file '{path}' ({' '.join(str(err).split())}); save it with "
                          "numpy.save without object arrays") from None


def features_issues(args: argparse.Namespace):
    from .config import ConfigError
    from .detect.features import find_issues_in_features

    if not args.labels:
        raise ConfigError("--features needs --labels FILE (.npy, or one label or name,label per row)")
    features = load_npy(Path(args.features), "features")
    labels, names = read_label_file(Path(args.labels))
    if args.names:
        try:
            names = [line.rstrip("\n") for line in Path(args.names).read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read names file '{args.names}': {err}") from None
    if features.ndim != 2 or features.dtype.kind not in "fiu":
        raise ConfigError(f"features '{args.features}' must be a numeric [N, D] array, got {features.dtype} "
                          f"{features.shape}")
    if len(features) != len(labels):
        raise ConfigError(f"features '{args.features}' have {len(features)} rows but labels '{args.labels}' "
                          f"{len(labels)}; give one label per row")
    if names is not None and len(names) != len(labels):
        raise ConfigError(f"{len(names)} names for {len(labels)} rows in '{args.names or args.labels}'")
    try:
        return find_issues_in_features(features, labels, k=args.k, folds=args.folds, filter_by=args.filter_by,
                                       names=names)
    except (ValueError, ImportError) as err:
        raise ConfigError(str(err)) from None


def backbone_issues(args: argparse.Namespace):
    """``(LabelIssues, whether its names are image files)`` from a frozen backbone's embeddings of DATA."""
    from .config import ConfigError
    from .detect.features import find_issues_in_features
    from .embed import embed_dataset

    try:
        emb = embed_dataset(args.data, args.backbone, checkpoint=args.checkpoint, progress=not args.quiet)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    import logging

    logging.getLogger("noisylab").info("embeddings %s: %d x %d%s in %.1f s", args.backbone, *emb.features.shape,
                                       " from the cache" if emb.cached else "", emb.seconds)
    try:
        issues = find_issues_in_features(emb.features, emb.labels, k=args.k, folds=args.folds,
                                         filter_by=args.filter_by, class_names=emb.class_names, names=emb.names)
    except (ValueError, ImportError) as err:
        raise ConfigError(str(err)) from None
    issues.seconds = {"embedding": emb.seconds, **issues.seconds}
    return issues, emb.names is not None and all(Path(n).is_file() for n in emb.names[:20])


def write_result_folder(issues, folder: Path, source: str, names_are_files: bool = False) -> list[Path]:
    """``label_issues.csv`` and ``summary.json`` of a features result; returns the files. Names that
    are image files go in the ``path`` column (the report shows them)."""
    from .checkpoint import atomic_write
    from .detect.io import write_label_issues_csv

    folder.mkdir(parents=True, exist_ok=True)
    csv_path, summary_path = folder / "label_issues.csv", folder / "summary.json"
    write_label_issues_csv(csv_path, issues.labels, issues.suggested, issues.is_label_issue, issues.quality,
                           class_names=issues.class_names, names=None if names_are_files else issues.names,
                           paths=issues.names if names_are_files else None, extra_columns=issues.graph_columns())
    summary = {"name": folder.name, "source": source, "detect": {
        "method": "features", "filter_by": issues.filter_by, "rank_by": issues.rank_by,
        "num_flagged": issues.num_issues, "noise_rate_estimate": issues.noise_rate_estimate},
        **{k: v for k, v in issues.summary(top=0).items() if k != "top_suspects"}}
    atomic_write(summary_path, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8"))
    return [csv_path, summary_path]


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .run_folder import new_run_dir

    if bool(args.data) == bool(args.features):
        raise ConfigError("give either DATA (a folder, a CSV, an .npz, a saved Hugging Face dataset) or "
                          "--features FILE --labels FILE")
    if (args.checkpoint or args.finetune) and not args.backbone:
        raise ConfigError("--checkpoint and --finetune go with --backbone LIB:NAME")
    if args.backbone and not args.data:
        raise ConfigError("--backbone embeds the images of DATA: give a folder, a CSV, an .npz or a saved dataset")
    if args.backbone and not args.finetune:
        if args.overrides:
            raise ConfigError(f"config overrides ({args.overrides[0]}) apply to a training run, not to a frozen "
                              "backbone (add --finetune to train it)")
        issues, is_files = backbone_issues(args)
        folder = new_run_dir(args.output_dir, args.name or f"find_issues_{Path(args.data).expanduser().resolve().stem}")
        files = write_result_folder(issues, folder, str(args.data), names_are_files=is_files)
        from .report.html import write_html_report

        files.append(write_html_report(folder))
    elif args.features:
        if args.overrides:
            raise ConfigError(f"config overrides ({args.overrides[0]}) apply to a training run, not to --features")
        issues = features_issues(args)
        name = args.name or f"find_issues_{Path(args.features).stem}"
        folder = new_run_dir(args.output_dir, name)
        files = write_result_folder(issues, folder, str(args.features))
        from .report.html import write_html_report

        files.append(write_html_report(folder))
    else:
        issues, folder = train_and_find(args)
        files = [folder / "label_issues.csv", folder / "report.html"]
    print_result(issues, [f for f in files if f.exists()], args)
    return 0


def train_and_find(args: argparse.Namespace):
    from .config import ConfigError
    from .training import train
    from .find import issues_from_run, training_config

    overrides = list(args.overrides)
    if args.backbone:  # fine-tune: the backbone's weights, input size and normalisation
        from .models.pretrained import create_backbone

        _, inp = create_backbone(args.backbone, pretrained=args.checkpoint is None, checkpoint=args.checkpoint)
        overrides = [f"model.arch={args.backbone}", "model.options={}", "model.options.pretrained=true",
                     f"data.options.image_size={inp.size}", f"data.options.mean={list(inp.mean)}",
                     f"data.options.std={list(inp.std)}"] + \
                    ([f"model.options.checkpoint={args.checkpoint}"] if args.checkpoint else []) + overrides
    try:
        cfg = training_config(args.data, output_dir=args.output_dir, name=args.name, overrides=overrides,
                              recipe=args.recipe)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    result = train(cfg)
    from .report.html import write_html_report

    write_html_report(result.run_dir)
    return issues_from_run(result.run_dir), result.run_dir


def print_result(issues, files: list[Path], args: argparse.Namespace) -> None:
    summary = issues.summary(top=args.top) | {"files": [str(f) for f in files]}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    from .report.summary import format_table

    rows = [[s.get("name", str(s["row"])), s["given"], s["suggested"], f"{s['quality']:.4f}"]
            for s in summary["top_suspects"]]
    if rows:
        print(format_table(["example", "given", "suggested", "score"], rows))
    print(f"{issues.num_issues} of {len(issues)} labels suspected; estimated noise rate {issues.noise_rate_text}")
    if "near_duplicates" in summary:
        print(f"{summary['near_duplicates']} near duplicates, {summary['outliers']} outliers")
    for f in files:
        print(f"-> {f}")
    sys.stdout.flush()
