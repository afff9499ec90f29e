"""Variational autoencoder (VAE): models, the negative ELBO and one jitted train step.

Taught in chapters 3.1 (algorithm), 4.1 (the ELBO and the closed-form KL) and 5.2.1 (practice,
05a_vae_in_practice). The seed article says a VAE "minimises the KL divergence between encoder and
decoder"; it does not. It maximises the evidence lower bound

    ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z)),

and ``neg_elbo`` below returns its negative in nats: summed over pixels, averaged over the batch.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from course_lib import pixels


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    arch: str = "mlp"  # "mlp" (the seed's 784-hidden-20 shape) or "conv"
    image_shape: tuple[int, int] = (28, 28)
    hidden: tuple[int, ...] = (512, 256)  # MLP widths, encoder order; the decoder mirrors them
    # MLP decoder widths when it should not mirror ``hidden``; () is the seed's 5.2.1 listing,
    # a single Dense layer from z to the pixels (taught in 05a_vae_in_practice)
    decoder_hidden: tuple[int, ...] | None = None
    latent_dim: int = 20
    decoder: str = "bernoulli"  # "bernoulli" (binarised pixels) or "gaussian" (pixels in [0, 1])
    beta: float = 1.0  # weight of the KL term; 1 gives the true ELBO
    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # AdamW's decoupled decay, a regulariser for small datasets
    dtype: str = "float32"  # compute dtype, e.g. "bfloat16" on GPU/TPU; parameters stay float32

    def __post_init__(self):
        if self.arch not in ("mlp", "conv"):
            raise ValueError(f"arch must be 'mlp' or 'conv', got {self.arch!r}")
        if self.decoder not in ("bernoulli", "gaussian"):
            raise ValueError(f"decoder must be 'bernoulli' or 'gaussian', got {self.decoder!r}")
        if self.arch == "conv" and tuple(self.image_shape) != (28, 28):
            raise ValueError("the conv VAE is built for 28x28 images; use arch='mlp' for others")
        if self.arch == "conv" and self.decoder_hidden is not None:
            raise ValueError("decoder_hidden applies to arch='mlp' only")
        if self.beta < 0 or self.latent_dim <= 0:
            raise ValueError("beta must be >= 0 and latent_dim > 0")


class MLPEncoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        sizes = (math.prod(cfg.image_shape), *cfg.hidden)
        self.layers = nnx.List(
            [nnx.Linear(a, b, dtype=cfg.dtype, rngs=rngs) for a, b in itertools.pairwise(sizes)]
        )
        self.mean = nnx.Linear(sizes[-1], cfg.latent_dim, dtype=cfg.dtype, rngs=rngs)
        self.log_var = nnx.Linear(sizes[-1], cfg.latent_dim, dtype=cfg.dtype, rngs=rngs)

    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            h = jax.nn.gelu(layer(h))
        return self.mean(h), self.log_var(h)


class MLPDecoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        widths = reversed(cfg.hidden) if cfg.decoder_hidden is None else cfg.decoder_hidden
        sizes = (cfg.latent_dim, *widths)
        self.layers = nnx.List(
            [nnx.Linear(a, b, dtype=cfg.dtype, rngs=rngs) for a, b in itertools.pairwise(sizes)]
        )
        self.out = nnx.Linear(sizes[-1], math.prod(cfg.image_shape), dtype=cfg.dtype, rngs=rngs)
        self.image_shape = tuple(cfg.image_shape)

    def __call__(self, z):
        h = z
        for layer in self.layers:
            h = jax.nn.gelu(layer(h))
        return self.out(h).reshape(z.shape[0], *self.image_shape)


class ConvEncoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.dtype, rngs=rngs)
        self.conv1 = nnx.Conv(1, 32, (3, 3), strides=2, **kw)  # 28 -> 14
        self.conv2 = nnx.Conv(32, 64, (3, 3), strides=2, **kw)  # 14 -> 7
        self.dense = nnx.Linear(7 * 7 * 64, 256, **kw)
        self.mean = nnx.Linear(256, cfg.latent_dim, **kw)
        self.log_var = nnx.Linear(256, cfg.latent_dim, **kw)

    def __call__(self, x):
        h = jax.nn.gelu(self.conv1(x[..., None]))
        h = jax.nn.gelu(self.conv2(h))
        h = jax.nn.gelu(self.dense(h.reshape(h.shape[0], -1)))
        return self.mean(h), self.log_var(h)


class ConvDecoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.dtype, rngs=rngs)
        self.dense = nnx.Linear(cfg.latent_dim, 7 * 7 * 64, **kw)
        self.up1 = nnx.ConvTranspose(64, 32, (3, 3), strides=(2, 2), **kw)  # 7 -> 14
        self.up2 = nnx.ConvTranspose(32, 1, (3, 3), strides=(2, 2), **kw)  # 14 -> 28

    def __call__(self, z):
        h = jax.nn.gelu(self.dense(z)).reshape(z.shape[0], 7, 7, 64)
        h = jax.nn.gelu(self.up1(h))
        return self.up2(h)[..., 0]


class VAE(nnx.Module):
    """Encoder q(z|x) = N(mean, diag(exp(log_var))), prior p(z) = N(0, I), decoder p(x|z).

    The decoder returns Bernoulli logits, or the Gaussian mean; the Gaussian decoder also learns
    one log standard deviation per pixel.
    """

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        if cfg.arch == "mlp":
            self.encoder, self.decoder = MLPEncoder(cfg, rngs=rngs), MLPDecoder(cfg, rngs=rngs)
        else:
            self.encoder, self.decoder = ConvEncoder(cfg, rngs=rngs), ConvDecoder(cfg, rngs=rngs)
        if cfg.decoder == "gaussian":
            self.log_sigma = nnx.Param(jnp.full(cfg.image_shape, -1.0))

    def __call__(self, x, key):
        mean, log_var = self.encoder(x)
        z = reparameterize(key, mean, log_var)
        return self.decoder(z), mean, log_var


def reparameterize(key, mean, log_var):
    """z = mean + sigma * eps with eps ~ N(0, I): a sample that gradients flow through."""
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * log_var) * eps


def kl_to_standard_normal(mean, log_var):
    """Closed-form KL(N(mean, exp(log_var)) || N(0, I)) in nats, summed over latent dims."""
    return 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)


def bernoulli_nll(logits, x):
    """-log p(x|z) in nats for binary pixels, summed per image; stable in logits."""
    return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=(1, 2))


def gaussian_nll(mean, log_sigma, x):
    """-log N(x | mean, sigma^2) in nats, summed per image (a density: it can be negative)."""
    z = (x - mean) * jnp.exp(-log_sigma)
    return jnp.sum(0.5 * z**2 + log_sigma + 0.5 * jnp.log(2 * jnp.pi), axis=(1, 2))


def neg_elbo(model: VAE, x, key, beta: float = 1.0):
    """The beta-weighted loss, and the true negative ELBO, in nats per image (batch mean)."""
    out, mean, log_var = model(x, key)
    out = out.astype(jnp.float32)
    if model.cfg.decoder == "bernoulli":
        recon = bernoulli_nll(out, x)
    else:
        recon = gaussian_nll(out, model.log_sigma[...], x)
    kl = kl_to_standard_normal(mean.astype(jnp.float32), log_var.astype(jnp.float32))
    loss = jnp.mean(recon + beta * kl)
    return loss, {"neg_elbo": jnp.mean(recon + kl), "recon": jnp.mean(recon), "kl": jnp.mean(kl)}


def create(cfg: VAEConfig, seed: int = 0, decay_steps: int | None = None):
    """A fresh model and its AdamW optimizer, split into (graphdef, state) for ``train_step``.

    With ``decay_steps`` the learning rate follows a cosine decay to zero over that many steps.
    """
    model = VAE(cfg, rngs=nnx.Rngs(seed))
    lr = cfg.learning_rate
    if decay_steps:
        lr = optax.cosine_decay_schedule(cfg.learning_rate, decay_steps)
    tx = optax.adamw(lr, weight_decay=cfg.weight_decay)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    return nnx.split((model, optimizer))


def check_images(x, image_shape) -> None:
    """Fail at trace time, with the fix, when a batch is not float [B, *image_shape] in [0, 1]."""
    pixels.check_image_batch(
        x,
        image_shape,
        "VAEConfig",
        "course_lib.pixels.binarize(x) (Bernoulli) or x.astype('float32') / 255 (Gaussian)",
    )


def loss(model: VAE, batch, key):
    """The training loss of ``train.make_train_step``: the negative ELBO with the config's beta.

    ``batch`` is ``(images,)``; returns ``(loss, {"neg_elbo", "recon", "kl"})`` in nats per image.
    """
    (x,) = batch
    check_images(x, model.cfg.image_shape)
    return neg_elbo(model, x, key, model.cfg.beta)


def make_eval_fn(graphdef, images, batch_size: int = 500, seed: int = 0):
    """``eval(state) -> {"neg_elbo": nats}``: the mean over *every* image, with fixed keys.

    Full batches go through one compiled ``lax.map``; the remainder, if any, is one smaller batch,
    weighted by its size, so no image is silently left out.
    """
    n_full = (len(images) // batch_size) * batch_size
    rest = len(images) - n_full
    if n_full == 0:
        raise ValueError(f"need at least batch_size={batch_size} images to evaluate")
    chunks = jnp.asarray(images[:n_full]).reshape(-1, batch_size, *images.shape[1:])
    remainder = jnp.asarray(images[n_full:])
    keys = jax.random.split(jax.random.key(seed), chunks.shape[0] + (1 if rest else 0))

    @jax.jit
    def evaluate(state):
        model, _ = nnx.merge(graphdef, state)
        check_images(chunks[0], model.cfg.image_shape)
        batch_nats = lambda x, key: neg_elbo(model, x, key)[1]["neg_elbo"]  # noqa: E731
        total = jnp.sum(jax.lax.map(lambda a: batch_nats(*a), (chunks, keys[: chunks.shape[0]])))
        total = total * batch_size
        if rest:
            total = total + batch_nats(remainder, keys[-1]) * rest
        return total / len(images)

    return lambda state: {"neg_elbo": evaluate(state)}


@functools.partial(jax.jit, static_argnums=0)
def decode(graphdef, state, z):
    """Images from latent codes: Bernoulli means (probabilities) or Gaussian means, in [0, 1]."""
    model, _ = nnx.merge(graphdef, state)
    out = model.decoder(jnp.asarray(z)).astype(jnp.float32)
    return jax.nn.sigmoid(out) if model.cfg.decoder == "bernoulli" else jnp.clip(out, 0, 1)


@functools.partial(jax.jit, static_argnums=0)
def encode(graphdef, state, x):
    """Posterior means and log-variances of ``x``."""
    model, _ = nnx.merge(graphdef, state)
    return model.encoder(jnp.asarray(x))


@functools.partial(jax.jit, static_argnums=(0, 3))
def sample(graphdef, state, key, n: int):
    """``n`` images decoded from prior samples z ~ N(0, I)."""
    model, _ = nnx.merge(graphdef, state)
    z = jax.random.normal(key, (n, model.cfg.latent_dim))
    out = model.decoder(z).astype(jnp.float32)
    return jax.nn.sigmoid(out) if model.cfg.decoder == "bernoulli" else jnp.clip(out, 0, 1)


@functools.partial(jax.jit, static_argnums=0)
def _neg_elbo_each(graphdef, state, x, key):
    model, _ = nnx.merge(graphdef, state)
    # neg_elbo of a batch of one, vmapped: image i with key i of the split
    one = lambda image, k: neg_elbo(model, image[None], k)[1]["neg_elbo"]  # noqa: E731
    return jax.vmap(one)(x, jax.random.split(key, len(x)))


def neg_elbo_per_image(graphdef, state, images, batch_size: int = 500, seed: int = 0):
    """The negative ELBO of every image in nats, a numpy array [N], with fixed keys.

    Chapter 8 (08_trends) uses it as a membership-inference score: a model that has memorised
    its training images gives them a lower negative ELBO than unseen ones.
    """
    chunks = [
        _neg_elbo_each(graphdef, state, images[i : i + batch_size], jax.random.key(seed + i))
        for i in range(0, len(images), batch_size)
    ]
    return np.asarray(jnp.concatenate(chunks))
