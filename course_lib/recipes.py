"""Training recipes: what to train, on which data, for how long, as plain dataclasses.

Taught in chapter 5.2 (05a_vae_in_practice, 05b_gan_in_practice, 05c_rnn_in_practice). ``quick``
recipes are the defaults: each trains in about two minutes on a 2-core CPU. ``full`` recipes train
longer, for a GPU (``--profile full``). ``prepare_<model>(recipe)`` is the first step of a run: it
loads and prepares the data and resolves the model's config, and says how many training examples
there are (``train_size``). ``course_lib.runs`` has the other steps and the whole run.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from course_lib import data, diffusion, gan, metrics, pixels, rnn, transformer, vae

VALIDATION_SEED = 20240601  # fixed, so the validation split never depends on --seed


@dataclasses.dataclass(frozen=True)
class VAERecipe:
    dataset: str = "mnist10k"
    steps: int = 4000
    batch_size: int = 128
    seed: int = 0
    model: vae.VAEConfig = vae.VAEConfig(hidden=(512, 256), weight_decay=0.05)
    val_fraction: float = 0.1  # held out of the train split for early stopping; 0: train on all
    eval_every: int = 250


GAN_CONDITIONING = ("clusters", "labels", "none")


@dataclasses.dataclass(frozen=True)
class GANRecipe:
    dataset: str = "mnist10k"
    steps: int = 2100
    batch_size: int = 64
    seed: int = 0
    model: gan.GANConfig = gan.GANConfig(width=32, learning_rate=2e-3, beta1=0.0)
    eval_every: int = 700
    eval_samples: int = 2000
    # what G and D are conditioned on: "clusters" (k-means of the training images, no labels: a
    # self-conditioned GAN), "labels" (the digits: a conditional GAN) or "none"
    conditioning: str = "clusters"
    num_clusters: int = 50

    def __post_init__(self):
        if self.conditioning not in GAN_CONDITIONING:
            raise ValueError(
                f"conditioning must be one of {GAN_CONDITIONING}, got {self.conditioning!r}"
            )


@dataclasses.dataclass(frozen=True)
class RNNRecipe:
    dataset: str = "tang5"
    steps: int = 1000
    batch_size: int = 64
    seed: int = 0
    model: rnn.CharLMConfig | None = None  # None: CharLMConfig(vocab_size=len(vocab))
    eval_every: int = 100
    temperature: float = 0.8
    n_samples: int = 200


@dataclasses.dataclass(frozen=True)
class ForecastRecipe:
    dataset: str = "co2"
    steps: int = 2000
    batch_size: int = 32
    seed: int = 0
    model: rnn.ForecastConfig = rnn.ForecastConfig()


@dataclasses.dataclass(frozen=True)
class DiffusionRecipe:
    dataset: str = "mnist10k"
    steps: int = 8000
    batch_size: int = 128
    seed: int = 0
    # Latent diffusion (Rombach et al., 2022): the codes of the VAE this recipe trains (the quick
    # one of 05a, from the cache of runs.trained), denoised by an MLP. None: diffuse the pixels
    # with a U-Net (:func:`pixel_diffusion`).
    autoencoder: VAERecipe | None = VAERecipe()
    model: diffusion.DiffusionConfig = diffusion.DiffusionConfig(width=256, sample_steps=50)
    eval_every: int = 2000
    eval_samples: int = 2000


@dataclasses.dataclass(frozen=True)
class TransformerRecipe:
    dataset: str = "tang5"
    steps: int = 850  # 163 s on 2 CPU cores (about 190 ms a step, with evaluations)
    batch_size: int = 64
    seed: int = 0
    model: transformer.TransformerConfig | None = None  # None: TransformerConfig(len(vocab))
    eval_every: int = 100
    temperature: float = 0.8
    n_samples: int = 200


QUICK = {
    "vae": VAERecipe(),
    "gan": GANRecipe(),
    "rnn": RNNRecipe(),
    "forecast": ForecastRecipe(),
    "diffusion": DiffusionRecipe(),
    "transformer": TransformerRecipe(),
}
# Built from the quick recipes, so that every setting not named here stays what it is there.
FULL = {
    "vae": dataclasses.replace(QUICK["vae"], steps=20000, batch_size=256),
    "gan": dataclasses.replace(
        QUICK["gan"],
        steps=20000,
        batch_size=128,
        eval_every=2000,
        model=dataclasses.replace(QUICK["gan"].model, width=64, learning_rate=5e-4),
    ),
    "rnn": dataclasses.replace(QUICK["rnn"], steps=8000),
    "forecast": dataclasses.replace(QUICK["forecast"], steps=8000),
    "diffusion": dataclasses.replace(QUICK["diffusion"], steps=20000, eval_every=2000),
    "transformer": dataclasses.replace(QUICK["transformer"], steps=8000),
}
PROFILES = {"quick": QUICK, "full": FULL}
PROFILE_ENV_VAR = "COURSE_LIB_PROFILE"


def recipe_for(model: str, profile: str = "quick"):
    """The recipe of ``model`` (vae, gan, rnn, forecast, diffusion, transformer) in ``profile``
    (quick, full)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be 'quick' or 'full', got {profile!r}")
    if model not in QUICK:
        raise ValueError(f"model must be one of {sorted(QUICK)}, got {model!r}")
    return PROFILES[profile][model]


DIFFUSION_SPACES = ("latent", "pixels")


def pixel_diffusion(recipe: DiffusionRecipe) -> DiffusionRecipe:
    """``recipe`` diffusing the pixels with a width-16 U-Net instead of a VAE's codes (chapter 8).

    A U-Net step at batch 32 costs about 4x an MLP step at batch 128 on 2 CPU cores, so it gets
    half the steps at a quarter of the batch: about twice the latent model's own training time.
    """
    model = dataclasses.replace(recipe.model, width=16, sample_steps=20, min_snr=5.0)
    steps = max(1, recipe.steps // 2)
    return dataclasses.replace(recipe, autoencoder=None, model=model, batch_size=32, steps=steps)


def profile_from_env() -> str:
    """The chapters' run profile: ``$COURSE_LIB_PROFILE``, "quick" (default, CPU) or "full" (GPU).

    Every chapter reads it in its parameters cell, e.g. ``COURSE_LIB_PROFILE=full make lab``.
    """
    profile = os.environ.get(PROFILE_ENV_VAR, "quick")
    if profile not in PROFILES:
        raise ValueError(
            f"${PROFILE_ENV_VAR}={profile!r}: use 'quick' (the CPU default) or 'full' (a longer "
            "run for a GPU), or unset it."
        )
    return profile


def with_overrides(recipe, **changes):
    """A copy of ``recipe`` with the non-None ``changes`` applied (the CLI's flags)."""
    return dataclasses.replace(recipe, **{k: v for k, v in changes.items() if v is not None})


def holdout_split(n: int, fraction: float):
    """Indices (fit, validation) of a fixed random holdout of ``fraction`` of ``n`` examples."""
    perm = np.random.default_rng(VALIDATION_SEED).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# --- VAE -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VAEData:
    x_train: np.ndarray  # [N, 28, 28] in {0, 1} (Bernoulli decoder) or [0, 1] (Gaussian)
    x_test: np.ndarray
    fit_idx: np.ndarray  # the examples trained on; val_idx: those held out for early stopping
    val_idx: np.ndarray
    config: vae.VAEConfig

    @property
    def train_size(self) -> int:
        return len(self.fit_idx)


def prepare_vae(recipe: VAERecipe) -> VAEData:
    x_train, _ = data.load(recipe.dataset, "train")
    x_test, _ = data.load(recipe.dataset, "test")
    if recipe.model.decoder == "bernoulli":
        x_train, x_test = pixels.binarize(x_train), pixels.binarize(x_test)
    else:
        x_train, x_test = x_train.astype(np.float32) / 255, x_test.astype(np.float32) / 255
    cfg = dataclasses.replace(recipe.model, image_shape=x_train.shape[1:])
    fit_idx, val_idx = holdout_split(len(x_train), recipe.val_fraction)
    return VAEData(x_train, x_test, fit_idx, val_idx, cfg)


# --- GAN -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GANData:
    real: np.ndarray  # training images in [-1, 1], G's tanh range
    class_ids: np.ndarray | None  # what G and D are conditioned on (gan.class_ids), or None
    labels: np.ndarray  # the digits, batched beside the images when there are no class ids
    real_test: np.ndarray  # test images in [0, 1], what the FD classifier reads
    config: gan.GANConfig
    cluster_seconds: float  # k-means time; 0 without clustering

    @property
    def train_size(self) -> int:
        return len(self.real)

    @property
    def class_probs(self):
        """Each class id's share of the training images (None: unconditional)."""
        ids = self.class_ids
        return None if ids is None else np.bincount(ids) / len(ids)


def prepare_gan(recipe: GANRecipe, images=None, labels=None) -> GANData:
    """The GAN's data: the dataset's training split, or the given uint8 ``images`` with their
    ``labels`` (e.g. a person's labels and pseudo-labels, 06a_annotation_lab)."""
    if (images is None) != (labels is None):
        raise ValueError("pass both images and labels, or neither (the dataset's train split)")
    x_train, y_train = data.load(recipe.dataset, "train") if images is None else (images, labels)
    x_test, _ = data.load(recipe.dataset, "test")
    real = x_train.astype(np.float32) / 127.5 - 1.0
    start = time.perf_counter()
    ids = gan.class_ids(recipe.conditioning, real, y_train, recipe.num_clusters, recipe.seed)
    seconds = time.perf_counter() - start if recipe.conditioning == "clusters" else 0.0
    cfg = gan.config_for(recipe.model, x_train.shape[1:], ids)
    real_test = x_test.astype(np.float32) / 255.0
    return GANData(real, ids, y_train, real_test, cfg, seconds)


# --- character language model ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LMData:
    vocab: rnn.CharVocab
    x_train: np.ndarray  # [N, 25] inputs: BOS then the poem's 24 characters
    y_train: np.ndarray  # [N, 25] targets: the 24 characters then EOS
    x_val: np.ndarray
    y_val: np.ndarray
    config: rnn.CharLMConfig | transformer.TransformerConfig

    @property
    def train_size(self) -> int:
        return len(self.x_train)


def prepare_rnn(recipe: RNNRecipe | TransformerRecipe) -> LMData:
    """The poems as character ids, for the LSTM (``RNNRecipe``) or the Transformer (chapter 8)."""
    train_poems = data.load(recipe.dataset, "train")
    vocab = rnn.CharVocab(train_poems)
    default = rnn.CharLMConfig if isinstance(recipe, RNNRecipe) else transformer.TransformerConfig
    cfg = recipe.model or default(vocab_size=len(vocab))
    if cfg.vocab_size != len(vocab):
        raise ValueError(f"model.vocab_size={cfg.vocab_size} but the vocabulary has {len(vocab)}")
    x_train, y_train = rnn.encode_poems(train_poems, vocab)
    x_val, y_val = rnn.encode_poems(data.load(recipe.dataset, "val"), vocab)
    return LMData(vocab, x_train, y_train, x_val, y_val, cfg)


# --- time-series forecast --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ForecastData:
    """co2 windows, each relative to its last value and divided by ``scale`` (rnn.make_windows).

    The test origins are every month from the end of the training years to the last full
    horizon; ``truth`` and ``seasonal_naive`` are in ppm, [origins, horizon].
    """

    train_values: np.ndarray  # the training years, ppm
    tail: np.ndarray  # the test years with ``context`` months before them, ppm
    scale: float  # std of the horizon-month change over the training years
    x: np.ndarray  # training windows
    y: np.ndarray
    x_test: np.ndarray
    last: np.ndarray  # each test origin's last observed value
    truth: np.ndarray
    seasonal_naive: np.ndarray
    config: rnn.ForecastConfig

    @property
    def train_size(self) -> int:
        return len(self.train_values)

    def to_ppm(self, y) -> np.ndarray:
        """Normalised forecasts of the test origins back in ppm."""
        return self.last[:, None] + self.scale * np.asarray(y)


def prepare_forecast(recipe: ForecastRecipe) -> ForecastData:
    cfg = recipe.model
    series = data.load(recipe.dataset, "all").values
    n_train = len(data.load(recipe.dataset, "train").values)
    train_values = series[:n_train]
    scale = float(np.std(train_values[cfg.horizon :] - train_values[: -cfg.horizon]))
    x, y, _ = rnn.make_windows(train_values, cfg.context, cfg.horizon, scale)
    tail = series[n_train - cfg.context :]
    x_test, y_test, last = rnn.make_windows(tail, cfg.context, cfg.horizon, scale)
    naive = np.stack(
        [
            metrics.seasonal_naive_forecast(tail[i : i + cfg.context], cfg.horizon)
            for i in range(len(x_test))
        ]
    )
    truth = last[:, None] + scale * y_test
    return ForecastData(train_values, tail, scale, x, y, x_test, last, truth, naive, cfg)


# --- diffusion -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DiffusionData:
    real: np.ndarray  # what is diffused: images in [-1, 1], or latent codes / latent_scale
    real_test: np.ndarray  # test images in [0, 1], what the FD classifier reads
    config: diffusion.DiffusionConfig
    decoder: tuple | None = None  # the autoencoder's (graphdef, state); None: pixel diffusion
    latent_scale: float = 1.0  # the codes' standard deviation, divided out of ``real``
    autoencoder_seconds: float = 0.0  # the autoencoder's own training time

    def to_images(self, samples):
        """The model's samples as images in [0, 1]: codes go through the VAE's decoder."""
        if self.decoder is None:
            return samples
        return vae.decode(*self.decoder, samples * self.latent_scale)

    @property
    def train_size(self) -> int:
        return len(self.real)


def prepare_diffusion(recipe: DiffusionRecipe, autoencoder=None) -> DiffusionData:
    """The diffusion model's data (chapter 8, 08_trends): the images as the GAN sees them, or,
    given the ``autoencoder`` (``runs.trained("vae", recipe.autoencoder)``), the posterior means
    of its training images, scaled to unit variance."""
    x_train, _ = data.load(recipe.dataset, "train")
    x_test, _ = data.load(recipe.dataset, "test")
    real_test = x_test.astype(np.float32) / 255.0
    if autoencoder is None:
        cfg = dataclasses.replace(recipe.model, data_shape=tuple(x_train.shape[1:]))
        return DiffusionData(x_train.astype(np.float32) / 127.5 - 1.0, real_test, cfg)
    ae = autoencoder
    codes = np.asarray(vae.encode(ae.graphdef, ae.state, ae.prepared.x_train)[0])
    scale = float(codes.std())
    cfg = dataclasses.replace(recipe.model, data_shape=(codes.shape[1],))
    decoder, seconds = (ae.graphdef, ae.state), ae.metrics["train_seconds"]
    return DiffusionData(codes / scale, real_test, cfg, decoder, scale, seconds)
