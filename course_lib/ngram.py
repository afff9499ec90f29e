"""The character n-gram baseline of the language model: interpolated Kneser-Ney.

Which workbook chapter teaches what:

- Language model (chapter 5, ``05c_rnn_in_practice``): :class:`KneserNeyLM`, the count-based
  baseline whose bits per character (:meth:`KneserNeyLM.bits_per_token`) the character LSTM must
  beat, and whose :meth:`KneserNeyLM.next_token_probs` shows a whole next-character distribution.

Pure Python and numpy; token ids are plain integers (numpy or jax arrays of them are accepted).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np


def _as_token_sequences(sequences, vocab_size: int, what: str) -> list[list[int]]:
    if getattr(sequences, "ndim", None) == 1:  # one numpy or jax array, not a list of them
        raise ValueError(f"{what} must be a list of 1-D token-id arrays; wrap one sequence in [ ]")
    out = []
    for i, seq in enumerate(sequences):
        arr = np.asarray(seq)
        if arr.ndim != 1:
            raise ValueError(f"{what}[{i}] must be a 1-D array of token ids, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{what}[{i}] has dtype {arr.dtype}; token ids must be integers (use .astype(int))"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
            raise ValueError(
                f"{what}[{i}] holds ids outside [0, {vocab_size}); map unknown characters to an "
                "unknown-character id inside the vocabulary"
            )
        out.append(arr.tolist())
    return out


def _level_counts(seqs: list[list[int]], order: int, bos_id: int) -> list[Counter]:
    """Raw n-gram counts at the highest order, continuation counts below it.

    The continuation count of a (k+1)-gram is the number of distinct (k+2)-grams it ends.
    """
    pad = [bos_id] * (order - 1)
    grams: Counter = Counter()
    for seq in seqs:
        padded = pad + seq
        grams.update(zip(*(padded[i:] for i in range(order)), strict=False))
    if not grams:
        raise ValueError("cannot fit a Kneser-Ney model on an empty corpus; pass some text")
    levels: list[Counter] = [Counter() for _ in range(order)]
    levels[order - 1] = grams
    distinct = list(grams)
    for k in range(order - 2, -1, -1):
        levels[k] = Counter(g[1:] for g in distinct)
        distinct = list(levels[k])
    return levels


def _positive_part(x):
    """``max(x, 0)`` of a float (the builtin: several times faster on one number) or an array."""
    return max(x, 0.0) if isinstance(x, float) else np.maximum(x, 0.0)


def _estimated_discount(counts: Counter) -> float:
    """``D = n1 / (n1 + 2 n2)`` from the counts-of-counts, clipped to [0.05, 1]."""
    hist = Counter(counts.values())
    n1, n2 = hist.get(1, 0), hist.get(2, 0)
    d = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
    return float(min(max(d, 0.05), 1.0))


class KneserNeyLM:
    """Interpolated Kneser-Ney character n-gram model (Chen & Goodman, 1999), the RNN's baseline.

    For a context ``h`` of length ``k`` the model mixes order ``k`` with order ``k - 1``::

        P_k(w | h) = (max(c_k(h, w) - D_k, 0) + D_k * N1+(h .) * P_{k-1}(w | h')) / c_k(h .)

    where ``h'`` drops the oldest token, ``c`` are raw counts at the highest order and
    continuation counts ``N1+(. h w)`` (the number of distinct left neighbours) at lower orders,
    and the recursion bottoms out in the uniform distribution over ``vocab_size``. A context never
    seen at some order passes the lower-order distribution through unchanged. So every id,
    including an unknown-character id that never occurs in training, has non-zero probability,
    and the probabilities sum to one over the vocabulary for any context.

    Each sequence is the ids to predict (a poem's characters then one end-of-poem id); the
    context before position 0 is padded with ``bos_id``. With ``discount=None`` each order uses
    ``D = n1 / (n1 + 2 n2)`` from its own counts-of-counts, clipped to [0.05, 1] so that unseen
    tokens always keep some mass. Taught in chapter 5 (05c_rnn_in_practice).
    """

    def __init__(self, order: int = 3, discount: float | Sequence[float] | None = None):
        if int(order) != order or order < 1:
            raise ValueError(f"order must be a positive integer (3 for a trigram), got {order}")
        self.order = int(order)
        if discount is not None:
            ds = [float(discount)] * self.order if np.isscalar(discount) else list(discount)
            if len(ds) != self.order or not all(0.0 < d <= 1.0 for d in ds):
                raise ValueError(
                    f"discount must be None, one number in (0, 1] or {self.order} such numbers "
                    f"(one per order), got {discount!r}"
                )
            discount = [float(d) for d in ds]
        self._fixed_discount = discount
        self.vocab_size: int | None = None
        self.bos_id: int | None = None

    # Tables, indexed by context length k = 0 .. order-1:
    #   _succ[k][context] = {token: count}, _total[k][context] = sum of those counts.
    def fit(self, sequences, vocab_size: int, bos_id: int) -> KneserNeyLM:
        """Count n-grams of the training ``sequences`` (a list of 1-D int arrays); returns self."""
        vocab_size, bos_id = int(vocab_size), int(bos_id)
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        if not 0 <= bos_id < vocab_size:
            raise ValueError(f"bos_id must be an id in [0, {vocab_size}), got {bos_id}")
        seqs = _as_token_sequences(sequences, vocab_size, "sequences")
        levels = _level_counts(seqs, self.order, bos_id)
        self._succ, self._total, self.discounts = [], [], []
        for k, counts in enumerate(levels):
            succ: dict[tuple, dict[int, int]] = {}
            for gram, c in counts.items():
                succ.setdefault(gram[:-1], {})[gram[-1]] = c
            self._succ.append(succ)
            self._total.append({h: sum(d.values()) for h, d in succ.items()})
            fixed = self._fixed_discount
            self.discounts.append(fixed[k] if fixed is not None else _estimated_discount(counts))
        self.vocab_size, self.bos_id = vocab_size, bos_id
        self.n_train_tokens = sum(len(s) for s in seqs)
        return self

    def _check_fitted(self) -> None:
        if self.vocab_size is None:
            raise RuntimeError("call .fit(sequences, vocab_size, bos_id) before scoring")

    def _interpolate(self, context: tuple, count_of: Callable[[dict], float | np.ndarray]):
        """The Kneser-Ney recursion from the uniform distribution up to the full ``context``.

        ``count_of(succ)`` gives the count(s) at one order from that order's ``{token: count}``
        table: one token's count (int) gives that token's probability, a float64 vector of every
        token's counts gives the whole distribution, with the same operations in the same order,
        so both are bit-identical.
        """
        p = 1.0 / self.vocab_size
        n = self.order
        for k in range(n):
            h = context[n - 1 - k :]
            succ = self._succ[k].get(h)
            if succ is None:  # unseen context: the lower order passes through unchanged
                continue
            d = self.discounts[k]
            p = (_positive_part(count_of(succ) - d) + d * len(succ) * p) / self._total[k][h]
        return p

    def _prob(self, context: tuple, w: int) -> float:
        """``P(w | context)`` for the last ``order - 1`` ids (see :meth:`_context`)."""
        return float(self._interpolate(context, lambda succ: succ.get(w, 0)))

    def _dense_counts(self, succ: dict[int, int]) -> np.ndarray:
        counts = np.zeros(self.vocab_size)
        ids = np.fromiter(succ.keys(), np.int64, len(succ))
        counts[ids] = np.fromiter(succ.values(), np.float64, len(succ))
        return counts

    def next_token_probs(self, context=()) -> np.ndarray:
        """The full next-token distribution (float64, length ``vocab_size``) after ``context``.

        ``context`` is the history of ids (left-padded with ``bos_id``; only the last
        ``order - 1`` matter).
        """
        self._check_fitted()
        ctx = self._context(list(np.asarray(context, dtype=np.int64).reshape(-1).tolist()))
        p = self._interpolate(ctx, self._dense_counts)
        return np.broadcast_to(p, (self.vocab_size,)).astype(np.float64)

    def _context(self, history: list[int]) -> tuple:
        n = self.order
        if n == 1:
            return ()
        padded = [self.bos_id] * (n - 1) + history
        return tuple(padded[-(n - 1) :])

    def log2_prob_sequences(self, sequences) -> float:
        """Total log2-probability (a number <= 0) of all tokens of ``sequences``.

        Its negation is the total code length in bits; see :meth:`bits_per_token`.
        """
        self._check_fitted()
        seqs = _as_token_sequences(sequences, self.vocab_size, "sequences")
        n = self.order
        pad = [self.bos_id] * (n - 1)
        cache: dict[tuple, float] = {}  # (context, token) -> log2 P: repeated n-grams score once
        total = 0.0
        for seq in seqs:
            padded = pad + seq
            for i, w in enumerate(seq):
                key = tuple(padded[i : i + n - 1]) + (w,)
                lp = cache.get(key)
                if lp is None:
                    lp = cache[key] = math.log2(self._prob(key[:-1], w))
                total += lp
        return total

    def bits_per_token(self, sequences) -> float:
        """Average bits per predicted token (bits per character for the poem corpus)."""
        n_tokens = sum(int(np.size(s)) for s in sequences)
        if n_tokens == 0:
            raise ValueError("bits_per_token needs at least one token to score")
        return -self.log2_prob_sequences(sequences) / n_tokens
