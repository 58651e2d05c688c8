"""Classification losses in JAX: cross_entropy, nll_loss, binary_cross_entropy,
binary_cross_entropy_with_logits, kl_div.

Each loss reads as in ``reference/classification.py``: a jax.numpy function (the
``autodiff`` variant) and a ``jax.custom_vjp`` whose backward is the reference's VJP.
The backwards of cross_entropy and nll_loss are softmax minus the effective targets.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import reference
from reference.reductions import reduce, reduce_vjp
from .core import alias, autodiff, builtin, custom_vjp, keras, masked_logsumexp

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
        counted = jnp.expand_dims(counts, cd).astype(input.dtype)
        q = q + (label_smoothing / num_classes) * _along_class(w, input) * counted
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
    picked = jnp.take_along_axis(logp, jnp.expand_dims(safe, cd), axis=cd).squeeze(cd)
    # An ignored position is 0 even where its placeholder class has log p = -inf (0 * -inf is NaN).
    elementwise = jnp.where(counts, -w_target * picked, 0.0)
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
    return _weighted_mean(jnp.where(counts, -w_target * picked, 0.0), reduction, w_target.sum())


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


def _log_ratio(t, x):
    """log t - x, with log 0 read as 0: the KL divergence's term t (log t - x) is then
    xlogy(t, t) - t x, 0 at t = 0.

    Written as optax writes it, not with ``xlogy``: XLA on the CPU fuses the backward's
    log t + t/t - x = _log_ratio(t, x) + t/t into the forward's passes (the custom_vjps keep
    it as a residual), where ``xlogy`` computed and stored log t apart (kl_div, 3072 x 4
    float32, forward + VJP: 82 us with xlogy, 56 us so, optax 60 us)."""
    return jnp.where(t == 0, 0.0, jnp.log(t)) - x


def _kl_target_vjp(log_ratio, t):
    # log t + t/t - x: NaN at t = 0, as the reference's and autodiff's
    return log_ratio + t / t


@jax.custom_jvp
def _kl_term(t, x):
    """t (log t - x), 0 at t = 0, for the autodiff variants. Its derivative in t is the
    reference's log t + t/t - x, NaN at t = 0 in forward and reverse mode alike (JAX's own
    derivative of the ``where`` is NaN in reverse mode there, 0 / t, and -x in forward mode)."""
    return t * _log_ratio(t, x)


@_kl_term.defjvp
def _kl_term_jvp(primals, tangents):
    t, x = primals
    dt, dx = tangents
    log_ratio = _log_ratio(t, x)
    return t * log_ratio, _kl_target_vjp(log_ratio, t) * dt - t * dx


def kl_div(input, target, reduction="mean", log_target=False):
    """KL divergence of log-probabilities ``input`` from ``target``, as ``torch.nn.functional.kl_div``."""
    if log_target:
        elementwise = jnp.exp(target) * (target - input)
    else:
        elementwise = _kl_term(target, input)
    return reduce(elementwise, reduction, batch_size=_batch_size(input))


def _kl_div_fwd(input, target, reduction, log_target):
    if log_target:
        return kl_div(input, target, reduction, log_target), (input, target, None)
    log_ratio = _log_ratio(target, input)
    return reduce(target * log_ratio, reduction, batch_size=_batch_size(input)), (input, target, log_ratio)


def _kl_div_bwd(reduction, log_target, residuals, cotangent):
    input, target, log_ratio = residuals
    g = reduce_vjp(cotangent, reduction, input.size, batch_size=_batch_size(input))
    if log_target:
        e = jnp.exp(target)
        return -e * g, e * (target - input + 1.0) * g
    return -target * g, _kl_target_vjp(log_ratio, target) * g


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
    return per_row.reshape(input.shape[0], math.prod(per_row.shape[1:])).sum(-1).mean()  # not -1: N may be 0


builtin("cross_entropy", _optax_cross_entropy)
builtin("binary_cross_entropy", _optax_binary_cross_entropy)
builtin("binary_cross_entropy_with_logits", _optax_binary_cross_entropy_with_logits)
builtin("kl_div", _optax_kl_div)


# ==================================================================================
# Part 2: optax's and Keras's classification losses (see reference/classification.py).
# sigmoid_binary_cross_entropy and convex_kl_divergence are aliases: ``alias`` runs their
# targets' implementations.
# ==================================================================================

KERAS_EPSILON = 1e-7


def _optax_axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        return (axis % ndim,)
    return tuple(int(a) % ndim for a in axis)


def _full_where(where, shape, axes):
    """``where`` of the logits' shape, or of the per-example shape expanded along the class axes."""
    if where is None:
        return None
    if where.ndim != len(shape):
        where = jnp.expand_dims(where, tuple(sorted(axes)))
    return jnp.broadcast_to(where, shape)


def _masked(x, w):
    return x if w is None else jnp.where(w, x, 0.0)


def _where_kept(kept, x, fill):
    return x if kept is None else jnp.where(kept, x, fill)


def _per_example_cotangent(cotangent, reduction, numel, axes):
    g = reduce_vjp(cotangent, reduction, numel)
    return jnp.expand_dims(g, tuple(sorted(axes))) if reduction == "none" else g


def _class_numel(shape, axes) -> int:
    n = 1
    for i, s in enumerate(shape):
        if i not in axes:
            n *= s
    return n


# -- softmax_cross_entropy_with_integer_labels (optax) --------------------------------

def _label_layout(logits, axis, where):
    """The class axes moved last in the order given and flattened; ``where`` alike."""
    nd = logits.ndim
    axes = _optax_axes(axis, nd)
    batch = tuple(i for i in range(nd) if i not in axes)
    perm = batch + axes
    batch_shape = tuple(logits.shape[i] for i in batch)
    classes = (math.prod(logits.shape[i] for i in axes),)  # not -1: an empty batch leaves it open
    x = logits.transpose(perm).reshape(batch_shape + classes)
    w = None
    if where is not None:
        w = _full_where(where, logits.shape, axes).transpose(perm).reshape(batch_shape + classes)
    return x, w, perm


def _label_layout_back(flat, logits, perm):
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return flat.reshape(tuple(logits.shape[i] for i in perm)).transpose(inverse)


def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1, where=None, reduction="none"):
    """optax's softmax cross entropy with integer labels along ``axis``, ``where`` masking
    classes (logits' shape) or examples."""
    return _sce_int_parts(logits, labels, axis, where, reduction)[0]


def _sce_int_parts(logits, labels, axis, where, reduction):
    x, w, _ = _label_layout(logits, axis, where)
    lse, kept = masked_logsumexp(x, -1, w, keepdims=False)
    out = lse - jnp.take_along_axis(x, labels[..., None], axis=-1)[..., 0]
    if w is not None:
        out = jnp.where(kept, out, 0.0)
    return reduce(out, reduction), lse, kept


def _sce_int_fwd(logits, labels, axis, where, reduction):
    # The log-normaliser is kept for the backward: one pass over the logits fewer.
    out, lse, kept = _sce_int_parts(logits, labels, axis, where, reduction)
    return out, (logits, labels, where, lse, kept)


def _sce_int_bwd(axis, reduction, residuals, cotangent):
    logits, labels, where, lse, kept = residuals
    x, w, perm = _label_layout(logits, axis, where)
    g = reduce_vjp(cotangent, reduction, labels.size)
    if reduction == "none":
        g = g[..., None]
    one_hot = jax.nn.one_hot(labels, x.shape[-1], dtype=x.dtype)
    if w is None:  # every row keeps a class; the guards below made this backward 1.6x as slow
        d = (jnp.exp(x - lse[..., None]) - one_hot) * g
    else:  # a row whose classes are all masked out gets 0
        lse, kept = lse[..., None], kept[..., None]
        p = _masked(jnp.exp(x - jnp.where(kept, lse, 0.0)), w)
        d = jnp.where(kept, (p - one_hot) * g, 0.0)
    return _label_layout_back(d, logits, perm), None, None


softmax_cross_entropy_with_integer_labels_custom_vjp = jax.custom_vjp(softmax_cross_entropy_with_integer_labels,
                                                                      nondiff_argnums=(2, 4))
softmax_cross_entropy_with_integer_labels_custom_vjp.defvjp(_sce_int_fwd, _sce_int_bwd)
autodiff("softmax_cross_entropy_with_integer_labels", softmax_cross_entropy_with_integer_labels)
custom_vjp("softmax_cross_entropy_with_integer_labels", softmax_cross_entropy_with_integer_labels_custom_vjp,
           _sce_int_fwd, _sce_int_bwd)


# -- softmax_cross_entropy (optax) ------------------------------------------------------

def _softmax_parts(logits, axis, where):
    axes = _optax_axes(axis, logits.ndim)
    w = _full_where(where, logits.shape, axes)
    lse, kept = masked_logsumexp(logits, axes, w)
    logp = _masked(logits - _where_kept(kept, lse, 0.0), w)
    return axes, w, logp, kept


def softmax_cross_entropy(logits, labels, axis=-1, where=None, reduction="none"):
    """optax's softmax cross entropy with probability labels along ``axis``, ``where`` masking."""
    axes, w, logp, _ = _softmax_parts(logits, axis, where)
    return reduce(-_masked(labels * logp, w).sum(axes), reduction)


def _sce_fwd(logits, labels, axis, where, reduction):
    # The log-probabilities are kept for the backward: no second log-softmax.
    axes, w, logp, kept = _softmax_parts(logits, axis, where)
    return reduce(-_masked(labels * logp, w).sum(axes), reduction), (logits, labels, where, logp, kept)


def _sce_bwd(axis, reduction, residuals, cotangent):
    logits, labels, where, logp, kept = residuals
    axes = _optax_axes(axis, logits.ndim)
    w = _full_where(where, logits.shape, axes)
    t = _masked(labels, w)
    p = _masked(_where_kept(kept, jnp.exp(logp), 0.0), w)
    g = _per_example_cotangent(cotangent, reduction, _class_numel(logits.shape, axes), axes)
    return g * (p * t.sum(axes, keepdims=True) - t), None, None


softmax_cross_entropy_custom_vjp = jax.custom_vjp(softmax_cross_entropy, nondiff_argnums=(2, 4))
softmax_cross_entropy_custom_vjp.defvjp(_sce_fwd, _sce_bwd)
autodiff("softmax_cross_entropy", softmax_cross_entropy)
custom_vjp("softmax_cross_entropy", softmax_cross_entropy_custom_vjp, _sce_fwd, _sce_bwd)


# -- safe_softmax_cross_entropy (optax) -------------------------------------------------

def safe_softmax_cross_entropy(logits, labels, reduction="none"):
    """Softmax cross entropy over the last axis with 0 log 0 = 0: finite at -inf logits whose
    label is 0 (the ``where`` also keeps autodiff's gradient there 0)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return reduce(-(labels * jnp.where(labels != 0, logp, 0.0)).sum(-1), reduction)


def _safe_sce_fwd(logits, labels, reduction):
    return safe_softmax_cross_entropy(logits, labels, reduction), (logits, labels)


def _safe_sce_bwd(reduction, residuals, cotangent):
    logits, labels = residuals
    p = jax.nn.softmax(logits, axis=-1)
    g = _per_example_cotangent(cotangent, reduction, logits.size // logits.shape[-1], (logits.ndim - 1,))
    return g * (p * labels.sum(-1, keepdims=True) - labels), None


safe_softmax_cross_entropy_custom_vjp = jax.custom_vjp(safe_softmax_cross_entropy, nondiff_argnums=(2,))
safe_softmax_cross_entropy_custom_vjp.defvjp(_safe_sce_fwd, _safe_sce_bwd)
autodiff("safe_softmax_cross_entropy", safe_softmax_cross_entropy)
custom_vjp("safe_softmax_cross_entropy", safe_softmax_cross_entropy_custom_vjp, _safe_sce_fwd, _safe_sce_bwd)


# -- sigmoid_binary_cross_entropy (optax): an alias of binary_cross_entropy_with_logits ---

alias("sigmoid_binary_cross_entropy")


# -- sigmoid_focal_loss (optax) ---------------------------------------------------------

def _focal_parts(logits, labels):
    log_p, log_q = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
    ce = -(labels * log_p + (1.0 - labels) * log_q)
    return log_p, log_q, ce, _log_one_minus_pt(labels, log_p, log_q)


def _log_one_minus_pt(labels, log_p, log_q):
    """log(1 - p_t) = log(y sigma(-x) + (1 - y) sigma(x)) from the log-sigmoids, as the reference's
    ``_log_one_minus_pt``: finite, with a finite derivative, where 1 - p_t underflows to 0."""
    return jnp.logaddexp(log_p + jnp.log1p(-labels), log_q + jnp.log(labels))


def _alpha_t(labels, alpha):
    return 1.0 if alpha is None else alpha * labels + (1.0 - alpha) * (1.0 - labels)


def sigmoid_focal_loss(logits, labels, *, alpha=None, gamma=2.0, reduction="none"):
    """optax's sigmoid focal loss in log space: finite at saturated logits and for gamma < 2."""
    _, _, ce, log_1m_pt = _focal_parts(logits, labels)
    return reduce(_alpha_t(labels, alpha) * ce * jnp.exp(gamma * log_1m_pt), reduction)


def _sigmoid_focal_loss_positional(logits, labels, alpha, gamma, reduction):
    return sigmoid_focal_loss(logits, labels, alpha=alpha, gamma=gamma, reduction=reduction)


def _focal_fwd(logits, labels, alpha, gamma, reduction):
    return _sigmoid_focal_loss_positional(logits, labels, alpha, gamma, reduction), (logits, labels)


def _focal_bwd(alpha, gamma, reduction, residuals, cotangent):
    logits, labels = residuals
    log_p, log_q, ce, log_1m_pt = _focal_parts(logits, labels)
    w = jnp.exp(gamma * log_1m_pt)
    slope = (1.0 - 2.0 * labels) * jnp.exp(log_p + log_q - log_1m_pt)
    g = reduce_vjp(cotangent, reduction, logits.size)
    return g * _alpha_t(labels, alpha) * w * (jax.nn.sigmoid(logits) - labels + gamma * ce * slope), None


sigmoid_focal_loss_custom_vjp = jax.custom_vjp(_sigmoid_focal_loss_positional, nondiff_argnums=(2, 3, 4))
sigmoid_focal_loss_custom_vjp.defvjp(_focal_fwd, _focal_bwd)
autodiff("sigmoid_focal_loss", sigmoid_focal_loss)
custom_vjp("sigmoid_focal_loss", sigmoid_focal_loss_custom_vjp, _focal_fwd, _focal_bwd)


# -- poly_loss_cross_entropy (optax) -----------------------------------------------------

def poly_loss_cross_entropy(logits, labels, *, epsilon=2.0, axis=-1, where=None, reduction="none"):
    """optax's poly-1 loss: softmax cross entropy plus epsilon sum t (1 - p)."""
    axes, w, logp, kept = _softmax_parts(logits, axis, where)
    p = _masked(_where_kept(kept, jnp.exp(logp), 0.0), w)
    ce = -_masked(labels * logp, w).sum(axes)
    return reduce(ce + epsilon * _masked(labels * (1.0 - p), w).sum(axes), reduction)


def _poly_loss_positional(logits, labels, epsilon, axis, where, reduction):
    return poly_loss_cross_entropy(logits, labels, epsilon=epsilon, axis=axis, where=where, reduction=reduction)


def _poly_fwd(logits, labels, epsilon, axis, where, reduction):
    return _poly_loss_positional(logits, labels, epsilon, axis, where, reduction), (logits, labels, where)


def _poly_bwd(epsilon, axis, reduction, residuals, cotangent):
    logits, labels, where = residuals
    axes, w, logp, kept = _softmax_parts(logits, axis, where)
    t = _masked(labels, w)
    p = _masked(_where_kept(kept, jnp.exp(logp), 0.0), w)
    g = _per_example_cotangent(cotangent, reduction, _class_numel(logits.shape, axes), axes)
    tp = (t * p).sum(axes, keepdims=True)
    return g * (p * t.sum(axes, keepdims=True) - t - epsilon * p * (t - tp)), None, None


poly_loss_cross_entropy_custom_vjp = jax.custom_vjp(_poly_loss_positional, nondiff_argnums=(2, 3, 5))
poly_loss_cross_entropy_custom_vjp.defvjp(_poly_fwd, _poly_bwd)
autodiff("poly_loss_cross_entropy", poly_loss_cross_entropy)
custom_vjp("poly_loss_cross_entropy", poly_loss_cross_entropy_custom_vjp, _poly_fwd, _poly_bwd)


# -- kl_divergence, kl_divergence_with_log_targets, generalized_kl_divergence (optax) -----

def _kl_sum(elementwise, axis, where):
    return _masked(elementwise, where).sum(_optax_axes(axis, elementwise.ndim))


def _kl_cotangent(cotangent, reduction, x, axis, where):
    axes = _optax_axes(axis, x.ndim)
    g = jnp.broadcast_to(_per_example_cotangent(cotangent, reduction, _class_numel(x.shape, axes), axes), x.shape)
    return g if where is None else jnp.where(where, g, 0.0)


def kl_divergence(log_predictions, targets, axis=-1, where=None, reduction="none"):
    """optax's KL divergence: kl_div elementwise, summed along ``axis`` where kept."""
    return reduce(_kl_sum(_kl_term(targets, log_predictions), axis, where), reduction)


def _kl_divergence_fwd(log_predictions, targets, axis, where, reduction):
    log_ratio = _log_ratio(targets, log_predictions)
    value = reduce(_kl_sum(targets * log_ratio, axis, where), reduction)
    return value, (log_predictions, targets, where, log_ratio)


def _kl_divergence_bwd(axis, reduction, residuals, cotangent):
    x, t, where, log_ratio = residuals
    g = _kl_cotangent(cotangent, reduction, x, axis, where)
    return -t * g, _kl_target_vjp(log_ratio, t) * g, None


kl_divergence_custom_vjp = jax.custom_vjp(kl_divergence, nondiff_argnums=(2, 4))
kl_divergence_custom_vjp.defvjp(_kl_divergence_fwd, _kl_divergence_bwd)
autodiff("kl_divergence", kl_divergence)
custom_vjp("kl_divergence", kl_divergence_custom_vjp, _kl_divergence_fwd, _kl_divergence_bwd)


def kl_divergence_with_log_targets(log_predictions, log_targets, axis=-1, where=None, reduction="none"):
    """optax's KL divergence of log targets: exp(u) (u - x) summed along ``axis`` where kept."""
    return reduce(_kl_sum(jnp.exp(log_targets) * (log_targets - log_predictions), axis, where), reduction)


def _kl_log_fwd(log_predictions, log_targets, axis, where, reduction):
    value = kl_divergence_with_log_targets(log_predictions, log_targets, axis, where, reduction)
    return value, (log_predictions, log_targets, where)


def _kl_log_bwd(axis, reduction, residuals, cotangent):
    x, u, where = residuals
    g = _kl_cotangent(cotangent, reduction, x, axis, where)
    e = jnp.exp(u)
    return -e * g, e * (u - x + 1.0) * g, None


kl_divergence_with_log_targets_custom_vjp = jax.custom_vjp(kl_divergence_with_log_targets, nondiff_argnums=(2, 4))
kl_divergence_with_log_targets_custom_vjp.defvjp(_kl_log_fwd, _kl_log_bwd)
autodiff("kl_divergence_with_log_targets", kl_divergence_with_log_targets)
custom_vjp("kl_divergence_with_log_targets", kl_divergence_with_log_targets_custom_vjp, _kl_log_fwd, _kl_log_bwd)


def _exp_kept(x, where):
    """exp(x), and 1 where ``where`` drops x: a dropped entry (a padding's) may be large enough
    for exp to overflow, and its inf times the mask's 0 made the gradient NaN there."""
    return jnp.exp(x if where is None else jnp.where(where, x, 0.0))


def generalized_kl_divergence(log_predictions, targets, axis=-1, where=None, reduction="none"):
    """optax's generalized KL divergence: kl_divergence plus exp(x) - t, summed along ``axis``."""
    elementwise = _kl_term(targets, log_predictions) + _exp_kept(log_predictions, where) - targets
    return reduce(_kl_sum(elementwise, axis, where), reduction)


def _gkl_fwd(log_predictions, targets, axis, where, reduction):
    log_ratio = _log_ratio(targets, log_predictions)
    elementwise = targets * log_ratio + _exp_kept(log_predictions, where) - targets
    return reduce(_kl_sum(elementwise, axis, where), reduction), (log_predictions, targets, where, log_ratio)


def _gkl_bwd(axis, reduction, residuals, cotangent):
    x, t, where, log_ratio = residuals
    g = _kl_cotangent(cotangent, reduction, x, axis, where)
    return (_exp_kept(x, where) - t) * g, (_kl_target_vjp(log_ratio, t) - 1.0) * g, None


generalized_kl_divergence_custom_vjp = jax.custom_vjp(generalized_kl_divergence, nondiff_argnums=(2, 4))
generalized_kl_divergence_custom_vjp.defvjp(_gkl_fwd, _gkl_bwd)
autodiff("generalized_kl_divergence", generalized_kl_divergence)
custom_vjp("generalized_kl_divergence", generalized_kl_divergence_custom_vjp, _gkl_fwd, _gkl_bwd)


# -- convex_kl_divergence (optax): an alias of generalized_kl_divergence -----------------

alias("convex_kl_divergence")


# -- categorical_generalized_cross_entropy (Keras) -----------------------------------

def _true_class(y_true, y_pred):
    """The mask of each row's true class along the last axis, and its probability p[y].

    A select and a sum, not ``take_along_axis``: XLA on the CPU gathers (and autodiff
    scatters back) several times slower than it fuses a select into a reduction."""
    is_true = y_true[..., None] == jnp.arange(y_pred.shape[-1])
    return is_true, jnp.where(is_true, y_pred, 0.0).sum(-1)


def categorical_generalized_cross_entropy(y_true, y_pred, q=0.5, reduction="none"):
    """Keras's generalized cross entropy (1 - p[y]^q) / q."""
    _, p = _true_class(y_true, y_pred)
    return reduce((1.0 - p ** q) / q, reduction)


def _gce_fwd(y_true, y_pred, q, reduction):
    is_true, p = _true_class(y_true, y_pred)
    p_q = p ** q
    return reduce((1.0 - p_q) / q, reduction), (is_true, p, p_q)


def _gce_bwd(q, reduction, residuals, cotangent):
    is_true, p, p_q = residuals
    g = jnp.broadcast_to(reduce_vjp(cotangent, reduction, p.size), p.shape)
    # p^(q-1) as the forward's p^q / p (a division, not a second power); +inf at p = 0 (q < 1)
    p_q_minus_1 = jnp.where(p == 0, jnp.inf, p_q / p)
    return None, jnp.where(is_true, (-g * p_q_minus_1)[..., None], 0.0)


categorical_generalized_cross_entropy_custom_vjp = jax.custom_vjp(categorical_generalized_cross_entropy,
                                                                  nondiff_argnums=(2, 3))
categorical_generalized_cross_entropy_custom_vjp.defvjp(_gce_fwd, _gce_bwd)
autodiff("categorical_generalized_cross_entropy", categorical_generalized_cross_entropy)
custom_vjp("categorical_generalized_cross_entropy", categorical_generalized_cross_entropy_custom_vjp, _gce_fwd,
           _gce_bwd)


# -- binary_focal_crossentropy (Keras) ------------------------------------------------

def _keras_clip(p):
    """clip(p, 1e-7, 1 - 1e-7) whose derivative is a mask, 1 strictly inside and 0 outside, as
    torch's clamp (and the reference). JAX's clip multiplies the incoming derivative by 0 out
    there, and log's derivative 1/clip is inf in float16 (1/1.19e-7 > 65504): inf times 0 was a
    NaN gradient at every clipped probability (``jnp.where`` selects instead of multiplying)."""
    inside = (p > KERAS_EPSILON) & (p < 1.0 - KERAS_EPSILON)
    return jnp.where(inside, p, jax.lax.stop_gradient(jnp.clip(p, KERAS_EPSILON, 1.0 - KERAS_EPSILON)))


def _clipped_log(p):
    return jnp.log(_keras_clip(p))


def _binary_focal_parts(y_true, y_pred, apply_class_balancing, alpha, gamma, from_logits, label_smoothing):
    y = y_true.astype(y_pred.dtype)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        p, q = jax.nn.sigmoid(y_pred), jax.nn.sigmoid(-y_pred)
    else:
        p, q = y_pred, 1.0 - y_pred
    # log(clip(1 - p)) == log(1 - clip(p)), Keras's, without its float32 rounding of 1 - p
    bce = -(y * _clipped_log(p) + (1.0 - y) * _clipped_log(q))
    m = y * q + (1.0 - y) * p
    log_sigmoids = (jax.nn.log_sigmoid(y_pred), jax.nn.log_sigmoid(-y_pred)) if from_logits and gamma != 0 else None
    log_m = _log_one_minus_pt(y, *log_sigmoids) if log_sigmoids else None
    if gamma == 0:
        focal = 1.0
    elif from_logits:  # the same number, with a derivative that stays finite where the sigmoid saturates
        focal = jnp.exp(gamma * log_m)
    else:
        focal = m ** gamma
    weight = y * alpha + (1.0 - y) * (1.0 - alpha) if apply_class_balancing else 1.0
    return y, p, q, bce, m, log_sigmoids, log_m, focal, weight




def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0,
                              from_logits=False, label_smoothing=0.0, axis=-1, reduction="none"):
    """Keras's binary focal cross entropy, clipped at 1e-7, averaged along ``axis``."""
    _, _, _, bce, _, _, _, focal, weight = _binary_focal_parts(y_true, y_pred, apply_class_balancing, alpha, gamma,
                                                               from_logits, label_smoothing)
    return reduce((weight * focal * bce).mean(_optax_axes(axis, y_pred.ndim)), reduction)


def _bfc_fwd(y_true, y_pred, apply_class_balancing, alpha, gamma, from_logits, label_smoothing, axis, reduction):
    value = binary_focal_crossentropy(y_true, y_pred, apply_class_balancing, alpha, gamma, from_logits,
                                      label_smoothing, axis, reduction)
    return value, (y_true, y_pred)


def _bfc_bwd(apply_class_balancing, alpha, gamma, from_logits, label_smoothing, axis, reduction, residuals,
             cotangent):
    y_true, y_pred = residuals
    y, p, q, bce, m, log_sigmoids, log_m, focal, weight = _binary_focal_parts(
        y_true, y_pred, apply_class_balancing, alpha, gamma, from_logits, label_smoothing)
    inside = (p > KERAS_EPSILON) & (p < 1.0 - KERAS_EPSILON)
    if from_logits:  # dp/dx = p q folded in; m^(gamma-1) p q in logs
        d_bce = jnp.where(inside, (1.0 - y) * p - y * q, 0.0)
        if gamma != 0:
            m_power = (gamma - 1.0) * log_m if gamma != 1 else 0.0  # m^0 = 1 where log m is -inf
            d_focal = gamma * (1.0 - 2.0 * y) * jnp.exp(m_power + log_sigmoids[0] + log_sigmoids[1])
        else:
            d_focal = 0.0
    else:
        d_bce = jnp.where(inside, (1.0 - y) / q - y / p, 0.0)
        d_focal = gamma * m ** (gamma - 1.0) * (1.0 - 2.0 * y) if gamma != 0 else 0.0
    axes = _optax_axes(axis, y_pred.ndim)
    n = math.prod(y_pred.shape[a] for a in axes)  # the elements each mean is over (an empty batch has none)
    g = _per_example_cotangent(cotangent, reduction, _class_numel(y_pred.shape, axes), axes) / n
    return None, weight * (d_focal * bce + focal * d_bce) * g


binary_focal_crossentropy_custom_vjp = jax.custom_vjp(binary_focal_crossentropy, nondiff_argnums=(2, 3, 4, 5, 6, 7, 8))
binary_focal_crossentropy_custom_vjp.defvjp(_bfc_fwd, _bfc_bwd)
autodiff("binary_focal_crossentropy", binary_focal_crossentropy)
custom_vjp("binary_focal_crossentropy", binary_focal_crossentropy_custom_vjp, _bfc_fwd, _bfc_bwd)


# -- categorical_focal_crossentropy (Keras) ------------------------------------------

def _categorical_focal_parts(y_true, y_pred, from_logits, label_smoothing, axis):
    y = y_true.astype(y_pred.dtype)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + label_smoothing / y_true.shape[-1]  # Keras: the last axis, always
    out = jax.nn.softmax(y_pred, axis=axis) if from_logits else y_pred / y_pred.sum(axis, keepdims=True)
    clipped = _keras_clip(out)
    return y, out, jnp.log(clipped), 1.0 - clipped


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                                   axis=-1, reduction="none"):
    """Keras's categorical focal cross entropy: renormalized (or softmax) and clipped at 1e-7."""
    y, _, log_out, m = _categorical_focal_parts(y_true, y_pred, from_logits, label_smoothing, axis)
    return reduce((alpha * m ** gamma * (-y * log_out)).sum(axis), reduction)


def _cfc_fwd(y_true, y_pred, alpha, gamma, from_logits, label_smoothing, axis, reduction):
    value = categorical_focal_crossentropy(y_true, y_pred, alpha, gamma, from_logits, label_smoothing, axis,
                                           reduction)
    return value, (y_true, y_pred)


def _cfc_bwd(alpha, gamma, from_logits, label_smoothing, axis, reduction, residuals, cotangent):
    y_true, y_pred = residuals
    y, out, log_out, m = _categorical_focal_parts(y_true, y_pred, from_logits, label_smoothing, axis)
    inside = (out > KERAS_EPSILON) & (out < 1.0 - KERAS_EPSILON)
    d_focal = gamma * m ** (gamma - 1.0) * y * log_out if gamma != 0 else 0.0
    d_out = alpha * jnp.where(inside, d_focal - m ** gamma * y / out, 0.0)
    centered = d_out - (d_out * out).sum(axis, keepdims=True)
    d = out * centered if from_logits else centered / y_pred.sum(axis, keepdims=True)
    axes = _optax_axes(axis, y_pred.ndim)
    return None, d * _per_example_cotangent(cotangent, reduction, _class_numel(y_pred.shape, axes), axes)


categorical_focal_crossentropy_custom_vjp = jax.custom_vjp(categorical_focal_crossentropy,
                                                           nondiff_argnums=(2, 3, 4, 5, 6, 7))
categorical_focal_crossentropy_custom_vjp.defvjp(_cfc_fwd, _cfc_bwd)
autodiff("categorical_focal_crossentropy", categorical_focal_crossentropy)
custom_vjp("categorical_focal_crossentropy", categorical_focal_crossentropy_custom_vjp, _cfc_fwd, _cfc_bwd)


# -- the built-ins (part 2): optax's and Keras's own losses ------------------------

def _optax_loss(name: str):
    def adapter(*inputs, reduction="none", **kw):
        import optax
        return reduce(getattr(optax.losses, name)(*inputs, **kw), reduction)
    adapter.__name__ = f"optax_{name}"
    adapter.__doc__ = f"optax.losses.{name}, reduced as lossparity reduces."
    return adapter


def _optax_convex_kl_divergence(log_predictions, targets, axis=-1, where=None, reduction="none"):
    """optax.losses.convex_kl_divergence (deprecated there: its warning is silenced here)."""
    import warnings

    import optax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return reduce(optax.losses.convex_kl_divergence(log_predictions, targets, axis=axis, where=where), reduction)


KERAS_FLOAT64 = ("Keras 3 cannot give float64 values here: keras.ops.mean casts float64 to float32 before averaging "
                 "(keras.backend.result_type maps float64 with float32 to float32 on every backend but TensorFlow, "
                 "whatever keras.config.floatx() says), so binary_focal_crossentropy's row means carry float32 "
                 "rounding; tests/test_differences_classification.py compares it in float32")


def _keras_loss(name: str, float64: bool = True):
    def adapter(y_true, y_pred, reduction="none", **kw):
        if not float64 and jnp.dtype(y_pred.dtype) == jnp.float64:
            raise NotImplementedError(KERAS_FLOAT64)
        k = keras()
        if k.config.epsilon() != KERAS_EPSILON:
            raise NotImplementedError(f"keras.config.epsilon() is {k.config.epsilon()}; lossparity follows 1e-7")
        # every hyperparameter passed explicitly, at lossparity's defaults (Keras's function
        # categorical_generalized_cross_entropy has no default q; its Loss class's is 0.5)
        kw = {k: v for k, v in reference.get(name).bind(None, kw).items() if k != "reduction"}
        return reduce(getattr(k.losses, name)(y_true, y_pred, **kw), reduction)
    adapter.__name__ = f"keras_{name}"
    adapter.__doc__ = f"keras.losses.{name} on the JAX backend, reduced as lossparity reduces."
    return adapter


for _name in ("softmax_cross_entropy_with_integer_labels", "softmax_cross_entropy", "safe_softmax_cross_entropy",
              "sigmoid_binary_cross_entropy", "sigmoid_focal_loss", "poly_loss_cross_entropy", "kl_divergence",
              "kl_divergence_with_log_targets", "generalized_kl_divergence"):
    builtin(_name, _optax_loss(_name))
builtin("convex_kl_divergence", _optax_convex_kl_divergence)
builtin("categorical_generalized_cross_entropy", _keras_loss("categorical_generalized_cross_entropy"))
builtin("binary_focal_crossentropy", _keras_loss("binary_focal_crossentropy", float64=False))
builtin("categorical_focal_crossentropy", _keras_loss("categorical_focal_crossentropy"))
