"""Fast layers: a transposed convolution that never multiplies the zeros it upsamples with.

Used by the DCGAN of the speed benchmark (``benchmarks/``), whose results the practice chapters
(5.2) quote. A stride-s transposed convolution is, by definition, a stride-1 convolution
of the input *dilated* with s - 1 zeros between pixels. XLA on CPU computes it literally that way,
so at stride 2 three quarters of its multiplications are by zero, and its weight gradient is far
slower still (about 850 ms for the DCGAN's 128 -> 64 layer at batch 256 on a 2-core CPU).

The sub-pixel (phase) decomposition computes the same function without the zeros: output
pixel ``y[s*q + r]`` only ever meets kernel taps ``t`` with ``t = pad_a - r (mod s)``, and then
reads input pixel ``x[q + (r + t - pad_a) / s]``. So every output phase ``r`` is a small stride-1
correlation of the *undilated* input; stacking the s*s phases as output channels and interleaving
them (depth-to-space, Shi et al. 2016) gives the full-resolution output. The patches of all phases
together are gathered once (im2col) and multiplied by one re-arranged kernel in a single dense
matmul, the operation XLA:CPU does best; its gradients are again dense matmuls.

``ConvTranspose`` has exactly the parameters of ``flax.nnx.ConvTranspose`` (``kernel`` of shape
``[kh, kw, in, out]`` and ``bias``), the same initialisation and the same output as
``jax.lax.conv_transpose`` with ``transpose_kernel=False``; tests/test_layers.py checks values and
gradients against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Padding = str | Sequence[tuple[int, int]]
# nnx.ConvTranspose's defaults
DEFAULT_KERNEL_INIT = nnx.initializers.lecun_normal()
DEFAULT_BIAS_INIT = nnx.initializers.zeros_init()


def transpose_padding(k: int, s: int, padding) -> tuple[int, int]:
    """Padding (before, after) of the dilated input for one spatial dimension, as
    ``jax.lax.conv_transpose`` computes it from 'SAME' or 'VALID'; an explicit (lo, hi) pair is
    used as it is."""
    if padding == "SAME":
        pad_len = k + s - 2
        pad_a = k - 1 if s > k - 1 else math.ceil(pad_len / 2)
    elif padding == "VALID":
        pad_len = k + s - 2 + max(k - s, 0)
        pad_a = k - 1
    else:  # explicit pairs pad the dilated input directly (lax's default, as in nnx)
        pad_a, pad_b = padding
        return int(pad_a), int(pad_b)
    return pad_a, pad_len - pad_a


def _phase_plan(n: int, k: int, s: int, padding):
    """For one spatial dimension: output length, phases per output, offsets and tap table.

    Returns ``(out_len, q_len, d_min, taps)`` where ``taps[j, r]`` is the kernel tap that input
    offset ``d_min + j`` meets in output phase ``r``, or ``k`` (a zero tap) when none does.
    """
    pad_a, pad_b = transpose_padding(k, s, padding)
    out_len = (n - 1) * s + 1 + pad_a + pad_b - k + 1
    if out_len <= 0:
        raise ValueError(f"transposed convolution output would be empty (length {out_len})")
    q_len = -(-out_len // s)
    pairs = [
        (r, t, (r + t - pad_a) // s) for r in range(s) for t in range(k) if (r + t - pad_a) % s == 0
    ]
    offsets = [d for _, _, d in pairs]
    d_min, d_max = min(offsets), max(offsets)
    taps = np.full((d_max - d_min + 1, s), k, dtype=np.int32)
    for r, t, d in pairs:
        taps[d - d_min, r] = t
    return out_len, q_len, d_min, taps


METHODS = ("phase_dot", "phase_conv", "dilated")


def choose_method(strides: Sequence[int], out_features: int) -> str:
    """The formulation measured fastest on CPU (benchmarks/results.md): phases gathered into one
    matmul for strided layers; the plain convolution at stride 1 (no zeros to skip there) and
    when the output has few channels (the patches would be far larger than the output)."""
    if all(s == 1 for s in strides) or out_features < 8:
        return "dilated"
    return "phase_dot"


def conv_transpose(
    x, kernel, strides: Sequence[int] = (1, 1), padding: Padding = "SAME", method: str = "auto"
):
    """``jax.lax.conv_transpose(x, kernel, strides, padding)`` (NHWC, HWIO, transpose_kernel=False)
    for x [B, H, W, C_in] and kernel [kh, kw, C_in, out].

    ``method``: "phase_dot" gathers the patches of all s*s output phases (im2col) and multiplies
    them by the re-arranged kernel in one matmul; "phase_conv" does the same product as one
    stride-1 convolution; "dilated" is ``jax.lax.conv_transpose`` itself; "auto" picks by
    :func:`choose_method`. All compute the same function.
    """
    if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
        raise ValueError(
            f"expected x [B, H, W, C] and kernel [kh, kw, C, out], got {x.shape} and {kernel.shape}"
        )
    b, h, w, cin = x.shape
    kh, kw, _, cout = kernel.shape
    sh, sw = strides
    if method == "auto":
        method = choose_method(strides, cout)
    if method not in METHODS:
        raise ValueError(f"method must be 'auto' or one of {METHODS}, got {method!r}")
    if method == "dilated":
        return jax.lax.conv_transpose(
            x, kernel, (sh, sw), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    if isinstance(padding, str):
        pad_h = pad_w = padding.upper()
    else:
        pad_h, pad_w = tuple(padding[0]), tuple(padding[1])
    out_h, qh, dh0, taps_h = _phase_plan(h, kh, sh, pad_h)
    out_w, qw, dw0, taps_w = _phase_plan(w, kw, sw, pad_w)
    nh, nw = taps_h.shape[0], taps_w.shape[0]

    # the kernel of all phases: [nh, nw, C_in, sh, sw, out], zero where a phase has no tap
    padded_kernel = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    phase_kernel = padded_kernel[taps_h[:, None, :, None], taps_w[None, :, None, :]]
    # [nh, nw, sh, sw, C_in, out] -> [nh * nw * C_in, sh * sw * out]
    phase_kernel = phase_kernel.transpose(0, 1, 4, 2, 3, 5).reshape(nh * nw * cin, sh * sw * cout)

    # input rows q + dh0 + j for q < qh, j < nh: pad (or crop) so that index 0 is row dh0
    def span(n, d0, q_len, taps):
        lo, hi = -d0, q_len - 1 + d0 + taps.shape[0] - 1 - (n - 1)
        return (max(lo, 0), max(hi, 0)), max(-lo, 0)

    (ph, start_h), (pw, start_w) = span(h, dh0, qh, taps_h), span(w, dw0, qw, taps_w)
    xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    xp = xp[:, start_h : start_h + qh + nh - 1, start_w : start_w + qw + nw - 1, :]
    phase_kernel = phase_kernel.astype(x.dtype)
    if method == "phase_dot":
        patches = jnp.concatenate(
            [xp[:, i : i + qh, j : j + qw, :] for i in range(nh) for j in range(nw)], axis=-1
        )
        y = patches.reshape(b * qh * qw, nh * nw * cin) @ phase_kernel
    else:
        y = jax.lax.conv_general_dilated(
            xp,
            phase_kernel.reshape(nh, nw, cin, sh * sw * cout),
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    y = y.reshape(b, qh, qw, sh, sw, cout).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, qh * sh, qw * sw, cout)[:, :out_h, :out_w, :]


class ConvTranspose(nnx.Module):
    """Drop-in for ``nnx.ConvTranspose`` on 2-D NHWC inputs (no kernel dilation, no grouping):
    the same ``kernel`` [kh, kw, in, out] and ``bias`` parameters, initialisation and output,
    computed by :func:`conv_transpose`."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        *,
        padding: Padding = "SAME",
        use_bias: bool = True,
        method: str = "auto",
        dtype=None,
        param_dtype=jnp.float32,
        kernel_init=DEFAULT_KERNEL_INIT,
        bias_init=DEFAULT_BIAS_INIT,
        rngs: nnx.Rngs,
    ):
        as_pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        self.kernel_size, self.strides = as_pair(kernel_size), as_pair(strides)
        self.padding = padding if isinstance(padding, str) else tuple(map(tuple, padding))
        self.dtype = dtype
        self.method = method
        shape = (*self.kernel_size, in_features, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias = (
            nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None
        )

    def __call__(self, x):
        dtype = self.dtype or x.dtype
        y = conv_transpose(
            x.astype(dtype),
            self.kernel[...].astype(dtype),
            self.strides,
            self.padding,
            self.method,
        )
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y
