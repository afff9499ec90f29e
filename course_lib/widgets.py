"""The person in JupyterLab: :class:`WidgetHuman`, the ``"widget"`` kind of ``collab.Human``.

Taught in chapter 6 (06a_annotation_lab, 06b_tuning_lab). One panel of ipywidgets is shown once
and reused for every question. Each call fills the panel, then blocks until the person answers:
``jupyter-ui-poll`` lets the kernel handle the widgets' messages while the cell is still running,
so "Run All" works and one loop serves every kind of person (``collab.make_human``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from course_lib import plotting
from course_lib.collab import NUM_CLASSES


def check_kernel_can_poll(version: str | None = None) -> None:
    """Fail fast where ``jupyter_ui_poll`` cannot work: under ipykernel 7 a waiting cell never
    sees the 提交 click (jupyter-ui-poll calls ``Kernel.do_one_iteration``, which 7.x removed or
    bypasses with subshells), so the cell would hang for ever."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    if version is None:
        try:
            version = installed("ipykernel")
        except PackageNotFoundError:
            return  # not running under ipykernel: let jupyter_ui_poll try
    if int(version.split(".")[0]) >= 7:
        raise RuntimeError(
            f"the widget person needs ipykernel < 7 (this kernel has {version}): jupyter-ui-poll "
            "cannot receive widget clicks under ipykernel 7. Run  pip install 'ipykernel>=6,<7'  "
            'in the kernel\'s environment and restart the kernel, or use HUMAN = "terminal".'
        )


class WidgetHuman:
    """A person in JupyterLab: a panel of ipywidgets, shown once and reused for every question.

    Each call fills the panel, then waits (``jupyter_ui_poll.ui_events``) until 提交 is pressed.
    ``poll_seconds`` is how long to wait between polls; ``timeout`` (seconds, None: forever)
    stops a forgotten cell with an error instead of blocking the kernel for ever.
    """

    kind = "widget"  # what ``collab.describe`` reports

    def __init__(self, poll_seconds: float = 0.05, timeout: float | None = None):
        import ipywidgets as w

        check_kernel_can_poll()

        self.w, self.poll_seconds, self.timeout = w, poll_seconds, timeout
        self.progress = w.HTML()
        self.items = w.GridBox(layout=w.Layout(grid_template_columns="repeat(10, 70px)"))
        self.status = w.HTML()
        self.submit = w.Button(description="提交", button_style="primary", icon="check")
        self.submit.on_click(self._on_submit)
        self.panel = w.VBox([self.progress, self.items, w.HBox([self.submit, self.status])])
        self.panel.add_class("course-lib-human")
        self.seconds = 0.0
        self._shown = False
        self._read: Callable | None = None
        self._answer = None
        self._sliders: dict = {}

    def _on_submit(self, _button) -> None:
        try:
            self._answer = self._read()
        except ValueError as err:
            self.status.value = f"<span style='color:#b00'>{err}</span>"

    def _show(self, children, columns: str = "repeat(10, 70px)", button: bool = True) -> None:
        self.items.layout.grid_template_columns = columns
        self.items.children = children
        self.submit.layout.display = None if button else "none"

    def _wait(self, read: Callable, progress: str, done: str = "已提交"):
        from IPython.display import display
        from jupyter_ui_poll import ui_events

        self.progress.value, self.status.value = f"<b>{progress}</b>", ""
        self._read, self._answer = read, None
        if not self._shown:
            display(self.panel)
            self._shown = True
        start = time.perf_counter()
        with ui_events() as poll:
            while self._answer is None:
                if self.timeout is not None and time.perf_counter() - start > self.timeout:
                    raise TimeoutError(f"no answer within {self.timeout} s; re-run the cell")
                poll(20)
                time.sleep(self.poll_seconds)
        self.seconds += time.perf_counter() - start
        self.status.value = done
        return self._answer

    def label(self, images, progress: str = "") -> np.ndarray:
        w = self.w
        options = [("?", -1)] + [(str(d), d) for d in range(NUM_CLASSES)]
        choices = [
            w.Dropdown(options=options, value=-1, layout=w.Layout(width="60px")) for _ in images
        ]
        cells = [
            w.VBox([w.Image(value=plotting.png_bytes(img), format="png", width=56, height=56), c])
            for img, c in zip(images, choices, strict=True)
        ]
        self._show(cells)

        def read() -> np.ndarray:
            values = np.array([c.value for c in choices], np.int32)
            if (values < 0).any():
                raise ValueError(f"还有 {int((values < 0).sum())} 张没有标注")
            return values

        return self._wait(read, progress)

    def pick(self, items, progress: str = "") -> int:
        w = self.w
        choice = w.RadioButtons(options=[(str(item), i) for i, item in enumerate(items)])
        self._show([choice], columns="auto")
        return self._wait(lambda: int(choice.value), progress)

    def compare(self, a, b, progress: str = "") -> int:
        return self.pick([a, b], progress)

    def tune(self, knobs: dict, history, progress: str = "", figure=None) -> dict:
        """A slider per knob, the last trial's figure and every trial's score. Moving a slider
        is the answer: the lab retrains at once and the next call redraws the figure."""
        w = self.w
        if set(self._sliders) != set(knobs):
            self._sliders = {
                name: w.SelectionSlider(
                    options=[(f"{v:g}", v) for v in values],
                    description=name,
                    continuous_update=False,
                    style={"description_width": "110px"},
                    layout=w.Layout(width="460px"),
                )
                for name, values in knobs.items()
            }
            for slider in self._sliders.values():
                slider.observe(self._on_slide, names="value")
        self._read = None  # setting the sliders below is not an answer
        for name, slider in self._sliders.items():
            slider.value, slider.disabled = history[-1][0][name], False
        picture = [] if figure is None else [w.Image(value=figure(), format="png")]
        self._show(
            [w.VBox([*self._sliders.values(), *picture, w.HTML(_trials_table(history))])],
            columns="auto",
            button=False,
        )
        setting = self._wait(
            lambda: {n: s.value for n, s in self._sliders.items()}, progress, "训练中……"
        )
        for slider in self._sliders.values():
            slider.disabled = True  # until the lab has trained this setting and asks again
        return setting

    def _on_slide(self, _change) -> None:
        if self._read is not None:
            self._answer = self._read()


def _trials_table(history) -> str:
    """The trials so far as an HTML table, the best one in bold (lower scores are better)."""
    best = min(range(len(history)), key=lambda i: history[i][1])
    names = list(history[0][0])
    head = "".join(f"<th>{n}</th>" for n in ["#", *names, "验证 RMSE"])
    rows = []
    for i, (setting, score) in enumerate(history):
        shown = f"{score:.3f}" if math.isfinite(score) else "发散"
        cells = [str(i + 1), *(f"{setting[n]:g}" for n in names), shown]
        style = " style='font-weight:bold'" if i == best else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"
