"""``noisylab noise``: make (or load) noisy labels for a dataset, save them and print a report.

Examples::

    noisylab noise --dataset cifar10 --kind instance --rate 0.4 --seed 0 -o labels.npz --plot
    noisylab noise --labels my_labels.csv --num-classes 5 --kind symmetric --rate 0.2 -o noisy.csv
    noisylab noise --dataset cifar10 --kind human --variant worst --path CIFAR-10_human.pt -o worst.npz

The main CLI mounts this module with ``add_arguments(subparser)`` and ``run(args)``; it also
runs on its own as ``python -m noisylab.noise_cli``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .noise import KINDS, NoiseError, check_noise_spec, make_noisy_labels, plot_transition_matrix

PROG = "noisylab noise"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``noise`` options to ``parser``."""
    src = parser.add_argument_group("labels to corrupt (one of)")
    src.add_argument("--dataset", help="registered dataset name (e.g. cifar10, mnist1d); its training labels are used")
    src.add_argument("--root", help="dataset folder passed to the loader")
    src.add_argument("--labels", metavar="FILE", help="your own labels: .npy (1-D ints) or .csv/.txt "
                     "(one integer per line; a header line is allowed, a 'label' column is used if there are several)")
    src.add_argument("--num-classes", type=int, help="number of classes for --labels (required with it)")
    gen = parser.add_argument_group("noise")
    gen.add_argument("--kind", required=True, choices=KINDS, help="noise kind")
    gen.add_argument("--rate", type=float, help="noise rate in [0, 1) (symmetric, asymmetric, pairflip, instance)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gen.add_argument("--include-true", action="store_true", default=None,
                     help="symmetric: redraw from all classes, the ELR/DivideMix convention (actual rate ~ r(C-1)/C)")
    gen.add_argument("--exact", action=argparse.BooleanOptionalAction, default=None,
                     help="flip an exact count (symmetric: round(rN); per class for asymmetric/pairflip/matrix) "
                          "instead of independent draws")
    gen.add_argument("--compat", choices=["elr"], help="asymmetric: reproduce the official ELR code's in-place flips")
    gen.add_argument("--superclass", choices=["blocks", "coarse"],
                     help="CIFAR-100 asymmetric: blocks of 5 indices (ELR) or the real superclasses")
    gen.add_argument("--variant", help="instance: xia | shared; human: aggre | random1 | random2 | random3 | worst "
                                       "(CIFAR-10N), fine | coarse (CIFAR-100N)")
    gen.add_argument("--std", type=float, help="instance: std of the per-example flip rate (default 0.1)")
    gen.add_argument("--matrix", metavar="FILE", help="matrix: C x C row-stochastic transition matrix (.npy or .csv)")
    gen.add_argument("--path", metavar="PATH",
                     help="human: CIFAR-10_human.pt / CIFAR-100_human.pt / npz, or its folder")
    gen.add_argument("--download", action="store_true", default=None,
                     help="human: download the CIFAR-N file into --path when missing (md5-checked)")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", metavar="FILE", help="write the noisy labels (.npz or .csv)")
    out.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                     help="save a heatmap of the transition matrix (default name: the output's name with .png)")


def read_label_file(path: str | Path) -> np.ndarray:
    """Read integer labels from ``.npy`` (1-D) or ``.csv`` / ``.txt`` (one per line, optional
    header; with several columns the one named ``label``/``labels``/``y`` is used)."""
    path = Path(path)
    if not path.is_file():
        raise NoiseError(f"label file {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise NoiseError(f"cannot read {path} as a numeric .npy array ({err})") from None
        if arr.ndim != 1:
            raise NoiseError(f"{path} holds an array of shape {arr.shape}; expected one label per example (1-D)")
        return arr
    if path.suffix.lower() not in (".csv", ".txt"):
        raise NoiseError(f"cannot read labels from {path}: use a .npy, .csv or .txt file")
    rows = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise NoiseError(f"{path} is empty")
    sep = "," if "," in rows[0] else None
    first = [c.strip() for c in rows[0].split(sep)]
    column = 0
    try:
        [float(c) for c in first]
        body = rows
    except ValueError:  # a header line
        body = rows[1:]
        if len(first) > 1:
            names = [c.lower() for c in first]
            hits = [i for i, n in enumerate(names) if n in ("label", "labels", "y")]
            if not hits:
                raise NoiseError(f"{path} has columns {first}; name the label column 'label'")
            column = hits[0]
    try:
        values = [float(r.split(sep)[column]) for r in body]
    except (ValueError, IndexError):
        raise NoiseError(f"{path}: every row must hold an integer label in column {column + 1}") from None
    return np.asarray(values)


def _read_matrix(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise NoiseError(f"matrix file {path} does not exist")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        text = path.read_text(encoding="utf-8")
        return np.loadtxt(text.splitlines(), delimiter="," if "," in text else None, ndmin=2)
    except ValueError as err:
        raise NoiseError(f"cannot read a numeric matrix from {path} ({err})") from None


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for name in ("include_true", "exact", "compat", "superclass", "variant", "std", "path", "download"):
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    if args.matrix is not None:
        opts["matrix"] = _read_matrix(args.matrix)
    return opts


def _generate(args: argparse.Namespace):
    # cheap checks first, so mistakes are reported before a dataset is loaded
    if args.dataset and args.labels:
        raise NoiseError("pass either --dataset or --labels, not both")
    if not (args.dataset or args.labels or args.kind == "human"):
        raise NoiseError("pass --dataset NAME or --labels FILE (only --kind human can take the labels from its file)")
    if args.kind == "human" and args.path is None and not args.download:
        raise NoiseError("--kind human needs --path to the CIFAR-N label file (or --download)")
    if args.kind == "instance" and not args.dataset:
        raise NoiseError("instance noise needs the inputs; use --dataset instead of --labels")
    if args.labels and args.num_classes is None and args.kind != "human":
        raise NoiseError("--labels needs --num-classes")
    if args.output and Path(args.output).suffix.lower() not in (".npz", ".csv"):
        raise NoiseError(f"cannot save noisy labels to {args.output}: use a .npz or .csv file name")
    opts = _options(args)
    check_noise_spec(args.kind, args.rate, args.seed, **opts)
    class_names = None
    labels: Any = None
    num_classes = args.num_classes
    if args.dataset:
        from .data import load_dataset

        bundle = load_dataset(args.dataset, root=args.root)
        labels = bundle.train_labels
        if num_classes is not None and num_classes != bundle.num_classes:
            raise NoiseError(f"--num-classes {num_classes} contradicts {args.dataset}'s {bundle.num_classes} classes")
        class_names = list(bundle.class_names)
        if args.kind != "human":  # human labels bring their own class count (CIFAR-100N coarse: 20)
            num_classes = bundle.num_classes
        if args.kind == "instance":
            opts["inputs"] = bundle.train_x
        if args.kind == "asymmetric" and opts.get("superclass") == "coarse" and "coarse_labels" in bundle.extra:
            opts["coarse_labels"] = bundle.extra["coarse_labels"]
    elif args.labels:
        labels = read_label_file(args.labels)
    noisy = make_noisy_labels(labels, args.kind, args.rate, num_classes, args.seed, **opts)
    if class_names is not None and len(class_names) == noisy.num_classes:
        noisy.class_names = class_names
    return noisy


def run(args: argparse.Namespace) -> int:
    """Execute ``noisylab noise``; returns the exit status (2 with one error line on bad input)."""
    try:
        noisy = _generate(args)
        print(noisy.summary())
        if args.output:
            written = noisy.save(args.output)
            print(f"wrote {written}")
        if args.plot is not None:
            if args.plot:
                png = Path(args.plot)
            elif args.output:
                png = Path(args.output).with_suffix(".png")
            else:
                png = Path("transition_matrix.png")
            plot_transition_matrix(noisy, png)
            print(f"wrote {png}")
    except (NoiseError, ValueError, OSError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Make noisy labels, save them and report the noise.")
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
