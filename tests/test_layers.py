"""benchmarks/layers.py's ConvTranspose computes the same function as nnx.ConvTranspose.

Values and gradients (with respect to the input and the kernel) of every formulation are compared
with ``jax.lax.conv_transpose`` on random inputs and weights, for the strides, kernels and paddings
the DCGAN uses and a few others (odd sizes, VALID, explicit padding, stride 3).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks import layers  # noqa: E402

pytestmark = pytest.mark.slow  # the benchmark's code, not course_lib: out of the inner loop

CASES = [
    # (height, width, kernel, stride, in, out, padding)
    (7, 7, 5, 2, 16, 8, ((2, 3), (2, 3))),  # the DCGAN's 7 -> 14 layer, PyTorch alignment
    (14, 14, 5, 2, 8, 1, ((2, 3), (2, 3))),  # 14 -> 28, one output channel
    (7, 7, 5, 1, 12, 6, "SAME"),  # the stride-1 layer
    (7, 7, 5, 2, 6, 4, "SAME"),
    (5, 6, 4, 2, 3, 5, "SAME"),
    (5, 4, 3, 2, 3, 2, "VALID"),
    (4, 5, 3, 3, 2, 3, ((1, 0), (2, 1))),
]


def reference(x, kernel, stride, padding):
    return jax.lax.conv_transpose(
        x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def random_inputs(h, w, k, cin, cout, seed=0):
    kx, kk = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (2, h, w, cin)), jax.random.normal(kk, (k, k, cin, cout)) * 0.2


# "dilated" is lax.conv_transpose itself and "auto" picks one of the two phase methods or it
@pytest.mark.parametrize("method", ["phase_dot", "phase_conv"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_transpose_matches_lax_in_value_and_gradients(case, method):
    h, w, k, s, cin, cout, padding = case
    x, kernel = random_inputs(h, w, k, cin, cout)
    fast = lambda x, kern: layers.conv_transpose(x, kern, (s, s), padding, method)  # noqa: E731
    slow = lambda x, kern: reference(x, kern, s, padding)  # noqa: E731
    np.testing.assert_allclose(fast(x, kernel), slow(x, kernel), rtol=1e-5, atol=1e-5)

    # a fixed random cotangent makes every output element count in the gradients
    cot = jax.random.normal(jax.random.key(7), slow(x, kernel).shape)
    loss = lambda f: lambda x, kern: jnp.sum(f(x, kern) * cot)  # noqa: E731
    gx, gk = jax.grad(loss(fast), argnums=(0, 1))(x, kernel)
    rx, rk = jax.grad(loss(slow), argnums=(0, 1))(x, kernel)
    np.testing.assert_allclose(gx, rx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gk, rk, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride, padding", [(2, "SAME"), (1, "SAME"), (2, ((2, 3), (2, 3)))])
def test_layer_is_a_drop_in_for_nnx_conv_transpose(stride, padding):
    kw = dict(strides=stride, padding=padding)
    fast = layers.ConvTranspose(6, 4, (5, 5), rngs=nnx.Rngs(0), **kw)
    plain = nnx.ConvTranspose(6, 4, (5, 5), rngs=nnx.Rngs(0), **kw)
    # same parameters, shapes and initialisation
    fast_params, plain_params = nnx.state(fast, nnx.Param), nnx.state(plain, nnx.Param)
    assert jax.tree.map(jnp.shape, fast_params) == jax.tree.map(jnp.shape, plain_params)
    np.testing.assert_array_equal(fast.kernel[...], plain.kernel[...])
    plain.bias[...] = fast.bias[...] = jax.random.normal(jax.random.key(3), (4,))
    x = jax.random.normal(jax.random.key(1), (3, 7, 7, 6))
    np.testing.assert_allclose(fast(x), plain(x), rtol=1e-5, atol=1e-5)

    def grads(model):
        return nnx.grad(lambda m, x: jnp.sum(jnp.sin(m(x))), argnums=(0, 1))(model, x)

    (gm_fast, gx_fast), (gm_plain, gx_plain) = grads(fast), grads(plain)
    np.testing.assert_allclose(gx_fast, gx_plain, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        gm_fast["kernel"][...], gm_plain["kernel"][...], rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(gm_fast["bias"][...], gm_plain["bias"][...], rtol=1e-4, atol=1e-4)


def test_conv_transpose_rejects_bad_shapes_and_methods():
    x, kernel = random_inputs(7, 7, 5, 4, 2)
    with pytest.raises(ValueError, match="expected x"):
        layers.conv_transpose(x[0], kernel, (2, 2))
    with pytest.raises(ValueError, match="method"):
        layers.conv_transpose(x, kernel, (2, 2), "SAME", "fft")
