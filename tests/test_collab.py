"""The person in the loop: the simulated, terminal and widget humans, without a person."""

import contextlib
import io

import matplotlib.image
import numpy as np
import pytest
from course_lib import collab, plotting, widgets


def digit_images(n, seed=0):
    """``n`` distinct 28x28 uint8 images and a label 0-9 for each."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, :4] = np.arange(n)[:, None].view(np.uint8).reshape(n, -1)[:, :4]  # all differ
    return images, rng.integers(0, 10, size=n).astype(np.int32)


def always(label):
    return lambda images: np.full(len(images), label, np.int32)


# --- simulated -----------------------------------------------------------------------------


def test_simulated_human_is_seeded():
    images, truth = digit_images(500)
    key = collab.answer_key(images, truth)
    a = collab.SimulatedHuman(key, error_rate=0.2, seed=1).label(images)
    b = collab.SimulatedHuman(key, error_rate=0.2, seed=1).label(images)
    c = collab.SimulatedHuman(key, error_rate=0.2, seed=2).label(images)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a != truth, c != truth)  # other seed, other mistakes


def test_simulated_human_errs_at_its_documented_rate():
    n = 20_000
    person = collab.SimulatedHuman(always(4), seed=0)
    assert person.error_rate == 0.03  # the documented default
    given = np.concatenate([person.label(np.zeros((1000, 2, 2))) for _ in range(n // 1000)])
    wrong = given != 4
    # binomial(20000, 0.03) has sd 0.0012: 0.005 is more than four of them
    assert abs(wrong.mean() - 0.03) < 0.005
    assert person.errors == int(wrong.sum())
    assert ((given >= 0) & (given <= 9)).all() and given.dtype == np.int32
    # wrong labels spread over the nine other classes
    assert set(np.unique(given[wrong]).tolist()) == set(range(10)) - {4}
    assert person.seconds == pytest.approx(2.0 * n)


def test_simulated_human_counts_time_per_answer_and_can_be_always_right():
    images, truth = digit_images(300)
    person = collab.SimulatedHuman(
        collab.answer_key(images, truth), error_rate=0.0, seconds_per_answer=1.5
    )
    np.testing.assert_array_equal(person.label(images), truth)
    np.testing.assert_array_equal(person.label(images[::-1]), truth[::-1])
    assert person.errors == 0 and person.seconds == pytest.approx(1.5 * 600)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_simulated_human_rejects_an_impossible_error_rate(rate):
    with pytest.raises(ValueError, match=r"error_rate must be in \[0, 1\)"):
        collab.SimulatedHuman(always(0), error_rate=rate)


def test_simulated_pick_and_compare_follow_the_score():
    right = collab.SimulatedHuman(score=lambda item: -abs(item - 5), error_rate=0.0)
    assert right.pick([1, 9, 4, 7]) == 2  # 4 is nearest 5
    assert right.compare(3, 6) == 1 and right.compare(5, 0) == 0
    assert right.errors == 0 and right.seconds == pytest.approx(3 * 2.0)

    person = collab.SimulatedHuman(score=float, error_rate=0.1, seed=3)
    picks = np.array([person.pick([0, 1, 2, 3]) for _ in range(5000)])
    wrong = picks != 3
    assert abs(wrong.mean() - 0.1) < 0.02 and person.errors == int(wrong.sum())
    assert set(np.unique(picks[wrong]).tolist()) == {0, 1, 2}
    choices = np.array([person.compare(2.0, 1.0) for _ in range(5000)])
    assert abs(choices.mean() - 0.1) < 0.02  # 1 (the worse item) only when it errs
    assert all(person.pick([7.0]) == 0 for _ in range(200))  # one item: nothing to get wrong


def test_simulated_human_without_answers_or_score_says_what_is_missing():
    with pytest.raises(ValueError, match="no answers; pass answers="):
        collab.SimulatedHuman().label(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="no score; pass score="):
        collab.SimulatedHuman(always(1)).pick([1, 2])
    with pytest.raises(ValueError, match="no score"):
        collab.SimulatedHuman(always(1)).compare(1, 2)


def test_answer_key_looks_images_up_by_content():
    images, truth = digit_images(200, seed=4)
    key = collab.answer_key(images, truth)
    order = np.random.default_rng(0).permutation(200)
    np.testing.assert_array_equal(key(images[order]), truth[order])
    np.testing.assert_array_equal(key(images[order].copy()), truth[order])  # a copy is the same
    stranger = images[:1].copy()
    stranger[0, 5, 5] ^= 1
    with pytest.raises(ValueError, match="no answer for"):
        key(stranger)
    with pytest.raises(ValueError):  # one label per image
        collab.answer_key(images, truth[:-1])


# --- simulated tuning ----------------------------------------------------------------------

# a toy of three knobs (5 x 3 x 4 = 60 settings) and a separable score, lowest (0) at OPTIMUM
TOY = {"a": (0, 1, 2, 3, 4), "b": (10, 20, 30), "c": (0.1, 0.2, 0.3, 0.4)}
OPTIMUM = {"a": 3, "b": 20, "c": 0.1}
START = {"a": 0, "b": 30, "c": 0.4}


def toy_score(setting):
    return float(sum((TOY[k].index(setting[k]) - TOY[k].index(OPTIMUM[k])) ** 2 for k in TOY))


def tuned(person, trials, start=START):
    """The (setting, score) history of ``person`` tuning the toy for ``trials`` trials."""
    history = [(start, toy_score(start))]
    while len(history) < trials:
        setting = person.tune(TOY, history, progress=f"trial {len(history)}")
        history.append((setting, toy_score(setting)))
    return history


def notches(a, b):
    """How far each knob of setting ``b`` is from ``a``, in positions of its values."""
    return {k: abs(TOY[k].index(b[k]) - TOY[k].index(a[k])) for k in TOY}


@pytest.mark.parametrize("seed", range(5))
def test_simulated_tuner_reaches_the_optimum_one_notch_at_a_time(seed):
    person = collab.SimulatedHuman(seed=seed)
    history = tuned(person, 12)
    settings = [s for s, _ in history]
    assert OPTIMUM in settings  # coordinate descent on a separable bowl: 9 moves at most
    reached = settings.index(OPTIMUM)
    for i in range(1, reached + 1):  # while it improves: one knob moved by one value
        best = min(history[:i], key=lambda h: h[1])[0]
        assert sorted(notches(best, settings[i]).values()) == [0, 0, 1], (i, settings[i])
    assert all(set(s) == set(TOY) and all(s[k] in TOY[k] for k in TOY) for s in settings)
    assert person.seconds == pytest.approx(2.0 * 11)  # its seconds_per_answer per answer


def test_simulated_tuner_repeats_a_move_that_helps():
    history = tuned(collab.SimulatedHuman(seed=0), 12)
    settings = [s for s, _ in history]
    checked = 0
    for i in range(1, len(history) - 1):
        if history[i][1] >= min(score for _, score in history[:i]):
            continue  # not an improvement
        before = min(history[:i], key=lambda h: h[1])[0]
        (name,) = [k for k in TOY if settings[i][k] != before[k]]
        step = TOY[name].index(settings[i][name]) - TOY[name].index(before[name])
        further = TOY[name].index(settings[i][name]) + step
        if 0 <= further < len(TOY[name]):  # the same knob again, the same way
            assert settings[i + 1] == {**settings[i], name: TOY[name][further]}
            checked += 1
    assert checked >= 2  # the toy's start is three notches from the optimum in "a" and "c"


@pytest.mark.parametrize("seed", [0, 3])
def test_simulated_tuner_is_seeded(seed):
    a = tuned(collab.SimulatedHuman(seed=seed), 15)
    b = tuned(collab.SimulatedHuman(seed=seed), 15)
    c = tuned(collab.SimulatedHuman(seed=seed + 1), 15)
    assert a == b
    assert [s for s, _ in a] != [s for s, _ in c]  # another seed, another order of knobs


def test_simulated_tuner_never_repeats_a_setting_and_tries_them_all():
    history = tuned(collab.SimulatedHuman(seed=1), 60)  # every one of the toy's 60 settings
    keys = {tuple(sorted(s.items())) for s, _ in history}
    assert len(keys) == 60
    assert min(score for _, score in history) == 0.0


def test_simulated_tuner_says_when_every_setting_was_tried():
    person = collab.SimulatedHuman(seed=2)
    history = tuned(person, 60)
    with pytest.raises(ValueError, match="every one of the 60 settings has been tried"):
        person.tune(TOY, [*history])


def test_simulated_tuner_starts_afresh_for_a_new_start():
    person = collab.SimulatedHuman(seed=0)
    tuned(person, 8)
    fresh = {"a": 4, "b": 10, "c": 0.3}
    history = [(fresh, toy_score(fresh))]  # a history of one: a new session
    first = person.tune(TOY, history)
    assert sorted(notches(fresh, first).values()) == [0, 0, 1]
    history.append((first, toy_score(first)))
    best = min(history, key=lambda h: h[1])[0]
    assert sorted(notches(best, person.tune(TOY, history)).values()) == [0, 0, 1]


# --- terminal ------------------------------------------------------------------------------


class Script:
    """Replies typed at the terminal, one per prompt, and everything printed."""

    def __init__(self, *replies):
        self.replies, self.prompts, self.printed = list(replies), [], []

    def input(self, prompt):
        self.prompts.append(prompt)
        return self.replies.pop(0)

    def print(self, *args):
        self.printed.append(" ".join(map(str, args)))


def terminal(*replies):
    script = Script(*replies)
    return collab.TerminalHuman(input_fn=script.input, print_fn=script.print), script


KNOBS = {"hidden": (16, 32, 64), "learning_rate": (1e-3, 3e-3, 1e-2), "weight_decay": (0.0, 1e-4)}
LAST = {"hidden": 64, "learning_rate": 3e-3, "weight_decay": 0.0}
HISTORY = [({"hidden": 16, "learning_rate": 1e-3, "weight_decay": 1e-4}, 2.5), (LAST, 1.25)]


def test_terminal_tune_changes_the_knobs_named():
    person, script = terminal("learning_rate=0.01 hidden=32")
    setting = person.tune(KNOBS, HISTORY, progress="trial 2 / 20")
    assert setting == {"hidden": 32, "learning_rate": 1e-2, "weight_decay": 0.0}
    assert setting["learning_rate"] is KNOBS["learning_rate"][2]  # the knob's own value
    assert isinstance(setting["hidden"], int)
    assert HISTORY[-1][0] == LAST  # the last setting itself is not changed
    printed = "\n".join(script.printed)
    assert "[1] score 2.5  hidden=16 learning_rate=0.001 weight_decay=0.0001" in printed
    assert "[2] score 1.25  hidden=64" in printed
    assert "learning_rate: 0.001 0.003 0.01" in printed  # the values to choose from
    assert "trial 2 / 20" in script.prompts[0] and len(script.prompts) == 1


def test_terminal_tune_empty_reply_repeats_the_last_setting():
    person, _ = terminal("")
    assert person.tune(KNOBS, HISTORY) == LAST
    person, _ = terminal("   weight_decay=1e-4  ")
    assert person.tune(KNOBS, HISTORY) == {**LAST, "weight_decay": 1e-4}


def test_terminal_tune_asks_again_after_a_bad_reply():
    person, script = terminal("depth=3", "hidden=33", "hidden", "learning_rate=fast", "hidden=16")
    assert person.tune(KNOBS, HISTORY) == {**LAST, "hidden": 16}
    assert script.replies == [] and len(script.prompts) == 5
    errors = [line for line in script.printed if "try again" in line]
    assert len(errors) == 4
    assert "unknown knob 'depth'; the knobs are hidden, learning_rate, weight_decay" in errors[0]
    assert all("hidden takes one of 16 32 64" in line for line in errors[1:3])
    assert "learning_rate takes one of 0.001 0.003 0.01" in errors[3]


@pytest.mark.parametrize("reply", ["3 1 4", "314", "3,1,4", " 3, 1 4 "])
def test_terminal_reads_labels_in_either_form(reply):
    person, script = terminal(reply)
    labels = person.label(np.zeros((3, 28, 28)), progress="已标注 0 / 3")
    np.testing.assert_array_equal(labels, [3, 1, 4])
    assert labels.dtype == np.int32 and len(script.prompts) == 1
    assert "1-3" in script.prompts[0] and "已标注 0 / 3" in script.printed[0]
    assert person.seconds >= 0.0


def test_terminal_asks_again_after_a_bad_reply():
    person, script = terminal("3 1", "3 1 x", "31415", "3 1 42", "", "2 7 1")
    np.testing.assert_array_equal(person.label(np.zeros((3, 28, 28))), [2, 7, 1])
    assert len(script.prompts) == 6 and script.replies == []
    errors = [line for line in script.printed if "try again" in line]
    assert len(errors) == 5 and all("type 3 digits 0-9" in line for line in errors)


def test_terminal_pick_is_one_based():
    person, script = terminal("0", "4", "two", "2")
    assert person.pick(["apple", "pear", "plum"], progress="round 1") == 1
    assert script.printed[:3] == ["[1] apple", "[2] pear", "[3] plum"]
    assert sum("type a number from 1 to 3" in line for line in script.printed) == 3
    assert "round 1" in script.prompts[0] and "(1-3)" in script.prompts[0]
    person, _ = terminal("1")
    assert person.compare("a", "b") == 0


def test_ascii_art_draws_numbered_half_size_images():
    images = np.zeros((7, 28, 28), np.uint8)
    images[1] = 255  # 0..255 images are scaled to [0, 1]
    text = collab.ascii_art(images, per_row=5)
    lines = text.split("\n")
    assert len(lines) == 2 * (1 + 14)  # two rows of images, each a header and 14 lines
    assert all(f"[{i}]" in text for i in range(1, 8)) and "[8]" not in text
    assert "[1]" in lines[0] and "[6]" in lines[15]
    row = lines[1]
    assert len(row) == 5 * 14 + 4 * 2
    assert row[:14] == " " * 14 and row[16:30] == "@" * 14  # black, then white
    half = collab.ascii_art(np.full((1, 4, 4), 0.5))
    assert half.split("\n")[1] == "=="


# --- make_human, describe, png_bytes -------------------------------------------------------


def test_make_human_builds_each_kind():
    simulated = collab.make_human("simulated", answers=always(3), error_rate=0.1, seed=5)
    assert isinstance(simulated, collab.SimulatedHuman) and simulated.error_rate == 0.1
    assert isinstance(collab.make_human("terminal"), collab.TerminalHuman)
    widget = collab.make_human("widget", timeout=7.0)  # built, not displayed
    assert isinstance(widget, widgets.WidgetHuman) and widget.timeout == 7.0
    assert not widget._shown
    with pytest.raises(ValueError, match=r"human must be one of \('simulated', 'widget'"):
        collab.make_human("robot")


def test_describe_names_the_kind():
    assert collab.describe(collab.SimulatedHuman(error_rate=0.03)) == (
        "simulated (error_rate=0.03)"
    )
    assert collab.describe(collab.SimulatedHuman(error_rate=0)) == "simulated (error_rate=0)"
    assert collab.describe(collab.TerminalHuman()) == "terminal"
    assert collab.describe(widgets.WidgetHuman()) == "widget"

    class Someone:
        seconds = 0.0

    assert collab.describe(Someone()) == "Someone"


def test_png_bytes_is_an_enlarged_png():
    image = np.zeros((28, 28), np.uint8)
    image[:, 14:] = 255
    data = plotting.png_bytes(image, scale=3)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = matplotlib.image.imread(io.BytesIO(data))
    assert decoded.shape[:2] == (84, 84)
    grey = decoded[..., 0]
    assert grey[:, :42].max() < 0.01 and grey[:, 42:].min() > 0.99
    assert plotting.png_bytes(np.full((8, 8), 0.5))[:4] == b"\x89PNG"


# --- widget, without a browser -------------------------------------------------------------


@pytest.fixture
def no_browser(monkeypatch):
    """Replace display and jupyter-ui-poll; ``polls`` holds the steps each poll runs in turn."""
    import IPython.display
    import jupyter_ui_poll

    shown, polls = [], []

    @contextlib.contextmanager
    def ui_events():
        def poll(n):
            assert n > 0
            if polls:
                polls.pop(0)()

        yield poll

    monkeypatch.setattr(IPython.display, "display", shown.append)
    monkeypatch.setattr(jupyter_ui_poll, "ui_events", ui_events)
    return shown, polls


def dropdowns(human):
    return [cell.children[1] for cell in human.items.children]


def test_widget_label_returns_what_the_person_chose(no_browser):
    shown, polls = no_browser
    human = widgets.WidgetHuman(poll_seconds=0.0, timeout=10)
    seen = {}

    def nothing_yet():
        seen["cells"] = len(human.items.children)
        seen["progress"] = human.progress.value

    def choose():
        for box, value in zip(dropdowns(human), [7, 0, 3], strict=True):
            box.value = value
        human.submit.click()

    polls.extend([nothing_yet, nothing_yet, choose])
    labels = human.label(np.zeros((3, 28, 28), np.uint8), progress="已标注 0 / 3")
    np.testing.assert_array_equal(labels, [7, 0, 3])
    assert seen == {"cells": 3, "progress": "<b>已标注 0 / 3</b>"}
    assert shown == [human.panel] and human.status.value == "已提交"
    assert polls == [] and human.seconds > 0

    polls.append(
        lambda: [setattr(b, "value", 9) for b in dropdowns(human)] + [human.submit.click()]
    )
    np.testing.assert_array_equal(human.label(np.zeros((2, 28, 28))), [9, 9])
    assert shown == [human.panel]  # the panel is shown once and reused


def test_widget_submit_with_unlabelled_images_keeps_waiting(no_browser):
    _, polls = no_browser
    human = widgets.WidgetHuman(poll_seconds=0.0, timeout=10)
    status = []

    def half_done():
        dropdowns(human)[0].value = 5
        human.submit.click()
        status.append(human.status.value)

    def done():
        dropdowns(human)[1].value = 1
        dropdowns(human)[2].value = 2
        human.submit.click()

    polls.extend([half_done, done])
    np.testing.assert_array_equal(human.label(np.zeros((3, 28, 28))), [5, 1, 2])
    assert len(status) == 1 and "还有 2 张没有标注" in status[0]
    assert polls == []  # it waited for the second submit


def test_widget_pick(no_browser):
    _, polls = no_browser
    human = widgets.WidgetHuman(poll_seconds=0.0, timeout=10)

    def choose():
        human.items.children[0].value = 2
        human.submit.click()

    polls.append(choose)
    assert human.pick(["a", "b", "c"]) == 2
    polls.append(human.submit.click)  # the first option is selected by default
    assert human.pick(["x", "y"]) == 0


def test_widget_times_out_when_nobody_answers(no_browser):
    human = widgets.WidgetHuman(poll_seconds=0.01, timeout=0.2)
    with pytest.raises(TimeoutError, match=r"no answer within 0.2 s"):
        human.label(np.zeros((2, 28, 28)))


def test_widget_person_refuses_a_kernel_it_cannot_poll():
    """Under ipykernel 7 jupyter-ui-poll never sees the click: fail fast with the fix, not hang."""
    with pytest.raises(RuntimeError, match=r"ipykernel < 7.*pip install 'ipykernel>=6,<7'"):
        widgets.check_kernel_can_poll("7.4.0")
    widgets.check_kernel_can_poll("6.31.0")  # the version pyproject.toml pins for the dev extra


def test_widget_tune_answers_with_the_slider_moved(no_browser):
    shown, polls = no_browser
    human = widgets.WidgetHuman(poll_seconds=0.0, timeout=10)
    figures, seen = [], {}

    def figure():
        figures.append(1)
        return plotting.png_bytes(np.zeros((4, 4)))

    def look_then_move():
        seen["values"] = {n: s.value for n, s in human._sliders.items()}
        seen["disabled"] = [s.disabled for s in human._sliders.values()]
        seen["progress"] = human.progress.value
        (panel,) = human.items.children
        seen["table"] = panel.children[-1].value
        seen["image"] = sum(isinstance(c, human.w.Image) for c in panel.children)
        human._sliders["hidden"].value = 32

    polls.extend([look_then_move])
    setting = human.tune(KNOBS, HISTORY, progress="trial 2 / 20", figure=figure)
    assert setting == {**LAST, "hidden": 32}
    assert seen["values"] == LAST and seen["disabled"] == [False] * 3  # the last setting
    assert seen["progress"] == "<b>trial 2 / 20</b>" and seen["image"] == 1 and figures == [1]
    assert (
        seen["table"].count("<tr") == 2
        and "<tr style='font-weight:bold'><td>2</td>" in (seen["table"])
    )  # the better (second) trial in bold
    assert all(s.disabled for s in human._sliders.values())  # until the lab asks again
    assert human.status.value == "训练中……" and shown == [human.panel] and polls == []
    assert human.submit.layout.display == "none"  # no button: moving a slider is the answer


def test_widget_tune_setting_the_sliders_is_not_an_answer(no_browser):
    _, polls = no_browser
    human = widgets.WidgetHuman(poll_seconds=0.0, timeout=10)
    polls.append(lambda: setattr(human._sliders["learning_rate"], "value", 1e-2))
    first = human.tune(KNOBS, HISTORY)
    assert first == {**LAST, "learning_rate": 1e-2}
    sliders = dict(human._sliders)
    history = [*HISTORY, (first, 1.0)]
    waited = []
    polls.extend(
        [
            lambda: waited.append([s.disabled for s in sliders.values()]),
            lambda: setattr(sliders["weight_decay"], "value", 1e-4),
        ]
    )
    second = human.tune(KNOBS, history)
    assert waited == [[False] * 3]  # enabled again, and moved to the last setting by the lab,
    assert polls == []  # which was no answer: it waited for the person's move
    assert second == {**first, "weight_decay": 1e-4}
    assert human._sliders == sliders  # the same sliders, reused
    assert all(s.disabled for s in sliders.values())


def test_widget_tune_shows_a_diverged_trial(no_browser):
    _, polls = no_browser
    human = widgets.WidgetHuman(poll_seconds=0.0, timeout=10)
    history = [*HISTORY, ({**LAST, "learning_rate": 1e-2}, float("inf"))]
    tables = []

    def move():
        tables.append(human.items.children[0].children[-1].value)
        human._sliders["hidden"].value = 16

    polls.append(move)
    assert human.tune(KNOBS, history) == {**LAST, "learning_rate": 1e-2, "hidden": 16}
    assert "发散" in tables[0] and tables[0].count("<tr") == 3


# --- ties, terminal compare and image picks, widget buttons (the feedback lab, 06c) ---------


def test_simulated_compare_ties_within_the_margin():
    person = collab.SimulatedHuman(score=float, error_rate=0.0, tie_margin=0.25)
    assert person.compare(1.0, 1.125) == collab.TIE == -1
    assert person.compare(1.125, 1.0) == collab.TIE and person.compare(2.0, 2.0) == collab.TIE
    assert person.compare(1.0, 1.25) == collab.TIE  # at most the margin: still a tie
    assert person.compare(1.0, 1.5) == 1 and person.compare(1.5, 1.0) == 0
    assert person.seconds == pytest.approx(6 * 2.0) and person.errors == 0
    assert person.pick([1.0, 1.125]) == 1  # pick never ties

    never = collab.SimulatedHuman(score=float, error_rate=0.0)  # tie_margin None: no ties
    assert never.tie_margin is None and never.compare(2.0, 2.0) in (0, 1)
    exact = collab.SimulatedHuman(score=float, error_rate=0.0, tie_margin=0.0)
    assert exact.compare(2.0, 2.0) == collab.TIE and exact.compare(2.0, 2.001) == 1
    with pytest.raises(ValueError, match="no score"):
        collab.SimulatedHuman(tie_margin=0.1).compare(1, 2)


def test_simulated_ties_are_no_errors_and_make_human_passes_the_margin():
    person = collab.make_human("simulated", score=float, error_rate=0.5, seed=0, tie_margin=1.0)
    assert person.tie_margin == 1.0
    assert all(person.compare(0.0, 0.5) == collab.TIE for _ in range(200))  # no coin to err
    assert person.errors == 0
    answers = [person.compare(0.0, 5.0) for _ in range(2000)]
    assert set(answers) == {0, 1} and abs(np.mean(answers) - 0.5) < 0.05


@pytest.mark.parametrize(
    "reply, answer", [("1", 0), ("2", 1), ("0", collab.TIE), ("=", collab.TIE), (" = ", -1)]
)
def test_terminal_compare_reads_a_winner_or_a_tie(reply, answer):
    person, script = terminal(reply)
    a, b = (
        "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
        "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    )
    assert person.compare(a, b, progress="第 3 / 300 对") == answer
    assert script.printed == [f"[1] {a}\n[2] {b}"]
    assert len(script.prompts) == 1 and "第 3 / 300 对" in script.prompts[0]
    assert "0 for a tie" in script.prompts[0]


def test_terminal_compare_asks_again_after_a_bad_reply():
    person, script = terminal("3", "a", "", "12", "-1", "2")
    assert person.compare("x", "y") == 1
    assert script.replies == [] and len(script.prompts) == 6
    errors = [line for line in script.printed if "try again" in line]
    assert len(errors) == 5
    assert all("type 1 or 2 for the better one, or 0 (or =) for a tie" in e for e in errors)


def test_terminal_pick_and_compare_draw_images_as_ascii_art():
    images = np.zeros((8, 28, 28), np.float32)
    images[2] = 1.0  # the third one white
    person, script = terminal("9", "3")
    assert person.pick(list(images), progress="第 1 / 5 轮") == 2
    art = script.printed[0]
    assert art == collab.ascii_art(images, per_row=4)
    lines = art.split("\n")
    assert len(lines) == 2 * (1 + 14)  # two rows of four half-size images
    assert all(f"[{i}]" in art for i in range(1, 9)) and "[9]" not in art
    assert lines[1][32:46] == "@" * 14 and lines[1][:14] == " " * 14
    assert "type a number from 1 to 8" in script.printed[1] and "(1-8)" in script.prompts[0]

    person, script = terminal("=")
    assert person.compare(images[0], images[2]) == collab.TIE
    assert script.printed == [collab.ascii_art(images[[0, 2]], per_row=2)]
    assert "[1]" in script.printed[0] and "[2]" in script.printed[0]


def walk(widget):
    """``widget`` and every widget inside it."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def buttons(human, text):
    """The panel's buttons labelled ``text``, in order."""
    return [b for b in walk(human.items) if getattr(b, "description", None) == text]


def shown_html(human):
    return " ".join(h.value for h in walk(human.items) if isinstance(h, human.w.HTML))


POEMS = [
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "红豆生南国，春来发几枝。愿君多采撷，此物最相思。",
]


def test_widget_compare_answers_with_its_three_buttons(no_browser):
    shown, polls = no_browser
    human = widgets.WidgetHuman(poll_seconds=0.0, timeout=10)
    seen = []

    def click(text):
        def step():
            seen.append((human.progress.value, shown_html(human)))
            assert human.submit.layout.display == "none"  # the buttons are the answer
            buttons(human, text)[0].click()

        return step

    polls.extend([click("A 更好"), click("差不多"), click("B 更好")])
    pairs = [(POEMS[0], POEMS[1]), (POEMS[1], POEMS[2]), (POEMS[2], POEMS[0])]
    answers = [human.compare(a, b, f"第 {i} / 3 对") for i, (a, b) in enumerate(pairs, 1)]
    assert answers == [0, collab.TIE, 1] and polls == []
    assert [p for p, _ in seen] == [f"<b>第 {i} / 3 对</b>" for i in (1, 2, 3)]
    first = seen[0][1]
    assert "白日依山尽，<br>黄河入海流。<br>欲穷千里目，<br>更上一层楼。" in first
    assert "床前明月光，" in first and "红豆" not in first and "红豆生南国" in seen[1][1]
    assert [b.description for b in human._choices] == ["A 更好", "B 更好", "差不多"]
    assert all(b.disabled for b in human._choices)  # answered: no second click
    assert shown == [human.panel] and human.status.value == "已选择" and human.seconds > 0


def test_widget_compare_ignores_the_last_questions_buttons(no_browser):
    _, polls = no_browser
    human = widgets.WidgetHuman(poll_seconds=0.0, timeout=10)
    polls.append(lambda: buttons(human, "A 更好")[0].click())
    assert human.compare("x", "y") == 0
    old = buttons(human, "A 更好")[0]
    steps = []

    def late_click():
        old.click()  # a late second click on the answered question: no answer here
        steps.append(buttons(human, "A 更好")[0] is not old)

    def second_click():
        new = buttons(human, "B 更好")[0]
        new.click()
        new.click()  # the second click of a double click changes nothing
        buttons(human, "差不多")[0].click()

    polls.extend([late_click, second_click])
    assert human.compare("y", "z") == 1
    assert steps == [True] and polls == []  # it waited for the new buttons
    assert old.comm is None and old.layout.comm is None  # the last question's, closed
    assert all(b.comm is not None for b in human._choices)
    human.submit.click()  # no 提交 in a comparison: nothing happens


def test_widget_compare_and_pick_images(no_browser):
    _, polls = no_browser
    human = widgets.WidgetHuman(poll_seconds=0.0, timeout=10)
    images = [np.full((28, 28), i / 8, np.float32) for i in range(8)]
    seen = {}

    def pick_third():
        imgs = [x for x in walk(human.items) if isinstance(x, human.w.Image)]
        seen["images"] = [x.value for x in imgs]
        seen["buttons"] = len(buttons(human, "选这张"))
        buttons(human, "选这张")[2].click()

    polls.append(pick_third)
    assert human.pick(images, progress="第 1 / 4 轮") == 2
    assert seen["buttons"] == 8 and len(seen["images"]) == 8
    assert seen["images"][5] == plotting.png_bytes(images[5], 4)  # 112 px, shown at 100
    assert human.items.layout.grid_template_columns == "repeat(8, 108px)"

    def tie():
        imgs = [x for x in walk(human.items) if isinstance(x, human.w.Image)]
        seen["compared"] = [x.value for x in imgs]
        buttons(human, "差不多")[0].click()

    polls.append(tie)
    assert human.compare(images[1], images[6]) == collab.TIE
    assert seen["compared"] == [plotting.png_bytes(images[i], 7) for i in (1, 6)]


def test_widget_lines_split_a_quatrain_into_its_four_lines():
    assert widgets._lines(POEMS[0]) == [
        "白日依山尽，",
        "黄河入海流。",
        "欲穷千里目，",
        "更上一层楼。",
    ]
    assert widgets._lines("one line") == ["one line"]
    assert widgets._lines("a,b.\nc") == ["a,", "b.", "c"]
    assert widgets._lines("") == [""]


def test_widget_wait_feeds_a_waiting_dispatcher_so_the_first_click_is_polled():
    """Under "Run All", a cell queued behind a waiting one runs while ipykernel's dispatcher
    waits on its tornado queue, which would hand it the first click (lost until the cell ends)."""
    import asyncio
    import itertools
    import types

    from tornado.queues import Queue

    async def main():
        queue = Queue()
        kernel = types.SimpleNamespace(msg_queue=queue, _message_counter=itertools.count(5))
        dispatcher = asyncio.ensure_future(queue.get())  # ipykernel's dispatch_queue, waiting
        await asyncio.sleep(0)
        widgets._feed_idle_dispatcher(kernel)
        queue.put_nowait("click")
        assert queue.get_nowait() == "click"  # what poll reads: the click, not lost
        index, dispatch, args = await dispatcher
        assert index == 5 and args == () and await dispatch() is None  # it does nothing
        widgets._feed_idle_dispatcher(kernel)  # nobody waiting: nothing to feed
        assert queue.empty()

        stolen = asyncio.ensure_future(queue.get())  # without the message that does nothing
        await asyncio.sleep(0)
        queue.put_nowait("click")
        assert queue.empty() and await stolen == "click"

    asyncio.run(main())
    widgets._feed_idle_dispatcher()  # outside a kernel: nothing to do
