"""Structural checks of the chapter notebooks (notebooks/README.md, "Authoring conventions").

Fast: the notebooks are read as JSON and never executed (`make test` runs them with nbval).
Every check runs over each ``notebooks/NN*_*.ipynb`` that exists, so the suite works while
chapters are still being written:

- the first cell is exactly the Colab cell; the second is the ``# 第N章`` title; kernel python3;
- a code cell tagged ``parameters`` that reads ``recipes.profile_from_env()``;
- ``## 小结`` and then ``## 练习`` with 3–5 hidden solutions (``:::{dropdown}`` blocks or code
  cells tagged ``hide-cell`` + ``solution`` with ``source_hidden``);
- every 勘误 box is well formed (scripts/build_errata.py), its label is unique in the book, and
  a code cell with ``assert`` follows it within `ASSERT_WITHIN` cells;
- ``notebooks/appendix_errata.md`` is current (``build_errata.py --check``);
- every term written ``中文（English）`` is in chapter 1's 英汉术语对照 table;
- committed executed: every code cell has an execution count, 1, then strictly increasing;
- no code cell defines a function or class under a name that course_lib already exports.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
GLOSSARY_NOTEBOOK = NOTEBOOK_DIR / "01_background.ipynb"
GLOSSARY_HEADING = "英汉术语对照"
ASSERT_WITHIN = 4  # a 勘误 box is proved by a code cell with `assert` among the next 4 cells
MIN_SOLUTIONS, MAX_SOLUTIONS = 3, 5

COLAB_CELL = """\
# Colab only: install course_lib and a Chinese font. Elsewhere this cell does nothing.
import sys

if "google.colab" in sys.modules:
    %pip install -q "course-lib @ git+https://github.com/genai-jax-workbook/workbook"
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
    n_solutions, problems = 0, []
    for i, cell in enumerate(cells[start:], start):
        src = _source(cell)
        if cell["cell_type"] == "markdown":
            n_solutions += len(re.findall(r"^(?::{3,}|`{3,})\{dropdown\}", src, re.M))
        elif "solution" in _tags(cell) or "hide-cell" in _tags(cell):
            n_solutions += 1
            if not {"solution", "hide-cell"} <= _tags(cell):
                problems.append(
                    f"cell {i}: a solution cell needs both tags 'hide-cell', 'solution'"
                )
            if not cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"):
                problems.append(f"cell {i}: set metadata jupyter.source_hidden = true")
    assert not problems, "\n".join(problems)
    assert MIN_SOLUTIONS <= n_solutions <= MAX_SOLUTIONS, (
        f"'## 练习' needs {MIN_SOLUTIONS}-{MAX_SOLUTIONS} exercises, each with a hidden solution; "
        f"found {n_solutions} hidden solutions"
    )


@each_notebook
def test_errata_boxes_are_well_formed_and_proved(path):
    errata, problems = build_errata.parse_notebook(path)
    assert not problems, "\n".join(problems)
    cells = _load(path)["cells"]
    unproved = []
    for e in errata:
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
def test_no_copies_of_course_lib(path):
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
