"""linear_cross_entropy in JAX: a linear layer fused with cross entropy.

Reads as ``reference/linear.py``. With ``chunk_size`` the rows are padded to whole
chunks (padding rows are ignored) and walked with ``jax.lax.map`` / ``jax.lax.scan``,
so the whole ``(N, V)`` logits never exist: the ``autodiff`` variant checkpoints each
chunk (``jax.checkpoint``: its logits are recomputed in the backward instead of
stored), the ``custom_vjp`` variant's backward scans the chunks, accumulating the
gradients of ``linear_weight`` and ``linear_bias``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from reference.linear import DEFAULT_IGNORE_INDEX
from reference.reductions import reduce, reduce_vjp
from .core import autodiff, builtin, custom_vjp


def _batched(input, target):
    """An unbatched ``input`` (H,) with a 0-d target is a batch of one."""
    return (input, target) if input.ndim == 2 else (input[None], target[None])


def _ignore(ignore_index):
    return DEFAULT_IGNORE_INDEX if ignore_index is None else ignore_index


def _class_terms(target, weight, num_classes, ignore_index, dtype):
    """The mask of rows that count, safe class indices, the class weights w and w_y per row."""
    mask = target != _ignore(ignore_index)
    safe = jnp.where(mask, target, 0)
    w = jnp.ones(num_classes, dtype) if weight is None else weight
    return mask, safe, w, jnp.where(mask, w[safe], 0.0)


def _logits(x, linear_weight, linear_bias):
    logits = x @ linear_weight.T
    return logits if linear_bias is None else logits + linear_bias


def _rows(x, linear_weight, linear_bias, target, weight, ignore_index, label_smoothing):
    """The per-row losses of one chunk of rows."""
    num_classes = linear_weight.shape[0]
    logp = jax.nn.log_softmax(_logits(x, linear_weight, linear_bias), axis=-1)
    mask, safe, w, w_y = _class_terms(target, weight, num_classes, ignore_index, x.dtype)
    nll = -jnp.take_along_axis(logp, safe[:, None], axis=-1)[:, 0]
    eps = label_smoothing
    if eps:  # not 0 times the smoothing term, which a -inf logit makes +inf (and the row NaN)
        return jnp.where(mask, (1 - eps) * w_y * nll - eps / num_classes * (logp * w).sum(-1), 0.0)
    return jnp.where(mask, w_y * nll, 0.0)


def _split(rows, chunk_size, fill):
    """``rows`` (n, ...) padded with ``fill`` to whole chunks: (chunks, chunk_size, ...)."""
    pad = -len(rows) % chunk_size
    rows = jnp.pad(rows, [(0, pad)] + [(0, 0)] * (rows.ndim - 1), constant_values=fill)
    return rows.reshape((-1, chunk_size) + rows.shape[1:])


def _loss_rows(x, t, linear_weight, linear_bias, weight, ignore_index, label_smoothing, chunk_size, remat):
    rows = functools.partial(_rows, ignore_index=ignore_index, label_smoothing=label_smoothing)
    if chunk_size is None:
        return rows(x, linear_weight, linear_bias, t, weight)
    chunk = jax.checkpoint(rows) if remat else rows
    xs, ts = _split(x, chunk_size, 0), _split(t, chunk_size, _ignore(ignore_index))  # padding rows are ignored
    out = jax.lax.map(lambda c: chunk(c[0], linear_weight, linear_bias, c[1], weight), (xs, ts))
    return out.reshape(-1)[:len(t)]


def _finish(rows, input, target, weight, num_classes, reduction, ignore_index):
    _, _, _, w_y = _class_terms(_batched(input, target)[1], weight, num_classes, ignore_index, input.dtype)
    return reduce(rows if input.ndim == 2 else rows[0], reduction, w_y.sum())


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean",
                         ignore_index=None, label_smoothing=0.0, chunk_size=None):
    x, t = _batched(input, target)
    rows = _loss_rows(x, t, linear_weight, linear_bias, weight, ignore_index, label_smoothing, chunk_size,
                      remat=True)
    return _finish(rows, input, target, weight, linear_weight.shape[0], reduction, ignore_index)


def _linear_cross_entropy(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                          label_smoothing, chunk_size):
    x, t = _batched(input, target)
    rows = _loss_rows(x, t, linear_weight, linear_bias, weight, ignore_index, label_smoothing, chunk_size,
                      remat=False)
    return _finish(rows, input, target, weight, linear_weight.shape[0], reduction, ignore_index)


def _linear_cross_entropy_fwd(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                              label_smoothing, chunk_size):
    value = _linear_cross_entropy(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                                  label_smoothing, chunk_size)
    return value, (input, linear_weight, target, linear_bias, weight)


def _linear_cross_entropy_bwd(reduction, ignore_index, label_smoothing, chunk_size, residuals, cotangent):
    input, linear_weight, target, linear_bias, weight = residuals
    x, t = _batched(input, target)
    num_classes, eps = linear_weight.shape[0], label_smoothing
    mask, safe, w, w_y = _class_terms(t, weight, num_classes, ignore_index, x.dtype)
    g = reduce_vjp(cotangent, reduction, t.size, w_y.sum())
    g = (g.reshape(-1) if reduction == "none" else jnp.broadcast_to(g, t.shape)) * mask.astype(g.dtype)  # one per row
    scale = eps / num_classes

    def d_logits(xc, safe_c, w_y_c, g_c):
        p = jax.nn.softmax(_logits(xc, linear_weight, linear_bias), axis=-1)
        onehot = jax.nn.one_hot(safe_c, num_classes, dtype=p.dtype)
        delta = p * ((1 - eps) * w_y_c + scale * w.sum())[:, None] - (1 - eps) * w_y_c[:, None] * onehot - scale * w
        return g_c[:, None] * delta

    if chunk_size is None:
        dl = d_logits(x, safe, w_y, g)
        d_x, d_weight, d_bias = dl @ linear_weight, dl.T @ x, dl.sum(0)
    else:
        def step(carry, c):
            dl = d_logits(*c)
            return (carry[0] + dl.T @ c[0], carry[1] + dl.sum(0)), dl @ linear_weight

        chunks = (_split(x, chunk_size, 0), _split(safe, chunk_size, 0), _split(w_y, chunk_size, 0),
                  _split(g, chunk_size, 0))  # padding rows get a zero cotangent
        zero = (jnp.zeros_like(linear_weight), jnp.zeros(num_classes, x.dtype))
        (d_weight, d_bias), d_x = jax.lax.scan(step, zero, chunks)
        d_x = d_x.reshape(-1, x.shape[1])[:len(t)]
    return (d_x.reshape(input.shape), d_weight, None, None if linear_bias is None else d_bias, None)


linear_cross_entropy_custom_vjp = jax.custom_vjp(_linear_cross_entropy, nondiff_argnums=(5, 6, 7, 8))
linear_cross_entropy_custom_vjp.defvjp(_linear_cross_entropy_fwd, _linear_cross_entropy_bwd)
autodiff("linear_cross_entropy", linear_cross_entropy)
custom_vjp("linear_cross_entropy", linear_cross_entropy_custom_vjp, _linear_cross_entropy_fwd,
           _linear_cross_entropy_bwd)


# -- the built-in, the outside oracle -----------------------------------------------

def _optax_linear_cross_entropy(input, linear_weight, target, linear_bias=None, weight=None, reduction="mean",
                                ignore_index=None, label_smoothing=0.0, chunk_size=None):
    """optax on the logits: ``softmax_cross_entropy_with_integer_labels``, or
    ``softmax_cross_entropy`` on ``smooth_labels`` for label smoothing; ignored rows are
    optax's ``where``; no class weight; optax does not chunk (values do not depend on it)."""
    import optax
    if weight is not None:
        raise NotImplementedError("optax's softmax cross entropy takes no class weight")
    x, t = _batched(input, target)
    logits = _logits(x, linear_weight, linear_bias)
    mask = t != _ignore(ignore_index)
    labels = jnp.where(mask, t, 0)
    if label_smoothing:
        smoothed = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), label_smoothing)
        rows = optax.losses.softmax_cross_entropy(logits, smoothed, where=mask)
    else:
        rows = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels, where=mask)
    return reduce(rows if input.ndim == 2 else rows[0], reduction, mask.sum())


builtin("linear_cross_entropy", _optax_linear_cross_entropy)
