"""The person in the loop: one small interface for a human, and three kinds of human.

Taught in chapter 6 (06a_annotation_lab and the labs after it). The seed article's section 2.2
names three ways people work with a generative model: 数据标注 (labelling data), 模型调整 (tuning
the model) and 交互反馈 (giving feedback). Each lab asks a :class:`Human` for one of

- ``label(images, progress) -> labels``: the digit in each image;
- ``compare(a, b) -> 0 or 1``: which of two items is better;
- ``pick(items) -> index``: the best of several items.

The kinds (``make_human``):

- ``"widget"``: a real person in JupyterLab, with ipywidgets. Each call shows the items and
  blocks until the person presses 提交 (submit): ``jupyter-ui-poll`` lets the kernel handle the
  widgets' messages while the cell is still running, so one loop serves every kind of human.
- ``"simulated"``: a seeded, scripted person for nbval, CI and the web site. It answers from the
  truth (``answer_key``) and errs at its documented ``error_rate``; ``seconds`` adds up an assumed
  ``seconds_per_answer`` per answer (simulated time; nothing sleeps).
- ``"terminal"``: the same calls over ``input()``, for ``python -m course_lib collab ...``.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

KINDS = ("simulated", "widget", "terminal")
NUM_CLASSES = 10


class Human(Protocol):
    """What the labs ask of a person. ``seconds``: the time the person has spent answering."""

    seconds: float

    def label(self, images, progress: str = "") -> np.ndarray: ...

    def compare(self, a, b, progress: str = "") -> int: ...

    def pick(self, items, progress: str = "") -> int: ...


def _digest(image) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def answer_key(images, labels) -> Callable[[np.ndarray], np.ndarray]:
    """A function that returns the true label of any of ``images`` (looked up by content)."""
    table = {_digest(img): int(y) for img, y in zip(images, labels, strict=True)}

    def answers(asked) -> np.ndarray:
        try:
            return np.array([table[_digest(img)] for img in asked], np.int32)
        except KeyError:
            raise ValueError(
                "the simulated person was shown an image it has no answer for"
            ) from None

    return answers


class SimulatedHuman:
    """A scripted person: right answers from ``answers``, wrong ones at ``error_rate``.

    A wrong label is one of the other classes, uniformly; a wrong comparison or pick is the other
    item or a random other one. ``score`` rates an item for ``compare`` and ``pick`` (higher is
    better). ``seconds_per_answer`` is an assumption, not a measurement: about 2 s per digit.
    """

    def __init__(
        self,
        answers: Callable | None = None,
        score: Callable | None = None,
        error_rate: float = 0.03,
        seconds_per_answer: float = 2.0,
        seed: int = 0,
        num_classes: int = NUM_CLASSES,
    ):
        if not 0.0 <= error_rate < 1.0:
            raise ValueError(f"error_rate must be in [0, 1), got {error_rate}")
        self.answers, self.score = answers, score
        self.error_rate, self.seconds_per_answer = error_rate, seconds_per_answer
        self.num_classes = num_classes
        self.rng = np.random.default_rng(seed)
        self.seconds = 0.0
        self.errors = 0

    def _needs(self, what: str, fn):
        if fn is None:
            raise ValueError(f"this simulated person has no {what}; pass {what}= to make it")
        return fn

    def label(self, images, progress: str = "") -> np.ndarray:
        truth = np.asarray(self._needs("answers", self.answers)(images), np.int32)
        wrong = self.rng.random(len(truth)) < self.error_rate
        shift = self.rng.integers(1, self.num_classes, size=len(truth))
        self.errors += int(wrong.sum())
        self.seconds += self.seconds_per_answer * len(truth)
        return np.where(wrong, (truth + shift) % self.num_classes, truth).astype(np.int32)

    def pick(self, items, progress: str = "") -> int:
        scores = [float(self._needs("score", self.score)(item)) for item in items]
        best = int(np.argmax(scores))
        self.seconds += self.seconds_per_answer
        if len(items) > 1 and self.rng.random() < self.error_rate:
            self.errors += 1
            return int(self.rng.choice([i for i in range(len(items)) if i != best]))
        return best

    def compare(self, a, b, progress: str = "") -> int:
        return self.pick([a, b], progress)


# --- terminal ------------------------------------------------------------------------------

_SHADES = " .:-=+*#%@"


def ascii_art(images, per_row: int = 5) -> str:
    """Images in [0, 1] (or 0..255) as text, ``per_row`` side by side, each half-size, numbered."""
    images = np.asarray(images, np.float32)
    images = images / 255.0 if images.max() > 1.0 else images
    small = images[:, ::2, ::2]
    lines = []
    for start in range(0, len(small), per_row):
        group = small[start : start + per_row]
        width = group.shape[2]
        lines.append("".join(f"[{start + i + 1}]".ljust(width + 2) for i in range(len(group))))
        for r in range(group.shape[1]):
            cells = ["".join(_SHADES[int(v * 9.99)] for v in img[r]) for img in group]
            lines.append("  ".join(cells))
    return "\n".join(lines)


class TerminalHuman:
    """A person at a terminal: images as text art, answers typed after a prompt."""

    def __init__(self, input_fn: Callable[[str], str] = input, print_fn: Callable = print):
        self.input_fn, self.print_fn = input_fn, print_fn
        self.seconds = 0.0

    def _ask(self, prompt: str, parse: Callable):
        start = time.perf_counter()
        while True:
            reply = self.input_fn(prompt)
            try:
                value = parse(reply)
                self.seconds += time.perf_counter() - start
                return value
            except ValueError as err:
                self.print_fn(f"  {err}; try again")

    def label(self, images, progress: str = "") -> np.ndarray:
        self.print_fn(ascii_art(images) + (f"\n{progress}" if progress else ""))
        n = len(images)

        def parse(reply: str):
            digits = reply.replace(",", " ").split()
            if len(digits) == 1 and len(digits[0]) == n:
                digits = list(digits[0])
            if len(digits) != n or not all(d.isdigit() and int(d) < NUM_CLASSES for d in digits):
                raise ValueError(f"type {n} digits 0-9, e.g. {' '.join(['7'] * min(n, 3))} ...")
            return np.array([int(d) for d in digits], np.int32)

        return self._ask(f"labels for images 1-{n} (digits, space-separated): ", parse)

    def pick(self, items, progress: str = "") -> int:
        for i, item in enumerate(items, 1):
            self.print_fn(f"[{i}] {item}")

        def parse(reply: str):
            if not reply.strip().isdigit() or not 1 <= int(reply) <= len(items):
                raise ValueError(f"type a number from 1 to {len(items)}")
            return int(reply) - 1

        return self._ask(f"{progress} best item (1-{len(items)}): ", parse)

    def compare(self, a, b, progress: str = "") -> int:
        return self.pick([a, b], progress)


# --- JupyterLab widgets --------------------------------------------------------------------


def png_bytes(image, scale: int = 2) -> bytes:
    """One grey image (values in [0, 1] or 0..255) as PNG bytes, enlarged ``scale`` times."""
    import matplotlib.image

    image = np.asarray(image, np.float32)
    image = image / 255.0 if image.max() > 1.0 else image
    buf = io.BytesIO()
    big = np.kron(np.clip(image, 0, 1), np.ones((scale, scale), np.float32))
    matplotlib.image.imsave(buf, big, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    return buf.getvalue()


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

    def _on_submit(self, _button) -> None:
        try:
            self._answer = self._read()
        except ValueError as err:
            self.status.value = f"<span style='color:#b00'>{err}</span>"

    def _wait(self, read: Callable, progress: str):
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
        self.status.value = "已提交"
        return self._answer

    def label(self, images, progress: str = "") -> np.ndarray:
        w = self.w
        options = [("?", -1)] + [(str(d), d) for d in range(NUM_CLASSES)]
        choices = [
            w.Dropdown(options=options, value=-1, layout=w.Layout(width="60px")) for _ in images
        ]
        cells = [
            w.VBox([w.Image(value=png_bytes(img), format="png", width=56, height=56), c])
            for img, c in zip(images, choices, strict=True)
        ]
        self.items.children = cells

        def read() -> np.ndarray:
            values = np.array([c.value for c in choices], np.int32)
            if (values < 0).any():
                raise ValueError(f"还有 {int((values < 0).sum())} 张没有标注")
            return values

        return self._wait(read, progress)

    def pick(self, items, progress: str = "") -> int:
        w = self.w
        choice = w.RadioButtons(options=[(str(item), i) for i, item in enumerate(items)])
        self.items.children = [choice]
        return self._wait(lambda: int(choice.value), progress)

    def compare(self, a, b, progress: str = "") -> int:
        return self.pick([a, b], progress)


def make_human(
    kind: str,
    answers: Callable | None = None,
    score: Callable | None = None,
    error_rate: float = 0.03,
    seed: int = 0,
    timeout: float | None = None,
) -> Human:
    """A person of ``kind`` ("simulated", "widget" or "terminal"): the chapters' ``HUMAN``.

    ``answers``, ``score``, ``error_rate`` and ``seed`` make the simulated person (the truth that
    only it reads); ``timeout`` (seconds) bounds how long the widget waits for each answer.
    """
    if kind == "simulated":
        return SimulatedHuman(answers, score, error_rate=error_rate, seed=seed)
    if kind == "widget":
        return WidgetHuman(timeout=timeout)
    if kind == "terminal":
        return TerminalHuman()
    raise ValueError(f"human must be one of {KINDS}, got {kind!r}")


def describe(human: Human) -> str:
    """A short name for reports: the kind, and a simulated person's error rate."""
    if isinstance(human, SimulatedHuman):
        return f"simulated (error_rate={human.error_rate:g})"
    return {WidgetHuman: "widget", TerminalHuman: "terminal"}.get(type(human), type(human).__name__)
