"""Orbax checkpoints of a training run, keyed by tree path: the :class:`Checkpoint` hook, and
:func:`start_run`, which readies a run's output directory for a fresh start or a resume.

Taught in chapter 5.2 (05a_vae_in_practice). A checkpoint holds the model state, the best state
so far (when an ``Evaluate`` hook selects one) and, as JSON, the history and the metrics of steps
not yet logged, so a resumed run continues exactly where it stopped.

Arrays are stored under their path in the state (``"0/encoder/mean/kernel/value"``, as nested
dicts), not by their position among the leaves: a checkpoint still restores after a field is
added to a model (the new field keeps its fresh value) or removed (its saved array is ignored).
A shape that does not match is an error that names the array.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or belongs to a different model."""


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _is_prng_key(leaf) -> bool:
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _by_path(tree) -> dict[tuple[str, ...], object]:
    """Every leaf of ``tree`` keyed by its path of names."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _nest(flat: dict) -> dict:
    """{("a", "b"): x} -> {"a": {"b": x}}, the form orbax stores."""
    out: dict = {}
    for path, leaf in flat.items():
        node = out
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = leaf
    return out


def _host_arrays(tree) -> dict:
    """Nested dicts of numpy arrays; typed PRNG keys are stored as their raw data."""
    flat = _by_path(tree)
    return _nest(
        {p: np.asarray(jax.random.key_data(x) if _is_prng_key(x) else x) for p, x in flat.items()}
    )


def _encode_pending(pending: list[dict]) -> list[dict]:
    return [
        {k: [str(np.asarray(v).dtype), np.asarray(v).item()] for k, v in m.items()} for m in pending
    ]


def _decode_pending(pending: list[dict]) -> list[dict]:
    return [{k: np.asarray(v, dtype=d) for k, (d, v) in m.items()} for m in pending]


class Checkpoint:
    """Hook: save the run to ``directory`` every ``every`` steps and at the end; resume from it.

    ``fit`` calls :meth:`restore` before the first step (a no-op when the directory holds no
    checkpoint) and :meth:`save` when Ctrl-C stops it.
    """

    def __init__(self, directory, every: int | None = None, max_to_keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"checkpoint path {self.directory} is a file; pass a directory")
        self.every = every
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "best": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        }
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=handlers
        )

    def __call__(self, run) -> None:
        if run.step == run.steps or (self.every and run.step % self.every == 0):
            self.save(run)

    def save(self, run) -> None:
        if self.manager.latest_step() == run.step:
            return  # saved at this step already
        meta = {"history": run.history, "best": run.best, "pending": _encode_pending(run.pending)}
        items = {
            "state": ocp.args.StandardSave(_host_arrays(run.state)),
            "meta": ocp.args.JsonSave(json.loads(json.dumps(meta))),
        }
        if run.best_state is not None:
            items["best"] = ocp.args.StandardSave(_host_arrays(run.best_state))
        self.manager.save(run.step, args=ocp.args.Composite(**items))
        self.manager.wait_until_finished()

    def restore(self, run) -> bool:
        """Load the latest checkpoint into ``run`` (state, step, history, best); False if none."""
        step = self.manager.latest_step()
        if step is None:
            return False
        try:
            saved = self.manager.item_metadata(step)
            items = {"state": ocp.args.StandardRestore(self._target(saved["state"], run.state))}
            items["meta"] = ocp.args.JsonRestore()
            if saved.get("best") is not None:
                items["best"] = ocp.args.StandardRestore(self._target(saved["best"], run.state))
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except CheckpointError:
            raise
        except Exception as err:  # orbax raises many types for damaged files
            raise CheckpointError(
                f"cannot restore the checkpoint of step {step} in {self.directory}: "
                f"{type(err).__name__}: {err}. It is corrupt or was written by a different model "
                "configuration; delete that directory (or pass another --out) to start afresh."
            ) from err
        meta = restored["meta"]
        run.step, run.history, run.best = step, meta["history"], meta["best"]
        run.pending = _decode_pending(meta.get("pending", []))
        if "best" in items:
            run.best_state = self._rebuild(restored["best"], run.state)
        run.state = self._rebuild(restored["state"], run.state)
        return True

    def _target(self, saved_tree, template) -> dict:
        """What to restore: every saved array, shaped and typed as the checkpoint says."""
        want = {p: np.asarray(v) for p, v in _by_path(_host_arrays(template)).items()}
        target = {}
        for path, meta in _by_path(saved_tree).items():
            shape, dtype = tuple(meta.shape), np.dtype(meta.dtype)
            if path in want and want[path].shape != shape:
                raise CheckpointError(
                    f"checkpoint in {self.directory} holds {'/'.join(path)} of shape {shape} where "
                    f"the model has {want[path].shape}; it belongs to another configuration"
                )
            target[path] = np.zeros(shape, dtype)
        return _nest(target)

    def _rebuild(self, restored: dict, template):
        """The ``template`` tree with every array the checkpoint holds put in its place."""
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        got, fresh, out = _by_path(restored), [], []
        for path, want in leaves:
            name = tuple(_key_name(k) for k in path)
            if name not in got:
                fresh.append("/".join(name))
                out.append(want)
                continue
            value = np.asarray(got[name])
            if _is_prng_key(want):
                value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(want))
            out.append(value)
        if fresh:
            warnings.warn(
                f"checkpoint in {self.directory} has no {', '.join(fresh)}: kept fresh values",
                stacklevel=3,
            )
        return jax.tree_util.tree_unflatten(treedef, out)


def latest_checkpoint_step(directory) -> int | None:
    """The newest checkpoint step saved in ``directory``, or None when there is none."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return None
    return Checkpoint(directory).manager.latest_step()


def start_run(out, resume: bool):
    """Check ``resume`` first, then create ``out``; return (out, checkpoint directory).

    A fresh run empties old checkpoints and results; ``resume`` requires a checkpoint. Called
    after the data and the configuration are validated, so a rejected run leaves nothing on disk.
    """
    if out is None:
        if resume:
            raise CheckpointError("resume needs an output directory (--out) to read from")
        return None, None
    out = pathlib.Path(out)
    ckpt = out / "checkpoints"
    if resume and latest_checkpoint_step(ckpt) is None:
        raise CheckpointError(
            f"no checkpoint to resume from in {ckpt}; run without --resume to start afresh"
        )
    if not resume:
        if ckpt.exists():
            shutil.rmtree(ckpt)
        for stale in ("metrics.json", "history.json"):  # never leave a previous run's results
            (out / stale).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out, ckpt
