"""Active learning on a pool of images: a graph classifier and the rules that choose what to ask.

Taught in chapter 6.1 (06a_annotation_lab). The pool is a set of images whose labels nobody has
given yet; a person labels a few, chosen by a *query strategy*, and a classifier learns from them.

The classifier is label spreading (Zhou et al., 2004, "Learning with local and global
consistency"): the pool's images, as features learned without labels, become a graph that joins
each image to its ``k`` nearest neighbours, and the labels a person gave flow along its edges,

    F <- alpha * S F + (1 - alpha) * Y,    S = D^-1/2 W D^-1/2,

where W is the symmetrised k-nearest-neighbour graph, D its degrees and Y the given labels, one-hot
(zero rows for unlabelled images). It uses the unlabelled images too, which is why a few hundred
labels are enough for 90 % on MNIST. Refitting it is one jitted function of the labels.

Query strategies (``STRATEGIES``): "random"; the uncertainty rules "least_confidence", "margin"
and "entropy", which ask about the images the classifier is least sure of and start from a random
batch; and "kmeans", a diversity-aware cold start: its first batch is the image nearest each
centre of a k-means of the features (typical images, one per cluster), then it asks by margin.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

STRATEGIES = ("random", "least_confidence", "margin", "entropy", "kmeans")
UNCERTAINTY = ("least_confidence", "margin", "entropy")


@functools.partial(jax.jit, static_argnames=("k", "exclude_self", "chunk"))
def nearest(queries, points, k: int, exclude_self: bool = False, chunk: int = 1000):
    """Indices [Q, k] of each query's ``k`` nearest ``points`` (Euclidean), in chunks of queries.

    With ``exclude_self`` the queries are the points themselves and each skips its own index.
    """
    queries, points = jnp.asarray(queries, jnp.float32), jnp.asarray(points, jnp.float32)
    n_q = queries.shape[0]
    pad = (-n_q) % chunk
    padded = jnp.pad(queries, ((0, pad), (0, 0))).reshape(-1, chunk, queries.shape[1])
    sq_points = jnp.sum(points**2, axis=1)

    def one_chunk(args):
        q, start = args
        d2 = jnp.sum(q**2, axis=1)[:, None] - 2 * q @ points.T + sq_points[None, :]
        if exclude_self:
            rows = start + jnp.arange(chunk)
            d2 = jnp.where(rows[:, None] == jnp.arange(points.shape[0])[None, :], jnp.inf, d2)
        return jax.lax.top_k(-d2, k)[1]

    starts = jnp.arange(padded.shape[0]) * chunk
    return jax.lax.map(one_chunk, (padded, starts)).reshape(-1, k)[:n_q]


@dataclasses.dataclass(frozen=True)
class Graph:
    """The pool's symmetrised k-nearest-neighbour graph as edge lists, normalised (S above)."""

    senders: jax.Array
    receivers: jax.Array
    weights: jax.Array
    num_nodes: int


def pool_graph(features, k: int = 10) -> Graph:
    """The label-spreading graph of ``features`` [N, D]: each image joined to its k neighbours."""
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or len(features) <= k:
        raise ValueError(f"features must be [N, D] with N > k={k}, got shape {features.shape}")
    nbrs = np.asarray(nearest(features, features, k, exclude_self=True))
    rows = np.repeat(np.arange(len(features)), k)
    senders = np.concatenate([rows, nbrs.ravel()])  # W = A + A^T: each edge both ways
    receivers = np.concatenate([nbrs.ravel(), rows])
    degree = np.bincount(receivers, minlength=len(features)).astype(np.float32)
    weights = 1.0 / np.sqrt(degree[senders] * degree[receivers])
    return Graph(jnp.asarray(senders), jnp.asarray(receivers), jnp.asarray(weights), len(features))


@functools.partial(jax.jit, static_argnames=("num_classes", "iters"))
def _spread(senders, receivers, weights, labels, num_classes: int, alpha, iters: int):
    given = jax.nn.one_hot(labels, num_classes) * (labels >= 0)[:, None]

    def step(f, _):
        flowed = jax.ops.segment_sum(
            weights[:, None] * f[senders], receivers, num_segments=labels.shape[0]
        )
        return alpha * flowed + (1 - alpha) * given, None

    scores, _ = jax.lax.scan(step, given, None, length=iters)
    return scores


def spread(graph: Graph, labels, num_classes: int = 10, alpha: float = 0.9, iters: int = 40):
    """Class probabilities [N, C] of every pool image from the given ``labels`` (-1: none).

    Images the labels have not reached get the uniform distribution.
    """
    labels = jnp.asarray(labels, jnp.int32)
    if labels.shape != (graph.num_nodes,):
        raise ValueError(f"labels must have one entry per pool image ({graph.num_nodes})")
    scores = _spread(
        graph.senders, graph.receivers, graph.weights, labels, num_classes, alpha, iters
    )
    return normalise(scores)


def normalise(scores):
    """Rows of non-negative scores as probabilities; all-zero rows become uniform."""
    scores = jnp.maximum(jnp.asarray(scores), 0) + 1e-12
    return scores / jnp.sum(scores, axis=1, keepdims=True)


def predict_proba(pool_probs, neighbours):
    """Probabilities of new images from their ``neighbours`` [Q, k] in the pool (``nearest``)."""
    return jnp.mean(jnp.asarray(pool_probs)[jnp.asarray(neighbours)], axis=1)


def accuracy(pool_probs, neighbours, labels) -> float:
    """Accuracy on new images with true ``labels``, classified by their pool ``neighbours``."""
    guess = np.argmax(np.asarray(predict_proba(pool_probs, neighbours)), axis=1)
    return float(np.mean(guess == np.asarray(labels)))


def uncertainty(probs, rule: str):
    """How unsure the classifier is of each image: higher means ask sooner."""
    probs = jnp.asarray(probs)
    if rule == "least_confidence":
        return 1.0 - jnp.max(probs, axis=1)
    if rule == "margin":
        top2 = jax.lax.top_k(probs, 2)[0]
        return -(top2[:, 0] - top2[:, 1])
    if rule == "entropy":
        return -jnp.sum(probs * jnp.log(probs + 1e-12), axis=1)
    raise ValueError(f"rule must be one of {UNCERTAINTY}, got {rule!r}")


def typical_points(features, candidates, n: int, seed: int) -> np.ndarray:
    """The candidate nearest each centre of an ``n``-means clustering of the candidates."""
    from sklearn.cluster import KMeans

    feats = np.asarray(features, np.float32)[candidates]
    centres = KMeans(n, n_init=1, random_state=seed).fit(feats).cluster_centers_
    picked = np.asarray(nearest(centres, feats, 1))[:, 0]
    return np.asarray(candidates)[np.unique(picked)]


def select(strategy: str, probs, features, labeled, n: int, rng: np.random.Generator):
    """The indices of the ``n`` unlabelled pool images that ``strategy`` asks about next.

    ``probs`` are the classifier's pool probabilities (ignored by "random" and by the first
    batch of every strategy); ``labeled`` is a boolean mask of the images labelled so far.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    labeled = np.asarray(labeled, bool)
    candidates = np.flatnonzero(~labeled)
    if n < 1 or n > len(candidates):
        raise ValueError(f"cannot ask about {n} images: {len(candidates)} are unlabelled")
    first = not labeled.any()
    if strategy == "kmeans" and first:
        picked = typical_points(features, candidates, n, int(rng.integers(2**31)))
        rest = np.setdiff1d(candidates, picked)
        return np.concatenate([picked, rng.choice(rest, n - len(picked), replace=False)])
    if strategy == "random" or first:
        return rng.choice(candidates, n, replace=False)
    rule = "margin" if strategy == "kmeans" else strategy
    scores = np.asarray(uncertainty(probs, rule))[candidates]
    return candidates[np.argsort(-scores, kind="stable")[:n]]
