"""Evaluation metrics for the three models and their baselines.

Which workbook chapter teaches what:

- VAE (chapter 5, ``05a_vae_in_practice``): :func:`bits_per_dim` of the test negative ELBO.
- GAN (chapter 5, ``05b_gan_in_practice``): FD-LeNet, a Fréchet distance in the feature space of a
  small classifier that course_lib trains itself (:class:`LeNet`, :func:`fd_classifier`,
  :func:`frechet_distance`, :func:`fd_lenet`, :func:`fd_lenet_floor`), and
  :func:`class_coverage`.
- Language model and forecast (chapter 5, ``05c_rnn_in_practice``): :func:`bits_per_char`,
  :func:`perplexity`, the interpolated Kneser-Ney baseline :class:`KneserNeyLM`, :func:`rmse` and
  :func:`seasonal_naive_forecast`.

Every function accepts numpy or jax arrays and returns Python floats or numpy arrays.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

LN2 = math.log(2.0)
NUM_CLASSES = 10
FD_LENET_VERSION = "v1"

# ---------------------------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------------------------


def bits_per_dim(neg_elbo_nats: float, dims: int) -> float:
    """Convert a negative ELBO in nats per example into bits per dimension.

    ``bits/dim = nats / (dims * ln 2)``; e.g. 94 nats on 784 MNIST pixels is 0.173 bits/dim.
    Taught in chapter 5 (05a_vae_in_practice).
    """
    dims = int(dims)
    if dims <= 0:
        raise ValueError(f"dims must be the positive number of data dimensions (784), got {dims}")
    return float(neg_elbo_nats) / (dims * LN2)


# ---------------------------------------------------------------------------------------------
# Language model
# ---------------------------------------------------------------------------------------------


def _check_n_tokens(n_tokens) -> int:
    n_tokens = int(n_tokens)
    if n_tokens <= 0:
        raise ValueError(
            f"n_tokens must be the positive number of predicted characters, got {n_tokens}"
        )
    return n_tokens


def bits_per_char(total_nll_nats: float, n_tokens: int) -> float:
    """Bits per character from a summed cross-entropy in nats over ``n_tokens`` predictions.

    Taught in chapter 5 (05c_rnn_in_practice).
    """
    return float(total_nll_nats) / (_check_n_tokens(n_tokens) * LN2)


def perplexity(total_nll_nats: float, n_tokens: int) -> float:
    """Per-character perplexity ``exp(total_nll_nats / n_tokens)``, equal to ``2 ** bits_per_char``.

    Taught in chapter 5 (05c_rnn_in_practice).
    """
    return math.exp(float(total_nll_nats) / _check_n_tokens(n_tokens))


def _as_token_sequences(sequences, vocab_size: int, what: str) -> list[list[int]]:
    if isinstance(sequences, np.ndarray | jax.Array) and np.ndim(sequences) == 1:
        raise ValueError(f"{what} must be a list of 1-D token-id arrays; wrap one sequence in [ ]")
    out = []
    for i, seq in enumerate(sequences):
        arr = np.asarray(seq)
        if arr.ndim != 1:
            raise ValueError(f"{what}[{i}] must be a 1-D array of token ids, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{what}[{i}] has dtype {arr.dtype}; token ids must be integers (use .astype(int))"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
            raise ValueError(
                f"{what}[{i}] holds ids outside [0, {vocab_size}); map unknown characters to an "
                "unknown-character id inside the vocabulary"
            )
        out.append(arr.tolist())
    return out


class KneserNeyLM:
    """Interpolated Kneser-Ney character n-gram model (Chen & Goodman, 1999), the RNN's baseline.

    For a context ``h`` of length ``k`` the model mixes order ``k`` with order ``k - 1``::

        P_k(w | h) = (max(c_k(h, w) - D_k, 0) + D_k * N1+(h .) * P_{k-1}(w | h')) / c_k(h .)

    where ``h'`` drops the oldest token, ``c`` are raw counts at the highest order and
    continuation counts ``N1+(. h w)`` (the number of distinct left neighbours) at lower orders,
    and the recursion bottoms out in the uniform distribution over ``vocab_size``. A context never
    seen at some order passes the lower-order distribution through unchanged. So every id,
    including an unknown-character id that never occurs in training, has non-zero probability,
    and the probabilities sum to one over the vocabulary for any context.

    Each sequence is the ids to predict (a poem's characters then one end-of-poem id); the
    context before position 0 is padded with ``bos_id``. With ``discount=None`` each order uses
    ``D = n1 / (n1 + 2 n2)`` from its own counts-of-counts, clipped to [0.05, 1] so that unseen
    tokens always keep some mass. Taught in chapter 5 (05c_rnn_in_practice).
    """

    def __init__(self, order: int = 3, discount: float | Sequence[float] | None = None):
        if int(order) != order or order < 1:
            raise ValueError(f"order must be a positive integer (3 for a trigram), got {order}")
        self.order = int(order)
        if discount is not None:
            ds = [float(discount)] * self.order if np.isscalar(discount) else list(discount)
            if len(ds) != self.order or not all(0.0 < d <= 1.0 for d in ds):
                raise ValueError(
                    f"discount must be None, one number in (0, 1] or {self.order} such numbers "
                    f"(one per order), got {discount!r}"
                )
            discount = [float(d) for d in ds]
        self._fixed_discount = discount
        self.vocab_size: int | None = None
        self.bos_id: int | None = None

    # Tables, indexed by context length k = 0 .. order-1:
    #   _succ[k][context] = {token: count}, _total[k][context] = sum of those counts.
    def fit(self, sequences, vocab_size: int, bos_id: int) -> KneserNeyLM:
        """Count n-grams of the training ``sequences`` (a list of 1-D int arrays); returns self."""
        vocab_size, bos_id = int(vocab_size), int(bos_id)
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        if not 0 <= bos_id < vocab_size:
            raise ValueError(f"bos_id must be an id in [0, {vocab_size}), got {bos_id}")
        seqs = _as_token_sequences(sequences, vocab_size, "sequences")
        n = self.order
        pad = [bos_id] * (n - 1)
        grams: Counter = Counter()
        for seq in seqs:
            padded = pad + seq
            grams.update(zip(*(padded[i:] for i in range(n)), strict=False))
        if not grams:
            raise ValueError("cannot fit a Kneser-Ney model on an empty corpus; pass some text")

        # Continuation count of a (k+1)-gram = number of distinct (k+2)-grams it ends.
        level_counts: list[Counter] = [Counter() for _ in range(n)]
        level_counts[n - 1] = grams
        distinct = list(grams)
        for k in range(n - 2, -1, -1):
            level_counts[k] = Counter(g[1:] for g in distinct)
            distinct = list(level_counts[k])

        self._succ, self._total, self.discounts = [], [], []
        for k in range(n):
            succ: dict[tuple, dict[int, int]] = {}
            for gram, c in level_counts[k].items():
                succ.setdefault(gram[:-1], {})[gram[-1]] = c
            self._succ.append(succ)
            self._total.append({h: sum(d.values()) for h, d in succ.items()})
            if self._fixed_discount is not None:
                self.discounts.append(self._fixed_discount[k])
            else:
                hist = Counter(level_counts[k].values())
                n1, n2 = hist.get(1, 0), hist.get(2, 0)
                d = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
                self.discounts.append(float(min(max(d, 0.05), 1.0)))
        self.vocab_size, self.bos_id = vocab_size, bos_id
        self.n_train_tokens = sum(len(s) for s in seqs)
        return self

    def _check_fitted(self) -> None:
        if self.vocab_size is None:
            raise RuntimeError("call .fit(sequences, vocab_size, bos_id) before scoring")

    def _prob(self, context: tuple, w: int) -> float:
        p = 1.0 / self.vocab_size
        n = self.order
        for k in range(n):
            h = context[n - 1 - k :]
            succ = self._succ[k].get(h)
            if succ is None:
                continue
            d = self.discounts[k]
            p = (max(succ.get(w, 0) - d, 0.0) + d * len(succ) * p) / self._total[k][h]
        return p

    def next_token_probs(self, context=()) -> np.ndarray:
        """The full next-token distribution (float64, length ``vocab_size``) after ``context``.

        ``context`` is the history of ids (left-padded with ``bos_id``; only the last
        ``order - 1`` matter).
        """
        self._check_fitted()
        ctx = self._context(list(np.asarray(context, dtype=np.int64).reshape(-1).tolist()))
        p = np.full(self.vocab_size, 1.0 / self.vocab_size)
        n = self.order
        for k in range(n):
            h = ctx[n - 1 - k :]
            succ = self._succ[k].get(h)
            if succ is None:
                continue
            d, total = self.discounts[k], self._total[k][h]
            ids = np.fromiter(succ.keys(), dtype=np.int64, count=len(succ))
            counts = np.fromiter(succ.values(), dtype=np.float64, count=len(succ))
            p *= d * len(succ) / total
            p[ids] += np.maximum(counts - d, 0.0) / total
        return p

    def _context(self, history: list[int]) -> tuple:
        n = self.order
        if n == 1:
            return ()
        padded = [self.bos_id] * (n - 1) + history
        return tuple(padded[-(n - 1) :])

    def log2_prob_sequences(self, sequences) -> float:
        """Total log2-probability (a number <= 0) of all tokens of ``sequences``.

        Its negation is the total code length in bits; see :meth:`bits_per_token`.
        """
        self._check_fitted()
        seqs = _as_token_sequences(sequences, self.vocab_size, "sequences")
        n = self.order
        pad = [self.bos_id] * (n - 1)
        cache: dict[tuple, float] = {}
        total = 0.0
        for seq in seqs:
            padded = pad + seq
            for i, w in enumerate(seq):
                key = tuple(padded[i : i + n - 1]) + (w,)
                lp = cache.get(key)
                if lp is None:
                    lp = cache[key] = math.log2(self._prob(key[:-1], w))
                total += lp
        return total

    def bits_per_token(self, sequences) -> float:
        """Average bits per predicted token (bits per character for the poem corpus)."""
        n_tokens = sum(int(np.size(s)) for s in sequences)
        if n_tokens == 0:
            raise ValueError("bits_per_token needs at least one token to score")
        return -self.log2_prob_sequences(sequences) / n_tokens


# ---------------------------------------------------------------------------------------------
# GAN: FD-LeNet and class coverage
# ---------------------------------------------------------------------------------------------


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


def _shift_augment(x: jax.Array, key: jax.Array, max_shift: int) -> jax.Array:
    """Translate each image by up to ``max_shift`` pixels (zero fill): cheap extra data."""
    if max_shift == 0:
        return x
    n, h, w = x.shape
    padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1]), (h, w))

    return jax.vmap(crop)(padded, offsets)


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


def train_lenet(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    seed: int = 0,
    config: LeNetTrainConfig = LeNetTrainConfig(),
) -> tuple[Any, Any]:
    """Train a :class:`LeNet` on uint8 or [0, 1] images; returns ``(graphdef, params)``.

    Deterministic for a given seed: shuffling and augmentation draw from explicit keys split off
    ``jax.random.key(seed)``. Every step is one call of a jitted step on a fixed-shape batch
    gathered on device (the remainder of an epoch is dropped); a ``lax.scan`` over the steps
    would be several times slower, because XLA:CPU runs convolutions inside loops on its slow
    path. Taught in chapter 5 (05b_gan_in_practice).
    """
    x = np.asarray(train_images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    y = np.asarray(train_labels).astype(np.int32)
    image_size = x.shape[1]
    n = x.shape[0]
    batch_size = min(config.batch_size, n)
    steps = n // batch_size
    max_shift = config.max_shift if image_size >= 16 else 0

    init_key, data_key = jax.random.split(jax.random.key(seed))
    model = LeNet(image_size, rngs=nnx.Rngs(params=init_key))
    graphdef, params = nnx.split(model, nnx.Param)
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.epochs * steps)
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    opt_state = tx.init(params)

    def loss_fn(params, xb, yb):
        logits = nnx.merge(graphdef, params)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def train_step(params, opt_state, x, y, perm, i, epoch_key):
        # One fixed-shape step; the batch is gathered on device, so the host only dispatches.
        idx = perm[i]
        xb = _shift_augment(x[idx], jax.random.fold_in(epoch_key, i), max_shift)
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, y[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

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


def _cache_path(dataset: str, seed: int) -> Path:
    from course_lib import data

    return Path(data.cache_dir()) / "fd_lenet" / f"{dataset}-seed{seed}-{FD_LENET_VERSION}.npz"


def _flat_params(params) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return {"param" + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


_CLASSIFIERS: dict[tuple, FDClassifier] = {}


def fd_classifier(dataset: str = "mnist10k", seed: int = 0) -> FDClassifier:
    """The FD-LeNet classifier for ``dataset``, trained once and cached on disk.

    Trains :class:`LeNet` on the dataset's train split (:func:`train_lenet`), measures its test
    accuracy, and stores the weights at ``cache_dir()/fd_lenet/<dataset>-seed<seed>-v1.npz``
    (written atomically). A corrupt cache file is retrained over with a warning. Memoised per
    process. Taught in chapter 5 (05b_gan_in_practice).
    """
    from course_lib import data

    path = _cache_path(dataset, seed)
    memo_key = (dataset, int(seed), str(path))
    if memo_key in _CLASSIFIERS:
        return _CLASSIFIERS[memo_key]

    train = data.load(dataset, "train")
    image_size = int(np.shape(train.images)[1])
    template = nnx.split(LeNet(image_size, rngs=nnx.Rngs(0)), nnx.Param)
    graphdef = template[0]
    params = None
    if path.exists():
        try:
            params, test_accuracy, train_seconds = _load_cached(path, template[1])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            warnings.warn(
                f"FD-LeNet cache {path} is unreadable ({err!r}); retraining it", stacklevel=2
            )
    if params is None:
        start = time.perf_counter()
        config = _TRAIN_CONFIGS.get(dataset, LeNetTrainConfig())
        graphdef, params = train_lenet(train.images, train.labels, seed, config)
        jax.block_until_ready(params)
        train_seconds = time.perf_counter() - start
        test = data.load(dataset, "test")
        probe = FDClassifier(dataset, int(seed), image_size, float("nan"), graphdef, params)
        preds = probe.predict(np.asarray(test.images, np.float32) / 255.0)
        test_accuracy = float(np.mean(preds == np.asarray(test.labels)))
        arrays = _flat_params(params)
        arrays.update(
            version=np.array(FD_LENET_VERSION),
            test_accuracy=np.array(test_accuracy),
            train_seconds=np.array(train_seconds),
        )
        _save_npz_atomic(path, arrays)
    clf = FDClassifier(
        dataset, int(seed), image_size, test_accuracy, graphdef, params, train_seconds
    )
    _CLASSIFIERS[memo_key] = clf
    return clf


def _as_features(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(
            f"{name} must be a 2-D [N, D] feature array with N >= 2, got shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, D]`` (float64).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased covariances. The trace
    of the matrix square root is computed as ``sum(sqrt(eig(S_a^(1/2) S_b S_a^(1/2))))``: that
    matrix is symmetric positive semi-definite, so there are no imaginary parts to discard and
    round-off negatives are clipped to zero. Taught in chapter 5 (05b_gan_in_practice).
    """
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feature dimensions differ ({a.shape[1]} vs {b.shape[1]}); use the same classifier"
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    fd = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt
    return float(max(fd, 0.0))


def fd_lenet(images_a, images_b, classifier: FDClassifier) -> float:
    """FD-LeNet: :func:`frechet_distance` of ``classifier.features`` of two image sets.

    Compare sets of equal size: the estimate is biased upward for small N. Taught in chapter 5
    (05b_gan_in_practice).
    """
    return frechet_distance(classifier.features(images_a), classifier.features(images_b))


def fd_lenet_floor(dataset: str, classifier: FDClassifier, n: int | None = None) -> float:
    """FD-LeNet between ``n`` real train and ``n`` real test images: what a perfect generator gets.

    The subsets are fixed (a seed-0 permutation of each split), so the floor is reproducible.
    ``n=None`` takes as many as the smaller split holds (2,000 for mnist10k); evaluate a generator
    with the same number of samples, since the estimate grows as N shrinks. Taught in chapter 5
    (05b_gan_in_practice).
    """
    from course_lib import data

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


# ---------------------------------------------------------------------------------------------
# Forecast
# ---------------------------------------------------------------------------------------------


def rmse(pred, target) -> float:
    """Root-mean-square error between two arrays of the same shape.

    Taught in chapter 5 (05c_rnn_in_practice).
    """
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}; align them first")
    if p.size == 0:
        raise ValueError("rmse needs at least one value")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("rmse got NaN or Inf; fill or drop missing values first")
    return float(np.sqrt(np.mean((p - t) ** 2)))


def seasonal_naive_forecast(history, horizon: int, season: int = 12) -> np.ndarray:
    """Repeat the last observed season: ``y_hat[T+h] = y[T+h - season * ceil(h / season)]``.

    ``history`` has time on axis 0 (``[T]`` or ``[T, ...]``); returns ``horizon`` steps as
    float64. The baseline a forecaster must beat. Taught in chapter 5 (05c_rnn_in_practice).
    """
    y = np.asarray(history, np.float64)
    horizon, season = int(horizon), int(season)
    if horizon < 1 or season < 1:
        raise ValueError(f"horizon and season must be positive, got {horizon} and {season}")
    if y.ndim == 0 or y.shape[0] < season:
        raise ValueError(
            f"history needs at least one full season ({season} steps), got shape {y.shape}"
        )
    h = np.arange(1, horizon + 1)
    t_last = y.shape[0] - 1
    idx = t_last + h - season * np.ceil(h / season).astype(np.int64)
    return y[idx]
