"""Populations: many settings of one forecaster trained at once, with ``jax.vmap``.

Taught in chapter 6.4 (06b_tuning_lab). Settings that keep every array's shape (learning rate,
weight decay, seed, number of steps) become one more leading axis, the member axis, and the
whole training of every member is one compiled call:

- the learning rate and weight decay live in the optimizer state
  (``rnn.forecast_optimizer``), so each member carries its own;
- the steps run in ``jax.lax.fori_loop`` with a traced trip count, so changing the number of
  steps does not compile anything new; under ``vmap`` a member that has finished waits (its
  updates are masked) until the longest one is done;
- the batches are indices made on the host beforehand, in the order of ``train.epoch_batches``,
  so a population of one takes exactly the updates of ``runs.fit``, and nothing is fetched from
  the device until the end (no host sync in the loop).

What changes a shape (the window length ``context``, the ``hidden`` size) needs its own compile;
``jax.jit`` keeps each compiled version, keyed by the model's graph, so each shape compiles once.

On a CPU, XLA runs one small model's matrix products on one core, and ``vmap`` alone does not
make them faster: the members' products are done one after another. ``fit`` therefore also
splits the member axis into one equal chunk per core and runs the chunks in threads (the same
compiled call; JAX releases the GIL while it computes).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from course_lib import rnn, train


@dataclasses.dataclass(frozen=True)
class Member:
    """What may differ between the members of one population."""

    learning_rate: float
    weight_decay: float = 0.0
    seed: int = 0
    steps: int = 2000


@dataclasses.dataclass
class Population:
    """A trained population: per-member parameters, losses and the step each diverged at."""

    graphdef: nnx.GraphDef
    params: nnx.State  # every leaf has the member axis first
    losses: np.ndarray  # [members, max steps] training MSE per step (NaN after a member's end)
    diverged_at: np.ndarray  # [members]: the first update with a non-finite loss, 0 if none
    snapshots: list  # with ``snapshot_steps``: the parameters after each of those steps

    def predict(self, x, params=None) -> np.ndarray:
        """Normalised forecasts [members, N, horizon] of every member for windows ``x``."""
        return np.asarray(_predict(self.graphdef, self.params if params is None else params, x))


def model_graph(cfg: rnn.ForecastConfig) -> nnx.GraphDef:
    """The forecaster's graph for ``cfg``'s shape. The optimizer's settings are left out of it,
    so that every learning rate and weight decay shares one compiled version."""
    shape_only = dataclasses.replace(cfg, learning_rate=0.0, weight_decay=0.0)
    graphdef, _ = nnx.split(rnn.SeqRegressor(shape_only, rngs=nnx.Rngs(0)), nnx.Param)
    return graphdef


def init_members(cfg: rnn.ForecastConfig, members) -> tuple[nnx.State, object]:
    """Stacked parameters and optimizer states: member i's equal ``rnn.create_forecaster``'s
    with ``members[i]``'s seed, learning rate and weight decay."""
    params, opt_states = [], []
    for m in members:
        _, p = nnx.split(rnn.SeqRegressor(cfg, rngs=nnx.Rngs(m.seed)), nnx.Param)
        tx = rnn.forecast_optimizer(cfg.clip_norm, m.learning_rate, m.weight_decay)
        params.append(p)
        opt_states.append(tx.init(p))
    return _stack(params), _stack(opt_states)


def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def batch_indices(n: int, batch_size: int, members, max_steps: int) -> np.ndarray:
    """[members, max_steps, batch_size] example indices: member i's batches of
    ``train.epoch_batches`` with its seed (the batch order of ``runs.fit``)."""
    out = np.empty((len(members), max_steps, batch_size), np.int32)
    for i, m in enumerate(members):
        batches = train.epoch_batches((np.arange(n),), batch_size, m.seed)
        out[i] = [batches(step)[0] for step in range(max_steps)]
    return out


@functools.partial(jax.jit, static_argnames=("graphdef", "clip_norm", "n_snapshots"))
def _train(graphdef, params, opt_state, x, y, idx, steps, snapshot_steps, clip_norm, n_snapshots):
    tx = rnn.forecast_optimizer(clip_norm)  # the values come from each member's opt_state

    def loss_fn(p, batch):
        return rnn.forecast_loss(nnx.merge(graphdef, p), batch, None)[0]

    def member(params, opt_state, idx, steps, snapshot_steps):
        snaps = jax.tree.map(lambda a: jnp.zeros((n_snapshots, *a.shape), a.dtype), params)
        losses = jnp.full(idx.shape[0], jnp.nan, jnp.float32)

        def update(i, carry):
            p, o, losses, snaps = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, (x[idx[i]], y[idx[i]]))
            updates, o = tx.update(grads, o, p)
            p = optax.apply_updates(p, updates)
            taken = snapshot_steps == i + 1  # [n_snapshots]: the slot this step fills, if any
            snaps = jax.tree.map(
                lambda s, a: jnp.where(taken.reshape(-1, *[1] * a.ndim), a, s), snaps, p
            )
            return p, o, losses.at[i].set(loss), snaps

        p, _, losses, snaps = jax.lax.fori_loop(
            0, steps, update, (params, opt_state, losses, snaps)
        )
        return p, losses, snaps

    return jax.vmap(member)(params, opt_state, idx, steps, snapshot_steps)


def compiled_versions() -> int:
    """How many versions of the training loop ``jax.jit`` has compiled in this process: one per
    shape (context, hidden) and chunk of members, whatever the learning rates, decays or steps."""
    return _train._cache_size()


@functools.partial(jax.jit, static_argnames="graphdef")
def _predict(graphdef, params, x):
    return jax.vmap(lambda p: nnx.merge(graphdef, p)(x))(params)


def fit(
    cfg: rnn.ForecastConfig,
    members,
    x,
    y,
    batch_size: int = 32,
    snapshot_steps=(),
    capacity: int | None = None,
    workers: int | None = None,
) -> Population:
    """Train one forecaster per member on windows (x, y) in a single compiled call.

    ``cfg`` gives the shape (context, hidden, horizon, cell) and the clip norm; each member its
    learning rate, weight decay, seed and steps. ``snapshot_steps`` (each at most every member's
    steps) also keeps the parameters after those steps: one run of 2000 steps then answers for
    250, 500 and 1000 steps too, since the learning rate is constant. ``capacity`` (default: the
    most steps of a member) sizes the compiled loop's arrays: pass the most steps you will ever
    ask for, and changing the steps never compiles again. ``workers`` threads (default: one per
    CPU core on a CPU, else 1) each train an equal chunk of the members.
    """
    members = list(members)
    max_steps = _check(members, snapshot_steps, capacity)
    n = len(members)
    workers = min(n, default_workers() if workers is None else workers)
    size = -(-n // workers)  # equal chunks share one compiled version: pad with the last member
    padded = members + [members[-1]] * (size * workers - n)
    params, opt_state = init_members(cfg, padded)
    idx = batch_indices(len(x), batch_size, padded, max_steps)
    steps = np.array([m.steps for m in padded], np.int32)
    snap = np.tile(np.asarray(snapshot_steps, np.int32).reshape(1, -1), (len(padded), 1))
    x, y, graphdef = jnp.asarray(x), jnp.asarray(y), model_graph(cfg)

    def train_chunk(k):
        part = slice(k * size, (k + 1) * size)
        chunk = [jax.tree.map(lambda a: a[part], t) for t in (params, opt_state)]
        args = (x, y, idx[part], steps[part], snap[part], cfg.clip_norm, len(snapshot_steps))
        return jax.block_until_ready(_train(graphdef, *chunk, *args))

    with ThreadPoolExecutor(workers) as pool:
        chunks = list(pool.map(train_chunk, range(workers)))
    params, losses, snaps = jax.tree.map(lambda *a: jnp.concatenate(a)[:n], *chunks)
    steps = steps[:n]
    losses = np.asarray(losses)
    bad = ~np.isfinite(losses) & (np.arange(max_steps) < steps[:, None])
    diverged_at = np.where(bad.any(1), bad.argmax(1) + 1, 0)
    snapshots = [jax.tree.map(lambda s, k=k: s[:, k], snaps) for k in range(len(snapshot_steps))]
    return Population(graphdef, params, losses, diverged_at, snapshots)


def _check(members, snapshot_steps, capacity) -> int:
    """The loop's length (``capacity`` or the most steps), after checking the arguments."""
    if not members:
        raise ValueError("a population needs at least one member")
    if any(m.steps <= 0 for m in members):
        raise ValueError(f"steps must be positive, got {[m.steps for m in members]}")
    if any(s > m.steps for s in snapshot_steps for m in members):
        raise ValueError(f"snapshot_steps {tuple(snapshot_steps)} exceed a member's steps")
    most = max(m.steps for m in members)
    if capacity is not None and capacity < most:
        raise ValueError(f"capacity={capacity} is less than a member's steps ({most})")
    return most if capacity is None else capacity


def default_workers() -> int:
    """One thread per CPU core on a CPU backend; 1 on a GPU or TPU (one call fills it)."""
    if jax.default_backend() != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def member(tree, i: int):
    """Member ``i`` of a population's parameters (or of one of its snapshots)."""
    return jax.tree.map(lambda a: a[i : i + 1], tree)  # keeps a member axis of one


def speedup(cfg: rnn.ForecastConfig, members, x, y, batch_size: int = 32) -> dict:
    """Wall seconds of the same members trained three ways, each compiled beforehand:

    - ``sequential``: one member at a time (a population of one, the same compiled loop);
    - ``vmapped``: all members in one call, in one thread;
    - ``population``: ``fit``'s default, the member axis split over the CPU's cores.

    Also the largest difference between a member's forecasts of ``x`` in the population and in
    its own run (``max_difference``, normalised units), and the speed-ups over ``sequential``.
    """
    members = list(members)
    capacity = max(m.steps for m in members)
    warm = [dataclasses.replace(m, steps=1) for m in members]
    ways = {"sequential": 1, "vmapped": 1, "population": None}
    for name, workers in ways.items():
        fit(
            cfg, warm[:1] if name == "sequential" else warm, x, y, batch_size, (), capacity, workers
        )
    seconds, results = {}, {}
    for name, workers in ways.items():
        start = time.perf_counter()
        if name == "sequential":
            runs = [fit(cfg, [m], x, y, batch_size, (), capacity, 1) for m in members]
            results[name] = np.concatenate([r.predict(x) for r in runs])
        else:
            results[name] = fit(cfg, members, x, y, batch_size, (), capacity, workers).predict(x)
        seconds[name] = time.perf_counter() - start
    diff = max(float(np.abs(results[k] - results["sequential"]).max()) for k in results)
    return {
        "members": len(members),
        "steps": capacity,
        "seconds": seconds,
        "vmap_speedup": seconds["sequential"] / seconds["vmapped"],
        "population_speedup": seconds["sequential"] / seconds["population"],
        "max_difference": diff,
    }
