"""The feedback lab, poems: a person compares quatrains, a reward model learns their taste, and
the chapter-5 poem model is steered by it (best-of-n, and fine-tuning with a KL penalty).

Taught in chapter 6.5 (06c_feedback_lab), the third of the seed article's three activities
(section 2.2, 交互反馈). The base model is the chapter-5 character LSTM trained by the quick
recipe (``runs.trained("rnn")``: trained once, then loaded from the disk cache).

The simulated person is :class:`PoemRater`, a reader of classical form with a documented taste:
a weighted sum of ``poetics.FEATURES`` (:data:`RATER_WEIGHTS`) plus *fluency*, how much a poem
reads like the Tang corpus to a Kneser-Ney 3-gram model trained on it (a poem that reads worse
than a typical real one costs extra: :data:`DISFLUENCY_WEIGHT`). The person answers through
``collab.SimulatedHuman``: with ``error_rate`` the other poem, and a tie when the two scores are
within ``tie_margin``. The reward model sees only the form features, not fluency: what it cannot
see, a policy optimised against it is free to lose, which the KL penalty guards.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import numpy as np

from course_lib import collab, files, ngram, poetics, preference, recipes, rnn, runs

RATER_WEIGHTS = {
    "form_ok": 3.0,
    "rhyme_2_4": 2.0,
    "level_rhyme": 1.0,
    "first_line_ok": 0.5,
    "third_line_oblique": 0.5,
    "tone_pattern": 2.0,
    "repeats": -0.5,
}
FLUENCY_WEIGHT = 1.0
DISFLUENCY_WEIGHT = 2.0  # more, for a poem less fluent than a typical real one (fluency < 0)


@dataclasses.dataclass(frozen=True)
class FeedbackRecipe:
    comparisons: int = 400
    held_out: float = 0.25  # the last quarter of the comparisons tests the reward model
    error_rate: float = 0.05  # the simulated person's mistakes
    tie_margin: float = 0.25  # scores this close are a tie to the simulated person
    best_of: int = 16
    eval_samples: int = 512
    rl: preference.RLConfig = preference.RLConfig(lm_coef=2.0)
    seed: int = 0

    def __post_init__(self):
        if self.comparisons < 8:
            raise ValueError(f"comparisons must be at least 8, got {self.comparisons}")
        if not 0.0 < self.held_out < 1.0:
            raise ValueError(f"held_out must be a fraction in (0, 1), got {self.held_out}")
        if self.best_of < 1 or self.eval_samples < 2:
            raise ValueError("best_of must be >= 1 and eval_samples >= 2")


class PoemRater:
    """The simulated reader's taste: ``RATER_WEIGHTS . features + FLUENCY_WEIGHT * fluency``,
    and ``DISFLUENCY_WEIGHT * fluency`` more for a poem less fluent than a typical real one.

    ``fluency`` is ``(m - bits) / s``: the poem's bits per character under a Kneser-Ney 3-gram of
    the training poems, against the mean ``m`` and spread ``s`` of the real validation poems
    (so a typical real poem scores 0), clipped to [-3, 3].
    """

    def __init__(self, vocab: rnn.CharVocab, train_poems, reference_poems):
        self.vocab = vocab
        ids = [vocab.encode(p + rnn.EOS) for p in train_poems]
        self.ngram = ngram.KneserNeyLM(order=3).fit(ids, len(vocab), bos_id=0)
        bits = self._bits(reference_poems)
        self.reference_bits, self.reference_spread = float(bits.mean()), float(bits.std())
        self.weights = np.array([RATER_WEIGHTS[f] for f in poetics.FEATURES], np.float32)

    def _bits(self, poems) -> np.ndarray:
        seqs = [self.vocab.encode(p + rnn.EOS) for p in poems]
        return np.array([-self.ngram.log2_prob_sequences([s]) / len(s) for s in seqs])

    def fluency(self, poems) -> np.ndarray:
        z = (self.reference_bits - self._bits(poems)) / self.reference_spread
        return np.clip(z, -3.0, 3.0)

    def scores(self, poems) -> np.ndarray:
        poems = list(poems)
        form = poetics.poem_features(poems) @ self.weights
        fluency = self.fluency(poems)
        return form + FLUENCY_WEIGHT * fluency + DISFLUENCY_WEIGHT * np.minimum(fluency, 0.0)

    def score(self, poem: str) -> float:
        return float(self.scores([poem])[0])

    def person(self, recipe: FeedbackRecipe) -> collab.SimulatedHuman:
        """The simulated person who answers ``compare`` by this taste, with noise."""
        return collab.SimulatedHuman(
            score=self.score,
            error_rate=recipe.error_rate,
            seed=recipe.seed,
            tie_margin=recipe.tie_margin,
        )

    def win_rate(self, poems, others, tie_margin: float) -> float:
        """Share of pairs (poems[i], others[i]) the rater prefers the first, ties counting half."""
        diff = self.scores(poems) - self.scores(others)
        return float(np.mean(np.where(np.abs(diff) <= tie_margin, 0.5, diff > 0)))


class PoemLab:
    """The base poem model, its data, the rater and the measurements of a policy."""

    def __init__(
        self, recipe: FeedbackRecipe = FeedbackRecipe(), profile: str = "quick", progress=False
    ):
        self.recipe = recipe
        self.base = runs.trained("rnn", recipes.recipe_for("rnn", profile), progress=progress)
        data = self.base.prepared
        self.vocab, self.graphdef = data.vocab, self.base.graphdef
        self.table = preference.PoemTable.for_vocab(self.vocab)
        train_poems = [self.vocab.decode(y[:-1]) for y in data.y_train]
        val_poems = [self.vocab.decode(y[:-1]) for y in data.y_val]
        self.rater = PoemRater(self.vocab, train_poems, val_poems)
        self._val_bpc = rnn.make_lm_eval_fn(self.graphdef, data.x_val, data.y_val)
        self.temperature = recipe.rl.temperature

    def sample(self, state, n: int, seed: int) -> np.ndarray:
        """``n`` poems as token ids [n, 25] from a policy ``state`` (the base: ``base.state``)."""
        key = jax.random.key(seed)
        return np.asarray(preference.sample_ids(self.graphdef, state, key, n, self.temperature))

    def decode(self, ids) -> list[str]:
        return [self.vocab.decode(row).split(rnn.EOS)[0] for row in np.asarray(ids)]

    def features(self, ids) -> np.ndarray:
        return np.asarray(preference.poem_features(jax.numpy.asarray(ids), self.table))

    def pairs(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs of base-model poems (ids) for a person to compare."""
        ids = self.sample(self.base.state, 2 * n, seed)
        return ids[:n], ids[n:]

    def best_of_n(self, weights, n: int, count: int, seed: int) -> np.ndarray:
        """``count`` poems, each the reward model's favourite of ``n`` fresh base samples."""
        ids = self.sample(self.base.state, n * count, seed).reshape(count, n, -1)
        rewards = (self.features(ids.reshape(n * count, -1)) @ weights).reshape(count, n)
        return ids[np.arange(count), rewards.argmax(1)]

    def fine_tune(self, weights, cfg: preference.RLConfig, seed: int = 0):
        """``preference.fine_tune`` of the base model, with its training poems for ``lm_coef``."""
        poems = (self.base.prepared.x_train, self.base.prepared.y_train)
        return preference.fine_tune(
            self.graphdef, self.base.state, self.table, weights, cfg, seed, poems=poems
        )

    def measure(self, ids, base_ids, state=None, kl_bound: float | None = None) -> dict:
        """A policy's poems ``ids`` against the base's ``base_ids`` (as many, drawn apart)."""
        poems, base_poems = self.decode(ids), self.decode(base_ids)
        feats = self.features(ids)
        result = {
            "win_rate_vs_base": self.rater.win_rate(poems, base_poems, self.recipe.tie_margin),
            "form_ok_fraction": float(feats[:, 0].mean()),
            "rhyme_rate": float(feats[:, 1].mean()),
            "rater_score": float(self.rater.scores(poems).mean()),
            "fluency": float(self.rater.fluency(poems).mean()),
            "distinct_fraction": len(set(poems)) / len(poems),
            "frame_share": frame_share(ids),
        }
        if state is not None:
            kl, _ = preference.poem_kl(
                self.graphdef, state, self.base.state, ids, self.temperature, self.table.eos
            )
            result["kl_to_base"] = float(np.mean(kl))
            result["val_bpc"] = float(self._val_bpc(state)["bits_per_char"])
        if kl_bound is not None:
            result["kl_to_base"] = kl_bound
        return result


def frame_share(ids) -> float:
    """How much the poems share one frame: at each of the 20 character positions, the share of
    poems with that position's most common character, averaged over the positions."""
    ids = np.asarray(ids)[:, poetics.LINE_CHARS]
    return float(np.mean([np.bincount(col).max() / len(col) for col in ids.T]))


def collect(human, pairs_a, pairs_b, progress: bool = False) -> np.ndarray:
    """The person's answer to each pair (0: first better, 1: second, ``collab.TIE``)."""
    answers = []
    for i, (a, b) in enumerate(zip(pairs_a, pairs_b, strict=True)):
        answers.append(human.compare(a, b, f"第 {i + 1} / {len(pairs_a)} 对"))
        if progress and (i + 1) % 50 == 0:
            print(f"{i + 1} comparisons", flush=True)
    return np.asarray(answers, np.int32)


def reward_model(lab: PoemLab, ids_a, ids_b, answers) -> tuple[np.ndarray, float]:
    """Bradley-Terry weights fitted on the first comparisons, and their accuracy on the
    held-out last ``lab.recipe.held_out`` of them.

    The weights are scaled so that the reward has standard deviation 1 over the compared
    poems (as RLHF normalises its reward model): a Bradley-Terry fit's scale depends on the
    person's noise, and the KL coefficient beta should not.
    """
    n_fit = int(round(len(answers) * (1 - lab.recipe.held_out)))
    fa, fb = lab.features(ids_a), lab.features(ids_b)
    weights = preference.fit_bradley_terry(fa[:n_fit], fb[:n_fit], answers[:n_fit])
    weights = weights / max(float(np.std(np.concatenate([fa, fb]) @ weights)), 1e-6)
    accuracy = preference.preference_accuracy(weights, fa[n_fit:], fb[n_fit:], answers[n_fit:])
    return weights, accuracy


def run(
    recipe: FeedbackRecipe = FeedbackRecipe(),
    human_kind: str = "simulated",
    progress: bool = False,
    out=None,
) -> dict:
    """The whole poem lab: a flat dict of its measurements (``collab feedback --part poems``).

    With ``out``, also ``metrics.json`` and ``samples.txt`` (the fine-tuned model's poems) there,
    written when the lab is done.
    """
    if human_kind not in collab.KINDS:
        raise ValueError(f"human must be one of {collab.KINDS}, got {human_kind!r}")
    start = time.perf_counter()
    lab = PoemLab(recipe, progress=progress)
    ids_a, ids_b = lab.pairs(recipe.comparisons, recipe.seed + 1)
    human = lab.rater.person(recipe) if human_kind == "simulated" else collab.make_human(human_kind)
    answers = collect(human, lab.decode(ids_a), lab.decode(ids_b), progress)
    weights, accuracy = reward_model(lab, ids_a, ids_b, answers)
    n = recipe.eval_samples
    base_ids = lab.sample(lab.base.state, n, recipe.seed + 2)
    best = lab.best_of_n(weights, recipe.best_of, n, recipe.seed + 3)
    best_of = lab.measure(best, base_ids, kl_bound=preference.best_of_n_kl(recipe.best_of))
    tuned = lab.fine_tune(weights, recipe.rl)
    tuned_ids = lab.sample(tuned.state, n, recipe.seed + 4)
    rl = lab.measure(tuned_ids, base_ids, tuned.state)
    base = lab.measure(lab.sample(lab.base.state, n, recipe.seed + 5), base_ids, lab.base.state)
    result = {
        "part": "poems",
        "human": collab.describe(human),
        "comparisons": int(len(answers)),
        "ties": int(np.sum(answers == collab.TIE)),
        "reward_model_accuracy": round(accuracy, 4),
        "reward_weights": {
            f: round(float(w), 3) for f, w in zip(poetics.FEATURES, weights, strict=True)
        },
        **{k: round(rl[k], 4) for k in ("win_rate_vs_base", "kl_to_base", "form_ok_fraction")},
        "val_bpc_base": round(base["val_bpc"], 4),
        "val_bpc_tuned": round(rl["val_bpc"], 4),
        "rhyme_rate_base": round(base["rhyme_rate"], 4),
        "rhyme_rate_tuned": round(rl["rhyme_rate"], 4),
        "best_of_n": {k: round(v, 4) for k, v in best_of.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    if out is not None:
        save(out, result, lab.decode(tuned_ids))
    return result


def save(out, result: dict, poems) -> None:
    """``metrics.json`` and ``samples.txt`` (one poem a line) in ``out``, each atomically."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with files.atomic_write(out / "samples.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(poems) + "\n")
    files.write_json(out / "metrics.json", result)
