"""Small pure evaluation functions for the three models and their baselines.

Which workbook chapter teaches what:

- VAE (chapter 5, ``05a_vae_in_practice``): :func:`bits_per_dim` of the test negative ELBO.
- GAN (chapter 5, ``05b_gan_in_practice``): :func:`frechet_distance` between Gaussians fitted to
  two feature sets; FD-LeNet applies it to the features of a small classifier
  (``course_lib.fd_lenet``).
- Forecast (chapter 5, ``05c_rnn_in_practice``): :func:`rmse` and the baseline a forecaster must
  beat, :func:`seasonal_naive_forecast`. (The language model's baseline, Kneser-Ney, lives in
  ``course_lib.ngram``.)

Every function accepts numpy or jax arrays and returns Python floats or numpy arrays.
"""

from __future__ import annotations

import math

import numpy as np

LN2 = math.log(2.0)


def bits_per_dim(neg_elbo_nats: float, dims: int) -> float:
    """Convert a negative ELBO in nats per example into bits per dimension.

    ``bits/dim = nats / (dims * ln 2)``; e.g. 94 nats on 784 MNIST pixels is 0.173 bits/dim.
    Taught in chapter 5 (05a_vae_in_practice).
    """
    dims = int(dims)
    if dims <= 0:
        raise ValueError(f"dims must be the positive number of data dimensions (784), got {dims}")
    return float(neg_elbo_nats) / (dims * LN2)


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
