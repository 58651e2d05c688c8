"""Sequence losses in JAX: ctc_loss.

The loss reads as in ``reference/sequence.py``, piece by piece, vectorised over the
batch with ``jax.lax.scan`` over time: a jax.numpy function (the ``autodiff``
variant, JAX differentiates the alpha scan) and a ``jax.custom_vjp`` whose backward
is the reference's VJP (the occupancy from alpha and a reversed beta scan).

Every shape is static, so the functions trace under ``jax.jit``: concatenated targets
are padded to their total length. The recursion and the occupancy are jitted (with
``blank`` static), so repeated calls of one shape reuse one compiled scan. Log 0 is ``-inf``; ``_logaddexp`` keeps the
autodiff gradient free of NaN where both terms are ``-inf`` (an unreachable state).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from reference.reductions import reduce, reduce_vjp
from .core import autodiff, builtin, custom_vjp

NEG_INF = -jnp.inf


# -- the pieces of the recursion -----------------------------------------------------

def _logaddexp(a, b):
    """``log(exp(a) + exp(b))``, with a gradient of 0 (not NaN) where both are ``-inf``; where
    the larger is ``+inf`` the value is that, as NumPy's. A NaN term is not guarded: the shift is
    NaN, and so are the value and the gradient of both terms (a NaN log-probability must not
    read as log 0, nor leave a gradient of 0 where the reference's is NaN)."""
    m = jax.lax.stop_gradient(jnp.maximum(a, b))  # NaN where a term is
    infinite = jnp.isinf(m)
    shift = jnp.where(infinite, 0.0, m)
    total = jnp.exp(a - shift) + jnp.exp(b - shift)
    return jnp.where(infinite, m, shift + jnp.log(jnp.where(infinite, 1.0, total)))


def batched(log_probs, targets, input_lengths, target_lengths):
    if log_probs.ndim == 3:
        return log_probs, targets, input_lengths, target_lengths
    return log_probs[:, None], targets[None], input_lengths.reshape(1), target_lengths.reshape(1)


def padded_targets(targets, target_lengths, blank):
    if targets.ndim == 2:
        positions = jnp.arange(targets.shape[1])
        labels = targets
    else:
        total = targets.shape[0]
        positions = jnp.arange(total)
        offsets = jnp.cumsum(target_lengths) - target_lengths
        index = jnp.clip(offsets[:, None] + positions[None, :], 0, max(total - 1, 0))
        labels = targets[index] if total else jnp.zeros((target_lengths.shape[0], 0), targets.dtype)
    return jnp.where(positions[None, :] < target_lengths[:, None], labels, blank)


def extended(padded, blank):
    n, s = padded.shape
    ext = jnp.full((n, 2 * s + 1), blank, dtype=padded.dtype).at[:, 1::2].set(padded)
    skip = jnp.zeros((n, 2 * s + 1), dtype=bool).at[:, 3::2].set(padded[:, 1:] != padded[:, :-1])
    return ext, skip


def emissions(log_probs, ext):
    return log_probs[:, jnp.arange(ext.shape[0])[:, None], ext]


def _shift(x, k):
    return jnp.concatenate([jnp.full(x.shape[:-1] + (k,), NEG_INF, x.dtype), x], axis=-1)[..., :x.shape[-1]]


def _unshift(x, k, fill=NEG_INF):
    return jnp.concatenate([x, jnp.full(x.shape[:-1] + (k,), fill, x.dtype)], axis=-1)[..., k:]


def alpha(em, skip, input_lengths):
    steps, n, states = em.shape
    init = jnp.broadcast_to(jnp.where(jnp.arange(states) == 0, 0.0, NEG_INF).astype(em.dtype), (n, states))

    def step(prev, x):
        t, em_t = x
        a = _logaddexp(prev, _shift(prev, 1))
        a = jnp.where(skip, _logaddexp(a, _shift(prev, 2)), a) + em_t
        return jnp.where((t < input_lengths)[:, None], a, prev), a

    last, alphas = jax.lax.scan(step, init, (jnp.arange(steps), em))
    return alphas, last


def log_likelihood(last_alpha, target_lengths):
    rows = jnp.arange(last_alpha.shape[0])
    end = last_alpha[rows, 2 * target_lengths]
    before = last_alpha[rows, jnp.maximum(2 * target_lengths - 1, 0)]
    return _logaddexp(end, jnp.where(target_lengths > 0, before, NEG_INF))


def beta(em, skip, input_lengths, target_lengths):
    steps, n, states = em.shape
    s = jnp.arange(states)
    last = (s == 2 * target_lengths[:, None]) | (s == 2 * target_lengths[:, None] - 1)
    init = jnp.where(last, 0.0, NEG_INF).astype(em.dtype)
    skip_next = _unshift(skip, 2, False)
    # em[t + 1] at step t; the last step has no next emission (its recursion is never used)
    em_next = jnp.concatenate([em[1:], jnp.full((1, n, states), NEG_INF, em.dtype)])[:steps]

    def step(following, x):
        t, em_t1 = x
        e = em_t1 + following
        b = _logaddexp(e, _unshift(e, 1))
        recursed = jnp.where(skip_next, _logaddexp(b, _unshift(e, 2)), b)
        here = jnp.where((t == input_lengths - 1)[:, None], init,
                         jnp.where((t < input_lengths - 1)[:, None], recursed, NEG_INF))
        return here, here

    _, betas = jax.lax.scan(step, jnp.full((n, states), NEG_INF, em.dtype), (jnp.arange(steps), em_next),
                            reverse=True)
    return betas


def required_lengths(padded, target_lengths):
    """The shortest input that fits each target: its length plus its repeated neighbours."""
    positions = jnp.arange(1, padded.shape[1])
    repeats = (padded[:, 1:] == padded[:, :-1]) & (positions[None, :] < target_lengths[:, None])
    return target_lengths + repeats.sum(axis=1)


def sample_weights(cotangent, reduction, target_lengths):
    n = target_lengths.shape[0]
    g = reduce_vjp(cotangent, reduction, n)
    if reduction == "mean":
        g = g / jnp.maximum(target_lengths, 1).astype(g.dtype)
    return jnp.broadcast_to(jnp.reshape(g, (-1,)), (n,))


# -- ctc_loss --------------------------------------------------------------------

@partial(jax.jit, static_argnames=("blank",))
def _negative_log_likelihood(log_probs, targets, input_lengths, target_lengths, blank):
    """``-log p(l | x)`` per sample, ``(N,)``, and the pieces the backward reuses."""
    lp, tg, il, tl = batched(log_probs, targets, input_lengths, target_lengths)
    ext, skip = extended(padded_targets(tg, tl, blank), blank)
    em = emissions(lp, ext)
    alphas, last = alpha(em, skip, il)
    return -log_likelihood(last, tl), (ext, skip, em, alphas, il, tl)


def _reduce(nll, log_probs, target_lengths, reduction, zero_infinity):
    if zero_infinity:
        nll = jnp.where(jnp.isinf(nll), 0.0, nll)
    if reduction == "mean":
        return reduce(nll / jnp.maximum(target_lengths.reshape(-1), 1).astype(nll.dtype), "mean")
    out = reduce(nll, reduction)
    return out[0] if reduction == "none" and log_probs.ndim == 2 else out


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    nll, _ = _negative_log_likelihood(log_probs, targets, input_lengths, target_lengths, blank)
    return _reduce(nll, log_probs, target_lengths, reduction, zero_infinity)


def _ctc_loss_fwd(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity):
    nll, pieces = _negative_log_likelihood(log_probs, targets, input_lengths, target_lengths, blank)
    value = _reduce(nll, log_probs, target_lengths, reduction, zero_infinity)
    return value, (log_probs, nll, pieces)


@partial(jax.jit, static_argnames=("num_classes",))
def _occupancy(nll, ext, skip, em, alphas, il, tl, num_classes):
    """``gamma[t, n, k]``: the posterior probability of class ``k`` at frame ``t``."""
    feasible = jnp.isfinite(nll)
    log_occupancy = alphas + beta(em, skip, il, tl) + jnp.where(feasible, nll, 0.0)[:, None]
    occupancy = jnp.exp(log_occupancy)  # 0 where t >= T_n or no alignment exists
    one_hot = jax.nn.one_hot(ext, num_classes, dtype=occupancy.dtype)
    return jnp.einsum("tns,nsc->tnc", occupancy, one_hot)


def _ctc_loss_bwd(blank, reduction, zero_infinity, residuals, cotangent):
    log_probs, nll, (ext, skip, em, alphas, il, tl) = residuals
    per_class = _occupancy(nll, ext, skip, em, alphas, il, tl, log_probs.shape[-1])
    grad = -per_class * sample_weights(cotangent, reduction, tl)[None, :, None]
    return (grad[:, 0] if log_probs.ndim == 2 else grad), None, None, None


ctc_loss_custom_vjp = jax.custom_vjp(ctc_loss, nondiff_argnums=(4, 5, 6))
ctc_loss_custom_vjp.defvjp(_ctc_loss_fwd, _ctc_loss_bwd)
autodiff("ctc_loss", ctc_loss)
custom_vjp("ctc_loss", ctc_loss_custom_vjp, _ctc_loss_fwd, _ctc_loss_bwd)


# -- the built-in, the outside oracle ------------------------------------------------

def _optax_ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
                    zero_infinity=False):
    """``optax.losses.ctc_loss`` with our signature.

    optax takes batch-major logits with 0/1 paddings and applies ``log_softmax``, so
    it computes ``ctc(log_softmax(x))``. Every alignment takes one class per frame, so
    ``ctc(x) = ctc(log_softmax(x)) - sum_{t < T_n} logsumexp(x[t, n, :])`` for every real
    ``x``: subtracting that sum gives our loss and, by autodiff, our gradient, exactly
    (on normalised log-probabilities the sum is 0). Infeasible targets stay finite in
    optax (``log_epsilon``), so they are not expressible: with concrete lengths that is a
    NotImplementedError; under ``jax.jit`` (the timings) nothing can be checked.
    """
    import optax

    lp, tg, il, tl = batched(log_probs, targets, input_lengths, target_lengths)
    labels = padded_targets(tg, tl, blank)
    concrete = not any(isinstance(a, jax.core.Tracer) for a in (labels, il, tl))
    if concrete and np.any(np.asarray(il) < np.asarray(required_lengths(labels, tl))):
        raise NotImplementedError("optax keeps an infeasible target finite (log_epsilon=-1e5), not inf")
    frame_padded = jnp.arange(lp.shape[0])[None, :] >= il[:, None]
    label_padded = jnp.arange(labels.shape[1])[None, :] >= tl[:, None]
    per_sample = _jitted(optax.losses.ctc_loss)(jnp.transpose(lp, (1, 0, 2)), frame_padded.astype(lp.dtype),
                                                labels, label_padded.astype(lp.dtype), blank_id=blank)
    per_sample = per_sample.astype(lp.dtype)  # optax's log_epsilon arrays are float64 under x64
    normaliser = jnp.where(frame_padded.T, 0.0, jax.nn.logsumexp(lp, axis=-1)).sum(axis=0)
    nll = per_sample - normaliser
    if reduction == "mean":
        return reduce(nll / jnp.maximum(tl, 1).astype(nll.dtype), "mean")
    out = reduce(nll, reduction)
    return out[0] if reduction == "none" and log_probs.ndim == 2 else out


_JITTED: dict = {}


def _jitted(fn):
    """One ``jax.jit`` of optax's loss, kept, so its scan compiles once per shape."""
    if fn not in _JITTED:
        _JITTED[fn] = jax.jit(fn, static_argnames=("blank_id",))
    return _JITTED[fn]


builtin("ctc_loss", _optax_ctc_loss, reads_values=True)
