"""The README and docs/*.md stay true: every `noisylab ...` command written in them parses with the
real command line (no training is run), every config it names exists, every relative link (and
its #anchor) resolves, the README stays a front door, and its Python example runs."""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 260

FENCE = re.compile(r"^```(\w*)\s*$")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)")  # may wrap onto the next line
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _blocks(text: str):
    """(language, first line number, lines) of every fenced block; outside text as language None."""
    out, lang, start, buf = [], None, 1, []
    for i, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.strip())
        if m and lang is None:
            out.append((None, start, buf))
            lang, start, buf = m.group(1) or "text", i + 1, []
        elif line.strip() == "```" and lang is not None:
            out.append((lang, start, buf))
            lang, start, buf = None, i + 1, []
        else:
            buf.append(line)
    out.append((lang, start, buf))
    return out


def _logical_lines(lines: list[str], start: int):
    """Join backslash continuations; yield (line number, text)."""
    acc, first = "", None
    for i, line in enumerate(lines, start):
        if first is None:
            first = i
        if line.rstrip().endswith("\\"):
            acc += line.rstrip()[:-1] + " "
            continue
        yield first, acc + line
        acc, first = "", None
    if acc:
        yield first, acc


def _noisylab_argv(command: str) -> list[str] | None:
    """The argv after `noisylab` (or `torchrun ... -m noisylab.cli`), or None if it is no such command."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError as err:
        raise AssertionError(f"cannot split {command!r}: {err}") from None
    while words and ENV_ASSIGN.match(words[0]):  # OMP_NUM_THREADS=2 noisylab ...
        words = words[1:]
    if not words:
        return None
    if Path(words[0]).name == "noisylab":
        return words[1:]
    if Path(words[0]).name == "torchrun" or words[:2] == ["python", "-m"]:
        for k in range(len(words) - 1):
            if words[k] == "-m" and words[k + 1] == "noisylab.cli":
                return words[k + 2:]
        return None
    return None


def _subcommands() -> set[str]:
    from noisylab.cli import build_parser

    parser = build_parser()
    return {name for a in parser._actions if a.dest == "command" for name in a.choices}


SUBCOMMANDS = _subcommands()
NAMED: list[tuple[str, str]] = []  # inline `noisylab <subcommand>` mentions


def collect_commands() -> list[tuple[str, str]]:
    """(where, command) for every noisylab command in the README and docs: the lines of ```bash
    blocks, prose lines starting with `noisylab `, and inline code spans that are commands."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for lang, start, lines in _blocks(text):
            if lang in ("bash", "sh", "shell", "console"):
                for n, line in _logical_lines(lines, start):
                    if _noisylab_argv(line) is not None:
                        found.append((f"{_rel(page)}:{n}", line.strip()))
            elif lang is None:
                body = "\n".join(lines)
                for n, line in enumerate(lines, start):  # a prose line that is a command, not a sentence
                    if line.startswith("noisylab ") and line.split()[1] in SUBCOMMANDS or \
                            line.startswith("torchrun ") and "noisylab.cli" in line:
                        found.append((f"{_rel(page)}:{n}", line.strip()))
                for m in INLINE_CODE.finditer(body):
                    span = " ".join(m.group(1).split())
                    if span.startswith(("noisylab ", "torchrun ")):
                        n = start + body.count("\n", 0, m.start())
                        if len(span.split()) == 2 and span.startswith("noisylab "):
                            NAMED.append((f"{_rel(page)}:{n}", span))  # `noisylab noise`: a name, not a command
                        else:
                            found.append((f"{_rel(page)}:{n}", span))
    return found


def parse_like_main(argv: list[str]) -> tuple[int, str]:
    """Parse argv exactly as `noisylab.cli.main` does, without running the command.
    Returns (exit status, stderr); 0 = it parses."""
    from noisylab.cli import build_parser

    parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args, extra = parser.parse_known_args(argv)
            if extra:  # as main(): key=value overrides may also come after flags
                stray = [e for e in extra
                         if "=" not in e or e.startswith("-") or args.command not in ("train", "pretrain")]
                if stray:
                    parser.error(f"unrecognized arguments: {' '.join(stray)}")
    except SystemExit as stop:
        return int(stop.code or 0), err.getvalue().strip()
    return 0, ""


def _config_paths(argv: list[str]) -> list[str]:
    out = []
    for k, word in enumerate(argv):
        if word in ("-c", "--config") and k + 1 < len(argv):
            out.append(argv[k + 1])
        elif word.startswith("--config="):
            out.append(word.split("=", 1)[1])
    return out


COMMANDS = collect_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 30, COMMANDS  # the extraction itself still works
    assert {a[0] for a in (_noisylab_argv(c) for _, c in COMMANDS) if a} >= {
        "train", "pretrain", "demo", "noise", "detect", "report"}


@pytest.mark.parametrize("where,command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_command_parses(where, command):
    argv = _noisylab_argv(command)
    status, err = parse_like_main(argv)
    assert status == 0, f"{where}: `{command}` does not parse: {err}"
    from noisylab.config import ConfigError, resolve_config

    for config in _config_paths(argv):
        try:  # a path in the repository, or a packaged recipe's name
            resolve_config(ROOT / config if (ROOT / config).is_file() else config)
        except ConfigError:
            pytest.fail(f"{where}: `{command}` names {config}, which is neither in the repository nor a packaged recipe")


def test_named_subcommands_exist():
    assert NAMED
    for where, span in NAMED:
        assert span.split()[1] in SUBCOMMANDS, f"{where}: `{span}`: noisylab has no such subcommand"


def test_a_broken_command_fails():
    assert parse_like_main(["train", "-c", "configs/cifar10_elr.yaml", "--lambda"])[0] == 2
    assert parse_like_main(["detect", "runs/x", "--method", "no_such_detector"])[0] == 2
    assert parse_like_main(["nosuchcommand"])[0] == 2
    assert parse_like_main(["detect", "runs/x", "key=value"])[0] == 2


# ----------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # links keep their text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)  # drops punctuation and backticks, keeps _ and -
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for lang, _, lines in _blocks(page.read_text(encoding="utf-8")):
        if lang is not None:
            continue
        for line in lines:
            m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
            if m:
                slug = _slug(m.group(2))
                n = seen.get(slug, 0)
                seen[slug] = n + 1
                out.add(slug if n == 0 else f"{slug}-{n}")
            out.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return out


def collect_links() -> list[tuple[str, Path, str]]:
    found = []
    for page in PAGES:
        for lang, start, lines in _blocks(page.read_text(encoding="utf-8")):
            if lang is not None:
                continue
            body = "\n".join(lines)
            for m in LINK.finditer(body):
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                    continue
                found.append((f"{_rel(page)}:{start + body.count(chr(10), 0, m.start())}", page, target))
    return found


LINKS = collect_links()


def test_the_docs_have_links():
    assert len(LINKS) >= 20, LINKS


@pytest.mark.parametrize("where,page,target", LINKS, ids=[f"{w}->{t}" for w, _, t in LINKS])
def test_relative_link_resolves(where, page, target):
    path, _, anchor = target.partition("#")
    assert not target.startswith("/"), f"{where}: {target} is absolute; links must be relative"
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{where}: {target} -> {dest} does not exist"
    assert ROOT in dest.parents or dest == ROOT, f"{where}: {target} leaves the repository"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{where}: {target}: no heading #{anchor} in {_rel(dest)}"


def test_no_private_paths():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text and "shared/data" not in text, \
            f"{_rel(page)} cites a path users do not have"


# ----------------------------------------------------------------------------- README
def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    assert "docs/images/memorization.png" in text
    assert (ROOT / "docs/images/memorization.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    headings = [l for l in lines if l.startswith("## ")]
    order = ["## Install", "## The demo", "## From Python", "## Methods", "## A result", "## Documentation"]
    assert [h for h in headings if h in order] == order, headings


def test_readme_python_example_runs():
    """The README's example trains a linear model on 1,000 random points (well under a second)."""
    import torch

    blocks = [lines for lang, _, lines in _blocks((ROOT / "README.md").read_text(encoding="utf-8"))
              if lang == "python"]
    assert blocks, "README.md has no Python example"
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    out = io.StringIO()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        with contextlib.redirect_stdout(out):
            exec(compile("\n".join(blocks[0]), "README.md (Python example)", "exec"), {"__name__": "readme"})
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(rng)
    flagged, wrong, total = map(int, re.findall(r"\d+", out.getvalue()))
    assert flagged > 0 and wrong >= 0.9 * flagged, out.getvalue()  # it finds wrong labels, few false alarms
