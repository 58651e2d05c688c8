"""Margin losses in JAX: margin_ranking_loss, hinge_embedding_loss, soft_margin_loss,
multilabel_soft_margin_loss, multilabel_margin_loss, multi_margin_loss; then optax's and
Keras's hinge-type losses: hinge_loss, perceptron_loss, sparsemax_loss, multiclass_hinge_loss,
multiclass_perceptron_loss, multiclass_sparsemax_loss, squared_hinge, categorical_hinge.

Each loss reads as in ``reference/margin.py``: a jax.numpy function (the
``autodiff`` variant) and a ``jax.custom_vjp`` whose backward is the reference's VJP.
Class indices become one-hot masks by comparison with ``arange(C)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from reference.reductions import reduce, reduce_vjp
from .core import autodiff, builtin, custom_vjp, keras


def _per_sample_count(input) -> int:
    return math.prod(input.shape[:-1])


# -- margin_ranking_loss -----------------------------------------------------------

def margin_ranking_loss(input1, input2, target, margin=0.0, reduction="mean"):
    return reduce(jnp.maximum(0.0, -target * (input1 - input2) + margin), reduction)


def _margin_ranking_loss_fwd(input1, input2, target, margin, reduction):
    return margin_ranking_loss(input1, input2, target, margin, reduction), (input1, input2, target)


def _margin_ranking_loss_bwd(margin, reduction, residuals, cotangent):
    input1, input2, target = residuals
    g = reduce_vjp(cotangent, reduction, input1.size)
    active = -target * (input1 - input2) + margin > 0
    d_input1 = jnp.where(active, -target, 0.0) * g
    return d_input1, -d_input1, None


margin_ranking_loss_custom_vjp = jax.custom_vjp(margin_ranking_loss, nondiff_argnums=(3, 4))
margin_ranking_loss_custom_vjp.defvjp(_margin_ranking_loss_fwd, _margin_ranking_loss_bwd)
autodiff("margin_ranking_loss", margin_ranking_loss)
custom_vjp("margin_ranking_loss", margin_ranking_loss_custom_vjp, _margin_ranking_loss_fwd, _margin_ranking_loss_bwd)


# -- hinge_embedding_loss ----------------------------------------------------------

def hinge_embedding_loss(input, target, margin=1.0, reduction="mean"):
    return reduce(jnp.where(target == 1, input, jnp.maximum(0.0, margin - input)), reduction)


def _hinge_embedding_loss_fwd(input, target, margin, reduction):
    return hinge_embedding_loss(input, target, margin, reduction), (input, target)


def _hinge_embedding_loss_bwd(margin, reduction, residuals, cotangent):
    input, target = residuals
    g = reduce_vjp(cotangent, reduction, input.size)
    slope = jnp.where(target == 1, 1.0, jnp.where(margin - input > 0, -1.0, 0.0))
    # The target (+1 or -1) only selects a branch: its derivative is 0 wherever it has one.
    return slope.astype(input.dtype) * g, jnp.zeros_like(target)


hinge_embedding_loss_custom_vjp = jax.custom_vjp(hinge_embedding_loss, nondiff_argnums=(2, 3))
hinge_embedding_loss_custom_vjp.defvjp(_hinge_embedding_loss_fwd, _hinge_embedding_loss_bwd)
autodiff("hinge_embedding_loss", hinge_embedding_loss)
custom_vjp("hinge_embedding_loss", hinge_embedding_loss_custom_vjp, _hinge_embedding_loss_fwd,
           _hinge_embedding_loss_bwd)


# -- soft_margin_loss --------------------------------------------------------------

def soft_margin_loss(input, target, reduction="mean"):
    return reduce(-jax.nn.log_sigmoid(target * input), reduction)


def _soft_margin_loss_fwd(input, target, reduction):
    return soft_margin_loss(input, target, reduction), (input, target)


def _soft_margin_loss_bwd(reduction, residuals, cotangent):
    input, target = residuals
    g = reduce_vjp(cotangent, reduction, input.size)
    return -target * jax.nn.sigmoid(-target * input) * g, None


soft_margin_loss_custom_vjp = jax.custom_vjp(soft_margin_loss, nondiff_argnums=(2,))
soft_margin_loss_custom_vjp.defvjp(_soft_margin_loss_fwd, _soft_margin_loss_bwd)
autodiff("soft_margin_loss", soft_margin_loss)
custom_vjp("soft_margin_loss", soft_margin_loss_custom_vjp, _soft_margin_loss_fwd, _soft_margin_loss_bwd)


# -- multilabel_soft_margin_loss ---------------------------------------------------

def multilabel_soft_margin_loss(input, target, weight=None, reduction="mean"):
    elementwise = -(target * jax.nn.log_sigmoid(input) + (1.0 - target) * jax.nn.log_sigmoid(-input))
    if weight is not None:
        elementwise = elementwise * weight
    return reduce(elementwise.sum(-1) / input.shape[-1], reduction)


def _multilabel_soft_margin_loss_fwd(input, target, weight, reduction):
    return multilabel_soft_margin_loss(input, target, weight, reduction), (input, target, weight)


def _multilabel_soft_margin_loss_bwd(reduction, residuals, cotangent):
    input, target, weight = residuals
    g = jnp.expand_dims(reduce_vjp(cotangent, reduction, _per_sample_count(input)), -1)
    d_input = (jax.nn.sigmoid(input) - target) / input.shape[-1]
    if weight is not None:
        d_input = d_input * weight
    return d_input * g, None, None


multilabel_soft_margin_loss_custom_vjp = jax.custom_vjp(multilabel_soft_margin_loss, nondiff_argnums=(3,))
multilabel_soft_margin_loss_custom_vjp.defvjp(_multilabel_soft_margin_loss_fwd, _multilabel_soft_margin_loss_bwd)
autodiff("multilabel_soft_margin_loss", multilabel_soft_margin_loss)
custom_vjp("multilabel_soft_margin_loss", multilabel_soft_margin_loss_custom_vjp, _multilabel_soft_margin_loss_fwd,
           _multilabel_soft_margin_loss_bwd)


# -- multilabel_margin_loss --------------------------------------------------------

def _multilabel_hinges(input, target):
    """Hinge arguments ``1 - x[t_k] + x[i]`` (..., K, C), the pairs that count, and the
    one-hot of the listed targets (..., K, C); as ``reference.margin._multilabel_hinges``."""
    classes = jnp.arange(input.shape[-1])
    listed = jnp.cumprod((target >= 0).astype(jnp.int32), axis=-1).astype(bool)
    onehot = (target[..., :, None] == classes) & listed[..., :, None]
    is_target = onehot.any(axis=-2)
    x_target = jnp.take_along_axis(input, jnp.where(listed, target, 0), axis=-1)
    z = 1.0 - x_target[..., :, None] + input[..., None, :]
    counted = listed[..., :, None] & ~is_target[..., None, :]
    return z, counted, onehot


def multilabel_margin_loss(input, target, reduction="mean"):
    z, counted, _ = _multilabel_hinges(input, target)
    per_sample = jnp.where(counted, jnp.maximum(z, 0.0), 0.0).sum(axis=(-2, -1)) / input.shape[-1]
    return reduce(per_sample, reduction)


def _multilabel_margin_loss_fwd(input, target, reduction):
    return multilabel_margin_loss(input, target, reduction), (input, target)


def _multilabel_margin_loss_bwd(reduction, residuals, cotangent):
    input, target = residuals
    z, counted, onehot = _multilabel_hinges(input, target)
    g = jnp.expand_dims(reduce_vjp(cotangent, reduction, _per_sample_count(input)), -1)
    active = (counted & (z > 0)).astype(input.dtype)
    d_input = active.sum(-2) - (onehot.astype(input.dtype) * active.sum(-1, keepdims=True)).sum(-2)
    return d_input / input.shape[-1] * g, None


multilabel_margin_loss_custom_vjp = jax.custom_vjp(multilabel_margin_loss, nondiff_argnums=(2,))
multilabel_margin_loss_custom_vjp.defvjp(_multilabel_margin_loss_fwd, _multilabel_margin_loss_bwd)
autodiff("multilabel_margin_loss", multilabel_margin_loss)
custom_vjp("multilabel_margin_loss", multilabel_margin_loss_custom_vjp, _multilabel_margin_loss_fwd,
           _multilabel_margin_loss_bwd)


# -- multi_margin_loss -------------------------------------------------------------

def _multi_margin_hinges(input, target, margin):
    x_target = jnp.take_along_axis(input, target[..., None], axis=-1)
    return margin - x_target + input, target[..., None] != jnp.arange(input.shape[-1])


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    z, wrong = _multi_margin_hinges(input, target, margin)
    h = jnp.where(wrong, jnp.maximum(z, 0.0), 0.0)
    per_sample = (h if p == 1 else h * h).sum(-1) / input.shape[-1]
    if weight is not None:
        per_sample = per_sample * weight[target]
    return reduce(per_sample, reduction)


def _multi_margin_loss_fwd(input, target, p, margin, weight, reduction):
    return multi_margin_loss(input, target, p, margin, weight, reduction), (input, target, weight)


def _multi_margin_loss_bwd(p, margin, reduction, residuals, cotangent):
    input, target, weight = residuals
    z, wrong = _multi_margin_hinges(input, target, margin)
    slope = jnp.where(wrong & (z > 0), 1.0 if p == 1 else 2.0 * z, 0.0).astype(input.dtype)
    d_input = slope - jnp.where(wrong, 0.0, slope.sum(-1, keepdims=True))
    g = reduce_vjp(cotangent, reduction, target.size)
    if weight is not None:
        g = g * weight[target]
    return d_input / input.shape[-1] * jnp.expand_dims(g, -1), None, None


multi_margin_loss_custom_vjp = jax.custom_vjp(multi_margin_loss, nondiff_argnums=(2, 3, 5))
multi_margin_loss_custom_vjp.defvjp(_multi_margin_loss_fwd, _multi_margin_loss_bwd)
autodiff("multi_margin_loss", multi_margin_loss)
custom_vjp("multi_margin_loss", multi_margin_loss_custom_vjp, _multi_margin_loss_fwd, _multi_margin_loss_bwd)


# -- the built-ins, the outside oracle ---------------------------------------------

def _optax_perceptron_margin_ranking(input1, input2, target, margin=0.0, reduction="mean"):
    """margin_ranking_loss == perceptron_loss(x1 - x2 - margin * y, y) for y in {-1, 1}."""
    import optax
    return reduce(optax.losses.perceptron_loss(input1 - input2 - margin * target, target), reduction)


def _optax_sigmoid_bce_soft_margin(input, target, reduction="mean"):
    """soft_margin_loss == sigmoid_binary_cross_entropy(x, (1 + y) / 2)."""
    import optax
    return reduce(optax.losses.sigmoid_binary_cross_entropy(input, (1.0 + target) / 2.0), reduction)


def _optax_sigmoid_bce_multilabel(input, target, weight=None, reduction="mean"):
    """multilabel_soft_margin_loss == (w * sigmoid_binary_cross_entropy(x, y)).mean(-1)."""
    import optax
    elementwise = optax.losses.sigmoid_binary_cross_entropy(input, target)
    if weight is not None:
        elementwise = elementwise * weight
    return reduce(elementwise.mean(axis=-1), reduction)


builtin("margin_ranking_loss", _optax_perceptron_margin_ranking)
builtin("soft_margin_loss", _optax_sigmoid_bce_soft_margin)
builtin("multilabel_soft_margin_loss", _optax_sigmoid_bce_multilabel)


# ==================================================================================
# Part 2: optax's and Keras's hinge-type losses (reduction="none" by default), as in
# reference/margin.py.
# ==================================================================================

def _onehot(labels, num_classes, dtype):
    return (labels[..., None] == jnp.arange(num_classes)).astype(dtype)


def _take_label(scores, labels):
    return jnp.take_along_axis(scores, labels[..., None], axis=-1)[..., 0]


# -- hinge_loss --------------------------------------------------------------------

def hinge_loss(predictor_outputs, targets, reduction="none"):
    return reduce(jnp.maximum(0.0, 1.0 - predictor_outputs * targets), reduction)


def _hinge_loss_fwd(predictor_outputs, targets, reduction):
    return hinge_loss(predictor_outputs, targets, reduction), (predictor_outputs, targets)


def _hinge_loss_bwd(reduction, residuals, cotangent):
    x, y = residuals
    g = reduce_vjp(cotangent, reduction, x.size)
    return jnp.where(1.0 - x * y > 0, -y, 0.0) * g, None


hinge_loss_custom_vjp = jax.custom_vjp(hinge_loss, nondiff_argnums=(2,))
hinge_loss_custom_vjp.defvjp(_hinge_loss_fwd, _hinge_loss_bwd)
autodiff("hinge_loss", hinge_loss)
custom_vjp("hinge_loss", hinge_loss_custom_vjp, _hinge_loss_fwd, _hinge_loss_bwd)


# -- perceptron_loss ---------------------------------------------------------------

def perceptron_loss(predictor_outputs, targets, reduction="none"):
    return reduce(jnp.maximum(0.0, -predictor_outputs * targets), reduction)


def _perceptron_loss_fwd(predictor_outputs, targets, reduction):
    return perceptron_loss(predictor_outputs, targets, reduction), (predictor_outputs, targets)


def _perceptron_loss_bwd(reduction, residuals, cotangent):
    x, y = residuals
    g = reduce_vjp(cotangent, reduction, x.size)
    return jnp.where(-x * y > 0, -y, 0.0) * g, None


perceptron_loss_custom_vjp = jax.custom_vjp(perceptron_loss, nondiff_argnums=(2,))
perceptron_loss_custom_vjp.defvjp(_perceptron_loss_fwd, _perceptron_loss_bwd)
autodiff("perceptron_loss", perceptron_loss)
custom_vjp("perceptron_loss", perceptron_loss_custom_vjp, _perceptron_loss_fwd, _perceptron_loss_bwd)


# -- sparsemax_loss ----------------------------------------------------------------

def sparsemax_loss(logits, labels, reduction="none"):
    u = jnp.where(labels.astype(bool), -logits, logits)
    return reduce(jnp.where(u <= -1.0, 0.0, jnp.where(u >= 1.0, u, (u + 1.0) ** 2 / 4.0)), reduction)


def _sparsemax_loss_fwd(logits, labels, reduction):
    return sparsemax_loss(logits, labels, reduction), (logits, labels)


def _sparsemax_loss_bwd(reduction, residuals, cotangent):
    logits, labels = residuals
    g = reduce_vjp(cotangent, reduction, logits.size)
    sparse_sigmoid = jnp.clip((logits + 1.0) / 2.0, 0.0, 1.0)
    return (sparse_sigmoid - labels.astype(logits.dtype)) * g, None


sparsemax_loss_custom_vjp = jax.custom_vjp(sparsemax_loss, nondiff_argnums=(2,))
sparsemax_loss_custom_vjp.defvjp(_sparsemax_loss_fwd, _sparsemax_loss_bwd)
autodiff("sparsemax_loss", sparsemax_loss)
custom_vjp("sparsemax_loss", sparsemax_loss_custom_vjp, _sparsemax_loss_fwd, _sparsemax_loss_bwd)


# -- multiclass_hinge_loss ---------------------------------------------------------

def multiclass_hinge_loss(scores, labels, reduction="none"):
    z = scores + 1.0 - _onehot(labels, scores.shape[-1], scores.dtype)
    return reduce(z.max(-1) - _take_label(scores, labels), reduction)


def _multiclass_hinge_loss_fwd(scores, labels, reduction):
    return multiclass_hinge_loss(scores, labels, reduction), (scores, labels)


def _multiclass_hinge_loss_bwd(reduction, residuals, cotangent):
    scores, labels = residuals
    num_classes = scores.shape[-1]
    onehot = _onehot(labels, num_classes, scores.dtype)
    winner = _onehot(jnp.argmax(scores + 1.0 - onehot, axis=-1), num_classes, scores.dtype)
    g = reduce_vjp(cotangent, reduction, _per_sample_count(scores))
    return (winner - onehot) * jnp.expand_dims(g, -1), None


multiclass_hinge_loss_custom_vjp = jax.custom_vjp(multiclass_hinge_loss, nondiff_argnums=(2,))
multiclass_hinge_loss_custom_vjp.defvjp(_multiclass_hinge_loss_fwd, _multiclass_hinge_loss_bwd)
autodiff("multiclass_hinge_loss", multiclass_hinge_loss)
custom_vjp("multiclass_hinge_loss", multiclass_hinge_loss_custom_vjp, _multiclass_hinge_loss_fwd,
           _multiclass_hinge_loss_bwd)


# -- multiclass_perceptron_loss ----------------------------------------------------

def multiclass_perceptron_loss(scores, labels, reduction="none"):
    return reduce(scores.max(-1) - _take_label(scores, labels), reduction)


def _multiclass_perceptron_loss_fwd(scores, labels, reduction):
    return multiclass_perceptron_loss(scores, labels, reduction), (scores, labels)


def _multiclass_perceptron_loss_bwd(reduction, residuals, cotangent):
    scores, labels = residuals
    num_classes = scores.shape[-1]
    winner = _onehot(jnp.argmax(scores, axis=-1), num_classes, scores.dtype)
    g = reduce_vjp(cotangent, reduction, _per_sample_count(scores))
    return (winner - _onehot(labels, num_classes, scores.dtype)) * jnp.expand_dims(g, -1), None


multiclass_perceptron_loss_custom_vjp = jax.custom_vjp(multiclass_perceptron_loss, nondiff_argnums=(2,))
multiclass_perceptron_loss_custom_vjp.defvjp(_multiclass_perceptron_loss_fwd, _multiclass_perceptron_loss_bwd)
autodiff("multiclass_perceptron_loss", multiclass_perceptron_loss)
custom_vjp("multiclass_perceptron_loss", multiclass_perceptron_loss_custom_vjp, _multiclass_perceptron_loss_fwd,
           _multiclass_perceptron_loss_bwd)


# -- multiclass_sparsemax_loss -----------------------------------------------------

def sparsemax(z):
    """The projection of each row onto the probability simplex, as ``reference.margin.sparsemax``."""
    z_sorted = jnp.sort(z, axis=-1)[..., ::-1]
    cssv = jnp.cumsum(z_sorted, axis=-1) - 1.0
    rank = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    k = jnp.maximum((z_sorted - cssv / rank > 0).sum(-1, keepdims=True), 1)  # a NaN row: k = 1, tau NaN
    tau = jnp.take_along_axis(cssv, k - 1, axis=-1) / k.astype(z.dtype)
    return jnp.maximum(z - tau, 0.0)


def multiclass_sparsemax_loss(scores, labels, reduction="none"):
    p = sparsemax(scores)
    shifted = jnp.where(p > 0, scores - _take_label(scores, labels)[..., None], 0.0)
    return reduce((p * shifted).sum(-1) + 0.5 * (1.0 - (p * p).sum(-1)), reduction)


def _multiclass_sparsemax_loss_fwd(scores, labels, reduction):
    return multiclass_sparsemax_loss(scores, labels, reduction), (scores, labels)


def _multiclass_sparsemax_loss_bwd(reduction, residuals, cotangent):
    scores, labels = residuals
    g = reduce_vjp(cotangent, reduction, _per_sample_count(scores))
    d_scores = sparsemax(scores) - _onehot(labels, scores.shape[-1], scores.dtype)
    return d_scores * jnp.expand_dims(g, -1), None


multiclass_sparsemax_loss_custom_vjp = jax.custom_vjp(multiclass_sparsemax_loss, nondiff_argnums=(2,))
multiclass_sparsemax_loss_custom_vjp.defvjp(_multiclass_sparsemax_loss_fwd, _multiclass_sparsemax_loss_bwd)
autodiff("multiclass_sparsemax_loss", multiclass_sparsemax_loss)
custom_vjp("multiclass_sparsemax_loss", multiclass_sparsemax_loss_custom_vjp, _multiclass_sparsemax_loss_fwd,
           _multiclass_sparsemax_loss_bwd)


# -- squared_hinge (Keras) ---------------------------------------------------------

def keras_hinge_labels(y_true):
    """Keras's {0, 1} -> {-1, 1} conversion, decided over the whole array."""
    is_binary = jnp.all((y_true == 0) | (y_true == 1))
    return jnp.where(is_binary, 2.0 * y_true - 1.0, y_true)


def squared_hinge(y_true, y_pred, reduction="none"):
    y = keras_hinge_labels(y_true.astype(y_pred.dtype))
    h = jnp.maximum(0.0, 1.0 - y * y_pred)
    return reduce((h * h).mean(-1), reduction)


def _squared_hinge_fwd(y_true, y_pred, reduction):
    return squared_hinge(y_true, y_pred, reduction), (y_true, y_pred)


def _squared_hinge_bwd(reduction, residuals, cotangent):
    y_true, y_pred = residuals
    y = keras_hinge_labels(y_true.astype(y_pred.dtype))
    h = jnp.maximum(0.0, 1.0 - y * y_pred)
    g = reduce_vjp(cotangent, reduction, _per_sample_count(y_pred))
    return None, -2.0 * y * h / y_pred.shape[-1] * jnp.expand_dims(g, -1)


squared_hinge_custom_vjp = jax.custom_vjp(squared_hinge, nondiff_argnums=(2,))
squared_hinge_custom_vjp.defvjp(_squared_hinge_fwd, _squared_hinge_bwd)
autodiff("squared_hinge", squared_hinge)
custom_vjp("squared_hinge", squared_hinge_custom_vjp, _squared_hinge_fwd, _squared_hinge_bwd)


# -- categorical_hinge (Keras) -----------------------------------------------------

def categorical_hinge(y_true, y_pred, reduction="none"):
    y = y_true.astype(y_pred.dtype)
    pos = (y * y_pred).sum(-1)
    neg = ((1.0 - y) * y_pred).max(-1)
    return reduce(jnp.maximum(neg - pos + 1.0, 0.0), reduction)


def _categorical_hinge_fwd(y_true, y_pred, reduction):
    return categorical_hinge(y_true, y_pred, reduction), (y_true, y_pred)


def _categorical_hinge_bwd(reduction, residuals, cotangent):
    y_true, y_pred = residuals
    y = y_true.astype(y_pred.dtype)
    candidates = (1.0 - y) * y_pred
    active = (candidates.max(-1) - (y * y_pred).sum(-1) + 1.0 > 0)[..., None]
    winner = _onehot(jnp.argmax(candidates, axis=-1), y_pred.shape[-1], y_pred.dtype)
    g = reduce_vjp(cotangent, reduction, _per_sample_count(y_pred))
    return None, jnp.where(active, (1.0 - y) * winner - y, 0.0) * jnp.expand_dims(g, -1)


categorical_hinge_custom_vjp = jax.custom_vjp(categorical_hinge, nondiff_argnums=(2,))
categorical_hinge_custom_vjp.defvjp(_categorical_hinge_fwd, _categorical_hinge_bwd)
autodiff("categorical_hinge", categorical_hinge)
custom_vjp("categorical_hinge", categorical_hinge_custom_vjp, _categorical_hinge_fwd, _categorical_hinge_bwd)


# -- the built-ins (part 2): optax's and Keras's own losses ------------------------

def _optax(name: str):
    def adapter(x, labels, reduction="none"):
        import optax
        return reduce(getattr(optax.losses, name)(x, labels), reduction)
    adapter.__name__ = f"optax_{name}"
    adapter.__doc__ = f"optax.losses.{name}, reduced as lossparity reduces."
    return adapter


def _keras(name: str):
    def adapter(y_true, y_pred, reduction="none"):
        return reduce(getattr(keras().losses, name)(y_true, y_pred), reduction)
    adapter.__name__ = f"keras_{name}"
    adapter.__doc__ = (f"keras.losses.{name} on the JAX backend (float64 in, float64 out), "
                       "reduced as lossparity reduces.")
    return adapter


for _name in ("hinge_loss", "perceptron_loss", "sparsemax_loss", "multiclass_hinge_loss",
              "multiclass_perceptron_loss", "multiclass_sparsemax_loss"):
    builtin(_name, _optax(_name))
for _name in ("squared_hinge", "categorical_hinge"):
    builtin(_name, _keras(_name))
