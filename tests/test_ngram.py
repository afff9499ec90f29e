"""Tests for course_lib.ngram: the interpolated Kneser-Ney character n-gram model."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from course_lib import ngram

SMALL = [np.array(s) for s in ([2, 3, 4, 2, 3, 1], [3, 4, 4, 2, 1], [2, 2, 3, 1], [4, 3, 1])]
BOS, V = 0, 7  # ids 5 and 6 never occur: they stand in for unknown characters


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", [None, 0.3, 1.0])
def test_kneser_ney_normalises_for_every_context(order, discount):
    lm = ngram.KneserNeyLM(order=order, discount=discount).fit(SMALL, V, BOS)
    contexts = [(), (BOS,), (BOS, BOS), (BOS, BOS, BOS)]
    contexts += [(a, b) for a in range(V) for b in range(V)]  # seen and unseen alike
    contexts += [(BOS, 2, 3), (4, 4, 2), (6, 5, 6)]
    for ctx in contexts:
        p = lm.next_token_probs(ctx)
        assert p.shape == (V,)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert p.min() > 0  # every id, unseen ones included
    # The per-token scoring path agrees: a one-token sequence is predicted after BOS padding.
    start = lm.next_token_probs(())
    for w in range(V):
        assert 2 ** lm.log2_prob_sequences([np.array([w])]) == pytest.approx(start[w], rel=1e-12)


def test_kneser_ney_scores_match_the_full_distribution():
    lm = ngram.KneserNeyLM(order=3).fit(SMALL, V, BOS)
    seq = np.array([2, 3, 4, 6, 2, 1])
    expected = sum(math.log2(lm.next_token_probs(seq[:i])[w]) for i, w in enumerate(seq.tolist()))
    assert lm.log2_prob_sequences([seq]) == pytest.approx(expected, rel=1e-12)
    assert lm.bits_per_token([seq, seq]) == pytest.approx(-expected / len(seq), rel=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", [None, 0.3])
def test_scalar_scores_and_the_full_distribution_agree_exactly(order, discount):
    # One recursion serves both paths, so they agree bit for bit, not just approximately.
    lm = ngram.KneserNeyLM(order=order, discount=discount).fit(SMALL, V, BOS)
    histories = [(), (BOS,), (2,), (2, 3), (4, 4), (3, 6), (6, 5), (BOS, 2, 3), (2, 3, 4, 2)]
    for history in histories:
        probs = lm.next_token_probs(history)
        context = lm._context(list(history))
        assert [lm._prob(context, w) for w in range(V)] == probs.tolist()
    start = lm.next_token_probs(())
    for w in range(V):
        assert lm.log2_prob_sequences([np.array([w])]) == math.log2(start[w])


# P(w | context) for w = 0..6 of a trigram model on SMALL, as float.hex, computed before the scalar
# and vector paths shared one recursion: the refactor kept every bit (and with it the book's bpc).
PINNED = {
    (0, 0): "1.abbda49477d32p-11 1.ced43314a5a77p-5 1.ebe149b784328p-2 1.d7c2936f08650p-3 "
    "1.d7c2936f08650p-3 1.abbda49477d32p-11 1.abbda49477d32p-11",
    (2, 3): "1.7c36cb2ea3665p-12 1.3e73a92b0ed00p-1 1.35aaa07b7c14dp-5 1.35aaa07b7c14dp-5 "
    "1.3490dc72a0605p-2 1.7c36cb2ea3665p-12 1.7c36cb2ea3665p-12",
    (6, 5): "1.54725e6bb82fep-9 1.705fc02a8e4bcp-3 1.154725e6bb830p-2 1.154725e6bb830p-2 "
    "1.154725e6bb830p-2 1.54725e6bb82fep-9 1.54725e6bb82fep-9",
}


def test_kneser_ney_probabilities_are_pinned():
    lm = ngram.KneserNeyLM(order=3).fit(SMALL, V, BOS)
    for context, hexes in PINNED.items():
        expected = [float.fromhex("0x" + h) for h in hexes.split()]
        assert [lm._prob(context, w) for w in range(V)] == expected
        assert lm.next_token_probs(context).tolist() == expected


def test_kneser_ney_matches_hand_computed_bigram():
    # Corpus "a b a b" then EOS, ids a=1 b=2 eos=3, BOS=0, vocab 4, fixed discount 0.5.
    lm = ngram.KneserNeyLM(order=2, discount=0.5).fit([np.array([1, 2, 1, 2, 3])], 4, 0)
    # Unigram level uses continuation counts: distinct left neighbours of a: {BOS, b} -> 2,
    # of b: {a} -> 1, of eos: {b} -> 1; total 4 over 3 types.
    uni = {w: (max(c - 0.5, 0) + 0.5 * 3 * 0.25) / 4 for w, c in {0: 0, 1: 2, 2: 1, 3: 1}.items()}
    # After "a": b twice (raw counts), one type.
    p_b_after_a = (2 - 0.5 + 0.5 * 1 * uni[2]) / 2
    p_a_after_a = (0 + 0.5 * 1 * uni[1]) / 2
    probs = lm.next_token_probs([1])
    assert probs[2] == pytest.approx(p_b_after_a)
    assert probs[1] == pytest.approx(p_a_after_a)
    # An unseen context ("eos") falls through to the unigram level unchanged.
    np.testing.assert_allclose(lm.next_token_probs([3]), [uni[w] for w in range(4)])


def test_kneser_ney_estimates_discounts_from_counts_of_counts():
    lm = ngram.KneserNeyLM(order=2).fit(SMALL, V, BOS)
    bigrams = Counter()
    for s in SMALL:
        padded = [BOS, *s.tolist()]
        bigrams.update(zip(padded[:-1], padded[1:], strict=True))
    n1 = sum(c == 1 for c in bigrams.values())
    n2 = sum(c == 2 for c in bigrams.values())
    assert lm.discounts[1] == pytest.approx(n1 / (n1 + 2 * n2))
    assert all(0 < d <= 1 for d in lm.discounts)


def test_kneser_ney_learns_a_repetitive_corpus():
    vocab = 50
    seqs = [np.array([5, 6, 7, 8, 9] * 4 + [1]) for _ in range(30)]
    lm = ngram.KneserNeyLM(order=3).fit(seqs, vocab, bos_id=0)
    bits = lm.bits_per_token(seqs[:5])
    assert bits < 0.1 * math.log2(vocab)


def _markov_text(rng, n_seq, length, vocab):
    # Each token is followed by one of two fixed successors: strong bigram structure.
    successors = rng.integers(2, vocab, size=(vocab, 2))
    seqs = []
    for _ in range(n_seq):
        tok = int(rng.integers(2, vocab))
        seq = []
        for _ in range(length):
            tok = int(successors[tok, rng.integers(2)])
            seq.append(tok)
        seqs.append(np.array([*seq, 1]))
    return seqs


def test_higher_order_helps_on_bigram_structure():
    rng = np.random.default_rng(0)
    vocab = 40
    seqs = _markov_text(rng, 250, 30, vocab)
    train, held_out = seqs[:200], seqs[200:]
    bits = {
        k: ngram.KneserNeyLM(order=k).fit(train, vocab, 0).bits_per_token(held_out)
        for k in (1, 2, 3)
    }
    assert bits[2] < bits[1] - 2.0  # about 1 bit per token (two equally likely successors)
    assert bits[3] <= bits[2] + 0.05  # no extra structure to find, and little lost


def test_trigram_beats_bigram_on_second_order_structure():
    rng = np.random.default_rng(1)
    vocab = 12
    table = rng.integers(2, vocab, size=(vocab, vocab))  # next token = table[prev2, prev1]
    seqs = []
    for _ in range(300):
        seq = [int(t) for t in rng.integers(2, vocab, size=2)]
        for _ in range(20):
            seq.append(
                int(table[seq[-2], seq[-1]]) if rng.random() < 0.9 else int(rng.integers(2, vocab))
            )
        seqs.append(np.array([*seq, 1]))
    train, held_out = seqs[:250], seqs[250:]
    bits = {
        k: ngram.KneserNeyLM(order=k).fit(train, vocab, 0).bits_per_token(held_out) for k in (2, 3)
    }
    assert bits[3] < bits[2] - 1.0


def test_kneser_ney_rejects_bad_input():
    with pytest.raises(ValueError, match="order"):
        ngram.KneserNeyLM(order=0)
    with pytest.raises(ValueError, match="discount"):
        ngram.KneserNeyLM(order=2, discount=1.5)
    with pytest.raises(ValueError, match="empty corpus"):
        ngram.KneserNeyLM().fit([np.array([], np.int32)], 5, 0)
    with pytest.raises(ValueError, match="unknown-character id"):
        ngram.KneserNeyLM().fit([np.array([1, 9])], 5, 0)
    with pytest.raises(ValueError, match="bos_id"):
        ngram.KneserNeyLM().fit([np.array([1, 2])], 5, 5)
    with pytest.raises(ValueError, match="integers"):
        ngram.KneserNeyLM().fit([np.array([1.0, 2.0])], 5, 0)
    with pytest.raises(ValueError, match="list of 1-D"):
        ngram.KneserNeyLM().fit(np.array([1, 2]), 5, 0)
    with pytest.raises(RuntimeError, match="fit"):
        ngram.KneserNeyLM().bits_per_token([np.array([1])])
