"""The poem feedback lab (06c): its recipe, the simulated reader, the helpers, and the cache of
trained models that the lab starts from (``runs.trained``).

The tests that load the chapter-5 poem model are marked ``slow``.
"""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from course_lib import collab, data, feedback, poetics, recipes, rnn, runs

# --- the recipe --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"comparisons": 7}, "comparisons must be at least 8, got 7"),
        ({"held_out": 0.0}, r"held_out must be a fraction in \(0, 1\), got 0.0"),
        ({"held_out": 1.0}, r"held_out must be a fraction in \(0, 1\), got 1.0"),
        ({"best_of": 0}, "best_of must be >= 1"),
        ({"eval_samples": 1}, "eval_samples >= 2"),
    ],
)
def test_feedback_recipe_rejects_bad_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        feedback.FeedbackRecipe(**changes)


def test_feedback_recipe_accepts_the_smallest_valid_settings():
    recipe = feedback.FeedbackRecipe(comparisons=8, held_out=0.5, best_of=1, eval_samples=2)
    assert recipe.comparisons == 8 and recipe.best_of == 1


# --- the simulated reader ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def poems():
    train = [str(p) for p in data.load("tang5", "train")[:300]]
    val = [str(p) for p in data.load("tang5", "val")[:100]]
    return train, val


@pytest.fixture(scope="module")
def rater(poems):
    train, val = poems
    return feedback.PoemRater(rnn.CharVocab(train), train, val)


def _rhyming(val):
    """Validation quatrains whose lines 2 and 4 rhyme and end level."""
    feats = poetics.poem_features(val)
    keep = (feats[:, 0] == 1) & (feats[:, 1] == 1) & (feats[:, 2] == 1)
    return [p for p, k in zip(val, keep, strict=True) if k]


def test_breaking_the_rhyme_lowers_the_score(rater, poems):
    rhyming = _rhyming(poems[1])[:10]
    assert len(rhyming) == 10
    broken = []
    for poem in rhyming:
        line2 = poetics.rhyme_group(poem[10])
        # an oblique character that does not rhyme with line 2, in the rater's vocabulary
        char = next(c for c in "树远水雨去夜" if poetics.rhyme_group(c) != line2)
        assert char in rater.vocab.stoi and poetics.tone_class(char) == poetics.OBLIQUE
        broken.append(poem[:22] + char + "。")
    assert poetics.poem_features(broken)[:, 1].sum() == 0  # no rhyme left
    assert np.all(rater.scores(rhyming) > rater.scores(broken) + 1.0)


def test_a_non_quatrain_is_scored_by_fluency_alone_and_below_its_quatrain(rater, poems):
    val = poems[1]
    halves = [p[:12] for p in val]  # two lines: not a quatrain
    fluency = rater.fluency(halves)
    expected = feedback.FLUENCY_WEIGHT * fluency + feedback.DISFLUENCY_WEIGHT * np.minimum(
        fluency, 0
    )
    np.testing.assert_allclose(rater.scores(halves), expected, rtol=1e-5)
    assert np.mean(rater.scores(val) > rater.scores(halves)) >= 0.95
    z = rater.fluency(["不是诗"])[0]
    expected = feedback.FLUENCY_WEIGHT * z + feedback.DISFLUENCY_WEIGHT * min(z, 0.0)
    assert rater.score("不是诗") == pytest.approx(expected)


def test_fluency_is_about_zero_on_real_poems_and_lower_when_shuffled(rater, poems):
    val = poems[1]
    assert abs(float(rater.fluency(val).mean())) < 0.2  # the reference set: 0 by construction
    rng = np.random.default_rng(0)
    shuffled = []
    for poem in val:
        chars = list(poem)
        order = rng.permutation(poetics.LINE_CHARS)
        for p, q in zip(poetics.LINE_CHARS, order, strict=True):
            chars[p] = poem[q]
        shuffled.append("".join(chars))
    assert rater.fluency(shuffled).mean() < rater.fluency(val).mean() - 0.3
    assert np.all(np.abs(rater.fluency(shuffled + ["风" * 40])) <= 3.0)  # clipped


def test_win_rate_counts_ties_as_half(rater, poems):
    val = poems[1][:20]
    halves = [p[:12] for p in val]
    assert rater.win_rate(val, val, tie_margin=0.0) == 0.5  # every pair a tie
    assert rater.win_rate(val, halves, tie_margin=0.0) == 1.0
    assert rater.win_rate(halves, val, tie_margin=0.0) == 0.0
    # half the pairs tied, half won: 0.75
    mixed = rater.win_rate(val[:10] + val[10:], val[:10] + halves[10:], tie_margin=0.0)
    assert mixed == 0.75
    assert rater.win_rate(val, halves, tie_margin=1e9) == 0.5  # a huge margin: all ties


def test_the_person_ties_within_the_margin_and_is_seeded(rater, poems):
    val = poems[1][:40]
    halves = [p[:12] for p in val]
    recipe = feedback.FeedbackRecipe(error_rate=0.3, tie_margin=0.25, seed=3)
    person = rater.person(recipe)
    assert isinstance(person, collab.SimulatedHuman)
    assert person.error_rate == 0.3 and person.tie_margin == 0.25
    assert person.compare(val[0], val[0]) == collab.TIE

    def answers(seed):
        p = rater.person(dataclasses.replace(recipe, seed=seed))
        return [p.compare(a, b) for a, b in zip(val, halves, strict=True)], p.errors

    first, errors = answers(3)
    assert (first, errors) == answers(3)  # the same seed: the same answers
    assert first != answers(4)[0]
    assert 0 < errors < 40 and first.count(1) == errors  # a mistake picks the worse poem
    assert collab.TIE not in first  # the full poems are far ahead of the halves


# --- collect and frame_share -------------------------------------------------------------------


class ScriptedPerson:
    def __init__(self, answers):
        self.answers, self.asked = list(answers), []

    def compare(self, a, b, progress=""):
        self.asked.append((a, b, progress))
        return self.answers[len(self.asked) - 1]


def test_collect_asks_each_pair_in_order_with_its_progress(capsys):
    person = ScriptedPerson([0, 1, collab.TIE])
    answers = feedback.collect(person, ["a1", "a2", "a3"], ["b1", "b2", "b3"])
    assert answers.dtype == np.int32 and answers.tolist() == [0, 1, collab.TIE]
    assert person.asked == [
        ("a1", "b1", "第 1 / 3 对"),
        ("a2", "b2", "第 2 / 3 对"),
        ("a3", "b3", "第 3 / 3 对"),
    ]
    assert capsys.readouterr().out == ""  # no progress lines unless asked
    with pytest.raises(ValueError):  # pairs of unequal length
        feedback.collect(ScriptedPerson([0, 0]), ["a1", "a2"], ["b1"])


def test_collect_prints_progress_every_50_comparisons(capsys):
    feedback.collect(ScriptedPerson([0] * 120), ["a"] * 120, ["b"] * 120, progress=True)
    assert capsys.readouterr().out.splitlines() == ["50 comparisons", "100 comparisons"]


def test_frame_share_is_one_for_copies_and_one_over_n_for_distinct_rows():
    row = np.arange(25)
    assert feedback.frame_share(np.tile(row, (6, 1))) == 1.0
    distinct = np.arange(6)[:, None] * 100 + row[None, :]  # every position differs in every row
    assert feedback.frame_share(distinct) == pytest.approx(1 / 6)
    half = distinct.copy()
    half[3:] = half[0]  # four of the six rows share a frame
    assert feedback.frame_share(half) == pytest.approx(4 / 6)


def test_run_rejects_an_unknown_person_before_doing_anything(monkeypatch, tmp_path):
    monkeypatch.setattr(feedback, "PoemLab", lambda *a, **k: pytest.fail("the lab should not load"))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="human must be one of"):
        feedback.run(feedback.FeedbackRecipe(), human_kind="nobody", out=out)
    assert not out.exists()


# --- runs.trained: the cache of trained models -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ToyRecipe:
    dataset: str = "toy"
    steps: int = 3
    seed: int = 0


def _toy_model(calls):
    """A model whose every update adds 1 to its state: cheap, and easy to recognise."""

    def setup(recipe, prepared):
        state = {"w": jnp.zeros(3, jnp.float32), "b": jnp.float32(0.5)}

        def step(state, batch, key):
            calls.append(1)
            return jax.tree.map(lambda v: v + 1, state), {"loss": jnp.float32(1.0)}

        return runs.Training("toy-graph", state, step, lambda i: (np.zeros((2, 1), np.float32),))

    def evaluate(recipe, prepared, training, res):
        return {"w0": float(res.state["w"][0])}

    return runs.Steps(lambda recipe: "prepared", setup, evaluate)


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_LIB_DATA", str(tmp_path))
    calls = []
    monkeypatch.setitem(runs.MODELS, "toy", _toy_model(calls))
    return calls


def test_trained_trains_once_then_loads_the_same_state(toy, tmp_path):
    recipe = ToyRecipe()
    first = runs.trained("toy", recipe)
    assert not first.from_cache and len(toy) == 3
    path = runs.cache_path("toy", recipe)
    assert path.parent == tmp_path / "models" and list(path.parent.iterdir()) == [path]
    assert first.metrics["w0"] == 3.0 and first.metrics["steps"] == 3
    second = runs.trained("toy", recipe)
    assert second.from_cache and len(toy) == 3  # no update this time
    assert second.metrics == first.metrics and second.graphdef == "toy-graph"
    assert second.history == first.history and len(first.history["train"]) > 0
    for a, b in zip(jax.tree.leaves(first.state), jax.tree.leaves(second.state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert second.state["b"] == 3.5


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other shape"])
def test_an_unreadable_cache_is_trained_over_with_a_warning(toy, damage):
    recipe = ToyRecipe()
    runs.trained("toy", recipe)
    path = runs.cache_path("toy", recipe)
    if damage == "garbage":
        path.write_bytes(b"\x00not a zip file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:  # a cache written by an older model of another shape
        from course_lib import files

        files.save_tree(path, {"w": np.zeros(5, np.float32), "b": np.float32(0)}, {})
    with pytest.warns(UserWarning, match="unreadable.*training anew"):
        again = runs.trained("toy", recipe)
    assert not again.from_cache and len(toy) == 6 and again.metrics["w0"] == 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the retrained file is whole again
        assert runs.trained("toy", recipe).from_cache


def test_cache_path_depends_on_the_model_and_every_setting_of_the_recipe(toy):
    base = runs.cache_path("toy", ToyRecipe())
    assert base == runs.cache_path("toy", ToyRecipe())
    assert base.suffix == ".npz" and base.name.startswith("toy-")
    others = [runs.cache_path("toy", ToyRecipe(steps=4)), runs.cache_path("toy", ToyRecipe(seed=1))]
    others.append(runs.cache_path("other", ToyRecipe()))
    assert len({base, *others}) == 4
    rnn_quick = recipes.recipe_for("rnn", "quick")
    assert runs.cache_path("rnn", rnn_quick) != runs.cache_path(
        "rnn", recipes.recipe_for("rnn", "full")
    )


@pytest.mark.slow
def test_trained_caches_a_real_model_state(monkeypatch, tmp_path):
    """A tiny forecaster: the nnx state goes to disk and comes back leaf for leaf."""
    monkeypatch.setenv("COURSE_LIB_DATA", str(tmp_path))
    cfg = rnn.ForecastConfig(context=12, hidden=8, cell="gru")
    recipe = recipes.ForecastRecipe(steps=3, model=cfg)
    first = runs.trained("forecast", recipe)
    assert not first.from_cache and first.metrics["steps"] == 3
    assert list((tmp_path / "models").glob("*.npz")) == [runs.cache_path("forecast", recipe)]
    second = runs.trained("forecast", recipe)
    assert second.from_cache and second.metrics == first.metrics
    leaves = zip(jax.tree.leaves(first.state), jax.tree.leaves(second.state), strict=True)
    for a, b in leaves:
        np.testing.assert_array_equal(a, b)


# --- the lab on the chapter-5 poem model -------------------------------------------------------


@pytest.fixture(scope="module")
def lab():
    return feedback.PoemLab(feedback.FeedbackRecipe())


@pytest.mark.slow
def test_the_base_model_writes_quatrains_and_measures_even_against_itself(lab):
    ids, base_ids = lab.sample(lab.base.state, 512, 0), lab.sample(lab.base.state, 512, 1)
    assert ids.shape == (512, 25)
    feats = lab.features(ids)
    means = dict(zip(poetics.FEATURES, feats.mean(0), strict=True))
    assert means["form_ok"] > 0.9 and 0.0 < means["rhyme_2_4"] < 0.6
    assert 0.3 < means["tone_pattern"] <= 1.0 and 0.0 <= means["repeats"] < 5.0
    # the jitted features of token ids agree with those of the decoded strings
    np.testing.assert_allclose(feats, poetics.poem_features(lab.decode(ids)), atol=1e-6)
    result = lab.measure(ids, base_ids, lab.base.state)
    assert 0.4 <= result["win_rate_vs_base"] <= 0.6
    assert result["kl_to_base"] == pytest.approx(0.0, abs=1e-6)
    assert result["val_bpc"] == pytest.approx(lab.base.metrics["val_bpc"], abs=1e-3)
    assert result["form_ok_fraction"] == pytest.approx(means["form_ok"])
    assert 0.0 < result["frame_share"] < 0.5 and result["distinct_fraction"] > 0.9
