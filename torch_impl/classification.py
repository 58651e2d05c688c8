"""Classification losses in torch: cross_entropy, nll_loss, binary_cross_entropy,
binary_cross_entropy_with_logits, kl_div.

Each loss reads as in ``reference/classification.py``: a functional over torch ops (the
``module`` variant, autograd does the backward) and an ``autograd.Function`` whose
backward is the reference's VJP written in torch ops. The backwards of cross_entropy
and nll_loss are softmax minus the effective targets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference import checks
from reference.reductions import reduce, reduce_vjp
from .core import (alias, builtin, cotangent, function, in_place_ok, logaddexp, mass_minus_target,
                   masked_logsumexp, module, one_hot, row_sum_reduced, scaled, shifted_exp_rows, take, values_read)

LOG_CLAMP = -100.0  # torch clamps each log of binary_cross_entropy at -100


# -- shared helpers ----------------------------------------------------------------

def _class_dim(input) -> int:
    return 0 if input.dim() == 1 else 1


def _along_class(v, input):
    shape = [1] * input.dim()
    shape[_class_dim(input)] = -1
    return v.reshape(shape)


def _class_index_terms(input, target, weight, ignore_index):
    """The mask of targets that count, the labels with ignored ones set to class 0, and
    the weight of each element's target (0 where ignored)."""
    counts = target != ignore_index
    num_classes = input.shape[_class_dim(input)]
    if num_classes and values_read():
        # The checks have read every label: each lies in [0, C) or is ignore_index, which the
        # clamp moves into [0, C) (its weight is 0). One pass, where torch.where over the bool
        # mask costs three. (Under torch.func or without value checks the labels are not read:
        # they keep gather's error.)
        safe = target.clamp(0, num_classes - 1)
    else:
        safe = torch.where(counts, target, 0)
    if weight is None:
        return counts, safe, counts.to(input.dtype)
    return counts, safe, torch.where(counts, take(weight, safe), 0.0)


def _weighted_mean(elementwise, reduction, denominator):
    """torch's weighted ``mean``: NaN, with a zero gradient, when nothing counts."""
    if reduction != "mean":
        return reduce(elementwise, reduction)
    nothing = denominator == 0
    return torch.where(nothing, float("nan"), elementwise.sum() / torch.where(nothing, 1.0, denominator))


def _safe_denominator(denominator):
    return torch.where(denominator == 0, 1.0, denominator)


def _class_cotangent(grad_output, reduction, input, numel, denominator=None):
    g = reduce_vjp(grad_output, reduction, numel, denominator)
    return g.unsqueeze(_class_dim(input)) if reduction == "none" else g


def _effective_index_targets(input, target, weight, ignore_index, label_smoothing):
    cd = _class_dim(input)
    num_classes = input.shape[cd]
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    q = torch.zeros_like(input).scatter(cd, safe.unsqueeze(cd), ((1.0 - label_smoothing) * w_target).unsqueeze(cd))
    if label_smoothing > 0:
        w = torch.ones(num_classes, dtype=input.dtype, device=input.device) if weight is None else weight
        q = q + (label_smoothing / num_classes) * _along_class(w, input) * counts.unsqueeze(cd)
    return q, w_target.sum()


def _effective_probability_targets(input, target, weight, label_smoothing):
    num_classes = input.shape[_class_dim(input)]
    q = target * (1.0 - label_smoothing) + label_smoothing / num_classes if label_smoothing > 0 else target
    return q if weight is None else q * _along_class(weight, input)


def _small_last_dim(input, cd) -> bool:
    """torch's CPU log_softmax over a last dimension shorter than a vector register (16
    floats) runs row by row, ~10x slower than the five passes of ``_log_softmax``."""
    return cd == input.dim() - 1 and 0 < input.shape[cd] < 16 and input.device.type == "cpu"


def _log_softmax(input, cd):
    """``torch.log_softmax(input, cd)``, as five passes over the logits where the class dim is
    short and last (shifted by the row max, which cancels: no gradient flows through it)."""
    if not _small_last_dim(input, cd):
        return torch.log_softmax(input, cd)
    z = input - input.amax(cd, keepdim=True).detach()
    return z - z.exp().sum(cd, keepdim=True).log()


def _softmax_and_log_softmax_at(input, cd):
    """The softmax and a function that gathers log-softmax entries (``index`` shaped for
    ``gather`` along ``cd``), for a forward that keeps the softmax (no autograd).

    Over a long class dim the softmax is ``torch.softmax`` and log p_y = x_y - m + log max_c p_c
    (m the row's max logit, where p is exp(0) / sum, at least 1/C: its log never underflows):
    one exponential per logit, where ``log_softmax(...).exp()`` took two, ``torch.exp`` the
    slower of torch's CPU exponentials (10000 x 100 float32, forward + backward 2.30 -> 1.09 ms;
    ``F.cross_entropy`` 1.18 ms)."""
    if _small_last_dim(input, cd):
        z = input - input.amax(cd, keepdim=True)
        e = z.exp()
        s = e.sum(cd, keepdim=True)
        logp = z.sub_(s.log())
        return e.div_(s), lambda index: logp.gather(cd, index)
    p = torch.softmax(input, cd)
    log_normaliser = input.amax(cd, keepdim=True).sub_(p.amax(cd, keepdim=True).log_())
    return p, lambda index: input.gather(cd, index).sub_(log_normaliser)  # index has 1 entry along cd


def _index_rows(log_p_at, input, target, weight, ignore_index, reduction, cd):
    """For class-index targets without smoothing, the reduced loss -sum_i w_i log p_{i,y_i}
    (over sum_i w_i for ``mean``), the labels with ignored ones set to 0, and each element's
    share of the cotangent: w_i, divided by sum_i w_i for ``mean`` (no autograd). ``log_p_at``
    gathers log-probabilities along ``cd`` at an index."""
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    # An ignored position is 0 even where its placeholder class has log p = -inf (0 * -inf is NaN).
    elementwise = torch.where(counts, log_p_at(safe.unsqueeze(cd)).squeeze(cd).mul_(w_target).neg_(), 0.0)
    if reduction != "mean":
        return reduce(elementwise, reduction), safe, w_target
    denominator = w_target.sum()
    return elementwise.sum() / denominator, safe, w_target / _safe_denominator(denominator)


def _minus_target_rows(p, safe, share, grad_output, cd):
    """g w_i (p_i - onehot(y_i)) from the softmax and each element's share of the cotangent:
    one product and one scatter, in place where safe."""
    r = (grad_output * share).unsqueeze(cd)
    d_input = p * r
    if in_place_ok():
        return d_input.scatter_add_(cd, safe.unsqueeze(cd), r.neg_())
    return d_input.scatter_add(cd, safe.unsqueeze(cd), -r)


# -- cross_entropy ---------------------------------------------------------------

def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross entropy of logits with class indices or class probabilities, as
    ``torch.nn.functional.cross_entropy`` (see ``reference.classification.cross_entropy``)."""
    cd = _class_dim(input)
    logp = _log_softmax(input, cd)
    if target.is_floating_point():
        q = _effective_probability_targets(input, target, weight, label_smoothing)
        return reduce(-(q * logp).sum(cd), reduction)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    elementwise = torch.where(counts, -w_target * logp.gather(cd, safe.unsqueeze(cd)).squeeze(cd), 0.0)
    if label_smoothing > 0:
        num_classes = input.shape[cd]
        smooth = -(logp.sum(cd) if weight is None else (logp * _along_class(weight, input)).sum(cd))
        smooth = torch.where(counts, smooth, 0.0)
        elementwise = (1.0 - label_smoothing) * elementwise + (label_smoothing / num_classes) * smooth
    return _weighted_mean(elementwise, reduction, w_target.sum())


class CrossEntropyFunction(torch.autograd.Function):
    """Cross entropy with a softmax-minus-target backward; a floating (probability)
    target gets its gradient too, -(1 - eps) w_c log p_c.

    For class indices without smoothing (``returns_residuals``) the forward keeps the softmax,
    the labels and each element's share of the cotangent, and the backward is one product and
    one scatter: g w_i (p_i - onehot(y_i)), in place."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, weight, ignore_index, reduction, label_smoothing):
        if target.is_floating_point() or label_smoothing > 0:
            return cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing), None, None, None
        cd = _class_dim(input)
        p, log_p_at = _softmax_and_log_softmax_at(input, cd)
        loss, safe, share = _index_rows(log_p_at, input, target, weight, ignore_index, reduction, cd)
        return loss, p, safe, share

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, ctx.ignore_index, ctx.reduction, ctx.label_smoothing = inputs
        residuals = output[1:]
        if residuals[0] is not None:
            ctx.mark_non_differentiable(*residuals)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, weight, *residuals)

    @staticmethod
    def backward(ctx, grad_output, *_):
        input, target, weight, p, safe, share = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None, None
        cd = _class_dim(input)
        if p is not None:
            if torch.is_grad_enabled():  # recorded for a double backward: the softmax as a function of input
                p = _log_softmax(input, cd).exp()
            return _minus_target_rows(p, safe, share, grad_output, cd), None, None, None, None, None
        # Probability targets or smoothing: from the inputs.
        numel = input.numel() // input.shape[cd]
        logp = _log_softmax(input, cd)
        d_target = None
        if target.is_floating_point():
            q = _effective_probability_targets(input, target, weight, ctx.label_smoothing)
            g = _class_cotangent(grad_output, ctx.reduction, input, numel)
            if ctx.needs_input_grad[1]:
                d_target = -(1.0 - ctx.label_smoothing) * g * logp
                if weight is not None:
                    d_target = d_target * _along_class(weight, input)
        else:
            q, denominator = _effective_index_targets(input, target, weight, ctx.ignore_index, ctx.label_smoothing)
            g = _class_cotangent(grad_output, ctx.reduction, input, numel, _safe_denominator(denominator))
        return mass_minus_target(logp.exp(), q, g, cd, fresh=True), d_target, None, None, None, None


CrossEntropyLoss = module("cross_entropy", "CrossEntropyLoss", cross_entropy)
cross_entropy_function = function("cross_entropy", CrossEntropyFunction)


# -- nll_loss --------------------------------------------------------------------

def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log likelihood, as ``torch.nn.functional.nll_loss``."""
    cd = _class_dim(input)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    picked = input.gather(cd, safe.unsqueeze(cd)).squeeze(cd)
    return _weighted_mean(torch.where(counts, -w_target * picked, 0.0), reduction, w_target.sum())


class NLLLossFunction(torch.autograd.Function):
    """Returns the labels (ignored ones set to 0) and each element's share of the cotangent
    beside the loss (``returns_residuals``); neither depends on the input, so the backward is
    one scatter of -g share into zeros, recorded or not."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, weight, ignore_index, reduction):
        cd = _class_dim(input)
        return _index_rows(lambda index: input.gather(cd, index), input, target, weight, ignore_index, reduction, cd)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, ctx.ignore_index, ctx.reduction = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, *output[1:])

    @staticmethod
    def backward(ctx, grad_output, *_):
        input, safe, share = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None
        cd = _class_dim(input)
        src = -(grad_output * share).unsqueeze(cd)
        index = safe.unsqueeze(cd)
        zeros = torch.zeros_like(input)
        d_input = zeros.scatter_(cd, index, src) if in_place_ok() else zeros.scatter(cd, index, src)
        return d_input, None, None, None, None


NLLLoss = module("nll_loss", "NLLLoss", nll_loss)
nll_loss_function = function("nll_loss", NLLLossFunction)


# -- binary_cross_entropy --------------------------------------------------------

def _clamped_logs(input):
    """max(log x, -100) and max(log(1 - x), -100), as torch; at x = 0 or 1 the inner
    ``where`` keeps autograd's gradient finite (the clamped log is flat there)."""
    positive, below_one = input > 0, input < 1
    log_x = torch.where(positive, torch.log(torch.where(positive, input, 1.0)), LOG_CLAMP)
    log_1mx = torch.where(below_one, torch.log1p(-torch.where(below_one, input, 0.0)), LOG_CLAMP)
    return log_x.clamp_min(LOG_CLAMP), log_1mx.clamp_min(LOG_CLAMP)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """Binary cross entropy of probabilities, logs clamped at -100, as
    ``torch.nn.functional.binary_cross_entropy``."""
    log_x, log_1mx = _clamped_logs(input)
    elementwise = -(target * log_x + (1.0 - target) * log_1mx)
    return reduce(elementwise if weight is None else elementwise * weight, reduction)


def _zero_where_clamped(fresh, log):
    """``fresh`` (a quotient just made) with 0 where ``log`` is clamped at -100 or NaN: the
    derivative of the clamped log is 0 there, whatever the quotient (inf at x = 0 or 1). In
    place, by ``masked_fill_``: ``torch.where(mask, q, 0.0)`` runs element by element on the CPU
    (the two of the backward at 1e6 elements: 3.5-7.0 ms, against 1.1 ms). Neither autograd
    (the quotient's backward does not read it) nor vmap (the mask is batched no more than the
    quotient) forbids the write."""
    return fresh.masked_fill_((log > LOG_CLAMP).logical_not_(), 0.0)


class BinaryCrossEntropyFunction(torch.autograd.Function):
    """The true derivative of the clamped forward (torch's built-in backward divides by
    max(x (1 - x), 1e-12) instead). Returns the two clamped logs beside the loss
    (``returns_residuals``): the backward reads where each is clamped from them."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, weight, reduction):
        # No autograd here: the logs straight from log and log1p, then clamped (log 0 = -inf).
        # Each fresh tensor is written in place where that is safe: at 1e7 elements every
        # allocation is a new mapping whose pages fault in (~10 ms for 40 MB here).
        log_x = torch.log(input).clamp_min_(LOG_CLAMP)
        log_1mx = torch.neg(input).log1p_().clamp_min_(LOG_CLAMP)
        difference = log_x - log_1mx
        # t log x + (1 - t) log(1 - x)
        minus = (difference.mul_(target).add_(log_1mx) if in_place_ok()
                 else torch.addcmul(log_1mx, target, difference))
        if weight is not None:
            minus = minus.mul_(weight)
        return -reduce(minus, reduction), log_x, log_1mx

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, ctx.reduction = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, weight, *output[1:])

    @staticmethod
    def backward(ctx, grad_output, *_):
        input, target, weight, log_x, log_1mx = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None
        if torch.is_grad_enabled():  # recorded for a double backward: the logs as functions of input
            log_x, log_1mx = _clamped_logs(input)
        g = cotangent(grad_output, ctx.reduction, input.numel())
        if weight is not None:
            g = g * weight
        d_input = d_target = None
        if ctx.needs_input_grad[0]:
            one_minus_t = 1.0 - target
            above = one_minus_t.div_(1.0 - input) if in_place_ok() else one_minus_t / (1.0 - input)
            above = _zero_where_clamped(above, log_1mx)
            below = _zero_where_clamped(target / input, log_x)
            d_input = scaled(above.sub_(below) if in_place_ok() else above - below, g)
        if ctx.needs_input_grad[1]:
            d_target = scaled(log_1mx - log_x, g)
        return d_input, d_target, None, None


BCELoss = module("binary_cross_entropy", "BCELoss", binary_cross_entropy)
binary_cross_entropy_function = function("binary_cross_entropy", BinaryCrossEntropyFunction)


# -- binary_cross_entropy_with_logits --------------------------------------------

def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Binary cross entropy of logits in the stable softplus form, as
    ``torch.nn.functional.binary_cross_entropy_with_logits``."""
    log_sigmoid = F.logsigmoid(input)
    if pos_weight is None:
        # (1 - t) x - log s(x); not x - t x, which is inf - inf = NaN at x = +inf (torch's: +inf)
        elementwise = torch.rsub(target, 1.0).mul_(input).sub_(log_sigmoid)
    else:
        coef = 1.0 + (pos_weight - 1.0) * target
        elementwise = (1.0 - target) * input - coef * log_sigmoid
    return reduce(elementwise if weight is None else elementwise * weight, reduction)


class BinaryCrossEntropyWithLogitsFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, weight, reduction, pos_weight):
        return binary_cross_entropy_with_logits(input, target, weight, reduction, pos_weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, ctx.reduction, pos_weight = inputs
        ctx.save_for_backward(input, target, weight, pos_weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight, pos_weight = ctx.saved_tensors
        g = cotangent(grad_output, ctx.reduction, input.numel())
        if weight is not None:
            g = g * weight
        d_input = d_target = None
        if pos_weight is None:
            if ctx.needs_input_grad[0]:
                s = torch.sigmoid(input)
                d_input = scaled(s.sub_(target) if in_place_ok() else s - target, g)
            if ctx.needs_input_grad[1]:
                d_target = scaled(-input, g)
            return d_input, d_target, None, None, None
        coef = 1.0 + (pos_weight - 1.0) * target
        d_input = g * (coef * torch.sigmoid(input) - pos_weight * target)
        d_target = g * ((pos_weight - 1.0) * -F.logsigmoid(input) - input)
        return d_input, d_target, None, None, None


BCEWithLogitsLoss = module("binary_cross_entropy_with_logits", "BCEWithLogitsLoss", binary_cross_entropy_with_logits)
binary_cross_entropy_with_logits_function = function("binary_cross_entropy_with_logits",
                                                     BinaryCrossEntropyWithLogitsFunction)


# -- kl_div ----------------------------------------------------------------------

def _batch_size(input) -> int:
    return input.shape[0] if input.dim() else 1


def kl_div(input, target, reduction="mean", log_target=False):
    """KL divergence of log-probabilities ``input`` from ``target``, as ``torch.nn.functional.kl_div``."""
    if log_target:
        elementwise = torch.exp(target) * (target - input)
    else:
        elementwise = torch.xlogy(target, target) - target * input
    return reduce(elementwise, reduction, batch_size=_batch_size(input))


class KLDivFunction(torch.autograd.Function):
    """The target derivative log t + t/t - x is NaN at t = 0, as autograd's through xlogy."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, reduction, log_target):
        return kl_div(input, target, reduction, log_target)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction, ctx.log_target = inputs
        ctx.save_for_backward(input, target)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, input.numel(), batch_size=_batch_size(input))
        if ctx.log_target:
            e = torch.exp(target)
            return -e * g, e * (target - input + 1.0) * g, None, None
        return -target * g, (torch.log(target) + target / target - input) * g, None, None


KLDivLoss = module("kl_div", "KLDivLoss", kl_div)
kl_div_function = function("kl_div", KLDivFunction)


# -- the built-ins, the outside oracle ---------------------------------------------

builtin("cross_entropy", F.cross_entropy)
builtin("nll_loss", F.nll_loss)
builtin("binary_cross_entropy", F.binary_cross_entropy)
builtin("binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits)
builtin("kl_div", F.kl_div)


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
    if where.dim() != len(shape):
        for a in sorted(axes):
            where = where.unsqueeze(a)
    return where.expand(shape)


def _masked(x, w):
    return x if w is None else x.masked_fill(~w, 0.0)


def _where_kept(kept, x, fill):
    return x if kept is None else torch.where(kept, x, fill)


def _per_example_cotangent(grad_output, reduction, numel, axes):
    g = reduce_vjp(grad_output, reduction, numel)
    if reduction == "none":
        for a in sorted(axes):
            g = g.unsqueeze(a)
    return g


def _class_numel(shape, axes) -> int:
    n = 1
    for i, s in enumerate(shape):
        if i not in axes:
            n *= s
    return n


# -- softmax_cross_entropy_with_integer_labels (optax) --------------------------------

def _label_layout(logits, axis, where):
    """The class axes moved last in the order given and flattened; ``where`` alike."""
    nd = logits.dim()
    axes = _optax_axes(axis, nd)
    batch = tuple(i for i in range(nd) if i not in axes)
    perm = batch + axes
    batch_shape = tuple(logits.shape[i] for i in batch)
    classes = (math.prod([logits.shape[i] for i in axes]),)  # not -1: an empty batch leaves it open
    x = logits.permute(perm).reshape(batch_shape + classes)
    w = None
    if where is not None:
        w = _full_where(where, logits.shape, axes).permute(perm).reshape(batch_shape + classes)
    return x, w, perm


def _label_layout_back(flat, logits, perm):
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return flat.reshape(tuple(logits.shape[i] for i in perm)).permute(inverse)


def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1, where=None, reduction="none"):
    """optax's softmax cross entropy with integer labels along ``axis``, ``where`` masking
    classes (logits' shape) or examples."""
    x, w, _ = _label_layout(logits, axis, where)
    lse, kept = masked_logsumexp(x, -1, w)
    out = lse.squeeze(-1) - x.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if w is not None:
        out = torch.where(kept.squeeze(-1), out, 0.0)
    return reduce(out, reduction)


def _label_softmax_rows(x, labels):
    """Each row's loss log sum_k e^{x_k} - x_y and its softmax (no autograd; both NaN in a row
    without a finite maximum)."""
    z, e, s = shifted_exp_rows(x)
    out = s.log().sub_(z.gather(-1, labels.unsqueeze(-1))).squeeze(-1)
    return out, e.div_(s)


class SoftmaxCrossEntropyWithIntegerLabelsFunction(torch.autograd.Function):
    """Softmax over the kept classes minus the one-hot label.

    With one class axis and no ``where`` (``returns_residuals``) the forward keeps the softmax,
    and the backward is one product and one scatter, g (p - onehot(y)) in place; otherwise the
    backward starts again from the logits."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(logits, labels, axis, where, reduction):
        if where is not None or not isinstance(axis, int):
            return softmax_cross_entropy_with_integer_labels(logits, labels, axis, where, reduction), None
        out, p = _label_softmax_rows(logits.movedim(axis, -1), labels.long())
        return reduce(out, reduction), p

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, labels, ctx.axis, where, ctx.reduction = inputs
        residuals = output[1:]
        if residuals[0] is not None:
            ctx.mark_non_differentiable(*residuals)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(logits, labels, where, *residuals)

    @staticmethod
    def backward(ctx, grad_output, *_):
        logits, labels, where, p = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None
        if p is not None and not torch.is_grad_enabled():
            g = reduce_vjp(grad_output, ctx.reduction, labels.numel())
            if ctx.reduction == "none":
                g = g.unsqueeze(-1)
            d = p * g
            index = labels.long().unsqueeze(-1)
            minus_g = (-g).expand(index.shape)
            d = d.scatter_add_(-1, index, minus_g) if in_place_ok() else d.scatter_add(-1, index, minus_g)
            return d.movedim(-1, ctx.axis), None, None, None, None
        # where, several class axes, or recorded for a double backward: from the logits
        x, w, perm = _label_layout(logits, ctx.axis, where)
        lse, kept = masked_logsumexp(x, -1, w)
        p = _masked(torch.exp(x - _where_kept(kept, lse, 0.0)), w)
        d = p - one_hot(labels.long(), x.shape[-1], x.dtype)
        g = reduce_vjp(grad_output, ctx.reduction, labels.numel())
        if ctx.reduction == "none":
            g = g.unsqueeze(-1)
        d = _where_kept(kept, d * g, 0.0)
        return _label_layout_back(d, logits, perm), None, None, None, None


SoftmaxCrossEntropyWithIntegerLabels = module("softmax_cross_entropy_with_integer_labels",
                                              "SoftmaxCrossEntropyWithIntegerLabels",
                                              softmax_cross_entropy_with_integer_labels)
softmax_cross_entropy_with_integer_labels_function = function("softmax_cross_entropy_with_integer_labels",
                                                              SoftmaxCrossEntropyWithIntegerLabelsFunction)


# -- softmax_cross_entropy (optax) ------------------------------------------------------

def _softmax_parts(logits, axis, where):
    axes = _optax_axes(axis, logits.dim())
    w = _full_where(where, logits.shape, axes)
    lse, kept = masked_logsumexp(logits, axes, w)
    logp = _masked(logits - _where_kept(kept, lse, 0.0), w)
    return axes, w, logp, kept


def softmax_cross_entropy(logits, labels, axis=-1, where=None, reduction="none"):
    """optax's softmax cross entropy with probability labels along ``axis``, ``where`` masking."""
    axes, w, logp, _ = _softmax_parts(logits, axis, where)
    return reduce(-_masked(labels * logp, w).sum(axes), reduction)


def _probability_softmax_rows(x, y, reduction):
    """For probability labels ``y`` (no autograd): the reduced loss -sum_k y_k log p_k and the
    softmax (both NaN in a row without a finite maximum)."""
    z, e, s = shifted_exp_rows(x)
    products = (z - s.log()).mul_(y)
    return row_sum_reduced(products, reduction).neg_(), e.div_(s)


class SoftmaxCrossEntropyFunction(torch.autograd.Function):
    """Softmax over the kept classes times the kept label mass, minus the kept labels.

    With one class axis and no ``where`` (``returns_residuals``) the forward keeps the softmax,
    and the backward is g (p sum_k y_k - y); otherwise the backward starts again from the logits."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(logits, labels, axis, where, reduction):
        if where is not None or not isinstance(axis, int):
            return softmax_cross_entropy(logits, labels, axis, where, reduction), None
        return _probability_softmax_rows(logits.movedim(axis, -1), labels.movedim(axis, -1), reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, labels, ctx.axis, where, ctx.reduction = inputs
        if output[1] is not None:
            ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(logits, labels, where, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        logits, labels, where, p = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None
        if p is not None and not torch.is_grad_enabled():
            y = labels.movedim(ctx.axis, -1)
            g = reduce_vjp(grad_output, ctx.reduction, p.numel() // max(p.shape[-1], 1) if p.dim() else 1)
            if ctx.reduction == "none":
                g = g.unsqueeze(-1)
            return mass_minus_target(p, y, g).movedim(-1, ctx.axis), None, None, None, None
        # where, several class axes, or recorded for a double backward: from the logits
        axes, w, logp, kept = _softmax_parts(logits, ctx.axis, where)
        t = _masked(labels, w)
        p = _masked(_where_kept(kept, logp.exp(), 0.0), w)
        g = _per_example_cotangent(grad_output, ctx.reduction, _class_numel(logits.shape, axes), axes)
        return g * (p * t.sum(axes, keepdim=True) - t), None, None, None, None


SoftmaxCrossEntropy = module("softmax_cross_entropy", "SoftmaxCrossEntropy", softmax_cross_entropy)
softmax_cross_entropy_function = function("softmax_cross_entropy", SoftmaxCrossEntropyFunction)


# -- safe_softmax_cross_entropy (optax) -------------------------------------------------

def safe_softmax_cross_entropy(logits, labels, reduction="none"):
    """Softmax cross entropy over the last axis with 0 log 0 = 0: finite at -inf logits whose
    label is 0 (the ``where`` also keeps autograd's gradient there 0)."""
    logp = _log_softmax(logits, logits.dim() - 1)
    return reduce(-(labels * torch.where(labels != 0, logp, 0.0)).sum(-1), reduction)


class SafeSoftmaxCrossEntropyFunction(torch.autograd.Function):
    """Returns the softmax beside the loss (``returns_residuals``): the backward is
    g (p sum y - y), without a second softmax."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(logits, labels, reduction):
        logp = _log_softmax(logits, logits.dim() - 1)
        loss = reduce(-(labels * torch.where(labels != 0, logp, 0.0)).sum(-1), reduction)
        return loss, logp.exp_()

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, labels, ctx.reduction = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(logits, labels, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        logits, labels, p = ctx.saved_tensors
        if grad_output is None:
            return None, None, None
        if torch.is_grad_enabled():  # recorded for a double backward: the softmax as a function of the logits
            p = torch.softmax(logits, -1)
        g = _per_example_cotangent(grad_output, ctx.reduction, logits.numel() // logits.shape[-1], (logits.dim() - 1,))
        return mass_minus_target(p, labels, g), None, None


SafeSoftmaxCrossEntropy = module("safe_softmax_cross_entropy", "SafeSoftmaxCrossEntropy", safe_softmax_cross_entropy)
safe_softmax_cross_entropy_function = function("safe_softmax_cross_entropy", SafeSoftmaxCrossEntropyFunction)


# -- sigmoid_binary_cross_entropy (optax): an alias of binary_cross_entropy_with_logits ---

SigmoidBinaryCrossEntropy = alias("sigmoid_binary_cross_entropy", "SigmoidBinaryCrossEntropy")


# -- sigmoid_focal_loss (optax) ---------------------------------------------------------

def _focal_parts(logits, labels):
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    ce = -(labels * log_p + (1.0 - labels) * log_q)
    return log_p, log_q, ce, _log_one_minus_pt(labels, log_p, log_q)


def _log_one_minus_pt(labels, log_p, log_q):
    """log(1 - p_t) = log(y sigma(-x) + (1 - y) sigma(x)) from the log-sigmoids, as the reference's
    ``_log_one_minus_pt``: finite, with a finite derivative, where 1 - p_t underflows to 0."""
    return logaddexp(log_p + torch.log1p(-labels), log_q + torch.log(labels))


def _alpha_t(labels, alpha):
    return 1.0 if alpha is None else alpha * labels + (1.0 - alpha) * (1.0 - labels)


def sigmoid_focal_loss(logits, labels, *, alpha=None, gamma=2.0, reduction="none"):
    """optax's sigmoid focal loss in log space: finite at saturated logits and for gamma < 2."""
    _, _, ce, log_1m_pt = _focal_parts(logits, labels)
    return reduce(_alpha_t(labels, alpha) * ce * torch.exp(gamma * log_1m_pt), reduction)


class SigmoidFocalLossFunction(torch.autograd.Function):
    """alpha_t w (sigmoid(x) - y + gamma CE (1 - 2y) e^{log p + log q - log(1 - p_t)})."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits, labels, alpha, gamma, reduction):
        return sigmoid_focal_loss(logits, labels, alpha=alpha, gamma=gamma, reduction=reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, labels, ctx.alpha, ctx.gamma, ctx.reduction = inputs
        ctx.save_for_backward(logits, labels)

    @staticmethod
    def backward(ctx, grad_output):
        logits, labels = ctx.saved_tensors
        log_p, log_q, ce, log_1m_pt = _focal_parts(logits, labels)
        w = torch.exp(ctx.gamma * log_1m_pt)
        slope = (1.0 - 2.0 * labels) * torch.exp(log_p + log_q - log_1m_pt)
        g = reduce_vjp(grad_output, ctx.reduction, logits.numel())
        d = g * _alpha_t(labels, ctx.alpha) * w * (torch.sigmoid(logits) - labels + ctx.gamma * ce * slope)
        return d, None, None, None, None


SigmoidFocalLoss = module("sigmoid_focal_loss", "SigmoidFocalLoss", sigmoid_focal_loss)
sigmoid_focal_loss_function = function("sigmoid_focal_loss", SigmoidFocalLossFunction)


# -- poly_loss_cross_entropy (optax) -----------------------------------------------------

def poly_loss_cross_entropy(logits, labels, *, epsilon=2.0, axis=-1, where=None, reduction="none"):
    """optax's poly-1 loss: softmax cross entropy plus epsilon sum t (1 - p)."""
    axes, w, logp, kept = _softmax_parts(logits, axis, where)
    p = _masked(_where_kept(kept, logp.exp(), 0.0), w)
    ce = -_masked(labels * logp, w).sum(axes)
    return reduce(ce + epsilon * _masked(labels * (1.0 - p), w).sum(axes), reduction)


class PolyLossCrossEntropyFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(logits, labels, epsilon, axis, where, reduction):
        return poly_loss_cross_entropy(logits, labels, epsilon=epsilon, axis=axis, where=where, reduction=reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, labels, ctx.epsilon, ctx.axis, where, ctx.reduction = inputs
        ctx.save_for_backward(logits, labels, where)

    @staticmethod
    def backward(ctx, grad_output):
        logits, labels, where = ctx.saved_tensors
        axes, w, logp, kept = _softmax_parts(logits, ctx.axis, where)
        t = _masked(labels, w)
        p = _masked(_where_kept(kept, logp.exp(), 0.0), w)
        g = _per_example_cotangent(grad_output, ctx.reduction, _class_numel(logits.shape, axes), axes)
        tp = (t * p).sum(axes, keepdim=True)
        return g * (p * t.sum(axes, keepdim=True) - t - ctx.epsilon * p * (t - tp)), None, None, None, None, None


PolyLossCrossEntropy = module("poly_loss_cross_entropy", "PolyLossCrossEntropy", poly_loss_cross_entropy)
poly_loss_cross_entropy_function = function("poly_loss_cross_entropy", PolyLossCrossEntropyFunction)


# -- kl_divergence, kl_divergence_with_log_targets, generalized_kl_divergence (optax) -----

def _kl_sum(elementwise, axis, where):
    return _masked(elementwise, where).sum(_optax_axes(axis, elementwise.dim()))


def _kl_reduced(elementwise, axis, where, reduction):
    """``reduce(_kl_sum(elementwise, axis, where), reduction)``; without ``where``, ``mean`` and
    ``sum`` sum all the elements at once, not through the per-example sums (on the CPU a sum
    over a last dim of 4 classes, 3072 x 4: ~8 us, against ~2 us for the sum of all)."""
    if where is None and reduction in ("mean", "sum") and elementwise.numel():
        total = elementwise.sum()
        if reduction == "sum":
            return total
        axes = _optax_axes(axis, elementwise.dim())
        return total / _class_numel(elementwise.shape, axes)
    return reduce(_kl_sum(elementwise, axis, where), reduction)


def _kl_cotangent(grad_output, reduction, x, axis, where):
    axes = _optax_axes(axis, x.dim())
    g = _per_example_cotangent(grad_output, reduction, _class_numel(x.shape, axes), axes).expand(x.shape)
    return g if where is None else torch.where(where, g, 0.0)


def kl_divergence(log_predictions, targets, axis=-1, where=None, reduction="none"):
    """optax's KL divergence: torch's kl_div elementwise, summed along ``axis`` where kept."""
    return _kl_reduced(torch.xlogy(targets, targets) - targets * log_predictions, axis, where, reduction)


class KLDivergenceFunction(torch.autograd.Function):
    """The target derivative log t + t/t - x is NaN at t = 0, as autograd's through xlogy."""

    generate_vmap_rule = True

    @staticmethod
    def forward(log_predictions, targets, axis, where, reduction):
        return kl_divergence(log_predictions, targets, axis, where, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        log_predictions, targets, ctx.axis, where, ctx.reduction = inputs
        ctx.save_for_backward(log_predictions, targets, where)

    @staticmethod
    def backward(ctx, grad_output):
        x, t, where = ctx.saved_tensors
        g = _kl_cotangent(grad_output, ctx.reduction, x, ctx.axis, where)
        return -t * g, (torch.log(t) + t / t - x) * g, None, None, None


KLDivergence = module("kl_divergence", "KLDivergence", kl_divergence)
kl_divergence_function = function("kl_divergence", KLDivergenceFunction)


def kl_divergence_with_log_targets(log_predictions, log_targets, axis=-1, where=None, reduction="none"):
    """optax's KL divergence of log targets: exp(u) (u - x) summed along ``axis`` where kept."""
    return _kl_reduced(torch.exp(log_targets) * (log_targets - log_predictions), axis, where, reduction)


class KLDivergenceWithLogTargetsFunction(torch.autograd.Function):
    """Returns exp(log_targets) beside the loss (``returns_residuals``): the backward's
    -e g and e (u - x + 1) g reuse it."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(log_predictions, log_targets, axis, where, reduction):
        e = torch.exp(log_targets)
        return _kl_reduced(e * (log_targets - log_predictions), axis, where, reduction), e

    @staticmethod
    def setup_context(ctx, inputs, output):
        log_predictions, log_targets, ctx.axis, where, ctx.reduction = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(log_predictions, log_targets, where, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        x, u, where, e = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None
        if torch.is_grad_enabled():  # recorded for a double backward: exp(u) as a function of u
            e = torch.exp(u)
        eg = e * _kl_cotangent(grad_output, ctx.reduction, x, ctx.axis, where)
        d_u = None
        if ctx.needs_input_grad[1]:
            d_u = (u - x).add_(1.0).mul_(eg) if in_place_ok() else (u - x + 1.0) * eg
        return (-eg if ctx.needs_input_grad[0] else None), d_u, None, None, None


KLDivergenceWithLogTargets = module("kl_divergence_with_log_targets", "KLDivergenceWithLogTargets",
                                    kl_divergence_with_log_targets)
kl_divergence_with_log_targets_function = function("kl_divergence_with_log_targets",
                                                   KLDivergenceWithLogTargetsFunction)


def _exp_kept(x, where):
    """exp(x), and 1 where ``where`` drops x: a dropped entry (a padding's) may be large enough
    for exp to overflow, and its inf times the mask's 0 made the gradient NaN there."""
    return torch.exp(x if where is None else torch.where(where, x, 0.0))


def generalized_kl_divergence(log_predictions, targets, axis=-1, where=None, reduction="none"):
    """optax's generalized KL divergence: kl_divergence plus exp(x) - t, summed along ``axis``."""
    elementwise = (torch.xlogy(targets, targets) - targets * log_predictions + _exp_kept(log_predictions, where)
                   - targets)
    return _kl_reduced(elementwise, axis, where, reduction)


class GeneralizedKLDivergenceFunction(torch.autograd.Function):
    """The target derivative log t + t/t - 1 - x is NaN at t = 0, as autograd's through xlogy."""

    generate_vmap_rule = True

    @staticmethod
    def forward(log_predictions, targets, axis, where, reduction):
        return generalized_kl_divergence(log_predictions, targets, axis, where, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        log_predictions, targets, ctx.axis, where, ctx.reduction = inputs
        ctx.save_for_backward(log_predictions, targets, where)

    @staticmethod
    def backward(ctx, grad_output):
        x, t, where = ctx.saved_tensors
        g = _kl_cotangent(grad_output, ctx.reduction, x, ctx.axis, where)
        return (_exp_kept(x, where) - t) * g, (torch.log(t) + t / t - 1.0 - x) * g, None, None, None


GeneralizedKLDivergence = module("generalized_kl_divergence", "GeneralizedKLDivergence", generalized_kl_divergence)
generalized_kl_divergence_function = function("generalized_kl_divergence", GeneralizedKLDivergenceFunction)


# -- convex_kl_divergence (optax): an alias of generalized_kl_divergence -----------------

ConvexKLDivergence = alias("convex_kl_divergence", "ConvexKLDivergence")


# -- categorical_generalized_cross_entropy (Keras) -----------------------------------

def categorical_generalized_cross_entropy(y_true, y_pred, q=0.5, reduction="none"):
    """Keras's generalized cross entropy (1 - p[y]^q) / q."""
    p = y_pred.gather(-1, y_true.unsqueeze(-1)).squeeze(-1)
    return reduce((1.0 - p ** q) / q, reduction)


class CategoricalGeneralizedCrossEntropyFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(y_true, y_pred, q, reduction):
        return categorical_generalized_cross_entropy(y_true, y_pred, q, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y_true, y_pred, ctx.q, ctx.reduction = inputs
        ctx.save_for_backward(y_true, y_pred)

    @staticmethod
    def backward(ctx, grad_output):
        y_true, y_pred = ctx.saved_tensors
        index = y_true.unsqueeze(-1)
        p = y_pred.gather(-1, index)
        g = reduce_vjp(grad_output, ctx.reduction, y_true.numel())
        if ctx.reduction == "none":
            g = g.unsqueeze(-1)
        return None, torch.zeros_like(y_pred).scatter(-1, index, -g * p ** (ctx.q - 1.0)), None, None


CategoricalGeneralizedCrossEntropy = module("categorical_generalized_cross_entropy",
                                            "CategoricalGeneralizedCrossEntropy", categorical_generalized_cross_entropy)
categorical_generalized_cross_entropy_function = function("categorical_generalized_cross_entropy",
                                                          CategoricalGeneralizedCrossEntropyFunction)


# -- binary_focal_crossentropy (Keras) ------------------------------------------------

def _clipped_log(p):
    return torch.log(p.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON))


def _binary_focal_parts(y_true, y_pred, apply_class_balancing, alpha, gamma, from_logits, label_smoothing):
    y = y_true.to(y_pred.dtype)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        p, q = torch.sigmoid(y_pred), torch.sigmoid(-y_pred)
    else:
        p, q = y_pred, 1.0 - y_pred
    # log(clip(1 - p)) == log(1 - clip(p)), Keras's, without its float32 rounding of 1 - p
    bce = -(y * _clipped_log(p) + (1.0 - y) * _clipped_log(q))
    m = y * q + (1.0 - y) * p
    log_sigmoids = (F.logsigmoid(y_pred), F.logsigmoid(-y_pred)) if from_logits and gamma != 0 else None
    log_m = _log_one_minus_pt(y, *log_sigmoids) if log_sigmoids else None
    if gamma == 0:
        focal = 1.0
    elif from_logits:  # the same number, with a derivative that stays finite where the sigmoid saturates
        focal = torch.exp(gamma * log_m)
    else:
        focal = m ** gamma
    weight = y * alpha + (1.0 - y) * (1.0 - alpha) if apply_class_balancing else 1.0
    return y, p, q, bce, m, log_sigmoids, log_m, focal, weight




def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0,
                              from_logits=False, label_smoothing=0.0, axis=-1, reduction="none"):
    """Keras's binary focal cross entropy, clipped at 1e-7, averaged along ``axis``."""
    _, _, _, bce, _, _, _, focal, weight = _binary_focal_parts(y_true, y_pred, apply_class_balancing, alpha, gamma,
                                                               from_logits, label_smoothing)
    return reduce((weight * focal * bce).mean(_optax_axes(axis, y_pred.dim())), reduction)


class BinaryFocalCrossentropyFunction(torch.autograd.Function):
    """w (gamma m^(gamma-1) (1 - 2y) BCE + m^gamma dBCE/dp) dp/dx / n, with the clipped logs flat."""

    generate_vmap_rule = True

    @staticmethod
    def forward(y_true, y_pred, apply_class_balancing, alpha, gamma, from_logits, label_smoothing, axis, reduction):
        return binary_focal_crossentropy(y_true, y_pred, apply_class_balancing, alpha, gamma, from_logits,
                                         label_smoothing, axis, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (y_true, y_pred, ctx.apply_class_balancing, ctx.alpha, ctx.gamma, ctx.from_logits, ctx.label_smoothing,
         ctx.axis, ctx.reduction) = inputs
        ctx.save_for_backward(y_true, y_pred)

    @staticmethod
    def backward(ctx, grad_output):
        y_true, y_pred = ctx.saved_tensors
        gamma = ctx.gamma
        y, p, q, bce, m, log_sigmoids, log_m, focal, weight = _binary_focal_parts(
            y_true, y_pred, ctx.apply_class_balancing, ctx.alpha, gamma, ctx.from_logits, ctx.label_smoothing)
        inside = (p > KERAS_EPSILON) & (p < 1.0 - KERAS_EPSILON)
        if ctx.from_logits:  # dp/dx = p q folded in; m^(gamma-1) p q in logs
            d_bce = torch.where(inside, (1.0 - y) * p - y * q, 0.0)
            if gamma != 0:
                m_power = (gamma - 1.0) * log_m if gamma != 1 else 0.0  # m^0 = 1 where log m is -inf
                d_focal = gamma * (1.0 - 2.0 * y) * torch.exp(m_power + log_sigmoids[0] + log_sigmoids[1])
            else:
                d_focal = 0.0
        else:
            d_bce = torch.where(inside, (1.0 - y) / q - y / p, 0.0)
            d_focal = gamma * m ** (gamma - 1.0) * (1.0 - 2.0 * y) if gamma != 0 else 0.0
        axes = _optax_axes(ctx.axis, y_pred.dim())
        # the elements each mean is over (an empty batch has none); a list, as torch.compile cannot
        # trace a generator inside a backward
        n = math.prod([y_pred.shape[a] for a in axes])
        g = _per_example_cotangent(grad_output, ctx.reduction, _class_numel(y_pred.shape, axes), axes) / n
        d = weight * (d_focal * bce + focal * d_bce) * g
        return None, d, None, None, None, None, None, None, None


BinaryFocalCrossentropy = module("binary_focal_crossentropy", "BinaryFocalCrossentropy", binary_focal_crossentropy)
binary_focal_crossentropy_function = function("binary_focal_crossentropy", BinaryFocalCrossentropyFunction)


# -- categorical_focal_crossentropy (Keras) ------------------------------------------

def _categorical_focal_parts(y_true, y_pred, from_logits, label_smoothing, axis):
    y = y_true.to(y_pred.dtype)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + label_smoothing / y_true.shape[-1]  # Keras: the last axis, always
    out = torch.softmax(y_pred, axis) if from_logits else y_pred / y_pred.sum(axis, keepdim=True)
    clipped = out.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    return y, out, torch.log(clipped), 1.0 - clipped


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                                   axis=-1, reduction="none"):
    """Keras's categorical focal cross entropy: renormalized (or softmax) and clipped at 1e-7."""
    y, _, log_out, m = _categorical_focal_parts(y_true, y_pred, from_logits, label_smoothing, axis)
    return reduce((alpha * m ** gamma * (-y * log_out)).sum(axis), reduction)


class CategoricalFocalCrossentropyFunction(torch.autograd.Function):
    """D_k = alpha [inside] (gamma m^(gamma-1) y log o - m^gamma y / o), then through the softmax
    or the renormalization."""

    generate_vmap_rule = True

    @staticmethod
    def forward(y_true, y_pred, alpha, gamma, from_logits, label_smoothing, axis, reduction):
        return categorical_focal_crossentropy(y_true, y_pred, alpha, gamma, from_logits, label_smoothing, axis,
                                              reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y_true, y_pred, ctx.alpha, ctx.gamma, ctx.from_logits, ctx.label_smoothing, ctx.axis, ctx.reduction = inputs
        ctx.save_for_backward(y_true, y_pred)

    @staticmethod
    def backward(ctx, grad_output):
        y_true, y_pred = ctx.saved_tensors
        gamma, axis = ctx.gamma, ctx.axis
        y, out, log_out, m = _categorical_focal_parts(y_true, y_pred, ctx.from_logits, ctx.label_smoothing, axis)
        inside = (out > KERAS_EPSILON) & (out < 1.0 - KERAS_EPSILON)
        d_focal = gamma * m ** (gamma - 1.0) * y * log_out if gamma != 0 else 0.0
        d_out = ctx.alpha * torch.where(inside, d_focal - m ** gamma * y / out, 0.0)
        centered = d_out - (d_out * out).sum(axis, keepdim=True)
        d = out * centered if ctx.from_logits else centered / y_pred.sum(axis, keepdim=True)
        axes = _optax_axes(axis, y_pred.dim())
        g = _per_example_cotangent(grad_output, ctx.reduction, _class_numel(y_pred.shape, axes), axes)
        return None, d * g, None, None, None, None, None, None


CategoricalFocalCrossentropy = module("categorical_focal_crossentropy", "CategoricalFocalCrossentropy",
                                      categorical_focal_crossentropy)
categorical_focal_crossentropy_function = function("categorical_focal_crossentropy",
                                                   CategoricalFocalCrossentropyFunction)


# -- the built-ins (part 2): torch's own losses under the recorded mappings ---------

def _to_class_axis_1(x, axis):
    """The class axes of ``x`` flattened into one, moved to 1 (kept at 0 when nothing else is left)."""
    flat, _, _ = _label_layout(x, axis, None)
    return flat.movedim(-1, 1) if flat.dim() > 1 else flat


def _torch_softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1, where=None, reduction="none"):
    """torch.nn.functional.cross_entropy with the class axes moved to 1; a per-example where is
    ignore_index (per-class masks are not torch's)."""
    if where is not None and where.shape == logits.shape:
        raise NotImplementedError("torch's cross_entropy has no per-class mask")
    target = labels if where is None else torch.where(where, labels, -100)
    return reduce(F.cross_entropy(_to_class_axis_1(logits, axis), target, reduction="none"), reduction)


def _torch_probability_cross_entropy(logits, labels, axis):
    if axis is None:
        return F.cross_entropy(logits.reshape(-1), labels.reshape(-1), reduction="none")
    return F.cross_entropy(_to_class_axis_1(logits, axis), _to_class_axis_1(labels, axis), reduction="none")


def _torch_softmax_cross_entropy(logits, labels, axis=-1, where=None, reduction="none"):
    """torch.nn.functional.cross_entropy with probability targets, the class axes moved to 1; a
    per-example where zeroes rows (per-class masks are not torch's)."""
    if where is not None and where.shape == logits.shape:
        raise NotImplementedError("torch's cross_entropy has no per-class mask")
    out = _torch_probability_cross_entropy(logits, labels, axis)
    return reduce(out if where is None else torch.where(where, out, 0.0), reduction)


def _torch_safe_softmax_cross_entropy(logits, labels, reduction="none"):
    """torch.nn.functional.cross_entropy with probability targets over the last axis."""
    if bool(torch.isinf(logits).any()):
        raise NotImplementedError("torch's cross_entropy gives NaN for a -inf logit with a zero label")
    return reduce(_torch_probability_cross_entropy(logits, labels, -1), reduction)


def _torch_sigmoid_binary_cross_entropy(logits, labels, reduction="none"):
    return F.binary_cross_entropy_with_logits(logits, labels, reduction=reduction)


def _torch_kl(log_target: bool):
    def adapter(log_predictions, targets, axis=-1, where=None, reduction="none"):
        elementwise = F.kl_div(log_predictions, targets, reduction="none", log_target=log_target)
        if where is not None:
            elementwise = torch.where(where, elementwise, 0.0)
        return reduce(elementwise.sum(_optax_axes(axis, log_predictions.dim())), reduction)
    adapter.__doc__ = (f"torch.nn.functional.kl_div(log_target={log_target}, reduction='none'), masked by where "
                       "and summed along axis.")
    return adapter


builtin("softmax_cross_entropy_with_integer_labels", _torch_softmax_cross_entropy_with_integer_labels)
builtin("softmax_cross_entropy", _torch_softmax_cross_entropy)
builtin("safe_softmax_cross_entropy", _torch_safe_softmax_cross_entropy)
builtin("sigmoid_binary_cross_entropy", _torch_sigmoid_binary_cross_entropy)
builtin("kl_divergence", _torch_kl(False))
builtin("kl_divergence_with_log_targets", _torch_kl(True))
