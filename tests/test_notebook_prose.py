"""Checks of what the chapters say and print (issue 15): read as JSON, never executed.

- **One term per concept.** Chapter 1's 英汉术语对照 table has a column 不用的写法 (variants the
  book does not use); none of them may appear in a chapter's prose or code comments, outside
  quotations of the article (``>`` lines, fenced code and “…” quotes) and the table itself.
- **Numbers are computed.** Every ``{glue:…}`name``` in a markdown cell names a value glued (with
  ``myst_nb.glue``) by a code cell of the same notebook. A decimal number written in prose that
  also appears in a code cell's output, but in no code cell's source, was copied from a result:
  it must be glued. What this catches: typed copies of printed results with a decimal point
  (90.9, 0.84). What it cannot catch: integers, numbers rounded differently from the printout,
  numbers from runs the notebook does not perform (those are for the reader to cite).
- **Chinese in code.** No code comment is English prose (a lowercase English word of four or
  more letters and no Chinese character; shapes such as ``# [N, K, 2]`` and formulas pass, pragmas
  such as ``# NBVAL_SKIP`` are exempt), and no ``print`` label is an English phrase.
- **Answers hidden.** Under ``## 练习`` every exercise has its own hidden solution, and no answer
  text is visible.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

import pytest

from test_notebooks import (
    DROPDOWN_RE,
    EXERCISE_RE,
    GLOSSARY_HEADING,
    GLOSSARY_NOTEBOOK,
    _code_without_magics,
    _load,
    _source,
    _tags,
    each_notebook,
)

REJECTED_COLUMN = "不用的写法"
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_QUOTE_RE = re.compile(r"“[^”]*”|「[^」]*」")
_FENCE_RE = re.compile(r"^(`{3,}|~{3,})(?!\{).*?^\1\s*$", re.S | re.M)
_BLOCKQUOTE_RE = re.compile(r"^\s*>.*$", re.M)
_GLUE_ROLE_RE = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)(?::[^`]*)?`")
_DECIMAL_RE = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
# Section numbers are not results: "原文 6.3", "5.2.1 节", "6.1、6.2".
_SECTION_RE = re.compile(
    r"原文\s*\d+(?:\.\d+)+|\d+(?:\.\d+)+\s*节|\d+\.\d+(?=、\d)|(?<=\d、)\d+\.\d+"
)
_PRAGMA_RE = re.compile(r"^(NBVAL_\w+|noqa\b|fmt:|type:|pragma\b|pylint:)")
# an English word: 4+ lowercase letters ("loss", "samples"); not "log", "top" or "[N, K, 2]"
_ENGLISH_WORD_RE = re.compile(r"\b[a-z]{4,}\b")
_VISIBLE_ANSWER_RE = re.compile(r"(参考答案|答案[：:]|解答[：:])")


def _unquoted(markdown: str) -> str:
    """Markdown without the article's words: fenced code, ``>`` quotes and “…” quotes."""
    return _QUOTE_RE.sub("", _BLOCKQUOTE_RE.sub("", _FENCE_RE.sub("", markdown)))


def _comments(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of each ``#`` comment of a code cell (magics read as ``pass``)."""
    found = []
    readline = io.StringIO(_code_without_magics(source) + "\n").readline
    try:
        for tok in tokenize.generate_tokens(readline):
            if tok.type == tokenize.COMMENT:
                found.append((tok.start[0], tok.string.lstrip("#").strip()))
    except (tokenize.TokenError, SyntaxError):
        pass
    return found


def _is_glossary(cell) -> bool:
    return cell["cell_type"] == "markdown" and GLOSSARY_HEADING in _source(cell)


def parse_rejected(nb: dict) -> dict[str, tuple[str, ...]]:
    """``{rejected variant: the row's accepted terms}`` from the glossary's 不用的写法 column."""
    for cell in filter(_is_glossary, nb["cells"]):
        rows = [line.strip().strip("|").split("|") for line in _source(cell).splitlines()]
        rows = [[c.strip() for c in row] for row in rows if len(row) > 2]
        header = next((row for row in rows if REJECTED_COLUMN in row), None)
        if header is None:
            continue
        col, found = header.index(REJECTED_COLUMN), {}
        for row in rows:
            if row is header or set(row[0]) <= set("-: ") or len(row) <= col:
                continue
            accepted = tuple(t.strip() for t in row[0].split("/") if t.strip())
            for variant in re.split(r"[/、]", row[col]):
                if variant.strip() and variant.strip() != "—":
                    found[variant.strip()] = accepted
        return found
    return {}


def rejected_in(text: str, rejected: dict[str, tuple[str, ...]]) -> list[str]:
    """Rejected variants used in ``text``; an accepted term that contains one is not a use."""
    uses = []
    for variant, accepted in rejected.items():
        longer = [t for terms in rejected.values() for t in terms if variant in t and t != variant]
        cleaned = text
        for term in sorted(set(longer) | {t for t in accepted if variant in t}, key=len)[::-1]:
            cleaned = cleaned.replace(term, "")
        if variant in cleaned:
            uses.append(f"{variant} (use {accepted[0]})")
    return uses


@pytest.fixture(scope="module")
def rejected():
    table = parse_rejected(_load(GLOSSARY_NOTEBOOK))
    assert table, f"no '{REJECTED_COLUMN}' column in the {GLOSSARY_HEADING} table"
    return table


@each_notebook
def test_one_term_per_concept(path, rejected):
    misses = []
    for i, cell in enumerate(_load(path)["cells"]):
        if _is_glossary(cell):
            continue
        if cell["cell_type"] == "markdown":
            text = _unquoted(_source(cell))
        else:
            text = "\n".join(c for _, c in _comments(_source(cell)))
        misses += [f"cell {i}: {use}" for use in rejected_in(text, rejected)]
    assert not misses, (
        f"terms the glossary rejects (its column {REJECTED_COLUMN}):\n  " + "\n  ".join(misses)
    )


def _glued(cells) -> dict[str, str]:
    """``{name: text/plain value}`` of every ``myst_nb.glue`` output stored in the notebook."""
    values = {}
    for cell in cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                data = out.get("data", {})
                plain = [v for k, v in data.items() if k.endswith("text/plain")]
                values[name] = "".join(plain[0]) if plain else ""
    return values


def _output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("metadata", {}).get("scrapbook"):
            continue
        if out.get("output_type") == "stream":
            parts.append("".join(out.get("text", "")))
        for key, value in out.get("data", {}).items():
            if key == "text/plain":
                parts.append("".join(value))
    return "\n".join(parts)


def unglued_numbers(cells) -> list[str]:
    """Decimal numbers typed in prose that a code cell printed and no code cell typed."""
    code = [c for c in cells if c["cell_type"] == "code"]
    printed = {n for c in code for n in _DECIMAL_RE.findall(_output_text(c))}
    typed_in_code = {n for c in code for n in _DECIMAL_RE.findall(_source(c))}
    found = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown" or _is_glossary(cell):
            continue
        prose = _SECTION_RE.sub("", _GLUE_ROLE_RE.sub("", _unquoted(_source(cell))))
        for number in sorted(set(_DECIMAL_RE.findall(prose))):
            if number in printed and number not in typed_in_code:
                found.append(f"cell {i}: {number}")
    return found


@each_notebook
def test_numbers_in_prose_are_glued(path):
    cells = _load(path)["cells"]
    glued = _glued(cells)
    problems = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown":
            for name in _GLUE_ROLE_RE.findall(_source(cell)):
                if not glued.get(name.strip()):
                    problems.append(
                        f"cell {i}: {{glue}}`{name}` has no glued value in the notebook"
                    )
    problems += [
        f"{where} is printed by a code cell but typed in prose: glue it (myst_nb.glue)"
        for where in unglued_numbers(cells)
    ]
    assert not problems, "\n".join(problems)


def english_print_labels(source: str) -> list[str]:
    """``print`` calls whose literal text is English words without any Chinese."""
    try:
        tree = ast.parse(_code_without_magics(source))
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"):
            continue
        literals = [
            part.value
            for arg in node.args
            for part in (arg.values if isinstance(arg, ast.JoinedStr) else [arg])
            if isinstance(part, ast.Constant) and isinstance(part.value, str)
        ]
        text = " ".join(literals)
        if _ENGLISH_WORD_RE.search(text) and not _CJK_RE.search(text):
            found.append(f"line {node.lineno}: {text.strip()[:60]!r}")
    return found


@each_notebook
def test_code_comments_and_labels_are_chinese(path):
    problems = []
    for i, cell in enumerate(_load(path)["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = _source(cell)
        for line, text in _comments(source):
            english = _ENGLISH_WORD_RE.search(text) and not _CJK_RE.search(text)
            if english and not _PRAGMA_RE.match(text):
                problems.append(f"cell {i} line {line}: comment {text[:60]!r}")
        problems += [f"cell {i} {p}" for p in english_print_labels(source)]
    assert not problems, (
        "code comments and printed labels are Chinese in the chapters (d2l-zh style):\n  "
        + "\n  ".join(problems)
    )


def exercise_problems(cells) -> list[str]:
    """Exercises under the last ``## 练习`` heading that have no hidden answer before the next
    exercise, and answer text left visible."""
    start = max(
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown" and re.search(r"^## 练习", _source(c), re.M)
    )
    events, problems = [], []  # ("exercise" | "answer", cell index), in reading order
    for i, cell in enumerate(cells[start:], start):
        src = _source(cell)
        if cell["cell_type"] == "markdown":
            marked = DROPDOWN_RE.sub("\x00", src)
            if _VISIBLE_ANSWER_RE.search(marked):
                problems.append(f"cell {i}: answer text outside a dropdown")
            for line in marked.splitlines():
                if line.startswith("\x00"):
                    events.append(("answer", i))
                elif EXERCISE_RE.match(line):
                    events.append(("exercise", i))
                elif events and line.strip() and not line[0].isspace() and line[0] != "#":
                    # prose after an exercise that is not part of it: a visible answer
                    problems.append(f"cell {i}: visible text after an answer: {line[:40]!r}")
        elif {"solution", "hide-cell"} <= _tags(cell):
            events.append(("answer", i))
    for (kind, i), (after, _) in zip(events, events[1:] + [("end", None)], strict=True):
        if kind == "exercise" and after != "answer":
            problems.append(f"cell {i}: an exercise without a hidden answer right after it")
    if not any(kind == "exercise" for kind, _ in events):
        problems.append("no numbered exercises under '## 练习'")
    return problems


@each_notebook
def test_every_exercise_has_a_hidden_answer(path):
    problems = exercise_problems(_load(path)["cells"])
    assert not problems, (
        "each exercise is followed by its ':::{dropdown} 参考答案' block or hidden solution cell "
        "(tags hide-cell, solution):\n  " + "\n  ".join(problems)
    )


# --- the checkers themselves ---------------------------------------------------------------------


def test_rejected_variants_found_outside_quotes_only():
    rejected = {"重构": ("重建",), "时间反向传播": ("随时间反向传播",), "潜变量": ("潜在变量",)}
    assert rejected_in("随时间反向传播与潜在变量", rejected) == []
    assert rejected_in("用重构误差和时间反向传播", rejected) == [
        "重构 (use 重建)",
        "时间反向传播 (use 随时间反向传播)",
    ]
    assert rejected_in(_unquoted("原文说“重构”。\n> 重构损失\n"), rejected) == []


def test_unglued_numbers_rule():
    def cell(kind, src, text=""):
        outputs = [{"output_type": "stream", "name": "stdout", "text": text}] if text else []
        return {"cell_type": kind, "source": src, "outputs": outputs}

    cells = [
        cell("code", "t = 0.8\nprint(f'{loss:.1f}')", "测试：90.9 0.8"),
        cell(
            "markdown", "负 ELBO 为 90.9 nats，温度 0.8，论文报告 84.2；见原文 90.9 与 6.1、90.9。"
        ),
        cell("markdown", "负 ELBO 为 {glue:text}`nats`。"),
    ]
    assert unglued_numbers(cells) == ["cell 1: 90.9"]


def test_print_label_rule():
    assert english_print_labels("print(f'test loss: {x:.2f}')") == ["line 1: 'test loss:'"]
    assert english_print_labels("print(f'测试损失：{x:.2f} nats', 'val_bpc')") == []
    assert english_print_labels("print('FD-LeNet', x)") == []


def test_comment_rule():
    assert _comments("x = 1  # 为什么\n# NBVAL_SKIP\n%time y = 2  # why") == [
        (1, "为什么"),
        (2, "NBVAL_SKIP"),
    ]


def test_exercise_rule():
    def md(src):
        return {"cell_type": "markdown", "source": src}

    solution = {"cell_type": "code", "source": "", "metadata": {"tags": ["hide-cell", "solution"]}}
    ok = [md("## 练习\n\n1. 题一\n\n:::{dropdown} 参考答案\n1. 步骤\n:::\n\n2. 题二"), solution]
    assert exercise_problems(ok) == []
    visible = [md("## 练习\n\n1. 题一\n\n参考答案：就是这样。\n\n2. 题二"), solution]
    assert exercise_problems(visible) == [
        "cell 0: answer text outside a dropdown",
        "cell 0: visible text after an answer: '参考答案：就是这样。'",
        "cell 0: an exercise without a hidden answer right after it",
    ]
    explained = [
        md("## 练习\n\n1. 题一"),
        solution,
        md("（解释：见上面的输出。）\n\n2. 题二"),
        solution,
    ]
    assert exercise_problems(explained) == [
        "cell 2: visible text after an answer: '（解释：见上面的输出。）'"
    ]


@each_notebook
def test_references_to_errata_carry_a_title(path):
    # A 勘误 label sits on an admonition, not a heading: Sphinx finds no title for a bare
    # {ref}`erratum-…` and the strict site build fails. Write {ref}`文字<erratum-…>`.
    bare = [
        f"cell {i}: {m.group()}"
        for i, cell in enumerate(_load(path)["cells"])
        if cell["cell_type"] == "markdown"
        for m in re.finditer(r"\{ref\}`erratum-[^`<]*`", _source(cell))
    ]
    assert not bare, "give each reference to an erratum a title:\n  " + "\n  ".join(bare)
