"""The annotation lab: its recipe, the rounds of asking and refitting, and pseudo-labels.

The rounds run on a small synthetic pool (ten Gaussian blobs, one per digit); one ``slow`` test
checks the real pool built from the shipped mnist10k.
"""

import numpy as np
import pytest
from course_lib import active, annotation


def blob_points(per_class, seed):
    """Points in 5-D around ten far-apart centres, one per class, and their labels."""
    centres = 20.0 * np.eye(10, 5) + 20.0 * np.eye(10, 5, k=-5)  # ten distinct corners
    centres[5:] *= -1
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class).astype(np.int32)
    points = centres[labels] + rng.normal(size=(len(labels), 5))
    return points.astype(np.float32), labels


def unique_images(n, offset=0):
    """``n`` small uint8 images, each different (its index written into its pixels)."""
    index = np.arange(offset, offset + n, dtype=np.int64)
    return index.view(np.uint8).reshape(n, 8)[:, :4].reshape(n, 2, 2).copy()


@pytest.fixture(scope="module")
def pool():
    features, labels = blob_points(30, seed=0)
    test_features, test_labels = blob_points(5, seed=1)
    order = np.random.default_rng(2).permutation(len(labels))  # classes not in index order
    features, labels = features[order], labels[order]
    k = 6
    return annotation.Pool(
        images=unique_images(len(labels)),
        hidden_labels=labels,
        features=features,
        embed=lambda x: np.zeros((len(x), 5), np.float32),
        graph=active.pool_graph(features, k),
        test_images=unique_images(len(test_labels), offset=10_000),
        test_labels=test_labels,
        test_features=test_features,
        test_neighbours=np.asarray(active.nearest(test_features, features, k)),
        feature_seconds=0.0,
    )


# --- the recipe ----------------------------------------------------------------------------


def test_recipe_rejects_what_the_lab_cannot_run():
    assert annotation.AnnotationRecipe().strategy in active.STRATEGIES
    with pytest.raises(ValueError, match=r"features must be one of \('pca', 'vae', 'pixels'\)"):
        annotation.AnnotationRecipe(features="sift")
    with pytest.raises(ValueError, match=r"strategy must be one of .*'margin'"):
        annotation.AnnotationRecipe(strategy="greedy")
    with pytest.raises(ValueError, match="at least 1 label, got budget=0, batch=20"):
        annotation.AnnotationRecipe(budget=0)
    with pytest.raises(ValueError, match="at least 1 label, got budget=200, batch=0"):
        annotation.AnnotationRecipe(batch=0)


# --- Annotation.labels_to_reach ------------------------------------------------------------


def test_labels_to_reach_is_the_first_count_at_or_over_the_target():
    result = annotation.Annotation(
        labels=np.full(10, -1), counts=[20, 40, 60, 80], accuracy=[0.5, 0.9, 0.85, 0.95]
    )
    assert result.labels_to_reach(0.9) == 40  # reached exactly; the later dip does not count
    assert result.labels_to_reach(0.3) == 20
    assert result.labels_to_reach(0.91) == 80
    assert result.labels_to_reach(0.96) is None  # never reached
    assert annotation.Annotation(np.full(3, -1), [], []).labels_to_reach(0.1) is None


# --- pseudo_labels -------------------------------------------------------------------------


def test_pseudo_labels_keep_the_persons_labels_and_add_the_most_confident_guesses():
    labels = np.array([3, -1, -1, 7, -1, -1, -1], np.int32)
    probs = np.array(
        [
            [0.1, 0.9, 0.0],  # labelled 3 by the person: the person wins
            [0.6, 0.4, 0.0],  # confidence 0.6
            [0.0, 0.05, 0.95],  # 0.95
            [0.9, 0.1, 0.0],  # labelled 7 by the person
            [0.2, 0.8, 0.0],  # 0.8
            [0.4, 0.3, 0.3],  # 0.4
            [0.1, 0.0, 0.9],  # 0.9
        ]
    )
    ann = annotation.Annotation(labels, [2], [0.5], probs)
    index, given = annotation.pseudo_labels(ann, 0.6)  # 60 % of 5 unlabelled: the best 3
    assert index.tolist() == [0, 2, 3, 4, 6] and given.tolist() == [3, 2, 7, 1, 2]
    assert given.dtype == np.int32
    index, given = annotation.pseudo_labels(ann, 0.0)
    assert index.tolist() == [0, 3] and given.tolist() == [3, 7]
    index, given = annotation.pseudo_labels(ann, 1.0)
    assert index.tolist() == list(range(7)) and given.tolist() == [3, 0, 2, 7, 1, 0, 2]
    for share in (-0.1, 1.5):
        with pytest.raises(ValueError, match="share must be between 0 and 1"):
            annotation.pseudo_labels(ann, share)


# --- annotate on a synthetic pool ----------------------------------------------------------


@pytest.mark.parametrize("strategy", ["random", "margin", "kmeans"])
@pytest.mark.parametrize(("budget", "batch"), [(60, 20), (50, 15)])
def test_annotate_asks_up_to_the_budget_and_refits_after_each_round(pool, strategy, budget, batch):
    person = pool.simulated_person(error_rate=0.0, seed=0)
    rounds = []

    def on_round(result, asked):
        rounds.append((list(result.counts), np.array(asked)))
        assert (result.labels[asked] == pool.hidden_labels[asked]).all()  # just labelled

    result = annotation.annotate(pool, person, strategy, budget, batch, seed=0, on_round=on_round)
    expected = list(range(batch, budget, batch)) + [budget]
    assert result.counts == expected and len(result.accuracy) == len(expected)
    assert all(0.0 <= a <= 1.0 for a in result.accuracy)
    given = result.labels >= 0
    assert given.sum() == budget and person.seconds == pytest.approx(2.0 * budget)
    np.testing.assert_array_equal(result.labels[given], pool.hidden_labels[given])  # no errors
    assert len(rounds) == len(expected) and [r[0] for r in rounds] == [
        expected[: i + 1] for i in range(len(expected))
    ]
    asked = np.concatenate([r[1] for r in rounds])
    assert len(asked) == budget and len(set(asked.tolist())) == budget  # never asked twice
    assert [len(r[1]) for r in rounds] == np.diff([0, *expected]).tolist()
    assert sorted(asked.tolist()) == np.flatnonzero(given).tolist()
    # the last classifier was fitted on the person's labels
    np.testing.assert_allclose(result.probs, np.asarray(active.spread(pool.graph, result.labels)))
    assert result.accuracy[-1] == pool.test_accuracy(result.probs)
    assert result.accuracy[-1] >= 0.9  # ten well-separated blobs


def test_annotate_uses_what_the_person_says_even_when_wrong(pool):
    class Contrarian:
        seconds = 0.0

        def label(self, images, progress=""):
            assert progress.startswith("已标注 ")
            return np.full(len(images), 9, np.int32)

    # "kmeans" asks about one image of each blob first, so the labels reach every blob
    result = annotation.annotate(pool, Contrarian(), "kmeans", 30, 10, seed=1)
    assert (result.labels[result.labels >= 0] == 9).all()
    assert (np.asarray(result.probs).argmax(axis=1) == 9).all()
    assert result.accuracy[-1] == pytest.approx(np.mean(pool.test_labels == 9))


def test_annotate_is_reproducible_and_learning_curves_cover_each_strategy(pool):
    a = annotation.annotate(pool, pool.simulated_person(0.1, 3), "entropy", 40, 10, seed=3)
    b = annotation.annotate(pool, pool.simulated_person(0.1, 3), "entropy", 40, 10, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.accuracy == b.accuracy
    curves = annotation.learning_curves(pool, ["random", "margin"], [0, 1], 30, 10, 0.0)
    assert sorted(curves) == ["margin", "random"]
    assert all(
        len(runs) == 2 and all(r.counts == [10, 20, 30] for r in runs) for runs in curves.values()
    )
    assert not np.array_equal(curves["random"][0].labels, curves["random"][1].labels)


# --- the real pool -------------------------------------------------------------------------


@pytest.mark.slow
def test_real_pool_features_and_spreading_with_every_label():
    recipe = annotation.AnnotationRecipe()
    pool = annotation.prepare_pool(recipe)
    assert pool.images.shape == (8000, 28, 28) and pool.images.dtype == np.uint8
    assert pool.features.shape == (8000, 50) and pool.graph.num_nodes == 8000
    assert pool.test_images.shape == (2000, 28, 28) and pool.test_neighbours.shape == (2000, 10)
    assert set(np.unique(pool.hidden_labels).tolist()) == set(range(10))
    assert pool.feature_seconds > 0
    np.testing.assert_allclose(pool.embed(pool.images[:5]), pool.features[:5], rtol=1e-4, atol=1e-4)
    # every hidden label given: the ceiling of label spreading on 50 PCA features with k=10.
    # Measured 0.9365 (PCA and the graph are deterministic); the bar leaves a little room.
    every = pool.test_accuracy(np.asarray(active.spread(pool.graph, pool.hidden_labels)))
    assert every >= 0.93, every
    # the simulated person knows every image of the pool
    person = pool.simulated_person(error_rate=0.0)
    np.testing.assert_array_equal(person.label(pool.images[:100]), pool.hidden_labels[:100])
