"""A decoder-only character Transformer: the LSTM's quatrains, written with attention.

Taught in chapter 8 (08_trends). It implements the decoder of Vaswani et al. 2017 ("Attention is
all you need"): causal multi-head self-attention and a position-wise MLP, each in a residual
branch. The LayerNorm sits before each branch (pre-LayerNorm, as in GPT-2 and nanoGPT), which
keeps the residual path an identity and trains stably without a long warm-up. Positions are either
learned vectors added to the input or rotary (RoPE, Su et al. 2021), which rotate queries and keys
so that attention scores depend only on how far apart two characters are.

The model is a drop-in for ``rnn.CharLM``: ``__call__(tokens, key)`` gives logits [B, T, V] and
``initial_carries``/``step`` the same one-character interface, so ``rnn.lm_loss``,
``rnn.make_lm_eval_fn`` and ``rnn.sample_text`` work unchanged. Its "carry" is a KV cache: the keys
and values of every earlier position, so each sampled character costs one position's work instead
of a pass over the whole prefix.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from course_lib.rnn import dropout

POSITIONS = ("learned", "rotary")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    dim: int = 96  # 128: 0.02 bits per character better on tang5, 1.3x the time
    heads: int = 4
    layers: int = 3
    mlp_ratio: int = 4
    max_len: int = 25  # the longest sequence, and the KV cache's length: 24 characters + BOS
    positions: str = "rotary"  # or "learned"
    dropout: float = 0.3
    tie_embeddings: bool = True  # output layer reuses the embedding matrix (fewer parameters)
    learning_rate: float = 2e-3
    weight_decay: float = 0.5  # AdamW's decoupled decay, on weight matrices only
    clip_norm: float = 1.0
    warmup_steps: int = 100  # linear warm-up of the learning rate from 0
    dtype: str = "float32"

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.heads < 1 or self.dim % self.heads:
            raise ValueError(
                f"dim={self.dim} must split evenly into heads={self.heads}; choose dim as a "
                "multiple of heads (e.g. dim=96, heads=4)"
            )
        if self.positions == "rotary" and self.head_dim % 2:
            raise ValueError(
                f"rotary positions rotate pairs of features, so head_dim=dim/heads must be even, "
                f"got {self.head_dim}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_len < 1 or self.layers < 1 or self.mlp_ratio < 1 or self.warmup_steps < 0:
            raise ValueError("max_len, layers and mlp_ratio must be >= 1, warmup_steps >= 0")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


def rotate(x, positions, base: float = 10000.0):
    """Rotary position embedding of queries or keys x [B, T, H, D] at ``positions`` [T].

    Feature i and i + D/2 form a pair that turns by the angle position * base^(-2i/D). Rotations
    compose, so rotate(q, m) . rotate(k, n) depends on m - n only: attention sees relative
    positions, and no position vector is added to the characters.
    """
    half = x.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[:, None] * freqs  # [T, D/2]
    cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]  # broadcast over heads
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).astype(x.dtype)


def attention(q, k, v, mask):
    """Scaled dot-product attention softmax(q k^T / sqrt(D)) v, where ``mask`` [T, S] allows.

    q is [B, T, H, D], k and v [B, S, H, D]. Returns the output [B, T, H, D] and the weights
    [B, H, T, S]; masked entries get exactly zero weight.
    """
    scores = jnp.einsum("bthd,bshd->bhts", q, k).astype(jnp.float32) / np.sqrt(q.shape[-1])
    # the most negative float, not -inf: exp() of it is 0, and a row can never become NaN
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhts,bshd->bthd", weights.astype(v.dtype), v), weights


class Block(nnx.Module):
    """One pre-LayerNorm decoder block: x + Attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, hidden, dt = cfg.dim, cfg.mlp_ratio * cfg.dim, cfg.dtype
        self.norm1 = nnx.LayerNorm(d, dtype=dt, rngs=rngs)
        self.qkv = nnx.Linear(d, 3 * d, use_bias=False, dtype=dt, rngs=rngs)
        self.proj = nnx.Linear(d, d, dtype=dt, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d, dtype=dt, rngs=rngs)
        self.up = nnx.Linear(d, hidden, dtype=dt, rngs=rngs)
        self.down = nnx.Linear(hidden, d, dtype=dt, rngs=rngs)

    def project(self, x, positions):
        """Queries, keys and values [B, T, H, D] of x [B, T, dim] at ``positions`` [T]."""
        b, t, _ = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.cfg.heads, self.cfg.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.cfg.positions == "rotary":
            q, k = rotate(q, positions), rotate(k, positions)
        return q, k, v

    def finish(self, x, attended, key=None):
        """The residual branches after the attention: its output projection, then the MLP."""
        keys = [None, None] if key is None else jax.random.split(key)
        b, t, _ = x.shape
        x = x + dropout(keys[0], self.proj(attended.reshape(b, t, -1)), self.cfg.dropout)
        h = self.down(jax.nn.gelu(self.up(self.norm2(x))))
        return x + dropout(keys[1], h, self.cfg.dropout)

    def __call__(self, x, positions, mask, key=None):
        """The whole sequence at once: the new x and the attention weights [B, H, T, T]."""
        keys = [None, None] if key is None else jax.random.split(key)
        q, k, v = self.project(x, positions)
        # dropout in the residual branches only (finish); dropping attention links as well did
        # not help on tang5
        attended, weights = attention(q, k, v, mask)
        return self.finish(x, attended, keys[1]), weights

    def step(self, x, cache, position):
        """One position x [B, 1, dim]: write its key and value into the cache at ``position``,
        attend to the positions up to it, return the new x and cache."""
        q, k, v = self.project(x, position[None])
        keys = jax.lax.dynamic_update_slice_in_dim(cache[0], k, position, axis=1)
        values = jax.lax.dynamic_update_slice_in_dim(cache[1], v, position, axis=1)
        # the cache's later slots hold zeros (or stale entries): the mask keeps them out
        mask = (jnp.arange(keys.shape[1]) <= position)[None, :]
        attended, _ = attention(q, keys, values, mask)
        return self.finish(x, attended), (keys, values)


class KVCache(NamedTuple):
    """The sampler's carry: per layer keys and values [B, max_len, heads, head_dim], and the
    position (an int32 scalar) that the next character is written to."""

    keys: list
    values: list
    position: jax.Array


class CharTransformer(nnx.Module):
    """Embedding (+ learned positions) -> decoder blocks -> LayerNorm -> logits over characters."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        # GPT-2's small initial scale: with tied embeddings the first logits are near zero, so
        # training starts from the uniform guess (loss ~ log V) instead of confident noise
        init = nnx.initializers.normal(0.02)
        d, dt = cfg.dim, cfg.dtype
        self.embed = nnx.Embed(cfg.vocab_size, d, embedding_init=init, dtype=dt, rngs=rngs)
        if cfg.positions == "learned":
            self.pos_embed = nnx.Embed(cfg.max_len, d, embedding_init=init, dtype=dt, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.layers)])
        self.norm = nnx.LayerNorm(d, dtype=dt, rngs=rngs)
        if cfg.tie_embeddings:
            self.out_bias = nnx.Param(jnp.zeros(cfg.vocab_size))
        else:
            self.out = nnx.Linear(d, cfg.vocab_size, dtype=dt, rngs=rngs)

    def embed_tokens(self, tokens, positions):
        h = self.embed(tokens)
        if self.cfg.positions == "learned":
            h = h + self.pos_embed(positions)
        return h

    def logits(self, h):
        """Final LayerNorm, then logits over the vocabulary, in float32 for a stable softmax."""
        h = self.norm(h)
        if self.cfg.tie_embeddings:
            return (self.embed.attend(h) + self.out_bias[...]).astype(jnp.float32)
        return self.out(h).astype(jnp.float32)

    def forward(self, tokens, key=None):
        """Logits [B, T, V] and each layer's attention weights [B, H, T, T] for tokens [B, T]."""
        t = tokens.shape[1]
        if t > self.cfg.max_len:
            raise ValueError(f"{t} tokens exceed max_len={self.cfg.max_len}; raise max_len")
        n = len(self.blocks) + 1
        keys = [None] * n if key is None else jax.random.split(key, n)
        positions = jnp.arange(t)
        h = dropout(keys[0], self.embed_tokens(tokens, positions), self.cfg.dropout)
        mask = jnp.tril(jnp.ones((t, t), bool))  # position t sees positions <= t: causal
        weights = []
        for block, k in zip(self.blocks, keys[1:], strict=True):
            h, w = block(h, positions, mask, k)
            weights.append(w)
        return self.logits(h), weights

    def __call__(self, tokens, key=None):
        """Logits [B, T, V] for tokens [B, T]; ``key`` switches dropout on (training)."""
        return self.forward(tokens, key)[0]

    def initial_carries(self, batch: int) -> KVCache:
        """An empty KV cache; it holds ``cfg.max_len`` positions, so sample at most that many."""
        shape = (batch, self.cfg.max_len, self.cfg.heads, self.cfg.head_dim)
        zeros = [jnp.zeros(shape, self.cfg.dtype) for _ in self.blocks]
        return KVCache(zeros, list(zeros), jnp.zeros((), jnp.int32))

    def step(self, carries: KVCache, token):
        """One character per row, token [B]: returns the updated cache and the logits [B, V]."""
        position = carries.position
        h = self.embed_tokens(token[:, None], position[None])
        keys, values = [], []
        for block, k, v in zip(self.blocks, carries.keys, carries.values, strict=True):
            h, (k, v) = block.step(h, (k, v), position)
            keys.append(k)
            values.append(v)
        return KVCache(keys, values, position + 1), self.logits(h[:, 0])


@functools.partial(jax.jit, static_argnums=0)
def _attention_weights(graphdef, state, tokens):
    model = nnx.merge(graphdef, state)
    model = model[0] if isinstance(model, tuple) else model
    return jnp.stack(model.forward(tokens[None])[1])[:, 0]


def attention_weights(graphdef, state, tokens) -> np.ndarray:
    """[layers, heads, T, T]: how much each position of one sequence ``tokens`` [T] attends to
    each earlier one. Row t sums to 1 and is zero after column t. ``state`` is the model's or
    the (model, optimizer) state of :func:`create`."""
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 1:
        raise ValueError(f"pass one sequence of token ids [T], got shape {tokens.shape}")
    return np.asarray(_attention_weights(graphdef, state, tokens))


def schedule(cfg: TransformerConfig, decay_steps: int | None = None):
    """Linear warm-up over ``cfg.warmup_steps``, then constant, or with ``decay_steps`` a cosine
    decay to zero at that step (warm-up included; a run shorter than the warm-up warms up over
    all but its last step, e.g. ``train transformer --steps 10``)."""
    lr, warmup = cfg.learning_rate, cfg.warmup_steps
    if decay_steps:
        warmup = min(warmup, decay_steps - 1)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, decay_steps)
    return optax.linear_schedule(0.0, lr, warmup) if warmup else optax.constant_schedule(lr)


def create(cfg: TransformerConfig, seed: int = 0, decay_steps: int | None = None):
    """A fresh Transformer and its optimizer (gradient clipping, then AdamW), split into
    (graphdef, state), like ``rnn.create_lm``."""
    model = CharTransformer(cfg, rngs=nnx.Rngs(seed))

    # decay only weight matrices and embeddings: shrinking LayerNorm scales or biases towards
    # zero does not simplify the function, it only fights the normalisation
    def matrices(params):
        return jax.tree.map(lambda p: p.ndim >= 2, params)

    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(schedule(cfg, decay_steps), weight_decay=cfg.weight_decay, mask=matrices),
    )
    return nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
