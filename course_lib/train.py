"""One training loop for every model in course_lib, and the one generic train step.

Taught in chapter 5.2 (05a_vae_in_practice). A model module supplies a pure loss
``loss_fn(model, batch, key) -> (loss, metrics)``; :func:`make_train_step` turns it into a jitted
``train_step(state, batch, key) -> (state, metrics)`` (the GAN, with two optimizers, brings its
own). :func:`fit` is only the loop: deterministic batches and PRNG keys per step, a progress bar,
a history of metrics and a stop on NaN/Inf. What else a run needs is a hook passed in:
:class:`Evaluate` (periodic evaluation and keeping the best state) and :class:`Checkpoint` (orbax
checkpoints, resume).

Host syncs stay out of the inner loop: metrics stay on the device until every ``log_every``
steps, when they are fetched together, checked for NaN/Inf and averaged into the history.
A run stopped with Ctrl-C saves a checkpoint at the step it reached; resumed, it replays exactly
the same batches and keys, so it ends bit-identical to an uninterrupted run on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from course_lib import parallel
from course_lib.checkpoints import Checkpoint, CheckpointError, latest_checkpoint_step

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Evaluate",
    "FitResult",
    "Run",
    "TrainingDiverged",
    "TrainingInterrupted",
    "epoch_batches",
    "fit",
    "latest_checkpoint_step",
    "make_train_step",
]


class TrainingDiverged(FloatingPointError):
    """Raised when a training metric becomes NaN or Inf; ``step`` is the first bad update."""

    def __init__(self, step: int, name: str, value: float):
        self.step = step
        super().__init__(
            f"training diverged at step {step}: metric {name!r} is {value}. Hint: lower the "
            "learning rate, check the data for NaN/Inf (course_lib.data loads clean data), or "
            "compute in float32 instead of bfloat16."
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`fit` between two steps; ``step`` updates were done.

    ``saved`` says whether a :class:`Checkpoint` hook saved that step, so the run can resume.
    """

    def __init__(self, step: int, saved: bool):
        self.step, self.saved = step, saved
        super().__init__(f"training interrupted at step {step}")


@dataclasses.dataclass
class FitResult:
    state: Any  # the final nnx.State (or the best one if an Evaluate hook selects one)
    history: dict  # {"train": [...], "eval": [...]}
    steps: int  # total updates done, counting those before a resume
    train_seconds: float  # wall time of the updates in this call, compile included
    compile_seconds: float  # wall time of the first update in this call (tracing + XLA)
    steps_per_second: float  # updates per second after the first one
    best: dict | None = None  # the eval record of the selected state

    def timing(self) -> dict:
        """The run's length and speed, rounded, as every ``metrics.json`` reports them."""
        seconds = ("train_seconds", "compile_seconds", "steps_per_second")
        return {"steps": self.steps} | {k: round(getattr(self, k), 2) for k in seconds}


@dataclasses.dataclass
class Run:
    """What :func:`fit` hands its hooks: the run so far, which a hook may record into."""

    state: Any
    step: int  # updates done
    steps: int  # updates asked for
    history: dict
    best: dict | None = None  # the eval record of ``best_state``
    best_state: Any = None
    pending: list = dataclasses.field(default_factory=list)  # metrics not yet in the history


def make_train_step(graphdef, loss_fn: Callable):
    """One jitted update ``state, batch, key -> state, metrics`` of ``(model, optimizer)``.

    ``loss_fn(model, batch, key) -> (loss, metrics)`` is a model's pure loss, e.g.
    ``vae.loss`` or ``rnn.lm_loss``. The split/merge form keeps NNX's Python graph handling out of
    the per-step call: ``jax.jit`` sees only arrays, and ``donate_argnums`` lets XLA update the
    parameters in place.
    """

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, batch, key):
        model, optimizer = nnx.merge(graphdef, state)
        (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, key)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), {"loss": loss, **metrics}

    return train_step


def epoch_batches(arrays, batch_size: int, seed: int) -> Callable[[int], tuple]:
    """Return ``batch(step)``: shuffled fixed-size batches, reshuffled each epoch.

    The order depends only on ``(seed, epoch)``, so step ``k`` always gets the same batch,
    which makes resumed runs replay exactly. The last incomplete batch of an epoch is dropped
    to keep one batch shape, so the train step compiles once.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("all arrays passed to epoch_batches need the same length (axis 0)")
    for a in arrays:
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad = np.flatnonzero(~np.isfinite(a.reshape(n, -1)).all(axis=1))
            raise ValueError(
                f"the training data contains NaN or Inf in {len(bad)} examples (first at index "
                f"{bad[0]}); remove or repair them, e.g. x = x[np.isfinite(x).all(axis=(1, 2))]"
            )
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size must be in 1..{n} (the dataset size), got {batch_size}")
    per_epoch = n // batch_size
    cache = {}

    def batch(step: int) -> tuple:
        epoch, i = divmod(step, per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        idx = cache[epoch][i * batch_size : (i + 1) * batch_size]
        return tuple(a[idx] for a in arrays)

    return batch


class Evaluate:
    """Hook: ``eval_fn(state) -> {name: float}`` every ``every`` steps and at the end.

    With ``select_best=(name, "min" | "max")`` it keeps a copy of the best state so far, which
    :func:`fit` returns instead of the last one (early stopping). Evaluations run only on logging
    steps, so ``every`` should be a multiple of ``fit``'s ``log_every``.
    """

    def __init__(self, eval_fn: Callable, every: int | None = None, select_best=None):
        if select_best is not None and select_best[1] not in ("min", "max"):
            raise ValueError("select_best needs a metric name and a direction 'min' or 'max'")
        self.eval_fn, self.every, self.select_best = eval_fn, every, select_best

    def __call__(self, run: Run) -> None:
        if not (run.step == run.steps or (self.every and run.step % self.every == 0)):
            return
        record = {"step": run.step, **{k: float(v) for k, v in self.eval_fn(run.state).items()}}
        run.history["eval"].append(record)
        if self.select_best is not None:
            name, direction = self.select_best
            value, best = record[name], run.best
            if best is None or (value < best[name] if direction == "min" else value > best[name]):
                run.best, run.best_state = record, jax.tree.map(lambda x: x.copy(), run.state)


def fit(
    train_step: Callable,
    state,
    batches: Callable[[int], Any],
    *,
    key: jax.Array,
    steps: int,
    hooks: Sequence = (),
    mesh=None,
    log_every: int = 50,
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
    """Run ``steps`` updates of ``train_step`` and return the state and its history.

    ``batches(step)`` gives the host batch of update ``step`` (0-based); the key of that update
    is ``jax.random.fold_in(key, step)``, so no key is ever used twice. Every ``log_every`` steps
    and at the end, each hook is called in order with the :class:`Run` (put :class:`Checkpoint`
    last, so that it saves what the hooks before it recorded). A hook with a ``restore(run)``
    method is asked first to resume the run. Ctrl-C stops the loop between two steps: hooks with a
    ``save(run)`` method save, then :class:`TrainingInterrupted` is raised (a second Ctrl-C
    interrupts at once).
    """
    if not isinstance(steps, int | np.integer) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if log_every <= 0:
        raise ValueError(f"log_every must be positive, got {log_every}")
    mesh = parallel.data_mesh() if mesh is None else mesh
    run = Run(parallel.replicate(state, mesh), 0, steps, {"train": [], "eval": []})
    for hook in hooks:
        if hasattr(hook, "restore") and hook.restore(run):
            run.state = parallel.replicate(run.state, mesh)
    if run.step >= steps:
        return FitResult(_final(run), run.history, run.step, 0.0, 0.0, 0.0, run.best)
    start, t0 = run.step, time.perf_counter()
    compile_seconds = _loop(run, train_step, batches, key, hooks, mesh, log_every, progress, desc)
    train_seconds = time.perf_counter() - t0
    n_run, rest = steps - start, train_seconds - compile_seconds
    steps_per_second = (n_run - 1) / rest if n_run > 1 and rest > 0 else float("nan")
    return FitResult(
        _final(run), run.history, steps, train_seconds, compile_seconds, steps_per_second, run.best
    )


# the same keys as jax.random.fold_in, in one dispatch instead of ~0.2 ms of eager ops a step;
# with shard_batch's host batch on one device, a tiny model's step costs 0.40 ms, not 0.68
_fold_in = jax.jit(jax.random.fold_in)


def _loop(run: Run, train_step, batches, key, hooks, mesh, log_every, progress, desc) -> float:
    """The updates from ``run.step`` to ``run.steps``; returns the first one's seconds."""
    bar = tqdm(total=run.steps, initial=run.step, desc=desc, disable=not progress, leave=False)
    start, t0 = run.step, time.perf_counter()
    compile_seconds = 0.0
    with _deferred_interrupt() as interrupted:
        for step in range(start, run.steps):
            if interrupted():
                _stop(run, hooks)
            batch = parallel.shard_batch(batches(step), mesh)
            run.state, metrics = train_step(run.state, batch, _fold_in(key, step))
            run.pending.append(metrics)
            run.step = step + 1
            if step == start:
                jax.block_until_ready(metrics)  # one sync to separate compile time from step time
                compile_seconds = time.perf_counter() - t0
            if run.step % log_every == 0 or run.step == run.steps:
                _log(run)
                bar.update(run.step - bar.n)
                last = run.history["train"][-1]
                bar.set_postfix({k: f"{v:.4g}" for k, v in last.items() if k != "step"})
                for hook in hooks:
                    hook(run)
    jax.block_until_ready(run.state)
    bar.close()
    return compile_seconds


def _final(run: Run):
    return run.best_state if run.best_state is not None else run.state


def _log(run: Run) -> None:
    """Fetch the pending metrics in one transfer, stop on NaN/Inf, append their mean."""
    host = jax.device_get(run.pending)
    first_step = run.step - len(host) + 1
    for i, metrics in enumerate(host):
        for name, value in metrics.items():
            if not np.all(np.isfinite(value)):
                raise TrainingDiverged(first_step + i, name, float(np.asarray(value).ravel()[0]))
    record = {"step": run.step}
    for name in host[0]:
        record[name] = float(np.mean([m[name] for m in host]))
    run.history["train"].append(record)
    run.pending = []


def _stop(run: Run, hooks) -> None:
    """Save what the hooks can save at ``run.step`` and raise :class:`TrainingInterrupted`."""
    run.pending = jax.device_get(run.pending)
    saved = False
    for hook in hooks:
        if hasattr(hook, "save"):
            hook.save(run)
            saved = True
    raise TrainingInterrupted(run.step, saved)


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn the first Ctrl-C (SIGINT) into a flag that the loop reads between steps.

    An interrupt inside a step would lose the state: the step donates its input buffers. A second
    Ctrl-C raises KeyboardInterrupt at once. Outside the main thread nothing changes.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag.is_set
        return

    def on_sigint(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
