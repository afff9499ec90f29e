"""The chapter-6b tuning lab's slider panel in a real JupyterLab, driven by a real browser.

`course_lib.widgets.WidgetHuman.tune` shows one ipywidgets SelectionSlider per knob, the last
trial's validation forecast (a PNG from `tuning.forecast_png`) and a table of the trials with
their 验证 RMSE. Moving a slider is the answer: the running cell (`tuning.tune`) retrains at once
with the new setting, while the sliders are disabled, and its next call redraws the panel. The
test (the server and page helpers are tests/jupyter_lab.py's, as for test_widget_lab.py):

1. writes a notebook whose first cell runs `tuning.tune(tuning.Lab(), "human", 3, human=...)`
   with the widget person, and whose second prints a `TUNE-CHECK` line per trial (its setting
   and validation RMSE) and the kernel's `sys.prefix`;
2. starts `jupyter lab` on 127.0.0.1, opens the notebook in headless Chromium (Playwright, no
   browser download) and runs all cells from the Run menu;
3. waits for the panel (five sliders at the start setting, a figure, one row in the table),
   moves the `steps` slider from 500 to 250 with the keyboard (focus on the noUiSlider handle,
   ArrowLeft), and waits for the redraw: a new figure, a second row with steps 250 and another
   validation RMSE, the sliders enabled again at the new setting;
4. moves `learning_rate` one notch up (ArrowRight: 0.003 to 0.005), the third and last trial,
   then checks the kernel's `TUNE-CHECK` lines: the settings the browser chose, in order, the
   second scored differently from the start, and that no cell showed an error.

On failure it saves `_build/screenshots/widget_tuning_failure.png` and puts the tail of the
server's log (which holds the kernel's stderr too) into the message. Without Chromium,
Playwright or JupyterLab the test is skipped, except under CI (`$CI` set), where it fails. It is
marked `slow` (well under a minute and a half: the start setting compiles and trains in a few
seconds, each other one in about a second).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from course_lib import tuning

from jupyter_lab import KERNELSPEC, notebook_page, wait_for

CHECK = "TUNE-CHECK"
KNOBS = list(tuning.KNOBS)  # the sliders, in order
# where tuning.tune starts (Lab.start): the quick forecast recipe with its start_steps
START = tuning.check_setting(
    {
        **tuning.setting_of(tuning.TuningRecipe().forecast),
        "steps": tuning.TuningRecipe().start_steps,
    }
)


def notch(setting: dict, knob: str, by: int):
    """The value of ``knob`` ``by`` notches from its value in ``setting``."""
    values = tuning.KNOBS[knob]
    return values[values.index(setting[knob]) + by]


# what the "person" does: one notch of one slider per trial (steps 500 → 250, then
# learning_rate 0.003 → 0.005)
MOVES = [("steps", "ArrowLeft", -1), ("learning_rate", "ArrowRight", +1)]
PANEL_TIMEOUT_S = 120  # importing JAX, loading the data, compiling and training the start setting
REDRAW_TIMEOUT_S = 60  # one retrain (about a second) and the next call's figure

TUNE_CELL = """\
from course_lib import tuning, collab

lab = tuning.Lab()
person = collab.make_human("widget", timeout=120)
trials = tuning.tune(lab, "human", 3, human=person)
"""

CHECK_CELL = f"""\
import json as _json
import sys as _sys

for _t in trials:
    print("{CHECK}", _t.number, repr(_t.val_rmse), _json.dumps(_t.setting, sort_keys=True))
print("{CHECK}", "prefix=" + _sys.prefix)
"""


def tuning_notebook():
    cells = [nbformat.v4.new_code_cell(c) for c in (TUNE_CELL, CHECK_CELL)]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def slider_handle(page, name: str):
    """The noUiSlider handle of the panel's slider labelled ``name``."""
    label = page.locator(".widget-label", has_text=re.compile(rf"^{name}$"))
    return page.locator(".course-lib-human .widget-slider", has=label).locator(".noUi-handle")


def move(page, name: str, key: str) -> None:
    """One notch of slider ``name``, as a keyboard user moves it: focus its handle, press key."""
    handle = slider_handle(page, name)
    handle.focus()
    handle.press(key)


def ready(state, trials: int) -> bool:
    """The panel is asking about trial ``trials + 1``: every slider enabled, a figure, and a
    table of ``trials`` rows."""
    return (
        len(state["sliders"]) == len(KNOBS)
        and not any(s["disabled"] for s in state["sliders"])
        and bool(state["image"])
        and len(state["rows"]) == trials
    )


def shown(state) -> tuple[dict, list[dict]]:
    """The sliders' readouts, and the table's rows (header → cell)."""
    sliders = {s["name"]: s["value"] for s in state["sliders"]}
    return sliders, [dict(zip(state["head"], row, strict=True)) for row in state["rows"]]


def g(value) -> str:
    return f"{value:g}"


def test_tuning_notebook_compiles():
    assert START == {"context": 36, "hidden": 64, "learning_rate": 0.003, "steps": 500,
                     "weight_decay": 0.0}  # fmt: skip
    assert [notch(START, k, by) for k, _, by in MOVES] == [250, 0.005]
    nb = tuning_notebook()
    for cell in nb.cells:
        compile(cell.source, "cell", "exec")
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow  # a real JupyterLab, its kernel and a browser: under a minute and a half
def test_sliders_tune_the_forecaster_in_jupyterlab(browser, jupyter_lab):
    name = "widget_tuning.ipynb"
    nbformat.write(tuning_notebook(), jupyter_lab.root / name)
    start = time.monotonic()
    with notebook_page(browser, jupyter_lab, name, "widget_tuning_failure.png") as page:
        state = wait_for(page, lambda s: ready(s, 1), PANEL_TIMEOUT_S, "slider panel")
        panel_seconds = time.monotonic() - start
        sliders, rows = shown(state)
        assert list(sliders) == KNOBS, sliders
        assert sliders == {k: g(v) for k, v in START.items()}, sliders
        assert state["head"][-1] == "验证 RMSE", state["head"]
        assert "试验 1 / 3" in state["panel"], state["panel"]
        setting = dict(START)
        for trial, (knob, key, by) in enumerate(MOVES, start=2):
            image = state["image"]
            value = notch(setting, knob, by)
            move(page, knob, key)
            setting[knob] = value
            moved = g(value)
            wait_for(
                page,
                lambda s, k=knob, v=moved: shown(s)[0][k] == v,
                10,
                f"{knob} slider at {moved} after {key} on its handle",
            )
            if trial == len(MOVES) + 1:
                break  # the last trial: the cell ends instead of asking again
            state = wait_for(
                page,
                lambda s, n=trial: ready(s, n),
                REDRAW_TIMEOUT_S,
                f"redraw for trial {trial + 1} after moving {knob} (panel status not 训练中……: "
                "the kernel never received the slider's change)",
            )
            sliders, rows = shown(state)
            assert state["image"] != image, "the figure was not redrawn"
            assert sliders == {k: g(v) for k, v in setting.items()}, (sliders, setting)
            assert {k: rows[-1][k] for k in KNOBS} == sliders, rows[-1]
            assert rows[-1]["验证 RMSE"] != rows[-2]["验证 RMSE"], rows
            assert f"试验 {trial} / 3" in state["panel"], state["panel"]
        state = wait_for(
            page,
            lambda s: any("prefix=" in t for t in s["outputs"] if CHECK in t),
            REDRAW_TIMEOUT_S,
            f"{CHECK} lines after the last move",
        )
        text = "\n".join(state["outputs"])
        found = re.findall(rf"^{CHECK} (\d+) (\S+) (\{{.*\}})$", text, re.MULTILINE)
        assert len(found) == 3, f"expected 3 trials in:\n{text[-3000:]}"
        numbers = [int(n) for n, _, _ in found]
        scores = [float(s) for _, s, _ in found]
        settings = [json.loads(s) for _, _, s in found]
        assert numbers == [1, 2, 3]
        expected = [dict(START)]
        for knob, _, by in MOVES:
            expected.append({**expected[-1], knob: notch(expected[-1], knob, by)})
        assert settings == expected, settings
        assert scores[1] != scores[0], scores
        prefix = re.search(rf"^{CHECK} prefix=(.+)$", text, re.MULTILINE).group(1)
        assert Path(prefix).resolve() == Path(sys.prefix).resolve(), (
            f"the kernel ran {prefix}, not this environment ({sys.prefix})"
        )
        # the answer disabled the sliders, and no further call enabled them again
        assert all(s["disabled"] for s in state["sliders"]), state["sliders"]
        assert "训练中……" in state["panel"], state["panel"]
        assert not state["errors"], state["errors"]
        print(
            f"panel after {panel_seconds:.0f} s, three trials checked after "
            f"{time.monotonic() - start:.0f} s; validation RMSE {scores}"
        )
