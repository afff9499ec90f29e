"""The latent search lab: the recipe, the search's step, rounds to target, the figure, the lab.

Most tests search a toy space (a fixed random map from 6 latent dimensions to 6x6 images, the
pixels as features), so each takes well under a second; two run the lab with a tiny VAE and
FD-LeNet of random weights; one (slow) runs it with the quick-recipe VAE and checks the chapter's
claim: a person's picks reach the target in at most half the rounds of random sampling.
"""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from course_lib import collab, fd_lenet, latent_search, recipes, runs, vae
from flax import nnx

LATENT = 6
W = np.random.default_rng(0).normal(size=(LATENT, 36)).astype(np.float32)
SMALL = latent_search.LatentRecipe(targets=6, max_rounds=40, prior_samples=1000, rarity=100)


def toy_space() -> latent_search.Space:
    decode = lambda z: (1 / (1 + np.exp(-np.asarray(z) @ W))).reshape(-1, 6, 6)  # noqa: E731
    return latent_search.Space(LATENT, decode, lambda x: np.asarray(x).reshape(len(x), -1))


@functools.cache
def toy_lab(recipe=SMALL, seed=1) -> latent_search.Lab:
    space = toy_space()
    targets = space.decode(np.random.default_rng(seed).normal(size=(recipe.targets, LATENT)))
    feats = space.features(targets)
    bars = latent_search.thresholds(space, feats, jax.random.key(seed), recipe)
    return latent_search.Lab(space, np.arange(recipe.targets), targets, feats, bars)


def perfect_person(error_rate=0.0, seed=0):
    person = collab.SimulatedHuman(score=lambda d: -d, error_rate=error_rate, seed=seed)
    return person, latent_search.simulated_chooser(person)


# --- the recipe ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"per_round": 1}, "per_round must be at least 2"),
        ({"max_rounds": 0}, "max_rounds and targets must be at least 1"),
        ({"targets": 0}, "max_rounds and targets must be at least 1"),
        ({"rarity": 500, "prior_samples": 400}, "raise prior_samples"),
        ({"error_rate": 1.0}, r"error_rate must be in \[0, 1\)"),
        ({"min_scale": 0.0}, "need 0 < min_scale <= start_scale <= 1"),
        ({"start_scale": 1.5}, "need 0 < min_scale <= start_scale <= 1"),
        ({"shrink": 1.0}, r"shrink must be in \(0, 1\)"),
        ({"shrink": 0.0}, r"shrink must be in \(0, 1\)"),
    ],
)
def test_the_recipe_names_what_to_fix(change, message):
    with pytest.raises(ValueError, match=message):
        latent_search.LatentRecipe(**change)


# --- the search's step ---------------------------------------------------------------------


def test_propose_keeps_the_pick_and_draws_around_it():
    mean = np.full((2, LATENT), 1.5, np.float32)
    eps = np.random.default_rng(0).normal(size=(2, 400, LATENT)).astype(np.float32)
    z = latent_search.propose(eps, mean, np.array([0.1, 1.0]))
    assert z.shape == (2, 400, LATENT)
    np.testing.assert_array_equal(z[:, 0], mean)  # slot 0: the last pick, kept
    np.testing.assert_allclose(z[1, 1:], eps[1, 1:])  # scale 1: a fresh prior draw
    near = np.linalg.norm(z[0, 1:] - mean[0], axis=-1).mean()
    far = np.linalg.norm(z[1, 1:] - mean[1], axis=-1).mean()
    assert near < 0.5 < 2.0 < far  # a small scale stays close to the pick


def test_step_moves_to_the_pick_and_adapts_the_scale():
    z = np.random.default_rng(0).normal(size=(3, 4, LATENT)).astype(np.float32)
    scale = np.array([0.5, 0.5, 0.2], np.float32)
    recipe = latent_search.LatentRecipe(shrink=0.5, min_scale=0.15)
    mean, new = latent_search.follow_pick(z, np.array([2, 0, 0]), scale, True, recipe)
    np.testing.assert_array_equal(mean, z[[0, 1, 2], [2, 0, 0]])
    np.testing.assert_allclose(new, [0.5, 0.25, 0.15])  # kept; shrunk; shrunk to the floor
    _, same = latent_search.follow_pick(z, np.array([2, 0, 0]), scale, False, recipe)
    np.testing.assert_array_equal(same, scale)  # round 1 (nothing kept): unchanged


def test_each_target_has_its_bar():
    recipe = dataclasses.replace(SMALL, prior_samples=1000, rarity=50)
    lab = toy_lab(recipe)
    z = latent_search.normal(jax.random.key(1), (1000, LATENT))  # the key toy_lab's bars use
    feats = lab.space.features(lab.space.decode(z))
    d = np.linalg.norm(feats[None] - lab.target_feats[:, None], axis=-1)
    np.testing.assert_array_equal((d <= lab.bars[:, None]).sum(axis=1), 1000 // 50)


# --- the searches --------------------------------------------------------------------------


def test_a_perfect_person_beats_random_sampling():
    recipe, lab = SMALL, toy_lab()
    pref, rand = latent_search.compare(lab, recipe, perfect_person()[1])
    found = latent_search.report(recipe, lab, pref, rand)
    assert found["censored_pref"] == 0
    assert found["rounds_to_target_pref"] <= 0.5 * found["rounds_to_target_random"]
    for r in pref.history[0][1:]:
        assert r.kept and r.distances[r.picked] == r.distances.min()
    best = [r.best_distance for r in pref.history[0]]
    assert best == sorted(best, reverse=True)  # the best so far is never lost


def test_rounds_to_target_counts_and_censors():
    curves = np.array([[5.0, 4.0, 1.0, 0.5], [5.0, 4.0, 3.0, 2.5]])
    rounds, censored = latent_search.rounds_to_target(curves, np.array([1.0, 1.0]), 4)
    np.testing.assert_array_equal(rounds, [3, 4])
    np.testing.assert_array_equal(censored, [False, True])
    rounds, censored = latent_search.rounds_to_target(curves, np.array([9.0, 2.5]), 4)
    np.testing.assert_array_equal(rounds, [1, 4])
    assert not censored.any()  # reached in the last round: not censored


def unreachable():
    """The toy lab's searches when no image can come close enough: every round is run."""
    lab = dataclasses.replace(toy_lab(), bars=np.full(SMALL.targets, -1.0))
    return lab, latent_search.compare(lab, SMALL, perfect_person()[1])[0]


def test_an_unreachable_target_runs_every_round_and_is_censored():
    _, pref = unreachable()
    n = SMALL.max_rounds
    assert [len(h) for h in pref.history] == [n] * SMALL.targets
    rounds, censored = latent_search.rounds_to_target(pref.best_curves(n), pref.thresholds, n)
    assert rounds.tolist() == [n] * SMALL.targets and censored.all()


def test_a_seed_gives_the_same_search():
    lab = toy_lab()

    def picks_and_distances():
        pref, rand = latent_search.compare(lab, SMALL, perfect_person(0.3, seed=4)[1])
        return [[(r.picked, r.best_distance) for r in h] for h in pref.history + rand.history]

    assert picks_and_distances() == picks_and_distances()
    other = latent_search.compare(lab, dataclasses.replace(SMALL, seed=1), perfect_person()[1])
    assert (
        other[0].history[0][0].best_distance
        != latent_search.compare(lab, SMALL, perfect_person()[1])[0].history[0][0].best_distance
    )


# --- the figure ----------------------------------------------------------------------------


@pytest.mark.parametrize(("rounds", "rows"), [(3, 3), (20, 8)])
def test_the_figure_has_a_row_per_round_shown(rounds, rows):
    lab, pref = unreachable()
    fig = latent_search.rounds_figure(pref.history[0][:rounds], lab.targets[0])
    grid = fig.axes[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols) == (rows, SMALL.per_round + 1)
    first, last = (fig.axes[r * grid.ncols].get_ylabel().split("\n")[0] for r in (0, rows - 1))
    assert first in ("第 1 轮", "round 1")
    assert last in (f"第 {rounds} 轮", f"round {rounds}")
    assert fig.axes[grid.ncols - 1].get_title() in ("目标", "target")


# --- the lab, with a tiny VAE and FD-LeNet of random weights ---------------------------------


def random_weights(make):
    """The (graphdef, state) of the modules ``make()`` returns, with random numpy weights: no
    jax.random draw to compile, so a tiny model is ready in a fraction of a second."""
    rng = np.random.default_rng(0)

    def fill(leaf):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.normal(0, 0.1, leaf.shape).astype(leaf.dtype))

    graphdef, shapes = nnx.split(nnx.eval_shape(make))
    return graphdef, jax.tree.map(fill, shapes)


@pytest.fixture(scope="module")
def tiny():
    """A tiny VAE and an FD-LeNet, both of random weights, and 50 random binary test images."""
    cfg = vae.VAEConfig(hidden=(16,), latent_dim=4)

    def make_vae():  # what vae.create splits: the model and its optimizer
        model = vae.VAE(cfg, rngs=nnx.Rngs(0))
        return model, nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)

    x_test = (np.random.default_rng(0).random((50, 28, 28)) > 0.8).astype(np.float32)
    prepared = recipes.VAEData(x_test, x_test, np.arange(50), np.arange(0), cfg)
    trained = runs.Trained(recipes.QUICK["vae"], prepared, *random_weights(make_vae), {}, {}, True)
    lenet, params = random_weights(lambda: fd_lenet.LeNet(28, rngs=nnx.Rngs(0)))
    return trained, fd_lenet.FDClassifier("mnist10k", 0, 28, float("nan"), lenet, params)


@pytest.fixture
def tiny_models(tiny, monkeypatch):
    """``runs.trained("vae")`` and ``fd_lenet.fd_classifier`` replaced by the tiny ones."""
    monkeypatch.setattr(runs, "trained", lambda model: tiny[0])
    monkeypatch.setattr(fd_lenet, "fd_classifier", lambda dataset: tiny[1])


def test_run_reports_the_lab_as_json(tiny_models):
    recipe = latent_search.LatentRecipe(targets=3, max_rounds=5, prior_samples=200, rarity=20)
    found = latent_search.run(recipe)
    json.dumps(found)
    assert found["targets"] == 3 and len(found["rounds_pref"]) == 3
    for key in ("rounds_to_target_pref", "rounds_to_target_random", "censored_pref", "seconds"):
        assert key in found
    assert found["threshold_rarity"] == 20 and found["per_round"] == 8
    assert found["human"] == "simulated (error_rate=0.1)"
    assert latent_search.run(recipe)["rounds_pref"] == found["rounds_pref"]


def test_a_person_at_a_terminal_searches_for_one_target(tiny_models, monkeypatch):
    shown = []
    person = collab.TerminalHuman(input_fn=lambda prompt: "2", print_fn=shown.append)
    monkeypatch.setattr(collab, "make_human", lambda kind: person)
    recipe = latent_search.LatentRecipe(targets=4, max_rounds=3, prior_samples=200, rarity=20)
    found = latent_search.run(recipe, human_kind="terminal")
    assert found["targets"] == 1 and len(found["rounds_pref"]) == 1
    assert found["human"] == "terminal"
    assert len(found["rounds_random"]) == 4  # the baseline, four times for the one target
    rounds = found["rounds_pref"][0]  # asked every round up to the hit (or the last round)
    assert [text.startswith("目标") for text in shown] == [True, False] * rounds
    assert all(text.count("[") == 8 for text in shown[1::2])  # the eight images, numbered


def test_run_rejects_an_unknown_person():
    with pytest.raises(ValueError, match="human_kind must be one of"):
        latent_search.run(human_kind="robot")


# --- the chapter's claim, with the quick VAE -------------------------------------------------


@pytest.mark.slow
def test_preferences_reach_the_target_in_half_the_rounds_of_random():
    found = latent_search.run(latent_search.LatentRecipe())
    assert found["targets"] == 20
    assert found["rounds_to_target_pref"] <= 0.5 * found["rounds_to_target_random"]
