"""The person in the loop: one small interface for a human, and three kinds of human.

Taught in chapter 6 (06a_annotation_lab and the labs after it). The seed article's section 2.2
names three ways people work with a generative model: 数据标注 (labelling data), 模型调整 (tuning
the model) and 交互反馈 (giving feedback). Each lab asks a :class:`Human` for one of

- ``label(images, progress) -> labels``: the digit in each image;
- ``compare(a, b) -> 0, 1 or TIE``: which of two items is better, or neither;
- ``pick(items) -> index``: the best of several items;
- ``tune(knobs, history) -> setting``: the next setting of some knobs to try, after seeing the
  score of each setting tried so far.

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
import math
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from course_lib import plotting

KINDS = ("simulated", "widget", "terminal")
NUM_CLASSES = 10
TIE = -1  # what ``compare`` returns when neither item is better


class Human(Protocol):
    """What the labs ask of a person. ``seconds``: the time the person has spent answering."""

    seconds: float

    def label(self, images, progress: str = "") -> np.ndarray: ...

    def compare(self, a, b, progress: str = "") -> int: ...

    def pick(self, items, progress: str = "") -> int: ...

    def tune(self, knobs: dict, history, progress: str = "", figure=None) -> dict: ...


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
    better); ``compare`` answers TIE when the scores differ by at most ``tie_margin`` (None: never).
    ``seconds_per_answer`` is an assumption, not a measurement: about 2 s per digit.
    """

    def __init__(
        self,
        answers: Callable | None = None,
        score: Callable | None = None,
        error_rate: float = 0.03,
        seconds_per_answer: float = 2.0,
        seed: int = 0,
        num_classes: int = NUM_CLASSES,
        tie_margin: float | None = None,
    ):
        if not 0.0 <= error_rate < 1.0:
            raise ValueError(f"error_rate must be in [0, 1), got {error_rate}")
        self.tie_margin = tie_margin
        self.answers, self.score = answers, score
        self.error_rate, self.seconds_per_answer = error_rate, seconds_per_answer
        self.num_classes = num_classes
        self.rng = np.random.default_rng(seed)
        self.seconds = 0.0
        self.errors = 0
        self._plan, self._seen = None, 0

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
        if self.tie_margin is not None:
            score = self._needs("score", self.score)
            if abs(float(score(a)) - float(score(b))) <= self.tie_margin:
                self.seconds += self.seconds_per_answer
                return TIE
        return self.pick([a, b], progress)

    def tune(self, knobs: dict, history, progress: str = "", figure=None) -> dict:
        """The next setting of a person who tunes one knob at a time (:func:`knob_by_knob`).

        ``history`` is the (setting, score) pairs so far, lower scores better; the first is the
        start. ``figure`` (what a real person would look at) is not needed.
        """
        if self._plan is None or len(history) <= self._seen:
            self._plan = knob_by_knob(knobs, *history[0], self.rng)
            self._seen, setting = 1, next(self._plan)
        else:
            self._seen, setting = len(history), self._plan.send(history[-1][1])
        self.seconds += self.seconds_per_answer
        return setting


def knob_by_knob(knobs: dict, start: dict, start_score: float, rng):
    """How the simulated person tunes (a generator: send it each setting's score).

    In a seeded order, the person takes one knob and moves it one value up or down (the
    direction seeded too); a move that lowers the score is kept and repeated in the same
    direction, one that does not is undone, and the other direction is tried once. After a
    round of all knobs with no gain the person tries bolder changes, two knobs at once by one
    value each from the best setting so far, until one helps (anywhere, once nothing near is
    left). No setting is tried twice: once every one has been, it raises ValueError.
    """
    best, best_score = dict(start), start_score
    tried = {_frozen(start)}
    total = math.prod(len(values) for values in knobs.values())

    def attempt(candidate):
        nonlocal best, best_score
        tried.add(_frozen(candidate))
        score = yield candidate
        if score < best_score:
            best, best_score = candidate, score
        return best is candidate

    def moved(name, by):
        values = list(knobs[name])
        return values[int(np.clip(values.index(best[name]) + by, 0, len(values) - 1))]

    while True:
        if len(tried) >= total:  # else the search for an untried setting would never end
            raise ValueError(f"every one of the {total} settings has been tried")
        gained = False
        for name in rng.permutation(list(knobs)):
            for step in rng.permutation([-1, 1]):
                went = False
                while _frozen(c := {**best, name: moved(name, step)}) not in tried:
                    if not (yield from attempt(c)):
                        break
                    went = gained = True
                if went:
                    break
        for k in range(0 if gained else 10_000):  # bolder changes, until one helps
            names = rng.choice(list(knobs), size=2, replace=False)
            c = {**best, **{n: moved(n, rng.choice([-1, 1])) for n in names}}
            if k >= 1000:  # every change near the best was tried: anywhere at all
                c = {n: v[rng.integers(len(v))] for n, v in knobs.items()}
            if _frozen(c) not in tried and (yield from attempt(c)):
                break


def _frozen(setting: dict) -> tuple:
    return tuple(sorted(setting.items()))


# --- terminal ------------------------------------------------------------------------------

_SHADES = " .:-=+*#%@"


def ascii_art(images, per_row: int = 5) -> str:
    """Images in [0, 1] (or 0..255) as text, ``per_row`` side by side, each half-size, numbered."""
    small = plotting.unit_range(images)[:, ::2, ::2]
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

    kind = "terminal"  # what ``describe`` reports

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
        if _are_images(items):
            self.print_fn(ascii_art(np.asarray(items), per_row=4))
        else:
            for i, item in enumerate(items, 1):
                self.print_fn(f"[{i}] {item}")

        def parse(reply: str):
            if not reply.strip().isdigit() or not 1 <= int(reply) <= len(items):
                raise ValueError(f"type a number from 1 to {len(items)}")
            return int(reply) - 1

        return self._ask(f"{progress} best item (1-{len(items)}): ", parse)

    def compare(self, a, b, progress: str = "") -> int:
        if _are_images([a, b]):
            self.print_fn(ascii_art(np.asarray([a, b]), per_row=2))
        else:
            self.print_fn(f"[1] {a}\n[2] {b}")

        def parse(reply: str) -> int:
            answers = {"1": 0, "2": 1, "0": TIE, "=": TIE}
            if reply.strip() not in answers:
                raise ValueError("type 1 or 2 for the better one, or 0 (or =) for a tie")
            return answers[reply.strip()]

        return self._ask(f"{progress} better (1 or 2; 0 for a tie): ", parse)

    def tune(self, knobs: dict, history, progress: str = "", figure=None) -> dict:
        last = history[-1][0]
        for i, (setting, score) in enumerate(history, 1):
            self.print_fn(
                f"  [{i}] score {score:.4g}  " + " ".join(f"{k}={v:g}" for k, v in setting.items())
            )
        for name, values in knobs.items():
            self.print_fn(f"  {name}: {' '.join(f'{v:g}' for v in values)}")

        def parse(reply: str) -> dict:
            setting = dict(last)
            for word in reply.split():
                name, _, text = word.partition("=")
                if name not in knobs:
                    raise ValueError(f"unknown knob {name!r}; the knobs are {', '.join(knobs)}")
                match = [v for v in knobs[name] if text and _same(v, text)]
                if not match:
                    raise ValueError(
                        f"{name} takes one of {' '.join(f'{v:g}' for v in knobs[name])}"
                    )
                setting[name] = match[0]
            return setting

        return self._ask(
            f"{progress} changes, e.g. {next(iter(knobs))}=... (empty: same again): ", parse
        )


def _are_images(items) -> bool:
    return len(items) > 0 and all(np.ndim(item) >= 2 for item in items)


def _same(value, text: str) -> bool:
    try:
        return abs(float(text) - value) <= 1e-9 * max(1.0, abs(value))
    except ValueError:
        return False


def make_human(
    kind: str,
    answers: Callable | None = None,
    score: Callable | None = None,
    error_rate: float = 0.03,
    seed: int = 0,
    timeout: float | None = None,
    tie_margin: float | None = None,
) -> Human:
    """A person of ``kind`` ("simulated", "widget" or "terminal"): the chapters' ``HUMAN``.

    ``answers``, ``score``, ``error_rate``, ``seed`` and ``tie_margin`` make the simulated person
    (the truth that only it reads); ``timeout`` (seconds) bounds how long the widget waits
    for each answer.
    """
    if kind == "simulated":
        return SimulatedHuman(
            answers, score, error_rate=error_rate, seed=seed, tie_margin=tie_margin
        )
    if kind == "widget":
        from course_lib.widgets import WidgetHuman  # ipywidgets only where a person uses it

        return WidgetHuman(timeout=timeout)
    if kind == "terminal":
        return TerminalHuman()
    raise ValueError(f"human must be one of {KINDS}, got {kind!r}")


def describe(human: Human) -> str:
    """A short name for reports: the kind, and a simulated person's error rate."""
    if isinstance(human, SimulatedHuman):
        return f"simulated (error_rate={human.error_rate:g})"
    return getattr(human, "kind", type(human).__name__)
