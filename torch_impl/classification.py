"""Classification losses in torch: cross_entropy, nll_loss, binary_cross_entropy,
binary_cross_entropy_with_logits, kl_div.

Each loss reads as in ``reference/classification.py``: a functional over torch ops (the
``module`` variant, autograd does the backward) and an ``autograd.Function`` whose
backward is the reference's VJP written in torch ops. The backwards of cross_entropy
and nll_loss are softmax minus the effective targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference.reductions import reduce, reduce_vjp
from .core import _transforms_active, builtin, function, module

LOG_CLAMP = -100.0  # torch clamps each log of binary_cross_entropy at -100


# -- shared helpers ----------------------------------------------------------------

def _class_dim(input) -> int:
    return 0 if input.dim() == 1 else 1


def _along_class(v, input):
    shape = [1] * input.dim()
    shape[_class_dim(input)] = -1
    return v.reshape(shape)


def _in_place_ok() -> bool:
    # A backward may overwrite its own fresh tensors unless it is being recorded
    # (create_graph=True keeps them for the double backward) or runs under a functorch
    # transform (vmap may batch the cotangent but not the tensor written into).
    return not torch.is_grad_enabled() and not _transforms_active()


def _class_index_terms(input, target, weight, ignore_index):
    """The mask of targets that count, the labels with ignored ones set to class 0, and
    the weight of each element's target (0 where ignored)."""
    counts = target != ignore_index
    safe = torch.where(counts, target, 0)
    if weight is None:
        return counts, safe, counts.to(input.dtype)
    return counts, safe, torch.where(counts, weight[safe], 0.0)


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


def _softmax_minus_target(logp, q, g, cd):
    """g (p sum_c q - q), with p = exp(log_softmax): one softmax, written in place where safe."""
    p = logp.exp()
    total = q.sum(cd, keepdim=True)
    if _in_place_ok():
        return p.mul_(total).sub_(q).mul_(g)
    return g * (p * total - q)


# -- cross_entropy ---------------------------------------------------------------

def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross entropy of logits with class indices or class probabilities, as
    ``torch.nn.functional.cross_entropy`` (see ``reference.classification.cross_entropy``)."""
    cd = _class_dim(input)
    logp = torch.log_softmax(input, cd)
    if target.is_floating_point():
        q = _effective_probability_targets(input, target, weight, label_smoothing)
        return reduce(-(q * logp).sum(cd), reduction)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    elementwise = -w_target * logp.gather(cd, safe.unsqueeze(cd)).squeeze(cd)
    if label_smoothing > 0:
        num_classes = input.shape[cd]
        smooth = -(logp.sum(cd) if weight is None else (logp * _along_class(weight, input)).sum(cd))
        smooth = torch.where(counts, smooth, 0.0)
        elementwise = (1.0 - label_smoothing) * elementwise + (label_smoothing / num_classes) * smooth
    return _weighted_mean(elementwise, reduction, w_target.sum())


class CrossEntropyFunction(torch.autograd.Function):
    """Cross entropy with a softmax-minus-target backward; a floating (probability)
    target gets its gradient too, -(1 - eps) w_c log p_c."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, weight, ignore_index, reduction, label_smoothing):
        return cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, ctx.ignore_index, ctx.reduction, ctx.label_smoothing = inputs
        ctx.save_for_backward(input, target, weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight = ctx.saved_tensors
        cd = _class_dim(input)
        numel = input.numel() // input.shape[cd]
        logp = torch.log_softmax(input, cd)
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
        return _softmax_minus_target(logp, q, g, cd), d_target, None, None, None, None


CrossEntropyLoss = module("cross_entropy", "CrossEntropyLoss", cross_entropy)
cross_entropy_function = function("cross_entropy", CrossEntropyFunction)


# -- nll_loss --------------------------------------------------------------------

def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log likelihood, as ``torch.nn.functional.nll_loss``."""
    cd = _class_dim(input)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    picked = input.gather(cd, safe.unsqueeze(cd)).squeeze(cd)
    return _weighted_mean(-w_target * picked, reduction, w_target.sum())


class NLLLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, weight, ignore_index, reduction):
        return nll_loss(input, target, weight, ignore_index, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, ctx.ignore_index, ctx.reduction = inputs
        ctx.save_for_backward(input, target, weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight = ctx.saved_tensors
        cd = _class_dim(input)
        counts, safe, w_target = _class_index_terms(input, target, weight, ctx.ignore_index)
        g = reduce_vjp(grad_output, ctx.reduction, target.numel(), _safe_denominator(w_target.sum()))
        d_input = torch.zeros_like(input).scatter(cd, safe.unsqueeze(cd), (-w_target * g).unsqueeze(cd))
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


class BinaryCrossEntropyFunction(torch.autograd.Function):
    """The true derivative of the clamped forward (torch's built-in backward divides by
    max(x (1 - x), 1e-12) instead)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, weight, reduction):
        return binary_cross_entropy(input, target, weight, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, ctx.reduction = inputs
        ctx.save_for_backward(input, target, weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, input.numel())
        if weight is not None:
            g = g * weight
        log_x, log_1mx = _clamped_logs(input)
        slope = (torch.where(log_1mx > LOG_CLAMP, (1.0 - target) / (1.0 - input), 0.0)
                 - torch.where(log_x > LOG_CLAMP, target / input, 0.0))
        return g * slope, g * (log_1mx - log_x), None, None


BCELoss = module("binary_cross_entropy", "BCELoss", binary_cross_entropy)
binary_cross_entropy_function = function("binary_cross_entropy", BinaryCrossEntropyFunction)


# -- binary_cross_entropy_with_logits --------------------------------------------

def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Binary cross entropy of logits in the stable softplus form, as
    ``torch.nn.functional.binary_cross_entropy_with_logits``."""
    softplus_neg = -F.logsigmoid(input)
    coef = 1.0 if pos_weight is None else 1.0 + (pos_weight - 1.0) * target
    elementwise = (1.0 - target) * input + coef * softplus_neg
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
        g = reduce_vjp(grad_output, ctx.reduction, input.numel())
        if weight is not None:
            g = g * weight
        if pos_weight is None:
            return g * (torch.sigmoid(input) - target), -g * input, None, None, None
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
