"""Tests for course_lib.metrics: bits, Kneser-Ney, Fréchet distance, FD-LeNet and forecasts."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
from course_lib import data, metrics

# --- VAE and language-model units ------------------------------------------------------------


def test_bits_per_dim_converts_nats():
    assert metrics.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert metrics.bits_per_dim(94.0, 784) == pytest.approx(94.0 / (784 * math.log(2)))
    with pytest.raises(ValueError, match="dims"):
        metrics.bits_per_dim(94.0, 0)


def test_bits_per_char_and_perplexity_agree():
    vocab, n = 3600, 250
    total = n * math.log(vocab)  # a uniform model's summed cross-entropy
    assert metrics.bits_per_char(total, n) == pytest.approx(math.log2(vocab))
    assert metrics.perplexity(total, n) == pytest.approx(vocab)
    for total in (0.0, 17.3, 1234.5):
        bpc = metrics.bits_per_char(total, 100)
        assert metrics.perplexity(total, 100) == pytest.approx(2**bpc)
    with pytest.raises(ValueError, match="n_tokens"):
        metrics.perplexity(1.0, 0)


# --- Kneser-Ney -------------------------------------------------------------------------------

SMALL = [np.array(s) for s in ([2, 3, 4, 2, 3, 1], [3, 4, 4, 2, 1], [2, 2, 3, 1], [4, 3, 1])]
BOS, V = 0, 7  # ids 5 and 6 never occur: they stand in for unknown characters


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", [None, 0.3, 1.0])
def test_kneser_ney_normalises_for_every_context(order, discount):
    lm = metrics.KneserNeyLM(order=order, discount=discount).fit(SMALL, V, BOS)
    contexts = [(), (BOS,), (BOS, BOS), (BOS, BOS, BOS)]
    contexts += [(a, b) for a in range(V) for b in range(V)]  # seen and unseen alike
    contexts += [(BOS, 2, 3), (4, 4, 2), (6, 5, 6)]
    for ctx in contexts:
        p = lm.next_token_probs(ctx)
        assert p.shape == (V,)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert p.min() > 0  # every id, unseen ones included
    # The per-token scoring path agrees: a one-token sequence is predicted after BOS padding.
    start = lm.next_token_probs(())
    for w in range(V):
        assert 2 ** lm.log2_prob_sequences([np.array([w])]) == pytest.approx(start[w], rel=1e-12)


def test_kneser_ney_scores_match_the_full_distribution():
    lm = metrics.KneserNeyLM(order=3).fit(SMALL, V, BOS)
    seq = np.array([2, 3, 4, 6, 2, 1])
    expected = sum(math.log2(lm.next_token_probs(seq[:i])[w]) for i, w in enumerate(seq.tolist()))
    assert lm.log2_prob_sequences([seq]) == pytest.approx(expected, rel=1e-12)
    assert lm.bits_per_token([seq, seq]) == pytest.approx(-expected / len(seq), rel=1e-12)


def test_kneser_ney_matches_hand_computed_bigram():
    # Corpus "a b a b" then EOS, ids a=1 b=2 eos=3, BOS=0, vocab 4, fixed discount 0.5.
    lm = metrics.KneserNeyLM(order=2, discount=0.5).fit([np.array([1, 2, 1, 2, 3])], 4, 0)
    # Unigram level uses continuation counts: distinct left neighbours of a: {BOS, b} -> 2,
    # of b: {a} -> 1, of eos: {b} -> 1; total 4 over 3 types.
    uni = {w: (max(c - 0.5, 0) + 0.5 * 3 * 0.25) / 4 for w, c in {0: 0, 1: 2, 2: 1, 3: 1}.items()}
    # After "a": b twice (raw counts), one type.
    p_b_after_a = (2 - 0.5 + 0.5 * 1 * uni[2]) / 2
    p_a_after_a = (0 + 0.5 * 1 * uni[1]) / 2
    probs = lm.next_token_probs([1])
    assert probs[2] == pytest.approx(p_b_after_a)
    assert probs[1] == pytest.approx(p_a_after_a)
    # An unseen context ("eos") falls through to the unigram level unchanged.
    np.testing.assert_allclose(lm.next_token_probs([3]), [uni[w] for w in range(4)])


def test_kneser_ney_estimates_discounts_from_counts_of_counts():
    lm = metrics.KneserNeyLM(order=2).fit(SMALL, V, BOS)
    bigrams = Counter()
    for s in SMALL:
        padded = [BOS, *s.tolist()]
        bigrams.update(zip(padded[:-1], padded[1:], strict=True))
    n1 = sum(c == 1 for c in bigrams.values())
    n2 = sum(c == 2 for c in bigrams.values())
    assert lm.discounts[1] == pytest.approx(n1 / (n1 + 2 * n2))
    assert all(0 < d <= 1 for d in lm.discounts)


def test_kneser_ney_learns_a_repetitive_corpus():
    vocab = 50
    seqs = [np.array([5, 6, 7, 8, 9] * 4 + [1]) for _ in range(30)]
    lm = metrics.KneserNeyLM(order=3).fit(seqs, vocab, bos_id=0)
    bits = lm.bits_per_token(seqs[:5])
    assert bits < 0.1 * math.log2(vocab)


def _markov_text(rng, n_seq, length, vocab):
    # Each token is followed by one of two fixed successors: strong bigram structure.
    successors = rng.integers(2, vocab, size=(vocab, 2))
    seqs = []
    for _ in range(n_seq):
        tok = int(rng.integers(2, vocab))
        seq = []
        for _ in range(length):
            tok = int(successors[tok, rng.integers(2)])
            seq.append(tok)
        seqs.append(np.array([*seq, 1]))
    return seqs


def test_higher_order_helps_on_bigram_structure():
    rng = np.random.default_rng(0)
    vocab = 40
    seqs = _markov_text(rng, 250, 30, vocab)
    train, held_out = seqs[:200], seqs[200:]
    bits = {
        k: metrics.KneserNeyLM(order=k).fit(train, vocab, 0).bits_per_token(held_out)
        for k in (1, 2, 3)
    }
    assert bits[2] < bits[1] - 2.0  # about 1 bit per token (two equally likely successors)
    assert bits[3] <= bits[2] + 0.05  # no extra structure to find, and little lost


def test_trigram_beats_bigram_on_second_order_structure():
    rng = np.random.default_rng(1)
    vocab = 12
    table = rng.integers(2, vocab, size=(vocab, vocab))  # next token = table[prev2, prev1]
    seqs = []
    for _ in range(300):
        seq = [int(t) for t in rng.integers(2, vocab, size=2)]
        for _ in range(20):
            seq.append(
                int(table[seq[-2], seq[-1]]) if rng.random() < 0.9 else int(rng.integers(2, vocab))
            )
        seqs.append(np.array([*seq, 1]))
    train, held_out = seqs[:250], seqs[250:]
    bits = {
        k: metrics.KneserNeyLM(order=k).fit(train, vocab, 0).bits_per_token(held_out)
        for k in (2, 3)
    }
    assert bits[3] < bits[2] - 1.0


def test_kneser_ney_rejects_bad_input():
    with pytest.raises(ValueError, match="order"):
        metrics.KneserNeyLM(order=0)
    with pytest.raises(ValueError, match="discount"):
        metrics.KneserNeyLM(order=2, discount=1.5)
    with pytest.raises(ValueError, match="empty corpus"):
        metrics.KneserNeyLM().fit([np.array([], np.int32)], 5, 0)
    with pytest.raises(ValueError, match="unknown-character id"):
        metrics.KneserNeyLM().fit([np.array([1, 9])], 5, 0)
    with pytest.raises(ValueError, match="bos_id"):
        metrics.KneserNeyLM().fit([np.array([1, 2])], 5, 5)
    with pytest.raises(ValueError, match="integers"):
        metrics.KneserNeyLM().fit([np.array([1.0, 2.0])], 5, 0)
    with pytest.raises(ValueError, match="list of 1-D"):
        metrics.KneserNeyLM().fit(np.array([1, 2]), 5, 0)
    with pytest.raises(RuntimeError, match="fit"):
        metrics.KneserNeyLM().bits_per_token([np.array([1])])


# --- Fréchet distance -------------------------------------------------------------------------


def _samples_with_moments(rng, mean, cov, n):
    """n samples whose sample mean and unbiased sample covariance are exactly mean and cov."""
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return z @ np.linalg.cholesky(cov).T + mean


def _closed_form(mu1, s1, mu2, s2):
    r1 = scipy.linalg.sqrtm(s1).real
    cross = scipy.linalg.sqrtm(r1 @ s2 @ r1).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * cross))


def test_frechet_distance_is_zero_for_identical_sets():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_closed_form_for_gaussians():
    rng = np.random.default_rng(1)
    d = 6
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    x1 = _samples_with_moments(rng, mu1, s1, 300)
    x2 = _samples_with_moments(rng, mu2, s2, 400)
    assert metrics.frechet_distance(x1, x2) == pytest.approx(_closed_form(mu1, s1, mu2, s2))
    # Diagonal covariances: sum of squared mean gaps plus sum of (sqrt v1 - sqrt v2)^2.
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    m1, m2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    y1 = _samples_with_moments(rng, m1, np.diag(v1), 200)
    y2 = _samples_with_moments(rng, m2, np.diag(v2), 200)
    expected = 5.0 + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)  # 5 + 1 + 0 + 4
    assert metrics.frechet_distance(y1, y2) == pytest.approx(expected)


def test_frechet_distance_is_symmetric_and_sees_a_shift():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 10)) @ rng.normal(size=(10, 10))
    y = rng.standard_t(5, size=(200, 10))
    assert metrics.frechet_distance(x, y) == pytest.approx(metrics.frechet_distance(y, x))
    shift = np.arange(10.0)
    assert metrics.frechet_distance(x, x + shift) == pytest.approx(np.sum(shift**2))


def test_frechet_distance_rejects_bad_features():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="feature dimensions differ"):
        metrics.frechet_distance(x, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.frechet_distance(x, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(x, np.full((10, 3), np.nan))


# --- class coverage ---------------------------------------------------------------------------


def _fake_classifier(labels):
    """Stands in for an FDClassifier: predicts the given labels whatever the images."""
    return SimpleNamespace(predict=lambda images: np.asarray(labels))


def test_class_coverage_uniform_and_collapsed():
    uniform = metrics.class_coverage(None, _fake_classifier(np.repeat(np.arange(10), 7)))
    np.testing.assert_allclose(uniform["histogram"], np.full(10, 0.1))
    assert uniform["class_kl"] == pytest.approx(0.0, abs=1e-12)
    assert uniform["classes_covered"] == 10

    collapsed = metrics.class_coverage(None, _fake_classifier(np.full(50, 3)))
    assert collapsed["class_kl"] == pytest.approx(math.log(10))
    assert collapsed["classes_covered"] == 1
    assert collapsed["histogram"][3] == 1.0


def test_class_coverage_threshold_is_a_quarter_of_uniform():
    # 1000 predictions: class 0 gets 25 (2.5 %, covered), class 1 gets 24 (2.4 %, not covered).
    labels = np.concatenate([np.zeros(25), np.ones(24), np.full(951, 2)]).astype(int)
    cov = metrics.class_coverage(None, _fake_classifier(labels))
    assert cov["classes_covered"] == 2  # classes 0 and 2, not 1
    hist = cov["histogram"]
    nz = hist > 0
    assert cov["class_kl"] == pytest.approx(np.sum(hist[nz] * np.log(10 * hist[nz])))


# --- FD-LeNet on digits -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_classifier():
    # Cached in the session's COURSE_LIB_DATA (a temp dir, see conftest) so later tests reuse it.
    return metrics.fd_classifier("digits", seed=0)


@pytest.fixture(scope="module")
def digits_test():
    test = data.load("digits", "test")
    return test.images.astype(np.float32) / 255.0, np.asarray(test.labels)


def test_lenet_on_digits_is_accurate(digits_classifier, digits_test):
    images, labels = digits_test
    assert digits_classifier.test_accuracy >= 0.95
    acc = np.mean(digits_classifier.predict(images) == labels)
    assert acc == pytest.approx(digits_classifier.test_accuracy)
    feats = digits_classifier.features(images[..., None])  # [N, 8, 8, 1] works as well
    assert feats.shape == (len(images), 128) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats, digits_classifier.features(images))
    assert metrics.fd_classifier("digits", seed=0) is digits_classifier  # memoised


def test_fd_lenet_floor_and_distances(digits_classifier, digits_test):
    images, _ = digits_test
    floor = metrics.fd_lenet_floor("digits", digits_classifier)
    assert floor > 0
    assert metrics.fd_lenet_floor("digits", digits_classifier) == floor  # fixed subsets
    assert metrics.fd_lenet(images, images, digits_classifier) == pytest.approx(0.0, abs=1e-6)
    noise = np.random.default_rng(0).uniform(size=images.shape).astype(np.float32)
    assert metrics.fd_lenet(noise, images, digits_classifier) > 10 * floor
    # Real digits spread over the classes; a class-collapsed set does not.
    labels = digits_classifier.predict(images)
    assert metrics.class_coverage(images, digits_classifier)["classes_covered"] == 10
    ones = images[labels == 1]
    assert metrics.class_coverage(ones, digits_classifier)["classes_covered"] == 1
    with pytest.raises(ValueError, match="between 2 and"):
        metrics.fd_lenet_floor("digits", digits_classifier, n=10**6)


def test_fd_classifier_rejects_bad_images(digits_classifier, digits_test):
    images, _ = digits_test
    with pytest.raises(ValueError, match=r"astype\(np.float32\) / 255"):
        digits_classifier.features((images * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"\[N, 8, 8\]"):
        digits_classifier.features(np.zeros((4, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        digits_classifier.features(images * 2 - 1)
    with pytest.raises(ValueError, match="NaN"):
        digits_classifier.features(np.full((2, 8, 8), np.nan, np.float32))


QUICK = metrics.LeNetTrainConfig(epochs=2, batch_size=50, max_shift=0)


def test_lenet_training_is_deterministic():
    train = data.load("digits", "train")
    _, p1 = metrics.train_lenet(train.images[:500], train.labels[:500], 3, QUICK)
    _, p2 = metrics.train_lenet(train.images[:500], train.labels[:500], 3, QUICK)
    _, p3 = metrics.train_lenet(train.images[:500], train.labels[:500], 4, QUICK)
    flat1, flat2, flat3 = (metrics._flat_params(p) for p in (p1, p2, p3))
    for name in flat1:
        np.testing.assert_array_equal(flat1[name], flat2[name])
    assert any(not np.array_equal(flat1[k], flat3[k]) for k in flat1)


def test_fd_classifier_cache_is_reused_and_corrupt_files_are_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_LIB_DATA", str(tmp_path))
    monkeypatch.setitem(metrics._TRAIN_CONFIGS, "digits", QUICK)
    path = tmp_path / "fd_lenet" / "digits-seed0-v1.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip file")

    with pytest.warns(UserWarning, match="retraining"):
        first = metrics.fd_classifier("digits", seed=0)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left
    assert np.load(path)["version"] == "v1"

    # A fresh process (empty memo) loads the weights from disk instead of training.
    monkeypatch.setattr(metrics, "_CLASSIFIERS", {})

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(metrics, "train_lenet", no_training)
    second = metrics.fd_classifier("digits", seed=0)
    assert second is not first
    assert second.test_accuracy == first.test_accuracy
    images = data.load("digits", "test").images[:50].astype(np.float32) / 255.0
    np.testing.assert_array_equal(second.features(images), first.features(images))


# --- forecast ---------------------------------------------------------------------------------


def test_seasonal_naive_is_exact_on_a_periodic_series():
    t = np.arange(120)
    series = 300 + 3 * np.sin(2 * np.pi * t / 12) + np.cos(2 * np.pi * t / 4)
    history, future = series[:100], series[100:]
    forecast = metrics.seasonal_naive_forecast(history, horizon=20, season=12)
    assert forecast.shape == (20,)
    assert metrics.rmse(forecast, future) == pytest.approx(0.0, abs=1e-9)


def test_seasonal_naive_follows_the_formula():
    history = np.arange(10.0)  # T = 10 observations, y[t] = t
    fc = metrics.seasonal_naive_forecast(history, horizon=7, season=3)
    # y_hat[T-1+h] = y[T-1+h - 3*ceil(h/3)]: the last season 7, 8, 9 repeated.
    np.testing.assert_array_equal(fc, [7, 8, 9, 7, 8, 9, 7])
    with pytest.raises(ValueError, match="full season"):
        metrics.seasonal_naive_forecast(np.arange(5.0), horizon=3, season=12)
    with pytest.raises(ValueError, match="positive"):
        metrics.seasonal_naive_forecast(history, horizon=0)


def test_rmse():
    assert metrics.rmse([1.0, 2.0, 3.0], [1.0, 2.0, 7.0]) == pytest.approx(math.sqrt(16 / 3))
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.rmse(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        metrics.rmse([np.nan], [1.0])
