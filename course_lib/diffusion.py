"""Denoising diffusion (DDPM) for 28x28 digits: forward process, noise-prediction loss, DDIM.

Taught in chapter 8 (08_trends). The forward process adds Gaussian noise in ``timesteps`` small
steps, q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), whose marginal has the closed form

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s <= t} (1 - beta_s),

so training needs no simulation: draw t and noise eps, build x_t in one step (:func:`q_sample`),
and regress eps from (x_t, t) with the "simple" mean squared error of Ho et al. (2020, "Denoising
diffusion probabilistic models"). The betas follow the cosine schedule of Nichol & Dhariwal
(2021, "Improved denoising diffusion probabilistic models") or the original linear one.

Sampling runs the learned reverse process with DDIM (Song et al., 2021, "Denoising diffusion
implicit models"): the same trained network, but only ``sample_steps`` of the T timesteps,
deterministic for ``eta=0`` and DDPM-like for ``eta=1``.

The data are images (a small U-Net on 2x2 patches: 14x14 and 7x7 maps) or vectors, such as a
VAE's latent codes (an MLP): latent diffusion (Rombach et al., 2022), far cheaper on a CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from course_lib import fd_lenet, pixels


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    # (H, W): images, denoised by a U-Net; (D,): vectors such as a VAE's latent codes, by an MLP
    data_shape: tuple[int, ...] = (28, 28)
    width: int = 32  # channels of the first U-Net level (level i: width * channel_mult[i]), or
    # the hidden units of the MLP
    depth: int = 3  # residual blocks of the MLP
    channel_mult: tuple[int, ...] = (1, 2)  # one entry per resolution, halving each time
    patch: int = 2  # the U-Net sees 2x2 pixel patches as channels: 14x14 maps, 4x fewer FLOPs
    timesteps: int = 1000  # T of the forward process
    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal, 2021) or "linear" (Ho et al., 2020)
    learning_rate: float = 2e-3
    warmup_steps: int = 100  # the learning rate rises linearly from 0 over these many steps
    ema_decay: float | None = 0.995  # sample with a moving average of the weights; None: off
    sample_steps: int = 50  # DDIM steps of ``sample`` by default
    min_snr: float | None = None
    sigma_data: float | None = 0.5  # the skip of Karras et al. (2022); None: the net predicts eps
    dtype: str = "float32"

    def __post_init__(self):
        if self.schedule not in ("cosine", "linear"):
            raise ValueError(f"schedule must be 'cosine' or 'linear', got {self.schedule!r}")
        if len(self.data_shape) not in (1, 2) or min(self.data_shape) < 1:
            raise ValueError(f"data_shape must be (H, W) or (D,), got {self.data_shape}")
        if self.is_image and (
            self.patch not in (1, 2)
            or any(s % (self.patch * 2 ** (len(self.channel_mult) - 1)) for s in self.data_shape)
        ):
            raise ValueError(
                f"data_shape {self.data_shape} must be divisible by patch * 2^(levels - 1) "
                f"(patch={self.patch}, {len(self.channel_mult)} levels); patch must be 1 or 2"
            )
        if self.timesteps < 2 or not 1 <= self.sample_steps <= self.timesteps:
            raise ValueError(
                f"need timesteps >= 2 and 1 <= sample_steps <= timesteps, got "
                f"timesteps={self.timesteps}, sample_steps={self.sample_steps}"
            )
        if self.width <= 0 or self.learning_rate <= 0 or self.warmup_steps < 0:
            raise ValueError("width and learning_rate must be positive, warmup_steps >= 0")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")

    @property
    def is_image(self) -> bool:
        return len(self.data_shape) == 2


class NoiseSchedule(NamedTuple):
    """The forward process's constants for t = 0..T-1, as float32 arrays of length T."""

    betas: jax.Array  # the variance each step adds, beta_t
    alphas_bar: jax.Array  # abar_t = prod_{s <= t} (1 - beta_s): how much of x_0 is left at t


def noise_schedule(cfg: DiffusionConfig) -> NoiseSchedule:
    """Betas and abar of ``cfg.schedule``, computed in float64.

    The linear schedule of Ho et al. runs from 1e-4 to 0.02 for T = 1000 and is scaled by
    1000 / T for other T (each beta at most 0.999), so that abar_{T-1} stays near 0. The cosine
    schedule sets abar_t = f(t + 1) / f(0) with f(t) = cos^2((t / T + s) / (1 + s) * pi / 2),
    s = 0.008, and clips each beta at 0.999; it destroys the image more evenly over t, wasting
    fewer steps on pure noise.
    """
    t_count = cfg.timesteps
    if cfg.schedule == "linear":
        scale = 1000.0 / t_count
        betas = np.clip(np.linspace(scale * 1e-4, scale * 0.02, t_count), 0.0, 0.999)
    else:
        s = 0.008
        f = np.cos((np.arange(t_count + 1) / t_count + s) / (1 + s) * np.pi / 2) ** 2
        betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    alphas_bar = np.cumprod(1.0 - betas)
    return NoiseSchedule(jnp.asarray(betas, jnp.float32), jnp.asarray(alphas_bar, jnp.float32))


def q_sample(alphas_bar, x0, t, noise):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise: a draw of q(x_t | x_0) in one step.

    ``t`` is one timestep per image (shape [B]) or a scalar for all of them.
    """
    a = alphas_bar[t]
    a = a.reshape(a.shape + (1,) * (x0.ndim - a.ndim))
    return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise


def timestep_embedding(t, dim: int, max_period: float = 10_000.0):
    """Sinusoidal features of integer timesteps ``t`` [B] -> [B, dim], as in the Transformer.

    Frequencies run geometrically from 1 to 1 / max_period, so nearby timesteps get similar
    features and every t in 0..T-1 a different one.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def group_norm(channels: int, *, dtype, rngs: nnx.Rngs) -> nnx.GroupNorm:
    return nnx.GroupNorm(channels, num_groups=math.gcd(channels, 8), dtype=dtype, rngs=rngs)


class ResBlock(nnx.Module):
    """Two 3x3 convolutions with GroupNorm and SiLU, and a residual connection (a 1x1 convolution
    when the channel count changes). The time embedding scales and shifts the second
    normalisation's output (FiLM, as in Nichol & Dhariwal's "scale-shift norm")."""

    def __init__(self, cin: int, cout: int, emb_dim: int, *, dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, rngs=rngs)
        self.norm1, self.conv1 = group_norm(cin, **kw), nnx.Conv(cin, cout, (3, 3), **kw)
        self.emb = nnx.Linear(emb_dim, 2 * cout, **kw)
        self.norm2, self.conv2 = group_norm(cout, **kw), nnx.Conv(cout, cout, (3, 3), **kw)
        self.skip = nnx.Conv(cin, cout, (1, 1), **kw) if cin != cout else None

    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        scale, shift = jnp.split(self.emb(emb)[:, None, None, :], 2, axis=-1)
        h = self.conv2(jax.nn.silu(self.norm2(h) * (1 + scale) + shift))
        return h + (x if self.skip is None else self.skip(x))


class Upsample(nnx.Module):
    """Doubles height and width: a 1x1 convolution to 4x the channels, then depth_to_space (a
    2x2 transposed convolution with stride 2, without multiplying the zeros it would insert)."""

    def __init__(self, cin: int, cout: int, *, dtype, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, 4 * cout, (1, 1), dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return pixels.depth_to_space(self.conv(x), 2)


class Denoiser(nnx.Module):
    """eps_theta(x_t, t): the noise in x_t [B, *data_shape] at timesteps t [B], same shape.

    With ``sigma_data`` the network F is wrapped as in Karras et al. (2022): it sees x_t scaled to
    unit variance, and eps_theta = c_skip x_t + c_out F, so that F's target has unit variance at
    every t, and near t = 0, where eps is hard to tell from the image, F predicts the clean data.
    """

    def __call__(self, x, t):
        cfg = self.cfg
        if cfg.sigma_data is None:
            return self.net(x, t)
        abar = noise_schedule(cfg).alphas_bar[t].reshape((-1,) + (1,) * (x.ndim - 1))
        var_x = abar * cfg.sigma_data**2 + 1 - abar
        c_skip = jnp.sqrt(1 - abar) / var_x
        c_out = jnp.sqrt(abar) * cfg.sigma_data / jnp.sqrt(var_x)
        return c_skip * x + c_out * self.net(x / jnp.sqrt(var_x), t)

    def time_features(self, t):
        emb = timestep_embedding(t, self.cfg.width).astype(self.cfg.dtype)
        return jax.nn.silu(self.time2(jax.nn.silu(self.time1(emb))))


class UNet(Denoiser):
    """The denoiser of images [B, 28, 28].

    The encoder halves the resolution level by level; the decoder mirrors it and concatenates
    the encoder's features of the same resolution (the skip connections of Ronneberger et al.,
    2015), so fine detail need not pass through the coarsest level. An MLP of the sinusoidal
    embedding of t enters every block.
    """

    def __init__(self, cfg: DiffusionConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        kw = dict(dtype=cfg.dtype, rngs=rngs)
        widths = [cfg.width * m for m in cfg.channel_mult]
        emb_dim, pix = 4 * cfg.width, cfg.patch**2
        self.time1 = nnx.Linear(cfg.width, emb_dim, **kw)
        self.time2 = nnx.Linear(emb_dim, emb_dim, **kw)
        self.stem = nnx.Conv(pix, widths[0], (3, 3), **kw)
        self.down = nnx.List([ResBlock(c, c, emb_dim, **kw) for c in widths])
        self.downsample = nnx.List(
            [nnx.Conv(a, b, (3, 3), strides=2, **kw) for a, b in itertools.pairwise(widths)]
        )
        self.mid = ResBlock(widths[-1], widths[-1], emb_dim, **kw)
        self.up = nnx.List([ResBlock(2 * c, c, emb_dim, **kw) for c in reversed(widths)])
        self.upsample = nnx.List(
            [Upsample(a, b, **kw) for a, b in itertools.pairwise(widths[::-1])]
        )
        self.out_norm = group_norm(widths[0], **kw)
        self.out = nnx.Conv(widths[0], pix, (3, 3), **kw)

    def net(self, x, t):
        p, emb = self.cfg.patch, self.time_features(t)
        h = self.stem(pixels.space_to_depth(x[..., None], p))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else self.downsample[i - 1](h), emb)
            skips.append(h)
        h = self.mid(h, emb)
        for i, block in enumerate(self.up):
            h = h if i == 0 else self.upsample[i - 1](h)
            h = block(jnp.concatenate([h, skips.pop()], axis=-1), emb)
        h = self.out(jax.nn.silu(self.out_norm(h)))
        return pixels.depth_to_space(h, p)[..., 0].astype(jnp.float32)


class MLPDenoiser(Denoiser):
    """The denoiser of vectors [B, D], e.g. a VAE's latent codes (latent diffusion, Rombach et
    al., 2022): ``depth`` residual blocks of LayerNorm and two dense layers, each scaled and
    shifted by the time embedding (FiLM). A code has no spatial structure for convolutions to use.
    """

    def __init__(self, cfg: DiffusionConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        kw, (dim,), width = dict(dtype=cfg.dtype, rngs=rngs), cfg.data_shape, cfg.width
        self.time1 = nnx.Linear(width, width, **kw)
        self.time2 = nnx.Linear(width, width, **kw)
        self.inp = nnx.Linear(dim, width, **kw)
        self.film = nnx.List([nnx.Linear(width, 2 * width, **kw) for _ in range(cfg.depth)])
        self.norms = nnx.List([nnx.LayerNorm(width, **kw) for _ in range(cfg.depth)])
        self.fc1 = nnx.List([nnx.Linear(width, width, **kw) for _ in range(cfg.depth)])
        self.fc2 = nnx.List([nnx.Linear(width, width, **kw) for _ in range(cfg.depth)])
        self.out_norm = nnx.LayerNorm(width, **kw)
        self.out = nnx.Linear(width, dim, **kw)

    def net(self, x, t):
        emb, h = self.time_features(t), self.inp(x.astype(self.cfg.dtype))
        for film, norm, fc1, fc2 in zip(self.film, self.norms, self.fc1, self.fc2, strict=True):
            scale, shift = jnp.split(film(emb), 2, axis=-1)
            h = h + fc2(jax.nn.silu(fc1(norm(h) * (1 + scale) + shift)))
        return self.out(jax.nn.silu(self.out_norm(h))).astype(jnp.float32)


def check_data(x, cfg: DiffusionConfig) -> None:
    """Fail at trace time, with the fix, on images that are not float [B, H, W] in [-1, 1], or on
    vectors that are not float [B, D]."""
    if cfg.is_image:
        fix = "x.astype('float32') / 127.5 - 1"
        pixels.check_image_batch(x, cfg.data_shape, "DiffusionConfig", fix)
    elif x.ndim != 2 or x.shape[1:] != cfg.data_shape or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"expected float vectors [B, {cfg.data_shape[0]}], got {x.dtype} {x.shape}; "
            f"set DiffusionConfig(data_shape=({x.shape[-1]},)) for codes of that size"
        )


def loss(model: Denoiser, batch, key):
    """The "simple" loss of Ho et al.: E_{t, eps} ||eps - eps_theta(x_t, t)||^2 per pixel.

    ``batch`` is ``(x0,)``: images in [-1, 1] or vectors; t is uniform on 0..T-1. Returns
    ``(loss, {})``, so that it also runs in ``train.make_train_step`` (without the EMA).
    """
    (x0,) = batch
    cfg = model.cfg
    check_data(x0, cfg)
    key_t, key_noise = jax.random.split(key)
    t = jax.random.randint(key_t, (x0.shape[0],), 0, cfg.timesteps)
    noise = jax.random.normal(key_noise, x0.shape, jnp.float32)
    abar = noise_schedule(cfg).alphas_bar
    x_t = q_sample(abar, x0, t, noise)
    mse = jnp.mean((model(x_t, t) - noise) ** 2, axis=tuple(range(1, x0.ndim)))
    if cfg.min_snr is None:
        return jnp.mean(mse), {}
    snr = abar[t] / (1 - abar[t])
    weight = jnp.minimum(snr, cfg.min_snr) / snr
    return jnp.mean(weight * mse), {"mse": jnp.mean(mse)}


def create(cfg: DiffusionConfig, seed: int = 0, decay_steps: int | None = None):
    """A fresh U-Net, its Adam optimizer and, with ``ema_decay``, the weight average, split into
    (graphdef, state) of the tuple ``(model, optimizer[, ema])``.

    The learning rate warms up over ``warmup_steps``; with ``decay_steps`` it then follows a
    cosine decay to zero over that many steps in all. Gradients are clipped to norm 1 (Ho et al.).
    """
    model = (UNet if cfg.is_image else MLPDenoiser)(cfg, rngs=nnx.Rngs(seed))
    peak, warmup = cfg.learning_rate, cfg.warmup_steps
    if decay_steps:
        lr = optax.warmup_cosine_decay_schedule(
            0.0, peak, min(warmup, decay_steps - 1), decay_steps
        )
    else:
        lr = optax.linear_schedule(0.0, peak, warmup) if warmup else peak
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    parts = (model, nnx.Optimizer(model, tx, wrt=nnx.Param))
    if cfg.ema_decay is not None:
        parts += (nnx.clone(model),)
    graphdef, state = nnx.split(parts)
    # the clone shares the model's arrays; donating the state needs every leaf in its own buffer
    return graphdef, jax.tree.map(jnp.copy, state)


def update_ema(ema: Denoiser, model: Denoiser, step, decay: float) -> None:
    """ema <- d * ema + (1 - d) * model, with d = min(decay, (1 + step) / (10 + step)): early on
    the average follows the model closely, so it does not keep the random initial weights."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    avg = jax.tree.map(
        lambda a, p: d * a + (1 - d) * p, nnx.state(ema, nnx.Param), nnx.state(model, nnx.Param)
    )
    nnx.update(ema, avg)


def make_train_step(graphdef):
    """One jitted update ``state, (x0,), key -> state, metrics`` of the state of :func:`create`:
    an Adam step on :func:`loss`, then the weight average, if there is one."""

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, batch, key):
        model, optimizer, *ema = nnx.merge(graphdef, state)
        (value, metrics), grads = nnx.value_and_grad(loss, has_aux=True)(model, batch, key)
        optimizer.update(model, grads)
        if ema:
            update_ema(ema[0], model, optimizer.step[...], model.cfg.ema_decay)
        return nnx.state((model, optimizer, *ema)), {"loss": value, **metrics}

    return train_step


def ddim_timesteps(timesteps: int, steps: int) -> np.ndarray:
    """``steps`` timesteps evenly spaced from T-1 down to 0, the ones DDIM visits."""
    return np.round(np.linspace(timesteps - 1, 0, steps)).astype(np.int32)


def ddim_step(eps_model, sched: NoiseSchedule, x, t, t_prev, key, eta, clip: bool = True):
    """One DDIM update x_t -> x_{t_prev} (Song et al., 2021, eq. 12); t_prev = -1 means x_0.

    With ``clip`` (images) the prediction of x_0 is clipped to the data range [-1, 1] and eps
    re-derived from it, which keeps the few-step sampler from overshooting early, when x_t is
    mostly noise. Latent codes have no such range.
    """
    a = sched.alphas_bar[t]
    a_prev = jnp.where(t_prev >= 0, sched.alphas_bar[jnp.maximum(t_prev, 0)], 1.0)
    eps = eps_model(x, jnp.full((x.shape[0],), t))
    x0 = (x - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a)
    x0 = jnp.clip(x0, -1.0, 1.0) if clip else x0
    eps = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)
    sigma = eta * jnp.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    noise = jax.random.normal(key, x.shape, x.dtype)
    direction = jnp.sqrt(jnp.maximum(1 - a_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(a_prev) * x0 + direction + sigma * noise


def ddim_sample(eps_model, cfg: DiffusionConfig, key, n: int, steps: int, eta=0.0):
    """``n`` samples x_0 of any ``eps_model(x_t, t) -> eps``: from pure noise x_{T-1},
    ``steps`` DDIM updates (:func:`ddim_step`) in one ``lax.scan``. Call it inside ``jax.jit``."""
    sched = noise_schedule(cfg)
    ts = ddim_timesteps(cfg.timesteps, steps)
    t_prev = np.append(ts[1:], -1).astype(np.int32)
    key_x, key_steps = jax.random.split(key)
    x = jax.random.normal(key_x, (n, *cfg.data_shape), jnp.float32)

    def body(x, args):
        t, tp, k = args
        return ddim_step(eps_model, sched, x, t, tp, k, eta, clip=cfg.is_image), None

    x0, _ = jax.lax.scan(body, x, (ts, t_prev, jax.random.split(key_steps, steps)))
    return x0


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def sample(graphdef, state, key, n: int, steps: int | None = None, eta=0.0):
    """``n`` samples by DDIM with ``steps`` timesteps (default ``sample_steps``), with the weight
    average when there is one: images in [0, 1] [n, H, W], or vectors [n, D] as trained.
    ``eta=0`` is deterministic given the starting noise; ``eta=1`` adds DDPM's noise each step."""
    model, _, *ema = nnx.merge(graphdef, state)
    net = ema[0] if ema else model
    x0 = ddim_sample(net, net.cfg, key, n, steps or net.cfg.sample_steps, eta)
    return (x0 + 1.0) / 2.0 if net.cfg.is_image else x0


def generate(graphdef, state, key, n: int, steps: int | None = None, chunk: int = 500):
    """``n`` DDIM samples (:func:`sample`) drawn ``chunk`` at a time: every full chunk reuses
    one compiled sampler, and memory stays that of ``chunk`` images."""
    sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    keys = jax.random.split(key, len(sizes))
    parts = [sample(graphdef, state, k, size, steps) for k, size in zip(keys, sizes, strict=True)]
    return jnp.concatenate(parts)


def make_eval_fn(graphdef, classifier, real_test, n: int, seed: int, decode=None):
    """``eval(state)``: FD-LeNet of ``n`` samples against ``real_test`` (in [0, 1]) and their
    class coverage, by the FD-LeNet ``classifier`` (as ``gan.make_eval_fn``). ``decode`` turns
    samples into images in [0, 1], e.g. a VAE's decoder for latent codes."""

    def evaluate(state):
        fake = generate(graphdef, state, jax.random.key(seed), n)
        fake = np.asarray(fake if decode is None else decode(fake))
        return fd_lenet.sample_quality(fake, real_test, classifier)

    return evaluate
