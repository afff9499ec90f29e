"""Generative adversarial network (GAN): DCGAN and MLP GAN, losses and one jitted step.

Taught in chapters 3.2 (algorithm), 4.2 (the minimax objective, the optimal discriminator and the
non-saturating loss) and 5.2.2 (practice, 05b_gan_in_practice). The seed article's formulas in
4.2.3 give G and D the same loss; the correct losses are ``discriminator_loss`` and
``generator_loss`` below, computed from logits so that log(sigmoid(.)) never underflows.

One ``train_step`` updates D, then G against the freshly updated D, inside a single ``jax.jit``.
With ``num_classes`` set, both networks are conditioned on a class id: the k-means cluster of each
training image (``cluster_ids``, a self-conditioned GAN that needs no labels; 05b) or the digit
label (a conditional GAN, for the chapter on human annotation).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from course_lib import fd_lenet, pixels


@dataclasses.dataclass(frozen=True)
class GANConfig:
    arch: str = "dcgan"  # "dcgan" (28x28) or "mlp" (any size, e.g. 8x8 digits)
    image_shape: tuple[int, int] = (28, 28)
    latent_dim: int = 64
    width: int = 64  # channels (DCGAN) or hidden units / 2 (MLP)
    num_classes: int | None = None  # condition G and D on a class id in [0, num_classes)
    learning_rate: float = 2e-4
    beta1: float = 0.5
    loss: str = "non_saturating"  # or "minimax", the original log(1 - D(G(z))) that saturates
    ema_decay: float | None = 0.999  # sample from a moving average of G's weights; None: off
    augment_shift: int = 2  # DiffAugment translation in pixels for D's inputs; 0: off
    dtype: str = "float32"

    def __post_init__(self):
        if self.arch not in ("dcgan", "mlp"):
            raise ValueError(f"arch must be 'dcgan' or 'mlp', got {self.arch!r}")
        if self.arch == "dcgan" and tuple(self.image_shape) != (28, 28):
            raise ValueError("the DCGAN is built for 28x28 images; use arch='mlp' for others")
        if self.loss not in ("non_saturating", "minimax"):
            raise ValueError(f"loss must be 'non_saturating' or 'minimax', got {self.loss!r}")


class Upsample(nnx.Module):
    """Doubles height and width: a 3x3 convolution to 4x the channels, then depth_to_space.

    It learns the same family of maps as a stride-2 transposed convolution but never multiplies
    the zeros that a transposed convolution inserts, which is much faster on CPU.
    """

    def __init__(self, cin: int, cout: int, *, dtype, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, 4 * cout, (3, 3), dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return pixels.depth_to_space(self.conv(x))


class DCGANGenerator(nnx.Module):
    def __init__(self, cfg: GANConfig, *, rngs: nnx.Rngs):
        c, kw = cfg.width, dict(dtype=cfg.dtype, rngs=rngs)
        extra = cfg.num_classes or 0
        self.dense = nnx.Linear(cfg.latent_dim + extra, 7 * 7 * 2 * c, **kw)
        self.bn0 = nnx.BatchNorm(7 * 7 * 2 * c, momentum=0.9, **kw)
        self.up1 = Upsample(2 * c, c, **kw)  # 7 -> 14
        self.bn1 = nnx.BatchNorm(c, momentum=0.9, **kw)
        self.up2 = Upsample(c, 1, **kw)  # 14 -> 28
        self.c = c

    def __call__(self, z, train: bool = True):
        h = jax.nn.relu(self.bn0(self.dense(z), use_running_average=not train))
        h = h.reshape(z.shape[0], 7, 7, 2 * self.c)
        h = jax.nn.relu(self.bn1(self.up1(h), use_running_average=not train))
        return jnp.tanh(self.up2(h)[..., 0])


class DCGANDiscriminator(nnx.Module):
    def __init__(self, cfg: GANConfig, *, rngs: nnx.Rngs):
        c, kw = cfg.width, dict(dtype=cfg.dtype, rngs=rngs)
        self.conv1 = nnx.Conv(1, c, (4, 4), strides=2, **kw)  # 28 -> 14
        self.conv2 = nnx.Conv(c, 2 * c, (4, 4), strides=2, **kw)  # 14 -> 7
        self.features = 7 * 7 * 2 * c

    def __call__(self, x):
        h = jax.nn.leaky_relu(self.conv1(x[..., None]), 0.2)
        h = jax.nn.leaky_relu(self.conv2(h), 0.2)
        return h.reshape(x.shape[0], -1)


class MLPGenerator(nnx.Module):
    def __init__(self, cfg: GANConfig, *, rngs: nnx.Rngs):
        h, kw = 2 * cfg.width, dict(dtype=cfg.dtype, rngs=rngs)
        pixels = cfg.image_shape[0] * cfg.image_shape[1]
        self.l1 = nnx.Linear(cfg.latent_dim + (cfg.num_classes or 0), h, **kw)
        self.l2 = nnx.Linear(h, h, **kw)
        self.out = nnx.Linear(h, pixels, **kw)
        self.image_shape = tuple(cfg.image_shape)

    def __call__(self, z, train: bool = True):
        h = jax.nn.leaky_relu(self.l1(z), 0.2)
        h = jax.nn.leaky_relu(self.l2(h), 0.2)
        return jnp.tanh(self.out(h)).reshape(z.shape[0], *self.image_shape)


class MLPDiscriminator(nnx.Module):
    def __init__(self, cfg: GANConfig, *, rngs: nnx.Rngs):
        h, kw = 2 * cfg.width, dict(dtype=cfg.dtype, rngs=rngs)
        self.l1 = nnx.Linear(cfg.image_shape[0] * cfg.image_shape[1], h, **kw)
        self.l2 = nnx.Linear(h, h, **kw)
        self.features = h

    def __call__(self, x):
        h = jax.nn.leaky_relu(self.l1(x.reshape(x.shape[0], -1)), 0.2)
        return jax.nn.leaky_relu(self.l2(h), 0.2)


class ClassProbs(nnx.Variable):
    """How often each class id occurs in the training data: G draws its classes from these."""


class Generator(nnx.Module):
    """G(z[, y]) -> images in [-1, 1].

    A conditioned G also holds ``class_probs`` (uniform unless ``create`` is given the data's), so
    that ``generate`` samples p(x) = sum_y p(y) p(x | y), the whole data distribution.
    """

    def __init__(self, cfg: GANConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        net = DCGANGenerator if cfg.arch == "dcgan" else MLPGenerator
        self.net = net(cfg, rngs=rngs)
        if cfg.num_classes:
            self.class_probs = ClassProbs(jnp.full((cfg.num_classes,), 1.0 / cfg.num_classes))

    def __call__(self, z, labels=None, train: bool = True):
        if self.cfg.num_classes:
            z = jnp.concatenate(
                [z, jax.nn.one_hot(labels, self.cfg.num_classes, dtype=z.dtype)], -1
            )
        return self.net(z, train=train)


class Discriminator(nnx.Module):
    """D(x[, y]) -> one logit per image; log D = log sigmoid(logit).

    With labels it is a projection discriminator (Miyato & Koyama, 2018): the logit gains the
    inner product of the features with a learned embedding of the label.
    """

    def __init__(self, cfg: GANConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        net = DCGANDiscriminator if cfg.arch == "dcgan" else MLPDiscriminator
        self.net = net(cfg, rngs=rngs)
        self.head = nnx.Linear(self.net.features, 1, dtype=cfg.dtype, rngs=rngs)
        if cfg.num_classes:
            self.embed = nnx.Embed(cfg.num_classes, self.net.features, dtype=cfg.dtype, rngs=rngs)

    def __call__(self, x, labels=None):
        h = self.net(x)
        logit = self.head(h)[:, 0]
        if self.cfg.num_classes:
            logit = logit + jnp.sum(self.embed(labels) * h, axis=-1)
        return logit.astype(jnp.float32)


def discriminator_loss(real_logits, fake_logits):
    """-E[log D(x)] - E[log(1 - D(G(z)))], the binary cross-entropy D minimises."""
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def generator_loss(fake_logits, kind: str = "non_saturating"):
    """G's loss: ``non_saturating`` is -E[log D(G(z))]; ``minimax`` is E[log(1 - D(G(z)))].

    Both have the same fixed point, but the minimax loss has vanishing gradients exactly when D
    confidently rejects the fakes, i.e. early in training (chapter 4.2).
    """
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-fake_logits))
    return -jnp.mean(jax.nn.softplus(fake_logits))


class GAN(nnx.Module):
    """Everything one GAN run updates, by name: ``g``, ``d``, their Adam optimizers ``opt_g`` and
    ``opt_d``, and ``g_avg``, an exponential moving average of G's weights (Yazici et al., 2019).

    ``g_avg`` draws visibly cleaner samples than the last G, whose weights oscillate around the
    adversarial equilibrium (05b); training never reads it.
    """

    def __init__(self, g: nnx.Module, d: nnx.Module, cfg: GANConfig):
        tx = optax.adam(cfg.learning_rate, b1=cfg.beta1)
        self.g, self.d = g, d
        self.opt_g = nnx.Optimizer(g, tx, wrt=nnx.Param)
        self.opt_d = nnx.Optimizer(d, tx, wrt=nnx.Param)
        self.g_avg = nnx.clone(g)


def assemble(g: nnx.Module, d: nnx.Module, cfg: GANConfig):
    """A :class:`GAN` of the networks ``g`` and ``d``, split into (graphdef, state) for the step.

    Any G(z, labels, train) and D(x, labels) -> logits will do (the benchmark brings its own).
    """
    graphdef, state = nnx.split(GAN(g, d, cfg))
    # the clone shares G's arrays; donating the state needs every leaf in its own buffer
    return graphdef, jax.tree.map(jnp.copy, state)


def create(cfg: GANConfig, seed: int = 0, class_probs=None):
    """Fresh G and D of ``cfg`` as a :class:`GAN`, split into (graphdef, state).

    ``class_probs`` ([num_classes], summing to 1) are the classes' frequencies in the training data,
    from which a conditioned G draws its classes; default uniform.
    """
    rngs = nnx.Rngs(seed)
    g, d = Generator(cfg, rngs=rngs), Discriminator(cfg, rngs=rngs)
    if class_probs is not None:
        probs = np.asarray(class_probs, np.float32)
        if not cfg.num_classes or probs.shape != (cfg.num_classes,):
            raise ValueError(
                f"class_probs must have shape [num_classes] = [{cfg.num_classes}], got "
                f"{probs.shape}; pass the share of each class id among the training images"
            )
        if np.any(probs < 0) or not np.isclose(probs.sum(), 1.0, atol=1e-4):
            raise ValueError("class_probs must be non-negative and sum to 1")
        g.class_probs[...] = jnp.asarray(probs)
    return assemble(g, d, cfg)


def update_average(g_avg: Generator, g: Generator, step, decay: float) -> None:
    """g_avg <- d * g_avg + (1 - d) * g, with d warming up as (1 + step) / (10 + step) so the
    average does not drag in the untrained first weights; BatchNorm statistics are copied."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    avg = jax.tree.map(
        lambda a, p: d * a + (1 - d) * p, nnx.state(g_avg, nnx.Param), nnx.state(g, nnx.Param)
    )
    nnx.update(g_avg, avg, nnx.state(g, nnx.BatchStat))


def cluster_ids(images, num_clusters: int, seed: int = 0) -> np.ndarray:
    """The k-means cluster of every image (pixels as features): a self-conditioned GAN's classes.

    An unconditional G must carve every kind of digit out of one continuous latent space, and on
    mnist10k it ends up drawing less varied digits than the data holds (05b). Self-conditioning
    (Liu et al., 2020, "Diverse image generation via self-conditioned GANs") gives G and D a
    discrete cluster id y instead of a label: D learns what is real *for that cluster*, and G must
    cover every cluster. ``generate`` draws y with the clusters' frequencies, so the model is still
    one of p(x), learned without labels. Liu et al. cluster D's features and re-cluster during
    training; clustering the pixels once, before training, is enough for MNIST.
    """
    from sklearn.cluster import KMeans  # scikit-learn: k-means++ seeding, deterministic per seed

    flat = np.asarray(images, np.float32).reshape(len(images), -1)
    if not 2 <= num_clusters <= len(flat):
        raise ValueError(
            f"num_clusters must be between 2 and the number of images ({len(flat)}), got "
            f"{num_clusters}; lower it, or train without conditioning"
        )
    kmeans = KMeans(num_clusters, n_init=1, random_state=seed).fit(flat)
    return kmeans.labels_.astype(np.int32)


def class_ids(conditioning: str, images, labels, num_clusters: int, seed: int):
    """The class id of every training image that G and D are conditioned on, or None.

    ``conditioning`` is "clusters" (:func:`cluster_ids` of the ``images``, any scale; no labels),
    "labels" (the digits ``labels``: a conditional GAN) or "none". Taught in 05b_gan_in_practice.
    """
    if conditioning == "none":
        return None
    if conditioning == "labels":
        return np.asarray(labels, np.int32)
    if conditioning == "clusters":
        return cluster_ids(images, num_clusters, seed)
    raise ValueError(f"conditioning must be 'clusters', 'labels' or 'none', got {conditioning!r}")


def config_for(base: GANConfig, image_shape, ids=None) -> GANConfig:
    """``base`` for images of ``image_shape``: a DCGAN for 28x28, else an MLP; conditioned on
    ``ids`` (:func:`class_ids`) when given, else unconditional."""
    arch = "dcgan" if tuple(image_shape) == (28, 28) else "mlp"
    num_classes = None if ids is None else int(np.max(ids)) + 1
    return dataclasses.replace(
        base, arch=arch, image_shape=tuple(image_shape), num_classes=num_classes
    )


def to_unit(images):
    """Generator output in [-1, 1] to pixels in [0, 1]."""
    return (images + 1.0) / 2.0


def check_batch(x, y, image_shape) -> None:
    """Fail at trace time, with the fix, on images that are not float [B, H, W] in [-1, 1]."""
    pixels.check_image_batch(x, image_shape, "GANConfig", "x.astype('float32') / 127.5 - 1")
    if y.shape != x.shape[:1] or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"expected integer labels of shape [{x.shape[0]}], got {y.dtype}{y.shape}")


def forward_keeping_backward(g: nnx.Module, z, labels):
    """``fake = G(z, labels)`` and ``backward(d_loss/d_fake) -> (d_loss/d_G's parameters,)``.

    G's loss is taken through the D *after* D's update, so it cannot be computed together with the
    fakes. Recomputing G(z) inside G's gradient would run G's forward pass twice per step; PyTorch's
    DCGAN example avoids that with ``fake.detach()`` for D and a later ``backward`` through G.
    ``jax.vjp`` is the JAX form: it runs G once, keeps what the backward pass needs, and returns
    the pullback. ``merge(..., copy=True)`` gives the traced forward its own G, whose new
    BatchNorm statistics are then copied into ``g``. Measured with
    ``python -m benchmarks.vjp_saving`` on the quick recipe's DCGAN (width 32, batch 64) on a busy
    2-core CPU: 80 against 88 ms per step in the fastest of 7 interleaved rounds (median 98
    against 118 ms), a tenth of the step.
    """
    graph, params, rest = nnx.split(g, nnx.Param, ...)

    def images_of(params):
        g_now = nnx.merge(graph, params, rest, copy=True)
        return g_now(z, labels), nnx.state(g_now, nnx.BatchStat)

    fake, backward, batch_stats = jax.vjp(images_of, params, has_aux=True)
    nnx.update(g, batch_stats)
    return fake, backward


def make_train_step(graphdef):
    """One jitted GAN step: ``state, (images, labels), key -> state, metrics``.

    ``images`` are in [-1, 1]. G draws one batch of fakes; D is updated on real and fake images;
    then G is updated through the *new* D on the same fakes, all in one compiled program.
    """

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, batch, key):
        gan = nnx.merge(graphdef, state)
        x, y = batch
        cfg = gan.g.cfg
        check_batch(x, y, cfg.image_shape)
        key_z, key_real, key_fake, key_g = jax.random.split(key, 4)
        z = jax.random.normal(key_z, (x.shape[0], cfg.latent_dim))
        fake, g_backward = forward_keeping_backward(gan.g, z, y)

        # 1) D: real -> 1, fake -> 0; ``fake`` is a plain array here, so G gets no gradient
        real_in = pixels.translate(key_real, x, cfg.augment_shift, fill=-1.0)
        fake_in = pixels.translate(key_fake, fake, cfg.augment_shift, fill=-1.0)

        def d_loss_fn(d):
            real_logits, fake_logits = d(real_in, y), d(fake_in, y)
            return discriminator_loss(real_logits, fake_logits), (real_logits, fake_logits)

        d_step = nnx.value_and_grad(d_loss_fn, has_aux=True)
        (d_loss, (real_logits, fake_logits)), d_grads = d_step(gan.d)
        gan.opt_d.update(gan.d, d_grads)

        # 2) G: the loss through the updated D, differentiated back into G's parameters
        # D as an argument (not a closure) lets a D with state, e.g. dropout's RNG, update it
        def g_loss_of_images(d, images):
            shifted = pixels.translate(key_g, images, cfg.augment_shift, fill=-1.0)
            return generator_loss(d(shifted, y), cfg.loss)

        g_loss, image_grads = nnx.value_and_grad(g_loss_of_images, argnums=1)(gan.d, fake)
        (g_grads,) = g_backward(image_grads)
        gan.opt_g.update(gan.g, g_grads)
        if cfg.ema_decay:
            update_average(gan.g_avg, gan.g, gan.opt_g.step[...], cfg.ema_decay)
        metrics = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
            "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
        }
        return nnx.state(gan), metrics

    return train_step


@functools.partial(jax.jit, static_argnums=(0, 3))
def generate(graphdef, state, key, n: int, labels=None):
    """``n`` images in [0, 1] from G in inference mode (BatchNorm running statistics); from the
    weight average of G unless ``GANConfig.ema_decay`` is None.

    A conditioned G draws each image's class from ``class_probs`` unless ``labels`` are given.
    """
    gan = nnx.merge(graphdef, state)
    g = gan.g_avg if gan.g.cfg.ema_decay else gan.g
    z = jax.random.normal(key, (n, g.cfg.latent_dim))
    if g.cfg.num_classes and labels is None:
        log_probs = jnp.log(g.class_probs[...])
        labels = jax.random.categorical(jax.random.fold_in(key, 1), log_probs, shape=(n,))
    return to_unit(g(z, labels, train=False))


def make_eval_fn(graphdef, classifier, real_test, n: int, seed: int):
    """``eval(state)``: FD-LeNet of ``n`` samples against ``real_test`` (in [0, 1]) and their
    class coverage, by the FD-LeNet ``classifier`` (05b_gan_in_practice)."""

    def evaluate(state):
        fake = np.asarray(generate(graphdef, state, jax.random.key(seed), n))
        return fd_lenet.sample_quality(fake, real_test, classifier)

    return evaluate
