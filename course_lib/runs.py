"""How a recipe runs: set up, fit, evaluate, save, as ``python -m course_lib train`` does it.

Taught in chapter 5.2 (05a-05c; chapter 8, 08_trends, adds diffusion and the Transformer). After
``recipes.prepare_<model>(recipe)`` makes the data, a chapter can call the other steps one by one:
``setup_<model>(recipe, prepared)`` returns a :class:`Training` (the state, its jitted step, the
batches, the evaluation hook); :func:`fit` trains any :class:`Training`; ``evaluate_<model>(recipe,
prepared, training, result)`` measures the result on held-out data. :func:`run` chains all four
and, with ``out`` set, also writes checkpoints, sample files, ``history.json`` and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import time
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from course_lib import (
    checkpoints,
    data,
    diffusion,
    fd_lenet,
    files,
    gan,
    metrics,
    ngram,
    plotting,
    recipes,
    rnn,
    train,
    transformer,
    vae,
)
from course_lib.recipes import (
    DiffusionData,
    DiffusionRecipe,
    ForecastData,
    ForecastRecipe,
    GANData,
    GANRecipe,
    LMData,
    RNNRecipe,
    TransformerRecipe,
    VAEData,
    VAERecipe,
)

# --- the shared steps ------------------------------------------------------------------------


@dataclasses.dataclass
class Training:
    """One model ready to train: what :func:`fit` needs. ``fit`` donates ``state``."""

    graphdef: Any
    state: Any
    step: Callable  # jitted ``state, batch, key -> state, metrics``
    batches: Callable[[int], tuple]  # ``train.epoch_batches``
    evaluate: train.Evaluate | None = None
    log_every: int = 50
    checkpoint_every: int | None = None


def fit(training: Training, recipe, checkpoint_dir=None, progress: bool = True, desc="train"):
    """Train ``training`` for ``recipe.steps`` with the key ``recipe.seed``; a ``train.FitResult``.

    With ``checkpoint_dir`` the run saves there and resumes from what it finds there.
    """
    hooks = [] if training.evaluate is None else [training.evaluate]
    if checkpoint_dir is not None:
        hooks.append(train.Checkpoint(checkpoint_dir, training.checkpoint_every))
    return train.fit(
        training.step,
        training.state,
        training.batches,
        key=jax.random.key(recipe.seed),
        steps=recipe.steps,
        hooks=hooks,
        log_every=training.log_every,
        progress=progress,
        desc=desc,
    )


# --- VAE -------------------------------------------------------------------------------------


def setup_vae(recipe: VAERecipe, prepared: VAEData) -> Training:
    graphdef, state = vae.create(prepared.config, recipe.seed, decay_steps=recipe.steps)
    evaluate = None
    if len(prepared.val_idx):
        x_val = prepared.x_train[prepared.val_idx]
        eval_fn = vae.make_eval_fn(graphdef, x_val, min(500, len(x_val)))
        evaluate = train.Evaluate(eval_fn, recipe.eval_every, select_best=("neg_elbo", "min"))
    x_fit = prepared.x_train[prepared.fit_idx]
    batches = train.epoch_batches((x_fit,), recipe.batch_size, recipe.seed)
    step = train.make_train_step(graphdef, vae.loss)
    return Training(graphdef, state, step, batches, evaluate, checkpoint_every=recipe.eval_every)


def evaluate_vae(recipe: VAERecipe, prepared: VAEData, training: Training, res) -> dict:
    """The test negative ELBO (nats, and bits per dimension) of the selected state."""
    x_test = prepared.x_test
    test_batch = max(b for b in range(1, 501) if len(x_test) % b == 0)
    test_fn = vae.make_eval_fn(training.graphdef, x_test, test_batch, seed=1)
    test = float(test_fn(res.state)["neg_elbo"])
    dims = int(np.prod(prepared.config.image_shape))
    result = {}
    if res.best is not None:
        result["best_step"] = res.best["step"]
        result["val_neg_elbo_nats"] = round(res.best["neg_elbo"], 3)
    result["test_neg_elbo_nats"] = round(test, 3)
    result["test_bits_per_dim"] = round(metrics.bits_per_dim(test, dims), 4)
    return result


def save_vae(out, recipe: VAERecipe, prepared: VAEData, training: Training, state) -> None:
    graphdef, x_test = training.graphdef, prepared.x_test
    samples = vae.sample(graphdef, state, jax.random.key(recipe.seed + 1), 64)
    plotting.save_image_grid(samples, out / "samples.png")
    recon = vae.decode(graphdef, state, vae.encode(graphdef, state, x_test[:32])[0])
    pairs = np.stack([x_test[:32], np.asarray(recon)], 1)
    pairs = pairs.reshape(64, *prepared.config.image_shape)
    plotting.save_image_grid(pairs, out / "reconstructions.png")


# --- GAN -------------------------------------------------------------------------------------


def setup_gan(recipe: GANRecipe, prepared: GANData) -> Training:
    graphdef, state = gan.create(prepared.config, recipe.seed, prepared.class_probs)
    classifier = fd_lenet.fd_classifier(recipe.dataset)
    n = min(recipe.eval_samples, len(prepared.real_test))
    eval_fn = gan.make_eval_fn(graphdef, classifier, prepared.real_test[:n], n, recipe.seed)
    ids = prepared.labels if prepared.class_ids is None else prepared.class_ids
    batches = train.epoch_batches((prepared.real, ids), recipe.batch_size, recipe.seed)
    evaluate = train.Evaluate(eval_fn, recipe.eval_every)
    step = gan.make_train_step(graphdef)
    return Training(graphdef, state, step, batches, evaluate, checkpoint_every=recipe.eval_every)


def evaluate_gan(recipe: GANRecipe, prepared: GANData, training: Training, res) -> dict:
    """FD-LeNet (and its train-vs-test floor) and class coverage at the last evaluation.

    Samples are drawn as the model defines them: a class (cluster or digit) with its training
    frequency, then an image. With ``conditioning="labels"`` the class coverage therefore mostly
    measures whether G draws the digit it is asked for, not whether it covers the modes.
    """
    return {
        "conditioning": recipe.conditioning,
        "num_classes": prepared.config.num_classes,
        "cluster_seconds": round(prepared.cluster_seconds, 2),
        **image_quality(recipe, prepared.real_test, res.history["eval"][-1]),
        "classifier_test_accuracy": round(fd_lenet.fd_classifier(recipe.dataset).test_accuracy, 4),
    }


def image_quality(recipe, real_test, final: dict) -> dict:
    """FD-LeNet (beside its train-vs-test floor) and class coverage of the ``final`` evaluation."""
    classifier = fd_lenet.fd_classifier(recipe.dataset)
    n = min(recipe.eval_samples, len(real_test))
    return {
        "fd_lenet": round(final["fd_lenet"], 3),
        "fd_lenet_floor": round(fd_lenet.fd_lenet_floor(recipe.dataset, classifier, n=n), 3),
        "class_kl": round(final["class_kl"], 4),
        "classes_covered": int(final["classes_covered"]),
    }


def save_images(out, recipe, prepared, training: Training, state) -> None:
    """64 samples of the GAN or the diffusion model as ``samples.png``."""
    key = jax.random.key(recipe.seed + 1)
    if isinstance(recipe, DiffusionRecipe):
        images = prepared.to_images(diffusion.generate(training.graphdef, state, key, 64))
    else:
        images = gan.generate(training.graphdef, state, key, 64)
    plotting.save_image_grid(np.asarray(images), out / "samples.png")


# --- character language model ---------------------------------------------------------------


def setup_rnn(recipe: RNNRecipe | TransformerRecipe, prepared: LMData) -> Training:
    """The LSTM, or the Transformer of chapter 8 (08_trends): same data, loss and evaluation."""
    if isinstance(recipe, TransformerRecipe):
        graphdef, state = transformer.create(prepared.config, recipe.seed, recipe.steps)
    else:
        graphdef, state = rnn.create_lm(prepared.config, recipe.seed)  # early stopping regularises
    eval_fn = rnn.make_lm_eval_fn(graphdef, prepared.x_val, prepared.y_val)
    evaluate = train.Evaluate(eval_fn, recipe.eval_every, select_best=("bits_per_char", "min"))
    pairs = (prepared.x_train, prepared.y_train)
    batches = train.epoch_batches(pairs, recipe.batch_size, recipe.seed)
    step = train.make_train_step(graphdef, rnn.lm_loss)
    return Training(graphdef, state, step, batches, evaluate, checkpoint_every=recipe.eval_every)


def sample_poems(recipe: RNNRecipe, prepared: LMData, training: Training, state) -> list[str]:
    """The recipe's ``n_samples`` poems at its temperature, with the key ``recipe.seed + 1``."""
    key = jax.random.key(recipe.seed + 1)
    return rnn.sample_text(
        training.graphdef,
        state,
        prepared.vocab,
        key,
        n=recipe.n_samples,
        temperature=recipe.temperature,
        max_len=prepared.x_train.shape[1],
    )


def evaluate_rnn(recipe: RNNRecipe, prepared: LMData, training: Training, res) -> dict:
    """Validation bits per character beside a Kneser-Ney 3-gram's, and the samples' form."""
    kn = ngram.KneserNeyLM(order=3).fit(list(prepared.y_train), len(prepared.vocab), bos_id=0)
    samples = sample_poems(recipe, prepared, training, res.state)
    return {
        "best_step": res.best["step"],
        "val_bpc": round(res.best["bits_per_char"], 4),
        "ngram3_val_bpc": round(kn.bits_per_token(list(prepared.y_val)), 4),
        "val_perplexity": round(2 ** res.best["bits_per_char"], 3),
        "temperature": recipe.temperature,
        "form_ok_fraction": round(float(np.mean([rnn.is_quatrain(s) for s in samples])), 4),
        "samples": samples[:8],
    }


def save_rnn(out, recipe: RNNRecipe, prepared: LMData, training: Training, state) -> None:
    samples = sample_poems(recipe, prepared, training, state)
    with files.atomic_write(out / "samples.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(samples) + "\n")


# --- diffusion -------------------------------------------------------------------------------


def prepare_diffusion(recipe: DiffusionRecipe) -> DiffusionData:
    """Pixels, or the codes of ``recipe.autoencoder``'s VAE, trained first unless cached."""
    if recipe.autoencoder is None:
        return recipes.prepare_diffusion(recipe)
    vae_recipe = dataclasses.replace(recipe.autoencoder, dataset=recipe.dataset, seed=recipe.seed)
    return recipes.prepare_diffusion(recipe, trained("vae", vae_recipe))


def setup_diffusion(recipe: DiffusionRecipe, prepared: DiffusionData) -> Training:
    graphdef, state = diffusion.create(prepared.config, recipe.seed, decay_steps=recipe.steps)
    classifier = fd_lenet.fd_classifier(recipe.dataset)
    n, real_test = min(recipe.eval_samples, len(prepared.real_test)), prepared.real_test
    decode = prepared.to_images
    eval_fn = diffusion.make_eval_fn(graphdef, classifier, real_test[:n], n, recipe.seed, decode)
    batches = train.epoch_batches((prepared.real,), recipe.batch_size, recipe.seed)
    evaluate = train.Evaluate(eval_fn, recipe.eval_every)
    step = diffusion.make_train_step(graphdef)
    return Training(graphdef, state, step, batches, evaluate, checkpoint_every=recipe.eval_every)


def evaluate_diffusion(recipe: DiffusionRecipe, prepared: DiffusionData, training, res) -> dict:
    """FD-LeNet, its floor and class coverage at the last evaluation, and the time to draw (and
    decode) as many images as the evaluation does (compiled first: the sampling alone). A latent
    model also reports its autoencoder's training time, part of what it cost to train."""
    n, key = min(recipe.eval_samples, len(prepared.real_test)), jax.random.key(recipe.seed)

    def draw():
        codes = diffusion.generate(training.graphdef, res.state, key, n)
        return prepared.to_images(codes).block_until_ready()

    draw()
    start = time.perf_counter()
    draw()
    return {
        "space": "pixels" if prepared.decoder is None else "latent",
        "autoencoder_train_seconds": round(prepared.autoencoder_seconds, 2),
        "sample_steps": prepared.config.sample_steps,
        "sample_seconds": round(time.perf_counter() - start, 2),
        **image_quality(recipe, prepared.real_test, res.history["eval"][-1]),
    }


# --- time-series forecast --------------------------------------------------------------------


def setup_forecast(recipe: ForecastRecipe, prepared: ForecastData) -> Training:
    graphdef, state = rnn.create_forecaster(prepared.config, recipe.seed)
    batches = train.epoch_batches((prepared.x, prepared.y), recipe.batch_size, recipe.seed)
    step = train.make_train_step(graphdef, rnn.forecast_loss)
    return Training(graphdef, state, step, batches, checkpoint_every=500)


def evaluate_forecast(recipe, prepared: ForecastData, training: Training, res) -> dict:
    """RMSE (ppm) of the 12-month forecasts from every test origin, beside seasonal naive's."""
    pred = prepared.to_ppm(rnn.predict(training.graphdef, res.state, prepared.x_test))
    return {
        "horizon_months": prepared.config.horizon,
        "test_origins": len(prepared.x_test),
        "rmse": round(metrics.rmse(pred, prepared.truth), 4),
        "seasonal_naive_rmse": round(metrics.rmse(prepared.seasonal_naive, prepared.truth), 4),
    }


# --- the whole run ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Steps:
    """One model's four steps (and what it saves besides its metrics)."""

    prepare: Callable
    setup: Callable
    evaluate: Callable
    save: Callable | None = None


MODELS = {
    "vae": Steps(recipes.prepare_vae, setup_vae, evaluate_vae, save_vae),
    "gan": Steps(recipes.prepare_gan, setup_gan, evaluate_gan, save_images),
    "rnn": Steps(recipes.prepare_rnn, setup_rnn, evaluate_rnn, save_rnn),
    "forecast": Steps(recipes.prepare_forecast, setup_forecast, evaluate_forecast),
    "diffusion": Steps(prepare_diffusion, setup_diffusion, evaluate_diffusion, save_images),
    "transformer": Steps(recipes.prepare_rnn, setup_rnn, evaluate_rnn, save_rnn),
}


def run(model: str, recipe=None, out=None, resume=False, progress=True, prepared=None) -> dict:
    """Prepare, set up, fit and evaluate ``model`` by ``recipe`` (default: the quick one).

    Returns a flat dict of metrics. With ``out``: checkpoints (resumed with ``resume``), sample
    files, ``history.json`` and ``metrics.json``. ``prepared`` is step 1's result, if already made.
    """
    steps = MODELS[model]
    recipe = recipes.QUICK[model] if recipe is None else recipe
    prepared = steps.prepare(recipe) if prepared is None else prepared
    training = steps.setup(recipe, prepared)
    out, ckpt = checkpoints.start_run(out, resume)
    res = fit(training, recipe, ckpt, progress, desc=model)
    result = {"model": model, "dataset": recipe.dataset, "seed": recipe.seed, **res.timing()}
    result |= steps.evaluate(recipe, prepared, training, res)
    if out is not None:
        if steps.save is not None:
            steps.save(out, recipe, prepared, training, res.state)
        files.write_json(out / "history.json", res.history)
        files.write_json(out / "metrics.json", result)
    return result


# --- trained models, cached ------------------------------------------------------------------

CACHE_VERSION = "v3"  # bump when a change of code changes what a recipe trains or reports


@dataclasses.dataclass
class Trained:
    """A model trained by a recipe (:func:`trained`): its data, graph, state and metrics."""

    recipe: Any
    prepared: Any
    graphdef: Any
    state: Any
    metrics: dict
    history: dict  # the run's train and eval records (``train.FitResult.history``)
    from_cache: bool


def cache_path(model: str, recipe) -> pathlib.Path:
    """Where :func:`trained` keeps ``model`` trained by ``recipe``: named by a hash of the
    recipe, so a changed recipe (steps, seed, config) trains anew."""
    digest = hashlib.sha256(f"{CACHE_VERSION} {model} {recipe!r}".encode()).hexdigest()[:16]
    return data.cache_dir() / "models" / f"{model}-{digest}.npz"


def trained(model: str, recipe=None, progress: bool = False) -> Trained:
    """``model`` trained by ``recipe`` (default: the quick one), from the disk cache if there.

    The first call trains as :func:`run` does and saves the state and the metrics (atomically)
    at :func:`cache_path`; later calls, in any process, load them in a second. Chapter 6.5
    (06c_feedback_lab) starts from the chapter-5 models this way. An unreadable cache file is
    trained over with a warning.
    """
    steps = MODELS[model]
    recipe = recipes.QUICK[model] if recipe is None else recipe
    prepared = steps.prepare(recipe)
    training = steps.setup(recipe, prepared)
    path = cache_path(model, recipe)
    if path.exists():
        try:
            state, meta = files.load_tree(path, training.state)
            return Trained(
                recipe, prepared, training.graphdef, state, meta["metrics"], meta["history"], True
            )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            warnings.warn(
                f"model cache {path} is unreadable ({err!r}); training anew", stacklevel=2
            )
    res = fit(training, recipe, None, progress, desc=model)
    result = {"model": model, "dataset": recipe.dataset, "seed": recipe.seed, **res.timing()}
    result |= steps.evaluate(recipe, prepared, training, res)
    files.save_tree(path, res.state, {"metrics": result, "history": res.history})
    return Trained(recipe, prepared, training.graphdef, res.state, result, res.history, False)
