"""Active learning: kNN search, label spreading on a graph, and the query strategies."""

import numpy as np
import pytest
from course_lib import active


def brute_force_knn(queries, points, k, exclude_self=False):
    d2 = ((queries[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    if exclude_self:
        np.fill_diagonal(d2, np.inf)
    return np.argsort(d2, axis=1, kind="stable")[:, :k]


def blobs(centres, per_blob, scale, seed):
    """Points [len(centres) * per_blob, D] around ``centres`` and each point's blob index."""
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres, np.float32)
    points = centres[:, None, :] + scale * rng.normal(
        size=(len(centres), per_blob, centres.shape[1])
    )
    labels = np.repeat(np.arange(len(centres)), per_blob)
    return points.reshape(-1, centres.shape[1]).astype(np.float32), labels.astype(np.int32)


def line(n=101):
    """Points on a line in 2-D, class 0 on the left half and 1 on the right, both ends labelled."""
    x = np.linspace(0.0, 1.0, n, dtype=np.float32)
    features = np.stack([x, np.zeros_like(x)], axis=1)
    labels = np.full(n, -1, np.int32)
    labels[:5], labels[-5:] = 0, 1
    return x, features, labels


# --- nearest -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_queries", [7, 16, 23])  # chunk=8: less than, a multiple of, and not
def test_nearest_matches_brute_force(n_queries):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 3)).astype(np.float32)
    queries = rng.normal(size=(n_queries, 3)).astype(np.float32)
    got = np.asarray(active.nearest(queries, points, 5, chunk=8))
    assert got.shape == (n_queries, 5)
    np.testing.assert_array_equal(got, brute_force_knn(queries, points, 5))


@pytest.mark.parametrize("n_points", [24, 29])
def test_nearest_excluding_self_matches_brute_force(n_points):
    points = np.random.default_rng(1).normal(size=(n_points, 4)).astype(np.float32)
    got = np.asarray(active.nearest(points, points, 3, exclude_self=True, chunk=8))
    np.testing.assert_array_equal(got, brute_force_knn(points, points, 3, exclude_self=True))
    assert not (got == np.arange(n_points)[:, None]).any()  # no point is its own neighbour
    with_self = np.asarray(active.nearest(points, points, 1, chunk=8))[:, 0]
    np.testing.assert_array_equal(with_self, np.arange(n_points))  # ... unless asked


# --- spreading -----------------------------------------------------------------------------


def test_spreading_classifies_two_separated_blobs():
    points, truth = blobs([[0.0, 0.0], [10.0, 10.0]], per_blob=200, scale=1.0, seed=0)
    graph = active.pool_graph(points, k=10)
    assert graph.num_nodes == 400
    labels = np.full(400, -1, np.int32)
    labels[[0, 1, 2]], labels[[200, 201, 202]] = 0, 1
    probs = np.asarray(active.spread(graph, labels, num_classes=2))
    assert probs.shape == (400, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=1), truth)  # the whole pool, from 6 labels
    held_out, held_truth = blobs([[0.0, 0.0], [10.0, 10.0]], per_blob=50, scale=1.0, seed=1)
    neighbours = active.nearest(held_out, points, 10)
    new = np.asarray(active.predict_proba(probs, neighbours))
    assert new.shape == (100, 2)
    np.testing.assert_array_equal(new.argmax(axis=1), held_truth)


def test_components_without_labels_are_uniform():
    points, _ = blobs([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]], per_blob=30, scale=1.0, seed=0)
    graph = active.pool_graph(points, k=5)  # far apart: three separate components
    labels = np.full(90, -1, np.int32)
    labels[:3] = 2  # only the first blob has labels
    probs = np.asarray(active.spread(graph, labels, num_classes=4))
    assert (probs[:30].argmax(axis=1) == 2).all()
    np.testing.assert_allclose(probs[30:], 0.25, atol=1e-6)
    no_labels = np.asarray(active.spread(graph, np.full(90, -1), num_classes=4))
    np.testing.assert_allclose(no_labels, 0.25, atol=1e-6)


def test_normalise_makes_rows_probabilities():
    probs = np.asarray(active.normalise(np.array([[2.0, 2.0, 0.0], [0.0, 0.0, 0.0], [-1, 3, 0]])))
    np.testing.assert_allclose(probs[0], [0.5, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(probs[1], [1 / 3] * 3, atol=1e-6)
    np.testing.assert_allclose(probs[2], [0.0, 1.0, 0.0], atol=1e-6)  # negatives clipped to 0


# --- uncertainty ---------------------------------------------------------------------------


@pytest.mark.parametrize("rule", active.UNCERTAINTY)
def test_uncertainty_is_highest_for_the_most_even_rows(rule):
    probs = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.7, 0.3, 0.0], [1.0, 0.0, 0.0]])
    scores = np.asarray(active.uncertainty(probs, rule))
    # most unsure first: [0.5, 0.5], then [0.7, 0.3], [0.9, 0.1], [1, 0]
    np.testing.assert_array_equal(np.argsort(-scores), [1, 2, 0, 3])


def test_uncertainty_values():
    probs = np.array([[0.6, 0.3, 0.1]])
    np.testing.assert_allclose(active.uncertainty(probs, "least_confidence"), [0.4], rtol=1e-5)
    np.testing.assert_allclose(active.uncertainty(probs, "margin"), [-0.3], rtol=1e-5)
    entropy = -(0.6 * np.log(0.6) + 0.3 * np.log(0.3) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(active.uncertainty(probs, "entropy"), [entropy], rtol=1e-5)
    with pytest.raises(ValueError, match="rule must be one of"):
        active.uncertainty(probs, "random")


@pytest.mark.parametrize("strategy", active.UNCERTAINTY + ("kmeans",))
def test_uncertainty_sampling_asks_near_the_boundary(strategy):
    x, features, labels = line(101)
    graph = active.pool_graph(features, k=4)
    probs = np.asarray(active.spread(graph, labels, num_classes=2))
    labeled = labels >= 0
    picked = active.select(strategy, probs, features, labeled, 6, np.random.default_rng(0))
    assert len(picked) == 6 and not labeled[picked].any()
    distance = np.abs(x - 0.5)
    assert distance[picked].max() < 0.1  # all in the middle band of the line
    assert distance[picked].max() < np.median(distance[~labeled])


# --- select --------------------------------------------------------------------------------


def test_random_never_asks_twice_or_about_labelled_images():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labeled = rng.random(50) < 0.5
        n = int(rng.integers(1, (~labeled).sum() + 1))
        picked = active.select("random", None, None, labeled, n, rng)
        assert len(picked) == n and len(set(picked.tolist())) == n
        assert not labeled[picked].any()
    labeled = np.zeros(10, bool)
    labeled[3:] = True
    picked = active.select("random", None, None, labeled, 3, rng)  # every unlabelled image
    assert sorted(picked.tolist()) == [0, 1, 2]


def test_kmeans_cold_start_picks_one_point_per_cluster():
    centres = [[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]]
    points, cluster = blobs(centres, per_blob=25, scale=1.0, seed=0)
    for seed in range(3):
        picked = active.select(
            "kmeans", None, points, np.zeros(100, bool), 4, np.random.default_rng(seed)
        )
        assert sorted(cluster[picked].tolist()) == [0, 1, 2, 3]


def test_typical_points_are_near_the_cluster_centres():
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    points, cluster = blobs(centres, per_blob=30, scale=1.0, seed=2)
    picked = active.typical_points(points, np.arange(90), 3, seed=0)
    assert sorted(cluster[picked].tolist()) == [0, 1, 2]
    # each is among the 5 points of its blob closest to the blob's mean
    for i in picked:
        members = np.flatnonzero(cluster == cluster[i])
        mean = points[members].mean(axis=0)
        closest = members[np.argsort(((points[members] - mean) ** 2).sum(1))[:5]]
        assert i in closest


@pytest.mark.parametrize("strategy", active.UNCERTAINTY)
def test_first_batch_of_an_uncertainty_strategy_is_random_but_valid(strategy):
    _, features, _ = line(101)
    nothing = np.zeros(101, bool)
    uniform = np.full((101, 2), 0.5)
    first = active.select(strategy, uniform, features, nothing, 10, np.random.default_rng(0))
    assert len(set(first.tolist())) == 10 and ((first >= 0) & (first < 101)).all()
    # the same draw as "random" with the same generator state
    again = active.select("random", None, features, nothing, 10, np.random.default_rng(0))
    np.testing.assert_array_equal(first, again)
    # and no probabilities are needed for it
    active.select(strategy, None, features, nothing, 10, np.random.default_rng(0))


# --- bad input -----------------------------------------------------------------------------


def test_bad_input_is_a_clear_error():
    rng = np.random.default_rng(0)
    labeled = np.zeros(10, bool)
    labeled[:7] = True
    with pytest.raises(ValueError, match=r"strategy must be one of .*'random'.*'kmeans'"):
        active.select("uncertain", None, None, labeled, 1, rng)
    with pytest.raises(ValueError, match="cannot ask about 4 images: 3 are unlabelled"):
        active.select("random", None, None, labeled, 4, rng)
    with pytest.raises(ValueError, match="cannot ask about 0 images"):
        active.select("random", None, None, labeled, 0, rng)
    with pytest.raises(ValueError, match=r"N > k=10, got shape \(10, 2\)"):
        active.pool_graph(np.zeros((10, 2)), k=10)
    with pytest.raises(ValueError, match=r"must be \[N, D\]"):
        active.pool_graph(np.zeros(50), k=3)
    graph = active.pool_graph(np.random.default_rng(0).normal(size=(20, 2)), k=3)
    with pytest.raises(ValueError, match=r"one entry per pool image \(20\)"):
        active.spread(graph, np.full(19, -1))
