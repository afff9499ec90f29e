"""FD-LeNet and class coverage: how close and how varied a generator's digits are.

Which workbook chapter teaches what:

- GAN (chapter 5, ``05b_gan_in_practice``): FD-LeNet, a Fréchet distance
  (:func:`course_lib.metrics.frechet_distance`) in the feature space of a small classifier that
  course_lib trains itself (:class:`LeNet`, :func:`train_lenet`, :func:`fd_classifier`), between
  generated and real images (:func:`fd_lenet`) and between two real sets (:func:`fd_lenet_floor`,
  what a perfect generator gets); and :func:`class_coverage`, how evenly generated images spread
  over the classes.

The classifier is trained once per dataset and seed and cached on disk
(``cache_dir()/fd_lenet/<dataset>-seed<seed>-v1.npz``). Functions take numpy or jax arrays and
return Python floats or numpy arrays.
"""

from __future__ import annotations

import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from course_lib import data, files, pixels
from course_lib.metrics import frechet_distance

NUM_CLASSES = 10
FD_LENET_VERSION = "v1"


class LeNet(nnx.Module):
    """A LeNet-style digit classifier for square single-channel images (28x28 or 8x8).

    Two SAME-padded conv + ReLU + 2x2 max-pool blocks, a ``feature_dim`` ReLU layer (the FD
    features) and a linear layer to the class logits. Input ``[N, H, W]`` or ``[N, H, W, 1]`` in
    [0, 1]. Taught in chapter 5 (05b_gan_in_practice).
    """

    def __init__(
        self,
        image_size: int = 28,
        num_classes: int = NUM_CLASSES,
        feature_dim: int = 128,
        channels: tuple[int, int] = (16, 32),
        *,
        rngs: nnx.Rngs,
    ):
        if image_size < 4 or image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (28 or 8), got {image_size}")
        self.image_size = image_size
        # A 3x3 second conv costs half the CPU time of a 5x5 one at no loss of accuracy here.
        kernel1 = (5, 5) if image_size >= 16 else (3, 3)
        c1, c2 = channels
        self.conv1 = nnx.Conv(1, c1, kernel1, padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (3, 3), padding="SAME", rngs=rngs)
        flat = c2 * (image_size // 4) ** 2
        self.fc1 = nnx.Linear(flat, feature_dim, rngs=rngs)
        self.fc2 = nnx.Linear(feature_dim, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Penultimate (post-ReLU) activations, ``[N, feature_dim]``."""
        if x.ndim == 3:
            x = x[..., None]
        x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))
        return nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.features(x))


def _as_unit_images(images, image_size: int) -> np.ndarray:
    """Validate float images in [0, 1] of shape [N, S, S] or [N, S, S, 1]; returns [N, S, S]."""
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (image_size, image_size):
        raise ValueError(
            f"expected images of shape [N, {image_size}, {image_size}] or "
            f"[N, {image_size}, {image_size}, 1], got {tuple(np.shape(images))}; use a classifier "
            "trained on the same dataset as the images"
        )
    if x.shape[0] == 0:
        raise ValueError("got an empty batch of images; pass at least one image")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"expected float images in [0, 1], got dtype {x.dtype}; convert uint8 pixels with "
            "images.astype(np.float32) / 255"
        )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or Inf; check the generator's output")
    if x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise ValueError(
            f"images must lie in [0, 1], got values in [{x.min():.3f}, {x.max():.3f}]; rescale "
            "tanh outputs with (x + 1) / 2"
        )
    return x


@dataclass
class FDClassifier:
    """A trained :class:`LeNet` with numpy-in, numpy-out helpers; made by :func:`fd_classifier`.

    Taught in chapter 5 (05b_gan_in_practice).
    """

    dataset: str
    seed: int
    image_size: int
    test_accuracy: float
    graphdef: Any = field(repr=False)
    params: Any = field(repr=False)
    train_seconds: float = 0.0
    chunk: int = 500

    def __post_init__(self):
        graphdef = self.graphdef

        def run(params, x, what):
            model = nnx.merge(graphdef, params)
            return model.features(x) if what == "features" else model(x)

        self._run = jax.jit(run, static_argnames="what")

    @property
    def model(self) -> LeNet:
        return nnx.merge(self.graphdef, self.params)

    def _apply(self, images, what: str) -> np.ndarray:
        x = _as_unit_images(images, self.image_size)
        n = x.shape[0]
        # Fixed-size chunks: one compilation whatever the number of images.
        n_pad = -n % self.chunk
        if n_pad:
            x = np.concatenate([x, np.zeros((n_pad, *x.shape[1:]), np.float32)])
        starts = range(0, len(x), self.chunk)
        outs = [self._run(self.params, x[i : i + self.chunk], what) for i in starts]
        return np.asarray(jnp.concatenate(outs))[:n]

    def features(self, images) -> np.ndarray:
        """FD features (float32 ``[N, feature_dim]``) of float images in [0, 1]."""
        return self._apply(images, "features")

    def logits(self, images) -> np.ndarray:
        return self._apply(images, "logits")

    def predict(self, images) -> np.ndarray:
        """Predicted class ids (int64 ``[N]``)."""
        return self.logits(images).argmax(axis=-1)


@dataclass(frozen=True)
class LeNetTrainConfig:
    """Recipe for the FD-LeNet classifier (changing it calls for a new cache version)."""

    epochs: int = 8
    batch_size: int = 100
    learning_rate: float = 6e-3
    weight_decay: float = 1e-4
    max_shift: int = 2


# digits has only ~1.4k training images of 8x8: more epochs of cheap steps, no shifts.
_TRAIN_CONFIGS = {"digits": LeNetTrainConfig(epochs=40, batch_size=50, max_shift=0)}


def _make_train_step(graphdef, tx, max_shift: int):
    """One jitted AdamW step on a batch gathered on device and shifted by up to ``max_shift``."""

    def loss_fn(params, xb, yb):
        logits = nnx.merge(graphdef, params)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def train_step(params, opt_state, x, y, perm, i, epoch_key):
        # One fixed-shape step; the batch is gathered on device, so the host only dispatches.
        idx = perm[i]
        xb = pixels.translate(jax.random.fold_in(epoch_key, i), x[idx], max_shift)
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, y[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def train_lenet(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    seed: int = 0,
    config: LeNetTrainConfig = LeNetTrainConfig(),
) -> tuple[Any, Any]:
    """Train a :class:`LeNet` on uint8 or [0, 1] images; returns ``(graphdef, params)``.

    Deterministic for a given seed: shuffling and augmentation (:func:`course_lib.pixels.translate`,
    zero fill) draw from explicit keys split off ``jax.random.key(seed)``. Every step is one call
    of a jitted step on a fixed-shape batch gathered on device (the remainder of an epoch is
    dropped); a ``lax.scan`` over the steps would be several times slower, because XLA:CPU runs
    convolutions inside loops on its slow path. Taught in chapter 5 (05b_gan_in_practice).
    """
    x = np.asarray(train_images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    y = np.asarray(train_labels).astype(np.int32)
    image_size, n = x.shape[1], x.shape[0]
    batch_size = min(config.batch_size, n)
    steps = n // batch_size
    max_shift = config.max_shift if image_size >= 16 else 0

    init_key, data_key = jax.random.split(jax.random.key(seed))
    graphdef, params = nnx.split(LeNet(image_size, rngs=nnx.Rngs(params=init_key)), nnx.Param)
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.epochs * steps)
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    opt_state = tx.init(params)
    train_step = _make_train_step(graphdef, tx, max_shift)

    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    for epoch_key in jax.random.split(data_key, config.epochs):
        perm_key, aug_key = jax.random.split(epoch_key)
        perm = jax.random.permutation(perm_key, n)[: steps * batch_size].reshape(steps, batch_size)
        for i in range(steps):
            params, opt_state, loss = train_step(
                params, opt_state, x_dev, y_dev, perm, np.int32(i), aug_key
            )
    if not np.isfinite(float(loss)):
        raise FloatingPointError(
            f"LeNet training diverged (loss {float(loss)}); lower LeNetTrainConfig.learning_rate"
        )
    return graphdef, params


# --- the disk cache of trained classifiers ---------------------------------------------------


def _cache_path(dataset: str, seed: int) -> Path:
    return Path(data.cache_dir()) / "fd_lenet" / f"{dataset}-seed{seed}-{FD_LENET_VERSION}.npz"


def _flat_params(params) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return {"param" + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _save_cached(path: Path, params, test_accuracy: float, train_seconds: float) -> None:
    arrays = _flat_params(params)
    arrays.update(
        version=np.array(FD_LENET_VERSION),
        test_accuracy=np.array(test_accuracy),
        train_seconds=np.array(train_seconds),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_write(path) as f:
        np.savez(f, **arrays)


def _load_cached(path: Path, template_params):
    """Return ``(params, test_accuracy, train_seconds)`` from ``path``; raises if unusable."""
    with np.load(path) as f:
        if str(f["version"]) != FD_LENET_VERSION:
            raise ValueError(f"cache version {f['version']} != {FD_LENET_VERSION}")
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template_params)
        new_leaves = []
        for p, leaf in leaves:
            arr = f["param" + jax.tree_util.keystr(p)]
            if arr.shape != leaf.shape or arr.dtype != leaf.dtype:
                raise ValueError(f"parameter {jax.tree_util.keystr(p)} has the wrong shape")
            new_leaves.append(jnp.asarray(arr))
        return (
            jax.tree_util.tree_unflatten(treedef, new_leaves),
            float(f["test_accuracy"]),
            float(f["train_seconds"]),
        )


def _load_cached_or_none(path: Path, template_params):
    """:func:`_load_cached`, or ``None`` (with a warning for an unreadable file)."""
    if not path.exists():
        return None
    try:
        return _load_cached(path, template_params)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"FD-LeNet cache {path} is unreadable ({err!r}); retraining it", stacklevel=3)
        return None


def _train_and_test(dataset: str, seed: int, train) -> tuple[Any, Any, float, float]:
    """Train on ``train`` and measure test accuracy: ``(graphdef, params, acc, seconds)``."""
    start = time.perf_counter()
    config = _TRAIN_CONFIGS.get(dataset, LeNetTrainConfig())
    graphdef, params = train_lenet(train.images, train.labels, seed, config)
    jax.block_until_ready(params)
    train_seconds = time.perf_counter() - start
    test = data.load(dataset, "test")
    image_size = int(np.shape(train.images)[1])
    probe = FDClassifier(dataset, int(seed), image_size, float("nan"), graphdef, params)
    preds = probe.predict(np.asarray(test.images, np.float32) / 255.0)
    test_accuracy = float(np.mean(preds == np.asarray(test.labels)))
    return graphdef, params, test_accuracy, train_seconds


_CLASSIFIERS: dict[tuple, FDClassifier] = {}


def fd_classifier(dataset: str = "mnist10k", seed: int = 0) -> FDClassifier:
    """The FD-LeNet classifier for ``dataset``, trained once and cached on disk.

    Trains :class:`LeNet` on the dataset's train split (:func:`train_lenet`), measures its test
    accuracy, and stores the weights at ``cache_dir()/fd_lenet/<dataset>-seed<seed>-v1.npz``
    (written atomically). A corrupt cache file is retrained over with a warning. Memoised per
    process. Taught in chapter 5 (05b_gan_in_practice).
    """
    path = _cache_path(dataset, seed)
    memo_key = (dataset, int(seed), str(path))
    if memo_key in _CLASSIFIERS:
        return _CLASSIFIERS[memo_key]

    train = data.load(dataset, "train")
    image_size = int(np.shape(train.images)[1])
    graphdef, template = nnx.split(LeNet(image_size, rngs=nnx.Rngs(0)), nnx.Param)
    cached = _load_cached_or_none(path, template)
    if cached is not None:
        params, test_accuracy, train_seconds = cached
    else:
        graphdef, params, test_accuracy, train_seconds = _train_and_test(dataset, seed, train)
        _save_cached(path, params, test_accuracy, train_seconds)
    clf = FDClassifier(
        dataset, int(seed), image_size, test_accuracy, graphdef, params, train_seconds
    )
    _CLASSIFIERS[memo_key] = clf
    return clf


# --- the measures ----------------------------------------------------------------------------


def fd_lenet(images_a, images_b, classifier: FDClassifier) -> float:
    """FD-LeNet: :func:`~course_lib.metrics.frechet_distance` of ``classifier.features``.

    Compare sets of equal size: the estimate is biased upward for small N. Taught in chapter 5
    (05b_gan_in_practice).
    """
    return frechet_distance(classifier.features(images_a), classifier.features(images_b))


def fd_terms(images, real_images, classifier: FDClassifier) -> dict:
    """FD-LeNet of ``images`` against ``real_images``, split into what makes it up.

    ``mean_term`` is ||mu_g - mu_r||^2 and ``covariance_term`` the rest; ``total_variance`` and
    ``real_total_variance`` are the traces of the two feature covariances: how far each set
    spreads, summed over all directions (a smaller one means less varied images). Taught in
    chapter 5 (05b_gan_in_practice) and used again in 6a (06a_annotation_lab).
    """
    feats, real = classifier.features(images), classifier.features(real_images)
    fd = frechet_distance(feats, real)
    mean_term = float(np.sum((feats.mean(0) - real.mean(0)) ** 2))
    return {
        "fd_lenet": fd,
        "mean_term": mean_term,
        "covariance_term": fd - mean_term,
        "total_variance": float(np.trace(np.cov(feats, rowvar=False))),
        "real_total_variance": float(np.trace(np.cov(real, rowvar=False))),
    }


def fd_lenet_floor(dataset: str, classifier: FDClassifier, n: int | None = None) -> float:
    """FD-LeNet between ``n`` real train and ``n`` real test images: what a perfect generator gets.

    The subsets are fixed (a seed-0 permutation of each split), so the floor is reproducible.
    ``n=None`` takes as many as the smaller split holds (2,000 for mnist10k); evaluate a generator
    with the same number of samples, since the estimate grows as N shrinks. Taught in chapter 5
    (05b_gan_in_practice).
    """
    train, test = data.load(dataset, "train"), data.load(dataset, "test")
    limit = min(len(train.images), len(test.images))
    n = limit if n is None else int(n)
    if not 2 <= n <= limit:
        raise ValueError(f"n must be between 2 and {limit} for {dataset!r} (or None), got {n}")
    rng = np.random.default_rng(0)
    a = np.asarray(train.images)[rng.permutation(len(train.images))[:n]]
    b = np.asarray(test.images)[rng.permutation(len(test.images))[:n]]
    return fd_lenet(a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0, classifier)


def class_coverage(images, classifier, num_classes: int = NUM_CLASSES) -> dict:
    """How evenly generated ``images`` spread over the classes, by ``classifier.predict``.

    Returns ``histogram`` (share of each predicted class, float64, length ``num_classes``),
    ``class_kl`` (KL(histogram || uniform) in nats, with 0 log 0 = 0; 0 for a perfectly even spread,
    ln 10 = 2.303 when every image lands in one class) and ``classes_covered``: the number of
    classes whose share is at least a quarter of uniform (>= 2.5 % for 10 classes), so a class
    produced only by rare misclassifications does not count as covered. Taught in chapter 5
    (05b_gan_in_practice).
    """
    preds = np.asarray(classifier.predict(images)).reshape(-1).astype(np.int64)
    if preds.size == 0:
        raise ValueError("class_coverage needs at least one image")
    if preds.min() < 0 or preds.max() >= num_classes:
        raise ValueError(f"predicted classes must lie in [0, {num_classes})")
    counts = np.bincount(preds, minlength=num_classes)
    hist = counts / preds.size
    nz = hist > 0
    kl = float(np.sum(hist[nz] * np.log(hist[nz] * num_classes)))
    # share >= 1 / (4 * num_classes), in integers so that exactly 2.5 % counts
    covered = int(np.sum(4 * num_classes * counts >= preds.size))
    return {"histogram": hist, "class_kl": max(kl, 0.0), "classes_covered": covered}


def sample_quality(fake, real_test, classifier: FDClassifier) -> dict:
    """:func:`fd_lenet` of generated images in [0, 1] against ``real_test``, and their class
    coverage: what GAN (05b) and diffusion (08) runs report."""
    cov, fd = class_coverage(fake, classifier), fd_lenet(fake, real_test, classifier)
    return {"fd_lenet": fd, "class_kl": cov["class_kl"], "classes_covered": cov["classes_covered"]}
