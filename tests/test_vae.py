"""VAE: shapes, the closed-form KL, the negative ELBO, and the jitted train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from course_lib import data, pixels, train, vae
from flax import nnx


def n_params(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.fixture(scope="module")
def images():
    x, _ = data.load("mnist10k", "train")
    return pixels.binarize(x[:512])


def test_mlp_shapes_and_parameter_count():
    cfg = vae.VAEConfig(hidden=(400,), latent_dim=20)
    model = vae.VAE(cfg, rngs=nnx.Rngs(0))
    logits, mean, log_var = nnx.jit(lambda m, x, k: m(x, k))(
        model, jnp.zeros((3, 28, 28)), jax.random.key(0)
    )
    assert logits.shape == (3, 28, 28) and mean.shape == log_var.shape == (3, 20)
    encoder = 784 * 400 + 400 + 2 * (400 * 20 + 20)
    decoder = 20 * 400 + 400 + 400 * 784 + 784
    assert n_params(model) == encoder + decoder


def test_decoder_hidden_builds_the_seed_listing_shape():
    # the seed's 5.2.1 listing: 784 -> 128 -> (20, 20), decoder a single Dense 20 -> 784
    cfg = vae.VAEConfig(hidden=(128,), decoder_hidden=())
    model = vae.VAE(cfg, rngs=nnx.Rngs(0))
    assert n_params(model) == (784 * 128 + 128) + 2 * (128 * 20 + 20) + (20 * 784 + 784)
    assert model.decoder(jnp.zeros((2, 20))).shape == (2, 28, 28)
    asym = vae.VAE(vae.VAEConfig(hidden=(64,), decoder_hidden=(32, 48)), rngs=nnx.Rngs(0))
    assert [layer.kernel.shape for layer in asym.decoder.layers] == [(20, 32), (32, 48)]
    with pytest.raises(ValueError, match="decoder_hidden"):
        vae.VAEConfig(arch="conv", decoder_hidden=())


def test_conv_variant_and_gaussian_decoder_shapes():
    model = vae.VAE(vae.VAEConfig(arch="conv", decoder="gaussian"), rngs=nnx.Rngs(0))
    out, mean, _ = nnx.jit(lambda m, x, k: m(x, k))(
        model, jnp.zeros((2, 28, 28)), jax.random.key(0)
    )
    assert out.shape == (2, 28, 28) and mean.shape == (2, 20)
    loss, parts = nnx.jit(vae.neg_elbo)(model, jnp.full((2, 28, 28), 0.5), jax.random.key(1))
    assert np.isfinite(loss) and np.isfinite(parts["kl"])


def test_reconstruction_terms_are_the_negative_log_likelihoods():
    x = jax.random.uniform(jax.random.key(0), (3, 4, 5))
    mean = jax.random.uniform(jax.random.key(1), (3, 4, 5))
    log_sigma = jax.random.normal(jax.random.key(2), (4, 5)) * 0.5
    want = -jax.scipy.stats.norm.logpdf(x, mean, jnp.exp(log_sigma)).sum(axis=(1, 2))
    np.testing.assert_allclose(vae.gaussian_nll(mean, log_sigma, x), want, rtol=1e-5)
    bits = (x > 0.5).astype(jnp.float32)
    logits = jax.random.normal(jax.random.key(3), (3, 4, 5))
    p = jax.nn.sigmoid(logits)
    want = -jnp.sum(bits * jnp.log(p) + (1 - bits) * jnp.log1p(-p), axis=(1, 2))
    np.testing.assert_allclose(vae.bernoulli_nll(logits, bits), want, rtol=1e-5)


def test_closed_form_kl_matches_monte_carlo():
    mean = jnp.array([[0.5, -1.0, 2.0]])
    log_var = jnp.array([[0.3, -0.7, 0.1]])
    z = vae.reparameterize(
        jax.random.key(0), jnp.repeat(mean, 200_000, 0), jnp.repeat(log_var, 200_000, 0)
    )
    log_q = jax.scipy.stats.norm.logpdf(z, mean, jnp.exp(0.5 * log_var)).sum(-1)
    log_p = jax.scipy.stats.norm.logpdf(z).sum(-1)
    mc = log_q - log_p
    closed = float(vae.kl_to_standard_normal(mean, log_var)[0])
    stderr = float(jnp.std(mc)) / np.sqrt(mc.size)
    assert abs(float(jnp.mean(mc)) - closed) < 4 * stderr
    assert float(vae.kl_to_standard_normal(jnp.zeros((1, 5)), jnp.zeros((1, 5)))[0]) == 0.0


def test_neg_elbo_is_recon_plus_kl_and_beta_weights_only_the_loss():
    model = vae.VAE(vae.VAEConfig(hidden=(64,)), rngs=nnx.Rngs(0))
    x = (jax.random.uniform(jax.random.key(1), (4, 28, 28)) > 0.5).astype(jnp.float32)
    neg_elbo = nnx.jit(vae.neg_elbo, static_argnums=3)
    loss1, m1 = neg_elbo(model, x, jax.random.key(2), 1.0)
    loss4, m4 = neg_elbo(model, x, jax.random.key(2), 4.0)
    np.testing.assert_allclose(m1["neg_elbo"], m1["recon"] + m1["kl"], rtol=1e-6)
    np.testing.assert_allclose(loss1, m1["neg_elbo"], rtol=1e-6)
    np.testing.assert_allclose(loss4, m4["recon"] + 4 * m4["kl"], rtol=1e-6)
    assert m4["neg_elbo"] == m1["neg_elbo"]


SMALL = vae.VAEConfig(hidden=(128,))


def _train(images, steps, seed=0, cfg=SMALL):
    graphdef, state = vae.create(cfg, seed)
    step = train.make_train_step(graphdef, vae.loss)
    res = train.fit(
        step,
        state,
        train.epoch_batches((images,), 64, seed),
        key=jax.random.key(seed),
        steps=steps,
        log_every=10,
        progress=False,
    )
    return graphdef, step, res


def test_loss_decreases_compiles_once_and_is_deterministic(images):
    _, step, res = _train(images, 40)
    losses = [r["loss"] for r in res.history["train"]]
    assert losses[-1] < 0.8 * losses[0]
    assert step._cache_size() == 1  # one trace for 40 steps: no retrace
    *_, again = _train(images, 40)
    assert again.history == res.history
    for a, b in zip(jax.tree.leaves(res.state), jax.tree.leaves(again.state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_image_shape_or_dtype_gets_a_clear_error(images):
    graphdef, state = vae.create(vae.VAEConfig(hidden=(32,)), 0)
    step = train.make_train_step(graphdef, vae.loss)
    with pytest.raises(ValueError, match="reshape"):
        step(state, (jnp.zeros((8, 784)),), jax.random.key(0))
    with pytest.raises(ValueError, match="binarize"):
        step(state, (jnp.zeros((8, 28, 28), jnp.uint8),), jax.random.key(0))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="decoder"):
        vae.VAEConfig(decoder="laplace")
    with pytest.raises(ValueError, match="28x28"):
        vae.VAEConfig(arch="conv", image_shape=(8, 8))


@pytest.mark.parametrize(
    "cfg",
    [
        vae.VAEConfig(arch="conv"),
        vae.VAEConfig(hidden=(128,), dtype="bfloat16"),
        vae.VAEConfig(hidden=(128,), decoder="gaussian"),
    ],
    ids=["conv", "bfloat16", "gaussian"],
)
def test_every_variant_trains(images, cfg):
    """Not only constructed: each variant's loss falls within a few dozen steps."""
    x = images if cfg.decoder == "bernoulli" else images * 0.9 + 0.05  # pixels inside (0, 1)
    graphdef, _, res = _train(x, 40, cfg=cfg)
    losses = [r["loss"] for r in res.history["train"]]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    params = jax.tree.leaves(nnx.state(nnx.merge(graphdef, res.state)[0], nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)  # bf16 compute keeps float32 parameters


def test_eval_fn_counts_every_image_including_a_partial_batch(images):
    graphdef, state = vae.create(vae.VAEConfig(hidden=(32,), latent_dim=4), 0)
    full = vae.make_eval_fn(graphdef, images[:64], 64)(state)["neg_elbo"]
    blank = np.ones((6, 28, 28), np.float32)  # all-white images: far from any digit
    both = vae.make_eval_fn(graphdef, np.concatenate([images[:64], blank]), 64)(state)
    rest = vae.make_eval_fn(graphdef, blank, 6)(state)["neg_elbo"]
    # the 6 leftover images count with weight 6/70 (their keys differ, so compare loosely)
    np.testing.assert_allclose(both["neg_elbo"], (64 * full + 6 * rest) / 70, rtol=2e-2)
    assert both["neg_elbo"] > full + 0.5 * 6 * (rest - full) / 70


def test_per_image_neg_elbo_averages_to_the_batch_value(images):
    graphdef, state = vae.create(vae.VAEConfig(hidden=(32,), latent_dim=4), 0)
    each = vae.neg_elbo_per_image(graphdef, state, images[:70], batch_size=64, seed=3)
    assert each.shape == (70,) and np.isfinite(each).all()
    model, _ = nnx.merge(graphdef, state)
    keys = jax.random.split(jax.random.key(3), 64)  # the first chunk's key, one per image
    for i in (0, 5, 63):
        one = vae.neg_elbo(model, jnp.asarray(images[i : i + 1]), keys[i])[1]["neg_elbo"]
        np.testing.assert_allclose(each[i], one, rtol=1e-5)
    # the same seed gives the same scores, one per image (not a batch value repeated)
    again = vae.neg_elbo_per_image(graphdef, state, images[:70], batch_size=64, seed=3)
    np.testing.assert_array_equal(each, again)
    assert np.std(each) > 1.0
