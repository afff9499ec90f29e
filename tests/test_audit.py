"""Audits: nearest-neighbour distances, ROC AUC, detection accuracy and MIG on known cases."""

import numpy as np
import pytest
from course_lib import audit


def test_nearest_neighbour_distances_match_brute_force():
    rng = np.random.default_rng(0)
    queries, refs = rng.random((37, 4, 5)), rng.random((600, 4, 5))
    brute = np.sqrt(((queries.reshape(37, 1, -1) - refs.reshape(1, 600, -1)) ** 2).sum(-1))
    got = audit.nearest_neighbour_distances(queries, refs, chunk=8)
    np.testing.assert_allclose(got, brute.min(axis=1), rtol=1e-5, atol=1e-5)
    # a copy of a reference is at distance 0: what memorisation looks like
    assert audit.nearest_neighbour_distances(refs[:3], refs).max() < 1e-3
    with pytest.raises(ValueError, match="values per item"):
        audit.nearest_neighbour_distances(queries, rng.random((5, 3)))


def test_roc_auc_is_the_probability_a_member_scores_higher():
    assert audit.roc_auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert audit.roc_auc([0, 1], [2, 3]) == 0.0
    assert audit.roc_auc([1, 1], [1, 1]) == 0.5  # ties count half
    rng = np.random.default_rng(1)
    same = audit.roc_auc(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(same - 0.5) < 0.03
    with pytest.raises(ValueError, match="at least one"):
        audit.roc_auc([], [1.0])


def test_detection_accuracy_separates_different_sets_only():
    rng = np.random.default_rng(2)
    real = rng.random((400, 6, 6))
    assert audit.detection_accuracy(real, rng.random((400, 6, 6))) < 0.6
    assert audit.detection_accuracy(real, rng.random((400, 6, 6)) * 0.5) > 0.95
    with pytest.raises(ValueError, match="test_fraction"):
        audit.detection_accuracy(real, real, test_fraction=1.0)


def test_mig_is_high_when_one_dimension_carries_the_factor():
    rng = np.random.default_rng(3)
    factor = rng.integers(0, 10, 3000)
    noise = rng.normal(size=(3000, 4))
    one = noise.copy()
    one[:, 2] = factor + 0.1 * rng.normal(size=3000)
    spread = noise.copy()
    spread[:, 0] = spread[:, 1] = factor + 0.1 * rng.normal(size=3000)
    good, bad = (
        audit.mutual_information_gap(one, factor),
        audit.mutual_information_gap(spread, factor),
    )
    assert good["mig"] > 0.8 and np.argmax(good["mutual_information"]) == 2
    assert bad["mig"] < 0.1
    with pytest.raises(ValueError, match="D >= 2"):
        audit.mutual_information_gap(noise[:, :1], factor)


def test_step_gflop_counts_a_matmul_and_best_seconds_skips_the_compiling_call():
    import jax

    a, b = np.ones((8, 16), np.float32), np.ones((16, 4), np.float32)
    assert audit.step_gflop(jax.jit(lambda a, b: a @ b), a, b) == 2 * 8 * 16 * 4 / 1e9
    calls = []
    seconds = audit.best_seconds(lambda: calls.append(1) or a, reps=4)
    assert len(calls) == 5 and 0 <= seconds < 1  # one warm-up call, then four timed ones
    assert audit.matmul_gflops(n=64, reps=1) > 0
