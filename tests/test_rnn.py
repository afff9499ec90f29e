"""RNN: vocabulary, cross-entropy vs the seed's entropy formula, training, sampling, forecasting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from course_lib import rnn, train
from flax import nnx

POEMS = [
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
]


def test_vocab_round_trip_and_bad_text():
    vocab = rnn.CharVocab(POEMS)
    ids = vocab.encode(POEMS[0])
    assert vocab.decode(ids) == POEMS[0]
    assert vocab.encode("白X")[1] == vocab.stoi[rnn.UNK]
    with pytest.raises(rnn.VocabularyError, match="empty"):
        rnn.CharVocab([])
    with pytest.raises(rnn.VocabularyError, match="empty"):
        rnn.CharVocab([""])
    with pytest.raises(rnn.VocabularyError, match="'XY'"):
        vocab.encode("白XY", strict=True)


def test_encode_poems_shifts_targets_by_one():
    vocab = rnn.CharVocab(POEMS)
    x, y = rnn.encode_poems(POEMS, vocab)
    assert x.shape == y.shape == (2, 25)
    assert (x[:, 0] == 0).all() and (y[:, -1] == vocab.stoi[rnn.EOS]).all()
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    with pytest.raises(rnn.VocabularyError):
        rnn.encode_poems([], vocab)


def test_cross_entropy_is_not_the_seeds_entropy_formula():
    logits = jnp.array([[[4.0, 0.0, 0.0]]])  # confident in class 0
    right, wrong = jnp.array([[0]]), jnp.array([[2]])
    manual = -jax.nn.log_softmax(logits)[0, 0]
    np.testing.assert_allclose(rnn.cross_entropy(logits, right), manual[0], rtol=1e-5)
    np.testing.assert_allclose(rnn.cross_entropy(logits, wrong), manual[2], rtol=1e-5)
    # the seed's -sum y log y ignores the target: the same value whether the model is right or wrong
    h = rnn.prediction_entropy(logits)
    assert float(rnn.cross_entropy(logits, wrong)) > 4.0 > float(h)
    assert abs(float(rnn.cross_entropy(logits, right)) - float(h)) > 0.05


def train_small_lm(cell: str = "lstm"):
    """60 steps of a small character LM on 256 poems: (vocab, graphdef, step, result, data)."""
    from course_lib import data

    poems = list(data.load("tang5", "train")[:256])
    vocab = rnn.CharVocab(poems)
    x, y = rnn.encode_poems(poems, vocab)
    cfg = rnn.CharLMConfig(vocab_size=len(vocab), embed_dim=32, hidden=64, cell=cell, dropout=0.0)
    graphdef, state = rnn.create_lm(cfg, 0)
    step = train.make_train_step(graphdef, rnn.lm_loss)
    res = train.fit(
        step,
        state,
        train.epoch_batches((x, y), 32, 0),
        key=jax.random.key(0),
        steps=60,
        log_every=10,
        progress=False,
    )
    return vocab, graphdef, step, res, (x, y)


@pytest.fixture(scope="module")
def trained_lm():
    return train_small_lm("lstm")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lm_shapes(cell):
    cfg = rnn.CharLMConfig(vocab_size=50, embed_dim=8, hidden=16, layers=2, cell=cell)
    graphdef, state = rnn.create_lm(cfg, 0)
    from flax import nnx

    model, _ = nnx.merge(graphdef, state)
    assert nnx.jit(lambda m, t: m(t))(model, jnp.zeros((3, 7), jnp.int32)).shape == (3, 7, 50)


def test_gru_language_model_trains():
    """The GRU cell is not only constructed: its loss falls like the LSTM's."""
    _, graphdef, _, res, _ = train_small_lm("gru")
    assert isinstance(nnx.merge(graphdef, res.state)[0].layers[0].cell, nnx.GRUCell)
    losses = [r["loss"] for r in res.history["train"]]
    assert losses[-1] < losses[0] - 1.0, losses


def test_lm_loss_decreases_without_retrace(trained_lm):
    vocab, graphdef, step, res, (x, y) = trained_lm
    losses = [r["loss"] for r in res.history["train"]]
    assert losses[-1] < losses[0] - 1.0
    assert step._cache_size() == 1
    bpc = rnn.make_lm_eval_fn(graphdef, x[:100], y[:100], batch_size=64)(res.state)["bits_per_char"]
    assert float(bpc) < np.log2(len(vocab))


def test_sampling_prompt_temperature_and_top_k(trained_lm):
    vocab, graphdef, _, res, _ = trained_lm
    key = jax.random.key(0)
    texts = rnn.sample_text(graphdef, res.state, vocab, key, n=4, prompt="白日", temperature=0.8)
    assert len(texts) == 4 and all(t.startswith("白日") for t in texts)
    greedy = rnn.sample_text(graphdef, res.state, vocab, key, n=2, top_k=1)
    assert greedy[0] == greedy[1]  # top-1 is deterministic whatever the key
    cold = rnn.sample_text(graphdef, res.state, vocab, jax.random.key(5), n=2, temperature=1e-4)
    assert cold == greedy
    with pytest.raises(rnn.VocabularyError, match="not in the vocabulary"):
        rnn.sample_text(graphdef, res.state, vocab, key, prompt="Z")
    with pytest.raises(ValueError, match="temperature"):
        rnn.sample_text(graphdef, res.state, vocab, key, temperature=0)


def test_is_quatrain():
    assert rnn.is_quatrain(POEMS[0])
    assert not rnn.is_quatrain(POEMS[0][:-1])
    assert not rnn.is_quatrain("白日依山尽，黄河入海流。欲穷千里目。更上一层楼，")


def test_windows_round_trip_and_nan_error():
    series = np.arange(60, dtype=np.float32)
    x, y, last = rnn.make_windows(series, 12, 3, scale=2.0)
    assert x.shape == (46, 12) and y.shape == (46, 3)
    np.testing.assert_allclose(
        last[:, None] + 2.0 * y, series[12:][np.arange(46)[:, None] + np.arange(3)]
    )
    with pytest.raises(ValueError, match="NaN"):
        rnn.make_windows(np.array([1.0, np.nan] * 20), 12, 3, 1.0)


def test_forecaster_learns_a_seasonal_series():
    t = np.arange(240, dtype=np.float32)
    series = 0.05 * t + np.sin(2 * np.pi * t / 12)
    x, y, _ = rnn.make_windows(series, 24, 12, scale=1.0)
    cfg = rnn.ForecastConfig(context=24, hidden=32)
    graphdef, state = rnn.create_forecaster(cfg, 0)
    res = train.fit(
        train.make_train_step(graphdef, rnn.forecast_loss),
        state,
        train.epoch_batches((x, y), 32, 0),
        key=jax.random.key(0),
        steps=300,
        log_every=50,
        progress=False,
    )
    assert res.history["train"][-1]["mse"] < 0.1 * res.history["train"][0]["mse"]


def test_forecaster_activation_option():
    with pytest.raises(ValueError, match="activation"):
        rnn.ForecastConfig(activation="sigmoid")
    x = np.full((2, 100), 3.0, np.float32)  # a long, un-normalised input
    norms = {}
    for act in ("tanh", "relu"):
        graphdef, state = rnn.create_forecaster(rnn.ForecastConfig(activation=act), 0)
        model, _ = nnx.merge(graphdef, state)
        assert model.rnn.cell.activation_fn is rnn.ACTIVATIONS[act]
        h = model.rnn(jnp.asarray(x)[..., None], initial_carry=rnn.zero_carry("lstm", 2, 64))
        norms[act] = float(jnp.abs(h).max())
    assert norms["relu"] > 1.0  # the option reaches the cell: with the default tanh, |h| < 1
