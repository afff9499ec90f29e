"""GAN: shapes, the losses against the minimax formula, D* on a 1-D toy, and the joint step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from course_lib import gan, pixels
from flax import nnx


def test_dcgan_and_mlp_shapes():
    @nnx.jit
    def both(g, d, z, y):
        x = g(z, y)
        return x, d(x, y)

    cfg = gan.GANConfig(width=8)
    g, d = gan.Generator(cfg, rngs=nnx.Rngs(0)), gan.Discriminator(cfg, rngs=nnx.Rngs(1))
    x, logits = both(g, d, jnp.zeros((3, cfg.latent_dim)), None)
    assert x.shape == (3, 28, 28) and float(jnp.abs(x).max()) <= 1.0
    assert logits.shape == (3,)
    small = gan.GANConfig(arch="mlp", image_shape=(8, 8), width=16, num_classes=10)
    g, d = gan.Generator(small, rngs=nnx.Rngs(0)), gan.Discriminator(small, rngs=nnx.Rngs(1))
    x, logits = both(g, d, jnp.zeros((3, small.latent_dim)), jnp.array([0, 1, 2]))
    assert x.shape == (3, 8, 8) and logits.shape == (3,)


def test_depth_to_space_moves_channels_into_2x2_blocks():
    x = jnp.arange(2 * 3 * 3 * 8, dtype=jnp.float32).reshape(2, 3, 3, 8)
    y = pixels.depth_to_space(x)
    assert y.shape == (2, 6, 6, 2)
    for i in range(2):
        for j in range(2):
            np.testing.assert_array_equal(
                y[:, i::2, j::2, :], x[..., (2 * i + j) * 2 : (2 * i + j) * 2 + 2]
            )


def test_losses_match_the_minimax_formula():
    real = jnp.array([2.0, -0.5, 0.3])
    fake = jnp.array([-1.0, 0.7, 0.0])
    d_real, d_fake = jax.nn.sigmoid(real), jax.nn.sigmoid(fake)
    minimax_v = jnp.mean(jnp.log(d_real)) + jnp.mean(jnp.log(1 - d_fake))
    np.testing.assert_allclose(gan.discriminator_loss(real, fake), -minimax_v, rtol=1e-6)
    np.testing.assert_allclose(
        gan.generator_loss(fake, "minimax"), jnp.mean(jnp.log(1 - d_fake)), rtol=1e-6
    )
    np.testing.assert_allclose(gan.generator_loss(fake), -jnp.mean(jnp.log(d_fake)), rtol=1e-6)
    # logits keep the loss finite where probabilities underflow
    assert np.isfinite(gan.discriminator_loss(jnp.array([-200.0]), jnp.array([200.0])))


def test_trained_discriminator_approaches_the_optimal_d_star():
    """On 1-D data, D minimising discriminator_loss tends to p_data / (p_data + p_g)."""

    class D1(nnx.Module):
        def __init__(self, rngs):
            self.l1, self.l2 = nnx.Linear(1, 32, rngs=rngs), nnx.Linear(32, 1, rngs=rngs)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.l1(x[:, None])))[:, 0]

    d = D1(nnx.Rngs(0))
    opt = nnx.Optimizer(d, optax.adam(1e-2), wrt=nnx.Param)
    graphdef, state = nnx.split((d, opt))

    @jax.jit
    def step(state, key):
        d, opt = nnx.merge(graphdef, state)
        k1, k2 = jax.random.split(key)
        real = jax.random.normal(k1, (512,))  # p_data = N(0, 1)
        fake = 1.0 + 0.5 * jax.random.normal(k2, (512,))  # p_g = N(1, 0.5^2)
        grads = nnx.grad(lambda d: gan.discriminator_loss(d(real), d(fake)))(d)
        opt.update(d, grads)
        return nnx.state((d, opt))

    for i in range(1500):
        state = step(state, jax.random.key(i))
    d, _ = nnx.merge(graphdef, state)
    xs = jnp.linspace(-1.0, 2.0, 61)
    p_data = jax.scipy.stats.norm.pdf(xs)
    p_g = jax.scipy.stats.norm.pdf(xs, 1.0, 0.5)
    d_star = p_data / (p_data + p_g)
    err = jnp.abs(jax.nn.sigmoid(d(xs)) - d_star)
    assert float(err.max()) < 0.06, float(err.max())


SMALL = {
    "mlp": gan.GANConfig(arch="mlp", image_shape=(8, 8), width=16, augment_shift=0),
    "dcgan": gan.GANConfig(arch="dcgan", image_shape=(28, 28), width=8, augment_shift=0),
}


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_one_step_updates_d_first_then_g_against_the_new_d(arch):
    cfg = SMALL[arch]
    graphdef, state = gan.create(cfg, 0)
    x = jax.random.uniform(jax.random.key(1), (16, *cfg.image_shape), minval=-1.0, maxval=1.0)
    y = jnp.zeros(16, jnp.int32)
    key = jax.random.key(2)
    copy = jax.tree.map(jnp.copy, state)
    new_state = gan.make_train_step(graphdef)(copy, (x, y), key)[0]

    @jax.jit
    def g_after_update(state, d_state):
        model = nnx.merge(graphdef, state)
        g, opt_g = model.g, model.opt_g
        d_used = nnx.merge(graphdef, d_state).d
        z = jax.random.normal(jax.random.split(key, 4)[0], (16, cfg.latent_dim))
        grads = nnx.grad(lambda g: gan.generator_loss(d_used(g(z, y), y)))(g)
        opt_g.update(g, grads)
        return nnx.state(g, nnx.Param)

    expected = g_after_update(state, new_state)
    stale = g_after_update(state, state)
    got = nnx.state(nnx.merge(graphdef, new_state).g, nnx.Param)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(
        not np.allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(stale), strict=True)
    )


def test_translate_shifts_whole_images_and_fills_background():
    x = jnp.full((64, 8, 8), -1.0).at[:, 3:5, 3:5].set(1.0)
    out = pixels.translate(jax.random.key(0), x, 2, fill=-1.0)
    assert out.shape == x.shape and set(np.unique(out).tolist()) == {-1.0, 1.0}
    assert (np.asarray(out == 1.0).sum(axis=(1, 2)) == 4).all()  # the blob moves, it is never cut
    assert len({np.argwhere(np.asarray(o) == 1.0)[0].tobytes() for o in out}) > 5
    np.testing.assert_array_equal(pixels.translate(jax.random.key(0), x, 0, fill=-1.0), x)
    zero_fill = pixels.translate(jax.random.key(0), x + 1.0, 2)  # the classifier's background 0
    np.testing.assert_array_equal(zero_fill, out + 1.0)  # same shifts, other fill


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_train_step_compiles_once_and_conditioning_uses_labels(arch):
    cfg = dataclasses.replace(SMALL[arch], num_classes=10, augment_shift=2)
    graphdef, state = gan.create(cfg, 0)
    step = gan.make_train_step(graphdef)
    x = jax.random.uniform(jax.random.key(1), (8, *cfg.image_shape), minval=-1.0, maxval=1.0)
    for i in range(3):
        state, metrics = step(state, (x, jnp.arange(8) % 10), jax.random.key(i))
    assert step._cache_size() == 1
    assert set(metrics) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert 0 < float(metrics["d_fake"]) < 1 and 0 < float(metrics["d_real"]) < 1
    a = gan.generate(graphdef, state, jax.random.key(0), 4, labels=jnp.zeros(4, jnp.int32))
    b = gan.generate(graphdef, state, jax.random.key(0), 4, labels=jnp.ones(4, jnp.int32))
    assert a.shape == (4, *cfg.image_shape) and not np.allclose(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_generate_draws_classes_from_the_data_frequencies():
    cfg = gan.GANConfig(arch="mlp", image_shape=(8, 8), width=16, num_classes=3)
    graphdef, state = gan.create(cfg, 0, class_probs=[0.0, 1.0, 0.0])
    drawn = gan.generate(graphdef, state, jax.random.key(0), 6)
    only_1 = gan.generate(graphdef, state, jax.random.key(0), 6, labels=jnp.ones(6, jnp.int32))
    only_0 = gan.generate(graphdef, state, jax.random.key(0), 6, labels=jnp.zeros(6, jnp.int32))
    np.testing.assert_array_equal(drawn, only_1)  # same z, and every class drawn is 1
    assert not np.allclose(drawn, only_0)
    _, uniform = gan.create(cfg, 0)  # no frequencies given: every class equally likely
    g = nnx.merge(graphdef, uniform).g
    np.testing.assert_allclose(g.class_probs[...], [1 / 3] * 3)
    with pytest.raises(ValueError, match=r"shape \[num_classes\] = \[3\]"):
        gan.create(cfg, 0, class_probs=[0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        gan.create(cfg, 0, class_probs=[0.5, 0.5, 0.5])


def test_cluster_ids_find_separated_groups_and_are_reproducible():
    rng = np.random.default_rng(0)
    centres = rng.uniform(-1, 1, (4, 8, 8)).astype(np.float32)
    truth = np.repeat(np.arange(4), 25)
    images = centres[truth] + 0.01 * rng.standard_normal((100, 8, 8)).astype(np.float32)
    ids = gan.cluster_ids(images, 4, seed=0)
    assert ids.dtype == np.int32 and ids.shape == (100,)
    # the same partition as the truth, up to renaming the clusters
    assert len(set(zip(ids.tolist(), truth.tolist(), strict=True))) == 4
    np.testing.assert_array_equal(ids, gan.cluster_ids(images, 4, seed=0))
    with pytest.raises(ValueError, match="lower it"):
        gan.cluster_ids(images[:3], 4)


def test_bad_batch_gets_a_clear_error():
    graphdef, state = gan.create(gan.GANConfig(arch="mlp", image_shape=(8, 8), width=8), 0)
    step = gan.make_train_step(graphdef)
    with pytest.raises(ValueError, match="shape"):
        step(state, (jnp.zeros((4, 64)), jnp.zeros(4, jnp.int32)), jax.random.key(0))
    with pytest.raises(ValueError, match="127.5"):
        step(state, (jnp.zeros((4, 8, 8), jnp.uint8), jnp.zeros(4, jnp.int32)), jax.random.key(0))


def test_weight_average_is_the_warmed_up_exponential_average_and_generate_samples_it():
    cfg = dataclasses.replace(SMALL["dcgan"], ema_decay=0.6)
    graphdef, state = gan.create(cfg, 0)
    step = gan.make_train_step(graphdef)
    x = jax.random.uniform(jax.random.key(1), (8, 28, 28), minval=-1.0, maxval=1.0)
    y = jnp.zeros(8, jnp.int32)
    average = jax.tree.map(jnp.copy, nnx.state(nnx.merge(graphdef, state).g, nnx.Param))  # G
    for t in range(1, 4):
        state, _ = step(state, (x, y), jax.random.key(t))
        model = nnx.merge(graphdef, state)
        d = min(0.6, (1 + t) / (10 + t))  # the warm-up (1 + t) / (10 + t) is below 0.6 until t = 13
        now = nnx.state(model.g, nnx.Param)
        average = jax.tree.map(lambda a, p, d=d: d * a + (1 - d) * p, average, now)
    got = nnx.state(model.g_avg, nnx.Param)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(average), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(
        jax.tree.leaves(nnx.state(model.g_avg, nnx.BatchStat)),
        jax.tree.leaves(nnx.state(model.g, nnx.BatchStat)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)  # BatchNorm statistics are copied, not averaged
    key = jax.random.key(9)
    z = jax.random.normal(key, (4, cfg.latent_dim))
    sampled = gan.generate(graphdef, state, key, 4)
    np.testing.assert_allclose(sampled, gan.to_unit(model.g_avg(z, train=False)), atol=1e-6)
    assert not np.allclose(sampled, gan.to_unit(model.g(z, train=False)), atol=1e-3)
    # with ema_decay=None, generate samples the last G
    plain = dataclasses.replace(cfg, ema_decay=None)
    graphdef, state = gan.create(plain, 0)
    state, _ = gan.make_train_step(graphdef)(state, (x, y), key)
    model = nnx.merge(graphdef, state)
    np.testing.assert_allclose(
        gan.generate(graphdef, state, key, 4), gan.to_unit(model.g(z, train=False)), atol=1e-6
    )
