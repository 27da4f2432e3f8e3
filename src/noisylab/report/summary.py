"""Text tables of finished runs (from their summary.json)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.2f}"


def _padded(header: list[str], rows: list[list]) -> list[list[str]]:
    """Header and rows as strings padded to their column's width: the first column left-aligned,
    the others right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    return [[c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
            for cells in [list(header), *rows]]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    head, *body = _padded(header, rows)
    return "\n".join(["  ".join(head), "  ".join("-" * len(c) for c in head), *("  ".join(r) for r in body)])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """The same table as GitHub markdown, padded as :func:`format_table` (benchmarks print these
    for the README)."""
    head, *body = _padded(header, rows)
    line = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (len(c) + 2) for c in head) + "|", *(line(r) for r in body)])


def read_summary(run: Path) -> dict[str, Any]:
    """A run's ``summary.json``; one ConfigError line when it is missing or damaged."""
    from ..config import ConfigError

    path = Path(run) / "summary.json"
    if not path.is_file():
        raise ConfigError(f"'{run}' has no summary.json (is it a finished noisylab run folder?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"'{path}' is damaged ({type(err).__name__}); run the training again or restore the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"'{path}' is damaged (not a JSON object); run the training again or restore the file")
    return data


def report_table(run_dirs: list[Path]) -> str:
    """One row per run: labels, test accuracy best/last, memorized fraction, detection quality."""
    header = ["run", "loss", "noise", "test best %", "test last %", "memorized %", "flagged", "precision %", "recall %"]
    rows = []
    for d in run_dirs:
        s = read_summary(Path(d))
        det = s.get("detect", {})
        memo = s.get("memorization_last") or {}
        rows.append([Path(d).name, str(s.get("loss")), str(s.get("noise")), _pct(s.get("test_top1_best")),
                     _pct(s.get("test_top1_last")), _pct(memo.get("noisy_memorized")), str(det.get("num_flagged", "-")),
                     _pct(det.get("precision")), _pct(det.get("recall"))])
    return format_table(header, rows)
