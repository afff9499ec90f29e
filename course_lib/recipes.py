"""Training recipes: data + model + loop + metrics, as run by ``python -m course_lib train``.

Taught in chapter 5.2 (05a_vae_in_practice, 05b_gan_in_practice, 05c_rnn_in_practice). Each
``run_*`` takes a plain dataclass recipe, trains with :func:`course_lib.train.fit`, measures the
result on held-out data and returns a flat dict of metrics (the CLI prints it as JSON). With
``out`` set it also writes checkpoints, sample images, ``history.json`` and ``metrics.json``.

``quick`` recipes are the defaults: each trains in about two minutes on a 2-core CPU. ``full``
recipes train longer for a GPU (``--profile full``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import time

import jax
import numpy as np

from course_lib import data, gan, metrics, plotting, rnn, train, vae

VALIDATION_SEED = 20240601  # fixed, so the validation split never depends on --seed


@dataclasses.dataclass(frozen=True)
class VAERecipe:
    dataset: str = "mnist10k"
    steps: int = 4000
    batch_size: int = 128
    seed: int = 0
    model: vae.VAEConfig = vae.VAEConfig(hidden=(512, 256), weight_decay=0.05)
    val_fraction: float = 0.1  # held out of the train split for early stopping
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


def with_overrides(recipe, **changes):
    """A copy of ``recipe`` with the non-None ``changes`` applied (the CLI's flags)."""
    return dataclasses.replace(recipe, **{k: v for k, v in changes.items() if v is not None})


# --- helpers ---------------------------------------------------------------------------------


def _write_json(path: pathlib.Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
    os.replace(tmp, path)


def _start_run(out, resume: bool):
    """Check ``resume`` first, then create ``out``; return (out, checkpoint directory).

    A fresh run empties old checkpoints; ``resume`` requires one. Called after the data and the
    configuration are validated, so a rejected run leaves nothing on disk.
    """
    if out is None:
        if resume:
            raise train.CheckpointError("resume needs an output directory (--out) to read from")
        return None, None
    out = pathlib.Path(out)
    ckpt = out / "checkpoints"
    if resume and train.latest_checkpoint_step(ckpt) is None:
        raise train.CheckpointError(
            f"no checkpoint to resume from in {ckpt}; run without --resume to start afresh"
        )
    if not resume:
        if ckpt.exists():
            shutil.rmtree(ckpt)
        for stale in ("metrics.json", "history.json"):  # never leave a previous run's results
            (out / stale).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out, ckpt


def _finish(out, result: dict, history: dict) -> dict:
    if out is not None:
        _write_json(out / "history.json", history)
        _write_json(out / "metrics.json", result)
    return result


def _timing(res: train.FitResult) -> dict:
    return {
        "steps": res.steps,
        "train_seconds": round(res.train_seconds, 2),
        "compile_seconds": round(res.compile_seconds, 2),
        "steps_per_second": round(res.steps_per_second, 2),
    }


def holdout_split(n: int, fraction: float):
    """Indices (fit, validation) of a fixed random holdout of ``fraction`` of ``n`` examples."""
    perm = np.random.default_rng(VALIDATION_SEED).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def binarize(images) -> np.ndarray:
    """uint8 pixels -> {0, 1} float32 at the threshold 0.5 (pixel >= 128)."""
    return (np.asarray(images) >= 128).astype(np.float32)


# --- VAE -------------------------------------------------------------------------------------


def run_vae(recipe: VAERecipe = VAERecipe(), out=None, resume: bool = False, progress: bool = True):
    """Train a VAE with early stopping on a validation holdout; report the test negative ELBO."""
    x_train, _ = data.load(recipe.dataset, "train")
    x_test, _ = data.load(recipe.dataset, "test")
    prep = (
        binarize if recipe.model.decoder == "bernoulli" else (lambda x: x.astype(np.float32) / 255)
    )
    x_train, x_test = prep(x_train), prep(x_test)
    cfg = dataclasses.replace(recipe.model, image_shape=x_train.shape[1:])
    fit_idx, val_idx = holdout_split(len(x_train), recipe.val_fraction)
    out, ckpt = _start_run(out, resume)
    graphdef, state = vae.create(cfg, recipe.seed, decay_steps=recipe.steps)
    val_batch = min(500, len(val_idx))
    res = train.fit(
        vae.make_train_step(graphdef, cfg.beta),
        state,
        train.epoch_batches((x_train[fit_idx],), recipe.batch_size, recipe.seed),
        key=jax.random.key(recipe.seed),
        steps=recipe.steps,
        eval_fn=vae.make_eval_fn(graphdef, x_train[val_idx], val_batch),
        eval_every=recipe.eval_every,
        select_best=("neg_elbo", "min"),
        checkpoint_dir=ckpt,
        checkpoint_every=recipe.eval_every,
        progress=progress,
        desc="vae",
    )
    test_batch = max(b for b in range(1, 501) if len(x_test) % b == 0)
    test = float(vae.make_eval_fn(graphdef, x_test, test_batch, seed=1)(res.state)["neg_elbo"])
    dims = int(np.prod(cfg.image_shape))
    result = {
        "model": "vae",
        "dataset": recipe.dataset,
        "seed": recipe.seed,
        **_timing(res),
        "best_step": res.best["step"],
        "val_neg_elbo_nats": round(res.best["neg_elbo"], 3),
        "test_neg_elbo_nats": round(test, 3),
        "test_bits_per_dim": round(metrics.bits_per_dim(test, dims), 4),
    }
    if out is not None:
        key = jax.random.key(recipe.seed + 1)
        plotting.save_image_grid(vae.sample(graphdef, res.state, key, 64), out / "samples.png")
        mean, _ = vae.encode(graphdef, res.state, x_test[:32])
        recon = vae.decode(graphdef, res.state, mean)
        pairs = np.stack([x_test[:32], np.asarray(recon)], 1).reshape(64, *cfg.image_shape)
        plotting.save_image_grid(pairs, out / "reconstructions.png")
    return _finish(out, result, res.history)


# --- GAN -------------------------------------------------------------------------------------


def gan_class_ids(recipe: GANRecipe, images, labels) -> np.ndarray | None:
    """The class id of every training image that G and D are conditioned on, or None.

    ``images`` are the training images (any scale), ``labels`` their digits; see
    ``GANRecipe.conditioning``. The clusters depend only on the images and ``recipe.seed``.
    """
    if recipe.conditioning == "none":
        return None
    if recipe.conditioning == "labels":
        return np.asarray(labels, np.int32)
    return gan.cluster_ids(images, recipe.num_clusters, recipe.seed)


def gan_config(recipe: GANRecipe, image_shape, class_ids=None) -> gan.GANConfig:
    """The recipe's ``GANConfig`` for images of ``image_shape``: a DCGAN for 28x28, else an MLP,
    conditioned on ``class_ids`` when given (``gan_class_ids``), else unconditional."""
    arch = "dcgan" if tuple(image_shape) == (28, 28) else "mlp"
    num_classes = None if class_ids is None else int(np.max(class_ids)) + 1
    return dataclasses.replace(
        recipe.model, arch=arch, image_shape=tuple(image_shape), num_classes=num_classes
    )


def make_gan_eval_fn(graphdef, classifier, real_test, n: int, seed: int):
    """``eval(state)``: FD-LeNet against ``real_test`` and class coverage of ``n`` samples."""

    def evaluate(state):
        fake = np.asarray(gan.generate(graphdef, state, jax.random.key(seed), n))
        coverage = metrics.class_coverage(fake, classifier)
        return {
            "fd_lenet": metrics.fd_lenet(fake, real_test, classifier),
            "class_kl": coverage["class_kl"],
            "classes_covered": coverage["classes_covered"],
        }

    return evaluate


def run_gan(recipe: GANRecipe = GANRecipe(), out=None, resume: bool = False, progress: bool = True):
    """Train a GAN; report FD-LeNet (and its train-vs-test floor) and class coverage.

    Samples are drawn as the model defines them: a class (cluster or digit) with its training
    frequency, then an image. With ``conditioning="labels"`` the class coverage therefore mostly
    measures whether G draws the digit it is asked for, not whether it covers the modes.
    """
    x_train, y_train = data.load(recipe.dataset, "train")
    x_test, _ = data.load(recipe.dataset, "test")
    real = x_train.astype(np.float32) / 127.5 - 1.0  # the generator's tanh range
    start = time.perf_counter()
    class_ids = gan_class_ids(recipe, real, y_train)
    cluster_seconds = time.perf_counter() - start if recipe.conditioning == "clusters" else 0.0
    cfg = gan_config(recipe, x_train.shape[1:], class_ids)
    probs = None if class_ids is None else np.bincount(class_ids) / len(class_ids)
    classifier = metrics.fd_classifier(recipe.dataset)
    real_test = x_test.astype(np.float32) / 255.0
    n_eval = min(recipe.eval_samples, len(real_test))
    out, ckpt = _start_run(out, resume)
    graphdef, state = gan.create(cfg, recipe.seed, probs)
    res = train.fit(
        gan.make_train_step(graphdef),
        state,
        train.epoch_batches(
            (real, y_train if class_ids is None else class_ids), recipe.batch_size, recipe.seed
        ),
        key=jax.random.key(recipe.seed),
        steps=recipe.steps,
        log_every=50,
        eval_fn=make_gan_eval_fn(graphdef, classifier, real_test[:n_eval], n_eval, recipe.seed),
        eval_every=recipe.eval_every,
        checkpoint_dir=ckpt,
        checkpoint_every=recipe.eval_every,
        progress=progress,
        desc="gan",
    )
    final = res.history["eval"][-1]
    floor = metrics.fd_lenet_floor(recipe.dataset, classifier, n=n_eval)
    result = {
        "model": "gan",
        "dataset": recipe.dataset,
        "seed": recipe.seed,
        "conditioning": recipe.conditioning,
        "num_classes": cfg.num_classes,
        **_timing(res),
        "cluster_seconds": round(cluster_seconds, 2),
        "fd_lenet": round(final["fd_lenet"], 3),
        "fd_lenet_floor": round(floor, 3),
        "class_kl": round(final["class_kl"], 4),
        "classes_covered": int(final["classes_covered"]),
        "classifier_test_accuracy": round(classifier.test_accuracy, 4),
    }
    if out is not None:
        images = gan.generate(graphdef, res.state, jax.random.key(recipe.seed + 1), 64)
        plotting.save_image_grid(np.asarray(images), out / "samples.png")
    return _finish(out, result, res.history)


# --- character language model ---------------------------------------------------------------


def run_rnn(recipe: RNNRecipe = RNNRecipe(), out=None, resume: bool = False, progress: bool = True):
    """Train a character LSTM on Tang quatrains; compare its bits/char with a KN 3-gram."""
    train_poems = data.load(recipe.dataset, "train")
    val_poems = data.load(recipe.dataset, "val")
    vocab = rnn.CharVocab(train_poems)
    cfg = recipe.model or rnn.CharLMConfig(vocab_size=len(vocab))
    if cfg.vocab_size != len(vocab):
        raise ValueError(f"model.vocab_size={cfg.vocab_size} but the vocabulary has {len(vocab)}")
    x_train, y_train = rnn.encode_poems(train_poems, vocab)
    x_val, y_val = rnn.encode_poems(val_poems, vocab)
    out, ckpt = _start_run(out, resume)
    graphdef, state = rnn.create_lm(cfg, recipe.seed)  # constant rate; early stopping regularises
    res = train.fit(
        rnn.make_train_step(graphdef),
        state,
        train.epoch_batches((x_train, y_train), recipe.batch_size, recipe.seed),
        key=jax.random.key(recipe.seed),
        steps=recipe.steps,
        eval_fn=rnn.make_lm_eval_fn(graphdef, x_val, y_val),
        eval_every=recipe.eval_every,
        select_best=("bits_per_char", "min"),
        checkpoint_dir=ckpt,
        checkpoint_every=recipe.eval_every,
        progress=progress,
        desc="rnn",
    )
    ngram = metrics.KneserNeyLM(order=3).fit(list(y_train), len(vocab), bos_id=0)
    samples = rnn.sample_text(
        graphdef,
        res.state,
        vocab,
        jax.random.key(recipe.seed + 1),
        n=recipe.n_samples,
        temperature=recipe.temperature,
        max_len=x_train.shape[1],
    )
    result = {
        "model": "rnn",
        "dataset": recipe.dataset,
        "seed": recipe.seed,
        **_timing(res),
        "best_step": res.best["step"],
        "val_bpc": round(res.best["bits_per_char"], 4),
        "ngram3_val_bpc": round(ngram.bits_per_token(list(y_val)), 4),
        "val_perplexity": round(2 ** res.best["bits_per_char"], 3),
        "temperature": recipe.temperature,
        "form_ok_fraction": round(float(np.mean([rnn.is_quatrain(s) for s in samples])), 4),
        "samples": samples[:8],
    }
    if out is not None:
        (out / "samples.txt").write_text("\n".join(samples) + "\n", encoding="utf-8")
    return _finish(out, result, res.history)


# --- time-series forecast --------------------------------------------------------------------


def run_forecast(
    recipe: ForecastRecipe = ForecastRecipe(), out=None, resume: bool = False, progress: bool = True
):
    """Forecast co2 12 months ahead from every month of the test years; compare with
    the seasonal-naive forecast from the same origins."""
    cfg = recipe.model
    series = data.load(recipe.dataset, "all").values
    n_train = len(data.load(recipe.dataset, "train").values)
    train_values = series[:n_train]
    scale = float(np.std(train_values[cfg.horizon :] - train_values[: -cfg.horizon]))
    x, y, _ = rnn.make_windows(train_values, cfg.context, cfg.horizon, scale)
    # test origins: every month from the end of the training years to the last full horizon
    tail = series[n_train - cfg.context :]
    x_test, y_test, last = rnn.make_windows(tail, cfg.context, cfg.horizon, scale)
    out, ckpt = _start_run(out, resume)
    graphdef, state = rnn.create_forecaster(cfg, recipe.seed)
    res = train.fit(
        rnn.make_train_step(graphdef, rnn.forecast_loss),
        state,
        train.epoch_batches((x, y), recipe.batch_size, recipe.seed),
        key=jax.random.key(recipe.seed),
        steps=recipe.steps,
        checkpoint_dir=ckpt,
        checkpoint_every=500,
        progress=progress,
        desc="forecast",
    )
    pred = last[:, None] + scale * np.asarray(rnn.predict(graphdef, res.state, x_test))
    truth = last[:, None] + scale * y_test
    naive = np.stack(
        [
            metrics.seasonal_naive_forecast(tail[i : i + cfg.context], cfg.horizon)
            for i in range(len(x_test))
        ]
    )
    result = {
        "model": "forecast",
        "dataset": recipe.dataset,
        "seed": recipe.seed,
        **_timing(res),
        "horizon_months": cfg.horizon,
        "test_origins": len(x_test),
        "rmse": round(metrics.rmse(pred, truth), 4),
        "seasonal_naive_rmse": round(metrics.rmse(naive, truth), 4),
    }
    return _finish(out, result, res.history)


RUNNERS = {"vae": run_vae, "gan": run_gan, "rnn": run_rnn, "forecast": run_forecast}
QUICK = {"vae": VAERecipe(), "gan": GANRecipe(), "rnn": RNNRecipe(), "forecast": ForecastRecipe()}
FULL = {
    "vae": VAERecipe(steps=20000, batch_size=256),
    "gan": GANRecipe(
        steps=20000,
        batch_size=128,
        eval_every=2000,
        model=gan.GANConfig(width=64, learning_rate=5e-4),
    ),
    "rnn": RNNRecipe(steps=8000, model=None),
    "forecast": ForecastRecipe(steps=8000),
}


PROFILE_ENV_VAR = "COURSE_LIB_PROFILE"


def recipe_for(model: str, profile: str = "quick"):
    table = {"quick": QUICK, "full": FULL}
    if profile not in table:
        raise ValueError(f"profile must be 'quick' or 'full', got {profile!r}")
    return table[profile][model]


def profile_from_env() -> str:
    """The chapters' run profile: ``$COURSE_LIB_PROFILE``, "quick" (default, CPU) or "full" (GPU).

    Every chapter reads it in its parameters cell, e.g. ``COURSE_LIB_PROFILE=full make lab``.
    """
    profile = os.environ.get(PROFILE_ENV_VAR, "quick")
    if profile not in ("quick", "full"):
        raise ValueError(
            f"${PROFILE_ENV_VAR}={profile!r}: use 'quick' (the CPU default) or 'full' (a longer "
            "run for a GPU), or unset it."
        )
    return profile
