"""Losses written by hand as ``jax.custom_vjp``: three correct ones, then one per classic
mistake (the graph cut is a plain JAX function: a custom_vjp's gradient is all hand-written).

    lossparity check examples/jax_custom_vjp.py:mse --like mse_loss
    lossparity check examples/jax_custom_vjp.py:cross_entropy --like cross_entropy
    lossparity check examples/jax_custom_vjp.py:mse_ignores_cotangent --like mse_loss   # exit status 1

``reduction`` is a non-differentiable argument (``nondiff_argnums``), so bwd receives it first.
"""

import jax
import jax.numpy as jnp
import numpy as np


def reduce(elementwise, reduction):
    if reduction == "none":
        return elementwise
    if reduction == "sum":
        return elementwise.sum()
    if reduction == "mean":
        return elementwise.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


def reduce_backward(g, reduction, count):
    return g / count if reduction == "mean" else g


# -- correct ------------------------------------------------------------------------------

def _mse(input, target, reduction="mean"):
    return reduce((input - target) ** 2, reduction)


def _mse_fwd(input, target, reduction):
    return _mse(input, target, reduction), (input, target)


def _mse_bwd(reduction, residuals, g):
    input, target = residuals
    d = 2 * (input - target) * reduce_backward(g, reduction, input.size)
    return d, -d


mse = jax.custom_vjp(_mse, nondiff_argnums=(2,))
mse.defvjp(_mse_fwd, _mse_bwd)


def class_dim(input):
    return 0 if input.ndim == 1 else 1


def soft_targets(input, target):
    """Class probabilities of the input's shape: the target itself, or one-hot class indices."""
    if jnp.issubdtype(target.dtype, jnp.floating):
        return target
    return jax.nn.one_hot(target, input.shape[class_dim(input)], axis=class_dim(input), dtype=input.dtype)


def _cross_entropy(input, target, reduction="mean"):
    cd = class_dim(input)
    return reduce(-(soft_targets(input, target) * jax.nn.log_softmax(input, axis=cd)).sum(cd), reduction)


def _cross_entropy_fwd(input, target, reduction):
    return _cross_entropy(input, target, reduction), (input, target)


def _cross_entropy_bwd(reduction, residuals, g):
    input, target = residuals
    cd = class_dim(input)
    q = soft_targets(input, target)
    g = reduce_backward(g, reduction, input.size // input.shape[cd])
    if reduction == "none":
        g = jnp.expand_dims(g, cd)
    return (jax.nn.softmax(input, axis=cd) * q.sum(cd, keepdims=True) - q) * g, None


cross_entropy = jax.custom_vjp(_cross_entropy, nondiff_argnums=(2,))
cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def _multiclass_hinge(scores, labels, reduction="none"):
    onehot = jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
    worst = (scores + 1 - onehot).max(axis=-1)
    return reduce(worst - (scores * onehot).sum(-1), reduction)


def _multiclass_hinge_fwd(scores, labels, reduction):
    return _multiclass_hinge(scores, labels, reduction), (scores, labels)


def _multiclass_hinge_bwd(reduction, residuals, g):
    scores, labels = residuals
    num_classes = scores.shape[-1]
    onehot = jax.nn.one_hot(labels, num_classes, dtype=scores.dtype)
    winner = jax.nn.one_hot(jnp.argmax(scores + 1 - onehot, axis=-1), num_classes, dtype=scores.dtype)
    g = reduce_backward(g, reduction, labels.size)
    if reduction == "none":
        g = g[..., None]
    return (winner - onehot) * g, None


multiclass_hinge = jax.custom_vjp(_multiclass_hinge, nondiff_argnums=(2,))
multiclass_hinge.defvjp(_multiclass_hinge_fwd, _multiclass_hinge_bwd)


# -- one classic mistake each ---------------------------------------------------------------

def _mse_bwd_ignores_cotangent(reduction, residuals, g):
    input, target = residuals
    d = 2 * (input - target) * reduce_backward(1.0, reduction, input.size)  # MISTAKE: g is never used
    return d, -d


mse_ignores_cotangent = jax.custom_vjp(_mse, nondiff_argnums=(2,))
mse_ignores_cotangent.defvjp(_mse_fwd, _mse_bwd_ignores_cotangent)


def _mse_bwd_wrong_input(reduction, residuals, g):
    input, target = residuals
    d_input = 2 * (input - target) * reduce_backward(g, reduction, input.size)
    return -d_input, d_input                          # MISTAKE: (d_target, d_input)


mse_wrong_input = jax.custom_vjp(_mse, nondiff_argnums=(2,))
mse_wrong_input.defvjp(_mse_fwd, _mse_bwd_wrong_input)


def _mse_bwd_wrong_shape(reduction, residuals, g):
    input, target = residuals
    d = (2 * (input - target) * reduce_backward(g, reduction, input.size)).sum(axis=0)  # MISTAKE: (4,)
    return d, -d


mse_wrong_shape = jax.custom_vjp(_mse, nondiff_argnums=(2,))
mse_wrong_shape.defvjp(_mse_fwd, _mse_bwd_wrong_shape)


def _mse_bwd_reduction_scale(reduction, residuals, g):
    input, target = residuals
    d = 2 * (input - target) * g                      # MISTAKE: no / input.size for 'mean'
    return d, -d


mse_reduction_scale = jax.custom_vjp(_mse, nondiff_argnums=(2,))
mse_reduction_scale.defvjp(_mse_fwd, _mse_bwd_reduction_scale)


BATCH_SIZE = 6  # the batch size of the training script this loss was written for


def _cross_entropy_hard_coded(input, target, reduction="mean"):
    cd = class_dim(input)
    losses = -(soft_targets(input, target) * jax.nn.log_softmax(input, axis=cd)).sum(cd)
    return losses.sum() / BATCH_SIZE if reduction == "mean" else reduce(losses, reduction)  # MISTAKE


def _cross_entropy_hard_coded_fwd(input, target, reduction):
    return _cross_entropy_hard_coded(input, target, reduction), (input, target)


def _cross_entropy_hard_coded_bwd(reduction, residuals, g):
    input, target = residuals
    cd = class_dim(input)
    q = soft_targets(input, target)
    g = g / BATCH_SIZE if reduction == "mean" else g  # MISTAKE
    if reduction == "none":
        g = jnp.expand_dims(g, cd)
    return (jax.nn.softmax(input, axis=cd) * q.sum(cd, keepdims=True) - q) * g, None


cross_entropy_hard_coded_batch = jax.custom_vjp(_cross_entropy_hard_coded, nondiff_argnums=(2,))
cross_entropy_hard_coded_batch.defvjp(_cross_entropy_hard_coded_fwd, _cross_entropy_hard_coded_bwd)


def cross_entropy_stop_gradient(input, target, reduction="mean"):
    """A plain JAX function: stop_gradient was meant for the max shift alone."""
    cd = class_dim(input)
    shifted = jax.lax.stop_gradient(input - input.max(cd, keepdims=True))  # MISTAKE: stops everything
    logp = shifted - jnp.log(jnp.exp(shifted).sum(cd, keepdims=True))
    return reduce(-(soft_targets(input, target) * logp).sum(cd), reduction)


def _cross_entropy_numpy(input, target, reduction="mean"):
    x = np.asarray(input)                             # MISTAKE: a traced array has no NumPy value
    cd = 0 if x.ndim == 1 else 1
    logp = x - x.max(cd, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(cd, keepdims=True))
    losses = -(np.asarray(soft_targets(input, target)) * logp).sum(cd)
    return jnp.asarray({"none": losses, "sum": losses.sum(), "mean": losses.mean()}[reduction])


def _cross_entropy_numpy_fwd(input, target, reduction):
    return _cross_entropy_numpy(input, target, reduction), (input, target)


cross_entropy_numpy = jax.custom_vjp(_cross_entropy_numpy, nondiff_argnums=(2,))
cross_entropy_numpy.defvjp(_cross_entropy_numpy_fwd, _cross_entropy_bwd)


def _multiclass_hinge_max_indices(scores, labels, reduction="none"):
    onehot = jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
    worst = jnp.argmax(scores + 1 - onehot, axis=-1)  # MISTAKE: the position of the max, not the max
    return reduce(worst - (scores * onehot).sum(-1), reduction)


def _multiclass_hinge_max_indices_fwd(scores, labels, reduction):
    return _multiclass_hinge_max_indices(scores, labels, reduction), (scores, labels)


multiclass_hinge_max_indices = jax.custom_vjp(_multiclass_hinge_max_indices, nondiff_argnums=(2,))
multiclass_hinge_max_indices.defvjp(_multiclass_hinge_max_indices_fwd, _multiclass_hinge_bwd)
