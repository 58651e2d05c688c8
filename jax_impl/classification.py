"""Classification losses in JAX: cross_entropy, nll_loss, binary_cross_entropy,
binary_cross_entropy_with_logits, kl_div.

Each loss reads as in ``reference/classification.py``: a jax.numpy function (the
``autodiff`` variant) and a ``jax.custom_vjp`` whose backward is the reference's VJP.
The backwards of cross_entropy and nll_loss are softmax minus the effective targets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from reference.reductions import reduce, reduce_vjp
from .core import autodiff, builtin, custom_vjp

LOG_CLAMP = -100.0  # torch clamps each log of binary_cross_entropy at -100


# -- shared helpers ----------------------------------------------------------------

def _class_dim(input) -> int:
    return 0 if input.ndim == 1 else 1


def _along_class(v, input):
    shape = [1] * input.ndim
    shape[_class_dim(input)] = -1
    return v.reshape(shape)


def _class_index_terms(input, target, weight, ignore_index):
    """The mask of targets that count, the labels with ignored ones set to class 0, and
    the weight of each element's target (0 where ignored)."""
    counts = target != ignore_index
    safe = jnp.where(counts, target, 0)
    if weight is None:
        return counts, safe, counts.astype(input.dtype)
    return counts, safe, jnp.where(counts, weight[safe], 0.0)


def _weighted_mean(elementwise, reduction, denominator):
    """torch's weighted ``mean``: NaN, with a zero gradient, when nothing counts."""
    if reduction != "mean":
        return reduce(elementwise, reduction)
    nothing = denominator == 0
    return jnp.where(nothing, jnp.nan, elementwise.sum() / jnp.where(nothing, 1.0, denominator))


def _safe_denominator(denominator):
    return jnp.where(denominator == 0, 1.0, denominator)


def _class_cotangent(cotangent, reduction, input, numel, denominator=None):
    g = reduce_vjp(cotangent, reduction, numel, denominator)
    return jnp.expand_dims(g, _class_dim(input)) if reduction == "none" else g


def _effective_index_targets(input, target, weight, ignore_index, label_smoothing):
    cd = _class_dim(input)
    num_classes = input.shape[cd]
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    one_hot = jax.nn.one_hot(safe, num_classes, dtype=input.dtype, axis=cd)
    q = one_hot * jnp.expand_dims((1.0 - label_smoothing) * w_target, cd)
    if label_smoothing > 0:
        w = jnp.ones(num_classes, input.dtype) if weight is None else weight
        q = q + (label_smoothing / num_classes) * _along_class(w, input) * jnp.expand_dims(counts, cd)
    return q, w_target.sum()


def _effective_probability_targets(input, target, weight, label_smoothing):
    num_classes = input.shape[_class_dim(input)]
    q = target * (1.0 - label_smoothing) + label_smoothing / num_classes if label_smoothing > 0 else target
    return q if weight is None else q * _along_class(weight, input)


def _softmax_minus_target(logp, q, g, cd):
    return g * (jnp.exp(logp) * q.sum(cd, keepdims=True) - q)


# -- cross_entropy ---------------------------------------------------------------

def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross entropy of logits with class indices or class probabilities, as
    ``torch.nn.functional.cross_entropy`` (see ``reference.classification.cross_entropy``)."""
    cd = _class_dim(input)
    logp = jax.nn.log_softmax(input, axis=cd)
    if jnp.issubdtype(target.dtype, jnp.floating):
        q = _effective_probability_targets(input, target, weight, label_smoothing)
        return reduce(-(q * logp).sum(cd), reduction)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    elementwise = -w_target * jnp.take_along_axis(logp, jnp.expand_dims(safe, cd), axis=cd).squeeze(cd)
    if label_smoothing > 0:
        num_classes = input.shape[cd]
        smooth = -(logp.sum(cd) if weight is None else (logp * _along_class(weight, input)).sum(cd))
        smooth = jnp.where(counts, smooth, 0.0)
        elementwise = (1.0 - label_smoothing) * elementwise + (label_smoothing / num_classes) * smooth
    return _weighted_mean(elementwise, reduction, w_target.sum())


def _cross_entropy_fwd(input, target, weight, ignore_index, reduction, label_smoothing):
    return cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing), (input, target, weight)


def _cross_entropy_bwd(ignore_index, reduction, label_smoothing, residuals, cotangent):
    input, target, weight = residuals
    cd = _class_dim(input)
    numel = input.size // input.shape[cd]
    logp = jax.nn.log_softmax(input, axis=cd)
    if jnp.issubdtype(target.dtype, jnp.floating):
        # probability targets get a gradient too: -(1 - eps) w_c log p_c
        q = _effective_probability_targets(input, target, weight, label_smoothing)
        g = _class_cotangent(cotangent, reduction, input, numel)
        d_target = -(1.0 - label_smoothing) * g * logp
        if weight is not None:
            d_target = d_target * _along_class(weight, input)
    else:
        q, denominator = _effective_index_targets(input, target, weight, ignore_index, label_smoothing)
        g = _class_cotangent(cotangent, reduction, input, numel, _safe_denominator(denominator))
        d_target = None
    return _softmax_minus_target(logp, q, g, cd), d_target, None


cross_entropy_custom_vjp = jax.custom_vjp(cross_entropy, nondiff_argnums=(3, 4, 5))
cross_entropy_custom_vjp.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)
autodiff("cross_entropy", cross_entropy)
custom_vjp("cross_entropy", cross_entropy_custom_vjp, _cross_entropy_fwd, _cross_entropy_bwd)


# -- nll_loss --------------------------------------------------------------------

def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log likelihood, as ``torch.nn.functional.nll_loss``."""
    cd = _class_dim(input)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    picked = jnp.take_along_axis(input, jnp.expand_dims(safe, cd), axis=cd).squeeze(cd)
    return _weighted_mean(-w_target * picked, reduction, w_target.sum())


def _nll_loss_fwd(input, target, weight, ignore_index, reduction):
    return nll_loss(input, target, weight, ignore_index, reduction), (input, target, weight)


def _nll_loss_bwd(ignore_index, reduction, residuals, cotangent):
    input, target, weight = residuals
    cd = _class_dim(input)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    g = reduce_vjp(cotangent, reduction, target.size, _safe_denominator(w_target.sum()))
    one_hot = jax.nn.one_hot(safe, input.shape[cd], dtype=input.dtype, axis=cd)
    return one_hot * jnp.expand_dims(-w_target * g, cd), None, None


nll_loss_custom_vjp = jax.custom_vjp(nll_loss, nondiff_argnums=(3, 4))
nll_loss_custom_vjp.defvjp(_nll_loss_fwd, _nll_loss_bwd)
autodiff("nll_loss", nll_loss)
custom_vjp("nll_loss", nll_loss_custom_vjp, _nll_loss_fwd, _nll_loss_bwd)


# -- binary_cross_entropy --------------------------------------------------------

def _clamped_logs(input):
    """max(log x, -100) and max(log(1 - x), -100), as torch; at x = 0 or 1 the inner
    ``where`` keeps autodiff's gradient finite (the clamped log is flat there)."""
    positive, below_one = input > 0, input < 1
    log_x = jnp.where(positive, jnp.log(jnp.where(positive, input, 1.0)), LOG_CLAMP)
    log_1mx = jnp.where(below_one, jnp.log1p(-jnp.where(below_one, input, 0.0)), LOG_CLAMP)
    return jnp.maximum(log_x, LOG_CLAMP), jnp.maximum(log_1mx, LOG_CLAMP)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """Binary cross entropy of probabilities, logs clamped at -100, as
    ``torch.nn.functional.binary_cross_entropy``."""
    log_x, log_1mx = _clamped_logs(input)
    elementwise = -(target * log_x + (1.0 - target) * log_1mx)
    return reduce(elementwise if weight is None else elementwise * weight, reduction)


def _binary_cross_entropy_fwd(input, target, weight, reduction):
    return binary_cross_entropy(input, target, weight, reduction), (input, target, weight)


def _binary_cross_entropy_bwd(reduction, residuals, cotangent):
    input, target, weight = residuals
    g = reduce_vjp(cotangent, reduction, input.size)
    if weight is not None:
        g = g * weight
    log_x, log_1mx = _clamped_logs(input)
    slope = (jnp.where(log_1mx > LOG_CLAMP, (1.0 - target) / (1.0 - input), 0.0)
             - jnp.where(log_x > LOG_CLAMP, target / input, 0.0))
    return g * slope, g * (log_1mx - log_x), None


binary_cross_entropy_custom_vjp = jax.custom_vjp(binary_cross_entropy, nondiff_argnums=(3,))
binary_cross_entropy_custom_vjp.defvjp(_binary_cross_entropy_fwd, _binary_cross_entropy_bwd)
autodiff("binary_cross_entropy", binary_cross_entropy)
custom_vjp("binary_cross_entropy", binary_cross_entropy_custom_vjp, _binary_cross_entropy_fwd,
           _binary_cross_entropy_bwd)


# -- binary_cross_entropy_with_logits --------------------------------------------

def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Binary cross entropy of logits in the stable softplus form, as
    ``torch.nn.functional.binary_cross_entropy_with_logits``."""
    softplus_neg = -jax.nn.log_sigmoid(input)
    coef = 1.0 if pos_weight is None else 1.0 + (pos_weight - 1.0) * target
    elementwise = (1.0 - target) * input + coef * softplus_neg
    return reduce(elementwise if weight is None else elementwise * weight, reduction)


def _binary_cross_entropy_with_logits_fwd(input, target, weight, reduction, pos_weight):
    value = binary_cross_entropy_with_logits(input, target, weight, reduction, pos_weight)
    return value, (input, target, weight, pos_weight)


def _binary_cross_entropy_with_logits_bwd(reduction, residuals, cotangent):
    input, target, weight, pos_weight = residuals
    g = reduce_vjp(cotangent, reduction, input.size)
    if weight is not None:
        g = g * weight
    if pos_weight is None:
        return g * (jax.nn.sigmoid(input) - target), -g * input, None, None
    coef = 1.0 + (pos_weight - 1.0) * target
    d_input = g * (coef * jax.nn.sigmoid(input) - pos_weight * target)
    d_target = g * ((pos_weight - 1.0) * -jax.nn.log_sigmoid(input) - input)
    return d_input, d_target, None, None


binary_cross_entropy_with_logits_custom_vjp = jax.custom_vjp(binary_cross_entropy_with_logits, nondiff_argnums=(3,))
binary_cross_entropy_with_logits_custom_vjp.defvjp(_binary_cross_entropy_with_logits_fwd,
                                                   _binary_cross_entropy_with_logits_bwd)
autodiff("binary_cross_entropy_with_logits", binary_cross_entropy_with_logits)
custom_vjp("binary_cross_entropy_with_logits", binary_cross_entropy_with_logits_custom_vjp,
           _binary_cross_entropy_with_logits_fwd, _binary_cross_entropy_with_logits_bwd)


# -- kl_div ----------------------------------------------------------------------

def _batch_size(input) -> int:
    return input.shape[0] if input.ndim else 1


def kl_div(input, target, reduction="mean", log_target=False):
    """KL divergence of log-probabilities ``input`` from ``target``, as ``torch.nn.functional.kl_div``."""
    if log_target:
        elementwise = jnp.exp(target) * (target - input)
    else:
        elementwise = xlogy(target, target) - target * input
    return reduce(elementwise, reduction, batch_size=_batch_size(input))


def _kl_div_fwd(input, target, reduction, log_target):
    return kl_div(input, target, reduction, log_target), (input, target)


def _kl_div_bwd(reduction, log_target, residuals, cotangent):
    input, target = residuals
    g = reduce_vjp(cotangent, reduction, input.size, batch_size=_batch_size(input))
    if log_target:
        e = jnp.exp(target)
        return -e * g, e * (target - input + 1.0) * g
    # log t + t/t - x: NaN at t = 0, as autodiff's through xlogy
    return -target * g, (jnp.log(target) + target / target - input) * g


kl_div_custom_vjp = jax.custom_vjp(kl_div, nondiff_argnums=(2, 3))
kl_div_custom_vjp.defvjp(_kl_div_fwd, _kl_div_bwd)
autodiff("kl_div", kl_div)
custom_vjp("kl_div", kl_div_custom_vjp, _kl_div_fwd, _kl_div_bwd)


# -- the built-ins (optax), the outside oracle --------------------------------------

def _optax_cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """optax's softmax cross entropies: integer labels, or probabilities smoothed by
    ``optax.smooth_labels`` (torch's (1 - eps) t + eps / C)."""
    import optax
    if weight is not None:
        raise NotImplementedError("optax's softmax cross entropies take no class weight")
    axis = _class_dim(input)
    if jnp.issubdtype(target.dtype, jnp.floating):
        labels = optax.smooth_labels(target, label_smoothing, axis=axis) if label_smoothing > 0 else target
        return reduce(optax.losses.softmax_cross_entropy(input, labels, axis=axis), reduction)
    if label_smoothing > 0:
        raise NotImplementedError("optax's softmax_cross_entropy_with_integer_labels has no label smoothing")
    if bool(jnp.any(target == ignore_index)):
        raise NotImplementedError("optax's softmax_cross_entropy_with_integer_labels has no ignore_index")
    return reduce(optax.losses.softmax_cross_entropy_with_integer_labels(input, target, axis=axis), reduction)


def _optax_binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """optax's sigmoid_binary_cross_entropy of the logits log(p) - log(1 - p); exact, so it
    agrees with torch's wherever no log is clamped."""
    import optax
    if weight is not None:
        raise NotImplementedError("optax.losses.sigmoid_binary_cross_entropy takes no weight")
    logits = jnp.log(input) - jnp.log1p(-input)
    return reduce(optax.losses.sigmoid_binary_cross_entropy(logits, target), reduction)


def _optax_binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    import optax
    if weight is not None or pos_weight is not None:
        raise NotImplementedError("optax.losses.sigmoid_binary_cross_entropy takes no weight or pos_weight")
    return reduce(optax.losses.sigmoid_binary_cross_entropy(input, target), reduction)


def _optax_kl_div(input, target, reduction="mean", log_target=False):
    """optax's KL divergences sum over the last axis; axis=() keeps every element."""
    import optax
    kl = optax.losses.kl_divergence_with_log_targets if log_target else optax.losses.kl_divergence
    if reduction == "none":
        return kl(input, target, axis=())
    per_row = kl(input, target)
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.sum() / input.size
    # batchmean: the KL divergence of each sample, averaged over the batch (per_row.mean() for 2-D input)
    return per_row.reshape(input.shape[0], -1).sum(-1).mean()


builtin("cross_entropy", _optax_cross_entropy)
builtin("binary_cross_entropy", _optax_binary_cross_entropy)
builtin("binary_cross_entropy_with_logits", _optax_binary_cross_entropy_with_logits)
builtin("kl_div", _optax_kl_div)
