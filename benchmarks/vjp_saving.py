"""What ``gan.forward_keeping_backward`` saves: G's forward pass once (``jax.vjp``) against twice.

``python -m benchmarks.vjp_saving`` times ``gan.make_train_step`` on the quick recipe's DCGAN
(width 32, batch 64, 50 classes, as self-conditioned on clusters) beside the same step written
the plain way, with G's loss calling G again inside its gradient. The two are interleaved over
rounds, so that a busy machine slows both alike; it prints milliseconds per step.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from course_lib import gan, pixels, recipes
from flax import nnx


def make_step_running_g_twice(graphdef):
    """``gan.make_train_step`` without the vjp: G runs for D's fakes and again for G's loss."""

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, batch, key):
        model, (x, y) = nnx.merge(graphdef, state), batch
        cfg = model.g.cfg
        key_z, key_real, key_fake, key_g = jax.random.split(key, 4)
        z = jax.random.normal(key_z, (x.shape[0], cfg.latent_dim))
        fake = jax.lax.stop_gradient(model.g(z, y))
        real_in = pixels.translate(key_real, x, cfg.augment_shift, fill=-1.0)
        fake_in = pixels.translate(key_fake, fake, cfg.augment_shift, fill=-1.0)

        def d_loss(d):
            return gan.discriminator_loss(d(real_in, y), d(fake_in, y))

        d_value, d_grads = nnx.value_and_grad(d_loss)(model.d)
        model.opt_d.update(model.d, d_grads)

        def g_loss(g, d):
            shifted = pixels.translate(key_g, g(z, y), cfg.augment_shift, fill=-1.0)
            return gan.generator_loss(d(shifted, y), cfg.loss)

        g_value, g_grads = nnx.value_and_grad(g_loss)(model.g, model.d)
        model.opt_g.update(model.g, g_grads)
        gan.update_average(model.g_avg, model.g, model.opt_g.step[...], cfg.ema_decay)
        return nnx.state(model), {"d_loss": d_value, "g_loss": g_value}

    return train_step


def main(rounds: int = 7, steps: int = 30) -> dict:
    cfg = gan.config_for(recipes.QUICK["gan"].model, (28, 28), np.arange(50))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (64, 28, 28)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 50, 64).astype(np.int32))
    runs = {}
    for name, make in (("vjp", gan.make_train_step), ("twice", make_step_running_g_twice)):
        graphdef, state = gan.create(cfg, 0)
        step = make(graphdef)
        state, _ = step(state, (x, y), jax.random.key(0))  # compile outside the timing
        runs[name] = [step, jax.block_until_ready(state), []]
    for _ in range(rounds):
        for run in runs.values():
            start = time.perf_counter()
            for i in range(steps):
                run[1], _ = run[0](run[1], (x, y), jax.random.key(i))
            jax.block_until_ready(run[1])
            run[2].append((time.perf_counter() - start) / steps * 1e3)
    result = {
        name: {"median_ms": float(np.median(t)), "min_ms": min(t)} for name, (*_, t) in runs.items()
    }
    for name, r in result.items():
        print(f"{name:6s} {r['median_ms']:7.1f} ms/step median, {r['min_ms']:7.1f} fastest round")
    return result


if __name__ == "__main__":
    main()
