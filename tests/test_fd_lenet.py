"""Tests for course_lib.fd_lenet: the LeNet classifier, its disk cache, FD-LeNet and coverage."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from course_lib import data, fd_lenet

# --- class coverage ---------------------------------------------------------------------------


def _fake_classifier(labels):
    """Stands in for an FDClassifier: predicts the given labels whatever the images."""
    return SimpleNamespace(predict=lambda images: np.asarray(labels))


def test_class_coverage_uniform_and_collapsed():
    uniform = fd_lenet.class_coverage(None, _fake_classifier(np.repeat(np.arange(10), 7)))
    np.testing.assert_allclose(uniform["histogram"], np.full(10, 0.1))
    assert uniform["class_kl"] == pytest.approx(0.0, abs=1e-12)
    assert uniform["classes_covered"] == 10

    collapsed = fd_lenet.class_coverage(None, _fake_classifier(np.full(50, 3)))
    assert collapsed["class_kl"] == pytest.approx(math.log(10))
    assert collapsed["classes_covered"] == 1
    assert collapsed["histogram"][3] == 1.0


def test_class_coverage_threshold_is_a_quarter_of_uniform():
    # 1000 predictions: class 0 gets 25 (2.5 %, covered), class 1 gets 24 (2.4 %, not covered).
    labels = np.concatenate([np.zeros(25), np.ones(24), np.full(951, 2)]).astype(int)
    cov = fd_lenet.class_coverage(None, _fake_classifier(labels))
    assert cov["classes_covered"] == 2  # classes 0 and 2, not 1
    hist = cov["histogram"]
    nz = hist > 0
    assert cov["class_kl"] == pytest.approx(np.sum(hist[nz] * np.log(10 * hist[nz])))


# --- FD-LeNet on digits -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_classifier():
    # Cached in the session's COURSE_LIB_DATA (a temp dir, see conftest) so later tests reuse it.
    return fd_lenet.fd_classifier("digits", seed=0)


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
    assert fd_lenet.fd_classifier("digits", seed=0) is digits_classifier  # memoised


def test_fd_lenet_floor_and_distances(digits_classifier, digits_test):
    images, _ = digits_test
    floor = fd_lenet.fd_lenet_floor("digits", digits_classifier)
    assert floor > 0
    assert fd_lenet.fd_lenet_floor("digits", digits_classifier) == floor  # fixed subsets
    assert fd_lenet.fd_lenet(images, images, digits_classifier) == pytest.approx(0.0, abs=1e-6)
    noise = np.random.default_rng(0).uniform(size=images.shape).astype(np.float32)
    assert fd_lenet.fd_lenet(noise, images, digits_classifier) > 10 * floor
    # Real digits spread over the classes; a class-collapsed set does not.
    labels = digits_classifier.predict(images)
    assert fd_lenet.class_coverage(images, digits_classifier)["classes_covered"] == 10
    ones = images[labels == 1]
    assert fd_lenet.class_coverage(ones, digits_classifier)["classes_covered"] == 1
    with pytest.raises(ValueError, match="between 2 and"):
        fd_lenet.fd_lenet_floor("digits", digits_classifier, n=10**6)


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


QUICK = fd_lenet.LeNetTrainConfig(epochs=2, batch_size=50, max_shift=0)


def test_lenet_training_is_deterministic():
    train = data.load("digits", "train")
    _, p1 = fd_lenet.train_lenet(train.images[:500], train.labels[:500], 3, QUICK)
    _, p2 = fd_lenet.train_lenet(train.images[:500], train.labels[:500], 3, QUICK)
    _, p3 = fd_lenet.train_lenet(train.images[:500], train.labels[:500], 4, QUICK)
    flat1, flat2, flat3 = (fd_lenet._flat_params(p) for p in (p1, p2, p3))
    for name in flat1:
        np.testing.assert_array_equal(flat1[name], flat2[name])
    assert any(not np.array_equal(flat1[k], flat3[k]) for k in flat1)


def test_fd_classifier_cache_is_reused_and_corrupt_files_are_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_LIB_DATA", str(tmp_path))
    monkeypatch.setitem(fd_lenet._TRAIN_CONFIGS, "digits", QUICK)
    path = tmp_path / "fd_lenet" / "digits-seed0-v1.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip file")

    with pytest.warns(UserWarning, match="retraining"):
        first = fd_lenet.fd_classifier("digits", seed=0)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left
    assert np.load(path)["version"] == "v1"

    # A fresh process (empty memo) loads the weights from disk instead of training.
    monkeypatch.setattr(fd_lenet, "_CLASSIFIERS", {})

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(fd_lenet, "train_lenet", no_training)
    second = fd_lenet.fd_classifier("digits", seed=0)
    assert second is not first
    assert second.test_accuracy == first.test_accuracy
    images = data.load("digits", "test").images[:50].astype(np.float32) / 255.0
    np.testing.assert_array_equal(second.features(images), first.features(images))


def test_fd_terms_add_up_to_the_frechet_distance():
    class Flatten:  # stands in for the classifier: its "features" are the pixels
        def features(self, images):
            return np.asarray(images, np.float64).reshape(len(images), -1)

    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 2, 2))
    fake = 0.5 * rng.normal(size=(400, 2, 2)) + 1.0  # shifted by 1, half the spread
    terms = fd_lenet.fd_terms(fake, real, Flatten())
    assert terms["mean_term"] + terms["covariance_term"] == pytest.approx(terms["fd_lenet"])
    assert terms["mean_term"] == pytest.approx(4.0, rel=0.15)  # four features, each shifted by 1
    assert terms["total_variance"] == pytest.approx(1.0, rel=0.15)  # 4 x 0.25
    assert terms["real_total_variance"] == pytest.approx(4.0, rel=0.15)
