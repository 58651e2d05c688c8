"""Segmentation losses in JAX: optax's dice_loss, binary_dice_loss,
multiclass_generalized_dice_loss and Keras's dice and tversky.

Each loss reads as in ``reference/segmentation.py``: a jax.numpy function (the
``autodiff`` variant) and a ``jax.custom_vjp`` whose backward is the reference's VJP.
The outside oracles are optax's own functions and Keras's (on the JAX backend); the
shape rules are plain Python on shapes, imported from the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from reference.reductions import reduce, reduce_vjp
from reference.segmentation import (GENERALIZED_EPSILON, KERAS_EPSILON, binary_shapes, kept_shape, keras_axes,
                                    optax_axes, optax_shapes, reduced_shape, with_channel)
from .core import autodiff, builtin, custom_vjp, keras


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# -- the optax core: per-class Tversky losses --------------------------------------------

def _probabilities(x, apply):
    if not apply:
        return x
    return jax.nn.sigmoid(x) if x.shape[-1] == 1 else jax.nn.softmax(x, axis=-1)


def _probabilities_vjp(dp, p, apply):
    if not apply:
        return dp
    if p.shape[-1] == 1:
        return dp * p * (1.0 - p)
    return p * (dp - (p * dp).sum(axis=-1, keepdims=True))


def _tversky_terms(p, t, axes, smooth, alpha, beta):
    intersection = (p * t).sum(axis=axes, keepdims=True)
    pred_sum = p.sum(axis=axes, keepdims=True)
    target_sum = t.sum(axis=axes, keepdims=True)
    numerator = intersection + smooth
    denominator = intersection + alpha * (pred_sum - intersection) + beta * (target_sum - intersection) + smooth
    return numerator, denominator


@jax.custom_jvp
def _ratio(numerator, denominator):
    """``numerator / denominator``, with a derivative that stays finite where the value does.
    JAX differentiates ``a / b`` in ``b`` as ``a * b**-2``, and ``b**-2`` overflows to inf
    below 1e-154 in float64 (1e-19 in float32): a class that a saturated softmax gives
    probabilities of 1e-165 and that no target has (``smooth=0``) got a NaN gradient where
    the value and the true gradient are finite (found by the thorough fuzz). The rule below is
    the same derivative, ``(da - (a / b) db) / b``, in the order torch computes it (XLA
    reassociates ``(a / b) / b`` into ``a / (b * b)``, so it cannot be written as plain
    division)."""
    return numerator / denominator


@_ratio.defjvp
def _ratio_jvp(primals, tangents):
    numerator, denominator = primals
    d_numerator, d_denominator = tangents
    ratio = numerator / denominator
    return ratio, (d_numerator - ratio * d_denominator) / denominator


def _class_losses(x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis):
    p = _probabilities(x, apply_softmax)
    axes = optax_axes(p.ndim, axis)
    numerator, denominator = _tversky_terms(p, t, axes, smooth, alpha, beta)
    losses = (1.0 - _ratio(numerator, denominator)).reshape(reduced_shape(p.shape, axes))
    if class_weights is not None:
        losses = losses * class_weights
    if ignore_background and p.shape[-1] > 1:
        losses = losses[..., 1:]
    return losses


def _class_losses_vjp(g, x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis):
    p = _probabilities(x, apply_softmax)
    axes = optax_axes(p.ndim, axis)
    numerator, denominator = _tversky_terms(p, t, axes, smooth, alpha, beta)
    if ignore_background and p.shape[-1] > 1:
        g = jnp.concatenate([jnp.zeros_like(g[..., :1]), g], axis=-1)
    if class_weights is not None:
        g = g * class_weights
    g = g.reshape(kept_shape(p.shape, axes))
    dp = -(g / denominator) * (t - numerator / denominator * ((1.0 - alpha - beta) * t + alpha))
    return _probabilities_vjp(dp, p, apply_softmax)


def _over_classes(losses, class_reduction):
    if class_reduction == "mean":
        return losses.mean(axis=-1)
    if class_reduction == "sum":
        return losses.sum(axis=-1)
    return losses


def _over_classes_vjp(g, class_reduction, class_shape):
    if class_reduction == "none":
        return g
    if class_reduction == "mean":
        g = g / class_shape[-1]
    return jnp.broadcast_to(g[..., None], class_shape)


def _cotangent(cotangent, reduction, shape):
    """The cotangent of the per-example values of ``shape``."""
    return jnp.broadcast_to(reduce_vjp(cotangent, reduction, _numel(shape)), shape)


# -- dice_loss -----------------------------------------------------------------------------

def _with_channel(predictions, targets):
    p_shape, t_shape = with_channel(predictions.shape, targets.shape)
    return predictions.reshape(p_shape), targets.reshape(t_shape)


def dice_loss(predictions, targets, class_weights=None, smooth=1.0, alpha=0.5, beta=0.5, apply_softmax=True,
              class_reduction="mean", ignore_background=False, axis=None, reduction="none"):
    x, t = _with_channel(predictions, targets)
    losses = _class_losses(x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis)
    return reduce(_over_classes(losses, class_reduction), reduction)


def _dice_loss_fwd(predictions, targets, class_weights, smooth, alpha, beta, apply_softmax, class_reduction,
                   ignore_background, axis, reduction):
    out = dice_loss(predictions, targets, class_weights, smooth, alpha, beta, apply_softmax, class_reduction,
                    ignore_background, axis, reduction)
    return out, (predictions, targets, class_weights)


def _dice_loss_bwd(smooth, alpha, beta, apply_softmax, class_reduction, ignore_background, axis, reduction,
                   residuals, cotangent):
    predictions, targets, class_weights = residuals
    x, t = _with_channel(predictions, targets)
    class_shape, example_shape = optax_shapes(x.shape, axis, ignore_background, class_reduction)
    g = _over_classes_vjp(_cotangent(cotangent, reduction, example_shape), class_reduction, class_shape)
    dx = _class_losses_vjp(g, x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis)
    return dx.reshape(predictions.shape), None, None


dice_loss_custom_vjp = jax.custom_vjp(dice_loss, nondiff_argnums=(3, 4, 5, 6, 7, 8, 9, 10))
dice_loss_custom_vjp.defvjp(_dice_loss_fwd, _dice_loss_bwd)
autodiff("dice_loss", dice_loss)
custom_vjp("dice_loss", dice_loss_custom_vjp, _dice_loss_fwd, _dice_loss_bwd)


# -- binary_dice_loss ----------------------------------------------------------------------

def _binary(predictions, targets):
    p_shape, t_shape = binary_shapes(predictions.shape, targets.shape)
    return predictions.reshape(p_shape), targets.reshape(t_shape)


def binary_dice_loss(predictions, targets, smooth=1.0, apply_sigmoid=True, reduction="none"):
    x, t = _binary(predictions, targets)
    losses = _class_losses(x, t, None, smooth, 0.5, 0.5, apply_sigmoid, False, None)
    return reduce(_over_classes(losses, "mean"), reduction)


def _binary_dice_loss_fwd(predictions, targets, smooth, apply_sigmoid, reduction):
    return binary_dice_loss(predictions, targets, smooth, apply_sigmoid, reduction), (predictions, targets)


def _binary_dice_loss_bwd(smooth, apply_sigmoid, reduction, residuals, cotangent):
    predictions, targets = residuals
    x, t = _binary(predictions, targets)
    class_shape, example_shape = optax_shapes(x.shape, None, False, "mean")
    g = _over_classes_vjp(_cotangent(cotangent, reduction, example_shape), "mean", class_shape)
    dx = _class_losses_vjp(g, x, t, None, smooth, 0.5, 0.5, apply_sigmoid, False, None)
    return dx.reshape(predictions.shape), None


binary_dice_loss_custom_vjp = jax.custom_vjp(binary_dice_loss, nondiff_argnums=(2, 3, 4))
binary_dice_loss_custom_vjp.defvjp(_binary_dice_loss_fwd, _binary_dice_loss_bwd)
autodiff("binary_dice_loss", binary_dice_loss)
custom_vjp("binary_dice_loss", binary_dice_loss_custom_vjp, _binary_dice_loss_fwd, _binary_dice_loss_bwd)


# -- multiclass_generalized_dice_loss ------------------------------------------------------

def _generalized_weights(targets):
    frequencies = targets.sum(axis=tuple(range(targets.ndim - 1)))
    weights = 1.0 / (frequencies ** 2 + GENERALIZED_EPSILON)
    return weights / weights.sum() * weights.shape[0]


def multiclass_generalized_dice_loss(predictions, targets, smooth=1.0, apply_softmax=True, ignore_background=False,
                                     reduction="none"):
    weights = _generalized_weights(targets)
    losses = _class_losses(predictions, targets, weights, smooth, 0.5, 0.5, apply_softmax, ignore_background, None)
    return reduce(losses.mean(), reduction)


def _generalized_fwd(predictions, targets, smooth, apply_softmax, ignore_background, reduction):
    out = multiclass_generalized_dice_loss(predictions, targets, smooth, apply_softmax, ignore_background, reduction)
    return out, (predictions, targets)


def _generalized_bwd(smooth, apply_softmax, ignore_background, reduction, residuals, cotangent):
    predictions, targets = residuals
    weights = _generalized_weights(targets)
    class_shape, _ = optax_shapes(predictions.shape, None, ignore_background, "none")
    g = jnp.broadcast_to(reduce_vjp(cotangent, reduction, 1) / _numel(class_shape), class_shape)
    dx = _class_losses_vjp(g, predictions, targets, weights, smooth, 0.5, 0.5, apply_softmax, ignore_background,
                           None)
    return dx, None


multiclass_generalized_dice_loss_custom_vjp = jax.custom_vjp(multiclass_generalized_dice_loss,
                                                             nondiff_argnums=(2, 3, 4, 5))
multiclass_generalized_dice_loss_custom_vjp.defvjp(_generalized_fwd, _generalized_bwd)
autodiff("multiclass_generalized_dice_loss", multiclass_generalized_dice_loss)
custom_vjp("multiclass_generalized_dice_loss", multiclass_generalized_dice_loss_custom_vjp, _generalized_fwd,
           _generalized_bwd)


# -- dice (Keras) ----------------------------------------------------------------------------

def dice(y_true, y_pred, axis=None, reduction="none"):
    axes = keras_axes(y_pred.ndim, axis)
    intersection = (y_true * y_pred).sum(axis=axes)
    total = y_true.sum(axis=axes) + y_pred.sum(axis=axes) + KERAS_EPSILON
    return reduce(1.0 - 2.0 * intersection / total, reduction)


def _dice_fwd(y_true, y_pred, axis, reduction):
    return dice(y_true, y_pred, axis, reduction), (y_true, y_pred)


def _dice_bwd(axis, reduction, residuals, cotangent):
    y_true, y_pred = residuals
    axes = keras_axes(y_pred.ndim, axis)
    intersection = (y_true * y_pred).sum(axis=axes, keepdims=True)
    total = y_true.sum(axis=axes, keepdims=True) + y_pred.sum(axis=axes, keepdims=True) + KERAS_EPSILON
    g = _cotangent(cotangent, reduction, reduced_shape(y_pred.shape, axes)).reshape(kept_shape(y_pred.shape, axes))
    return None, -(2.0 * g / total) * (y_true - intersection / total)


dice_custom_vjp = jax.custom_vjp(dice, nondiff_argnums=(2, 3))
dice_custom_vjp.defvjp(_dice_fwd, _dice_bwd)
autodiff("dice", dice)
custom_vjp("dice", dice_custom_vjp, _dice_fwd, _dice_bwd)


# -- tversky (Keras) -------------------------------------------------------------------------

def _keras_tversky_terms(y_true, y_pred, alpha, beta, axes, keepdims):
    intersection = (y_true * y_pred).sum(axis=axes, keepdims=keepdims)
    fp = ((1.0 - y_pred) * y_true).sum(axis=axes, keepdims=keepdims)
    fn = (y_pred * (1.0 - y_true)).sum(axis=axes, keepdims=keepdims)
    return intersection, intersection + fp * alpha + fn * beta + KERAS_EPSILON


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None, reduction="none"):
    axes = keras_axes(y_pred.ndim, axis)
    intersection, denominator = _keras_tversky_terms(y_true, y_pred, alpha, beta, axes, False)
    return reduce(1.0 - intersection / denominator, reduction)


def _tversky_fwd(y_true, y_pred, alpha, beta, axis, reduction):
    return tversky(y_true, y_pred, alpha, beta, axis, reduction), (y_true, y_pred)


def _tversky_bwd(alpha, beta, axis, reduction, residuals, cotangent):
    y_true, y_pred = residuals
    axes = keras_axes(y_pred.ndim, axis)
    intersection, denominator = _keras_tversky_terms(y_true, y_pred, alpha, beta, axes, True)
    g = _cotangent(cotangent, reduction, reduced_shape(y_pred.shape, axes)).reshape(kept_shape(y_pred.shape, axes))
    ratio = intersection / denominator
    return None, -(g / denominator) * (y_true - ratio * ((1.0 - alpha) * y_true + beta * (1.0 - y_true)))


tversky_custom_vjp = jax.custom_vjp(tversky, nondiff_argnums=(2, 3, 4, 5))
tversky_custom_vjp.defvjp(_tversky_fwd, _tversky_bwd)
autodiff("tversky", tversky)
custom_vjp("tversky", tversky_custom_vjp, _tversky_fwd, _tversky_bwd)


# -- the built-ins, the outside oracle ---------------------------------------------

def _optax_dice_loss(predictions, targets, class_weights=None, smooth=1.0, alpha=0.5, beta=0.5, apply_softmax=True,
                     class_reduction="mean", ignore_background=False, axis=None, reduction="none"):
    import optax
    if not apply_softmax and with_channel(predictions.shape, targets.shape)[0][-1] == 1:
        raise NotImplementedError("optax's apply_softmax=False wants the predictions to sum to 1 along the class "
                                  "axis, which for one channel [..., 1] admits only predictions equal to 1")
    return reduce(optax.losses.dice_loss(predictions, targets, class_weights=class_weights, smooth=smooth,
                                         alpha=alpha, beta=beta, apply_softmax=apply_softmax,
                                         reduction=class_reduction, ignore_background=ignore_background, axis=axis),
                  reduction)


def _optax_binary_dice_loss(predictions, targets, smooth=1.0, apply_sigmoid=True, reduction="none"):
    import optax
    if not apply_sigmoid:
        raise NotImplementedError("optax 0.2.8's binary_dice_loss(apply_sigmoid=False) rejects probabilities other "
                                  "than 1 (its sum-to-1 check runs along a class axis of size 1)")
    return reduce(optax.losses.binary_dice_loss(predictions, targets, smooth=smooth, apply_sigmoid=apply_sigmoid),
                  reduction)


def _optax_generalized_dice_loss(predictions, targets, smooth=1.0, apply_softmax=True, ignore_background=False,
                                 reduction="none"):
    import optax
    if not apply_softmax and predictions.shape[-1] == 1:
        raise NotImplementedError("optax's apply_softmax=False wants the predictions to sum to 1 along a class "
                                  "axis of size 1")
    return reduce(optax.losses.multiclass_generalized_dice_loss(predictions, targets, smooth=smooth,
                                                                apply_softmax=apply_softmax,
                                                                ignore_background=ignore_background), reduction)


def _keras_dice(y_true, y_pred, axis=None, reduction="none"):
    return reduce(keras().losses.dice(y_true, y_pred, axis=axis), reduction)


def _keras_tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None, reduction="none"):
    return reduce(keras().losses.tversky(y_true, y_pred, alpha=alpha, beta=beta, axis=axis), reduction)


builtin("dice_loss", _optax_dice_loss)
builtin("binary_dice_loss", _optax_binary_dice_loss)
builtin("multiclass_generalized_dice_loss", _optax_generalized_dice_loss)
builtin("dice", _keras_dice)
builtin("tversky", _keras_tversky)
