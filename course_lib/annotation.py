"""The annotation lab (数据标注): a person labels a few digits, active learning chooses which,
and a label-conditioned GAN learns from them to draw the digit asked for.

Taught in chapter 6.1-6.2 (06a_annotation_lab); ``python -m course_lib collab annotate`` runs it.
The steps, each a function the chapter calls:

1. :func:`prepare_pool`: the training images with their labels hidden, as features learned
   without labels (``FEATURES``), joined into the label-spreading graph (``course_lib.active``);
2. :func:`annotate`: rounds of "choose a batch, a person labels it, refit the classifier";
   :func:`learning_curves` repeats it with simulated people to compare the strategies;
3. :func:`pseudo_labels` and :func:`train_generator`: the person's labels plus the classifier's
   confident guesses for the rest of the pool train the conditional GAN;
4. :func:`class_accuracy`: how often the generator draws the digit it is asked for.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from course_lib import (
    active,
    collab,
    data,
    fd_lenet,
    files,
    gan,
    pixels,
    plotting,
    recipes,
    runs,
    vae,
)

FEATURES = ("pca", "vae", "pixels")


@dataclasses.dataclass(frozen=True)
class AnnotationRecipe:
    dataset: str = "mnist10k"
    features: str = "pca"  # what the classifier sees: FEATURES
    pca_dims: int = 50
    neighbours: int = 10  # k of the label-spreading graph
    strategy: str = "kmeans"  # active.STRATEGIES
    budget: int = 200  # labels the person gives
    batch: int = 20  # labels per round
    seed: int = 0
    target_accuracy: float = 0.90
    error_rate: float = 0.03  # the simulated person's
    pseudo_share: float = (
        0.6  # pseudo-label this share of the unlabelled pool, most confident first
    )
    curve_budget: int = 400  # how far the random baseline (and the chapter's curves) go
    gan: recipes.GANRecipe = recipes.GANRecipe(
        conditioning="labels", steps=1000, eval_every=1000, eval_samples=1000
    )

    def __post_init__(self):
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        if self.strategy not in active.STRATEGIES:
            raise ValueError(f"strategy must be one of {active.STRATEGIES}, got {self.strategy!r}")
        if self.budget < 1 or self.batch < 1:
            raise ValueError(
                f"budget and batch must be at least 1 label, got budget={self.budget}, "
                f"batch={self.batch}; e.g. --budget 200"
            )


def recipe_for(profile: str = "quick", **changes) -> AnnotationRecipe:
    """The lab's recipe for a run profile: "quick" (CPU) trains the GAN 1,000 steps, "full"
    (GPU) uses the full GAN recipe, conditioned on labels. ``changes`` override fields."""
    gan_recipe = recipes.recipe_for("gan", profile)  # checks the profile name
    recipe = AnnotationRecipe()
    if profile == "full":
        full_gan = dataclasses.replace(gan_recipe, conditioning="labels", eval_samples=1000)
        recipe = dataclasses.replace(recipe, gan=full_gan)
    return dataclasses.replace(recipe, **changes)


@dataclasses.dataclass(frozen=True)
class Pool:
    """The unlabelled pool and the test split that judges the classifier."""

    images: np.ndarray  # [N, 28, 28] uint8; what a person is shown
    hidden_labels: np.ndarray  # the truth: only the simulated person and the scoring read it
    features: np.ndarray  # [N, D]
    embed: Callable[[np.ndarray], np.ndarray]  # images (uint8) -> features, for new images
    graph: active.Graph
    test_images: np.ndarray
    test_labels: np.ndarray
    test_features: np.ndarray
    test_neighbours: np.ndarray  # each test image's k nearest pool images
    feature_seconds: float

    def test_accuracy(self, probs) -> float:
        """Accuracy on the test split of the classifier whose pool probabilities are ``probs``."""
        return active.accuracy(probs, self.test_neighbours, self.test_labels)

    def simulated_person(self, error_rate: float = 0.03, seed: int = 0) -> collab.SimulatedHuman:
        """A simulated person who knows every pool image's label and errs at ``error_rate``."""
        answers = collab.answer_key(self.images, self.hidden_labels)
        return collab.SimulatedHuman(answers, error_rate=error_rate, seed=seed)


def pca_embedding(x_train, dims: int):
    """Principal components of the pixels, one shared scale: a linear autoencoder's code."""
    flat = x_train.reshape(len(x_train), -1).astype(np.float32) / 255.0
    mean = flat.mean(axis=0)
    basis = np.linalg.svd(flat - mean, full_matrices=False)[2][:dims].T
    scale = float(np.std((flat - mean) @ basis))
    return lambda x: ((x.reshape(len(x), -1).astype(np.float32) / 255.0 - mean) @ basis) / scale


def vae_embedding(dataset: str, seed: int):
    """Posterior means of chapter 5's VAE (quick recipe, trained on all training images)."""
    recipe = dataclasses.replace(recipes.QUICK["vae"], dataset=dataset, seed=seed, val_fraction=0)
    prepared = recipes.prepare_vae(recipe)
    training = runs.setup_vae(recipe, prepared)
    state = runs.fit(training, recipe, progress=False).state
    means = np.asarray(vae.encode(training.graphdef, state, prepared.x_train)[0])
    centre, spread = means.mean(axis=0), means.std(axis=0) + 1e-6

    def embed(x):
        codes = vae.encode(training.graphdef, state, pixels.binarize(x))[0]
        return (np.asarray(codes) - centre) / spread

    return embed


def embedding(recipe: AnnotationRecipe, x_train) -> Callable[[np.ndarray], np.ndarray]:
    if recipe.features == "pca":
        return pca_embedding(x_train, recipe.pca_dims)
    if recipe.features == "vae":
        return vae_embedding(recipe.dataset, recipe.seed)
    return lambda x: x.reshape(len(x), -1).astype(np.float32) / 255.0


def prepare_pool(recipe: AnnotationRecipe) -> Pool:
    """The pool (the training split, labels hidden), its features and graph, and the test split."""
    x_train, y_train = data.load(recipe.dataset, "train")
    x_test, y_test = data.load(recipe.dataset, "test")
    start = time.perf_counter()
    embed = embedding(recipe, x_train)
    features = np.asarray(embed(x_train), np.float32)
    seconds = time.perf_counter() - start
    graph = active.pool_graph(features, recipe.neighbours)
    test_features = np.asarray(embed(x_test), np.float32)
    test_nbrs = np.asarray(active.nearest(test_features, features, recipe.neighbours))
    y_train, y_test = np.asarray(y_train, np.int32), np.asarray(y_test, np.int32)
    return Pool(
        x_train, y_train, features, embed, graph, x_test, y_test, test_features, test_nbrs, seconds
    )


@dataclasses.dataclass
class Annotation:
    """What a person gave, and how the classifier did after each round."""

    labels: np.ndarray  # [N] the person's label of each pool image, -1 where none
    counts: list[int]  # labels given after each round
    accuracy: list[float]  # the classifier's test accuracy after each round
    probs: np.ndarray | None = None  # the last classifier's pool probabilities

    def labels_to_reach(self, target: float) -> int | None:
        """The number of labels after which test accuracy first reached ``target`` (or None)."""
        return next(
            (n for n, a in zip(self.counts, self.accuracy, strict=True) if a >= target), None
        )


def annotate(pool: Pool, human, strategy: str, budget: int, batch: int, seed: int, on_round=None):
    """Rounds of: ``strategy`` picks up to ``batch`` images, ``human`` labels them, the label-
    spreading classifier is refitted; until ``budget`` labels. ``on_round(annotation, asked)``
    is called after each round (e.g. to print progress)."""
    rng = np.random.default_rng(seed)
    result = Annotation(np.full(len(pool.images), -1, np.int32), [], [])
    while (given := int((result.labels >= 0).sum())) < budget:
        asked = active.select(
            strategy,
            result.probs,
            pool.features,
            result.labels >= 0,
            min(batch, budget - given),
            rng,
        )
        result.labels[asked] = human.label(
            pool.images[asked], progress=f"已标注 {given} / {budget}"
        )
        result.probs = np.asarray(active.spread(pool.graph, result.labels))
        result.counts.append(given + len(asked))
        result.accuracy.append(pool.test_accuracy(result.probs))
        if on_round is not None:
            on_round(result, asked)
    return result


def learning_curves(pool: Pool, strategies, seeds, budget: int, batch: int, error_rate: float):
    """Test accuracy against labels for each strategy and seed, with simulated people.

    Returns ``{strategy: [Annotation per seed]}``; seed s uses the person seeded s too.
    """
    curves = {}
    for strategy in strategies:
        curves[strategy] = [
            annotate(pool, pool.simulated_person(error_rate, s), strategy, budget, batch, s)
            for s in seeds
        ]
    return curves


def pseudo_labels(annotation: Annotation, share: float):
    """Indices and labels to train on: the person's labels, plus the classifier's guess for the
    ``share`` of the unlabelled images it is most confident of (highest top probability)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    given = annotation.labels >= 0
    confidence = np.where(given, -np.inf, annotation.probs.max(axis=1))
    keep = int(round(share * np.sum(~given)))
    confident = np.zeros_like(given)
    confident[np.argsort(-confidence, kind="stable")[:keep]] = True
    index = np.flatnonzero(given | confident)
    labels = np.where(given, annotation.labels, annotation.probs.argmax(axis=1))[index]
    return index, labels.astype(np.int32)


def train_generator(recipe: recipes.GANRecipe, images, labels, progress: bool = False):
    """A label-conditioned GAN trained on ``images`` (uint8) with ``labels``; (Training, result)."""
    if recipe.conditioning != "labels":
        raise ValueError(
            f"the lab's generator is conditioned on labels, got {recipe.conditioning!r}"
        )
    prepared = recipes.prepare_gan(recipe, images, np.asarray(labels, np.int32))
    training = runs.setup_gan(recipe, prepared)
    return training, runs.fit(training, recipe, progress=progress, desc="conditional GAN")


def draw(training: runs.Training, state, digits, seed: int = 0) -> np.ndarray:
    """Images in [0, 1] of the ``digits`` asked for, one each."""
    digits = jnp.asarray(digits, jnp.int32)
    key = jax.random.key(seed)
    return np.asarray(gan.generate(training.graphdef, state, key, len(digits), labels=digits))


def class_accuracy(training, state, classifier, per_class: int = 100, seed: int = 0) -> float:
    """The share of generated digits that the FD-LeNet ``classifier`` reads as the digit asked."""
    digits = np.repeat(np.arange(10), per_class)
    return float(np.mean(classifier.predict(draw(training, state, digits, seed)) == digits))


def generator_report(recipe: AnnotationRecipe, training, result) -> dict:
    """The generator's class accuracy, FD-LeNet (last evaluation) and the real-data floor."""
    classifier = fd_lenet.fd_classifier(recipe.dataset)
    n = recipe.gan.eval_samples
    return {
        "gen_class_accuracy": round(class_accuracy(training, result.state, classifier), 4),
        "fd_lenet": round(result.history["eval"][-1]["fd_lenet"], 3),
        "fd_lenet_floor": round(fd_lenet.fd_lenet_floor(recipe.dataset, classifier, n=n), 3),
    }


def generated_data_gain(pool: Pool, annotation: Annotation, training, state, per_class: int):
    """Test accuracy of two classifiers on the person's labels, without and with ``per_class``
    generated images of each digit added as labelled examples (chapter 6.2).

    "spreading" is the label-spreading classifier (the generated images become labelled nodes of
    its graph); "nearest" is a 1-nearest-neighbour classifier that sees the labelled images only.
    """
    digits = np.repeat(np.arange(10), per_class).astype(np.int32)
    fake = pool.embed(np.round(draw(training, state, digits, seed=1) * 255).astype(np.uint8))
    given = np.flatnonzero(annotation.labels >= 0)
    k = pool.test_neighbours.shape[1]

    test = pool.test_features

    def spreading(features, labels):
        probs = active.spread(active.pool_graph(features, k), labels)
        return active.accuracy(probs, active.nearest(test, features, k), pool.test_labels)

    def nearest(features, labels):
        guess = labels[np.asarray(active.nearest(test, features, 1))[:, 0]]
        return float(np.mean(guess == pool.test_labels))

    both = np.concatenate([pool.features, fake])
    return {
        "spreading": spreading(pool.features, annotation.labels),
        "spreading_with_generated": spreading(both, np.concatenate([annotation.labels, digits])),
        "nearest": nearest(pool.features[given], annotation.labels[given]),
        "nearest_with_generated": nearest(
            np.concatenate([pool.features[given], fake]),
            np.concatenate([annotation.labels[given], digits]),
        ),
    }


def run(recipe: AnnotationRecipe, human=None, out=None, progress: bool = False) -> dict:
    """The whole lab as ``python -m course_lib collab annotate`` runs it; a flat dict of metrics.

    ``human`` labels ``recipe.budget`` images (default: a simulated person); a random baseline
    with a simulated person goes to ``recipe.curve_budget``. With ``out``: ``metrics.json``,
    ``labels.json`` (the person's answers) and ``samples.png`` (a row per digit 0-9).
    """
    start = time.perf_counter()
    pool = prepare_pool(recipe)
    human = human or pool.simulated_person(recipe.error_rate, recipe.seed)
    asked = annotate(pool, human, recipe.strategy, recipe.budget, recipe.batch, recipe.seed)
    baseline_person = pool.simulated_person(recipe.error_rate, recipe.seed)
    baseline = annotate(
        pool, baseline_person, "random", recipe.curve_budget, recipe.batch, recipe.seed
    )
    index, labels = pseudo_labels(asked, recipe.pseudo_share)
    training, result = train_generator(recipe.gan, pool.images[index], labels, progress)
    target = recipe.target_accuracy
    metrics = {
        "strategy": recipe.strategy,
        "budget": recipe.budget,
        "seed": recipe.seed,
        "human": collab.describe(human),
        "labels_to_90_active": asked.labels_to_reach(target),
        "labels_to_90_random": baseline.labels_to_reach(target),
        "accuracy_at_budget": round(asked.accuracy[-1], 4),
        "human_label_errors": int(
            np.sum(asked.labels[asked.labels >= 0] != pool.hidden_labels[asked.labels >= 0])
        ),
        "human_seconds": round(human.seconds, 1),
        "pseudo_labels": len(index),
        "pseudo_label_accuracy": round(float(np.mean(labels == pool.hidden_labels[index])), 4),
        **generator_report(recipe, training, result),
        "train_seconds": round(pool.feature_seconds + result.train_seconds, 2),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if out is not None:
        save(out, asked, training, result.state, metrics)
    return metrics


def save(out, annotation: Annotation, training, state, metrics: dict) -> None:
    """Write the lab's results to ``out`` (each file atomically)."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    given = np.flatnonzero(annotation.labels >= 0)
    answers = {"index": given.tolist(), "label": annotation.labels[given].tolist()}
    answers |= {"counts": annotation.counts, "test_accuracy": annotation.accuracy}
    files.write_json(out / "labels.json", answers)
    digits = np.repeat(np.arange(10), 10)
    plotting.save_image_grid(draw(training, state, digits, seed=2), out / "samples.png", ncols=10)
    files.write_json(out / "metrics.json", metrics)
