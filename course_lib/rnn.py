"""Recurrent networks: a character language model and a time-series regressor.

Taught in chapters 3.3 (algorithm), 4.3 (state update, BPTT, cross-entropy) and 5.2.3 (practice,
05c_rnn_in_practice). The seed article's 4.3.3 writes the loss as -sum y_t log y_t, which is the
entropy of the prediction and ignores the data; the loss trained here is the cross-entropy
-log p(target_t | history), see ``cross_entropy`` and ``prediction_entropy``.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

BOS, UNK, EOS = "<bos>", "<unk>", "\n"
QUATRAIN = re.compile(r"^([\u4e00-\u9fff]{5}，[\u4e00-\u9fff]{5}。){2}$")


class VocabularyError(ValueError):
    """Text that the vocabulary cannot encode, or no text at all."""


class CharVocab:
    """Characters <-> integer ids. Id 0 is the begin-of-poem token, 1 unknown, 2 the newline
    that ends a poem; the rest are the training text's characters in sorted order."""

    def __init__(self, texts):
        texts = list(texts)
        if not texts or not any(texts):
            raise VocabularyError(
                "cannot build a vocabulary from an empty text; pass training text"
            )
        chars = sorted(set("".join(texts)) - {EOS})
        self.itos = [BOS, UNK, EOS, *chars]
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        if strict:
            unknown = sorted({c for c in text if c not in self.stoi})
            if unknown:
                raise VocabularyError(
                    f"characters not in the vocabulary: {''.join(unknown)!r}; use only characters "
                    "from the training text (see vocab.itos) or leave them out of the prompt"
                )
        return np.array([self.stoi.get(c, 1) for c in text], np.int32)

    def decode(self, ids) -> str:
        return "".join(self.itos[i] for i in ids if i != 0)


def encode_poems(poems, vocab: CharVocab) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``[BOS, c1..cn]`` and targets ``[c1..cn, EOS]`` for poems of one length n."""
    lengths = {len(p) for p in poems}
    if len(poems) == 0 or lengths == {0}:
        raise VocabularyError("no poems to encode: pass a non-empty list of non-empty strings")
    if len(lengths) != 1:
        raise ValueError(f"poems must share one length to batch without padding, got {lengths}")
    ids = np.stack([vocab.encode(p) for p in poems])
    bos = np.zeros((len(ids), 1), np.int32)
    eos = np.full((len(ids), 1), vocab.stoi[EOS], np.int32)
    return np.concatenate([bos, ids], 1), np.concatenate([ids, eos], 1)


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    vocab_size: int
    embed_dim: int = 128
    hidden: int = 256
    layers: int = 1
    cell: str = "lstm"  # or "gru"
    dropout: float = 0.3
    tie_embeddings: bool = True  # output layer reuses the embedding matrix (fewer parameters)
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    clip_norm: float = 5.0
    dtype: str = "float32"

    def __post_init__(self):
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {self.cell!r}")


ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def make_cell(cell: str, cin: int, hidden: int, dtype, rngs, activation: str = "tanh"):
    """An LSTM or GRU cell; ``activation`` is its candidate/output nonlinearity (tanh is standard;
    "relu" reproduces the seed's 5.2.3 listing, taught in 05c_rnn_in_practice)."""
    fn = ACTIVATIONS[activation]
    if cell == "lstm":
        return nnx.OptimizedLSTMCell(cin, hidden, activation_fn=fn, dtype=dtype, rngs=rngs)
    return nnx.GRUCell(cin, hidden, activation_fn=fn, dtype=dtype, rngs=rngs)


def zero_carry(cell: str, batch: int, hidden: int):
    """The all-zero initial state: (c, h) for an LSTM, h for a GRU."""
    h = jnp.zeros((batch, hidden), jnp.float32)
    return (h, h) if cell == "lstm" else h


def dropout(key, x, rate: float):
    """Inverted dropout with an explicit key (identity when ``key`` is None or rate is 0)."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class CharLM(nnx.Module):
    """Embedding -> stacked LSTM/GRU -> logits over the vocabulary, one step per character."""

    def __init__(self, cfg: CharLMConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.embed_dim, dtype=cfg.dtype, rngs=rngs)
        sizes = [cfg.embed_dim] + [cfg.hidden] * cfg.layers
        self.layers = nnx.List(
            [
                nnx.RNN(make_cell(cfg.cell, a, cfg.hidden, cfg.dtype, rngs), rngs=False)
                for a in sizes[:-1]
            ]
        )
        if cfg.tie_embeddings:
            self.to_embed = nnx.Linear(cfg.hidden, cfg.embed_dim, dtype=cfg.dtype, rngs=rngs)
            self.out_bias = nnx.Param(jnp.zeros(cfg.vocab_size))
        else:
            self.out = nnx.Linear(cfg.hidden, cfg.vocab_size, dtype=cfg.dtype, rngs=rngs)

    def logits(self, h):
        """Hidden states -> logits over the vocabulary, in float32 for a stable softmax."""
        if self.cfg.tie_embeddings:
            h = self.embed.attend(self.to_embed(h)) + self.out_bias[...]
        else:
            h = self.out(h)
        return h.astype(jnp.float32)

    def __call__(self, tokens, key=None):
        """Logits [B, T, V] for tokens [B, T]; ``key`` switches dropout on (training)."""
        keys = (
            [None] * (len(self.layers) + 1)
            if key is None
            else jax.random.split(key, len(self.layers) + 1)
        )
        h = dropout(keys[0], self.embed(tokens), self.cfg.dropout)
        carry = zero_carry(self.cfg.cell, tokens.shape[0], self.cfg.hidden)
        for layer, k in zip(self.layers, keys[1:], strict=True):
            h = dropout(k, layer(h, initial_carry=carry), self.cfg.dropout)
        return self.logits(h)

    def step(self, carries, token):
        """One character: returns the new per-layer carries and the logits [B, V]."""
        h = self.embed(token)
        new = []
        for layer, carry in zip(self.layers, carries, strict=True):
            carry, h = layer.cell(carry, h)
            new.append(carry)
        return new, self.logits(h)

    def initial_carries(self, batch: int):
        return [zero_carry(self.cfg.cell, batch, self.cfg.hidden) for _ in self.layers]


def cross_entropy(logits, targets):
    """Mean over tokens of -log softmax(logits)[target], in nats: the loss of chapter 4.3."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))


def prediction_entropy(logits):
    """-sum_y p(y) log p(y) of the model's own prediction: the seed's 4.3.3 formula. It never
    looks at the data, so minimising it only makes the model confident, not right."""
    logp = jax.nn.log_softmax(logits)
    return jnp.mean(-jnp.sum(jnp.exp(logp) * logp, axis=-1))


def lm_loss(model: CharLM, batch, key):
    """The training loss of ``train.make_train_step``: cross-entropy, and bits per character."""
    inputs, targets = batch
    loss = cross_entropy(model(inputs, key), targets)
    return loss, {"bits_per_char": loss / jnp.log(2.0)}


def create_lm(cfg: CharLMConfig, seed: int = 0, decay_steps: int | None = None):
    """A fresh language model and its optimizer (gradient clipping, then AdamW), split into
    (graphdef, state). With ``decay_steps`` the learning rate decays to zero on a cosine."""
    model = CharLM(cfg, rngs=nnx.Rngs(seed))
    lr = cfg.learning_rate
    if decay_steps:
        lr = optax.cosine_decay_schedule(cfg.learning_rate, decay_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(lr, weight_decay=cfg.weight_decay),
    )
    return nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))


def make_lm_eval_fn(graphdef, inputs, targets, batch_size: int = 256):
    """``eval(state) -> {"bits_per_char": ...}`` over all targets (every character and the EOS)."""
    n = len(inputs)
    pad = -n % batch_size
    # padded rows get weight 0, so every real poem counts once and shapes stay fixed
    weight = np.concatenate([np.ones(n), np.zeros(pad)]).astype(np.float32)
    xs = np.concatenate([inputs, inputs[:pad]]).reshape(-1, batch_size, inputs.shape[1])
    ys = np.concatenate([targets, targets[:pad]]).reshape(-1, batch_size, targets.shape[1])
    ws = weight.reshape(-1, batch_size)
    n_tokens = n * targets.shape[1]

    @jax.jit
    def chunk_nats(state, x, y, w):
        model, _ = nnx.merge(graphdef, state)
        nll = optax.softmax_cross_entropy_with_integer_labels(model(x), y)
        return jnp.sum(nll.sum(axis=1) * w)

    def evaluate(state):
        total = sum(chunk_nats(state, x, y, w) for x, y, w in zip(xs, ys, ws, strict=True))
        return {"bits_per_char": total / n_tokens / np.log(2.0)}

    return evaluate


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _sample_ids(graphdef, state, key, prompt_ids, n, max_len, top_k, temperature):
    model, _ = nnx.merge(graphdef, state)
    n_prompt = prompt_ids.shape[0]
    forced = jnp.zeros(max_len, jnp.int32).at[:n_prompt].set(prompt_ids)

    def body(carry, t):
        carries, token, key = carry
        carries, logits = model.step(carries, token)
        logits = logits / temperature
        if top_k is not None:
            kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        key, sub = jax.random.split(key)
        # Inverse-CDF sampling: one uniform number per row, where jax.random.categorical draws
        # one Gumbel number per vocabulary entry (about 3x slower on a CPU for 3,500 characters).
        cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
        u = jax.random.uniform(sub, (n, 1)) * cdf[:, -1:]
        drawn = jnp.minimum(jnp.sum(cdf <= u, axis=-1), logits.shape[-1] - 1).astype(jnp.int32)
        nxt = jnp.where(t < n_prompt, forced[t], drawn)
        return (carries, nxt, key), nxt

    start = (model.initial_carries(n), jnp.zeros(n, jnp.int32), key)
    _, ids = jax.lax.scan(body, start, jnp.arange(max_len))
    return ids.T


def sample_text(
    graphdef,
    state,
    vocab: CharVocab,
    key,
    n: int = 8,
    prompt: str = "",
    temperature: float = 1.0,
    top_k: int | None = None,
    max_len: int = 25,
) -> list[str]:
    """``n`` poems sampled character by character, each starting with ``prompt``.

    ``temperature`` divides the logits (lower is more conservative); ``top_k`` keeps only the k
    most likely characters. Generation stops at the end-of-poem newline or after ``max_len``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and not 0 < top_k <= len(vocab):
        raise ValueError(f"top_k must be in 1..{len(vocab)}, got {top_k}")
    prompt_ids = vocab.encode(prompt, strict=True)
    if len(prompt_ids) >= max_len:
        raise ValueError(
            f"prompt has {len(prompt_ids)} characters; max_len={max_len} must exceed it"
        )
    ids = np.asarray(
        _sample_ids(
            graphdef,
            state,
            key,
            jnp.asarray(prompt_ids),
            n,
            max_len,
            top_k,
            jnp.float32(temperature),
        )
    )
    texts = []
    for row in ids:
        text = vocab.decode(row)
        texts.append(text.split(EOS)[0])
    return texts


def is_quatrain(text: str) -> bool:
    """True for the exact 4x5 form, e.g. 白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"""
    return bool(QUATRAIN.match(text))


# --- time series -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ForecastConfig:
    context: int = 36  # months of history the LSTM reads
    horizon: int = 12  # months it predicts at once
    hidden: int = 64
    cell: str = "lstm"
    learning_rate: float = 3e-3
    weight_decay: float = 0.0  # AdamW's decoupled decay; 0 is plain Adam
    clip_norm: float = 1.0
    dtype: str = "float32"
    activation: str = "tanh"  # "relu" is the seed's 5.2.3 choice, kept only to measure it

    def __post_init__(self):
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {self.cell!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )


class SeqRegressor(nnx.Module):
    """LSTM over a window of normalised values -> the next ``horizon`` values.

    The seed's 5.2.3 passes activation='relu' to its LSTM; the cell's state then has no bound and
    long sequences blow up. The standard tanh is the default; ``activation="relu"`` exists so that
    chapter 5 (05c_rnn_in_practice) can measure the difference.
    """

    def __init__(self, cfg: ForecastConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        cell = make_cell(cfg.cell, 1, cfg.hidden, cfg.dtype, rngs, cfg.activation)
        self.rnn = nnx.RNN(cell, rngs=False)
        self.head = nnx.Linear(cfg.hidden, cfg.horizon, dtype=cfg.dtype, rngs=rngs)

    def __call__(self, x):
        carry = zero_carry(self.cfg.cell, x.shape[0], self.cfg.hidden)
        h = self.rnn(x[..., None], initial_carry=carry)
        return self.head(h[:, -1]).astype(jnp.float32)


def forecast_loss(model: SeqRegressor, batch, key):
    """The training loss of ``train.make_train_step``: mean squared error of the forecast."""
    x, y = batch
    loss = jnp.mean((model(x) - y) ** 2)
    return loss, {"mse": loss}


def forecast_optimizer(clip_norm: float, learning_rate=0.0, weight_decay=0.0):
    """Gradient clipping, then AdamW whose learning rate and weight decay live in the optimizer
    state (``optax.inject_hyperparams``): one compiled step serves every value, and a vmapped
    population (``population``, chapter 6.4) carries one value per member."""
    adamw = optax.inject_hyperparams(optax.adamw)
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        adamw(learning_rate=learning_rate, weight_decay=weight_decay),
    )


def create_forecaster(cfg: ForecastConfig, seed: int = 0):
    model = SeqRegressor(cfg, rngs=nnx.Rngs(seed))
    tx = forecast_optimizer(cfg.clip_norm, cfg.learning_rate, cfg.weight_decay)
    return nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))


def make_windows(values, context: int, horizon: int, scale: float):
    """Sliding windows, each shifted by its last observed value and divided by ``scale``.

    Returns (x [N, context], y [N, horizon], last [N]); predictions map back as
    ``last + scale * y``. Working relative to the last value removes the level, so the LSTM
    learns the seasonal shape and the trend, which carry over to unseen years.
    """
    values = np.asarray(values, np.float32)
    if np.isnan(values).any():
        raise ValueError("the series contains NaN; interpolate or drop the gaps first")
    n = len(values) - context - horizon + 1
    if n <= 0:
        raise ValueError(f"series of length {len(values)} is shorter than context+horizon")
    idx = np.arange(n)[:, None]
    x = values[idx + np.arange(context)]
    y = values[idx + context + np.arange(horizon)]
    last = x[:, -1:]
    return (x - last) / scale, (y - last) / scale, last[:, 0]


def predict(graphdef, state, x):
    model, _ = nnx.merge(graphdef, state)
    return model(jnp.asarray(x))
