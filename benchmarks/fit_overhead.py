"""What ``train.fit`` costs on the host per step, on a model small enough that the host decides.

``python -m benchmarks.fit_overhead`` trains the 2-D Gaussian VAE of chapter 4 (32 hidden units,
batch 1: XLA computes a step in microseconds) three ways, interleaved over rounds so that a busy
machine slows all alike, and prints milliseconds per step (fastest round, and the median):

- ``train.fit``: the step's key from a jitted ``fold_in``, and ``parallel.shard_batch`` leaves
  the host batch as it is on one device;
- ``eager loop``: the same loop with ``jax.random.fold_in`` run eagerly and every batch put on
  the device first (``train.fit`` before it dropped both);
- ``bare loop``: the jitted step alone on one batch with keys made beforehand, the floor.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from course_lib import parallel, train, vae

STEPS, ROUNDS = 400, 7


def main() -> None:
    cfg = vae.VAEConfig(
        arch="mlp", image_shape=(1, 2), hidden=(32,), latent_dim=2, decoder="gaussian"
    )
    x = np.random.default_rng(0).normal(size=(4096, 1, 2)).astype(np.float32)
    graphdef, _ = vae.create(cfg, 0)
    step = train.make_train_step(graphdef, vae.loss)
    batches, key, mesh = train.epoch_batches((x,), 1, 0), jax.random.key(0), parallel.data_mesh()
    keys = [jax.random.fold_in(key, i) for i in range(STEPS)]

    def with_fit(state):
        return train.fit(step, state, batches, key=key, steps=STEPS, progress=False).state

    def eager_loop(state):
        for i in range(STEPS):
            batch = jax.device_put(batches(i), parallel.batch_sharded(mesh))
            state, _ = step(state, batch, jax.random.fold_in(key, i))
        return state

    def bare_loop(state):
        batch = batches(0)
        for i in range(STEPS):
            state, _ = step(state, batch, keys[i])
        return state

    ways = {"train.fit": with_fit, "eager loop": eager_loop, "bare loop": bare_loop}
    seconds = {name: [] for name in ways}
    for _ in range(ROUNDS + 1):  # the first round compiles and is dropped
        for name, run in ways.items():
            state = vae.create(cfg, 0)[1]
            t0 = time.perf_counter()
            jax.block_until_ready(run(state))
            seconds[name].append((time.perf_counter() - t0) / STEPS * 1e3)
    print(f"ms per step of a tiny VAE ({STEPS} steps, fastest and median of {ROUNDS} rounds)")
    for name, times in seconds.items():
        print(f"  {name:11s} {min(times[1:]):6.3f}  {statistics.median(times[1:]):6.3f}")


if __name__ == "__main__":
    main()
