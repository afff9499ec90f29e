"""Audits of a trained generative model: memorisation, membership inference, detectability and
how well one latent dimension carries a known factor.

Taught in chapter 8 (08_trends), where the article's section 8 names three challenges:
training efficiency, data privacy (数据隐私保护) and interpretability (模型解释性). The functions
here measure all three. Training efficiency, of any jitted step or function:

- :func:`step_gflop`: GFLOP of one call of a jitted function, from XLA's cost analysis;
- :func:`best_seconds`: the fastest of a few timed calls, after one that compiles;
- :func:`matmul_gflops`: this machine's rate on a large matmul, the peak a step is compared with.

Data privacy and interpretability, on any model's outputs, as numpy arrays:

- :func:`nearest_neighbour_distances`: how close each generated image lies to its nearest
  training image, against how close unseen test images lie (a model that copies its training
  set produces samples much closer than test images are);
- :func:`roc_auc`: the area under the ROC curve of a membership-inference score (0.5: the
  attacker cannot tell training examples from unseen ones; 1: it always can);
- :func:`detection_accuracy`: held-out accuracy of a logistic regression that tells real images
  from generated ones (0.5: indistinguishable to that classifier);
- :func:`mutual_information_gap`: the MIG of Chen et al. (2018), "Isolating Sources of
  Disentanglement in VAEs", for one known factor (the digit).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def step_gflop(jitted: Callable, *args) -> float:
    """GFLOP of one call ``jitted(*args)``, as XLA's cost analysis counts them.

    The function is lowered, not compiled: the estimate of the optimised program differs by
    well under 1 % for the book's training steps, and lowering takes no compile time.
    """
    cost = jitted.lower(*args).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # older jaxlibs: one dict per device
    return float(cost["flops"]) / 1e9


def best_seconds(fn: Callable[[], object], reps: int = 3) -> float:
    """The fastest of ``reps`` timed calls of ``fn()``, each waited for until its arrays are
    ready; one untimed call first, so that compiling is not counted."""
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of a jitted float32 ``n x n`` matmul on the default device (best of ``reps``):
    the operation a CPU runs closest to its peak, so the yardstick for a step's share."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    return 2 * n**3 / best_seconds(lambda: matmul(a, a), reps) / 1e9


def _flat(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty batch [N, ...], got shape {x.shape}")
    return x.reshape(len(x), -1)


def nearest_neighbour_distances(queries, references, chunk: int = 512) -> np.ndarray:
    """Euclidean distance from each query to its nearest reference, float64 [len(queries)].

    Both are batches of the same shape per item (e.g. images in [0, 1]). Computed in chunks as
    ``|q|^2 + |r|^2 - 2 q.r``, so 2,000 x 8,000 MNIST images take a fraction of a second.
    """
    q, r = _flat(queries, "queries"), _flat(references, "references")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} values per item, references {r.shape[1]}")
    r_sq = np.sum(r.astype(np.float64) ** 2, axis=1)
    out = np.empty(len(q))
    for start in range(0, len(q), chunk):
        block = q[start : start + chunk]
        d2 = np.sum(block.astype(np.float64) ** 2, axis=1)[:, None] + r_sq[None, :]
        d2 -= 2.0 * (block @ r.T)
        out[start : start + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def roc_auc(member_scores, nonmember_scores) -> float:
    """ROC AUC of an attack that calls an example a training member when its score is high.

    Equals the probability that a random member scores higher than a random non-member (ties
    count half): 0.5 means the score reveals nothing about membership.
    """
    from sklearn.metrics import roc_auc_score

    members = np.asarray(member_scores, np.float64).ravel()
    others = np.asarray(nonmember_scores, np.float64).ravel()
    if len(members) == 0 or len(others) == 0:
        raise ValueError("roc_auc needs at least one member score and one non-member score")
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(others))])
    return float(roc_auc_score(labels, np.concatenate([members, others])))


def detection_accuracy(real, fake, seed: int = 0, test_fraction: float = 0.5) -> float:
    """Held-out accuracy of a logistic regression trained to tell ``real`` from ``fake``.

    Inputs are batches of equal size per item (pixels, or features such as FD-LeNet's); the two
    sets are split at random into train and test parts with ``seed``. 0.5 is chance.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = _flat(real, "real"), _flat(fake, "fake")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"real items have {a.shape[1]} values, fake items {b.shape[1]}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x = np.concatenate([a, b])
    y = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, fit = perm[:n_test], perm[n_test:]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    clf.fit(x[fit], y[fit])
    return float(np.mean(clf.predict(x[test]) == y[test]))


def mutual_information_gap(codes, factor, bins: int = 20) -> dict:
    """MIG of latent ``codes`` [N, D] for one discrete ``factor`` [N] (e.g. the digit).

    Each latent dimension is cut into ``bins`` equal-width bins; ``mutual_information`` [D] is
    I(z_j; factor) in nats, and ``mig`` the gap between the two largest, divided by H(factor):
    near 1 when one dimension alone carries the factor, near 0 when it is spread over several.
    """
    from sklearn.metrics import mutual_info_score

    codes = np.asarray(codes, np.float64)
    factor = np.asarray(factor).ravel()
    if codes.ndim != 2 or codes.shape[1] < 2 or len(codes) != len(factor):
        raise ValueError(
            f"codes must be [N, D] with D >= 2 and N = len(factor); got {codes.shape} and "
            f"{factor.shape}"
        )
    mi = np.empty(codes.shape[1])
    for j, column in enumerate(codes.T):
        edges = np.histogram_bin_edges(column, bins=bins)
        mi[j] = mutual_info_score(factor, np.digitize(column, edges[1:-1]))
    _, counts = np.unique(factor, return_counts=True)
    p = counts / counts.sum()
    entropy = float(-np.sum(p * np.log(p)))
    top = np.sort(mi)[::-1]
    return {"mutual_information": mi, "mig": float((top[0] - top[1]) / entropy)}
