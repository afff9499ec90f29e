"""Populations: many forecasters trained at once (vmap over members, threads over chunks).

Most tests train a small forecaster (12-month windows, 16 hidden units) for a few dozen steps
on a synthetic seasonal series; one checks the quick CO2 recipe against ``runs.fit``.
"""

import dataclasses
import os

import jax
import numpy as np
import pytest
from course_lib import population, recipes, rnn, runs, train
from course_lib.population import Member

CFG = rnn.ForecastConfig(context=12, horizon=12, hidden=16)
CAPACITY = 25
MEMBERS = [  # moderate learning rates: rounding differences stay small
    Member(1e-3, 0.0, 0, 20),
    Member(3e-3, 1e-3, 1, 25),
    Member(5e-3, 1e-2, 2, 15),
]


@pytest.fixture(scope="module")
def windows():
    t = np.arange(240, dtype=np.float32)
    series = 0.05 * t + np.sin(2 * np.pi * t / 12)
    x, y, _ = rnn.make_windows(series, CFG.context, CFG.horizon, scale=1.0)
    return x, y


@pytest.fixture(scope="module")
def together(windows):
    """The three members in one call, in one thread."""
    return population.fit(CFG, MEMBERS, *windows, capacity=CAPACITY, workers=1)


def alone(windows, m, **kw):
    """Member ``m`` in a population of its own."""
    return population.fit(CFG, [m], *windows, capacity=CAPACITY, workers=1, **kw)


def test_a_population_of_one_is_the_quick_recipes_run():
    recipe = recipes.with_overrides(recipes.ForecastRecipe(), steps=30)
    prepared = recipes.prepare_forecast(recipe)
    training = runs.setup_forecast(recipe, prepared)
    res = runs.fit(training, recipe, progress=False)
    expected = np.asarray(rnn.predict(training.graphdef, res.state, prepared.x_test))
    m = recipe.model
    pop = population.fit(
        m, [Member(m.learning_rate, m.weight_decay, recipe.seed, recipe.steps)],
        prepared.x, prepared.y, recipe.batch_size, workers=1,
    )  # fmt: skip
    got = pop.predict(prepared.x_test)
    assert got.shape == (1, *expected.shape)
    np.testing.assert_allclose(got[0], expected, atol=1e-4)
    assert not np.allclose(expected, 0.0, atol=1e-2)  # it predicts something
    assert pop.losses.shape == (1, 30) and np.isfinite(pop.losses).all()
    (logged,) = res.history["train"]  # the mean of the 30 steps' losses (log_every is 50)
    assert pop.losses[0].mean() == pytest.approx(logged["mse"], rel=1e-4)  # the same batches


def test_members_equal_their_own_runs(windows, together):
    x, _ = windows
    assert together.predict(x).shape == (3, len(x), CFG.horizon)
    for i, m in enumerate(MEMBERS):
        own = alone(windows, m)
        np.testing.assert_allclose(together.predict(x)[i], own.predict(x)[0], atol=1e-4)
        np.testing.assert_allclose(together.losses[i], own.losses[0], rtol=1e-4)
    with pytest.raises(AssertionError):  # the members do differ from one another
        np.testing.assert_allclose(together.predict(x)[0], together.predict(x)[1], atol=1e-4)


def test_losses_stop_at_each_members_steps(together):
    assert together.losses.shape == (3, CAPACITY)
    for i, m in enumerate(MEMBERS):
        assert np.isfinite(together.losses[i, : m.steps]).all()
        assert np.isnan(together.losses[i, m.steps :]).all()  # no updates after its end
    np.testing.assert_array_equal(together.diverged_at, [0, 0, 0])  # the NaN is no divergence
    assert together.losses[1, -5:].mean() < 0.8 * together.losses[1, :5].mean()  # it learns


def test_threads_give_the_same_population(windows, together):
    x, _ = windows
    threaded = population.fit(CFG, MEMBERS, *windows, capacity=CAPACITY, workers=2)
    assert threaded.predict(x).shape == (3, len(x), CFG.horizon)  # the padding is dropped
    np.testing.assert_allclose(threaded.predict(x), together.predict(x), atol=1e-5)
    np.testing.assert_allclose(threaded.losses, together.losses, rtol=1e-5)


def test_snapshots_are_the_shorter_runs(windows):
    x, _ = windows
    m = MEMBERS[1]
    pop = alone(windows, m, snapshot_steps=(5, 12, m.steps))
    assert len(pop.snapshots) == 3
    for k, steps in enumerate((5, 12)):
        short = alone(windows, dataclasses.replace(m, steps=steps))
        np.testing.assert_allclose(pop.predict(x, pop.snapshots[k]), short.predict(x), atol=1e-5)
    np.testing.assert_array_equal(pop.predict(x, pop.snapshots[2]), pop.predict(x))
    assert not np.allclose(pop.predict(x, pop.snapshots[0]), pop.predict(x), atol=1e-3)


def test_member_picks_one_member_and_keeps_the_axis(windows, together):
    x, _ = windows
    one = population.member(together.params, 2)
    assert all(leaf.shape[0] == 1 for leaf in jax.tree.leaves(one))
    np.testing.assert_array_equal(together.predict(x, one)[0], together.predict(x)[2])


def test_changing_steps_or_optimizer_values_compiles_nothing_new(windows):
    members = [Member(2e-3, 0.0, 0, 7), Member(1e-2, 1e-1, 3, 9)]
    population.fit(CFG, members, *windows, capacity=CAPACITY, workers=1)
    compiled = population._train._cache_size()
    others = [Member(5e-3, 1e-4, 5, 24), Member(1e-3, 0.0, 1, 3)]
    population.fit(CFG, others, *windows, capacity=CAPACITY, workers=1)
    population.fit(CFG, [Member(2e-2, 0.0, 2, 1)] * 2, *windows, capacity=CAPACITY, workers=1)
    assert population._train._cache_size() == compiled
    assert population.model_graph(CFG) == population.model_graph(
        dataclasses.replace(CFG, learning_rate=0.5, weight_decay=0.1)
    )
    bigger = dataclasses.replace(CFG, hidden=8)  # a new shape: one more compiled version
    population.fit(bigger, members, *windows, capacity=CAPACITY, workers=1)
    assert population._train._cache_size() == compiled + 1


def test_a_diverged_member_reports_its_step_and_spares_the_others(windows):
    x, _ = windows
    # Adam's steps are about the learning rate: 1e30 makes the output's square overflow
    members = [Member(3e-3, 0.0, 0, 10), Member(1e30, 0.0, 0, 10)]
    pop = population.fit(CFG, members, *windows, capacity=12, workers=1)
    np.testing.assert_array_equal(pop.diverged_at, [0, 2])
    assert np.isfinite(pop.losses[1, 0]) and not np.isfinite(pop.losses[1, 1])
    assert np.isfinite(pop.predict(x)[0]).all() and np.isfinite(pop.losses[0, :10]).all()
    assert not np.isfinite(pop.predict(x)[1]).all()


def test_batches_follow_epoch_batches(windows):
    n = len(windows[0])
    idx = population.batch_indices(n, 32, [Member(1e-3, seed=4), Member(1e-3, seed=5)], 9)
    assert idx.shape == (2, 9, 32) and idx.dtype == np.int32
    batches = train.epoch_batches((np.arange(n),), 32, 4)
    np.testing.assert_array_equal(idx[0], [batches(step)[0] for step in range(9)])
    assert not np.array_equal(idx[0], idx[1])  # another seed, another order


def test_default_workers_is_one_per_core_on_a_cpu():
    if jax.default_backend() != "cpu":
        assert population.default_workers() == 1
    elif hasattr(os, "sched_getaffinity"):
        assert population.default_workers() == len(os.sched_getaffinity(0))
    else:
        assert population.default_workers() == os.cpu_count()


def test_speedup_times_three_ways_and_agrees(windows):
    members = [dataclasses.replace(m, steps=5) for m in MEMBERS[:2]]
    report = population.speedup(CFG, members, *windows, batch_size=32)
    assert set(report["seconds"]) == {"sequential", "vmapped", "population"}
    assert report["members"] == 2 and report["steps"] == 5
    assert all(s > 0 for s in report["seconds"].values())
    assert report["vmap_speedup"] == pytest.approx(
        report["seconds"]["sequential"] / report["seconds"]["vmapped"]
    )
    assert report["max_difference"] < 1e-4


@pytest.mark.parametrize(
    ("members", "kw", "message"),
    [
        ([], {}, "at least one member"),
        ([Member(1e-3, steps=0)], {}, r"steps must be positive, got \[0\]"),
        ([Member(1e-3, steps=10)], {"snapshot_steps": (5, 11)}, r"\(5, 11\) exceed"),
        ([Member(1e-3, steps=10)], {"capacity": 9}, r"capacity=9 is less than .* \(10\)"),
    ],
)
def test_bad_populations_are_refused_before_training(windows, members, kw, message):
    with pytest.raises(ValueError, match=message):
        population.fit(CFG, members, *windows, **kw)
