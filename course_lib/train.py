"""One training loop for every model in course_lib.

Taught in chapter 5.2 (05a_vae_in_practice). A model module supplies a jitted
``train_step(state, batch, key) -> (state, metrics)``; this loop supplies what every run needs:
deterministic batches and PRNG keys per step, a progress bar, a history of metrics, periodic
evaluation, keeping the best state, orbax checkpoints and a stop on NaN/Inf.

Host syncs stay out of the inner loop: metrics stay on the device until every ``log_every``
steps, when they are fetched together, checked for NaN/Inf and averaged into the history.
A stopped run resumed from its checkpoint replays exactly the same batches and keys, so it ends
bit-identical to an uninterrupted run on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from course_lib import parallel


class TrainingDiverged(FloatingPointError):
    """Raised when a training metric becomes NaN or Inf; ``step`` is the first bad update."""

    def __init__(self, step: int, name: str, value: float):
        self.step = step
        super().__init__(
            f"training diverged at step {step}: metric {name!r} is {value}. Hint: lower the "
            "learning rate, check the data for NaN/Inf (course_lib.data loads clean data), or "
            "compute in float32 instead of bfloat16."
        )


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or belongs to a different model."""


@dataclasses.dataclass
class FitResult:
    state: Any  # the final nnx.State (or the best one if ``select_best`` was given)
    history: dict  # {"train": [...], "eval": [...]}
    steps: int  # total updates done, counting those before a resume
    train_seconds: float  # wall time of the updates in this call, compile included
    compile_seconds: float  # wall time of the first update in this call (tracing + XLA)
    steps_per_second: float  # updates per second after the first one
    best: dict | None = None  # the eval record of the selected state


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


def fit(
    train_step: Callable,
    state,
    batches: Callable[[int], Any],
    *,
    key: jax.Array,
    steps: int,
    mesh=None,
    log_every: int = 50,
    eval_fn: Callable[[Any], dict] | None = None,
    eval_every: int | None = None,
    select_best: tuple[str, str] | None = None,
    checkpoint_dir: str | pathlib.Path | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
    """Run ``steps`` updates of ``train_step`` and return the state and its history.

    ``batches(step)`` gives the host batch of update ``step`` (0-based); the key of that update
    is ``jax.random.fold_in(key, step)``, so no key is ever used twice. ``eval_fn(state)``
    returns a dict of floats every ``eval_every`` steps and at the end. ``select_best`` is
    ``(metric, "min" | "max")``: the state with the best such eval metric is returned (early
    stopping). With ``checkpoint_dir``, the run saves every ``checkpoint_every`` steps and at the
    end, and resumes from the latest checkpoint found there.
    """
    if not isinstance(steps, int | np.integer) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if log_every <= 0:
        raise ValueError(f"log_every must be positive, got {log_every}")
    if select_best is not None and (eval_fn is None or select_best[1] not in ("min", "max")):
        raise ValueError("select_best needs an eval_fn and a direction 'min' or 'max'")
    mesh = parallel.data_mesh() if mesh is None else mesh
    state = parallel.replicate(state, mesh)
    history = {"train": [], "eval": []}
    best, best_state = None, None
    start = 0

    manager = _checkpoint_manager(checkpoint_dir) if checkpoint_dir is not None else None
    if manager is not None and manager.latest_step() is not None:
        start, state, best_state, meta = _restore(manager, state, select_best is not None)
        state = parallel.replicate(state, mesh)
        history, best = meta["history"], meta["best"]
        if start >= steps:
            return FitResult(best_state or state, history, start, 0.0, 0.0, 0.0, best)

    def evaluate(step: int):
        nonlocal best, best_state
        record = {"step": step, **{k: float(v) for k, v in eval_fn(state).items()}}
        history["eval"].append(record)
        if select_best is not None:
            name, direction = select_best
            value = record[name]
            better = best is None or (
                value < best[name] if direction == "min" else value > best[name]
            )
            if better:
                best, best_state = record, jax.tree.map(lambda x: x.copy(), state)

    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress, leave=False)
    pending: list[dict] = []
    compile_seconds, t_first_done = 0.0, None
    t0 = time.perf_counter()
    for step in range(start, steps):
        batch = parallel.shard_batch(batches(step), mesh)
        state, metrics = train_step(state, batch, jax.random.fold_in(key, step))
        pending.append(metrics)
        if t_first_done is None:
            jax.block_until_ready(metrics)  # one sync to separate compile time from step time
            t_first_done = time.perf_counter()
            compile_seconds = t_first_done - t0
        done = step + 1
        if done % log_every == 0 or done == steps:
            _log(history, pending, done)
            bar.update(len(pending))
            bar.set_postfix({k: f"{v:.4g}" for k, v in history["train"][-1].items() if k != "step"})
            pending = []
            if eval_fn is not None and (done == steps or (eval_every and done % eval_every == 0)):
                evaluate(done)
            if manager is not None and (
                done == steps or (checkpoint_every and done % checkpoint_every == 0)
            ):
                _save(manager, done, state, best_state, {"history": history, "best": best})
    jax.block_until_ready(state)
    train_seconds = time.perf_counter() - t0
    bar.close()
    if manager is not None:
        manager.wait_until_finished()
    n_run = steps - start
    rest = train_seconds - compile_seconds
    steps_per_second = (n_run - 1) / rest if n_run > 1 and rest > 0 else float("nan")
    final = best_state if best_state is not None else state
    return FitResult(final, history, steps, train_seconds, compile_seconds, steps_per_second, best)


def _log(history: dict, pending: list[dict], done: int) -> None:
    """Fetch the pending metrics in one transfer, stop on NaN/Inf, append their mean."""
    host = jax.device_get(pending)
    first_step = done - len(host) + 1
    for i, metrics in enumerate(host):
        for name, value in metrics.items():
            if not np.all(np.isfinite(value)):
                raise TrainingDiverged(first_step + i, name, float(np.asarray(value).ravel()[0]))
    record = {"step": done}
    for name in host[0]:
        record[name] = float(np.mean([m[name] for m in host]))
    history["train"].append(record)


def _checkpoint_manager(directory) -> ocp.CheckpointManager:
    directory = pathlib.Path(directory).absolute()
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"checkpoint path {directory} is a file; pass a directory")
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(directory, options=options)


def _is_key(leaf) -> bool:
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _leaves_dict(tree) -> dict:
    """Leaves as numpy arrays keyed by position; typed PRNG keys are stored as their raw data."""
    leaves = jax.tree.leaves(tree)
    return {
        str(i): np.asarray(jax.random.key_data(x) if _is_key(x) else x)
        for i, x in enumerate(leaves)
    }


def _save(manager, step: int, state, best_state, meta: dict) -> None:
    items = {
        "state": ocp.args.StandardSave(_leaves_dict(state)),
        "meta": ocp.args.JsonSave(json.loads(json.dumps(meta))),
    }
    if best_state is not None:
        items["best"] = ocp.args.StandardSave(_leaves_dict(best_state))
    manager.save(step, args=ocp.args.Composite(**items))
    manager.wait_until_finished()


def _restore(manager, template, with_best: bool):
    """Restore the latest checkpoint into the structure of ``template``."""
    step = manager.latest_step()
    leaves, treedef = jax.tree.flatten(template)
    target = {k: np.zeros_like(v) for k, v in _leaves_dict(template).items()}
    items = {
        "state": ocp.args.StandardRestore(target),
        "meta": ocp.args.JsonRestore(),
    }
    if with_best and "best" in manager.item_metadata(step):
        items["best"] = ocp.args.StandardRestore(target)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as err:  # orbax raises many types for damaged files
        raise CheckpointError(
            f"cannot restore the checkpoint of step {step} in {manager.directory}: "
            f"{type(err).__name__}: {err}. It is corrupt or was written by a different model "
            "configuration; delete that directory (or pass another --out) to start afresh."
        ) from err

    def rebuild(flat):
        out = []
        for i, want in enumerate(leaves):
            got = flat[str(i)]
            if np.shape(got) != np.shape(target[str(i)]):
                raise CheckpointError(
                    f"checkpoint in {manager.directory} holds shape {np.shape(got)} where the "
                    f"model has {np.shape(target[str(i)])}; it belongs to another configuration"
                )
            if _is_key(want):
                got = jax.random.wrap_key_data(got, impl=jax.random.key_impl(want))
            out.append(got)
        return jax.tree.unflatten(treedef, out)

    best = rebuild(restored["best"]) if "best" in items else None
    meta = restored["meta"]
    return step, rebuild(restored["state"]), best, meta


def latest_checkpoint_step(directory) -> int | None:
    """The newest checkpoint step saved in ``directory``, or None when there is none."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return None
    return _checkpoint_manager(directory).latest_step()
