"""Diffusion: the forward process against its closed form, the loss, the step and DDIM sampling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from course_lib import data, diffusion, recipes, runs, train, vae
from flax import nnx

# one level of 14x14 maps: compiles in seconds, and its loss still falls within 30 steps
TINY = diffusion.DiffusionConfig(
    width=8, channel_mult=(1,), timesteps=100, warmup_steps=5, sample_steps=4
)


@pytest.fixture(scope="module")
def images():
    x, _ = data.load("mnist10k", "train")
    return x[:256].astype(np.float32) / 127.5 - 1.0


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("timesteps", [1000, 100])
def test_schedule_decreases_from_near_1_to_near_0(schedule, timesteps):
    cfg = diffusion.DiffusionConfig(schedule=schedule, timesteps=timesteps)
    sched = diffusion.noise_schedule(cfg)
    betas, abar = np.asarray(sched.betas), np.asarray(sched.alphas_bar)
    assert betas.shape == abar.shape == (timesteps,)
    assert np.all((betas > 0) & (betas < 1))
    assert np.all(np.diff(abar) < 0) and np.all((abar > 0) & (abar < 1))
    assert abar[0] > 0.99 and abar[-1] < 1e-3
    np.testing.assert_allclose(abar, np.cumprod(1 - betas), rtol=1e-4)


def test_q_sample_has_the_closed_form_marginal_of_the_one_step_chain():
    """Many draws of x_t ~ q(x_t | x_0) have mean sqrt(abar_t) x_0 and variance 1 - abar_t, and
    so do draws made by running q(x_s | x_{s-1}) = N(sqrt(1 - beta_s) x_{s-1}, beta_s) to t."""
    sched = diffusion.noise_schedule(diffusion.DiffusionConfig(timesteps=20, sample_steps=5))
    x0 = jnp.linspace(-1.0, 1.0, 28 * 28).reshape(28, 28)
    n, t = 4000, 6
    keys = jax.random.split(jax.random.key(0), t + 2)
    noise = jax.random.normal(keys[0], (n, 28, 28))
    x_t = diffusion.q_sample(
        sched.alphas_bar, jnp.broadcast_to(x0, noise.shape), jnp.full(n, t), noise
    )
    chain = jnp.broadcast_to(x0, noise.shape)
    for s in range(t + 1):  # t = 0 is the first noising step: abar_0 = 1 - beta_0
        step_noise = jax.random.normal(keys[s + 1], chain.shape)
        chain = jnp.sqrt(1 - sched.betas[s]) * chain + jnp.sqrt(sched.betas[s]) * step_noise
    mean, var = jnp.sqrt(sched.alphas_bar[t]) * x0, 1 - sched.alphas_bar[t]
    tol = 4 * np.sqrt(var / n)  # four standard errors of a mean, per pixel
    for draws in (x_t, chain):
        assert float(jnp.max(jnp.abs(draws.mean(0) - mean))) < tol
        np.testing.assert_allclose(float(draws.var(0).mean()), float(var), rtol=0.02)
    # a scalar t noises every image to the same level
    same = diffusion.q_sample(sched.alphas_bar, x0[None], t, noise[:1])
    np.testing.assert_allclose(same, x_t[:1], rtol=1e-6)


class Oracle:
    """A stand-in for the U-Net that knows x_0, hence the true noise in x_t; records every t."""

    def __init__(self, cfg, x0, exact=True):
        self.cfg, self.x0, self.exact, self.seen = cfg, x0, exact, []

    def __call__(self, x_t, t):
        self.seen.append(np.asarray(t))
        a = diffusion.noise_schedule(self.cfg).alphas_bar[t][:, None, None]
        eps = (x_t - jnp.sqrt(a) * self.x0) / jnp.sqrt(1 - a)
        return eps if self.exact else jnp.zeros_like(x_t)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_loss_is_the_noise_prediction_error_at_uniform_timesteps(images, schedule):
    cfg = diffusion.DiffusionConfig(timesteps=10, sample_steps=10, schedule=schedule)
    x0 = jnp.asarray(images)
    exact = Oracle(cfg, x0)
    value, metrics = diffusion.loss(exact, (x0,), jax.random.key(0))
    assert float(value) < 1e-6 and metrics == {}
    # predicting zeros costs E[eps^2] = 1 per pixel
    value, _ = diffusion.loss(Oracle(cfg, x0, exact=False), (x0,), jax.random.key(1))
    assert abs(float(value) - 1.0) < 0.03
    (t,) = exact.seen
    assert t.shape == (len(images),) and set(t.tolist()) == set(range(10))


def test_timestep_embedding_shape_range_and_distinct_rows():
    t = jnp.arange(1000)
    emb = diffusion.timestep_embedding(t, 32)
    assert emb.shape == (1000, 32) and float(jnp.abs(emb).max()) <= 1.0
    assert len(np.unique(np.round(np.asarray(emb), 5), axis=0)) == 1000
    np.testing.assert_allclose(emb[0, :16], 0.0)  # sin(0)
    assert diffusion.timestep_embedding(jnp.array([3, 4]), 7).shape == (2, 7)


def test_unet_maps_images_and_timesteps_to_noise_of_the_same_shape():
    x, t = jax.ShapeDtypeStruct((3, 28, 28), jnp.float32), jax.ShapeDtypeStruct((3,), jnp.int32)
    variants = [{}, {"patch": 1, "channel_mult": (1, 2, 2)}, {"dtype": "bfloat16"}]
    for changes in variants:
        cfg = diffusion.DiffusionConfig(width=8, **changes)
        model = diffusion.UNet(cfg, rngs=nnx.Rngs(0))
        out = jax.eval_shape(lambda x, t, model=model: model(x, t), x, t)  # traced, not compiled
        assert out.shape == (3, 28, 28) and out.dtype == jnp.float32


def _fit(images, cfg, steps, step=None):
    graphdef, state = diffusion.create(cfg, 0)
    step = step or diffusion.make_train_step(graphdef)
    batches = train.epoch_batches((images,), 32, 0)
    res = train.fit(
        step, state, batches, key=jax.random.key(0), steps=steps, log_every=5, progress=False
    )
    return graphdef, step, res


@pytest.fixture(scope="module")
def trained(images):
    """TINY after 30 steps: (graphdef, step, fit result); the tests below share its compilation."""
    return _fit(images, TINY, 30)


def test_train_step_compiles_once_and_the_loss_falls(trained):
    graphdef, step, res = trained
    losses = [r["loss"] for r in res.history["train"]]
    assert step._cache_size() == 1
    assert losses[-1] < 0.7 * losses[0], losses
    model, _, ema = nnx.merge(graphdef, res.state)
    assert not np.allclose(model.out.kernel[...], ema.out.kernel[...])


def test_without_ema_the_generic_train_step_works(images):
    cfg = dataclasses.replace(TINY, ema_decay=None)
    graphdef, state = diffusion.create(cfg, 0)
    assert (
        len(nnx.merge(graphdef, state)) == 2
    )  # (model, optimizer), as train.make_train_step wants
    step = train.make_train_step(graphdef, diffusion.loss)
    _, _, res = _fit(images, cfg, 3, step)
    assert np.isfinite(res.history["train"][-1]["loss"])


def test_ema_is_the_warmed_up_exponential_average():
    model = diffusion.UNet(TINY, rngs=nnx.Rngs(0))
    ema = diffusion.UNet(TINY, rngs=nnx.Rngs(1))
    old = np.asarray(ema.out.kernel[...])
    diffusion.update_ema(ema, model, 0, 0.995)  # step 0: d = min(0.995, 1 / 10)
    expected = 0.1 * old + 0.9 * np.asarray(model.out.kernel[...])
    np.testing.assert_allclose(ema.out.kernel[...], expected, rtol=1e-6)
    diffusion.update_ema(ema, model, 10**6, 0.5)  # late: d = decay
    np.testing.assert_allclose(
        ema.out.kernel[...], 0.5 * expected + 0.5 * model.out.kernel[...], rtol=1e-6
    )


def _reference_ddim(net, cfg, key, n, steps, eta):
    """DDIM as a Python loop over the visited timesteps, to check the scan of ``sample``."""
    sched, ts = diffusion.noise_schedule(cfg), diffusion.ddim_timesteps(cfg.timesteps, steps)
    key_x, key_steps = jax.random.split(key)
    x = jax.random.normal(key_x, (n, *cfg.data_shape))
    for i, (t, k) in enumerate(zip(ts, jax.random.split(key_steps, steps), strict=True)):
        t_prev = ts[i + 1] if i + 1 < steps else -1
        x = diffusion.ddim_step(net, sched, x, t, t_prev, k, eta)
    return (x + 1) / 2


def test_sample_shapes_range_determinism_and_steps(trained):
    graphdef, _, res = trained
    state, key = res.state, jax.random.key(0)
    x = diffusion.sample(graphdef, state, key, 3)
    assert x.shape == (3, 28, 28) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    np.testing.assert_array_equal(x, diffusion.sample(graphdef, state, key, 3))
    assert not np.allclose(x, diffusion.sample(graphdef, state, jax.random.key(1), 3))
    assert not np.allclose(x, diffusion.sample(graphdef, state, key, 3, eta=1.0))
    np.testing.assert_array_equal(diffusion.ddim_timesteps(100, 4), [99, 66, 33, 0])
    ema = jax.jit(lambda x, t: nnx.merge(graphdef, state)[2](x, t))  # the weight average samples
    compiled_before = diffusion.sample._cache_size()  # calls above (keywords count apart)
    for steps, eta in ((None, 0.0), (None, 1.0), (2, 0.0)):
        got = diffusion.sample(graphdef, state, key, 3, steps, eta)
        expected = _reference_ddim(ema, TINY, key, 3, steps or TINY.sample_steps, eta)
        np.testing.assert_allclose(
            got, expected, atol=2e-3
        )  # 50 clipped steps amplify float rounding
    # eta is traced, steps static: the loop compiles (steps=None) and (steps=2) only
    assert diffusion.sample._cache_size() - compiled_before == 2
    assert diffusion.generate(graphdef, state, key, 7, chunk=3).shape == (7, 28, 28)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_the_exact_noise_predictor_draws_the_data_distribution(eta):
    """For Gaussian data x_0 ~ N(mu, s^2) the best noise prediction is known in closed form:
    E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar). DDIM with it, over
    all T steps, returns samples of mean mu and standard deviation s, for eta = 0 (an ODE) and
    eta = 1 (DDPM). With 20 steps the deterministic sampler shrinks s by about a tenth."""
    cfg, mu, s = diffusion.DiffusionConfig(), 0.2, 0.25
    abar = diffusion.noise_schedule(cfg).alphas_bar

    def eps_model(x_t, t):
        a = abar[t][:, None, None]
        return jnp.sqrt(1 - a) * (x_t - jnp.sqrt(a) * mu) / (a * s**2 + 1 - a)

    def draw(steps):
        run = jax.jit(lambda key: diffusion.ddim_sample(eps_model, cfg, key, 64, steps, eta))
        return np.asarray(run(jax.random.key(0)))

    x = draw(cfg.timesteps)
    assert abs(x.mean() - mu) < 0.005 and abs(x.std() - s) < 0.01, (x.mean(), x.std())
    assert draw(20).std() < x.std() - 0.02


class StubClassifier:
    """Features: mean brightness of each 7x7 block; class: the brightest of the first 10."""

    def features(self, images):
        x = np.asarray(images).reshape(-1, 4, 7, 4, 7).mean(axis=(2, 4))
        return x.reshape(len(x), 16)

    def predict(self, images):
        return self.features(images)[:, :10].argmax(axis=1)


def test_eval_fn_reports_the_gan_metrics(images):
    graphdef, state = diffusion.create(TINY, 0)
    evaluate = diffusion.make_eval_fn(graphdef, StubClassifier(), (images[:20] + 1) / 2, 20, 0)
    result = evaluate(state)
    assert set(result) == {"fd_lenet", "class_kl", "classes_covered"}
    assert result["fd_lenet"] > 0 and 0 <= result["classes_covered"] <= 10
    assert evaluate(state) == result  # fixed keys: the same samples every time


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ({"schedule": "quadratic"}, "schedule must be 'cosine' or 'linear'"),
        ({"timesteps": 1}, "timesteps >= 2"),
        ({"sample_steps": 2000}, "sample_steps <= timesteps"),
        ({"sample_steps": 0}, "1 <= sample_steps"),
        ({"patch": 3}, "patch must be 1 or 2"),
        ({"channel_mult": (1, 2, 2)}, "divisible by patch"),
        ({"width": 0}, "width"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"data_shape": (2, 28, 28)}, "data_shape must be"),
    ],
)
def test_bad_config_is_rejected(field, match):
    with pytest.raises(ValueError, match=match):
        diffusion.DiffusionConfig(**field)


def test_bad_batch_gets_a_clear_error():
    graphdef, state = diffusion.create(TINY, 0)
    step = diffusion.make_train_step(graphdef)
    with pytest.raises(ValueError, match="reshape"):
        step(state, (jnp.zeros((4, 784)),), jax.random.key(0))
    with pytest.raises(ValueError, match="127.5"):
        step(state, (jnp.zeros((4, 28, 28), jnp.uint8),), jax.random.key(0))


# a VAE's codes: vectors, denoised by the MLP
VECTORS = diffusion.DiffusionConfig(
    data_shape=(6,), width=32, depth=2, timesteps=100, warmup_steps=5, sample_steps=10
)


def test_vectors_get_the_mlp_denoiser_its_step_and_unclipped_samples():
    graphdef, state = diffusion.create(VECTORS, 0, decay_steps=60)
    assert isinstance(nnx.merge(graphdef, state)[0], diffusion.MLPDenoiser)
    codes = 3.0 + 0.5 * np.random.default_rng(0).standard_normal((256, 6)).astype(np.float32)
    step = diffusion.make_train_step(graphdef)
    losses = []
    for i in range(60):
        state, metrics = step(state, (codes[(i % 4) * 64 : (i % 4 + 1) * 64],), jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert step._cache_size() == 1 and np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    x = np.asarray(diffusion.sample(graphdef, state, jax.random.key(0), 32))
    assert x.shape == (32, 6) and x.max() > 1.0  # codes are not clipped to an image range
    with pytest.raises(ValueError, match=r"data_shape=\(5,\)"):
        step(state, (jnp.zeros((4, 5)),), jax.random.key(0))


def test_ddim_leaves_vectors_outside_the_image_range_unclipped():
    """The exact noise predictor of N(3, 0.5^2) data: DDIM over all T steps returns that mean and
    spread for vectors, where images would have been clipped to [-1, 1]."""
    cfg, mu, s = VECTORS, 3.0, 0.5
    abar = diffusion.noise_schedule(cfg).alphas_bar

    def eps_model(x_t, t):
        a = abar[t][:, None]
        return jnp.sqrt(1 - a) * (x_t - jnp.sqrt(a) * mu) / (a * s**2 + 1 - a)

    x = jax.jit(lambda k: diffusion.ddim_sample(eps_model, cfg, k, 500, cfg.timesteps))
    x = np.asarray(x(jax.random.key(0)))
    assert abs(x.mean() - mu) < 0.03 and abs(x.std() - s) < 0.03, (x.mean(), x.std())


def test_latent_data_are_the_vaes_codes_at_unit_scale_and_decode_to_images():
    autoencoder = runs.trained("vae", recipes.VAERecipe(dataset="digits", steps=40))
    recipe = recipes.DiffusionRecipe(dataset="digits", autoencoder=autoencoder.recipe)
    prepared = recipes.prepare_diffusion(recipe, autoencoder)
    latent_dim = autoencoder.prepared.config.latent_dim
    assert prepared.config.data_shape == (latent_dim,) and prepared.real.shape[1] == latent_dim
    assert abs(prepared.real.std() - 1.0) < 1e-3
    assert prepared.autoencoder_seconds == autoencoder.metrics["train_seconds"] > 0
    codes = prepared.real[:5] * prepared.latent_scale
    expected = vae.decode(autoencoder.graphdef, autoencoder.state, codes)
    images = np.asarray(prepared.to_images(prepared.real[:5]))
    np.testing.assert_allclose(images, expected, rtol=1e-6)
    assert images.shape == (5, 8, 8) and images.min() >= 0 and images.max() <= 1
    pixel = recipes.prepare_diffusion(dataclasses.replace(recipe, autoencoder=None))
    assert pixel.config.data_shape == (8, 8) and pixel.decoder is None
    np.testing.assert_array_equal(pixel.to_images(pixel.real[:2]), pixel.real[:2])
