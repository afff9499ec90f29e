"""Structural checks of the chapter notebooks (notebooks/README.md, "Authoring conventions").

Fast: the notebooks are read as JSON and never executed (`make test` runs them with nbval).
Every check runs over each ``notebooks/NN*_*.ipynb`` that exists, so the suite works while
chapters are still being written:

- the first cell is exactly the Colab cell; the second is the ``# 第N章`` title; kernel python3;
- a code cell tagged ``parameters`` that reads ``recipes.profile_from_env()``;
- ``## 小结`` and then ``## 练习`` with 3–5 exercises and their hidden solutions
  (``:::{dropdown}`` blocks or code cells tagged ``hide-cell`` + ``solution``, ``source_hidden``);
- every 勘误 box is well formed (scripts/build_errata.py), its label is unique in the book, and
  a code cell with ``assert`` follows it within `ASSERT_WITHIN` cells (a box marked
  ``**性质**：史实记录``, a matter of record, cites its source instead);
- ``notebooks/appendix_errata.md`` is current (``build_errata.py --check``);
- every term written ``中文（English）`` is in chapter 1's 英汉术语对照 table;
- committed executed: every code cell has an execution count, 1, then strictly increasing;
- no code cell defines a function or class under a name that course_lib already exports, nor
  re-types a block of course_lib's code, renamed or re-wrapped (`copies_of_course_lib`).
"""

from __future__ import annotations

import ast
import functools
import io
import json
import keyword
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
GLOSSARY_NOTEBOOK = NOTEBOOK_DIR / "01_background.ipynb"
GLOSSARY_HEADING = "英汉术语对照"
ASSERT_WITHIN = 4  # a 勘误 box is proved by a code cell with `assert` among the next 4 cells
# ...unless the box says that it is a matter of record (build_errata.MATTER_OF_RECORD)
MIN_SOLUTIONS, MAX_SOLUTIONS = 3, 5
# A hidden answer block, and a numbered exercise (outside such blocks) under ## 练习.
DROPDOWN_RE = re.compile(r"^(:{3,}|`{3,})\{dropdown\}.*?^\1[ \t]*$", re.S | re.M)
EXERCISE_RE = re.compile(r"^\d+\.\s", re.M)

COLAB_CELL = """\
# 仅在 Colab 中：安装 course_lib 和中文字体；在其他环境中这个单元什么也不做。
import sys

if "google.colab" in sys.modules:
    %pip install -q "course-lib @ git+https://github.com/genai-jax-workbook/workbook" myst-nb
    !apt-get -qq install -y fonts-noto-cjk > /dev/null"""


build_errata = load_script("build_errata")
NOTEBOOKS = build_errata.notebook_paths(NOTEBOOK_DIR)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


each_notebook = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])


# --- terms ---------------------------------------------------------------------------------------

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
_LATIN = "A-Za-z\u00c0-\u024f"
_EN_PIECE = rf"[{_LATIN}][{_LATIN}0-9 \-'’/.]*"
# A term at first use: CJK characters (optionally preceded by Latin words, as in "KL 散度" or
# "Jensen-Shannon 散度"; each such word ends in exactly one space, which keeps the match linear)
# immediately followed by full-width brackets that hold only an English
# name and optional abbreviations, separated by full-width or ASCII commas:
#   变分自编码器（Variational Autoencoder，VAE）   重参数化（reparameterization）
# Brackets starting with Chinese, or holding other punctuation, are not terms: （见原文 4.2）,
# （Kingma & Welling 2014）.
TERM_RE = re.compile(
    rf"((?:[{_LATIN}0-9\-]+ )*[{_LATIN}0-9\-]*[{_CJK}]+)（({_EN_PIECE}(?:[，,]\s*{_EN_PIECE})*)）"
)
_FENCED_CODE_RE = re.compile(r"^(```|~~~)(?!\{).*?^\1\s*$", re.S | re.M)
_INLINE_CODE_RE = re.compile(r"`[^`\n]*`")
_HTML_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)


def _normalize(text: str) -> str:
    return re.sub(r"[\s\-'’.·]", "", text).lower()


def _prose(markdown: str) -> str:
    """Markdown without fenced code, inline code and comments (terms there are not checked)."""
    text = _FENCED_CODE_RE.sub("", markdown)
    text = _HTML_COMMENT_RE.sub("", text)
    return _INLINE_CODE_RE.sub("", text)


def terms_in(markdown: str) -> list[tuple[str, str]]:
    """The ``(chinese, english)`` pairs written as terms in ``markdown``.

    ``chinese`` is the whole run of CJK characters before the bracket, so it may start with
    words that are not part of the term ("我们用编码器"); glossary lookup matches its end.
    """
    return [(m.group(1), m.group(2)) for m in TERM_RE.finditer(_prose(markdown))]


def parse_glossary(nb: dict) -> list[tuple[str, set[str]]]:
    """Rows ``(chinese, aliases)`` of the table under the 英汉术语对照 heading of a notebook.

    Columns: 中文 | English | 缩写 | …; a cell may list alternatives separated by "/" or "；".
    ``aliases`` are the normalised English names and abbreviations of the row.
    """
    rows = []
    in_glossary = False
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for line in _source(cell).splitlines():
            if line.startswith("#"):
                in_glossary = GLOSSARY_HEADING in line
                continue
            if not in_glossary or not line.lstrip().startswith("|"):
                continue
            cols = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cols) < 2 or set(cols[0]) <= set("-: ") or cols[0] == "中文":
                continue
            aliases = {
                _normalize(a)
                for col in cols[1:3]
                for a in re.split(r"[/；;]", col.replace("*", ""))
                if a.strip() and a.strip() != "—"
            }
            for zh in re.split(r"[/；;]", cols[0].replace("*", "")):
                if zh.strip():
                    rows.append((re.sub(r"\s", "", zh), aliases))
    return rows


def glossary_misses(markdown: str, glossary) -> list[str]:
    """Terms of ``markdown`` that no glossary row covers, each with the reason."""
    misses = []
    for zh, en in terms_in(markdown):
        run = re.sub(r"\s", "", zh)
        pieces = {_normalize(p) for p in re.split(r"[，,]", en) if p.strip()}
        candidates = [(g_zh, aliases) for g_zh, aliases in glossary if run.endswith(g_zh)]
        if any(pieces <= aliases for _, aliases in candidates):
            continue
        if candidates:
            known = "; ".join(f"{g_zh} = {'/'.join(sorted(a))}" for g_zh, a in candidates)
            misses.append(f"{zh}（{en}）: English name not in the glossary row(s) [{known}]")
        else:
            misses.append(f"{zh}（{en}）: no glossary row whose 中文 ends this text")
    return misses


# --- per-notebook checks -------------------------------------------------------------------------


@each_notebook
def test_first_cells_and_kernel(path):
    nb = _load(path)
    cells = nb["cells"]
    assert cells and cells[0]["cell_type"] == "code", "the first cell must be the Colab code cell"
    assert _source(cells[0]).rstrip() == COLAB_CELL, (
        "the first cell must be exactly the Colab cell of notebooks/README.md (convention 2)"
    )
    assert "remove-cell" in _tags(cells[0]), (
        "tag the Colab cell 'remove-cell': the web site does not show it (convention 2)"
    )
    assert len(cells) > 1 and cells[1]["cell_type"] == "markdown", "cell 2: the chapter title"
    assert _source(cells[1]).startswith("# 第"), "cell 2 must start with '# 第N章 …'"
    assert nb.get("metadata", {}).get("kernelspec", {}).get("name") == "python3"


@each_notebook
def test_parameters_cell(path):
    cells = [c for c in _load(path)["cells"] if "parameters" in _tags(c)]
    assert cells, "no code cell tagged 'parameters' (convention 4)"
    assert cells[0]["cell_type"] == "code"
    assert "profile_from_env()" in _source(cells[0]), (
        "the parameters cell must set PROFILE = recipes.profile_from_env()"
    )


@each_notebook
def test_summary_and_exercises(path):
    cells = _load(path)["cells"]
    headings = [
        (i, line.strip())
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown"
        for line in _source(c).splitlines()
        if line.startswith("## ")
    ]
    summary = [i for i, h in headings if h == "## 小结"]
    exercises = [i for i, h in headings if h == "## 练习"]
    assert summary, "no '## 小结' heading"
    assert exercises, "no '## 练习' heading"
    assert exercises[-1] >= summary[-1], "'## 练习' must come after '## 小结'"
    start = exercises[-1]
    n_solutions, n_exercises, problems = 0, 0, []
    for i, cell in enumerate(cells[start:], start):
        src = _source(cell)
        if cell["cell_type"] == "markdown":
            n_solutions += len(DROPDOWN_RE.findall(src))
            n_exercises += len(EXERCISE_RE.findall(DROPDOWN_RE.sub("", src)))
        elif "solution" in _tags(cell) or "hide-cell" in _tags(cell):
            n_solutions += 1
            if not {"solution", "hide-cell"} <= _tags(cell):
                problems.append(
                    f"cell {i}: a solution cell needs both tags 'hide-cell', 'solution'"
                )
            if not cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"):
                problems.append(f"cell {i}: set metadata jupyter.source_hidden = true")
    assert not problems, "\n".join(problems)
    # An exercise may have a solution cell and a discussion dropdown: count the exercises.
    assert MIN_SOLUTIONS <= n_exercises <= MAX_SOLUTIONS, (
        f"'## 练习' needs {MIN_SOLUTIONS}-{MAX_SOLUTIONS} numbered exercises; found {n_exercises}"
    )
    assert n_solutions >= n_exercises, (
        f"{n_exercises} exercises but only {n_solutions} hidden solutions"
    )


@each_notebook
def test_errata_boxes_are_well_formed_and_proved(path):
    errata, problems = build_errata.parse_notebook(path)
    assert not problems, "\n".join(problems)
    cells = _load(path)["cells"]
    unproved = []
    for e in errata:
        if build_errata.MATTER_OF_RECORD in e.body:
            continue  # history (a release, a date, a citation): the box cites its source instead
        after = cells[e.cell + 1 : e.cell + 1 + ASSERT_WITHIN]
        if not any(c["cell_type"] == "code" and "assert" in _source(c) for c in after):
            unproved.append(
                f"cell {e.cell}: {e.label}: no code cell with `assert` among the next "
                f"{ASSERT_WITHIN} cells"
            )
    assert not unproved, "\n".join(unproved)


@each_notebook
def test_terms_are_in_the_glossary(path):
    if not GLOSSARY_NOTEBOOK.exists():
        pytest.skip("chapter 1 (the glossary) does not exist yet")
    glossary = parse_glossary(_load(GLOSSARY_NOTEBOOK))
    assert glossary, f"no table under a '{GLOSSARY_HEADING}' heading in {GLOSSARY_NOTEBOOK.name}"
    misses = []
    for i, cell in enumerate(_load(path)["cells"]):
        if cell["cell_type"] == "markdown":
            misses += [f"cell {i}: {m}" for m in glossary_misses(_source(cell), glossary)]
    assert not misses, (
        f"{len(misses)} term(s) of {path.name} are missing from the {GLOSSARY_HEADING} table of "
        f"{GLOSSARY_NOTEBOOK.name} (add a row '| 中文 | English | 缩写 |' or fix the term):\n  "
        + "\n  ".join(misses)
    )


@each_notebook
def test_committed_executed_in_order(path):
    counts = [c.get("execution_count") for c in _load(path)["cells"] if c["cell_type"] == "code"]
    missing = [i for i, n in enumerate(counts) if n is None]
    assert not missing, (
        f"code cells {missing} (counting code cells only) have no execution_count: commit the "
        "notebook executed (jupyter nbconvert --to notebook --execute --inplace)"
    )
    assert counts[0] == 1 and all(a < b for a, b in zip(counts, counts[1:], strict=False)), (
        f"execution counts {counts} are not 1, then increasing: restart the kernel and run all"
    )


@functools.cache
def _course_lib_exports() -> dict[str, str]:
    """Public top-level function and class names of course_lib, mapped to their module."""
    names = {}
    for py in sorted((ROOT / "course_lib").glob("*.py")):
        tree = ast.parse(py.read_text(encoding="utf-8"))
        for node in tree.body:
            is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if is_def and not node.name.startswith("_"):
                names.setdefault(node.name, f"course_lib.{py.stem}")
    return names


def _code_without_magics(source: str) -> str:
    """IPython magics and shell lines become `pass` so that the cell parses as Python."""
    return "\n".join(re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in source.splitlines())


@each_notebook
def test_no_function_named_like_course_lib(path):
    exports = _course_lib_exports()
    copies = []
    for i, cell in enumerate(_load(path)["cells"]):
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse(_code_without_magics(_source(cell)))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if is_def and node.name in exports:
                copies.append(
                    f"cell {i} defines {node.name!r}, which {exports[node.name]} exports: "
                    "import it instead of copying it (or rename a genuinely different one)"
                )
    assert not copies, "\n".join(copies)


# Re-typed library code. Both sides are cut into logical lines (statements and compound-statement
# headers, however they are wrapped), without comments, blank lines, whitespace or trailing commas.
# Two lines are alike when their "shape" is equal: every identifier, string and number replaced by
# a placeholder, so that renamed copies count too. A copy is a chain of at least COPY_MIN_LINES
# alike lines, in the same order on both sides, with at most COPY_MAX_GAP other lines between two
# of them on either side (a re-typed block often drops or adds a line). Lines too common to mean
# anything are left out first: imports, print calls, asserts, def/class headers, decorators,
# docstrings and anything shorter than COPY_MIN_TOKENS tokens (`x = f(y)` has 6).
# Tuned on the seven chapters: COPY_MIN_TOKENS and COPY_MAX_GAP anywhere in 4..8 give the same
# single hit, a real copy (05c re-typed recipes.run_forecast's data preparation); the nearest miss
# is a run of 5.
COPY_MIN_LINES = 6
COPY_MAX_GAP = 4
COPY_MIN_TOKENS = 5
_COMMON_FIRST_WORDS = {"import", "from", "print", "assert", "def", "class", "@", "global"}
_LAYOUT_TOKENS = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENCODING,
    tokenize.ENDMARKER,
}
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python >= 3.12
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


@dataclass(frozen=True)
class LogicalLine:
    text: str  # tokens joined by one space
    shape: str  # the same with identifiers -> N, strings -> S, numbers -> 0
    first: int  # line numbers in the source, 1-based
    last: int


def _shape_tokens(tokens) -> list[str]:
    shape, depth = [], 0
    for tok in tokens:
        if tok.type == _FSTRING_START:
            depth += 1
            if depth == 1:
                shape.append("S")
        elif tok.type == _FSTRING_END:
            depth -= 1
        elif depth:
            continue
        elif tok.type == tokenize.NAME and not keyword.iskeyword(tok.string):
            shape.append("N")
        elif tok.type in (tokenize.STRING, tokenize.NUMBER):
            shape.append("S" if tok.type == tokenize.STRING else "0")
        else:
            shape.append(tok.string)
    return shape


def logical_lines(source: str) -> list[LogicalLine]:
    """The logical lines of Python ``source`` (magics count as `pass`), normalised as above."""
    readline = io.StringIO(_code_without_magics(source) + "\n").readline
    lines, tokens = [], []
    try:
        for tok in tokenize.generate_tokens(readline):
            if tok.type == tokenize.NEWLINE:
                if tokens:
                    shape = " ".join(_shape_tokens(tokens))
                    text = " ".join(t.string for t in tokens)
                    lines.append(LogicalLine(text, shape, tokens[0].start[0], tokens[-1].end[0]))
                tokens = []
            elif tok.type not in _LAYOUT_TOKENS:
                if tok.string in ")]}" and tokens and tokens[-1].string == ",":
                    tokens.pop()  # a trailing comma is layout too
                tokens.append(tok)
    except (tokenize.TokenError, SyntaxError):  # not Python: keep what was read
        pass
    return lines


def _telling(line: LogicalLine) -> bool:
    """Whether a line is specific enough that two alike ones suggest a copy."""
    shape = line.shape.split(" ")
    if line.text.split(" ", 1)[0] in _COMMON_FIRST_WORDS or shape == ["S"]:
        return False
    return len(shape) >= COPY_MIN_TOKENS


def shared_runs(a: list[LogicalLine], b: list[LogicalLine]) -> list[list[tuple[int, int]]]:
    """Chains of index pairs (i, j), a[i] alike b[j], that make a copy; longest first, disjoint."""
    where: dict[str, list[int]] = {}
    for j, line in enumerate(b):
        where.setdefault(line.shape, []).append(j)
    best: dict[tuple[int, int], tuple[int, tuple[int, int] | None]] = {}  # -> (length, previous)
    steps = range(1, COPY_MAX_GAP + 2)
    for i, line in enumerate(a):
        for j in where.get(line.shape, ()):
            previous = [
                (i - di, j - dj) for di in steps for dj in steps if (i - di, j - dj) in best
            ]
            prev = max(previous, key=lambda p: best[p][0], default=None)
            best[i, j] = (best[prev][0] + 1 if prev else 1, prev)
    runs, used = [], set()
    for end, (length, _) in sorted(best.items(), key=lambda item: -item[1][0]):
        if length < COPY_MIN_LINES:
            break
        run, node = [], end
        while node is not None:
            run.append(node)
            node = best[node][1]
        if not used.intersection(run):
            used.update(run)
            runs.append(run[::-1])
    return runs


def _telling_lines(source: str) -> list[LogicalLine]:
    return [line for line in logical_lines(source) if _telling(line)]


@functools.cache
def _library_lines() -> dict[str, list[LogicalLine]]:
    return {
        py.relative_to(ROOT).as_posix(): _telling_lines(py.read_text(encoding="utf-8"))
        for py in sorted((ROOT / "course_lib").glob("*.py"))
    }


def copies_of_course_lib(source: str) -> list[str]:
    """One line per run of ``source`` that re-types course_lib code: where, and how alike."""
    mine = _telling_lines(source)
    source_lines = source.splitlines()
    found = []
    for name, theirs in _library_lines().items():
        for run in shared_runs(mine, theirs):
            (i0, j0), (i1, j1) = run[0], run[-1]
            same = sum(mine[i].text == theirs[j].text for i, j in run)
            found.append(
                f"lines {mine[i0].first}-{mine[i1].last} re-type {name}:"
                f"{theirs[j0].first}-{theirs[j1].last} ({len(run)} lines alike, {same} verbatim; "
                f"from {source_lines[mine[i0].first - 1].strip()[:60]!r})"
            )
    return found


@each_notebook
def test_no_copies_of_course_lib(path):
    copies = [
        f"{path.name} cell {i} {copy}"
        for i, cell in enumerate(_load(path)["cells"])
        if cell["cell_type"] == "code"
        for copy in copies_of_course_lib(_source(cell))
    ]
    assert not copies, (
        "notebook code re-types course_lib (convention 5: import it, or call the function that "
        "does this):\n  " + "\n  ".join(copies)
    )


# --- book-wide checks ----------------------------------------------------------------------------


def test_errata_labels_unique_and_appendix_current(capsys):
    errata, problems = build_errata.collect(NOTEBOOK_DIR)
    assert not problems, "\n".join(problems)
    rc = build_errata.main(["--check", "--notebooks", str(NOTEBOOK_DIR)])
    assert rc == 0, capsys.readouterr().err + " (then commit notebooks/appendix_errata.md)"


# --- the checkers themselves ---------------------------------------------------------------------


def test_term_regex():
    text = (
        "我们用变分自编码器（Variational Autoencoder，VAE）和 KL 散度（KL divergence），"
        "以及 Jensen-Shannon 散度（Jensen-Shannon divergence）、Fréchet距离（Fréchet distance）。"
        "不是术语：（见原文 4.2）、模型（Kingma & Welling 2014）、`代码（Code）`、编码器（原文）。"
    )
    assert terms_in(text) == [
        ("我们用变分自编码器", "Variational Autoencoder，VAE"),
        ("KL 散度", "KL divergence"),
        ("Jensen-Shannon 散度", "Jensen-Shannon divergence"),
        ("Fréchet距离", "Fréchet distance"),
    ]
    assert terms_in("```python\n# 编码器（encoder）\n```\n") == []


def test_glossary_lookup():
    nb = {
        "cells": [
            {
                "cell_type": "markdown",
                "source": "## 英汉术语对照\n\n| 中文 | English | 缩写 |\n|---|---|---|\n"
                "| 变分自编码器 | variational autoencoder | VAE |\n"
                "| KL 散度 | Kullback-Leibler divergence / KL divergence | — |\n"
                "## 其他\n| 编码器 | encoder | |\n",
            }
        ]
    }
    glossary = parse_glossary(nb)
    assert [zh for zh, _ in glossary] == ["变分自编码器", "KL散度"]
    assert glossary_misses("变分自编码器（Variational Autoencoder，VAE）", glossary) == []
    assert glossary_misses("用 KL 散度（KL divergence）", glossary) == []
    misses = glossary_misses("编码器（encoder）与变分自编码器（VAE model）", glossary)
    assert len(misses) == 2
    assert "no glossary row" in misses[0] and "编码器（encoder）" in misses[0]
    assert "English name not in the glossary" in misses[1]


LIBRARY_BLOCK = '''
def prepare(recipe, series, n_train, out, resume):
    """Windows for training and testing."""
    cfg = recipe.model
    train_values = series[:n_train]
    scale = float(np.std(train_values[cfg.horizon :] - train_values[: -cfg.horizon]))
    x, y, _ = rnn.make_windows(train_values, cfg.context, cfg.horizon, scale)
    out, ckpt = _start_run(out, resume)
    tail = series[n_train - cfg.context :]
    x_test, y_test, last = rnn.make_windows(tail, cfg.context, cfg.horizon, scale)
    return x, y, x_test, last[:, None] + scale * y_test
'''
# The same block re-typed: renamed, re-wrapped, commented, a line dropped and a print added.
RETYPED_BLOCK = """\
c = R.model  # the recipe's model

tv = s[:n]
sc = float(
    np.std(tv[c.horizon :] - tv[: -c.horizon]),
)
a, b, _ = rnn.make_windows(tv, c.context, c.horizon, sc)
print("windows", a.shape)
t = s[n - c.context :]
xt, yt, l = rnn.make_windows(t, c.context, c.horizon, sc)
"""


def test_copy_finder_catches_a_renamed_rewrapped_copy():
    lib = [line for line in logical_lines(LIBRARY_BLOCK) if _telling(line)]
    copy = [line for line in logical_lines(RETYPED_BLOCK) if _telling(line)]
    (run,) = shared_runs(copy, lib)
    assert len(run) == COPY_MIN_LINES
    assert (copy[run[0][0]].first, copy[run[-1][0]].last) == (1, 10)
    assert (lib[run[0][1]].first, lib[run[-1][1]].last) == (4, 10)
    # one alike line fewer is not a copy
    shorter = RETYPED_BLOCK.replace("tv = s[:n]\n", "")
    assert shared_runs([x for x in logical_lines(shorter) if _telling(x)], lib) == []


def test_copy_finder_ignores_common_lines():
    common = "\n".join(
        ["import numpy as np", "from course_lib import data, rnn", '"""A docstring."""']
        + [f'print(f"step {{i}}: {{loss:.3f}}", file=sys.stderr)  # {i}' for i in range(8)]
        + ["def f(a, b):", "    assert a.shape == b.shape, (a.shape, b.shape)", "    return a"]
    )
    assert not [line for line in logical_lines(common) if _telling(line)]
    assert [line.shape for line in logical_lines("x = f'{a}b'  # c\n%time y")] == ["N = S", "pass"]
