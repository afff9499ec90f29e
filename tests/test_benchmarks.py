"""The speed benchmark compares like with like: the PyTorch models in benchmarks/ have the same
parameters as course_lib's and, with the same weights and inputs, compute the same losses (the
VAE also after one Adam step each). Correctness only: no timings are asserted here."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the benchmark's extra: pip install -e '.[bench]'")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed

from benchmarks import jax_models as jm  # noqa: E402
from benchmarks import run as bench  # noqa: E402
from benchmarks import torch_models as tm  # noqa: E402

pytestmark = pytest.mark.slow  # the benchmark's code, not course_lib: out of the inner loop


def jax_param_shapes(*modules):
    leaves = jax.tree.leaves(nnx.state(modules, nnx.Param))
    return sorted(tuple(p.shape) for p in leaves)


def torch_param_shapes(*modules):
    return sorted(s for m in modules for s in tm.trainable_shapes(m))


def canonical(shapes):
    """Shapes up to the order of their axes (PyTorch stores kernels transposed)."""
    return sorted(tuple(sorted(s)) for s in shapes)


def test_vae_same_parameters_and_same_losses_over_two_steps():
    graphdef, state, step = jm.create_vae(seed=0)
    model, _ = nnx.merge(graphdef, state)
    tvae = tm.VAE()
    assert canonical(jax_param_shapes(model)) == canonical(torch_param_shapes(tvae))
    tm.load_vae_from_jax(tvae, model)
    tstep = tm.make_vae_step(tvae)

    (x,) = bench.make_batches("vae", 1)[0]
    keys = jax.random.split(jax.random.key(5), 2)
    for key in keys:
        # vae.reparameterize draws eps ~ N(0, I) of the latent shape from the step's key
        eps = np.array(jax.random.normal(key, (x.shape[0], 20)))
        state, metrics = step(state, (jnp.asarray(x),), key)
        torch_loss = tstep(torch.from_numpy(np.array(x)), torch.from_numpy(eps))
        np.testing.assert_allclose(torch_loss.item(), float(metrics["loss"]), rtol=2e-5)


def test_dcgan_same_parameters_and_same_function():
    graphdef, state, _ = jm.create_dcgan(seed=0)
    dcgan = nnx.merge(graphdef, state)
    g, d = dcgan.g, dcgan.d
    tg, td = tm.Generator(), tm.Discriminator()
    assert canonical(jax_param_shapes(g)) == canonical(torch_param_shapes(tg))
    assert canonical(jax_param_shapes(d)) == canonical(torch_param_shapes(td))
    tm.load_dcgan_from_jax(tg, td, g, d)
    z = np.random.default_rng(0).standard_normal((4, jm.LATENT)).astype(np.float32)
    fake = g(jnp.asarray(z))  # training mode: BatchNorm with batch statistics on both sides
    np.testing.assert_allclose(
        tg(torch.from_numpy(z)).detach().numpy(), np.asarray(fake), rtol=1e-4, atol=1e-5
    )
    d.eval()  # dropout off, so both compute the same deterministic logits
    td.eval()
    images = np.asarray(fake)
    np.testing.assert_allclose(
        td(torch.from_numpy(images)).detach().numpy(), np.asarray(d(fake)), rtol=1e-4, atol=1e-5
    )


def test_dcgan_step_is_course_libs_gan_step():
    """One step through gan.make_train_step runs and returns the usual metrics."""
    _, state, step = jm.create_dcgan(seed=0)
    x, y = bench.make_batches("dcgan_b64", 1)[0]
    _, metrics = step(state, (jnp.asarray(x[:8]), jnp.asarray(y[:8])), jax.random.key(0))
    assert set(metrics) >= {"d_loss", "g_loss"}
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_char_lstm_same_parameters_and_same_loss():
    vocab = bench.vocab_size()
    graphdef, state, _ = jm.create_char_lstm(vocab, seed=0)
    model, _ = nnx.merge(graphdef, state)
    tlm = tm.CharLM(vocab)
    assert canonical(jax_param_shapes(model)) == canonical(torch_param_shapes(tlm))
    tm.load_lm_from_jax(tlm, model)
    inputs, targets = (a[:4, :20] for a in bench.make_batches("char_lstm", 1)[0])
    logits = model(jnp.asarray(inputs))
    tlogits = tlm(torch.from_numpy(inputs.astype(np.int64)))
    np.testing.assert_allclose(tlogits.detach().numpy(), np.asarray(logits), rtol=1e-4, atol=1e-4)


def test_flop_counts_are_positive_and_scale_with_batch():
    assert bench.step_flops("dcgan_b256") == pytest.approx(4 * bench.step_flops("dcgan_b64"))
    assert bench.step_flops("vae") > 0
