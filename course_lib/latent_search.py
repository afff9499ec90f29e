"""The latent search lab (交互反馈): a person picks, among a VAE's samples, the one closest to
what they want, and a search in the latent space draws the next ones from that pick.

Taught in chapter 6.5 (06c_feedback_lab). Each round the person sees ``per_round`` images decoded
from latent codes z and picks one. The search is a (1 + lambda) evolution strategy: the
cross-entropy method with a single elite, the person's pick, which is kept.

- round 1 shows ``per_round`` draws from the prior N(0, I);
- later rounds keep the last pick (slot 0, so progress is never lost) and draw the others around
  it, ``z = sqrt(1 - s^2) * pick + s * eps`` with eps ~ N(0, I) (a "preconditioned Crank-Nicolson"
  step: if the pick looks like a prior draw, so does every candidate, so no image drifts out to
  latent codes the decoder never saw in training; s = 1 is a fresh prior draw);
- the scale s starts at ``start_scale``; when the person picks the kept image again (nothing new
  was better) s shrinks by ``shrink``, never below ``min_scale``, so the search keeps exploring.

The setting (``LatentRecipe``'s defaults) was chosen once, on seeds 1-3, from a small grid
(start_scale 0.5-0.9, shrink 0.5-0.7, min_scale 0.1-0.3, a growing scale on success or not):
every setting tried gave medians of 5 to 8 rounds. The chapter reports seed 0.

The random baseline shows ``per_round`` fresh prior samples every round; what it shows does not
depend on the picks, so no person is asked.

The target and the bar. A simulated person wants a hidden test image and picks by distance in
FD-LeNet features (``fd_lenet``, chapter 5.2.2), erring at ``error_rate``. A target counts as
reached when the best image shown so far is as close as only 1 in ``rarity`` prior samples are
(measured per target on ``prior_samples`` decoded prior samples). So random sampling needs about
``rarity / per_round`` rounds on average: a bar that says what "close" means. We count the
rounds to reach it (:func:`rounds_to_target`), censored at ``max_rounds``, and report medians
over ``targets`` test images (:func:`run`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from course_lib import collab, fd_lenet, plotting, runs, vae
from course_lib.plotting import label

METHODS = ("pref", "random")


@dataclasses.dataclass(frozen=True)
class LatentRecipe:
    per_round: int = 8  # images a person sees each round
    max_rounds: int = 60  # a search that has not reached its target by then is censored
    targets: int = 20  # test images wanted, one search each (a real person does one)
    rarity: int = 200  # the bar: as close as 1 in ``rarity`` prior samples are
    prior_samples: int = 4000  # the prior samples that measure each target's bar
    error_rate: float = 0.1  # how often the simulated person picks another image
    start_scale: float = 0.5  # s in round 2 (round 1 draws from the prior, s = 1)
    shrink: float = 0.7  # s *= shrink when the kept pick wins again
    min_scale: float = 0.3  # s never falls below: the search keeps exploring
    seed: int = 0

    def __post_init__(self):
        if self.per_round < 2:
            raise ValueError(
                f"per_round must be at least 2 (the kept pick and a new image), got "
                f"{self.per_round}"
            )
        if self.max_rounds < 1 or self.targets < 1:
            raise ValueError(
                f"max_rounds and targets must be at least 1, got max_rounds="
                f"{self.max_rounds}, targets={self.targets}"
            )
        if self.rarity < 2 or self.prior_samples < self.rarity:
            raise ValueError(
                f"need 2 <= rarity <= prior_samples, got rarity={self.rarity}, "
                f"prior_samples={self.prior_samples}; raise prior_samples"
            )
        if not 0.0 <= self.error_rate < 1.0:
            raise ValueError(f"error_rate must be in [0, 1), got {self.error_rate}")
        if not 0.0 < self.min_scale <= self.start_scale <= 1.0:
            raise ValueError(
                f"need 0 < min_scale <= start_scale <= 1, got min_scale="
                f"{self.min_scale}, start_scale={self.start_scale}"
            )
        if not 0.0 < self.shrink < 1.0:
            raise ValueError(f"shrink must be in (0, 1), got {self.shrink}")


# --- the latent space and the yardstick ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Space:
    """What the search needs of a generator: latent codes to images, images to features."""

    latent_dim: int
    decode: Callable  # z [N, latent_dim] -> images [N, H, W] in [0, 1]
    features: Callable  # images [N, H, W] -> features [N, F]; distance: Euclidean in these


def vae_space(trained: runs.Trained, classifier: fd_lenet.FDClassifier) -> Space:
    """The VAE's decoder (Bernoulli means) and FD-LeNet's features, both jitted."""
    graphdef, state = trained.graphdef, trained.state
    lenet, params = classifier.graphdef, classifier.params
    features = jax.jit(lambda p, x: nnx.merge(lenet, p).features(x))
    return Space(
        trained.prepared.config.latent_dim,
        lambda z: np.asarray(vae.decode(graphdef, state, z)),
        lambda x: np.asarray(features(params, jnp.asarray(x, jnp.float32))),
    )


def normal(key, shape) -> np.ndarray:
    """N(0, I) noise of ``shape`` from ``key``, as float32 numpy. Drawn flat: XLA:CPU compiles a
    flat draw in a fraction of a second, a 4-D one in several."""
    return np.asarray(jax.random.normal(key, (int(np.prod(shape)),)), np.float32).reshape(shape)


def distances(feats, target_feats) -> np.ndarray:
    """Euclidean distances [T, K] of each target's K candidates ``feats`` [T, K, F] to it."""
    return np.linalg.norm(feats - target_feats[:, None, :], axis=-1)


def thresholds(space: Space, target_feats, key, recipe: LatentRecipe) -> np.ndarray:
    """Each target's bar: the distance that only 1 in ``rarity`` of ``prior_samples`` decoded
    prior samples reach (exactly ``prior_samples // rarity`` of them are at most this close)."""
    z = normal(key, (recipe.prior_samples, space.latent_dim))
    feats = space.features(space.decode(z))
    d = distances(np.broadcast_to(feats, (len(target_feats), *feats.shape)), target_feats)
    return np.sort(d, axis=1)[:, recipe.prior_samples // recipe.rarity - 1]


# --- the search ------------------------------------------------------------------------------


def propose(eps, mean, scale) -> np.ndarray:
    """Candidates [T, K, D] around each row of ``mean`` [T, D] from the noise ``eps`` [T, K, D]:
    slot 0 is the mean (the kept pick), the others ``sqrt(1 - s^2) * mean + s * eps`` with each
    row's scale s [T]."""
    s = np.asarray(scale, np.float32)[:, None, None]
    fresh = np.sqrt(1.0 - s**2) * mean[:, None, :] + s * eps[:, 1:]
    return np.concatenate([mean[:, None, :], fresh], axis=1).astype(np.float32)


def follow_pick(z, picks, scale, kept: bool, recipe: LatentRecipe):
    """The search's move after the picks: (new mean, new scale). The mean moves to each picked
    code; with ``kept`` (slot 0 held the last pick) the scale shrinks when slot 0 won again (down
    to ``min_scale``) and stays when a new image won."""
    z, picks, scale = np.asarray(z), np.asarray(picks), np.asarray(scale, np.float32)
    mean = z[np.arange(len(z)), picks]
    if not kept:
        return mean, scale
    again = picks == 0
    shrunk = np.maximum(scale * recipe.shrink, recipe.min_scale)
    return mean, np.where(again, shrunk, scale)


@dataclasses.dataclass
class Round:
    """One round of one search: what the person saw, what they picked, how close it got."""

    images: np.ndarray  # [per_round, H, W] in [0, 1]
    picked: int  # the index the person chose (always 0 for the random baseline: nobody asked)
    distances: np.ndarray  # [per_round] feature distance of each image to the target
    best_distance: float  # the closest image shown so far, after this round
    scale: float  # s the new candidates were drawn with (1: from the prior)
    kept: bool  # whether slot 0 is the last round's pick


@dataclasses.dataclass
class Search:
    """Searches for several targets at once: each target's rounds (to its first hit)."""

    method: str
    history: list[list[Round]]  # per target
    thresholds: np.ndarray  # [T]

    def best_curves(self, max_rounds: int) -> np.ndarray:
        """Best distance so far [T, max_rounds] (a reached target's last value carried on)."""
        out = np.full((len(self.history), max_rounds), np.inf)
        for t, rounds in enumerate(self.history):
            best = [r.best_distance for r in rounds]
            if best:
                out[t, : len(best)], out[t, len(best) :] = best, best[-1]
        return out


# ``Chooser(images [T, K, H, W], distances [T, K], active [T], round) -> picks [T]``
Chooser = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def search(space: Space, target_feats, bars, choose: Chooser | None, key, recipe, method="pref"):
    """Searches for all targets at once, batched: a target stops at its first hit or at
    ``max_rounds``. ``choose`` picks for the targets still active (None: nobody picks)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t, k, d = len(target_feats), recipe.per_round, space.latent_dim
    mean, scale = np.zeros((t, d), np.float32), np.full(t, recipe.start_scale, np.float32)
    best, active = np.full(t, np.inf), np.ones(t, bool)
    history: list[list[Round]] = [[] for _ in range(t)]
    # every round's N(0, I) noise in one draw: the prior samples, or eps of ``propose``
    noise = normal(key, (recipe.max_rounds, t, k, d))
    for r in range(1, recipe.max_rounds + 1):
        kept = method == "pref" and r > 1
        z = propose(noise[r - 1], mean, scale) if kept else noise[r - 1]
        flat = space.decode(z.reshape(t * k, d))
        images = flat.reshape(t, k, *flat.shape[1:])
        dist = distances(space.features(flat).reshape(t, k, -1), target_feats)
        best = np.where(active, np.minimum(best, dist.min(axis=1)), best)
        picks = np.zeros(t, int)
        if method == "pref" and choose is not None:
            picks[active] = np.asarray(choose(images, dist, active, r))[active]
        drawn = np.where(kept, scale, 1.0)
        for i in np.flatnonzero(active):
            history[i].append(
                Round(images[i], int(picks[i]), dist[i], float(best[i]), float(drawn[i]), kept)
            )
        new_mean, new_scale = follow_pick(z, picks, scale, kept, recipe)
        mean, scale = np.where(active[:, None], new_mean, mean), np.where(active, new_scale, scale)
        active &= best > bars
        if not active.any():
            break
    return Search(method, history, np.asarray(bars))


def rounds_to_target(best_curves, bars, max_rounds: int):
    """(rounds, censored): the first round whose best-so-far distance is within each target's
    bar, 1-based; a target never reached within ``max_rounds`` counts ``max_rounds`` and is
    flagged censored (its true number is larger, so a median is only a lower bound when half
    or more are censored)."""
    hit = np.asarray(best_curves)[:, :max_rounds] <= np.asarray(bars)[:, None]
    reached = hit.any(axis=1)
    rounds = np.where(reached, hit.argmax(axis=1) + 1, max_rounds)
    return rounds.astype(int), ~reached


def simulated_chooser(person: collab.Human) -> Chooser:
    """A simulated person who sees each image's distance to their hidden target and picks the
    nearest (``collab.SimulatedHuman(score=lambda d: -d)`` errs at its ``error_rate``)."""

    def choose(images, dist, active, r):
        picks = np.zeros(len(dist), int)
        for i in np.flatnonzero(active):
            picks[i] = person.pick(list(dist[i]), progress=f"第 {r} 轮")
        return picks

    return choose


def person_chooser(human: collab.Human, target, max_rounds: int) -> Chooser:
    """A real person (one target) picks the image closest to ``target``, which a terminal person
    sees as text art every round, a widget person once, above the panel."""
    kind = getattr(human, "kind", "")

    def choose(images, dist, active, r):
        if kind == "terminal":
            human.print_fn("目标 (target):\n" + collab.ascii_art(target[None], per_row=1))
        elif kind == "widget" and r == 1:
            from IPython.display import Image, display

            display(Image(plotting.png_bytes(target, scale=4)))
        ask = f"第 {r} 轮（最多 {max_rounds} 轮）：选最像目标的一张"
        return np.array([human.pick(list(images[0]), progress=ask)])

    return choose


# --- the lab ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Lab:
    """The VAE's space, the targets (test images), their features and bars."""

    space: Space
    target_index: np.ndarray  # indices into the test split
    targets: np.ndarray  # [T, H, W] the test images wanted
    target_feats: np.ndarray
    bars: np.ndarray  # [T] each target's threshold distance


def prepare(recipe: LatentRecipe, trained: runs.Trained | None = None, classifier=None) -> Lab:
    """The quick-recipe VAE (chapter 5, from the cache), FD-LeNet, the targets and their bars."""
    trained = runs.trained("vae") if trained is None else trained
    classifier = (
        fd_lenet.fd_classifier(trained.recipe.dataset) if classifier is None else classifier
    )
    x_test = np.asarray(trained.prepared.x_test, np.float32)
    if recipe.targets > len(x_test):
        raise ValueError(f"targets={recipe.targets} but the test split has {len(x_test)} images")
    index = np.random.default_rng(recipe.seed).choice(len(x_test), recipe.targets, replace=False)
    space = vae_space(trained, classifier)
    feats = space.features(x_test[index])
    bars = thresholds(space, feats, _keys(recipe)[0], recipe)
    return Lab(space, index, x_test[index], feats, bars)


def _keys(recipe: LatentRecipe):
    """The keys of the bars' prior samples, the preference search and the random baseline."""
    return jax.random.split(jax.random.key(recipe.seed), 3)


def compare(lab: Lab, recipe: LatentRecipe, choose: Chooser, repeats: int = 1):
    """(preference search, random baseline) for every target of ``lab``; the baseline runs
    ``repeats`` times per target (a person's one target: more than one draw of luck)."""
    _, pref_key, random_key = _keys(recipe)
    pref = search(lab.space, lab.target_feats, lab.bars, choose, pref_key, recipe, "pref")
    feats, bars = np.repeat(lab.target_feats, repeats, 0), np.repeat(lab.bars, repeats)
    return pref, search(lab.space, feats, bars, None, random_key, recipe, "random")


def run(recipe: LatentRecipe = LatentRecipe(), human_kind: str = "simulated", progress=False):
    """The lab: preference search against random sampling; a flat dict of JSON-able results.

    A simulated person searches for each of ``targets`` test images. A real person
    (``"widget"`` or ``"terminal"``) searches for one; the random baseline then runs
    ``targets`` times for that same target (it asks nobody), so its median is not one draw.
    The keys: ``rounds_to_target_pref`` and ``rounds_to_target_random`` (medians over the
    targets), ``rounds_pref`` and ``rounds_random`` (each target's), ``censored_pref`` and
    ``censored_random`` (how many reached no bar in ``max_rounds``, counted as ``max_rounds``),
    ``pref_over_random``, ``targets``, ``target_index``, ``threshold_rarity``, ``per_round``,
    ``human``, ``human_seconds`` (the person's time answering) and ``seconds`` (the whole run).
    """
    start = time.perf_counter()
    if human_kind not in collab.KINDS:
        raise ValueError(f"human_kind must be one of {collab.KINDS}, got {human_kind!r}")
    real = human_kind != "simulated"
    lab = prepare(dataclasses.replace(recipe, targets=1) if real else recipe)
    if real:
        human = collab.make_human(human_kind)
        choose = person_chooser(human, lab.targets[0], recipe.max_rounds)
    else:
        human = collab.make_human(
            "simulated", score=lambda d: -d, error_rate=recipe.error_rate, seed=recipe.seed
        )
        choose = simulated_chooser(human)
    pref, rand = compare(lab, recipe, choose, repeats=recipe.targets if real else 1)
    result = {"human": collab.describe(human), "targets": len(lab.bars), "seed": recipe.seed}
    result |= report(recipe, lab, pref, rand)
    result["human_seconds"] = round(human.seconds, 1)
    result["seconds"] = round(time.perf_counter() - start, 2)
    if progress:
        print(
            f"rounds to target (medians): preference {result['rounds_to_target_pref']:g}, "
            f"random {result['rounds_to_target_random']:g}; censored at {recipe.max_rounds}: "
            f"{result['censored_pref']} and {result['censored_random']}",
            flush=True,
        )
    return result


def report(recipe: LatentRecipe, lab: Lab, pref: Search, rand: Search) -> dict:
    """Rounds to target of each search and their medians, the censored counts, the bar."""
    out = {
        "target_index": lab.target_index.tolist(),
        "threshold_rarity": recipe.rarity,
        "prior_samples": recipe.prior_samples,
        "per_round": recipe.per_round,
        "max_rounds": recipe.max_rounds,
    }
    for name, found in (("pref", pref), ("random", rand)):
        rounds, censored = rounds_to_target(
            found.best_curves(recipe.max_rounds), found.thresholds, recipe.max_rounds
        )
        out[f"rounds_to_target_{name}"] = float(np.median(rounds))
        out[f"rounds_{name}"] = rounds.tolist()
        out[f"censored_{name}"] = int(censored.sum())
    out["pref_over_random"] = round(
        out["rounds_to_target_pref"] / out["rounds_to_target_random"], 3
    )
    return out


# --- the figure ------------------------------------------------------------------------------


def rounds_figure(history: list[Round], target, max_rows: int = 8):
    """One search's rounds, a row each (at most ``max_rows``: the first and the last, the others
    spread evenly between), the picked image framed in red, the best distance so far beside each
    row, and the target beside the first row. From round 2 the first image is the last pick."""
    import matplotlib.figure

    if not history:
        raise ValueError("the search has no rounds to show")
    count = min(max_rows, len(history))
    shown = np.unique(np.linspace(0, len(history) - 1, count).round()).astype(int)
    rows, cols = len(shown), len(history[0].images) + 1
    fig = matplotlib.figure.Figure(figsize=(1.0 * cols + 0.6, 1.05 * rows + 0.3), dpi=80)
    axes = fig.subplots(rows, cols, squeeze=False)
    for row, i in zip(axes, shown, strict=True):
        r = history[i]
        for c, (ax, img) in enumerate(zip(row[:-1], r.images, strict=True)):
            _image(ax, img)
            ax.spines[:].set_visible(c == r.picked)
        if r.kept and r.picked != 0:
            row[0].set_xlabel(label("上轮所选", "last pick"), color="grey", fontsize=8)
        row[r.picked].set_xlabel(label("选中", "picked"), color="tab:red", fontsize=8)
        near = f"{r.best_distance:.2f}"
        text = label(f"第 {i + 1} 轮\n最近 {near}", f"round {i + 1}\nbest {near}")
        row[0].set_ylabel(text, rotation=0, ha="right", va="center", fontsize=9)
        row[-1].axis("off")
    _image(axes[0, -1], plotting.unit_range(target))
    axes[0, -1].set_title(label("目标", "target"), fontsize=9)
    fig.tight_layout()
    return fig


def _image(ax, img) -> None:
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_color("tab:red")
    ax.spines[:].set_linewidth(3)
    ax.spines[:].set_visible(False)
