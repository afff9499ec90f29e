"""The person in JupyterLab: :class:`WidgetHuman`, the ``"widget"`` kind of ``collab.Human``.

Taught in chapter 6 (06a_annotation_lab, 06b_tuning_lab, 06c_feedback_lab). One panel of
ipywidgets is shown once and reused for every question. Each call fills the panel, then blocks
until the person answers: ``jupyter-ui-poll`` lets the kernel handle the widgets' messages while
the cell is still running, so "Run All" works and one loop serves every kind of person
(``collab.make_human``).

The questions: ``label`` (a dropdown under each image, then 提交), ``tune`` (a slider per knob;
moving one is the answer), ``compare`` (the two items side by side, texts such as poems one line
per clause in a large font, images enlarged, and three buttons: A 更好, B 更好, 差不多 for
``collab.TIE``) and ``pick`` (images in a row, a 选这张 button under each; other items as radio
buttons, then 提交). A button of ``compare`` or ``pick`` is the answer itself: the panel shows the
next question as soon as the lab asks it.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Callable

import numpy as np

from course_lib import plotting
from course_lib.collab import NUM_CLASSES, TIE, _are_images

# the buttons of ``compare``: (text, answer)
COMPARE_CHOICES = (("A 更好", 0), ("B 更好", 1), ("差不多", TIE))
PICK_CHOICE = "选这张"
# a clause of a text: up to and including its punctuation (a quatrain's four lines)
_CLAUSE = re.compile(r"[^，。！？；,.!?;\n]+[，。！？；,.!?;]*")


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

    Each call fills the panel, then waits (``jupyter_ui_poll.ui_events``) until 提交 or an answer
    button is pressed (or, for ``tune``, a slider is moved). ``poll_seconds`` is how long to wait
    between polls; ``timeout`` (seconds, None: forever) stops a forgotten cell with an error
    instead of blocking the kernel for ever.
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
        self._question = 0  # counts the questions asked with answer buttons
        self._choices: list = []  # the answer buttons of the current question
        self._made: list = []  # the widgets made for the current question, closed at the next

    def _on_submit(self, _button) -> None:
        if self._read is None:  # a question answered by its own buttons
            return
        try:
            self._answer = self._read()
        except ValueError as err:
            self.status.value = f"<span style='color:#b00'>{err}</span>"

    def _show(
        self, children, columns: str = "repeat(10, 70px)", button: bool = True, made=()
    ) -> None:
        """Fill the panel with ``children``; close the last question's ``made`` widgets."""
        self.items.layout.grid_template_columns = columns
        self.items.children = children
        self.submit.layout.display = None if button else "none"
        old, self._made = self._made, list(made)
        for widget in old:  # with its layout and style, which are widgets of their own
            for part in (widget, getattr(widget, "layout", None), getattr(widget, "style", None)):
                if part is not None:
                    part.close()

    def _buttons(self, choices) -> list:
        """A button per (text, answer) of ``choices``: clicking one answers this question.

        Each question gets new buttons, and the last question's are closed, so a late second
        click never answers the next question; once answered, the buttons are disabled.
        """
        self._question += 1
        question, buttons = self._question, []
        for text, answer in choices:
            button = self.w.Button(description=text)
            button.on_click(lambda _b, a=answer: self._choose(question, a))
            buttons.append(button)
        self._choices = buttons
        return buttons

    def _choose(self, question: int, answer) -> None:
        if question != self._question or self._answer is not None:
            return  # another question's button, or a second click
        self._answer = answer
        for button in self._choices:
            button.disabled = True

    def _wait(self, read: Callable | None, progress: str, done: str = "已提交"):
        """Show ``progress`` and wait for the answer: ``read()`` at 提交 (None: the question's
        own buttons answer it)."""
        from IPython.display import display
        from jupyter_ui_poll import ui_events

        self.progress.value, self.status.value = f"<b>{progress}</b>", ""
        self._read, self._answer = read, None
        if not self._shown:
            display(self.panel)
            self._shown = True
        _feed_idle_dispatcher()
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
        """The index of the best of ``items``: images in a row, each with a 选这张 button under
        it; other items as radio buttons, then 提交."""
        w = self.w
        if not _are_images(items):
            choice = w.RadioButtons(options=[(str(item), i) for i, item in enumerate(items)])
            self._show([choice], columns="auto", made=[choice])
            return self._wait(lambda: int(choice.value), progress)
        buttons = self._buttons([(PICK_CHOICE, i) for i in range(len(items))])
        images = [_image(w, item, 100) for item in items]
        cells = [w.VBox([img, b]) for img, b in zip(images, buttons, strict=True)]
        for b in buttons:
            b.layout.width = "100px"
        columns = f"repeat({min(len(items), 8)}, 108px)"
        self._show(cells, columns=columns, button=False, made=[*cells, *images, *buttons])
        return int(self._wait(None, progress, "已选择"))

    def compare(self, a, b, progress: str = "") -> int:
        """0 if ``a`` is better, 1 if ``b`` is, ``collab.TIE`` if neither: the two side by side
        (texts one clause a line, large; images enlarged) and a button per answer."""
        w = self.w
        cards = [_card(w, item, name) for item, name in ((a, "A"), (b, "B"))]
        buttons = self._buttons(COMPARE_CHOICES)
        for button, style in zip(buttons, ("info", "info", ""), strict=True):
            button.button_style = style
        row = w.HBox(cards, layout=w.Layout(grid_gap="24px"))
        choices = w.HBox(buttons, layout=w.Layout(grid_gap="8px", margin="12px 0 0 0"))
        parts = [p for card in cards for p in getattr(card, "children", ())]
        made = [row, choices, *cards, *parts, *buttons]
        self._show([row, choices], columns="auto", button=False, made=made)
        return int(self._wait(None, progress, "已选择"))

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


def _feed_idle_dispatcher(kernel=None) -> None:
    """Keep the next widget message (a click) for ``poll``, in a cell that "Run All" queued.

    jupyter-ui-poll holds back the cells queued behind a waiting one and runs them later, from
    a task of its own. Meanwhile ipykernel 6's dispatcher (``dispatch_queue``) waits on the
    kernel's tornado message queue, and that queue hands its next message straight to a waiting
    reader: the first click in such a cell would go to the dispatcher, which cannot run before
    the cell ends, and be lost. A message that does nothing, given first, satisfies it.
    """
    if kernel is None:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
    queue = getattr(kernel, "msg_queue", None)
    if queue is not None and getattr(queue, "_getters", None):
        queue.put_nowait((next(kernel._message_counter), _nothing, ()))


async def _nothing() -> None:
    """The message for an idle dispatcher (``_feed_idle_dispatcher``)."""


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


def _image(w, image, size: int):
    """An ipywidgets Image of a grey ``image``, enlarged to about ``size`` pixels."""
    scale = max(1, round(size / max(np.shape(image)[:2])))
    png = plotting.png_bytes(image, scale)
    return w.Image(
        value=png, format="png", width=size, height=size, layout=w.Layout(border="1px solid #ccc")
    )


def _card(w, item, name: str):
    """One side of a comparison: ``name`` (A or B) over the item, an image enlarged or a text
    one clause a line in a large font."""
    head = f"<div style='font-size:15px;font-weight:bold;color:#555'>{name}</div>"
    if _are_images([item]):
        return w.VBox([w.HTML(head), _image(w, item, 196)])
    lines = "<br>".join(html.escape(line) for line in _lines(str(item)))
    body = f"<div style='font-size:30px;line-height:1.5;letter-spacing:2px'>{lines}</div>"
    return w.HTML(
        f"<div style='padding:8px 20px;border:1px solid #ccc;border-radius:6px'>{head}{body}</div>"
    )


def _lines(text: str) -> list[str]:
    """``text`` one clause a line: a five-character quatrain as its four lines."""
    return [m.strip() for m in _CLAUSE.findall(text) if m.strip()] or [text]
