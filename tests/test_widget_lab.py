"""The chapter-6a "widget" person in a real JupyterLab, driven by a real browser.

`course_lib.collab.WidgetHuman` shows a panel of ipywidgets (a dropdown under each digit, and a
提交 button) and blocks the running cell with `jupyter_ui_poll` until 提交 is clicked. Only a
real kernel behind a real JupyterLab page can show that this works, so the test:

1. copies the chapter `notebooks/06a_annotation_lab.ipynb` up to its `human-loop` cell, sets
   `HUMAN = "widget"`, `BUDGET = 20`, `BATCH = 20` in its `parameters` cell (one round of 20
   labels) and appends a cell that prints a `REFIT-CHECK` line: the labels the person gave, and
   whether the classifier's probabilities are label spreading refitted on exactly those labels;
2. starts `jupyter lab` on 127.0.0.1 (tests/jupyter_lab.py: a random token, its own config, data
   and runtime folders; the kernel is the venv's own python, which the check cell confirms);
3. opens the copy in headless Chromium (Playwright, no browser download: `executable_path`),
   runs all cells from the Run menu, waits for the panel's 20 dropdowns, chooses `i % 10` in the
   i-th one (not the truth) and clicks 提交;
4. waits for the `REFIT-CHECK` line and checks that the round's `本轮标签` line is the chosen
   sequence in display order, that the given labels are the chosen ones, that `已标注 20 / 20`
   was printed, that the refit check is True and that no cell showed an error.

The kernel can only see the click while the cell runs if `jupyter_ui_poll` can process its
messages: jupyter-ui-poll 1.1.0 calls `Kernel.do_one_iteration()`, which ipykernel removed in
7.1 (and with 7.0's subshells it no longer reaches the comm messages). pyproject.toml therefore
pins `ipykernel>=6,<7`, and `WidgetHuman` refuses a 7.x kernel with that fix instead of hanging;
this test is what shows that the pinned kernel really delivers the click.

On failure it saves `_build/screenshots/widget_lab_failure.png` and puts the tail of the server's
log (which holds the kernel's stderr too) into the message. Without Chromium, Playwright,
JupyterLab or the chapter the browser test is skipped, except under CI (`$CI` set), where it
fails. It is marked `slow` (a minute or more: the chapter's cells before the loop load the data
and build the kNN graph); `test_widget_copy_of_the_contract` checks the notebook rewriting on a
stand-in notebook with the chapter's contract and is quick.
"""

from __future__ import annotations

import copy
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

from chromium import missing
from jupyter_lab import KERNELSPEC, notebook_page, wait_for

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "notebooks" / "06a_annotation_lab.ipynb"
LABELS = 20  # one round: BUDGET = BATCH = 20
CHOSEN = [i % 10 for i in range(LABELS)]  # what the "person" picks, in display order
CHECK = "REFIT-CHECK"
# The cells before the loop load the data and build the kNN graph: minutes on a slow shared CPU.
PANEL_TIMEOUT_S = 240
ANSWER_TIMEOUT_S = 120


# --- the notebook: the chapter's contract, rewritten for one round with the widget --------------


def tagged(nb, tag: str) -> int:
    """The index of the one cell tagged ``tag``."""
    found = [i for i, c in enumerate(nb.cells) if tag in c.get("metadata", {}).get("tags", [])]
    if len(found) != 1:
        raise ValueError(f"expected one cell tagged {tag!r}, found {len(found)}")
    return found[0]


def set_parameter(source: str, name: str, value: str) -> str:
    """Replace the line ``NAME = ...`` of a parameters cell (exactly one such line)."""
    pattern = re.compile(rf"^{name}[ \t]*=[^\n]*$", re.MULTILINE)
    new, count = pattern.subn(f"{name} = {value}", source)
    if count != 1:
        raise ValueError(f"the parameters cell must set {name} on one line, found {count}")
    return new


CHECK_CELL = f"""\
import sys as _sys

import numpy as _np

from course_lib import active as _active

_given = _np.flatnonzero(mine.labels >= 0)
_refit = _np.allclose(mine.probs, _np.asarray(_active.spread(pool.graph, mine.labels)))
print(
    "{CHECK}",
    "given=" + ",".join(str(int(y)) for y in mine.labels[_given]),
    f"refit={{bool(_refit)}}",
    f"prefix={{_sys.prefix}}",  # last: a path may hold spaces
)
"""


def widget_copy(nb, budget: int = LABELS, batch: int = LABELS):
    """The chapter up to its ``human-loop`` cell, with the widget person, one round of labels,
    and a last cell that prints the ``REFIT-CHECK`` line. Outputs are cleared."""
    nb = copy.deepcopy(nb)
    params, loop = tagged(nb, "parameters"), tagged(nb, "human-loop")
    if params > loop:
        raise ValueError("the parameters cell comes after the human-loop cell")
    source = nb.cells[params].source
    for name, value in (("HUMAN", '"widget"'), ("BUDGET", str(budget)), ("BATCH", str(batch))):
        source = set_parameter(source, name, value)
    nb.cells[params].source = source
    nb.cells = nb.cells[: loop + 1] + [nbformat.v4.new_code_cell(CHECK_CELL)]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def stand_in_notebook():
    """A minimal notebook with the chapter's contract (for the quick test of `widget_copy`)."""
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell("# 数据标注 (stand-in)"),
        v4.new_code_cell("import numpy as np\n\nfrom course_lib import annotation, collab"),
        v4.new_code_cell(
            'HUMAN = "simulated"\nBUDGET = 200\nBATCH = 20\nSTRATEGY = "kmeans"\nSEED = 0\n'
            "ERROR_RATE = 0.03",
            metadata={"tags": ["parameters"]},
        ),
        v4.new_code_cell("pool = annotation.prepare_pool(annotation.AnnotationRecipe())"),
        v4.new_code_cell(
            "human = collab.make_human(HUMAN, answers=collab.answer_key(pool.images, "
            "pool.hidden_labels), error_rate=ERROR_RATE, seed=SEED)\n\n"
            "def report(result, asked):\n"
            '    labels = " ".join(str(y) for y in result.labels[asked])\n'
            '    print(f"第 {len(result.counts)} 轮：已标注 {result.counts[-1]} / {BUDGET}，'
            '本轮标签 {labels}，测试准确率 {result.accuracy[-1]:.1%}")\n\n'
            "mine = annotation.annotate(pool, human, STRATEGY, BUDGET, BATCH, SEED, "
            "on_round=report)",
            metadata={"tags": ["human-loop"]},
        ),
        v4.new_code_cell("curves = annotation.learning_curves(pool, ['random'], [0], 400, 20, 0)"),
    ]
    return v4.new_notebook(cells=cells)


def test_widget_copy_of_the_contract():
    nb = stand_in_notebook()
    copy = widget_copy(nb)
    assert len(copy.cells) == 6  # up to the human-loop cell, then the check cell
    assert copy.cells[2].source.splitlines() == [
        'HUMAN = "widget"',
        "BUDGET = 20",
        "BATCH = 20",
        'STRATEGY = "kmeans"',
        "SEED = 0",
        "ERROR_RATE = 0.03",
    ]
    assert "human-loop" in copy.cells[4].metadata["tags"]
    assert CHECK in copy.cells[5].source
    compile(copy.cells[5].source, "check", "exec")
    assert copy.metadata["kernelspec"]["name"] == "python3"
    assert 'HUMAN = "simulated"' in nb.cells[2].source  # the original is untouched

    nb.cells[2].source = nb.cells[2].source.replace("BATCH = 20", "BATCH=10  # per round")
    assert "BATCH = 20" in widget_copy(nb).cells[2].source.splitlines()
    nb.cells[2].source = nb.cells[2].source.replace("BATCH=10  # per round", "")
    with pytest.raises(ValueError, match="BATCH"):
        widget_copy(nb)
    nb = stand_in_notebook()
    nb.cells[4].metadata["tags"] = []
    with pytest.raises(ValueError, match="human-loop"):
        widget_copy(nb)


# --- the browser --------------------------------------------------------------------------------


def answer_panel(page) -> None:
    """Choose CHOSEN[i] in the i-th dropdown of the panel, then click 提交."""
    panel = page.locator(".course-lib-human")
    selects = panel.locator("select")
    assert selects.count() == LABELS, f"{selects.count()} dropdowns, expected {LABELS}"
    options = selects.first.locator("option").all_text_contents()
    assert options == ["?"] + [str(d) for d in range(10)], options
    for i, label in enumerate(CHOSEN):
        selects.nth(i).select_option(label=str(label))
    chosen = [
        selects.nth(i).evaluate("s => s.options[s.selectedIndex].text") for i in range(LABELS)
    ]
    assert chosen == [str(y) for y in CHOSEN], chosen
    panel.locator("button", has_text="提交").click()


# --- the test -----------------------------------------------------------------------------------


@pytest.fixture
def chapter() -> Path:
    if not CHAPTER.exists():
        missing(f"{CHAPTER.relative_to(ROOT)} does not exist yet (chapter 6a is being written)")
    return CHAPTER


@pytest.mark.slow  # a real JupyterLab, its kernel and a browser: a minute or more
def test_widget_person_labels_one_round_in_jupyterlab(chapter, jupyter_lab, browser):
    nb = widget_copy(nbformat.read(chapter, as_version=4))
    name = "widget_lab.ipynb"
    nbformat.write(nb, jupyter_lab.root / name)
    start = time.monotonic()
    with notebook_page(browser, jupyter_lab, name, "widget_lab_failure.png") as page:
        wait_for(page, lambda s: s["selects"] == LABELS, PANEL_TIMEOUT_S, "labelling panel")
        panel_seconds = time.monotonic() - start
        assert "已标注 0 / 20" in page.locator(".course-lib-human").text_content()
        answer_panel(page)
        state = wait_for(
            page,
            lambda s: any(CHECK in t for t in s["outputs"]),
            ANSWER_TIMEOUT_S,
            f"{CHECK} line after 提交 (panel status empty, not 已提交: the kernel never "
            "handled the click)",
        )
        text = "\n".join(state["outputs"])
        check = re.search(rf"{CHECK} given=([0-9,]*) refit=(\w+) prefix=(.+)", text)
        assert check, f"no parsable {CHECK} line in:\n{text[-3000:]}"
        given = [int(y) for y in check.group(1).split(",") if y]
        assert sorted(given) == sorted(CHOSEN), (given, CHOSEN)
        assert check.group(2) == "True", "the classifier was not refitted on the given labels"
        assert Path(check.group(3)).resolve() == Path(sys.prefix).resolve(), (
            f"the kernel ran {check.group(3)}, not this environment ({sys.prefix})"
        )
        assert "已标注 20 / 20" in text, text[-3000:]
        round_labels = re.search(r"本轮标签 ([0-9](?: [0-9])*)(?![0-9.%])", text)
        assert round_labels, f"no 本轮标签 line in:\n{text[-3000:]}"
        assert round_labels.group(1).split() == [str(y) for y in CHOSEN], round_labels.group(0)
        assert "已提交" in page.locator(".course-lib-human").text_content()
        assert not state["errors"], state["errors"]
        print(
            f"panel after {panel_seconds:.0f} s, answered and checked after "
            f"{time.monotonic() - start:.0f} s"
        )
