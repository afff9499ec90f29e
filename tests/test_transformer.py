"""Transformer: exact causal masking, the KV cache, rotary positions, the LSTM's sampler and
evaluation reused unchanged, attention maps, training and config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from course_lib import rnn, train
from course_lib import transformer as tr
from flax import nnx

POEMS = [
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
]
VOCAB = rnn.CharVocab(POEMS)


def tiny(positions: str = "rotary", **overrides):
    """An untrained two-layer Transformer over VOCAB: (cfg, graphdef, state)."""
    fields = dict(vocab_size=len(VOCAB), dim=16, heads=2, layers=2, positions=positions)
    cfg = tr.TransformerConfig(**{**fields, "dropout": 0.0, **overrides})
    return (cfg, *tr.create(cfg, seed=1))


def random_tokens(shape, seed=0):
    return jax.random.randint(jax.random.key(seed), shape, 0, len(VOCAB), jnp.int32)


@pytest.mark.parametrize("positions", tr.POSITIONS)
def test_changing_a_later_token_never_changes_an_earlier_output(positions):
    _, graphdef, state = tiny(positions, dropout=0.2)
    model, _ = nnx.merge(graphdef, state)
    run = nnx.jit(lambda m, t, k: m(t, k))
    tokens = random_tokens((2, 25))
    for key in (None, jax.random.key(3)):  # dropout on (training) must not leak either
        base = np.asarray(run(model, tokens, key))
        for j in (0, 9, 24):
            changed = tokens.at[:, j].set((tokens[:, j] + 1) % len(VOCAB))
            out = np.asarray(run(model, changed, key))
            np.testing.assert_array_equal(out[:, :j], base[:, :j])
            assert np.abs(out[:, j:] - base[:, j:]).max() > 1e-4


@pytest.mark.parametrize("positions", tr.POSITIONS)
def test_kv_cache_steps_give_the_full_pass_logits(positions):
    cfg, graphdef, state = tiny(positions)
    model, _ = nnx.merge(graphdef, state)
    tokens = random_tokens((3, cfg.max_len), seed=1)
    full = model(tokens)
    step = nnx.jit(lambda m, c, t: m.step(c, t))
    carries, logits = model.initial_carries(3), []
    assert carries.keys[0].shape == (3, cfg.max_len, cfg.heads, cfg.head_dim)
    for t in range(cfg.max_len):
        carries, out = step(model, carries, tokens[:, t])
        logits.append(out)
    assert int(carries.position) == cfg.max_len
    np.testing.assert_allclose(np.stack(logits, 1), full, atol=1e-4)


def test_rnn_sampler_and_evaluation_work_on_the_transformer():
    _, graphdef, state = tiny()
    sample = lambda key, **kw: rnn.sample_text(graphdef, state, VOCAB, key, **kw)  # noqa: E731
    key = jax.random.key(0)
    texts = sample(key, n=3, prompt="白日", max_len=25)
    assert len(texts) == 3 and all(t.startswith("白日") for t in texts)
    assert all(len(t.replace(rnn.UNK, "?")) <= 24 for t in texts)  # max_len=25 with the EOS
    assert sample(key, n=3, prompt="白日") == texts
    assert sample(jax.random.key(1), n=3, prompt="白日") != texts
    greedy = sample(key, n=2, top_k=1)
    assert greedy[0] == greedy[1]  # top-1 is deterministic whatever the key
    with pytest.raises(ValueError, match="temperature"):
        sample(key, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        sample(key, top_k=0)
    x, y = rnn.encode_poems(POEMS, VOCAB)
    bpc = rnn.make_lm_eval_fn(graphdef, x, y, batch_size=4)(state)["bits_per_char"]
    assert abs(float(bpc) - np.log2(len(VOCAB))) < 0.5  # untrained: about a uniform guess


def test_attention_weights_are_causal_distributions():
    cfg, graphdef, state = tiny()
    tokens = np.asarray(random_tokens((20,), seed=2))
    w = tr.attention_weights(graphdef, state, tokens)
    assert w.shape == (cfg.layers, cfg.heads, 20, 20)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(w, k=1) == 0.0) and np.all(w[..., 0, 0] == 1.0)
    with pytest.raises(ValueError, match="one sequence"):
        tr.attention_weights(graphdef, state, tokens[None])


def test_rotary_scores_depend_only_on_relative_position():
    q, k = jax.random.normal(jax.random.key(0), (2, 1, 6, 2, 8))
    pos = jnp.arange(6)
    np.testing.assert_allclose(tr.rotate(q, 0 * pos), q, atol=1e-6)  # position 0: no turn
    np.testing.assert_allclose(
        jnp.linalg.norm(tr.rotate(q, pos), axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5
    )

    def scores(shift):
        rq, rk = tr.rotate(q, pos + shift), tr.rotate(k, pos[::-1] + shift)
        return jnp.einsum("bthd,bthd->bth", rq, rk)

    np.testing.assert_allclose(scores(7), scores(0), atol=1e-4)
    np.testing.assert_allclose(scores(100), scores(0), atol=1e-4)
    assert np.abs(tr.rotate(q, pos + 1) - tr.rotate(q, pos)).max() > 0.1


def test_learned_and_rotary_models_differ_in_parameters():
    learned = nnx.merge(*tiny("learned")[1:])[0]
    rotary = nnx.merge(*tiny("rotary")[1:])[0]
    assert learned.pos_embed.embedding.shape == (25, 16)
    assert not hasattr(rotary, "pos_embed")
    with pytest.raises(ValueError, match="max_len"):
        learned(random_tokens((1, 26)))


def test_train_step_compiles_once_and_the_loss_falls():
    from course_lib import data

    poems = list(data.load("tang5", "train")[:256])
    vocab = rnn.CharVocab(poems)
    x, y = rnn.encode_poems(poems, vocab)
    cfg = tr.TransformerConfig(
        vocab_size=len(vocab), dim=32, heads=2, layers=2, learning_rate=1e-2, warmup_steps=5
    )
    graphdef, state = tr.create(cfg, 0, decay_steps=40)
    step = train.make_train_step(graphdef, rnn.lm_loss)
    res = train.fit(
        step,
        state,
        train.epoch_batches((x, y), 32, 0),
        key=jax.random.key(0),
        steps=40,
        log_every=10,
        progress=False,
    )
    losses = [r["loss"] for r in res.history["train"]]
    # from about the uniform guess log V (7.2 nats) to more than 1.2 nats below it in 40 steps
    assert losses[-1] < losses[0] - 0.75 and losses[-1] < np.log(len(vocab)) - 1.2, losses
    assert step._cache_size() == 1


def test_schedule_warms_up_then_decays():
    cfg = tr.TransformerConfig(vocab_size=10, learning_rate=1e-3, warmup_steps=10)
    flat, cosine = tr.schedule(cfg), tr.schedule(cfg, decay_steps=100)
    assert float(flat(0)) == float(cosine(0)) == 0.0
    np.testing.assert_allclose([flat(10), flat(1000), cosine(10)], 1e-3, rtol=1e-6)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-9)
    # a run no longer than the warm-up warms up over all but its last step, then reaches 0
    short = tr.schedule(cfg, decay_steps=5)
    np.testing.assert_allclose([short(4), short(5)], [1e-3, 0.0], atol=1e-9)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"positions": "sinusoidal"}, "positions must be one of"),
        ({"dim": 130, "heads": 4}, "split evenly into heads"),
        ({"dim": 12, "heads": 4}, "must be even"),
        ({"dropout": 1.0}, "dropout"),
        ({"layers": 0}, "layers"),
    ],
)
def test_bad_config_raises_a_clear_error(fields, message):
    with pytest.raises(ValueError, match=message):
        tr.TransformerConfig(vocab_size=10, **fields)
