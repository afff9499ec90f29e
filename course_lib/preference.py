"""Learning from preferences: a Bradley-Terry reward model, best-of-n, and REINFORCE with a KL
penalty to the base model. A small RLHF on the chapter-5 poem model.

Taught in chapter 6.5 (06c_feedback_lab). The pieces, in the order RLHF uses them:

1. **Reward model.** From comparisons "a is better than b", Bradley-Terry says
   ``P(a > b) = sigmoid(r(a) - r(b))``; :func:`fit_bradley_terry` fits a linear ``r = w . phi``
   on features ``phi`` (here ``poetics.FEATURES``) by maximum likelihood, ties counting half.
2. **Best-of-n.** Draw ``n`` poems from the base model and keep the one the reward model likes
   best: no training; its KL to the base is at most ``log n - (n - 1) / n`` (:func:`best_of_n_kl`).
3. **Fine-tuning.** Maximise ``E[r(x)] - beta * KL(pi || pi_base)`` over the policy ``pi``.
   :func:`make_rl_step` samples a batch, and follows the exact gradient of that objective: the
   score-function (REINFORCE) term with the penalised reward and a leave-one-out baseline, plus the
   direct gradient of the per-token KL. The KL of a poem is the sum over its characters of the KL
   between the two next-character distributions (:func:`token_kl`); its mean over poems drawn from
   ``pi`` is the sequence KL (tests/test_preference.py checks it against ``log pi - log pi_base``).

Both policies sample at the same ``temperature`` (logits / temperature), as chapter 5 samples.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from course_lib import poetics, rnn, train

# --- the reward model --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("steps",))
def _bradley_terry(diff, outcome, weight, l2, steps: int):
    def loss(w):
        logits = diff @ w
        nll = optax.sigmoid_binary_cross_entropy(logits, outcome)
        return jnp.sum(weight * nll) / jnp.sum(weight) + l2 * jnp.sum(w**2)

    tx = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def body(_, carry):
        w, opt_state = carry
        value, grad = value_and_grad(w, state=opt_state)
        updates, opt_state = tx.update(grad, opt_state, w, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(w, updates), opt_state

    w0 = jnp.zeros(diff.shape[1], jnp.float32)
    w, _ = jax.lax.fori_loop(0, steps, body, (w0, tx.init(w0)))
    return w, loss(w)


def preference_targets(answers) -> np.ndarray:
    """``compare`` answers (0: first better, 1: second better, TIE) as P(first better)."""
    answers = np.asarray(answers)
    bad = ~np.isin(answers, (0, 1, -1))
    if bad.any():
        raise ValueError(f"answers must be 0, 1 or -1 (a tie), got {answers[bad][:5].tolist()}")
    return np.select([answers == 0, answers == 1], [1.0, 0.0], 0.5).astype(np.float32)


def fit_bradley_terry(features_a, features_b, answers, l2: float = 1e-3, steps: int = 100):
    """Weights ``w`` of the reward ``r(x) = w . phi(x)`` that best explain the comparisons.

    ``features_a``, ``features_b``: [N, F] features of each pair's two items; ``answers``: what
    ``collab.Human.compare`` returned (a tie counts as half a win each way). ``l2`` keeps the
    weights finite when a feature separates the pairs perfectly. Returns a float32 numpy array.
    """
    a, b = np.asarray(features_a, np.float32), np.asarray(features_b, np.float32)
    if a.shape != b.shape or a.ndim != 2 or len(a) != len(answers) or len(a) == 0:
        raise ValueError(
            f"need [N, F] features for both items and N answers; got {a.shape}, {b.shape} and "
            f"{len(answers)} answers"
        )
    target = preference_targets(answers)
    w, _ = _bradley_terry(
        jnp.asarray(a - b), jnp.asarray(target), jnp.ones(len(a)), jnp.float32(l2), steps
    )
    return np.asarray(w)


def preference_accuracy(weights, features_a, features_b, answers) -> float:
    """Share of the decided (non-tie) comparisons whose winner the reward model scores higher."""
    target = preference_targets(answers)
    decided = target != 0.5
    if not decided.any():
        raise ValueError("every comparison is a tie: there is nothing to be right about")
    margin = (np.asarray(features_a) - np.asarray(features_b)) @ np.asarray(weights)
    return float(np.mean((margin[decided] > 0) == (target[decided] == 1.0)))


def best_of_n_kl(n: int) -> float:
    """The bound ``log n - (n - 1) / n`` (nats) on KL(best-of-n || base) (Beirami et al., 2024)."""
    return float(np.log(n) - (n - 1) / n)


# --- poems as token arrays ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PoemTable:
    """Per-vocabulary-id lookups that let :func:`poetics.features` run inside ``jax.jit``."""

    tones: jax.Array  # [V] poetics tone class of each id
    rhymes: jax.Array  # [V] rhyme group id
    is_han: jax.Array  # [V] bool: a Han character
    punctuation: jax.Array  # [4] ids of ，。，。
    eos: int

    @classmethod
    def for_vocab(cls, vocab: rnn.CharVocab) -> PoemTable:
        tones, rhymes = poetics.char_codes(vocab.itos)
        is_han = np.array([len(c) == 1 and "\u4e00" <= c <= "\u9fff" for c in vocab.itos])
        punct = [vocab.stoi[c] for c in poetics.PUNCTUATION]
        return cls(*map(jnp.asarray, (tones, rhymes, is_han, punct)), vocab.stoi[rnn.EOS])


jax.tree_util.register_dataclass(
    PoemTable, data_fields=["tones", "rhymes", "is_han", "punctuation"], meta_fields=["eos"]
)


def form_ok(ids, table: PoemTable):
    """[B] bool: rows of sampled ids [B, 25] that are a quatrain then the end of the poem."""
    han = table.is_han[ids[:, poetics.LINE_CHARS]].all(-1)
    punct = (ids[:, poetics.LINE_ENDS + 1] == table.punctuation).all(-1)
    return han & punct & (ids[:, poetics.POEM_LENGTH] == table.eos)


@jax.jit
def poem_features(ids, table: PoemTable):
    """:func:`poetics.features` of sampled ids [B, 25], jittable."""
    return poetics.features(ids, table.tones[ids], table.rhymes[ids], form_ok(ids, table))


def token_mask(ids, eos: int):
    """1 for each token up to and including the first end-of-poem, 0 after it."""
    ended_before = jnp.cumsum(ids == eos, axis=1) - (ids == eos)
    return (ended_before == 0).astype(jnp.float32)


def token_log_probs(model: rnn.CharLM, ids, temperature: float):
    """Log-probabilities [B, T, V] of the next character at each position of ``ids`` [B, T]."""
    inputs = jnp.concatenate([jnp.zeros_like(ids[:, :1]), ids[:, :-1]], axis=1)  # BOS first
    return jax.nn.log_softmax(model(inputs) / temperature, axis=-1)


def token_kl(logp, base_logp):
    """KL(pi || pi_base) of the next-character distributions at each position, [B, T]."""
    return jnp.sum(jnp.exp(logp) * (logp - base_logp), axis=-1)


def sequence_log_prob(logp, ids, mask):
    """log pi(poem): the sum of the chosen characters' log-probabilities, [B]."""
    chosen = jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]
    return jnp.sum(chosen * mask, axis=1)


def sample_ids(graphdef, state, key, n: int, temperature: float, max_len: int = 25):
    """``n`` poems [n, max_len] of token ids from the language model (no prompt)."""
    prompt = jnp.zeros(0, jnp.int32)
    return rnn._sample_ids(graphdef, state, key, prompt, n, max_len, None, temperature)


# --- fine-tuning with a KL penalty -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RLConfig:
    steps: int = 100
    batch_size: int = 64
    learning_rate: float = 2e-3
    kl_coef: float = 0.15  # beta; 0 removes the penalty (and lets the policy drift)
    # gamma: weight of the language-model loss on a batch of real poems at every step, which
    # keeps what the model knows of the language (InstructGPT's "PPO-ptx"); 0: none
    lm_coef: float = 0.0
    temperature: float = 0.8
    clip_norm: float = 5.0

    def __post_init__(self):
        if self.kl_coef < 0 or self.lm_coef < 0 or self.temperature <= 0 or self.batch_size < 2:
            raise ValueError("need kl_coef >= 0, lm_coef >= 0, temperature > 0 and batch_size >= 2")


def policy_from(graphdef, base_state, cfg: RLConfig):
    """(graphdef, state) of a policy that starts as the base model, with its own optimizer."""
    model, _ = nnx.merge(graphdef, base_state)
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adam(cfg.learning_rate))
    return nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))


def rl_loss(model, ids, base_logp, reward, cfg: RLConfig, eos: int, poems=None):
    """The surrogate whose gradient is that of ``E[r] - beta * KL`` (module docstring), plus
    ``lm_coef`` times the language-model loss on ``poems`` (inputs, targets) when given."""
    mask = token_mask(ids, eos)
    logp = token_log_probs(model, ids, cfg.temperature)
    kl = jnp.sum(token_kl(logp, base_logp) * mask, axis=1)
    shaped = reward - cfg.kl_coef * jax.lax.stop_gradient(kl)
    n = shaped.shape[0]
    advantage = shaped - (jnp.sum(shaped) - shaped) / (n - 1)  # leave-one-out baseline
    score_term = -jnp.mean(advantage * sequence_log_prob(logp, ids, mask))
    loss, aux = score_term + cfg.kl_coef * jnp.mean(kl), {"kl": jnp.mean(kl)}
    if poems is not None:
        lm = rnn.cross_entropy(model(poems[0]), poems[1])
        loss, aux = loss + cfg.lm_coef * lm, aux | {"lm_bits_per_char": lm / jnp.log(2.0)}
    return loss, aux


def make_rl_step(policy_graphdef, base_graphdef, table: PoemTable, weights, cfg: RLConfig):
    """``step((policy, base), batch, key) -> (policy, base), metrics`` for ``train.fit``.

    Samples ``cfg.batch_size`` poems from the policy, scores them with the reward model
    ``weights . poem_features`` and takes one optimizer step, with no host sync. The base
    model's state rides along unchanged in the state; ``batch`` is ``()``, or real poems
    (inputs, targets) for the language-model term when ``cfg.lm_coef > 0``.
    """
    weights = jnp.asarray(weights, jnp.float32)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, batch, key):
        policy_state, base_state = state
        ids = sample_ids(policy_graphdef, policy_state, key, cfg.batch_size, cfg.temperature)
        feats = poem_features(ids, table)
        reward = feats @ weights
        base, _ = nnx.merge(base_graphdef, base_state)
        base_logp = jax.lax.stop_gradient(token_log_probs(base, ids, cfg.temperature))
        model, optimizer = nnx.merge(policy_graphdef, policy_state)
        grad_fn = nnx.value_and_grad(rl_loss, has_aux=True)
        poems = batch if batch else None
        (loss, aux), grads = grad_fn(model, ids, base_logp, reward, cfg, table.eos, poems)
        optimizer.update(model, grads)
        metrics = {"loss": loss, "reward": jnp.mean(reward), "form_ok": jnp.mean(feats[:, 0])}
        return (nnx.state((model, optimizer)), base_state), metrics | aux

    return step


def fine_tune(
    graphdef, base_state, table: PoemTable, weights, cfg: RLConfig, seed: int = 0, poems=None
):
    """``train.fit`` of :func:`make_rl_step` from the base model: a ``train.FitResult`` whose
    ``state`` is the tuned model's, in the base's ``graphdef`` (so it samples and evaluates
    like the base). ``poems``: the training poems (inputs, targets), needed when
    ``cfg.lm_coef > 0``. Stops with the step number if the loss turns NaN."""
    if cfg.lm_coef > 0 and poems is None:
        raise ValueError("lm_coef > 0 needs the training poems: pass poems=(inputs, targets)")
    batches = lambda _: ()  # noqa: E731
    if cfg.lm_coef > 0:
        batches = train.epoch_batches(poems, cfg.batch_size, seed)
    base_state = jax.tree.map(jnp.copy, base_state)  # the step donates its state: keep the caller's
    policy_graphdef, policy_state = policy_from(graphdef, jax.tree.map(jnp.copy, base_state), cfg)
    result = train.fit(
        make_rl_step(policy_graphdef, graphdef, table, weights, cfg),
        (policy_state, base_state),
        batches,
        key=jax.random.key(seed),
        steps=cfg.steps,
        log_every=max(1, cfg.steps // 10),
        progress=False,
        desc="rl",
    )
    model, _ = nnx.merge(policy_graphdef, result.state[0])
    _, base_optimizer = nnx.merge(graphdef, result.state[1])
    result.state = nnx.split((model, base_optimizer))[1]
    return result


@functools.partial(jax.jit, static_argnames=("temperature",))
def poem_kl(graphdef, state, base_state, ids, temperature: float, eos: int):
    """Per poem: the summed token KL and ``log pi - log pi_base`` of ``ids`` drawn from ``pi``."""
    model, _ = nnx.merge(graphdef, state)
    base, _ = nnx.merge(graphdef, base_state)
    logp = token_log_probs(model, ids, temperature)
    base_logp = token_log_probs(base, ids, temperature)
    mask = token_mask(ids, eos)
    kl = jnp.sum(token_kl(logp, base_logp) * mask, axis=1)
    log_ratio = sequence_log_prob(logp, ids, mask) - sequence_log_prob(base_logp, ids, mask)
    return kl, log_ratio
