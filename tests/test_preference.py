"""Learning from preferences: Bradley-Terry, best-of-n, the KL penalty and the RL fine-tuning."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from course_lib import preference, rnn, train
from flax import nnx

TRUE_WEIGHTS = np.array([1.5, -1.0, 0.5, 0.0])
POEMS = [
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "千山鸟飞绝，万径人踪灭。孤舟蓑笠翁，独钓寒江雪。",
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
]
TEMPERATURE = 0.8
EOS = 2


def comparisons(n, seed, ties=0):
    """``n`` random pairs of 4 features, answered by Bradley-Terry with TRUE_WEIGHTS."""
    rng = np.random.default_rng(seed)
    fa, fb = rng.normal(size=(n, 4)), rng.normal(size=(n, 4))
    p_first = 1 / (1 + np.exp(-(fa - fb) @ TRUE_WEIGHTS))
    answers = np.where(rng.random(n) < p_first, 0, 1)
    answers[rng.choice(n, ties, replace=False)] = -1
    return fa.astype(np.float32), fb.astype(np.float32), answers


@pytest.fixture(scope="module")
def fitted():
    fa, fb, answers = comparisons(4000, seed=0, ties=20)
    return fa, fb, answers, preference.fit_bradley_terry(fa, fb, answers)


# --- the reward model ---------------------------------------------------------------------------


def test_bradley_terry_recovers_the_true_weights(fitted):
    *_, weights = fitted
    assert weights.shape == (4,) and weights.dtype == np.float32
    assert np.max(np.abs(weights - TRUE_WEIGHTS)) < 0.25
    assert weights[0] > 1.0 and weights[1] < -0.5 and abs(weights[3]) < 0.2


def test_bradley_terry_accuracy_is_close_to_bayes(fitted):
    *_, weights = fitted
    fa, fb, answers = comparisons(4000, seed=1)
    # the best any model can do: predict the likelier side, right with prob sigmoid(|margin|)
    bayes = np.mean(1 / (1 + np.exp(-np.abs((fa - fb) @ TRUE_WEIGHTS))))
    accuracy = preference.preference_accuracy(weights, fa, fb, answers)
    assert 0.75 < bayes < 0.9
    assert abs(accuracy - bayes) < 0.03  # the sampling sd of the accuracy is about 0.007
    assert preference.preference_accuracy(-weights, fa, fb, answers) < 1 - bayes + 0.03


def test_bradley_terry_is_shift_invariant(fitted):
    fa, fb, answers, weights = fitted
    shift = np.array([3.0, -2.0, 0.5, 10.0], np.float32)
    shifted = preference.fit_bradley_terry(fa + shift, fb + shift, answers)
    np.testing.assert_allclose(shifted, weights, atol=2e-3)


def test_preference_targets_count_a_tie_half():
    np.testing.assert_array_equal(preference.preference_targets([0, 1, -1]), [1.0, 0.0, 0.5])


def test_bad_comparisons_are_refused_clearly():
    fa, fb, answers = comparisons(10, seed=0)
    with pytest.raises(ValueError, match=r"need \[N, F\] features"):
        preference.fit_bradley_terry(fa, fb[:, :3], answers)
    with pytest.raises(ValueError, match=r"need \[N, F\] features"):
        preference.fit_bradley_terry(fa, fb, answers[:9])
    with pytest.raises(ValueError, match=r"need \[N, F\] features"):
        preference.fit_bradley_terry(fa[:0], fb[:0], [])
    with pytest.raises(ValueError, match=r"0, 1 or -1 \(a tie\), got \[2\]"):
        preference.fit_bradley_terry(fa, fb, np.r_[answers[:9], 2])
    with pytest.raises(ValueError, match="0, 1 or -1"):
        preference.preference_accuracy(TRUE_WEIGHTS, fa, fb, np.full(10, 0.5))
    with pytest.raises(ValueError, match="every comparison is a tie"):
        preference.preference_accuracy(TRUE_WEIGHTS, fa, fb, np.full(10, -1))


def test_best_of_n_kl_bound():
    assert preference.best_of_n_kl(1) == 0.0
    assert preference.best_of_n_kl(2) == pytest.approx(np.log(2) - 0.5)
    values = [preference.best_of_n_kl(n) for n in (1, 2, 4, 16, 256, 10_000)]
    assert np.all(np.diff(values) > 0)
    for n in (16, 256, 10_000):  # log n - 1 < KL < log n
        assert np.log(n) - 1 < preference.best_of_n_kl(n) < np.log(n)


# --- tokens and the KL penalty ------------------------------------------------------------------


def test_token_mask_stops_after_the_first_end():
    ids = jnp.array([[5, EOS, 7, EOS], [EOS, 3, 3, 3], [4, 4, 4, 4]])
    np.testing.assert_array_equal(
        preference.token_mask(ids, EOS), [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    )


def test_sequence_log_prob_sums_the_chosen_tokens():
    logp = jnp.log(jnp.array([[[0.5, 0.5], [0.25, 0.75], [0.1, 0.9]]]))
    ids, mask = jnp.array([[0, 1, 1]]), jnp.array([[1.0, 1.0, 0.0]])
    np.testing.assert_allclose(
        preference.sequence_log_prob(logp, ids, mask), [np.log(0.5 * 0.75)], rtol=1e-6
    )
    np.testing.assert_allclose(preference.token_kl(logp, logp), 0.0, atol=1e-7)


def bigram_logits(seed, vocab=6):
    """[V, V] next-token logits given the previous token: a model small enough to be exact."""
    return np.random.default_rng(seed).normal(size=(vocab, vocab)).astype(np.float32)


def sample_bigram(logits, n, length=25, seed=0):
    """``n`` sequences [n, length] drawn from the bigram model at TEMPERATURE, from BOS (0)."""
    rng = np.random.default_rng(seed)
    probs = np.exp(logits / TEMPERATURE)
    cdf = np.cumsum(probs / probs.sum(1, keepdims=True), axis=1)
    ids, prev = np.zeros((n, length), np.int32), np.zeros(n, np.int32)
    for t in range(length):
        prev = np.minimum((rng.random(n)[:, None] > cdf[prev]).sum(1), len(logits) - 1)
        ids[:, t] = prev
    return jnp.asarray(ids)


@jax.jit
def bigram_kl(logits, base_logits, ids):
    """Per sequence: the masked sum of token KLs and ``log pi - log pi_base``."""
    logp = preference.token_log_probs(lambda x: logits[x], ids, TEMPERATURE)
    base_logp = preference.token_log_probs(lambda x: base_logits[x], ids, TEMPERATURE)
    mask = preference.token_mask(ids, EOS)
    kl = jnp.sum(preference.token_kl(logp, base_logp) * mask, axis=1)
    log_ratio = preference.sequence_log_prob(logp, ids, mask) - preference.sequence_log_prob(
        base_logp, ids, mask
    )
    return kl, log_ratio


def test_token_kl_is_the_sequence_kl_of_a_bigram_model():
    logits, base_logits = bigram_logits(0), bigram_logits(1)
    ids = sample_bigram(logits, 20_000)
    assert 0.2 < float(jnp.mean(jnp.any(ids == EOS, axis=1))) < 1.0  # many poems end early
    kl, log_ratio = map(np.asarray, bigram_kl(logits, base_logits, ids))
    assert (kl >= 0).all() and kl.mean() > 0.1
    # E_pi[sum of token KLs] = E_pi[log pi - log pi_base]: the second is a Monte Carlo estimate
    stderr = log_ratio.std() / np.sqrt(len(log_ratio))
    assert abs(kl.mean() - log_ratio.mean()) < 4 * stderr
    # against the wrong base the sums differ by far more than the noise
    _, other = bigram_kl(logits, bigram_logits(2), ids)
    assert abs(float(np.mean(other)) - kl.mean()) > 10 * stderr


@pytest.fixture(scope="module")
def two_models():
    """Two small random CharLMs (vocabulary 20) and 4000 poems of the first:
    (graphdef, policy state, base state, ids)."""
    cfg = rnn.CharLMConfig(vocab_size=20, embed_dim=8, hidden=16, dropout=0.0)
    graphdef, policy = rnn.create_lm(cfg, seed=0)
    _, base = rnn.create_lm(cfg, seed=1)
    ids = preference.sample_ids(graphdef, policy, jax.random.key(0), 4000, TEMPERATURE)
    return graphdef, policy, base, ids


@pytest.mark.slow
def test_poem_kl_of_sampled_poems_is_the_sequence_kl(two_models):
    graphdef, policy, base, ids = two_models
    assert ids.shape == (4000, 25)
    assert 0.2 < float(jnp.mean(jnp.any(ids == EOS, axis=1))) < 1.0  # some poems end early
    kl, log_ratio = map(
        np.asarray, preference.poem_kl(graphdef, policy, base, ids, TEMPERATURE, EOS)
    )
    assert (kl >= 0).all() and kl.mean() > 0.05
    stderr = log_ratio.std() / np.sqrt(len(log_ratio))
    assert abs(kl.mean() - log_ratio.mean()) < 4 * stderr
    # a KL counting the tokens after the end too (no id is -1: nothing is masked) is clearly more
    unmasked, _ = preference.poem_kl(graphdef, policy, base, ids, TEMPERATURE, eos=-1)
    assert float(np.mean(unmasked)) > kl.mean() + 6 * stderr
    # and the KL of the policy to itself is exactly zero
    kl, log_ratio = preference.poem_kl(graphdef, policy, policy, ids, TEMPERATURE, EOS)
    np.testing.assert_array_equal(kl, 0.0)
    np.testing.assert_array_equal(log_ratio, 0.0)


# --- the RL loss and fine-tuning ----------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="cfg")
def rl_gradient(logits, base_logits, ids, reward, cfg):
    """The gradient of ``rl_loss`` for the bigram policy ``logits``."""
    base_logp = preference.token_log_probs(lambda x: base_logits[x], ids, cfg.temperature)

    def loss(table):
        return preference.rl_loss(lambda x: table[x], ids, base_logp, reward, cfg, EOS)[0]

    return jax.grad(loss)(logits)


def test_rl_loss_baseline_removes_a_constant_reward():
    logits, base_logits = bigram_logits(0), bigram_logits(1)
    ids = sample_bigram(logits, 8)
    cfg = preference.RLConfig(kl_coef=0.0, temperature=TEMPERATURE)
    constant = rl_gradient(logits, base_logits, ids, jnp.full(8, 3.0), cfg)
    np.testing.assert_allclose(constant, 0.0, atol=1e-6)
    reward = jnp.linspace(0.0, 1.0, 8)
    varied = rl_gradient(logits, base_logits, ids, reward, cfg)
    assert float(jnp.max(jnp.abs(varied))) > 1e-2
    # the leave-one-out baseline makes the gradient blind to a shift of every reward
    shifted = rl_gradient(logits, base_logits, ids, reward + 5.0, cfg)
    np.testing.assert_allclose(shifted, varied, atol=1e-5)


def test_rl_loss_kl_term_vanishes_at_the_base():
    logits, base_logits = bigram_logits(0), bigram_logits(1)
    ids = sample_bigram(logits, 8)
    cfg = preference.RLConfig(kl_coef=1.0, temperature=TEMPERATURE)
    # a policy equal to the base is at the minimum of the KL: no pull
    np.testing.assert_allclose(
        rl_gradient(logits, logits, ids, jnp.full(8, 3.0), cfg), 0.0, atol=1e-6
    )
    assert float(jnp.abs(rl_gradient(logits, base_logits, ids, jnp.full(8, 3.0), cfg)).max()) > 1e-2


def exact_bigram_kl(logits, base_logits, length=25):
    """KL(pi || pi_base) of the bigram models' poems (up to the first EOS), by dynamic programming
    over the previous token: no sampling."""
    logp = jax.nn.log_softmax(logits / TEMPERATURE, axis=-1)
    base_logp = jax.nn.log_softmax(base_logits / TEMPERATURE, axis=-1)
    kl_given = jnp.sum(jnp.exp(logp) * (logp - base_logp), axis=-1)  # [V]: KL after each token
    alive = jnp.zeros(len(logits)).at[0].set(1.0)  # P(previous token, no EOS yet)
    not_eos = jnp.ones(len(logits)).at[EOS].set(0.0)
    total = 0.0
    for _ in range(length):
        total = total + alive @ kl_given
        alive = (alive @ jnp.exp(logp)) * not_eos
    return total


def test_rl_loss_follows_the_gradient_of_the_kl():
    logits, base_logits = bigram_logits(0), bigram_logits(1)
    ids = sample_bigram(logits, 20_000, seed=4)
    kl, _ = bigram_kl(logits, base_logits, ids)
    exact = float(exact_bigram_kl(logits, base_logits))
    assert abs(float(np.mean(kl)) - exact) < 0.05 * exact
    # with no reward the loss is beta * KL: its gradient, averaged over many poems, is the exact one
    cfg = preference.RLConfig(kl_coef=1.0, temperature=TEMPERATURE)
    estimate = rl_gradient(logits, base_logits, ids, jnp.zeros(len(ids)), cfg)
    truth = jax.grad(exact_bigram_kl)(jnp.asarray(logits), base_logits)
    # 20000 poems give about 4% error; the direct KL term alone is 99% off, the score term 38%
    assert np.linalg.norm(estimate - truth) < 0.15 * np.linalg.norm(truth)


def test_rl_config_validation():
    for bad in ({"kl_coef": -0.1}, {"lm_coef": -1.0}, {"temperature": 0.0}, {"batch_size": 1}):
        with pytest.raises(ValueError, match="lm_coef >= 0, temperature > 0 and batch_size >= 2"):
            preference.RLConfig(**bad)
    preference.RLConfig(kl_coef=0.0, lm_coef=0.0, batch_size=2)  # the edges are allowed


@pytest.fixture(scope="module")
def tiny_lab():
    """A tiny LM that has learnt POEMS (so that its poems' rewards differ), its graphdef, the
    vocabulary's PoemTable and reward weights that favour rhyme."""
    vocab = rnn.CharVocab(POEMS)
    cfg = rnn.CharLMConfig(
        vocab_size=len(vocab), embed_dim=16, hidden=32, dropout=0.0, learning_rate=3e-2
    )
    graphdef, state = rnn.create_lm(cfg, seed=0)
    batch = rnn.encode_poems(POEMS, vocab)
    step = train.make_train_step(graphdef, rnn.lm_loss)
    key = jax.random.key(0)
    base = train.fit(step, state, lambda _: batch, key=key, steps=40, progress=False).state
    table = preference.PoemTable.for_vocab(vocab)
    weights = np.array([1.0, 3.0, 1.0, 0.0, 0.0, 1.0, -0.5], np.float32)  # mostly rhyme
    return graphdef, base, table, weights


def param_change(graphdef, before, after):
    a, b = (nnx.state(nnx.merge(graphdef, s)[0], nnx.Param) for s in (before, after))
    return max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(*map(jax.tree.leaves, (a, b)), strict=True)
    )


@pytest.mark.slow
def test_fine_tune_runs_and_keeps_the_callers_base(tiny_lab):
    graphdef, base, table, weights = tiny_lab
    before = jax.tree.map(np.array, base)
    cfg = preference.RLConfig(steps=3, batch_size=8, learning_rate=1e-2)
    result = preference.fine_tune(graphdef, base, table, weights, cfg)
    assert jax.tree.structure(result.state) == jax.tree.structure(base)
    history = result.history["train"]
    assert history[-1]["step"] == 3
    for key in ("loss", "reward", "form_ok", "kl"):
        assert all(np.isfinite(row[key]) for row in history)
    assert history[0]["form_ok"] > 0 and history[-1]["kl"] >= 0  # the LM writes quatrains
    assert param_change(graphdef, base, result.state) > 1e-3  # the policy moved
    # the step donates its state: the caller's base must not be among the donated arrays
    assert not any(x.is_deleted() for x in jax.tree.leaves(base))
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, base), before)
    ids = preference.sample_ids(graphdef, base, jax.random.key(0), 8, TEMPERATURE)
    assert ids.shape == (8, 25)


@pytest.mark.slow
def test_fine_tune_steps_with_the_rl_optimizer(tiny_lab):
    # the base's own optimizer (rnn.create_lm's, lr 3e-2 here) must not be the one that steps
    graphdef, base, table, weights = tiny_lab
    cfg = preference.RLConfig(steps=3, batch_size=8, learning_rate=0.0)
    result = preference.fine_tune(graphdef, base, table, weights, cfg)
    assert param_change(graphdef, base, result.state) == 0.0
