"""The training loop: batches, NaN stop, early stopping, checkpoint resume, 8-device equivalence."""

import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from course_lib import data, pixels, train, vae
from flax import nnx

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images():
    x, _ = data.load("digits", "train")
    return pixels.binarize(x[:256])


def small_vae():
    cfg = vae.VAEConfig(image_shape=(8, 8), hidden=(32,), latent_dim=4)
    graphdef, state = vae.create(cfg, 0)
    return graphdef, state, train.make_train_step(graphdef, vae.loss)


def test_epoch_batches_are_deterministic_and_cover_each_epoch():
    x = np.arange(10, dtype=np.float32)
    batch = train.epoch_batches((x,), 3, seed=7)
    first_epoch = np.concatenate([batch(s)[0] for s in range(3)])
    assert len(set(first_epoch)) == 9  # 3 full batches, the 10th example dropped this epoch
    again = train.epoch_batches((x,), 3, seed=7)
    assert all((batch(s)[0] == again(s)[0]).all() for s in range(7))
    assert not (batch(0)[0] == batch(3)[0]).all()  # reshuffled in the next epoch


def test_epoch_batches_reject_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        train.epoch_batches((np.array([[0.0, np.nan], [1.0, 2.0]]),), 1, 0)
    with pytest.raises(ValueError, match="batch_size"):
        train.epoch_batches((np.zeros(4),), 0, 0)
    with pytest.raises(ValueError, match="same length"):
        train.epoch_batches((np.zeros(4), np.zeros(5)), 2, 0)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_fit_rejects_non_positive_steps(images, steps):
    graphdef, state, step = small_vae()
    with pytest.raises(ValueError, match="positive integer"):
        train.fit(
            step,
            state,
            train.epoch_batches((images,), 32, 0),
            key=jax.random.key(0),
            steps=steps,
            progress=False,
        )


def test_nan_stops_training_with_the_step_number():
    @jax.jit
    def step(state, batch, key):
        count = state["count"] + 1
        loss = jnp.where(count == 7, jnp.nan, 1.0)
        return {"count": count}, {"loss": loss}

    batches = train.epoch_batches((np.zeros((8, 1), np.float32),), 4, 0)
    with pytest.raises(train.TrainingDiverged, match="step 7") as info:
        train.fit(
            step,
            {"count": jnp.int32(0)},
            batches,
            key=jax.random.key(0),
            steps=20,
            log_every=5,
            progress=False,
        )
    assert info.value.step == 7 and "learning rate" in str(info.value)


def test_select_best_returns_the_best_evaluated_state(images):
    graphdef, state, step = small_vae()
    evaluate = vae.make_eval_fn(graphdef, images[:64], 64)
    res = train.fit(
        step,
        state,
        train.epoch_batches((images,), 32, 0),
        key=jax.random.key(0),
        steps=30,
        log_every=10,
        hooks=[train.Evaluate(evaluate, 10, select_best=("neg_elbo", "min"))],
        progress=False,
    )
    values = [r["neg_elbo"] for r in res.history["eval"]]
    assert res.best["neg_elbo"] == min(values)
    assert float(evaluate(res.state)["neg_elbo"]) == res.best["neg_elbo"]


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_stopped_and_resumed_run_is_bit_identical(images, tmp_path):
    def run(steps, ckpt):
        graphdef, state, step = small_vae()
        evaluate = vae.make_eval_fn(graphdef, images[:64], 64)
        return train.fit(
            step,
            state,
            train.epoch_batches((images,), 32, 0),
            key=jax.random.key(0),
            steps=steps,
            log_every=5,
            hooks=[train.Evaluate(evaluate, 10)] + ([train.Checkpoint(ckpt, 10)] if ckpt else []),
            progress=False,
        )

    straight = run(30, None)
    run(10, tmp_path / "ckpt")  # "stopped" after 10 steps
    resumed = run(30, tmp_path / "ckpt")  # a fresh model restored from step 10
    assert resumed.history == straight.history
    for a, b in zip(_leaves(resumed.state), _leaves(straight.state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_corrupt_or_foreign_checkpoint_gets_a_clear_error(images, tmp_path):
    graphdef, state, step = small_vae()
    batches = train.epoch_batches((images,), 32, 0)
    train.fit(
        step,
        state,
        batches,
        key=jax.random.key(0),
        steps=5,
        hooks=[train.Checkpoint(tmp_path)],
        progress=False,
    )
    # a different model configuration cannot load it
    other = vae.VAEConfig(image_shape=(8, 8), hidden=(16,), latent_dim=4)
    g2, s2 = vae.create(other, 0)
    with pytest.raises(train.CheckpointError, match="another configuration|different model"):
        train.fit(
            train.make_train_step(g2, vae.loss),
            s2,
            batches,
            key=jax.random.key(0),
            steps=10,
            hooks=[train.Checkpoint(tmp_path)],
            progress=False,
        )
    # damage every data file of the checkpoint
    for f in (tmp_path / "5").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(b"garbage")
    graphdef, state, step = small_vae()
    with pytest.raises(train.CheckpointError, match="corrupt"):
        train.fit(
            step,
            state,
            batches,
            key=jax.random.key(0),
            steps=10,
            hooks=[train.Checkpoint(tmp_path)],
            progress=False,
        )


EIGHT_DEVICES = textwrap.dedent(
    """
    import json, jax, numpy as np
    from course_lib import data, parallel, pixels, train, vae
    assert len(jax.devices()) == 8, jax.devices()
    x = pixels.binarize(data.load("digits", "train").images[:512])
    out = {}
    for n in (8, 1):
        graphdef, state = vae.create(vae.VAEConfig(image_shape=(8, 8), hidden=(64,)), 0)
        mesh = parallel.data_mesh(jax.devices()[:n])
        step = train.make_train_step(graphdef, vae.loss)
        res = train.fit(step, state, train.epoch_batches((x,), 64, 0),
                        key=jax.random.key(0), steps=20, log_every=1, mesh=mesh, progress=False)
        out[n] = [r["loss"] for r in res.history["train"]]
        leaf = jax.tree.leaves(res.state)[0]
        out[f"devices_{n}"] = len(leaf.sharding.device_set)
    try:
        parallel.shard_batch((np.zeros((12, 2)),), parallel.data_mesh())
        out["indivisible_error"] = ""
    except ValueError as err:
        out["indivisible_error"] = str(err)
    print(json.dumps(out))
    """
)


def test_eight_simulated_devices_give_the_same_losses_as_one():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices_8"] == 8 and out["devices_1"] == 1
    np.testing.assert_allclose(out["8"], out["1"], rtol=1e-4)
    assert "not divisible by the 8 devices" in out["indivisible_error"]


def test_one_device_takes_any_batch_size():
    from course_lib import parallel

    mesh = parallel.data_mesh(jax.devices()[:1])
    assert parallel.shard_batch((np.zeros((3, 2)),), mesh)[0].shape == (3, 2)
    batch = (np.zeros((4, 2)),)
    assert parallel.shard_batch(batch, mesh) is batch  # no device_put: the jitted step copies it


def _vae_run(images, steps, hooks, batches=None):
    graphdef, state, step = small_vae()
    evaluate = train.Evaluate(vae.make_eval_fn(graphdef, images[:64], 64), 10, ("neg_elbo", "min"))
    return train.fit(
        step,
        state,
        batches or train.epoch_batches((images,), 32, 0),
        key=jax.random.key(0),
        steps=steps,
        log_every=5,
        hooks=[evaluate, *hooks],
        progress=False,
    )


def test_ctrl_c_saves_the_step_reached_and_the_resumed_run_is_bit_identical(images, tmp_path):
    straight = _vae_run(images, 30, [])
    plain = train.epoch_batches((images,), 32, 0)

    def batches_interrupted_at_17(step):
        if step == 17:  # Ctrl-C while step 17's batch is made: steps 0..16 are done
            os.kill(os.getpid(), signal.SIGINT)
        return plain(step)

    ckpt = tmp_path / "ckpt"
    with pytest.raises(train.TrainingInterrupted) as info:
        _vae_run(images, 30, [train.Checkpoint(ckpt, 10)], batches_interrupted_at_17)
    assert info.value.step == 18 and info.value.saved  # the signal is read before step 18
    assert train.latest_checkpoint_step(ckpt) == 18  # not a logging step: 16, 17, 18 are pending
    resumed = _vae_run(images, 30, [train.Checkpoint(ckpt, 10)])
    assert resumed.history == straight.history and resumed.best == straight.best
    for a, b in zip(_leaves(resumed.state), _leaves(straight.state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_interrupt_without_a_checkpoint_hook_saves_nothing(images):
    plain = train.epoch_batches((images,), 32, 0)

    def batches(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return plain(step)

    with pytest.raises(KeyboardInterrupt) as info:
        _vae_run(images, 30, [], batches)
    assert info.value.step == 4 and not info.value.saved


def test_checkpoints_are_keyed_by_path_and_survive_an_added_field(tmp_path):
    def step(state, batch, key):
        return jax.tree.map(lambda x: x + 1, state), {"loss": jnp.float32(0.0)}

    batches = train.epoch_batches((np.zeros((4, 1), np.float32),), 2, 0)
    old = {"b": jnp.zeros(3), "a": jnp.zeros(2, jnp.int32)}
    fit = functools.partial(train.fit, step, batches=batches, key=jax.random.key(0), progress=False)
    fit(old, steps=4, log_every=2, hooks=[train.Checkpoint(tmp_path)])
    # a new field "aa" sorts between the old ones: restoring by position would shift "b" into it
    new = {"a": jnp.zeros(2, jnp.int32), "aa": jnp.full(5, 7.0), "b": jnp.zeros(3)}
    with pytest.warns(UserWarning, match="no aa: kept fresh values"):
        res = fit(new, steps=6, log_every=2, hooks=[train.Checkpoint(tmp_path)])
    np.testing.assert_array_equal(res.state["a"], [6, 6])  # 4 restored steps + 2 more
    np.testing.assert_array_equal(res.state["b"], [6.0, 6.0, 6.0])
    np.testing.assert_array_equal(res.state["aa"], [9.0] * 5)  # fresh 7 + 2 steps
    # and a field removed since is ignored
    res = fit({"b": jnp.zeros(3)}, steps=8, log_every=2, hooks=[train.Checkpoint(tmp_path)])
    np.testing.assert_array_equal(res.state["b"], [8.0] * 3)


def test_make_train_step_is_one_adam_step_on_the_loss(images):
    graphdef, state, step = small_vae()
    model, optimizer = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))
    key = jax.random.key(3)
    grads = nnx.grad(lambda m: vae.loss(m, (images[:32],), key)[0])(model)
    optimizer.update(model, grads)
    new_state, metrics = step(state, (images[:32],), key)
    got = nnx.state(nnx.merge(graphdef, new_state)[0], nnx.Param)
    for a, b in zip(
        jax.tree.leaves(got), jax.tree.leaves(nnx.state(model, nnx.Param)), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert set(metrics) == {"loss", "neg_elbo", "recon", "kl"}
