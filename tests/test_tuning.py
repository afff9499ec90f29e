"""The tuning lab: knobs and settings, the validation split, and the four strategies.

The strategies run on a toy lab whose score is known (lowest at ``TARGET``), so each takes
milliseconds; the tests on the real ``Lab`` train small settings for a few seconds.
"""

import dataclasses
import math

import numpy as np
import pytest
from course_lib import data, recipes, tuning

KNOBS = tuning.KNOBS
TARGET = {"context": 24, "hidden": 32, "learning_rate": 1e-2, "steps": 1000, "weight_decay": 1e-3}
START = {"context": 36, "hidden": 64, "learning_rate": 3e-3, "steps": 500, "weight_decay": 0.0}
CHEAP = {"context": 12, "hidden": 16, "learning_rate": 1e-2, "steps": 250, "weight_decay": 0.0}


def toy_score(setting) -> float:
    """Squared distance from TARGET, in positions of each knob's values (0 at TARGET)."""
    return float(sum((KNOBS[k].index(setting[k]) - KNOBS[k].index(TARGET[k])) ** 2 for k in KNOBS))


class ToyLab:
    """What ``tune`` asks of a lab, with ``toy_score`` for a validation RMSE."""

    start = START

    def __init__(self, diverges=lambda setting: False):
        self.diverges, self.asked = diverges, []

    def evaluate(self, setting):
        setting = tuning.check_setting(setting)
        self.asked.append(setting)
        score = math.inf if self.diverges(setting) else toy_score(setting)
        return tuning.Trial(0, setting, score, seconds=0.01)

    def evaluate_grid(self, learning_rates, steps):
        return [
            self.evaluate({**self.start, "learning_rate": lr, "steps": n})
            for lr in learning_rates
            for n in sorted(steps)
        ]


def settings(trials):
    return [t.setting for t in trials]


# --- knobs and settings --------------------------------------------------------------------


def test_check_setting_returns_each_knobs_own_value():
    near = {**START, "learning_rate": 0.003 * (1 + 1e-12), "hidden": 64.0}
    checked = tuning.check_setting(near)
    assert checked == START and checked["learning_rate"] is KNOBS["learning_rate"][2]
    assert isinstance(checked["hidden"], int)
    assert list(checked) == list(KNOBS)  # the knobs' order, whatever the setting's


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learning_rate": 4e-3}, "learning_rate=0.004 is out of range; choose one of "
         "0.001, 0.002, 0.003, 0.005, 0.01, 0.02"),
        ({"hidden": 48}, "hidden=48 is out of range; choose one of 16, 32, 64"),
        ({"steps": 0}, "choose one of 250, 500, 1000, 2000"),
        ({"depth": 2}, r"a setting names the knobs \['context', 'hidden', 'learning_rate'"),
    ],
)  # fmt: skip
def test_check_setting_names_the_values_allowed(change, message):
    with pytest.raises(ValueError, match=message):
        tuning.check_setting({**START, **change})
    with pytest.raises(ValueError, match="a setting names the knobs"):
        tuning.check_setting({k: v for k, v in START.items() if k != "steps"})


def test_settings_and_recipes_round_trip():
    quick = recipes.ForecastRecipe()
    default = tuning.setting_of(quick)
    assert tuning.check_setting(default) == default  # the quick recipe is on every slider
    assert default == {**START, "steps": 2000}
    rng = np.random.default_rng(0)
    for _ in range(20):
        setting = {k: v[rng.integers(len(v))] for k, v in KNOBS.items()}
        recipe = tuning.with_setting(quick, setting)
        assert tuning.setting_of(recipe) == setting
        untouched = dataclasses.replace(
            recipe, steps=quick.steps, model=dataclasses.replace(recipe.model, **{
                k: getattr(quick.model, k)
                for k in ("context", "hidden", "learning_rate", "weight_decay")
            }),
        )  # fmt: skip
        assert untouched == quick  # nothing else changed (cell, clip norm, batch size, ...)
    with pytest.raises(ValueError, match="out of range"):
        tuning.with_setting(quick, {**default, "context": 30})


def test_tuning_recipe_rejects_what_cannot_run():
    with pytest.raises(ValueError, match=r"strategy must be one of \('human', 'random'"):
        tuning.TuningRecipe(strategy="bayes")
    with pytest.raises(ValueError, match="trials must be at least 1, got 0"):
        tuning.TuningRecipe(trials=0)


def test_speedup_members_are_moderate_and_distinct():
    members = tuning.speedup_members(tuning.TuningRecipe())
    assert len(members) == 32 and len(set(members)) == 32
    assert all(m.learning_rate <= 5e-3 and m.steps == 50 for m in members)
    assert len(tuning.speedup_members(tuning.TuningRecipe(speedup_members=5))) == 5


# --- the strategies, on the toy lab --------------------------------------------------------


@pytest.mark.parametrize("strategy", ["human", "random", "tpe"])
def test_strategies_start_at_the_start_and_do_better(strategy):
    lab, seen = ToyLab(), []
    trials = tuning.tune(lab, strategy, 20, seed=0, on_trial=seen.append)
    assert [t.number for t in trials] == list(range(1, 21)) and seen == trials
    assert trials[0].setting == START and trials[0].val_rmse == toy_score(START) == 11.0
    assert all(tuning.check_setting(s) == s for s in settings(trials))
    assert all(t.val_rmse == toy_score(t.setting) for t in trials)
    assert tuning.best(trials).val_rmse <= 2.0  # from 11 at the start
    assert settings(trials) == lab.asked  # each trial is one setting the lab scored


@pytest.mark.parametrize("strategy", ["human", "random", "tpe"])
def test_strategies_are_seeded(strategy):
    a = tuning.tune(ToyLab(), strategy, 12, seed=3)
    b = tuning.tune(ToyLab(), strategy, 12, seed=3)
    c = tuning.tune(ToyLab(), strategy, 12, seed=4)
    assert a == b and settings(a) != settings(c)


def test_the_simulated_person_finds_the_toys_optimum():
    trials = tuning.tune(ToyLab(), "human", 20, seed=0)
    assert tuning.best(trials).setting == TARGET
    assert len({tuple(s.values()) for s in settings(trials)}) == 20  # nothing tried twice


def test_tpe_beats_random_search_on_the_toy():
    found = {
        name: [tuning.best(tuning.tune(ToyLab(), name, 20, seed=s)).val_rmse for s in range(3)]
        for name in ("random", "tpe")
    }
    assert np.mean(found["tpe"]) < np.mean(found["random"])
    assert min(found["tpe"]) < toy_score(START)


def test_a_person_passed_in_is_asked(monkeypatch):
    asked = []

    class Fixed:
        seconds = 0.0

        def tune(self, knobs, history, progress="", figure=None):
            asked.append((len(history), progress, callable(figure)))
            return {**history[-1][0], "hidden": 16}

    trials = tuning.tune(ToyLab(), "human", 3, human=Fixed())
    assert asked == [(1, "试验 1 / 3", True), (2, "试验 2 / 3", True)]
    assert settings(trials)[1:] == [{**START, "hidden": 16}] * 2


def test_grid_is_learning_rate_by_steps_at_the_start():
    lab = ToyLab()
    trials = tuning.tune(lab, "grid", 24)
    assert [t.number for t in trials] == list(range(1, 25))
    pairs = [(s["learning_rate"], s["steps"]) for s in settings(trials)]
    assert pairs == [(lr, n) for lr in KNOBS["learning_rate"] for n in KNOBS["steps"]]
    others = [k for k in KNOBS if k not in ("learning_rate", "steps")]
    assert all(s[k] == START[k] for s in settings(trials) for k in others)
    assert START in settings(trials)
    few = tuning.tune(ToyLab(), "grid", 6)  # two learning rates, the lowest and the highest
    assert len(few) == 6 and [t.number for t in few] == list(range(1, 7))
    assert [s["learning_rate"] for s in settings(few)] == [1e-3] * 4 + [2e-2] * 2


def test_grid_refuses_more_trials_than_it_has_settings():
    lab = ToyLab()
    with pytest.raises(ValueError, match="the grid has 24 settings"):
        tuning.tune(lab, "grid", 25)
    assert lab.asked == []  # nothing trained


@pytest.mark.parametrize("strategy", tuning.STRATEGIES)
def test_diverged_settings_score_inf_and_the_search_goes_on(strategy):
    lab = ToyLab(diverges=lambda s: s["learning_rate"] == 2e-2)
    trials = tuning.tune(lab, strategy, 16, seed=1)
    assert len(trials) == 16
    assert all(math.isinf(t.val_rmse) == (t.setting["learning_rate"] == 2e-2) for t in trials)
    assert math.isfinite(tuning.best(trials).val_rmse)


def test_tune_rejects_an_unknown_strategy_or_no_trials():
    with pytest.raises(ValueError, match="strategy must be one of"):
        tuning.tune(ToyLab(), "annealing", 5)
    with pytest.raises(ValueError, match="trials must be at least 1, got 0"):
        tuning.tune(ToyLab(), "random", 0)


def test_search_runs_strategies_side_by_side_as_they_run_alone():
    lab = ToyLab()
    found = tuning.search(lab, tuning.STRATEGIES, 8, seed=2, workers=2)
    assert list(found) == list(tuning.STRATEGIES)
    for name, trials in found.items():
        assert trials == tuning.tune(ToyLab(), name, 8, seed=2), name
    assert len(lab.asked) == 4 * 8


def test_best_and_best_so_far():
    trials = [
        tuning.Trial(i + 1, START, v) for i, v in enumerate([3.0, math.inf, 2.0, 2.5, 2.0, 1.0])
    ]
    assert tuning.best(trials).number == 6
    assert tuning.best(trials[:5]).number == 3  # the first of equals
    np.testing.assert_array_equal(tuning.best_so_far(trials), [3, 3, 2, 2, 2, 1])
    assert tuning.best_so_far([tuning.Trial(1, START, math.inf)])[0] == math.inf


# --- the real lab --------------------------------------------------------------------------


def test_lab_validates_on_the_last_training_years_only(monkeypatch):
    read, real_load = [], data.load

    def load(name, split="train"):
        read.append(split)
        return real_load(name, split)

    monkeypatch.setattr(data, "load", load)
    lab = tuning.Lab()
    months, horizon = 60, 12
    train_values = real_load("co2", "train").values
    np.testing.assert_array_equal(lab.train_values, train_values)
    np.testing.assert_array_equal(lab.fit_values, train_values[:-months])
    assert lab.start == START and lab.default == {**START, "steps": 2000}

    x, y, x_val, last, truth = lab.windows(24)
    origins = months - horizon + 1  # each 12-month forecast lies inside the validation years
    assert truth.shape == (origins, horizon) and x_val.shape == (origins, 24)
    first = len(train_values) - months
    expected = np.stack([train_values[first + i : first + i + horizon] for i in range(origins)])
    np.testing.assert_allclose(truth, expected, atol=1e-3)
    np.testing.assert_allclose(last, train_values[-months - 1 : -horizon], atol=1e-3)
    # the fitting windows end before the validation years: the last target is the month before
    assert len(x) == len(train_values) - months - 24 - horizon + 1
    before = lab.fit_values[-horizon - 1]  # the last value the last fitting window reads
    np.testing.assert_allclose(
        y[-1] * lab.scale + before, train_values[-months - horizon : -months], atol=1e-3
    )
    assert lab.windows(24)[0] is x  # made once per context

    lab.evaluate(CHEAP)
    assert read == ["train"]  # the test years are never read before reveal


def test_lab_evaluate_trains_once_per_setting():
    lab = tuning.Lab()
    first = lab.evaluate(CHEAP)
    assert first.seconds > 0 and first.diverged_at == 0 and first.number == 0
    assert 0.0 < first.val_rmse < 5.0  # ppm; seasonal naive is about 1
    again = lab.evaluate({**CHEAP, "learning_rate": 0.01 + 1e-15})
    assert again.seconds == 0.0 and again.val_rmse == first.val_rmse
    assert lab.forecast(CHEAP).shape == (49, 12)
    assert tuning.forecast_png(lab, dataclasses.replace(first, number=1))[:4] == b"\x89PNG"
    with pytest.raises(KeyError):
        lab.forecast({**CHEAP, "hidden": 32})  # not tried


def test_reseed_scores_fresh_seeds_as_one_population():
    lab = tuning.Lab()
    calm = {**CHEAP, "learning_rate": 2e-3}  # large rates make rounding differences snowball
    recipe_seed = lab.recipe.forecast.seed
    scores = lab.reseed(calm, seeds=[recipe_seed, recipe_seed + 1, recipe_seed + 2])
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert len(set(scores.round(6))) == 3  # each seed its own run
    # the recipe's own seed is the trial itself, up to a batched product's rounding
    assert scores[0] == pytest.approx(lab.evaluate(calm).val_rmse, rel=1e-3)


def test_lab_rejects_a_validation_span_it_cannot_use():
    with pytest.raises(ValueError, match="validation_months must be in 12.."):
        tuning.Lab(tuning.TuningRecipe(validation_months=6))


@pytest.mark.slow
def test_grid_on_the_real_lab_reads_snapshots_of_one_run():
    lab = tuning.Lab()
    trials = tuning.tune(lab, "grid", 4)
    assert [s["steps"] for s in settings(trials)] == [250, 500, 1000, 2000]
    assert all(math.isfinite(t.val_rmse) and t.diverged_at == 0 for t in trials)
    assert len({t.val_rmse for t in trials}) == 4
    # the 250-step snapshot is what 250 steps alone give
    alone = tuning.Lab().evaluate(trials[0].setting)
    assert alone.val_rmse == pytest.approx(trials[0].val_rmse, rel=1e-4)
