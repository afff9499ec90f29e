"""The chapter-6c feedback lab's buttons in a real JupyterLab, driven by a real browser.

`course_lib.widgets.WidgetHuman.compare` shows two poems side by side (one line per clause, in a
large font) with three buttons, A 更好, B 更好 and 差不多 (`collab.TIE`), and `pick` shows images
in a row with a 选这张 button under each. Clicking a button is the answer: the running cell
goes on at once and the reused panel shows the next question. The test (the server and page
helpers are tests/jupyter_lab.py's, as for test_widget_lab.py and test_widget_tuning.py):

1. writes a notebook whose first cell makes the widget person and loops over three poem pairs,
   calling `compare(a, b, "第 i / 3 对")` and printing the answers on a `FEEDBACK-CHECK` line,
   and whose second cell asks the same person to `pick` one of eight grey 28x28 images and prints
   the index, and the kernel's `sys.prefix`;
2. starts `jupyter lab` on 127.0.0.1, opens the notebook in headless Chromium (Playwright, no
   browser download) and runs all cells from the Run menu;
3. for each pair, waits for its progress line and both poems (A shown as its four lines), then
   clicks A 更好, then 差不多, then B 更好, and checks that the printed answers are [0, -1, 1];
4. waits for the eight images and their buttons, clicks the third 选这张 and checks that the
   printed index is 2, and that no cell showed an error.

On failure it saves `_build/screenshots/widget_feedback_failure.png` and puts the tail of the
server's log (which holds the kernel's stderr too) into the message. Without Chromium,
Playwright or JupyterLab the test is skipped, except under CI (`$CI` set), where it fails. It is
marked `slow` (about half a minute: no JAX, no data, just the server, the kernel and the clicks).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

from jupyter_lab import KERNELSPEC, notebook_page, wait_for

CHECK = "FEEDBACK-CHECK"
POEMS = [
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "红豆生南国，春来发几枝。愿君多采撷，此物最相思。",
    "千山鸟飞绝，万径人踪灭。孤舟蓑笠翁，独钓寒江雪。",
]
PAIRS = [(0, 1), (2, 3), (1, 2)]  # each pair's A poem differs from the last pair's
CLICKS = ["A 更好", "差不多", "B 更好"]  # what the "person" answers, pair by pair
ANSWERS = [0, -1, 1]  # what compare returns for them (collab.TIE is -1)
IMAGES = 8
PICKED = 2  # the third image
PANEL_TIMEOUT_S = 120  # the kernel starts and imports course_lib and ipywidgets
NEXT_TIMEOUT_S = 30  # one click, and the next question

COMPARE_CELL = f"""\
from course_lib import collab

POEMS = {POEMS!r}
PAIRS = {PAIRS!r}
person = collab.make_human("widget", timeout=120)
answers = []
for i, (a, b) in enumerate(PAIRS, 1):
    answers.append(person.compare(POEMS[a], POEMS[b], f"第 {{i}} / {{len(PAIRS)}} 对"))
print("{CHECK}", "compare=" + ",".join(str(x) for x in answers))
"""

PICK_CELL = f"""\
import sys as _sys

import numpy as np

images = [np.full((28, 28), (i + 1) / {IMAGES}, np.float32) for i in range({IMAGES})]
for i, image in enumerate(images):
    image[4 + 2 * i : 8 + 2 * i, 10:18] = 0.0  # a dark bar, lower in each image
picked = person.pick(images, "选出最好的一张")
print("{CHECK}", f"pick={{picked}}")
print("{CHECK}", "prefix=" + _sys.prefix)
"""


def feedback_notebook():
    cells = [nbformat.v4.new_code_cell(c) for c in (COMPARE_CELL, PICK_CELL)]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def lines(poem: str) -> list[str]:
    """A five-character quatrain's four lines, as the panel shows them."""
    return re.findall(r"[^，。]+[，。]", poem)


def asking(state, pair: int) -> bool:
    """The panel shows pair ``pair`` (1-based): its progress line and both poems."""
    a, b = PAIRS[pair - 1]
    panel = state["panel"] or ""
    return f"第 {pair} / {len(PAIRS)} 对" in panel and POEMS[a] in panel and POEMS[b] in panel


def checked(state, key: str) -> str | None:
    found = re.search(rf"^{CHECK} {key}=(.*)$", "\n".join(state["outputs"]), re.MULTILINE)
    return found.group(1) if found else None


def test_feedback_notebook_compiles():
    nb = feedback_notebook()
    for cell in nb.cells:
        compile(cell.source, "cell", "exec")
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert lines(POEMS[0]) == ["白日依山尽，", "黄河入海流。", "欲穷千里目，", "更上一层楼。"]
    assert all(PAIRS[i][0] != PAIRS[i + 1][0] for i in range(len(PAIRS) - 1))


@pytest.mark.slow  # a real JupyterLab, its kernel and a browser: about half a minute
def test_buttons_compare_poems_and_pick_an_image_in_jupyterlab(browser, jupyter_lab):
    name = "widget_feedback.ipynb"
    nbformat.write(feedback_notebook(), jupyter_lab.root / name)
    start = time.monotonic()
    with notebook_page(browser, jupyter_lab, name, "widget_feedback_failure.png") as page:
        panel = page.locator(".course-lib-human")
        click_seconds, clicked = [], start
        for pair, click in enumerate(CLICKS, start=1):
            wait_for(
                page,
                lambda s, p=pair: asking(s, p),
                PANEL_TIMEOUT_S if pair == 1 else NEXT_TIMEOUT_S,
                f"pair {pair} (第 {pair} / {len(PAIRS)} 对 and its poems)"
                + ("" if pair == 1 else f" after clicking {CLICKS[pair - 2]}"),
            )
            if pair > 1:
                click_seconds.append(time.monotonic() - clicked)
            a = POEMS[PAIRS[pair - 1][0]]
            card = panel.locator(".widget-html", has_text=lines(a)[0])
            assert card.inner_text().split() == ["A", *lines(a)], card.inner_text()
            buttons = panel.locator("button:enabled", has_text=re.compile("更好|差不多"))
            assert buttons.all_inner_texts() == ["A 更好", "B 更好", "差不多"]
            assert panel.locator("button", has_text="提交").is_hidden()
            panel.locator("button:enabled", has_text=click).click()
            clicked = time.monotonic()
        state = wait_for(
            page, lambda s: checked(s, "compare"), NEXT_TIMEOUT_S, f"{CHECK} compare= line"
        )
        assert checked(state, "compare") == ",".join(map(str, ANSWERS)), state["outputs"]

        choose = panel.locator("button:enabled", has_text="选这张")
        choose.nth(IMAGES - 1).wait_for(timeout=NEXT_TIMEOUT_S * 1000)
        assert choose.count() == IMAGES
        assert panel.locator("img").count() == IMAGES
        assert "选出最好的一张" in panel.text_content()
        choose.nth(PICKED).click()
        state = wait_for(
            page, lambda s: checked(s, "prefix"), NEXT_TIMEOUT_S, f"{CHECK} pick= line"
        )
        assert checked(state, "pick") == str(PICKED), state["outputs"]
        prefix = checked(state, "prefix")
        assert Path(prefix).resolve() == Path(sys.prefix).resolve(), (
            f"the kernel ran {prefix}, not this environment ({sys.prefix})"
        )
        assert panel.locator("button:disabled", has_text="选这张").count() == IMAGES
        assert "已选择" in panel.text_content()
        assert not state["errors"], state["errors"]
        print(
            f"answered and checked after {time.monotonic() - start:.0f} s; next pair seen "
            f"{', '.join(f'{s:.1f}' for s in click_seconds)} s after each click (polled each 0.5 s)"
        )
