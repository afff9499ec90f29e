"""The course_lib side of the benchmark: the library's own models and jitted train steps.

- VAE: ``vae.create`` / ``train.make_train_step(graphdef, vae.loss)``, MLP 784-400-20-400-784.
- DCGAN: the TensorFlow tutorial's G and D, built from Flax layers and the benchmark's fast
  ``layers.ConvTranspose``, trained by ``gan.make_train_step`` (one D update, then one G update
  through the updated D, in one ``jax.jit`` with donated buffers).
- char-LSTM: ``rnn.create_lm`` / ``train.make_train_step(graphdef, rnn.lm_loss)``, embedding
  128, two LSTM layers of 128.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from course_lib import gan, rnn, train, vae
from flax import nnx

from benchmarks import layers

LATENT = 100
LEAK = 0.3  # Keras' LeakyReLU default, as in the TensorFlow tutorial
BN = dict(momentum=0.9, epsilon=1e-5)  # = PyTorch's BatchNorm defaults (its momentum 0.1)
# stride-2 'same' transposed convolution in PyTorch's alignment (padding=2, output_padding=1):
# pad the dilated input by 2 before and 3 after
CONVT_S2_PAD = ((2, 3), (2, 3))
CONV_S2_PAD = ((2, 2), (2, 2))  # PyTorch Conv2d(padding=2): 28 -> 14 -> 7


def vae_config() -> vae.VAEConfig:
    return vae.VAEConfig(hidden=(400,), latent_dim=20, decoder="bernoulli", learning_rate=1e-3)


def create_vae(seed: int = 0):
    graphdef, state = vae.create(vae_config(), seed)
    return graphdef, state, train.make_train_step(graphdef, vae.loss)


def gan_config() -> gan.GANConfig:
    """The settings ``gan.make_train_step`` reads: no EMA, no augmentation, the NS loss."""
    return gan.GANConfig(
        latent_dim=LATENT, learning_rate=1e-4, beta1=0.9, ema_decay=None, augment_shift=0
    )


class TFGenerator(nnx.Module):
    """dense 100 -> 7*7*256, BN, LeakyReLU -> convT 128 (5x5, s1) -> convT 64 (5x5, s2) ->
    convT 1 (5x5, s2), tanh; BN + LeakyReLU between, no biases before BN (TF DCGAN tutorial)."""

    def __init__(self, cfg: gan.GANConfig, *, rngs: nnx.Rngs, method: str = "auto"):
        self.cfg = cfg
        kw = dict(use_bias=False, method=method, rngs=rngs)
        self.dense = nnx.Linear(cfg.latent_dim, 7 * 7 * 256, use_bias=False, rngs=rngs)
        self.bn0 = nnx.BatchNorm(7 * 7 * 256, **BN, rngs=rngs)
        self.up1 = layers.ConvTranspose(256, 128, 5, 1, padding="SAME", **kw)
        self.bn1 = nnx.BatchNorm(128, **BN, rngs=rngs)
        self.up2 = layers.ConvTranspose(128, 64, 5, 2, padding=CONVT_S2_PAD, **kw)
        self.bn2 = nnx.BatchNorm(64, **BN, rngs=rngs)
        self.up3 = layers.ConvTranspose(64, 1, 5, 2, padding=CONVT_S2_PAD, **kw)

    def __call__(self, z, labels=None, train: bool = True):
        ura = not train
        h = jax.nn.leaky_relu(self.bn0(self.dense(z), use_running_average=ura), LEAK)
        h = h.reshape(z.shape[0], 7, 7, 256)
        h = jax.nn.leaky_relu(self.bn1(self.up1(h), use_running_average=ura), LEAK)
        h = jax.nn.leaky_relu(self.bn2(self.up2(h), use_running_average=ura), LEAK)
        return jnp.tanh(self.up3(h)[..., 0])


class TFDiscriminator(nnx.Module):
    """conv 64 (5x5, s2) -> conv 128 (5x5, s2) -> dense 1; LeakyReLU and dropout 0.3 after each
    convolution. Returns one float32 logit per image."""

    def __init__(self, cfg: gan.GANConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.conv1 = nnx.Conv(1, 64, (5, 5), strides=2, padding=CONV_S2_PAD, rngs=rngs)
        self.conv2 = nnx.Conv(64, 128, (5, 5), strides=2, padding=CONV_S2_PAD, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.head = nnx.Linear(7 * 7 * 128, 1, rngs=rngs)

    def __call__(self, x, labels=None):
        h = self.drop(jax.nn.leaky_relu(self.conv1(x[..., None]), LEAK))
        h = self.drop(jax.nn.leaky_relu(self.conv2(h), LEAK))
        return self.head(h.reshape(x.shape[0], -1))[:, 0].astype(jnp.float32)


def create_dcgan(seed: int = 0, method: str = "auto"):
    """(graphdef, state, train_step): these G and D assembled by ``gan.assemble`` as a ``gan.GAN``.

    ``g_avg`` is never updated (``ema_decay=None``); the step passes its donated buffers through.
    ``method`` is the transposed convolutions' formulation (``layers.conv_transpose``); "auto",
    the default, is what the benchmark reports unless told otherwise.
    """
    cfg = gan_config()
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    g, d = TFGenerator(cfg, rngs=rngs, method=method), TFDiscriminator(cfg, rngs=rngs)
    graphdef, state = gan.assemble(g, d, cfg)
    return graphdef, state, gan.make_train_step(graphdef)


def lm_config(vocab_size: int) -> rnn.CharLMConfig:
    return rnn.CharLMConfig(
        vocab_size=vocab_size,
        embed_dim=128,
        hidden=128,
        layers=2,
        cell="lstm",
        dropout=0.0,
        tie_embeddings=False,
        learning_rate=2e-3,
        clip_norm=5.0,
    )


def create_char_lstm(vocab_size: int, seed: int = 0):
    graphdef, state = rnn.create_lm(lm_config(vocab_size), seed)
    return graphdef, state, train.make_train_step(graphdef, rnn.lm_loss)
