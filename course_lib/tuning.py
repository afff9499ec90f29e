"""The tuning lab (模型调整): a person, or a search, chooses the CO2 forecaster's hyperparameters.

Taught in chapter 6.4 (06b_tuning_lab). The seed's 2.2 says people 调整模型参数; what a person
sets are the hyperparameters (``KNOBS``); gradient descent sets the parameters.

The training years of ``co2`` are split once more: the last ``validation_months`` (1987-1991)
score every trial (RMSE in ppm of the 12-month forecasts). The test years (1992-2001) stay hidden
until :meth:`Lab.reveal` retrains a setting on all the training years and scores it once.

Strategies (``tune``), each with the same number of trials, all from ``Lab.start`` (the grid
contains it). Each setting is scored from one seed, so the best of many is optimistic (the
winner's curse, see the chapter):

- ``"human"``: a ``collab`` person (sliders, a terminal, or the simulated one-knob-at-a-time);
- ``"random"``: every knob drawn uniformly from its values;
- ``"grid"``: learning rate x steps, one vmapped population (``population``) with snapshots;
- ``"tpe"``: Optuna's Tree-structured Parzen Estimator.
"""

from __future__ import annotations

import dataclasses
import io
import math
import pathlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from course_lib import collab, data, files, metrics, plotting, population, recipes, rnn
from course_lib.plotting import label

KNOBS = {  # each slider's values, in order; the quick recipe's setting is among them
    "context": (12, 24, 36, 48),
    "hidden": (16, 32, 64),
    "learning_rate": (1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 2e-2),
    "steps": (250, 500, 1000, 2000),
    "weight_decay": (0.0, 1e-4, 1e-3, 1e-2, 1e-1),
}
STRATEGIES = ("human", "random", "grid", "tpe")


@dataclasses.dataclass(frozen=True)
class TuningRecipe:
    forecast: recipes.ForecastRecipe = recipes.ForecastRecipe()  # the default; all not tuned
    # every strategy starts at the default with fewer steps: a retrain then takes about a second
    # on a 2-core CPU, so the sliders answer at once (2000 steps is two notches further)
    start_steps: int = 500
    strategy: str = "human"
    trials: int = 20
    validation_months: int = 60
    seed: int = 0
    speedup_members: int = 32  # the population whose training time is compared (run)
    speedup_steps: int = 50

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.trials < 1:
            raise ValueError(f"trials must be at least 1, got {self.trials}")


def setting_of(recipe: recipes.ForecastRecipe) -> dict:
    """The knobs' values in a forecast recipe."""
    m = recipe.model
    values = (m.context, m.hidden, m.learning_rate, recipe.steps, m.weight_decay)
    return dict(zip(KNOBS, values, strict=True))


def check_setting(setting: dict) -> dict:
    """``setting`` with each knob's own value, if it names every knob with one of its values;
    otherwise an error that lists the values allowed."""
    if set(setting) != set(KNOBS):
        raise ValueError(f"a setting names the knobs {list(KNOBS)}, got {sorted(setting)}")
    checked = {}
    for name, values in KNOBS.items():
        same = [v for v in values if math.isclose(setting[name], v, rel_tol=1e-9, abs_tol=1e-12)]
        if not same:
            allowed = ", ".join(f"{v:g}" for v in values)
            raise ValueError(f"{name}={setting[name]:g} is out of range; choose one of {allowed}")
        checked[name] = same[0]
    return checked


def with_setting(recipe: recipes.ForecastRecipe, setting: dict) -> recipes.ForecastRecipe:
    """The forecast recipe with ``setting``'s knobs."""
    s = check_setting(setting)
    model = dataclasses.replace(
        recipe.model,
        **{k: s[k] for k in ("context", "hidden", "learning_rate", "weight_decay")},
    )
    return dataclasses.replace(recipe, model=model, steps=s["steps"])


def _key(setting: dict) -> tuple:
    return tuple(setting[name] for name in KNOBS)


@dataclasses.dataclass
class Trial:
    """One setting tried: its validation RMSE (ppm; inf if training diverged)."""

    number: int
    setting: dict
    val_rmse: float
    diverged_at: int = 0  # the update whose loss was NaN/Inf; 0 if none
    seconds: float = 0.0  # training and scoring wall time; 0 when it was already known


class Lab:
    """The validation split, and every setting already trained (each one trains once)."""

    def __init__(self, recipe: TuningRecipe = TuningRecipe()):
        self.recipe = recipe
        train_values = data.load(recipe.forecast.dataset, "train").values
        horizon, months = recipe.forecast.model.horizon, recipe.validation_months
        if not horizon <= months <= len(train_values) // 2:
            raise ValueError(f"validation_months must be in {horizon}..{len(train_values) // 2}")
        self.train_values = train_values
        self.fit_values = train_values[:-months]
        # the scale of rnn.make_windows, from the years trained on only
        self.scale = float(np.std(self.fit_values[horizon:] - self.fit_values[:-horizon]))
        self._windows, self._scores, self._tests, self._grid = {}, {}, {}, {}
        self._locks, self._guard = {}, threading.Lock()  # searches may share the lab (``search``)

    def _lock(self, key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    @property
    def default(self) -> dict:
        """The quick recipe's setting (``recipes.ForecastRecipe``)."""
        return setting_of(self.recipe.forecast)

    @property
    def start(self) -> dict:
        """Where every strategy starts: the default with ``start_steps``."""
        return check_setting({**self.default, "steps": self.recipe.start_steps})

    def windows(self, context: int):
        """(x, y) of the fitting years, and (x, last, truth in ppm) of the validation origins."""
        if context not in self._windows:
            horizon, months = self.recipe.forecast.model.horizon, self.recipe.validation_months
            x, y, _ = rnn.make_windows(self.fit_values, context, horizon, self.scale)
            tail = self.train_values[-months - context :]
            x_val, y_val, last = rnn.make_windows(tail, context, horizon, self.scale)
            truth = last[:, None] + self.scale * y_val
            self._windows[context] = (x, y, x_val, last, truth)
        return self._windows[context]

    def _fit(self, settings, x, y, seeds=None, snapshot_steps=()) -> population.Population:
        """``settings`` (one shape) trained on (x, y) as one population; seeds: the recipe's."""
        recipe = with_setting(self.recipe.forecast, settings[0])
        seeds = [recipe.seed] * len(settings) if seeds is None else seeds
        members = [
            population.Member(s["learning_rate"], s["weight_decay"], seed, s["steps"])
            for s, seed in zip(settings, seeds, strict=True)
        ]
        capacity = max(KNOBS["steps"])
        return population.fit(
            recipe.model, members, x, y, recipe.batch_size, snapshot_steps, capacity
        )

    def _validate(self, setting, pop, i: int, params) -> tuple[float, int, np.ndarray]:
        """(validation RMSE or inf, divergence step, forecasts in ppm) of ``pop``'s member i."""
        _, _, x_val, last, truth = self.windows(setting["context"])
        diverged = int(pop.diverged_at[i]) if pop.diverged_at[i] <= setting["steps"] else 0
        pred = last[:, None] + self.scale * pop.predict(x_val, population.member(params, i))[0]
        ok = not diverged and np.isfinite(pred).all()
        return (metrics.rmse(pred, truth) if ok else math.inf), diverged, pred

    def _score(self, setting, pop, i: int, params, seconds: float, cache=None) -> Trial:
        """``_validate`` as a Trial, kept in ``cache`` (default: what ``evaluate`` recalls)."""
        val, diverged, pred = self._validate(setting, pop, i, params)
        trial = Trial(0, setting, val, diverged, seconds)
        (self._scores if cache is None else cache)[_key(setting)] = (trial, pred)
        return trial

    def reseed(self, setting: dict, seeds) -> np.ndarray:
        """Validation RMSEs of ``setting`` retrained with each seed: its luck (winner's curse)."""
        setting, seeds = check_setting(setting), list(seeds)
        pop = self._fit([setting] * len(seeds), *self.windows(setting["context"])[:2], seeds)
        return np.array([self._validate(setting, pop, i, pop.params)[0] for i in range(len(seeds))])

    def evaluate(self, setting: dict) -> Trial:
        """Train ``setting`` on the fitting years (or recall it) and score it on validation."""
        setting = check_setting(setting)
        with self._lock(("val", _key(setting))):
            if _key(setting) in self._scores:
                return dataclasses.replace(self._scores[_key(setting)][0], seconds=0.0)
            start = time.perf_counter()
            pop = self._fit([setting], *self.windows(setting["context"])[:2])
            return self._score(setting, pop, 0, pop.params, time.perf_counter() - start)

    def evaluate_grid(self, learning_rates, steps) -> list[Trial]:
        """Every (learning rate, steps) pair, the other knobs at the start: one population of the
        learning rates, trained for the most steps, with snapshots after the fewer steps."""
        start = time.perf_counter()
        steps = sorted(steps)
        settings = [
            {**self.start, "learning_rate": lr, "steps": steps[-1]} for lr in learning_rates
        ]
        x, y, *_ = self.windows(self.start["context"])
        pop = self._fit(settings, x, y, snapshot_steps=steps)
        seconds = (time.perf_counter() - start) / (len(settings) * len(steps))
        # kept apart from ``evaluate``'s: a population's last float digits differ from a single
        # run's, and searches running at once must not see one or the other by timing
        return [
            self._score({**s, "steps": n}, pop, i, pop.snapshots[k], seconds, self._grid)
            for i, s in enumerate(settings)
            for k, n in enumerate(steps)
        ]

    def forecast(self, setting: dict) -> np.ndarray:
        """A tried setting's validation forecasts [origins, 12] in ppm."""
        key = _key(check_setting(setting))
        return (self._scores if key in self._scores else self._grid)[key][1]

    def reveal(self, setting: dict) -> float:
        """Test RMSE (ppm) of ``setting`` retrained on all the training years: the test years'
        one use, as the quick recipe's run scores them (``runs.evaluate_forecast``)."""
        setting = check_setting(setting)
        with self._lock(("test", _key(setting))):
            if _key(setting) in self._tests:
                return self._tests[_key(setting)]
            prepared = recipes.prepare_forecast(with_setting(self.recipe.forecast, setting))
            pop = self._fit([setting], prepared.x, prepared.y)
            pred = prepared.to_ppm(pop.predict(prepared.x_test)[0])
            ok = pop.diverged_at[0] == 0 and np.isfinite(pred).all()
            self._tests[_key(setting)] = metrics.rmse(pred, prepared.truth) if ok else math.inf
            return self._tests[_key(setting)]

    def reveal_many(self, settings, workers: int = 2) -> list[float]:
        """``reveal`` of each setting, ``workers`` at a time in threads."""
        with ThreadPoolExecutor(max(1, workers)) as pool:
            return list(pool.map(self.reveal, settings))

    def seasonal_naive_rmse(self) -> float:
        prepared = recipes.prepare_forecast(self.recipe.forecast)
        return metrics.rmse(prepared.seasonal_naive, prepared.truth)


# --- the strategies ----------------------------------------------------------------------------


def _human(lab: Lab, trials: int, human, seed: int, report: Callable) -> None:
    human = collab.make_human("simulated", seed=seed) if human is None else human
    history = [report(lab.evaluate(lab.start))]
    while len(history) < trials:
        last = history[-1]
        setting = human.tune(
            KNOBS,
            [(t.setting, t.val_rmse) for t in history],
            progress=f"试验 {len(history)} / {trials}",
            figure=lambda t=last: forecast_png(lab, t),
        )
        history.append(report(lab.evaluate(setting)))


def _random(lab: Lab, trials: int, human, seed: int, report: Callable) -> None:
    rng = np.random.default_rng(seed)
    report(lab.evaluate(lab.start))
    for _ in range(trials - 1):
        report(lab.evaluate({k: v[rng.integers(len(v))] for k, v in KNOBS.items()}))


def _grid(lab: Lab, trials: int, human, seed: int, report: Callable) -> None:
    steps = KNOBS["steps"]
    if trials > len(KNOBS["learning_rate"]) * len(steps):
        size = len(KNOBS["learning_rate"]) * len(steps)
        raise ValueError(f"the grid has {size} settings (learning rate x steps); got {trials=}")
    n_lr = min(len(KNOBS["learning_rate"]), math.ceil(trials / len(steps)))
    picks = np.unique(np.linspace(0, len(KNOBS["learning_rate"]) - 1, n_lr).round().astype(int))
    lrs = [KNOBS["learning_rate"][i] for i in picks]
    for trial in lab.evaluate_grid(lrs, steps)[:trials]:
        report(trial)


def _tpe(lab: Lab, trials: int, human, seed: int, report: Callable) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no timestamped log lines
    # Optuna starts to model after 10 random trials by default; here after a quarter of the budget
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, trials // 4))
    study = optuna.create_study(sampler=sampler, direction="minimize")
    study.enqueue_trial(lab.start)
    for _ in range(trials):
        t = study.ask()
        setting = {name: t.suggest_categorical(name, values) for name, values in KNOBS.items()}
        score = report(lab.evaluate(setting)).val_rmse
        failed = optuna.trial.TrialState.FAIL  # a diverged run: TPE learns nothing from it
        study.tell(t, score) if math.isfinite(score) else study.tell(t, state=failed)


_STRATEGY_FNS = {"human": _human, "random": _random, "grid": _grid, "tpe": _tpe}


def tune(
    lab: Lab,
    strategy: str,
    trials: int,
    human: collab.Human | None = None,
    seed: int = 0,
    on_trial: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """``trials`` settings chosen by ``strategy`` and scored on the validation years, in order.

    ``human`` is for "human" (default: the simulated person, seeded with ``seed``); ``on_trial``
    sees each trial as it is scored (e.g. to redraw a figure).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    done: list[Trial] = []

    def report(trial: Trial) -> Trial:
        trial = dataclasses.replace(trial, number=len(done) + 1)
        done.append(trial)
        if on_trial is not None:
            on_trial(trial)
        return trial

    _STRATEGY_FNS[strategy](lab, trials, human, seed, report)
    return done


def search(lab: Lab, strategies, trials: int, seed: int = 0, workers: int = 2) -> dict:
    """Several strategies' ``tune`` at once, ``workers`` at a time in threads (one per CPU core:
    a single small model keeps one core busy). Each strategy's trials are the same as alone."""
    strategies = list(strategies)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = pool.map(lambda name: tune(lab, name, trials, seed=seed), strategies)
        return dict(zip(strategies, found, strict=True))


def best(trials) -> Trial:
    """The trial with the lowest validation RMSE (the first of equals)."""
    return min(trials, key=lambda t: t.val_rmse)


def best_so_far(trials) -> np.ndarray:
    """The lowest validation RMSE after each trial: the curve to compare strategies by."""
    return np.minimum.accumulate([t.val_rmse for t in trials])


def forecast_png(lab: Lab, trial: Trial) -> bytes:
    """A small figure of a trial's validation forecasts against the truth, as PNG bytes."""
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=(6, 2.6), dpi=80)
    ax = fig.subplots()
    truth = lab.windows(trial.setting["context"])[4]
    ok = math.isfinite(trial.val_rmse)
    plotting.draw_forecasts(ax, truth, [lab.forecast(trial.setting)] if ok else [])
    score = f"{trial.val_rmse:.3f} ppm"
    ax.set_title(label(f"试验 {trial.number}：验证 RMSE {score}", f"trial {trial.number}: {score}"))
    ax.set_xlabel(label("验证年份的月份", "month of the validation years"))
    ax.set_ylabel(label("CO2 浓度（ppm）", "CO2 (ppm)"))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def speedup_members(recipe: TuningRecipe) -> list:
    """The population of ``population.speedup`` in ``run`` and the chapter: learning rates,
    weight decays and seeds (the moderate learning rates, where rounding does not snowball)."""
    grid = [
        population.Member(lr, wd, seed, recipe.speedup_steps)
        for seed in range(recipe.seed, recipe.seed + 2)
        for lr in KNOBS["learning_rate"][:4]
        for wd in KNOBS["weight_decay"][1:]
    ]
    return grid[: recipe.speedup_members]


def run(recipe: TuningRecipe, human=None, out=None, progress: bool = True) -> dict:
    """The CLI's lab (``python -m course_lib collab tune``): tune, reveal, time a population."""
    lab = Lab(recipe)
    start = time.perf_counter()

    def on_trial(t: Trial) -> None:
        if progress:
            shown = " ".join(f"{k}={v:g}" for k, v in t.setting.items())
            print(f"trial {t.number:3d}  validation RMSE {t.val_rmse:.3f}  {shown}", flush=True)

    trials = tune(lab, recipe.strategy, recipe.trials, human, recipe.seed, on_trial)
    who = (human and collab.describe(human)) or "simulated, knob by knob"
    winner = best(trials)
    test_rmse, default_test_rmse = lab.reveal_many([winner.setting, lab.default])
    model = with_setting(recipe.forecast, lab.start).model
    x, y, *_ = lab.windows(model.context)
    timing = population.speedup(model, speedup_members(recipe), x, y, recipe.forecast.batch_size)
    result = {
        "strategy": recipe.strategy,
        "trials": len(trials),
        "seed": recipe.seed,
        "human": who if recipe.strategy == "human" else None,
        "best_setting": winner.setting,
        "best_trial": winner.number,
        "best_val_rmse": round(winner.val_rmse, 4),
        "start_val_rmse": round(lab.evaluate(lab.start).val_rmse, 4),
        "test_rmse": round(test_rmse, 4),
        "default_test_rmse": round(default_test_rmse, 4),
        "seasonal_naive_rmse": round(lab.seasonal_naive_rmse(), 4),
        "vmap_speedup": round(timing["vmap_speedup"], 2),
        "population_speedup": round(timing["population_speedup"], 2),
        "train_seconds": round(sum(t.seconds for t in trials), 2),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if out is not None:
        out = pathlib.Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files.write_json(out / "trials.json", [dataclasses.asdict(t) for t in trials])
        files.write_json(out / "metrics.json", result)
    return result
