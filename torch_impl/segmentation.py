"""Segmentation losses in torch: optax's dice_loss, binary_dice_loss,
multiclass_generalized_dice_loss and Keras's dice and tversky.

Each loss reads as in ``reference/segmentation.py``: a functional over torch ops (the
``module`` variant, autograd does the backward) and an ``autograd.Function`` whose
backward is the reference's VJP written in torch ops. torch has none of these losses,
so no built-in is registered. The shape rules (optax's channel axis, the default axes)
are plain Python on shapes, imported from the reference.
"""

from __future__ import annotations

import torch

from reference.reductions import reduce, reduce_vjp
from reference.segmentation import (GENERALIZED_EPSILON, KERAS_EPSILON, binary_shapes, kept_shape, keras_axes,
                                    optax_axes, optax_shapes, reduced_shape, with_channel)
from .core import function, module


def _sum(x, axes, keepdim=False):
    """``x`` summed over ``axes``; torch's ``sum(dim=())`` sums everything, so no axes is no sum."""
    return x.sum(dim=axes, keepdim=keepdim) if axes else x


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# -- the optax core: per-class Tversky losses --------------------------------------------

def _probabilities(x, apply):
    if not apply:
        return x
    return torch.sigmoid(x) if x.shape[-1] == 1 else torch.softmax(x, dim=-1)


def _probabilities_vjp(dp, p, apply):
    if not apply:
        return dp
    if p.shape[-1] == 1:
        return dp * p * (1.0 - p)
    return p * (dp - (p * dp).sum(dim=-1, keepdim=True))


def _tversky_terms(p, t, axes, smooth, alpha, beta):
    intersection = _sum(p * t, axes, keepdim=True)
    pred_sum = _sum(p, axes, keepdim=True)
    target_sum = _sum(t, axes, keepdim=True)
    numerator = intersection + smooth
    denominator = intersection + alpha * (pred_sum - intersection) + beta * (target_sum - intersection) + smooth
    return numerator, denominator


def _class_losses(x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis):
    p = _probabilities(x, apply_softmax)
    axes = optax_axes(p.ndim, axis)
    numerator, denominator = _tversky_terms(p, t, axes, smooth, alpha, beta)
    losses = (1.0 - numerator / denominator).reshape(reduced_shape(p.shape, axes))
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
        g = torch.cat([torch.zeros_like(g[..., :1]), g], dim=-1)
    if class_weights is not None:
        g = g * class_weights
    g = g.reshape(kept_shape(p.shape, axes))
    dp = -(g / denominator) * (t - numerator / denominator * ((1.0 - alpha - beta) * t + alpha))
    return _probabilities_vjp(dp, p, apply_softmax)


def _over_classes(losses, class_reduction):
    if class_reduction == "mean":
        return losses.mean(dim=-1)
    if class_reduction == "sum":
        return losses.sum(dim=-1)
    return losses


def _over_classes_vjp(g, class_reduction, class_shape):
    if class_reduction == "none":
        return g
    if class_reduction == "mean":
        g = g / class_shape[-1]
    return g.unsqueeze(-1).expand(class_shape)


def _cotangent(grad_output, reduction, shape):
    """The cotangent of the per-example values of ``shape``."""
    return torch.broadcast_to(reduce_vjp(grad_output, reduction, _numel(shape)), shape)


# -- dice_loss -----------------------------------------------------------------------------

def _with_channel(predictions, targets):
    p_shape, t_shape = with_channel(predictions.shape, targets.shape)
    return predictions.reshape(p_shape), targets.reshape(t_shape)


def dice_loss(predictions, targets, class_weights=None, smooth=1.0, alpha=0.5, beta=0.5, apply_softmax=True,
              class_reduction="mean", ignore_background=False, axis=None, reduction="none"):
    x, t = _with_channel(predictions, targets)
    losses = _class_losses(x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis)
    return reduce(_over_classes(losses, class_reduction), reduction)


class DiceLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(predictions, targets, class_weights, smooth, alpha, beta, apply_softmax, class_reduction,
                ignore_background, axis, reduction):
        return dice_loss(predictions, targets, class_weights, smooth, alpha, beta, apply_softmax, class_reduction,
                         ignore_background, axis, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        predictions, targets, class_weights, *ctx.hyperparameters = inputs
        ctx.save_for_backward(predictions, targets, class_weights)

    @staticmethod
    def backward(ctx, grad_output):
        predictions, targets, class_weights = ctx.saved_tensors
        smooth, alpha, beta, apply_softmax, class_reduction, ignore_background, axis, reduction = ctx.hyperparameters
        x, t = _with_channel(predictions, targets)
        class_shape, example_shape = optax_shapes(x.shape, axis, ignore_background, class_reduction)
        g = _over_classes_vjp(_cotangent(grad_output, reduction, example_shape), class_reduction, class_shape)
        dx = _class_losses_vjp(g, x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis)
        return (dx.reshape(predictions.shape),) + (None,) * 10


DiceLoss = module("dice_loss", "DiceLoss", dice_loss)
dice_loss_function = function("dice_loss", DiceLossFunction)


# -- binary_dice_loss ----------------------------------------------------------------------

def _binary(predictions, targets):
    p_shape, t_shape = binary_shapes(predictions.shape, targets.shape)
    return predictions.reshape(p_shape), targets.reshape(t_shape)


def binary_dice_loss(predictions, targets, smooth=1.0, apply_sigmoid=True, reduction="none"):
    x, t = _binary(predictions, targets)
    losses = _class_losses(x, t, None, smooth, 0.5, 0.5, apply_sigmoid, False, None)
    return reduce(_over_classes(losses, "mean"), reduction)


class BinaryDiceLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(predictions, targets, smooth, apply_sigmoid, reduction):
        return binary_dice_loss(predictions, targets, smooth, apply_sigmoid, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        predictions, targets, ctx.smooth, ctx.apply_sigmoid, ctx.reduction = inputs
        ctx.save_for_backward(predictions, targets)

    @staticmethod
    def backward(ctx, grad_output):
        predictions, targets = ctx.saved_tensors
        x, t = _binary(predictions, targets)
        class_shape, example_shape = optax_shapes(x.shape, None, False, "mean")
        g = _over_classes_vjp(_cotangent(grad_output, ctx.reduction, example_shape), "mean", class_shape)
        dx = _class_losses_vjp(g, x, t, None, ctx.smooth, 0.5, 0.5, ctx.apply_sigmoid, False, None)
        return dx.reshape(predictions.shape), None, None, None, None


BinaryDiceLoss = module("binary_dice_loss", "BinaryDiceLoss", binary_dice_loss)
binary_dice_loss_function = function("binary_dice_loss", BinaryDiceLossFunction)


# -- multiclass_generalized_dice_loss ------------------------------------------------------

def _generalized_weights(targets):
    frequencies = _sum(targets, tuple(range(targets.ndim - 1)))
    weights = 1.0 / (frequencies ** 2 + GENERALIZED_EPSILON)
    return weights / weights.sum() * weights.shape[0]


def multiclass_generalized_dice_loss(predictions, targets, smooth=1.0, apply_softmax=True, ignore_background=False,
                                     reduction="none"):
    weights = _generalized_weights(targets)
    losses = _class_losses(predictions, targets, weights, smooth, 0.5, 0.5, apply_softmax, ignore_background, None)
    return reduce(losses.mean(), reduction)


class MulticlassGeneralizedDiceLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(predictions, targets, smooth, apply_softmax, ignore_background, reduction):
        return multiclass_generalized_dice_loss(predictions, targets, smooth, apply_softmax, ignore_background,
                                                reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        predictions, targets, ctx.smooth, ctx.apply_softmax, ctx.ignore_background, ctx.reduction = inputs
        ctx.save_for_backward(predictions, targets)

    @staticmethod
    def backward(ctx, grad_output):
        predictions, targets = ctx.saved_tensors
        weights = _generalized_weights(targets)
        class_shape, _ = optax_shapes(predictions.shape, None, ctx.ignore_background, "none")
        g = reduce_vjp(grad_output, ctx.reduction, 1)
        g = torch.broadcast_to(g / _numel(class_shape), class_shape)
        dx = _class_losses_vjp(g, predictions, targets, weights, ctx.smooth, 0.5, 0.5, ctx.apply_softmax,
                               ctx.ignore_background, None)
        return dx, None, None, None, None, None


MulticlassGeneralizedDiceLoss = module("multiclass_generalized_dice_loss", "MulticlassGeneralizedDiceLoss",
                                       multiclass_generalized_dice_loss)
multiclass_generalized_dice_loss_function = function("multiclass_generalized_dice_loss",
                                                     MulticlassGeneralizedDiceLossFunction)


# -- dice (Keras) ----------------------------------------------------------------------------

def dice(y_true, y_pred, axis=None, reduction="none"):
    axes = keras_axes(y_pred.ndim, axis)
    intersection = _sum(y_true * y_pred, axes)
    total = _sum(y_true, axes) + _sum(y_pred, axes) + KERAS_EPSILON
    return reduce(1.0 - 2.0 * intersection / total, reduction)


class DiceFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(y_true, y_pred, axis, reduction):
        return dice(y_true, y_pred, axis, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y_true, y_pred, ctx.axis, ctx.reduction = inputs
        ctx.save_for_backward(y_true, y_pred)

    @staticmethod
    def backward(ctx, grad_output):
        y_true, y_pred = ctx.saved_tensors
        axes = keras_axes(y_pred.ndim, ctx.axis)
        intersection = _sum(y_true * y_pred, axes, keepdim=True)
        total = _sum(y_true, axes, keepdim=True) + _sum(y_pred, axes, keepdim=True) + KERAS_EPSILON
        g = _cotangent(grad_output, ctx.reduction, reduced_shape(y_pred.shape, axes))
        g = g.reshape(kept_shape(y_pred.shape, axes))
        return None, -(2.0 * g / total) * (y_true - intersection / total), None, None


Dice = module("dice", "Dice", dice)
dice_function = function("dice", DiceFunction)


# -- tversky (Keras) -------------------------------------------------------------------------

def _keras_tversky_terms(y_true, y_pred, alpha, beta, axes, keepdim):
    intersection = _sum(y_true * y_pred, axes, keepdim)
    fp = _sum((1.0 - y_pred) * y_true, axes, keepdim)
    fn = _sum(y_pred * (1.0 - y_true), axes, keepdim)
    return intersection, intersection + fp * alpha + fn * beta + KERAS_EPSILON


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None, reduction="none"):
    axes = keras_axes(y_pred.ndim, axis)
    intersection, denominator = _keras_tversky_terms(y_true, y_pred, alpha, beta, axes, False)
    return reduce(1.0 - intersection / denominator, reduction)


class TverskyFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(y_true, y_pred, alpha, beta, axis, reduction):
        return tversky(y_true, y_pred, alpha, beta, axis, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y_true, y_pred, ctx.alpha, ctx.beta, ctx.axis, ctx.reduction = inputs
        ctx.save_for_backward(y_true, y_pred)

    @staticmethod
    def backward(ctx, grad_output):
        y_true, y_pred = ctx.saved_tensors
        alpha, beta = ctx.alpha, ctx.beta
        axes = keras_axes(y_pred.ndim, ctx.axis)
        intersection, denominator = _keras_tversky_terms(y_true, y_pred, alpha, beta, axes, True)
        g = _cotangent(grad_output, ctx.reduction, reduced_shape(y_pred.shape, axes))
        g = g.reshape(kept_shape(y_pred.shape, axes))
        ratio = intersection / denominator
        d_pred = -(g / denominator) * (y_true - ratio * ((1.0 - alpha) * y_true + beta * (1.0 - y_true)))
        return None, d_pred, None, None, None, None


Tversky = module("tversky", "Tversky", tversky)
tversky_function = function("tversky", TverskyFunction)
