"""Segmentation losses: optax's ``dice_loss``, ``binary_dice_loss`` and
``multiclass_generalized_dice_loss``, and Keras's ``dice`` and ``tversky``.

torch has none of them. The optax losses keep optax's names, argument names and
defaults (optax 0.2.8, ``optax/losses/_segmentation.py``); the Keras losses keep
Keras's names and argument order ``(y_true, y_pred)`` (Keras 3.15,
``keras/src/losses/losses.py``). Every loss takes lossparity's ``reduction``
(``none``, ``mean``, ``sum``) last, with the default ``none``: the defaults give the
library's own output.

All five are ratios of sums over a set of axes. For optax, per class :math:`c` (the
last axis) and summed over the spatial axes (all but the first and the last, unless
``axis`` says otherwise),

.. math:: I = \\sum p\\,t, \\quad P = \\sum p, \\quad T = \\sum t, \\qquad
          \\ell_c = 1 - \\frac{I + s}{I + \\alpha (P - I) + \\beta (T - I) + s},

with :math:`p` the softmax of the logits along the class axis (the sigmoid when that
axis has size 1). Writing :math:`D` for the denominator and :math:`N` for the
numerator, the derivative with respect to the probabilities is

.. math:: \\frac{\\partial \\ell_c}{\\partial p_i} = -\\frac{1}{D}
          \\Bigl(t_i - \\frac{N}{D}\\bigl((1 - \\alpha - \\beta)\\,t_i + \\alpha\\bigr)\\Bigr),

which the VJPs pass back through the softmax (:math:`p \\odot (g - \\langle p, g\\rangle)`)
or the sigmoid (:math:`g\\,p(1-p)`). Keras's two losses have the same shape with
``backend.epsilon()`` (1e-7) in the denominator instead of the smoothing.

The targets are not differentiable in any of the five: they are label masks (optax
documents :math:`t \\in \\{0, 1\\}`, one-hot along the class axis; Keras casts
``y_true`` to ``y_pred``'s dtype, so integer labels are its common form), one-hot
targets sit on the boundary of their domain [0, 1] where no two-sided derivative
exists, and ``multiclass_generalized_dice_loss`` derives its class weights from the
targets as statistics of the labels, constants of the loss rather than variables.
Soft targets in [0, 1] are accepted (and covered by the cases); they get no gradient.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, softmax

from . import checks
from .reductions import reduce, reduce_vjp
from .spec import BadInput, Case, Difference, LossSpec, Sampled, XFail, register, replace_input, set_param

# ``keras.config.epsilon()``'s default, which Keras's dice and tversky add to their denominators.
KERAS_EPSILON = 1e-7
# optax's multiclass_generalized_dice_loss: class weights 1 / (frequency^2 + 1e-7).
GENERALIZED_EPSILON = 1e-7
CLASS_REDUCTIONS = ("mean", "sum", "none")


# -- shapes and axes, shared by the three packages (plain Python on shapes) ----------

def with_channel(p_shape: tuple, t_shape: tuple) -> tuple[tuple, tuple]:
    """optax ``dice_loss``'s rule: an input one dimension short of the other gets a
    trailing channel axis of size 1 (``[...]`` against ``[..., 1]``)."""
    p_shape, t_shape = tuple(p_shape), tuple(t_shape)
    if len(p_shape) == len(t_shape) - 1:
        p_shape = p_shape + (1,)
    if len(t_shape) == len(p_shape) - 1:
        t_shape = t_shape + (1,)
    return p_shape, t_shape


def binary_shapes(p_shape: tuple, t_shape: tuple) -> tuple[tuple, tuple]:
    """optax ``binary_dice_loss``'s rule: inputs of equal rank whose last axis is not 1
    both get a channel axis; then ``dice_loss``'s rule (``with_channel``)."""
    p_shape, t_shape = tuple(p_shape), tuple(t_shape)
    if len(p_shape) == len(t_shape) and p_shape and p_shape[-1] != 1:
        p_shape, t_shape = p_shape + (1,), t_shape + (1,)
    return with_channel(p_shape, t_shape)


def sum_axes(ndim: int, axis, default: tuple) -> tuple:
    """``axis`` (None, an int or a tuple of ints, negative ones counting from the end) as a
    tuple of non-negative axes; None gives ``default``."""
    if axis is None:
        return tuple(default)
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    return tuple(int(a) % ndim for a in axis)


def optax_axes(ndim: int, axis) -> tuple:
    """optax's default: every axis but the first (batch) and the last (classes)."""
    return sum_axes(ndim, axis, tuple(range(1, ndim - 1)))


def keras_axes(ndim: int, axis) -> tuple:
    """Keras's default ``axis=None`` sums over every axis (one value for the whole batch)."""
    return sum_axes(ndim, axis, tuple(range(ndim)))


def kept_shape(shape: tuple, axes: tuple) -> tuple:
    """``shape`` with the summed ``axes`` kept as size 1: a sum's cotangent reshaped to it
    broadcasts back over the summed elements."""
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def reduced_shape(shape: tuple, axes: tuple) -> tuple:
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def optax_shapes(p_shape: tuple, axis, ignore_background: bool, class_reduction: str) -> tuple[tuple, tuple]:
    """The shapes of optax's per-class losses and of the per-example values, for predictions
    of shape ``p_shape`` (channel axis included): the backwards size their cotangents by them."""
    class_shape = list(reduced_shape(p_shape, optax_axes(len(p_shape), axis)))
    if ignore_background and p_shape[-1] > 1:
        class_shape[-1] -= 1
    class_shape = tuple(class_shape)
    return class_shape, (class_shape if class_reduction == "none" else class_shape[:-1])


# -- the shared checks -----------------------------------------------------------------

def _check_pair(p: checks.ArrayInfo, t: checks.ArrayInfo) -> None:
    checks.floating(p)
    checks.floating(t)
    checks.same_dtype(p, t)


def _check_shapes(p: checks.ArrayInfo, t: checks.ArrayInfo, p_shape: tuple, t_shape: tuple, rule: str) -> None:
    if p_shape != t_shape:
        raise ValueError(f"{t.name} must have the shape of {p.name} {p.shape}{rule}; got {t.shape} "
                         "(lossparity never broadcasts silently)")
    if len(p_shape) < 1:
        raise ValueError(f"{p.name} must have at least one dimension, the class axis; got shape {p.shape}")


_CHANNEL_RULE = ", or be one dimension short of it, or one longer with a trailing axis of size 1"


def _check_optax_common(args: dict, probabilities_flag: str) -> None:
    checks.reduction(args["reduction"])
    checks.finite_nonnegative("smooth", args["smooth"])  # inf: inf / inf
    checks.boolean(probabilities_flag, args[probabilities_flag])
    checks.within(args["targets"], 0.0, 1.0, "labels or probabilities")
    if not args[probabilities_flag]:
        checks.within(args["predictions"], 0.0, 1.0, f"probabilities ({probabilities_flag}=False)")


def check_dice_loss(args: dict) -> None:
    p, t = args["predictions"], args["targets"]
    _check_pair(p, t)
    p_shape, t_shape = with_channel(p.shape, t.shape)
    _check_shapes(p, t, p_shape, t_shape, _CHANNEL_RULE)
    ndim, num_classes = len(p_shape), p_shape[-1]
    checks.axes("axis", args["axis"], ndim, exclude=ndim - 1,
                what="the class axis (the last) is what class_weights, ignore_background and class_reduction "
                     "act on, so it cannot be summed over")
    checks.one_of("class_reduction", args["class_reduction"], CLASS_REDUCTIONS)
    checks.nonnegative("alpha", args["alpha"])
    checks.nonnegative("beta", args["beta"])
    checks.boolean("ignore_background", args["ignore_background"])
    w = args["class_weights"]
    if w is not None:
        checks.floating(w)
        checks.same_dtype(p, w)
        checks.shape_is(w, (num_classes,), "one weight per class")
        checks.nonnegative_array(w)
    _check_optax_common(args, "apply_softmax")


def check_binary_dice_loss(args: dict) -> None:
    p, t = args["predictions"], args["targets"]
    _check_pair(p, t)
    p_shape, t_shape = binary_shapes(p.shape, t.shape)
    _check_shapes(p, t, p_shape, t_shape, _CHANNEL_RULE)
    _check_optax_common(args, "apply_sigmoid")


def check_generalized_dice_loss(args: dict) -> None:
    p, t = args["predictions"], args["targets"]
    _check_pair(p, t)
    _check_shapes(p, t, p.shape, t.shape, " (optax's check_shapes_equal)")
    checks.boolean("ignore_background", args["ignore_background"])
    _check_optax_common(args, "apply_softmax")


def check_keras(args: dict) -> None:
    checks.reduction(args["reduction"])
    t, p = args["y_true"], args["y_pred"]
    _check_pair(p, t)
    checks.same_shape(t, p)
    checks.axes("axis", args["axis"], p.ndim)
    checks.within(t, 0.0, 1.0, "labels or probabilities")
    checks.within(p, 0.0, 1.0, "probabilities")
    for k in ("alpha", "beta"):
        if k in args:
            checks.nonnegative(k, args[k])


# -- the optax core: per-class Tversky losses --------------------------------------------

def _probabilities(x, apply):
    """optax's activation: the sigmoid when the class axis has size 1, else the softmax."""
    if not apply:
        return x
    return expit(x) if x.shape[-1] == 1 else softmax(x, axis=-1)


def _probabilities_vjp(dp, p, apply):
    if not apply:
        return dp
    if p.shape[-1] == 1:
        return dp * p * (1.0 - p)
    return p * (dp - (p * dp).sum(axis=-1, keepdims=True))


def _tversky_terms(p, t, axes, smooth, alpha, beta):
    """optax's numerator and denominator per class, the summed axes kept as size 1."""
    intersection = (p * t).sum(axis=axes, keepdims=True)
    pred_sum = p.sum(axis=axes, keepdims=True)
    target_sum = t.sum(axis=axes, keepdims=True)
    numerator = intersection + smooth
    denominator = intersection + alpha * (pred_sum - intersection) + beta * (target_sum - intersection) + smooth
    return numerator, denominator


def _class_losses(x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis):
    """The per-class losses ``[..., C]`` (``[..., C - 1]`` with ``ignore_background``) of
    logits ``x`` and targets ``t`` that already have their channel axis."""
    p = _probabilities(x, apply_softmax)
    axes = optax_axes(p.ndim, axis)
    numerator, denominator = _tversky_terms(p, t, axes, smooth, alpha, beta)
    with np.errstate(divide="ignore", invalid="ignore"):  # smooth=0 and a class absent: 0/0, NaN, as in optax
        losses = (1.0 - numerator / denominator).reshape(reduced_shape(p.shape, axes))
    if class_weights is not None:
        losses = losses * class_weights
    if ignore_background and p.shape[-1] > 1:
        losses = losses[..., 1:]
    return losses


def _class_losses_vjp(g, x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis):
    """The gradient w.r.t. ``x`` of ``sum(g * _class_losses(...))``."""
    p = _probabilities(x, apply_softmax)
    axes = optax_axes(p.ndim, axis)
    numerator, denominator = _tversky_terms(p, t, axes, smooth, alpha, beta)
    if ignore_background and p.shape[-1] > 1:
        g = np.concatenate([np.zeros_like(g[..., :1]), g], axis=-1)
    if class_weights is not None:
        g = g * class_weights
    g = g.reshape(kept_shape(p.shape, axes))
    with np.errstate(divide="ignore", invalid="ignore"):  # (the 0/0 of _class_losses)
        dp = -(g / denominator) * (t - numerator / denominator * ((1.0 - alpha - beta) * t + alpha))
    return _probabilities_vjp(dp, p, apply_softmax)


def _over_classes(losses, class_reduction):
    """optax's own ``reduction``, across the class axis."""
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
    return np.broadcast_to(np.expand_dims(g, -1), class_shape)


# -- dice_loss -----------------------------------------------------------------------------

def dice_loss(predictions, targets, *, class_weights=None, smooth=1.0, alpha=0.5, beta=0.5, apply_softmax=True,
              class_reduction="mean", ignore_background=False, axis=None, reduction="none"):
    r"""optax's ``dice_loss``: the soft Dice loss, in Tversky form, per class.

    .. math:: \ell_{b,c} = w_c \Bigl(1 - \frac{I_{b,c} + s}{I_{b,c} + \alpha (P_{b,c} - I_{b,c})
              + \beta (T_{b,c} - I_{b,c}) + s}\Bigr),

    :math:`I = \sum p t`, :math:`P = \sum p`, :math:`T = \sum t` over ``axis`` (default:
    every axis but the first and the last), :math:`p = \operatorname{softmax}(x)` along
    the last (class) axis, or :math:`\sigma(x)` when it has size 1, or :math:`x` itself
    with ``apply_softmax=False``. :math:`\alpha` weighs false positives :math:`P - I`,
    :math:`\beta` false negatives :math:`T - I`; :math:`\alpha = \beta = \tfrac12` is Dice,
    :math:`1 - (2I + 2s) / (P + T + 2s)`, and :math:`\alpha = \beta = 1` is Jaccard.
    ``ignore_background`` drops class 0 (after the weights) when there are two classes or
    more. ``class_reduction`` is optax's own ``reduction`` (``mean``, the default, ``sum``
    or ``none``) across the classes; lossparity's ``reduction`` then reduces those
    per-example values. An input one dimension short of the other gets a trailing
    channel axis of size 1, as in optax.
    """
    x, t = _with_channel_arrays(predictions, targets)
    losses = _class_losses(x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis)
    return reduce(_over_classes(losses, class_reduction), reduction)


def _with_channel_arrays(predictions, targets):
    p_shape, t_shape = with_channel(predictions.shape, targets.shape)
    return predictions.reshape(p_shape), targets.reshape(t_shape)


def dice_loss_vjp(cotangent, predictions, targets, *, class_weights=None, smooth=1.0, alpha=0.5, beta=0.5,
                  apply_softmax=True, class_reduction="mean", ignore_background=False, axis=None, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_{b,c}}{\partial p_i} = -\frac{w_c}{D}\Bigl(t_i - \frac{N}{D}
              \bigl((1-\alpha-\beta)\,t_i + \alpha\bigr)\Bigr)

    with :math:`N`, :math:`D` the numerator and denominator of :math:`\ell_{b,c}`, then
    through the softmax (or sigmoid) to the logits. The targets get no gradient.
    """
    x, t = _with_channel_arrays(predictions, targets)
    losses = _class_losses(x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis)
    per_example = _over_classes(losses, class_reduction)
    g = np.broadcast_to(reduce_vjp(cotangent, reduction, np.size(per_example)), np.shape(per_example))
    g = _over_classes_vjp(g, class_reduction, losses.shape)
    dx = _class_losses_vjp(g, x, t, class_weights, smooth, alpha, beta, apply_softmax, ignore_background, axis)
    return (dx.reshape(predictions.shape),)


# -- binary_dice_loss ----------------------------------------------------------------------

def _binary_arrays(predictions, targets):
    p_shape, t_shape = binary_shapes(predictions.shape, targets.shape)
    return predictions.reshape(p_shape), targets.reshape(t_shape)


def binary_dice_loss(predictions, targets, *, smooth=1.0, apply_sigmoid=True, reduction="none"):
    r"""optax's ``binary_dice_loss``: ``dice_loss`` of one sigmoid channel.

    .. math:: \ell_b = 1 - \frac{I_b + s}{\tfrac12 (P_b + T_b) + s}
              = 1 - \frac{2 I_b + 2 s}{P_b + T_b + 2 s}, \qquad p = \sigma(x)

    summed over every axis but the first. Inputs ``[...]`` of equal rank get a channel
    axis, ``[..., 1]`` are used as they are, and one of each is fine too (optax's rules).
    With ``apply_sigmoid=False`` the predictions are probabilities in [0, 1]: optax 0.2.8
    rejects those unless every one is 1 (it checks that they sum to 1 along the size-1
    class axis); lossparity computes the loss (see the spec's differences).
    """
    x, t = _binary_arrays(predictions, targets)
    losses = _class_losses(x, t, None, smooth, 0.5, 0.5, apply_sigmoid, False, None)
    return reduce(_over_classes(losses, "mean"), reduction)


def binary_dice_loss_vjp(cotangent, predictions, targets, *, smooth=1.0, apply_sigmoid=True, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_b}{\partial x_i} = -\frac{1}{D}\Bigl(t_i - \frac{N}{2D}\Bigr)\,p_i (1 - p_i)

    (without the last factor when ``apply_sigmoid=False``).
    """
    x, t = _binary_arrays(predictions, targets)
    losses = _class_losses(x, t, None, smooth, 0.5, 0.5, apply_sigmoid, False, None)
    per_example = _over_classes(losses, "mean")
    g = np.broadcast_to(reduce_vjp(cotangent, reduction, np.size(per_example)), np.shape(per_example))
    g = _over_classes_vjp(g, "mean", losses.shape)
    dx = _class_losses_vjp(g, x, t, None, smooth, 0.5, 0.5, apply_sigmoid, False, None)
    return (dx.reshape(predictions.shape),)


# -- multiclass_generalized_dice_loss ------------------------------------------------------

def generalized_class_weights(targets):
    r"""optax's weights :math:`w_c = C\,\frac{u_c}{\sum_k u_k}`, :math:`u_c = 1 / (f_c^2 + 10^{-7})`,
    :math:`f_c` the sum of class :math:`c`'s targets over the whole batch."""
    frequencies = targets.sum(axis=tuple(range(targets.ndim - 1)))
    weights = 1.0 / (frequencies ** 2 + GENERALIZED_EPSILON)
    return weights / weights.sum() * weights.shape[0]


def multiclass_generalized_dice_loss(predictions, targets, *, smooth=1.0, apply_softmax=True,
                                     ignore_background=False, reduction="none"):
    r"""optax's ``multiclass_generalized_dice_loss``: Dice with class weights from the targets.

    .. math:: \ell = \frac{1}{B C'} \sum_{b, c} w_c \Bigl(1 - \frac{2 I_{b,c} + 2 s}{P_{b,c} + T_{b,c} + 2 s}\Bigr),
              \qquad w_c = C \frac{u_c}{\sum_k u_k}, \quad u_c = \frac{1}{f_c^2 + 10^{-7}},

    :math:`f_c` the sum of class :math:`c`'s targets over every axis but the last (the
    batch included), :math:`C'` the classes that count (all but class 0 with
    ``ignore_background``; the weights are normalized over all :math:`C` even then). One
    value for the whole batch (a mean of per-class losses, not Sudre et al.'s ratio of
    weighted sums). The weights are a function of the targets, which get no gradient.
    """
    weights = generalized_class_weights(targets)
    losses = _class_losses(predictions, targets, weights, smooth, 0.5, 0.5, apply_softmax, ignore_background, None)
    return reduce(reduce(losses, "mean"), reduction)  # the mean of all: NaN, without a warning, for an empty batch


def multiclass_generalized_dice_loss_vjp(cotangent, predictions, targets, *, smooth=1.0, apply_softmax=True,
                                         ignore_background=False, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell}{\partial p_i} = -\frac{1}{B C'}\,\frac{w_c}{D}\Bigl(t_i - \frac{N}{2D}\Bigr)

    then through the softmax (or sigmoid); :math:`w_c` is held constant (a statistic of the targets).
    """
    weights = generalized_class_weights(targets)
    losses = _class_losses(predictions, targets, weights, smooth, 0.5, 0.5, apply_softmax, ignore_background, None)
    g = reduce_vjp(cotangent, reduction, 1)
    g = np.broadcast_to(g / max(losses.size, 1), losses.shape)  # an empty batch: nothing receives it
    return (_class_losses_vjp(g, predictions, targets, weights, smooth, 0.5, 0.5, apply_softmax,
                              ignore_background, None),)


# -- dice (Keras) ----------------------------------------------------------------------------

def dice(y_true, y_pred, axis=None, reduction="none"):
    r"""Keras's ``dice``: one minus the Dice coefficient, with Keras's epsilon.

    .. math:: \ell = 1 - \frac{2 \sum t\,p}{\sum t + \sum p + \epsilon}, \qquad \epsilon = 10^{-7}

    summed over ``axis``; Keras's default ``axis=None`` sums over every axis, batch and
    classes included, so the loss is one number. :math:`\epsilon` is Keras's
    ``backend.epsilon()`` (1e-7 by default; lossparity fixes it at 1e-7). No smoothing
    in the numerator, no activation: ``y_pred`` holds probabilities.
    """
    axes = keras_axes(y_pred.ndim, axis)
    intersection = (y_true * y_pred).sum(axis=axes)
    total = y_true.sum(axis=axes) + y_pred.sum(axis=axes) + KERAS_EPSILON
    return reduce(1.0 - 2.0 * intersection / total, reduction)


def dice_vjp(cotangent, y_true, y_pred, axis=None, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell}{\partial p_i} = -\frac{2}{S}\Bigl(t_i - \frac{\sum t p}{S}\Bigr),
              \qquad S = \sum t + \sum p + \epsilon

    ``y_true`` gets no gradient.
    """
    axes = keras_axes(y_pred.ndim, axis)
    intersection = (y_true * y_pred).sum(axis=axes, keepdims=True)
    total = y_true.sum(axis=axes, keepdims=True) + y_pred.sum(axis=axes, keepdims=True) + KERAS_EPSILON
    loss_shape = reduced_shape(y_pred.shape, axes)
    g = np.broadcast_to(reduce_vjp(cotangent, reduction, int(np.prod(loss_shape))), loss_shape)
    g = g.reshape(kept_shape(y_pred.shape, axes))
    return (-(2.0 * g / total) * (y_true - intersection / total),)


# -- tversky (Keras) -------------------------------------------------------------------------

def _keras_tversky_terms(y_true, y_pred, alpha, beta, axes, keepdims):
    intersection = (y_true * y_pred).sum(axis=axes, keepdims=keepdims)
    fp = ((1.0 - y_pred) * y_true).sum(axis=axes, keepdims=keepdims)
    fn = (y_pred * (1.0 - y_true)).sum(axis=axes, keepdims=keepdims)
    return intersection, intersection + fp * alpha + fn * beta + KERAS_EPSILON


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None, reduction="none"):
    r"""Keras's ``tversky``: one minus the Tversky index, with Keras's epsilon.

    .. math:: \ell = 1 - \frac{\sum t p}{\sum t p + \alpha \sum t (1 - p) + \beta \sum p (1 - t) + \epsilon},
              \qquad \epsilon = 10^{-7}

    over ``axis`` (default: every axis). Keras names :math:`\sum (1 - p) t` ``fp`` and
    weighs it with ``alpha`` (its docstring: "false positives"), though with ``y_true``
    as the ground truth it counts missed foreground, the false negatives; ``beta`` weighs
    :math:`\sum p (1 - t)`. optax's ``alpha`` weighs :math:`\sum p (1 - t)`: the two
    swap (see the spec's differences). :math:`\alpha = \beta = \tfrac12` is ``dice`` with
    :math:`2\epsilon` in place of :math:`\epsilon`.
    """
    axes = keras_axes(y_pred.ndim, axis)
    intersection, denominator = _keras_tversky_terms(y_true, y_pred, alpha, beta, axes, False)
    return reduce(1.0 - intersection / denominator, reduction)


def tversky_vjp(cotangent, y_true, y_pred, alpha=0.5, beta=0.5, axis=None, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell}{\partial p_i} = -\frac{1}{D}\Bigl(t_i - \frac{\sum t p}{D}
              \bigl((1 - \alpha) t_i + \beta (1 - t_i)\bigr)\Bigr)

    ``y_true`` gets no gradient.
    """
    axes = keras_axes(y_pred.ndim, axis)
    intersection, denominator = _keras_tversky_terms(y_true, y_pred, alpha, beta, axes, True)
    loss_shape = reduced_shape(y_pred.shape, axes)
    g = np.broadcast_to(reduce_vjp(cotangent, reduction, int(np.prod(loss_shape))), loss_shape)
    g = g.reshape(kept_shape(y_pred.shape, axes))
    ratio = intersection / denominator
    return (-(g / denominator) * (y_true - ratio * ((1.0 - alpha) * y_true + beta * (1.0 - y_true))),)


# -- samplers ------------------------------------------------------------------------------

def _targets(rng, shape, soft, absent_class):
    """One-hot labels along the last axis ({0, 1} masks when it has size 1), or soft targets:
    probabilities along it (U(0, 1) when it has size 1). ``absent_class`` never occurs."""
    num_classes = shape[-1]
    if num_classes == 1:
        return rng.uniform(0.0, 1.0, size=shape) if soft else (rng.random(shape) < 0.5).astype(np.float64)
    if soft:
        return rng.dirichlet(np.ones(num_classes), size=shape[:-1])
    classes = [c for c in range(num_classes) if c != absent_class]
    labels = np.asarray(classes)[rng.integers(len(classes), size=shape[:-1])]
    return np.eye(num_classes)[labels]


def _drop_channel(x, drop):
    return x[..., 0] if drop else x


def sample_segmentation(rng: np.random.Generator, shape=(2, 4, 4, 3), probabilities=False, soft_targets=False,
                        drop_channel=(), absent_class=None, absent_logit=None):
    """``predictions``: logits ~ N(0, 1) of ``shape`` (classes last), or with
    ``probabilities`` their softmax along the last axis (their sigmoid when it has size 1),
    strictly inside (0, 1); ``targets``: one-hot labels or {0, 1} masks, or soft targets.
    ``drop_channel`` names the inputs ("predictions", "targets") drawn without their
    trailing channel axis of size 1. ``absent_class`` occurs in no target; ``absent_logit``
    moves its logits by that much (-400: softmax probabilities of about 1e-174)."""
    shape = tuple(shape)
    x = rng.standard_normal(shape)
    if absent_logit is not None:
        x[..., absent_class] += absent_logit
    if probabilities:
        x = expit(x) if shape[-1] == 1 else softmax(x, axis=-1)
    t = _targets(rng, shape, soft_targets, absent_class)
    return _drop_channel(x, "predictions" in drop_channel), _drop_channel(t, "targets" in drop_channel)


def sample_binary(rng: np.random.Generator, shape=(2, 4, 4), probabilities=False, soft_targets=False, channel=()):
    """Binary inputs of ``shape`` (no channel axis): logits ~ N(0, 1), or with
    ``probabilities`` their sigmoid; targets {0, 1} masks or U(0, 1). ``channel`` names the
    inputs drawn with a trailing channel axis of size 1."""
    drop = tuple(n for n in ("predictions", "targets") if n not in channel)
    return sample_segmentation(rng, tuple(shape) + (1,), probabilities, soft_targets, drop)


def sample_keras(rng: np.random.Generator, shape=(2, 4, 4, 3), soft_targets=False):
    """``y_true``: one-hot labels along the last axis ({0, 1} masks when it has size 1) or soft
    targets; ``y_pred``: probabilities, the softmax of N(0, 1) logits along the last axis (the
    sigmoid when it has size 1). Keras's argument order: ``(y_true, y_pred)``."""
    predictions, targets = sample_segmentation(rng, shape, True, soft_targets)
    return targets, predictions


class_weights = Sampled("class_weights ~ U(0.1, 2), one per class",
                        lambda rng, inputs: rng.uniform(0.1, 2.0, size=inputs[0].shape[-1]))


# -- bad inputs ------------------------------------------------------------------------------

_PAIR_BAD_INPUTS = (
    BadInput("targets of another shape", replace_input(1, lambda xs: xs[1][..., :-1]), ValueError, "targets"),
    BadInput("targets that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "targets"),
    BadInput("integer predictions", replace_input(0, lambda xs: np.round(xs[0]).astype(np.int64)), TypeError,
             "predictions"),
    BadInput("integer targets", replace_input(1, lambda xs: xs[1].astype(np.int64)), TypeError, "targets"),
    BadInput("targets of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError, "targets"),
    BadInput("targets above 1", replace_input(1, lambda xs: xs[1] + 1.0), ValueError, "targets"),
    BadInput("negative targets", replace_input(1, lambda xs: xs[1] - 1.0), ValueError, "targets"),
    BadInput("negative smooth", set_param("smooth", lambda xs: -1.0), ValueError, "smooth"),
    BadInput("infinite smooth", set_param("smooth", lambda xs: float("inf")), ValueError, "smooth"),
    BadInput("0-d inputs", lambda xs, kw: ((xs[0].reshape(-1)[0], xs[1].reshape(-1)[0]), kw), ValueError,
             "predictions"),
)


def _probabilities_bad_inputs(flag):
    return (
        BadInput(f"predictions above 1 with {flag}=False",
                 lambda xs, kw: ((np.abs(xs[0]) + 1.0, xs[1]), {**kw, flag: False}), ValueError, "predictions"),
        BadInput(f"{flag} that is not a bool", set_param(flag, lambda xs: "yes"), TypeError, flag),
    )


DICE_LOSS_BAD_INPUTS = _PAIR_BAD_INPUTS + _probabilities_bad_inputs("apply_softmax") + (
    BadInput("class labels as targets (no class axis, C = 3)",
             replace_input(1, lambda xs: xs[1].argmax(-1).astype(np.float64) / 2.0), ValueError, "targets"),
    BadInput("class_weights of another length", set_param("class_weights", lambda xs: np.ones(xs[0].shape[-1] + 1)),
             ValueError, "class_weights"),
    BadInput("class_weights of rank 2", set_param("class_weights", lambda xs: np.ones((1, xs[0].shape[-1]))),
             ValueError, "class_weights"),
    BadInput("negative class_weights", set_param("class_weights", lambda xs: -np.ones(xs[0].shape[-1])),
             ValueError, "class_weights"),
    BadInput("integer class_weights", set_param("class_weights", lambda xs: np.ones(xs[0].shape[-1], np.int64)),
             TypeError, "class_weights"),
    BadInput("negative alpha", set_param("alpha", lambda xs: -0.5), ValueError, "alpha"),
    BadInput("negative beta", set_param("beta", lambda xs: -0.5), ValueError, "beta"),
    BadInput("unknown class_reduction", set_param("class_reduction", lambda xs: "max"), ValueError,
             "class_reduction"),
    BadInput("ignore_background that is not a bool", set_param("ignore_background", lambda xs: 1), TypeError,
             "ignore_background"),
    BadInput("axis over the class axis", set_param("axis", lambda xs: (1, 2, 3)), ValueError, "axis"),
    BadInput("axis -1 (the class axis)", set_param("axis", lambda xs: -1), ValueError, "axis"),
    BadInput("axis out of range", set_param("axis", lambda xs: (1, 7)), ValueError, "axis"),
    BadInput("axis repeated", set_param("axis", lambda xs: (1, -3)), ValueError, "axis"),
    BadInput("axis as a list", set_param("axis", lambda xs: [1, 2]), TypeError, "axis"),
)

BINARY_DICE_LOSS_BAD_INPUTS = _PAIR_BAD_INPUTS + _probabilities_bad_inputs("apply_sigmoid") + (
    BadInput("targets with a channel axis of size 2", replace_input(1, lambda xs: np.stack([xs[1], 1 - xs[1]], -1)),
             ValueError, "targets"),
)

GENERALIZED_BAD_INPUTS = _PAIR_BAD_INPUTS + _probabilities_bad_inputs("apply_softmax") + (
    BadInput("targets one dimension short (optax requires equal shapes here)",
             replace_input(1, lambda xs: xs[1][..., 0]), ValueError, "targets"),
    BadInput("ignore_background that is not a bool", set_param("ignore_background", lambda xs: "no"), TypeError,
             "ignore_background"),
)

KERAS_BAD_INPUTS = (
    BadInput("y_pred of another shape", replace_input(1, lambda xs: xs[1][..., :-1]), ValueError, "y_pred"),
    BadInput("y_pred that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "y_pred"),
    BadInput("integer y_pred", replace_input(1, lambda xs: np.round(xs[1]).astype(np.int64)), TypeError, "y_pred"),
    BadInput("integer y_true (Keras would cast it)", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError,
             "y_true"),
    BadInput("y_true of another dtype", replace_input(0, lambda xs: xs[0].astype(np.float32)), TypeError, "y_true"),
    BadInput("y_pred above 1", replace_input(1, lambda xs: xs[1] + 1.0), ValueError, "y_pred"),
    BadInput("negative y_pred", replace_input(1, lambda xs: xs[1] - 1.0), ValueError, "y_pred"),
    BadInput("y_true above 1", replace_input(0, lambda xs: xs[0] + 1.0), ValueError, "y_true"),
    BadInput("axis out of range", set_param("axis", lambda xs: 4), ValueError, "axis"),
    BadInput("axis repeated", set_param("axis", lambda xs: (1, 1)), ValueError, "axis"),
    BadInput("axis that is not an int", set_param("axis", lambda xs: 1.0), TypeError, "axis"),
)

TVERSKY_BAD_INPUTS = KERAS_BAD_INPUTS + (
    BadInput("negative alpha", set_param("alpha", lambda xs: -0.1), ValueError, "alpha"),
    BadInput("negative beta", set_param("beta", lambda xs: -0.1), ValueError, "beta"),
)


# -- registry --------------------------------------------------------------------------------

TINY_ABSENT_CLASS = "smooth=0, a class absent with probabilities of 1e-174"
_TINY_RATIO_NOTE = ("with smooth=0, a class that no target has and that the softmax gives probabilities of about "
                    "1e-174 has the ratio I / D = 0 / 1e-174; the derivative of a / b in b, a / b**2, needs "
                    "b**2 = 1e-348, past float64's range")

_KERAS_EPSILON_NOTE = ("Keras adds backend.epsilon() (1e-7) to the denominator only; optax adds smooth (1.0) to "
                       "numerator and denominator of its Tversky form")

register(LossSpec(
    name="dice_loss", family="segmentation", forward=dice_loss, vjp_fn=dice_loss_vjp,
    inputs=("predictions", "targets"), differentiable=("predictions",), sampler=sample_segmentation,
    check=check_dice_loss,
    cases=(Case("default"),
           Case("class_weights", {"class_weights": class_weights}),
           Case("smooth=0", {"smooth": 0.0}),
           Case("smooth=3", {"smooth": 3.0}),
           # A class that no target has and the softmax all but rules out: with smooth=0 its
           # ratio is 0 / 1e-174, whose square underflows (float64 only: in float32 the
           # probabilities are 0 and the ratio 0 / 0).
           Case(TINY_ABSENT_CLASS, {"smooth": 0.0},
                sample={"absent_class": 2, "absent_logit": -400.0}, dtypes=("float64",)),
           Case("alpha=0.3, beta=0.7 (Tversky)", {"alpha": 0.3, "beta": 0.7}),
           Case("alpha=beta=1 (Jaccard)", {"alpha": 1.0, "beta": 1.0}),
           Case("apply_softmax=False", {"apply_softmax": False}, sample={"probabilities": True}),
           Case("class_reduction=sum", {"class_reduction": "sum"}),
           Case("class_reduction=none", {"class_reduction": "none"}),
           Case("ignore_background", {"ignore_background": True}),
           Case("ignore_background, class_weights, class_reduction=none",
                {"ignore_background": True, "class_weights": class_weights, "class_reduction": "none"}),
           Case("axis=(1,)", {"axis": (1,)}),
           Case("axis=(0, 1, 2), batch pooled", {"axis": (0, 1, 2)}),
           Case("axis=-2", {"axis": -2}),
           Case("soft targets", sample={"soft_targets": True}),
           Case("binary [..., 1], sigmoid", sample={"shape": (2, 4, 4, 1)}),
           Case("binary, predictions without the channel axis",
                sample={"shape": (2, 4, 4, 1), "drop_channel": ("predictions",)}),
           Case("binary, targets without the channel axis",
                sample={"shape": (2, 4, 4, 1), "drop_channel": ("targets",)}),
           Case("binary [..., 1], apply_softmax=False", {"apply_softmax": False},
                sample={"shape": (2, 4, 4, 1), "probabilities": True}),
           Case("(N, C), per element", sample={"shape": (3, 3)})),
    array_params=("class_weights",), bad_inputs=DICE_LOSS_BAD_INPUTS,
    xfails=(XFail("the second derivative overflows: " + _TINY_RATIO_NOTE + ", and its Hessian has terms "
                  "1 / b**2 (1e348) times products of two probabilities (1e-348): NaN in every variant, finite in "
                  "the finite differences of the reference VJP", case=TINY_ABSENT_CLASS,
                  check=("gradgradcheck", "jax.hvp")),
            XFail("optax's gradient is NaN here (recorded as a Difference): " + _TINY_RATIO_NOTE,
                  case=TINY_ABSENT_CLASS, check="jax.builtin")),
    builtins={"optax": "optax.losses.dice_loss"},
    differences=(
        Difference("optax", "optax.losses.dice_loss(reduction=...)",
                   "optax's own `reduction` (default 'mean') reduces across the class axis; lossparity calls it "
                   "`class_reduction` and keeps `reduction` (default 'none') for reducing the per-example values "
                   "as every loss does",
                   "optax.losses.dice_loss(p, t, reduction=r, **kw) == dice_loss(p, t, class_reduction=r, **kw) "
                   "(reduction='none'); dice_loss(p, t, reduction='mean') == "
                   "optax.losses.dice_loss(p, t).mean()"),
        Difference("optax", "optax.losses.dice_loss(apply_softmax=False)",
                   "optax raises ValueError unless the predictions sum to 1 along the class axis (rtol 1e-5), "
                   "and under jax.jit cannot run the check at all (a concretization error); with one channel "
                   "[..., 1] that leaves only predictions equal to 1. lossparity checks that the predictions "
                   "are in [0, 1] and computes the same formula for any of them (finite differences and "
                   "jax.test_util.check_grads step off the simplex by up to 1e-4)",
                   "equal wherever optax accepts the predictions (they sum to 1 along the class axis)"),
        Difference("optax", "optax.losses.dice_loss(axis=...)",
                   "optax lets `axis` include the class axis; the per-example values then pool the classes and "
                   "optax's class reduction averages the last remaining axis (the batch); lossparity rejects an "
                   "axis over the class axis (ValueError), and an axis given as a list (TypeError: use a tuple, "
                   "which JAX's nondiff_argnums can hash)",
                   "optax.losses.dice_loss(p, t, axis=(1, 2, 3), reduction='none', smooth=0, apply_softmax=False) "
                   "== keras.losses.dice(t, p, axis=(1, 2, 3)) with keras.config.epsilon() set to 0; with "
                   "lossparity use dice(t, p, axis=(1, 2, 3)) for class-pooled Dice"),
        Difference("keras", "keras.losses.dice",
                   "optax applies softmax (sigmoid for one channel) and computes Dice per class over the spatial "
                   "axes then averages the classes; Keras takes probabilities and sums over `axis` (default "
                   "every axis, one value per batch). " + _KERAS_EPSILON_NOTE,
                   "keras.losses.dice(t, softmax(x), axis=(1, 2)) == optax.losses.dice_loss(x, t, smooth=0, "
                   "reduction='none') exactly with keras.config.epsilon() = 0; with Keras's 1e-7 the two differ "
                   "by 2 I 1e-7 / ((P + T)(P + T + 1e-7)) <= 1e-7 / (P + T)"),
        Difference("optax", "optax.losses.dice_loss(smooth=s)",
                   "smooth enters the Tversky form (I + s) / (I + a FP + b FN + s); in the usual Dice form "
                   "(2 I + s') / (P + T + s') (MONAI's smooth_nr = smooth_dr) it is s' = 2 s",
                   "1 - dice_loss(p, t, smooth=s, apply_softmax=False, class_reduction='none') == "
                   "(2 I + 2 s) / (P + T + 2 s) per class"),
        Difference("optax", "optax.losses.dice_loss(smooth=0)",
                   "its gradient is NaN where " + _TINY_RATIO_NOTE[5:] + " (JAX computes a * b**-2: 0 * inf); the value "
                   "is right and lossparity's gradient finite (its autodiff variant differentiates the ratio as "
                   "(da - (a / b) db) / b, as torch does)",
                   "equal values; where optax's gradient is NaN, use jax_impl.get('dice_loss', ...) or smooth > 0"),
        Difference("keras", "keras.losses.tversky(alpha, beta)",
                   "Keras weighs sum(t (1 - p)) (missed foreground) with alpha and sum(p (1 - t)) with beta; "
                   "optax weighs P - I = sum(p (1 - t)) (false positives) with alpha and T - I with beta",
                   "keras.losses.tversky(t, p, alpha=a, beta=b, axis=(1, 2)) == optax.losses.dice_loss(p, t, "
                   "alpha=b, beta=a, smooth=0, apply_softmax=False, reduction='none') with "
                   "keras.config.epsilon() = 0"),
    ),
))

register(LossSpec(
    name="binary_dice_loss", family="segmentation", forward=binary_dice_loss, vjp_fn=binary_dice_loss_vjp,
    inputs=("predictions", "targets"), differentiable=("predictions",), sampler=sample_binary,
    check=check_binary_dice_loss,
    cases=(Case("default"),
           Case("[..., 1] channel", sample={"channel": ("predictions", "targets")}),
           Case("predictions [...], targets [..., 1]", sample={"channel": ("targets",)}),
           Case("predictions [..., 1], targets [...]", sample={"channel": ("predictions",)}),
           Case("smooth=0", {"smooth": 0.0}),
           Case("smooth=3", {"smooth": 3.0}),
           Case("apply_sigmoid=False", {"apply_sigmoid": False}, sample={"probabilities": True}),
           Case("soft targets", sample={"soft_targets": True}),
           Case("(N,), per element", sample={"shape": (3,)})),
    bad_inputs=BINARY_DICE_LOSS_BAD_INPUTS,
    builtins={"optax": "optax.losses.binary_dice_loss"},
    differences=(
        Difference("optax", "optax.losses.binary_dice_loss(apply_sigmoid=False)",
                   "optax passes apply_sigmoid to dice_loss's apply_softmax, whose check wants the predictions "
                   "to sum to 1 along the class axis; that axis has size 1 here, so optax 0.2.8 raises "
                   "ValueError for any probabilities other than 1. lossparity takes probabilities in [0, 1]",
                   "binary_dice_loss(p, t, apply_sigmoid=False) == optax.losses.binary_dice_loss(logit(p), t)"),
        Difference("optax", "optax.losses.dice_loss",
                   "binary_dice_loss is dice_loss on one sigmoid channel with optax's class 'mean' (a no-op)",
                   "binary_dice_loss(x, t, smooth=s) == optax.losses.dice_loss(x[..., None], t[..., None], "
                   "smooth=s) for inputs [...] without a channel axis"),
    ),
))

register(LossSpec(
    name="multiclass_generalized_dice_loss", family="segmentation", forward=multiclass_generalized_dice_loss,
    vjp_fn=multiclass_generalized_dice_loss_vjp,
    inputs=("predictions", "targets"), differentiable=("predictions",), sampler=sample_segmentation,
    check=check_generalized_dice_loss,
    cases=(Case("default"),
           Case("smooth=0", {"smooth": 0.0}),
           Case("smooth=3", {"smooth": 3.0}),
           Case("apply_softmax=False", {"apply_softmax": False}, sample={"probabilities": True}),
           Case("ignore_background", {"ignore_background": True}),
           # float16 cannot hold its weight 1 / (0 + 1e-7) (above 65504): inf / inf, in optax too
           Case("a class absent from the batch", sample={"absent_class": 2}, dtypes=("float64", "float32", "bfloat16")),
           Case("soft targets", sample={"soft_targets": True}),
           Case("binary [..., 1], sigmoid", sample={"shape": (2, 4, 4, 1)})),
    bad_inputs=GENERALIZED_BAD_INPUTS,
    builtins={"optax": "optax.losses.multiclass_generalized_dice_loss"},
    differences=(
        Difference("optax", "optax.losses.dice_loss",
                   "the generalized loss is dice_loss with class weights w = C u / sum(u), u = 1 / (f^2 + 1e-7), "
                   "f the per-class target sums over the whole batch, averaged over batch and classes; with "
                   "ignore_background the weights are still normalized over all C classes",
                   "multiclass_generalized_dice_loss(p, t, **kw) == optax.losses.dice_loss(p, t, "
                   "class_weights=w(t), reduction='none', **kw).mean()"),
        Difference("paper", "Sudre et al. 2017 (generalised Dice, as in MONAI's GeneralizedDiceLoss)",
                   "the paper divides weighted sums, 1 - 2 sum_c w_c I_c / sum_c w_c (P_c + T_c); optax averages "
                   "weighted per-class losses, mean_c w_c (1 - (2 I_c + 2 s) / (P_c + T_c + 2 s)), with w "
                   "normalized to mean 1",
                   "not equal in general; equal to the paper's form only when one class has all the weight"),
    ),
))

register(LossSpec(
    name="dice", family="segmentation", forward=dice, vjp_fn=dice_vjp,
    inputs=("y_true", "y_pred"), differentiable=("y_pred",), sampler=sample_keras, check=check_keras,
    cases=(Case("default"),
           Case("axis=(1, 2, 3), per example", {"axis": (1, 2, 3)}),
           Case("axis=(1, 2), per example and class", {"axis": (1, 2)}),
           Case("axis=-1", {"axis": -1}),
           Case("soft targets, axis=(1, 2)", {"axis": (1, 2)}, sample={"soft_targets": True}),
           Case("binary (N, H, W, 1)", {"axis": (1, 2, 3)}, sample={"shape": (2, 4, 4, 1)})),
    bad_inputs=KERAS_BAD_INPUTS,
    builtins={"keras": "keras.losses.dice"},
    differences=(
        Difference("keras", "keras.losses.Dice",
                   "the Keras class reduces the values of keras.losses.dice with 'sum_over_batch_size' (a plain "
                   "mean over the values, whatever their shape) by default",
                   "keras.losses.Dice(axis=a)(t, p) == dice(t, p, axis=a, reduction='mean')"),
        Difference("keras", "keras.losses.dice(y_true=int)",
                   "Keras casts y_true to y_pred's dtype, so integer or boolean labels are accepted; lossparity "
                   "requires y_true floating with y_pred's dtype",
                   "keras.losses.dice(labels, p) == dice(labels.astype(p.dtype), p)"),
        Difference("optax", "optax.losses.dice_loss",
                   _KERAS_EPSILON_NOTE + "; optax applies softmax and averages per-class losses",
                   "with keras.config.epsilon() = 0: keras.losses.dice(t, softmax(x), axis=(1, 2)) == "
                   "optax.losses.dice_loss(x, t, smooth=0, reduction='none')"),
    ),
))

register(LossSpec(
    name="tversky", family="segmentation", forward=tversky, vjp_fn=tversky_vjp,
    inputs=("y_true", "y_pred"), differentiable=("y_pred",), sampler=sample_keras, check=check_keras,
    cases=(Case("default"),
           Case("alpha=0.3, beta=0.7", {"alpha": 0.3, "beta": 0.7}),
           Case("alpha=0.7, beta=0.3, axis=(1, 2, 3)", {"alpha": 0.7, "beta": 0.3, "axis": (1, 2, 3)}),
           Case("alpha=beta=1 (Jaccard), axis=(1, 2)", {"alpha": 1.0, "beta": 1.0, "axis": (1, 2)}),
           Case("axis=-1", {"axis": -1}),
           Case("soft targets, axis=(1, 2)", {"axis": (1, 2)}, sample={"soft_targets": True})),
    bad_inputs=TVERSKY_BAD_INPUTS,
    builtins={"keras": "keras.losses.tversky"},
    differences=(
        Difference("keras", "keras.losses.dice",
                   "Keras says tversky with alpha = beta = 0.5 is Dice; it is, up to the epsilon: 1 - I / "
                   "(0.5 (P + T) + e) = 1 - 2 I / (P + T + 2 e)",
                   "keras.losses.tversky(t, p, 0.5, 0.5, axis=a) with epsilon e == keras.losses.dice(t, p, "
                   "axis=a) with epsilon 2 e (keras.config.set_epsilon)"),
        Difference("optax", "optax.losses.dice_loss(alpha, beta)",
                   "Keras's alpha weighs sum(t (1 - p)), optax's alpha weighs sum(p (1 - t)): the two swap. "
                   + _KERAS_EPSILON_NOTE,
                   "with keras.config.epsilon() = 0: keras.losses.tversky(t, p, alpha=a, beta=b, axis=(1, 2)) "
                   "== optax.losses.dice_loss(p, t, alpha=b, beta=a, smooth=0, apply_softmax=False, "
                   "reduction='none')"),
    ),
))
