"""The ``noisylab`` command line.

Every user error (bad config key or value, missing or corrupt file, bad resume path) ends with
one line on stderr naming the problem and the fix, and exit status 2; no traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__

DEFAULT_ENCODER = "runs/simclr_cifar10/encoder.pt"  # where `noisylab pretrain -c configs/simclr_cifar10.yaml` puts it

# the seed repos' flags and the config keys they set
TRAIN_ALIASES: dict[str, str] = {
    "lr": "optim.lr",
    "bs": "train.batch_size",
    "beta": "method.loss.beta",
    "lam": "method.loss.lam",
    "percent": "noise.rate",
    "noise_rate": "noise.rate",
    "noise_type": "noise.kind",
    "epochs": "train.epochs",
    "name": "name",
    "seed": "seed",
    "malpha": "method.mixup_alpha",
    "ealpha": "method.ema_alpha",
    "estep": "method.ema_step",
    "warm": "method.warmup_epochs",
    "device": "device",
    "output_dir": "output_dir",
    "batch_size": "train.batch_size",
    "alpha": "method.base_weight",
}


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "y", "on"):
        return True
    if t in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


class OneLineErrorParser(argparse.ArgumentParser):
    """Command-line mistakes get one line (``noisylab train: error: ...``) and exit status 2,
    like every other bad input; ``--help`` shows the usage."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got '{text}'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def _user_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError, OutputError
    from .config import ConfigError
    from .data import DataError
    from .training import TrainingDiverged
    from .models.registry import ModelError
    from .noise import NoiseError

    return (ConfigError, DataError, ModelError, NoiseError, CheckpointError, TrainingDiverged, OutputError, FileNotFoundError,
            IsADirectoryError, PermissionError)


# ----------------------------------------------------------------------------- train
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML experiment config: a file, or a packaged recipe's name (noisylab configs)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    p.add_argument("-r", "--resume", metavar="PATH",
                   help="continue the run in this folder or checkpoint; 'auto': the config's output_dir/name "
                        "if it has a checkpoint, else start it there")
    p.add_argument("-d", "--device", help="cpu, cuda, cuda:N or N (GPU index), auto")
    p.add_argument("--lr", type=float, help="learning rate (optim.lr)")
    p.add_argument("--bs", type=int, help="batch size (train.batch_size)")
    p.add_argument("--beta", type=float, help="ELR target momentum (method.loss.beta)")
    p.add_argument("--lambda", "--lamb", dest="lam", type=float, help="ELR weight (method.loss.lam)")
    p.add_argument("--percent", type=float, help="noise rate (noise.rate); symmetric unless --asym true")
    p.add_argument("--asym", type=_bool, metavar="BOOL", help="asymmetric noise: true or false (a real boolean)")
    p.add_argument("--noise_type", "--noise-type", dest="noise_type", help="noise kind (noise.kind)")
    p.add_argument("--noise_rate", "--noise-rate", dest="noise_rate", type=float, help="noise rate (noise.rate)")
    p.add_argument("--malpha", type=float, help="ELR+ mixup alpha (method.mixup_alpha)")
    p.add_argument("--ealpha", type=float, help="ELR+ weight-averaging decay (method.ema_alpha)")
    p.add_argument("--estep", type=int, help="ELR+ EMA ramp iterations (method.ema_step)")
    p.add_argument("--warm", type=int, help="ELR+ warm-up epochs of plain CE (method.warmup_epochs)")
    p.add_argument("--simclr_pretrain", "--simclr-pretrain", nargs="?", const=DEFAULT_ENCODER, metavar="ENCODER",
                   help=f"start from a SimCLR encoder (model.encoder_checkpoint, default {DEFAULT_ENCODER}) with "
                        "Adam 1e-3 at a constant rate, as the ICLR-2023 scripts")
    p.add_argument("--finetune_fc_only", "--finetune-fc-only", action="store_true",
                   help="train only the linear classifier on the frozen encoder (method linear_probe)")
    p.add_argument("--down_sample", "--down-sample", action="store_true",
                   help="balance the training set in its noisy labels (data.down_sample)")
    p.add_argument("--reg", choices=["rkd_dis", "rkd_angle"],
                   help="add InfoNCE + this regularizer between representations (method repreg)")
    p.add_argument("--base", action="store_true", help="repreg without the regularizer (method.reg=none)")
    p.add_argument("--warmup_base", type=int, metavar="E",
                   help="ICLR-2023 C100 scripts: CE while epoch <= E (method.ce_warmup_epochs=E+1)")
    p.add_argument("--warmup_reg", type=int, metavar="E",
                   help="ICLR-2023 C100 scripts: base loss alone while epoch <= E (method.reg_start_epoch=E+1)")
    p.add_argument("--alpha", type=float, help="weight of the base loss with the regularizer (method.base_weight)")
    p.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, help="train.batch_size")
    p.add_argument("--epochs", type=int, help="train.epochs")
    p.add_argument("--name", help="run name (folder under output_dir)")
    p.add_argument("--seed", type=int, help="seed of noise, split, init and order")
    p.add_argument("-o", "--output-dir", dest="output_dir", help="where run folders go (default runs/)")


def alias_overrides(args: argparse.Namespace, base: dict | None = None) -> list[str]:
    """Turn the seed repos' flags into dotted overrides (applied before the positional ones).

    ``base`` is the config the flags apply to (the YAML mapping): a flag that switches the method
    (``--finetune_fc_only``, ``--reg``) keeps that config's loss."""
    import json

    from .config import ConfigError

    out: list[str] = []
    for attr, key in TRAIN_ALIASES.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={value}")
    if args.asym is not None:
        kind = "asymmetric" if args.asym else "symmetric"
        if args.noise_type is not None and args.noise_type != kind:
            raise ConfigError(f"--asym {str(args.asym).lower()} means noise kind {kind} but --noise_type says "
                              f"{args.noise_type}; give one of them")
        # switching the kind drops the other kind's options (e.g. include_true of symmetric)
        out += [f"noise.kind={kind}", "noise.options={}"]
    elif args.percent is not None and args.noise_type is None:
        out.append("noise.kind=symmetric")
    if args.percent is not None and args.noise_rate is not None and args.percent != args.noise_rate:
        raise ConfigError(f"--percent {args.percent:g} and --noise_rate {args.noise_rate:g} disagree; give one of them")
    # the ICLR-2023 repo's flags
    method = dict((base or {}).get("method") or {})
    method.setdefault("name", "standard")
    keep_loss = [f"method.loss={json.dumps(method['loss'])}"] if isinstance(method.get("loss"), dict) else []
    if getattr(args, "finetune_fc_only", False) and method["name"] != "linear_probe":
        out += ["method.name=linear_probe", *keep_loss]
    if getattr(args, "reg", None) is not None or getattr(args, "base", False):
        if method["name"] != "repreg":
            out += ["method.name=repreg", *keep_loss]
        out.append(f"method.reg={'none' if args.base else args.reg}")
    if getattr(args, "warmup_base", None) is not None:
        out.append(f"method.ce_warmup_epochs={args.warmup_base + 1}")
    if getattr(args, "warmup_reg", None) is not None:
        out.append(f"method.reg_start_epoch={args.warmup_reg + 1}")
    if getattr(args, "down_sample", False):
        out.append("data.down_sample=true")
    if getattr(args, "simclr_pretrain", None) is not None:
        out += [f"model.encoder_checkpoint={args.simclr_pretrain}", "optim.name=adam", "optim.lr=0.001",
                "optim.weight_decay=0.0", "schedule.name=constant"]
        if args.lr is not None:
            out.append(f"optim.lr={args.lr}")
    return out


def train_config(args: argparse.Namespace):
    """The config of ``noisylab train`` / ``pretrain``: the file (or the resumed run's config) with
    the seed repos' flags, then the ``key=value`` overrides (which win)."""
    from .config import ConfigError, apply_overrides, build_config, read_yaml
    from .training import config_from_checkpoint

    if args.resume and not args.config:
        return config_from_checkpoint(args.resume, alias_overrides(args) + list(args.overrides))
    if not args.config:
        raise ConfigError(f"no config given: noisylab {args.command} -c NAME|FILE.yaml [key=value ...] "
                          "(`noisylab configs` lists the packaged recipes)")
    base = read_yaml(args.config)
    flags = alias_overrides(args, base)
    check_flags_agree(flags, list(args.overrides))
    return build_config(apply_overrides(base, flags + list(args.overrides)))


def check_flags_agree(flags: list[str], overrides: list[str]) -> None:
    """A flag and a ``key=value`` override that set one key to two values: one line, not a silent winner."""
    from .config import ConfigError, parse_override

    by_flag = {".".join(k): (v, text) for text in flags for k, v in [parse_override(text)]}
    for text in overrides:
        key, value = parse_override(text)
        hit = by_flag.get(".".join(key))
        if hit is not None and hit[0] != value:
            raise ConfigError(f"a flag sets {hit[1]} but the override says {text}; give one of them")


def resolve_auto_resume(cfg) -> tuple[str | None, Path | None]:
    """``-r auto``: resume ``output_dir/name`` when it has a checkpoint, else start the run there
    (a scheduler can re-submit the same command until the run is done). Returns (resume, run_dir)."""
    from .training import has_checkpoint

    folder = Path(cfg.output_dir) / cfg.name
    if has_checkpoint(folder):
        return str(folder), None
    return None, folder


def run_training(args: argparse.Namespace):
    """Train the config of ``args`` (``noisylab train`` / ``pretrain``); SIGTERM and SIGINT stop
    it after the current step, with a checkpoint at that step."""
    from .config import ConfigError
    from .training import stop_on_signals, train

    if args.resume == "auto" and not args.config:
        raise ConfigError("-r auto needs the config (-c): it resumes that config's output_dir/name")
    if args.resume is None and args.config and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0"):
        args.resume = "auto"  # torchrun restarted the workers (--max-restarts): continue this run, same folder
    cfg = train_config(args)
    resume, run_dir = resolve_auto_resume(cfg) if args.resume == "auto" else (args.resume, None)

    with stop_on_signals():
        return train(cfg, resume=resume, run_dir=run_dir)


def cmd_train(args: argparse.Namespace) -> int:
    result = run_training(args)
    if result.run_dir is not None:
        print(f"run folder: {result.run_dir}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .config import ConfigError

    cfg = train_config(args)
    if cfg.method.name != "simclr":
        raise ConfigError(f"noisylab pretrain trains an encoder with method simclr (configs/simclr_cifar10.yaml); "
                          f"this config's method is {cfg.method.name}: run it with noisylab train")
    result = run_training(args)
    if result.run_dir is not None:
        encoder = result.run_dir / "encoder.pt"
        print(f"encoder: {encoder}\nuse it with: noisylab train -c configs/ce_fixed_encoder_cifar10_sym.yaml "
              f"model.encoder_checkpoint={encoder}")
    return 0


# ----------------------------------------------------------------------------- detect
def add_detect_arguments(p: argparse.ArgumentParser) -> None:
    from .detect import DETECTORS, FILTERS, SCORES
    from .detect.scores import DEFAULT_RANK_BY

    p.add_argument("run", nargs="?", help="a run folder (reads its predictions.npz)")
    p.add_argument("--labels", help="given labels (.npy, .csv one per line, or a label .npz) instead of a run")
    p.add_argument("--pred-probs", dest="pred_probs",
                   help="[N, C] probabilities (.npy; e.g. a cv run's pred_probs.npy) instead of a run")
    p.add_argument("--method", default=None, choices=list(DETECTORS), help="for a run: the detector (default: history)")
    p.add_argument("--filter-by", dest="filter_by", default="auto", choices=FILTERS,
                   help="how probabilities become flags (auto: expected_f1 with cleanlab, else predicted_neq_given)")
    p.add_argument("--threshold", type=_probability, default=0.5, help="for low_self_confidence (0 to 1)")
    p.add_argument("--rank-by", dest="rank_by", default=DEFAULT_RANK_BY, choices=SCORES,
                   help="the quality score that ranks the examples (lower = more likely wrong)")
    p.add_argument("--only-flagged", action="store_true", help="write only the suspected rows")
    p.add_argument("-o", "--output", help="CSV to write (default: <run>/label_issues_<method>_<filter>.csv)")
    p.add_argument("--relabel", metavar="LABELS.npz",
                   help="for a run: also write its label file with every flagged training label replaced by the "
                        "suggested one (held-out labels kept), to train again on with noise.file=LABELS.npz")


def _load_array(path: str, what: str):
    import numpy as np

    from .config import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file '{p}' not found")
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                key = "noisy" if "noisy" in z else ("pred_probs" if "pred_probs" in z else z.files[0])
                return z[key]
        return np.loadtxt(p, delimiter=",", ndmin=1 if what == "labels" else 2)
    except (ValueError, OSError, EOFError) as err:
        raise ConfigError(f"cannot read {what} file '{p}': {' '.join(str(err).split()) or type(err).__name__}") from None


def cmd_detect(args: argparse.Namespace) -> int:
    if args.run:
        args.method = args.method or "history"
        return _detect_run(args)
    import numpy as np

    from .config import ConfigError
    from .detect import write_label_issues_csv
    from .detect.detectors import detection_from_probs

    if not (args.labels and args.pred_probs):
        raise ConfigError("give a run folder, or both --labels and --pred-probs")
    if args.relabel:
        raise ConfigError("--relabel rewrites a run's label file: give the run folder instead of --labels/--pred-probs")
    if args.method is not None:
        raise ConfigError(f"--method {args.method} reads a run folder's evidence; with --labels/--pred-probs "
                          "the probabilities are the evidence: drop --method")
    given = _load_array(args.labels, "labels").astype(np.int64)
    probs = _load_array(args.pred_probs, "pred_probs")
    if args.output is None:
        raise ConfigError("with --labels/--pred-probs give -o OUTPUT.csv")
    try:
        found = detection_from_probs("pred_probs", given, probs, args.filter_by, args.threshold, args.rank_by)
    except (ValueError, ImportError) as err:
        raise ConfigError(str(err)) from None
    rows = write_label_issues_csv(args.output, given, found.suggested, found.flagged, found.quality,
                                  only_flagged=args.only_flagged)
    print(f"{int(found.flagged.sum())} of {len(given)} labels flagged ({found.filter_by}); {rows} rows -> {args.output}")
    return 0


def _detect_run(args: argparse.Namespace) -> int:
    """Any detector and filter on a finished run: the same columns as the run's label_issues.csv."""
    from .config import ConfigError
    from .detect import detect_label_issues, write_label_issues_csv
    from .detect.io import read_evidence
    from .detect import detection_summary
    from .detect.estimate import noise_rate_text

    run = Path(args.run)
    pred_file = run / "predictions.npz"
    if not pred_file.is_file():
        raise ConfigError(f"'{run}' has no predictions.npz (is it a finished noisylab run folder with a classifier?)")
    out = Path(args.output) if args.output else run / f"label_issues_{args.method}_{args.filter_by}.csv"
    if args.relabel:  # first: a bad file name fails before anything is written
        from .find import check_relabel_target

        check_relabel_target(args.relabel, also_written=[out])
    try:
        arrays, ev = read_evidence(pred_file)
        found = detect_label_issues(ev, args.method, args.filter_by, args.threshold, args.rank_by, keep_probs=False)
    except (ValueError, ImportError) as err:
        raise ConfigError(str(err)) from None
    truth = arrays.get("true_label")
    names = arrays["class_names"].tolist() if "class_names" in arrays else None
    rows = write_label_issues_csv(out, ev.given, found.suggested, found.flagged, found.quality, indices=arrays["index"],
                                  true_labels=truth, class_names=names, only_flagged=args.only_flagged,
                                  paths=arrays["example_path"].tolist() if "example_path" in arrays else None,
                                  in_training=ev.in_training)
    print(f"{int(found.flagged.sum())} of {len(ev.given)} labels flagged ({args.method}, {found.filter_by}); "
          f"{rows} rows -> {out}")
    s = detection_summary(found, ev.given, truth, ev.num_classes)
    print(f"estimated noise rate {noise_rate_text(s)}")
    if truth is not None and s["num_noisy"]:
        print(f"against the known wrong labels: precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
              f"F1 {s['f1']:.3f}  AUROC {s['auroc']:.3f}  AUPRC {s['auprc']:.3f}")
    if args.relabel:
        _relabel(run, args, (arrays, ev, found))
    return 0


def _relabel(run: Path, args: argparse.Namespace, detection) -> None:
    """``detect --relabel``: write the relabelled label file and say what changed."""
    from .find import relabel_run
    from .noise import NoisyLabels

    new = relabel_run(run, args.relabel, method=args.method, filter_by=args.filter_by, detection=detection)
    line = (f"relabelled {new.options['relabelled']} of {len(new)} labels -> {args.relabel} "
            f"(train on it with noise.file={args.relabel} and the first run's seed and data.val_fraction)")
    if detection[0].get("true_label") is not None:  # the label file's clean labels are the truth
        line += f"; wrong labels {NoisyLabels.load(run / 'noisy_labels.npz').actual_rate:.1%} -> {new.actual_rate:.1%}"
    print(line)


# ----------------------------------------------------------------------------- report
def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("summarise finished runs in a table; with one run folder also write RUN/report.html, "
                     "a self-contained page of its plots and suspected labels")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("-o", "--output", help="memorization PNG comparing the runs (default: none)")
    html = p.add_mutually_exclusive_group()
    html.add_argument("--html", action="store_true",
                      help="write RUN/report.html for every run given (default: only when one run is given)")
    html.add_argument("--no-html", dest="no_html", action="store_true", help="print the table only, no HTML page")
    p.add_argument("--html-output", dest="html_output", metavar="PATH",
                   help="where the HTML page of the (single) run goes (default: RUN/report.html)")


def cmd_report(args: argparse.Namespace) -> int:
    """The table of the runs; with one run (or --html) also each run's HTML page; -o: memorization PNG."""
    from .config import ConfigError
    from .report.html import write_html_report
    from .report.summary import report_table
    from .report.plots import plot_memorization, read_memorization_csv

    runs = [Path(r) for r in args.runs]
    if args.html_output and len(runs) != 1:
        raise ConfigError(f"--html-output needs exactly one run folder (got {len(runs)}); use --html to write "
                          "RUN/report.html in each")
    if args.html_output and args.no_html:
        raise ConfigError("--html-output and --no-html contradict each other; give one of them")
    print(report_table(runs))  # refuses a missing or damaged summary.json first
    if args.output:
        curves = {r.name: read_memorization_csv(r / "memorization.csv")
                  for r in runs if (r / "memorization.csv").is_file()}
        if not curves:
            raise ConfigError("none of these runs tracked memorization (true labels unknown?)")
        print(f"plot -> {plot_memorization(curves, args.output)}")
    if not args.no_html and (len(runs) == 1 or args.html):
        for r in runs:
            print(f"report -> {write_html_report(r, args.html_output)}")
    return 0


# ----------------------------------------------------------------------------- demo
def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist1d", choices=["mnist1d", "fashion-mnist"])
    p.add_argument("--root", help="data folder (fashion-mnist: the gzipped IDX files)")
    p.add_argument("--epochs", type=int, help="override the demo's epochs")
    p.add_argument("--rate", type=float, default=0.4, help="symmetric noise rate (default 0.4)")
    p.add_argument("-o", "--output-dir", dest="output_dir", default="runs", help="where the demo folder goes")
    p.add_argument("-d", "--device", default="auto")
    p.add_argument("--seed", type=int, default=0)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(dataset=args.dataset, root=args.root, epochs=args.epochs, rate=args.rate,
             output_dir=args.output_dir, device=args.device, seed=args.seed)
    return 0


# ----------------------------------------------------------------------------- main
def setup_console_log(level: int) -> None:
    """Progress messages of the 'noisylab' logger on stderr (run folders also get a train.log)."""
    log = logging.getLogger("noisylab")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, "noisylab_console", False):
            log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.noisylab_console = True  # type: ignore[attr-defined]
    log.addHandler(handler)


def add_configs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="print this recipe's YAML instead (to copy and edit)")


def cmd_configs(args: argparse.Namespace) -> int:
    """``noisylab configs``: every packaged recipe with the first line of its header;
    ``noisylab configs NAME``: its YAML."""
    from .config import packaged_configs, resolve_config

    if args.name:
        sys.stdout.write(resolve_config(args.name).read_text(encoding="utf-8"))
        return 0
    recipes = packaged_configs()
    width = max(map(len, recipes))
    for name, line in recipes.items():
        print(f"{name:<{width}}  {line}")
    print("\nuse one: noisylab train -c NAME [key=value ...]; see one: noisylab configs NAME", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import find_cli, noise_cli

    parser = OneLineErrorParser(prog="noisylab", description="Train classifiers on noisy labels and find the wrong labels.")
    parser.add_argument("--version", action="version", version=f"noisylab {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results (no progress bars)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = [
        ("train", "train a configured experiment", add_train_arguments, cmd_train),
        ("pretrain", "pre-train an encoder with SimCLR (writes RUN/encoder.pt)", add_train_arguments, cmd_pretrain),
        ("demo", "CE vs ELR on 40%% noisy labels, offline, in minutes", add_demo_arguments, cmd_demo),
        ("noise", "make a noisy label file and report it", noise_cli.add_arguments, noise_cli.run),
        ("find-issues", "train on a dataset (or read embeddings) and list its suspected wrong labels",
         find_cli.add_arguments, find_cli.run),
        ("detect", "list suspected wrong labels from a run or from pred_probs", add_detect_arguments, cmd_detect),
        ("report", "summarise finished runs in a table", add_report_arguments, cmd_report),
        ("configs", "list the packaged recipes (use one with -c NAME)", add_configs_arguments, cmd_configs),
    ]
    for name, help_text, add, fn in commands:
        # help= is %-formatted by argparse, description= is not: one text for both
        p = sub.add_parser(name, help=help_text, description=help_text.replace("%%", "%"))
        add(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    import signal

    from .checkpoint import OutputError
    from .training import TrainingStopped

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also come after flags: `-c a.yaml k=v --lr 0.1 name=x`
        stray = [e for e in extra if "=" not in e or e.startswith("-")
                 or args.command not in ("train", "pretrain", "find-issues")]
        if stray:
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        args.overrides = list(args.overrides) + extra
    setup_console_log(logging.WARNING if args.quiet else logging.INFO)
    if args.quiet and args.command in ("train", "pretrain", "find-issues"):
        args.overrides = list(args.overrides) + ["train.progress=false"]
    logging.raiseExceptions = False  # a log line that cannot be written (disk full) must not print a traceback
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit fails the write (EFBIG), not the process
    if hasattr(signal, "SIGPIPE") and args.command in ("detect", "report", "noise"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `noisylab detect RUN | head` ends quietly, as Unix tools do
    try:
        return int(args.func(args) or 0)
    except _user_errors() as err:
        if isinstance(err, OutputError):
            msg = err.strerror
        elif isinstance(err, OSError) and err.filename:
            msg = f"{err.strerror}: '{err.filename}'"
        else:
            msg = str(err)
        print(f"noisylab {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except TrainingStopped as err:
        print(f"noisylab {args.command}: {err}; saved at the step where it stopped: resume with "
              f"noisylab {args.command} -r RUN_FOLDER", file=sys.stderr)
        return 143 if "SIGTERM" in str(err) else 130
    except KeyboardInterrupt:
        print("interrupted; the last finished epoch is saved (resume with -r RUN_FOLDER)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
