"""Tests for course_lib.metrics: bits per dimension, Fréchet distance and forecasts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from course_lib import metrics


def test_bits_per_dim_converts_nats():
    assert metrics.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert metrics.bits_per_dim(94.0, 784) == pytest.approx(94.0 / (784 * math.log(2)))
    with pytest.raises(ValueError, match="dims"):
        metrics.bits_per_dim(94.0, 0)


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
