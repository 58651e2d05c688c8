"""Margin losses in torch: margin_ranking_loss, hinge_embedding_loss, soft_margin_loss,
multilabel_soft_margin_loss, multilabel_margin_loss, multi_margin_loss; then optax's and
Keras's hinge-type losses: hinge_loss, perceptron_loss, sparsemax_loss, multiclass_hinge_loss,
multiclass_perceptron_loss, multiclass_sparsemax_loss, squared_hinge, categorical_hinge.

Each loss reads as in ``reference/margin.py``: a functional over torch ops (the
``module`` variant, autograd does the backward) and an ``autograd.Function`` whose
backward is the reference's VJP written in torch ops. Class indices become one-hot
masks by comparison with ``arange(C)``, so no backward needs a scatter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference.reductions import reduce, reduce_vjp
from .core import (builtin, class_major, cotangent, function, in_place_ok, indicator, module, row_mean_reduced, scaled,
                   scatter_value, take)


def _per_sample_count(input) -> int:
    return math.prod(input.shape[:-1])


# -- margin_ranking_loss -----------------------------------------------------------

def margin_ranking_loss(input1, input2, target, margin=0.0, reduction="mean"):
    return reduce(torch.rsub(target * (input1 - input2), margin).clamp_min(0.0), reduction)


class MarginRankingLossFunction(torch.autograd.Function):
    """Returns the hinges max(0, margin - t (x1 - x2)) beside the loss (``returns_residuals``),
    computed in one fresh tensor: the hinge is open where it is positive (margin - z > 0 is
    z < margin, exactly, in floating point too), so the backward reads the hinges, the target
    and the cotangent. Not for ``none``, whose output is the hinges themselves."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input1, input2, target, margin, reduction):
        z = input2 - input1  # under vmap the target may be batched where the inputs are not
        hinges = (z.mul_(target) if in_place_ok() else z * target).add_(margin).clamp_min_(0.0)
        return (hinges, None) if reduction == "none" else (reduce(hinges, reduction), hinges)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input1, input2, target, ctx.margin, ctx.reduction = inputs
        if output[1] is not None:
            ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input1, input2, target, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        input1, input2, target, hinges = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None
        g = cotangent(grad_output, ctx.reduction, input1.numel(), -1.0)
        if hinges is None or torch.is_grad_enabled():  # (recorded for a double backward: from the inputs)
            open_hinges = indicator(torch.lt, target * (input1 - input2), ctx.margin)
        else:
            open_hinges = indicator(torch.gt, hinges, 0.0)
        d_input1 = scaled(scaled(open_hinges, target), g)
        return d_input1, (-d_input1 if ctx.needs_input_grad[1] else None), None, None, None


MarginRankingLoss = module("margin_ranking_loss", "MarginRankingLoss", margin_ranking_loss)
margin_ranking_loss_function = function("margin_ranking_loss", MarginRankingLossFunction)


# -- hinge_embedding_loss ----------------------------------------------------------

def hinge_embedding_loss(input, target, margin=1.0, reduction="mean"):
    return reduce(torch.where(target == 1, input, torch.rsub(input, margin).clamp_min(0.0)), reduction)


class HingeEmbeddingLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, margin, reduction):
        return hinge_embedding_loss(input, target, margin, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.margin, ctx.reduction = inputs
        ctx.save_for_backward(input, target)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        g = cotangent(grad_output, ctx.reduction, input.numel())
        # 1 where t = 1, else -[x < margin]: [x < margin] (t - 1) / 2 + (t + 1) / 2 for t in {-1, 1}
        positive = (target + 1.0) * 0.5
        slope = torch.addcmul(positive, indicator(torch.lt, input, ctx.margin), positive - 1.0)
        # The target (+1 or -1) only selects a branch: its derivative is 0 wherever it has one.
        d_target = torch.zeros_like(target) if ctx.needs_input_grad[1] else None
        return scaled(slope, g), d_target, None, None


HingeEmbeddingLoss = module("hinge_embedding_loss", "HingeEmbeddingLoss", hinge_embedding_loss)
hinge_embedding_loss_function = function("hinge_embedding_loss", HingeEmbeddingLossFunction)


# -- soft_margin_loss --------------------------------------------------------------

def soft_margin_loss(input, target, reduction="mean"):
    return reduce(-F.logsigmoid(target * input), reduction)


class SoftMarginLossFunction(torch.autograd.Function):
    """Returns the margins t x beside the loss (``returns_residuals``): the backward's
    sigmoid reads them, not a second product."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, reduction):
        margins = target * input
        if reduction == "none":
            return F.logsigmoid(margins).neg_(), margins
        return -reduce(F.logsigmoid(margins), reduction), margins  # negated once reduced

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        input, target, margins = ctx.saved_tensors
        if grad_output is None:
            return None, None, None
        if torch.is_grad_enabled():  # recorded for a double backward: the margins as a function of the input
            margins = target * input
        g = cotangent(grad_output, ctx.reduction, input.numel())
        # -t sigmoid(-t x) = t (sigmoid(t x) - 1)
        s = torch.sigmoid(margins)
        slope = s.sub_(1.0).mul_(target) if in_place_ok() else (s - 1.0) * target
        return scaled(slope, g), None, None


SoftMarginLoss = module("soft_margin_loss", "SoftMarginLoss", soft_margin_loss)
soft_margin_loss_function = function("soft_margin_loss", SoftMarginLossFunction)


# -- multilabel_soft_margin_loss ---------------------------------------------------

def multilabel_soft_margin_loss(input, target, weight=None, reduction="mean"):
    # -(t log s(x) + (1 - t) log s(-x)), as torch: the one-log-sigmoid form (1 - t) x - log s(x)
    # is inf - inf = NaN at an infinite x where torch's is +inf
    elementwise = -(target * F.logsigmoid(input) + (1.0 - target) * F.logsigmoid(-input))
    if weight is not None:
        elementwise = elementwise * weight
    return reduce(elementwise.sum(-1) / input.shape[-1], reduction)


class MultilabelSoftMarginLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, weight, reduction):
        return multilabel_soft_margin_loss(input, target, weight, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, ctx.reduction = inputs
        ctx.save_for_backward(input, target, weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight = ctx.saved_tensors
        g = cotangent(grad_output, ctx.reduction, _per_sample_count(input), 1.0 / max(input.shape[-1], 1))
        if ctx.reduction == "none":
            g = g.unsqueeze(-1)
        if weight is not None:
            g = g * weight
        s = torch.sigmoid(input)
        return scaled(s.sub_(target) if in_place_ok() else s - target, g), None, None, None


MultiLabelSoftMarginLoss = module("multilabel_soft_margin_loss", "MultiLabelSoftMarginLoss",
                                  multilabel_soft_margin_loss)
multilabel_soft_margin_loss_function = function("multilabel_soft_margin_loss", MultilabelSoftMarginLossFunction)


# -- multilabel_margin_loss --------------------------------------------------------

def _multilabel_hinges(input, target):
    """In class-major layout (``class_major``): the hinge arguments ``1 - x[t_k] + x[c]``
    (K, C, B), the bool mask of the pairs that do not count (t_k not listed, or c a target), and
    the labels with unlisted ones set to 0 (K, B); as ``reference.margin._multilabel_hinges``,
    with the target classes marked by a scatter. The pairs that do not count are dropped by
    selection, not by a product: a hinge is +inf where an input is infinite (inf * 0 is NaN)."""
    num_classes = input.shape[-1]
    x, t = class_major(input), class_major(target)
    listed = (t >= 0).cumprod(0).bool()  # before the first -1
    safe = t.clamp_min(0)  # entries after the first -1 lie in [-1, C)
    marked = torch.zeros((num_classes + 1,) + t.shape[1:], dtype=torch.bool, device=input.device)
    rows = torch.where(listed, t, num_classes)  # row C takes the unlisted
    marked = scatter_value(marked, 0, rows, True)
    dropped = (~listed).unsqueeze(1) | marked[:num_classes].unsqueeze(0)
    return (x.unsqueeze(0) - x.gather(0, safe).unsqueeze(1)) + 1.0, dropped, safe


def _per_sample_shape(input):
    return input.shape[:-1]


def multilabel_margin_loss(input, target, reduction="mean"):
    z, dropped, _ = _multilabel_hinges(input, target)
    per_sample = torch.where(dropped, 0.0, z.clamp_min(0.0)).sum((0, 1)) / input.shape[-1]
    return reduce(per_sample.reshape(_per_sample_shape(input)), reduction)


class MultilabelMarginLossFunction(torch.autograd.Function):
    """Returns the hinges (0 where a pair does not count) and the labels, class-major, beside
    the loss (``returns_residuals``); the gradient is piecewise constant in the input, so the
    backward reads only them and the cotangent, recorded or not."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, reduction):
        z, dropped, safe = _multilabel_hinges(input, target)
        hinges = z.clamp_min_(0.0).masked_fill_(dropped, 0.0)
        per_sample = hinges.sum((0, 1)).reshape(_per_sample_shape(input))
        return reduce(per_sample, reduction) / input.shape[-1], hinges, safe

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*output[1:])
        ctx.shape = input.shape

    @staticmethod
    def backward(ctx, grad_output, *_):
        hinges, safe = ctx.saved_tensors
        if grad_output is None:
            return None, None, None
        num_classes = ctx.shape[-1]
        active = indicator(torch.gt, hinges, 0.0)
        # d/dx_c = (sum_k a_kc - sum over the k with t_k = c of sum_i a_ki) / C, class-major
        d_input = active.sum(0).scatter_add_(0, safe, active.sum(1).neg_())
        g = cotangent(grad_output, ctx.reduction, safe.shape[-1], 1.0 / num_classes)
        if ctx.reduction == "none":
            g = g.reshape(1, -1)
        return scaled(d_input, g).t().reshape(ctx.shape), None, None


MultiLabelMarginLoss = module("multilabel_margin_loss", "MultiLabelMarginLoss", multilabel_margin_loss)
multilabel_margin_loss_function = function("multilabel_margin_loss", MultilabelMarginLossFunction)


# -- multi_margin_loss -------------------------------------------------------------

def _multi_margin_hinges(input, target, margin):
    classes = torch.arange(input.shape[-1], device=input.device)
    x_target = torch.gather(input, -1, target.unsqueeze(-1))
    return margin - x_target + input, target.unsqueeze(-1) != classes


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    z, wrong = _multi_margin_hinges(input, target, margin)
    h = torch.where(wrong, z.clamp_min(0.0), torch.zeros_like(z))
    per_sample = (h if p == 1 else h * h).sum(-1) / input.shape[-1]
    if weight is not None:
        per_sample = per_sample * take(weight, target)
    return reduce(per_sample, reduction)


def _open_hinges(input, target, margin):
    """max(0, margin - x_y + x_c), 0 at c = y, class-major (C, B), written in place (no
    autograd); and the labels as a (1, B) index."""
    x = class_major(input)
    index = target.reshape(1, -1)
    return scatter_value((x - x.gather(0, index)).add_(margin).clamp_min_(0.0), 0, index, 0.0), index


class MultiMarginLossFunction(torch.autograd.Function):
    """Returns the open hinges, class-major, beside the loss (``returns_residuals``): the
    slope is [h > 0] (p = 1) or 2 h (p = 2) at the wrong classes, minus their sum at the target."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, p, margin, weight, reduction):
        h, index = _open_hinges(input, target, margin)
        per_sample = (h if p == 1 else h * h).sum(0).reshape(target.shape)
        if weight is not None:
            per_sample = per_sample * take(weight, target)
        return reduce(per_sample, reduction) / input.shape[-1], h

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.p, ctx.margin, weight, ctx.reduction = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, weight, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        input, target, weight, h = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None, None
        g = cotangent(grad_output, ctx.reduction, target.numel(), 1.0 / input.shape[-1])
        if weight is not None:
            g = g * take(weight, target)
        if ctx.p == 2 and torch.is_grad_enabled():  # recorded for a double backward: 2 h as a function of input
            z, wrong = _multi_margin_hinges(input, target, ctx.margin)
            slope = 2.0 * torch.where(wrong, z.clamp_min(0.0), 0.0)
            d_input = slope - torch.where(wrong, 0.0, slope.sum(-1, keepdim=True))
            return d_input * g.unsqueeze(-1), None, None, None, None, None
        slope = indicator(torch.gt, h, 0.0) if ctx.p == 1 else 2.0 * h
        index = target.reshape(1, -1)
        total = slope.sum(0, keepdim=True)
        d_input = slope.scatter_(0, index, total.neg_()) if in_place_ok() else slope.scatter(0, index, -total)
        d_input = scaled(d_input, g.reshape(1, -1) if ctx.reduction == "none" else g)
        return d_input.t().reshape(input.shape), None, None, None, None, None


MultiMarginLoss = module("multi_margin_loss", "MultiMarginLoss", multi_margin_loss)
multi_margin_loss_function = function("multi_margin_loss", MultiMarginLossFunction)


# -- the built-ins, the outside oracle ---------------------------------------------

builtin("margin_ranking_loss", F.margin_ranking_loss)
builtin("hinge_embedding_loss", F.hinge_embedding_loss)
builtin("soft_margin_loss", F.soft_margin_loss)
builtin("multilabel_soft_margin_loss", F.multilabel_soft_margin_loss)
builtin("multilabel_margin_loss", F.multilabel_margin_loss)
builtin("multi_margin_loss", F.multi_margin_loss)


# ==================================================================================
# Part 2: optax's and Keras's hinge-type losses (reduction="none" by default), as in
# reference/margin.py.
# ==================================================================================

def _onehot(labels, num_classes, dtype):
    return (labels.unsqueeze(-1) == torch.arange(num_classes, device=labels.device)).to(dtype)


def _take_label(scores, labels):
    return torch.gather(scores, -1, labels.unsqueeze(-1)).squeeze(-1)


# -- hinge_loss --------------------------------------------------------------------

def hinge_loss(predictor_outputs, targets, reduction="none"):
    return reduce((1.0 - predictor_outputs * targets).clamp_min(0.0), reduction)


class HingeLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(predictor_outputs, targets, reduction):
        return hinge_loss(predictor_outputs, targets, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        predictor_outputs, targets, ctx.reduction = inputs
        ctx.save_for_backward(predictor_outputs, targets)

    @staticmethod
    def backward(ctx, grad_output):
        x, y = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, x.numel())
        # -y g where the hinge is open: 1 - x y > 0 is x y < 1 (exactly, in floating point too)
        return scaled(scaled(indicator(torch.lt, x * y, 1.0), y), -g), None, None


HingeLoss = module("hinge_loss", "HingeLoss", hinge_loss)
hinge_loss_function = function("hinge_loss", HingeLossFunction)


# -- perceptron_loss ---------------------------------------------------------------

def perceptron_loss(predictor_outputs, targets, reduction="none"):
    return reduce((-predictor_outputs * targets).clamp_min(0.0), reduction)


class PerceptronLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(predictor_outputs, targets, reduction):
        return perceptron_loss(predictor_outputs, targets, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        predictor_outputs, targets, ctx.reduction = inputs
        ctx.save_for_backward(predictor_outputs, targets)

    @staticmethod
    def backward(ctx, grad_output):
        x, y = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, x.numel())
        # -y g where -x y > 0, that is x y < 0
        return scaled(scaled(indicator(torch.lt, x * y, 0.0), y), -g), None, None


PerceptronLoss = module("perceptron_loss", "PerceptronLoss", perceptron_loss)
perceptron_loss_function = function("perceptron_loss", PerceptronLossFunction)


# -- sparsemax_loss ----------------------------------------------------------------

def sparsemax_loss(logits, labels, reduction="none"):
    u = torch.where(labels.bool(), -logits, logits)
    plus = torch.where(u <= -1.0, torch.zeros_like(u), torch.where(u >= 1.0, u, (u + 1.0) ** 2 / 4.0))
    return reduce(plus, reduction)


class SparsemaxLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(logits, labels, reduction):
        return sparsemax_loss(logits, labels, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, labels, ctx.reduction = inputs
        ctx.save_for_backward(logits, labels)

    @staticmethod
    def backward(ctx, grad_output):
        logits, labels = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, logits.numel())
        sparse_sigmoid = ((logits + 1.0) / 2.0).clamp(0.0, 1.0)
        return (sparse_sigmoid - labels.to(logits.dtype)) * g, None, None


SparsemaxLoss = module("sparsemax_loss", "SparsemaxLoss", sparsemax_loss)
sparsemax_loss_function = function("sparsemax_loss", SparsemaxLossFunction)


# -- multiclass_hinge_loss ---------------------------------------------------------

def multiclass_hinge_loss(scores, labels, reduction="none"):
    z = scores + 1.0 - _onehot(labels, scores.shape[-1], scores.dtype)
    return reduce(z.amax(-1) - _take_label(scores, labels), reduction)


class MulticlassHingeLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(scores, labels, reduction):
        return multiclass_hinge_loss(scores, labels, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, labels, ctx.reduction = inputs
        ctx.save_for_backward(scores, labels)

    @staticmethod
    def backward(ctx, grad_output):
        scores, labels = ctx.saved_tensors
        num_classes = scores.shape[-1]
        onehot = _onehot(labels, num_classes, scores.dtype)
        winner = _onehot(torch.argmax(scores + 1.0 - onehot, dim=-1), num_classes, scores.dtype)
        g = reduce_vjp(grad_output, ctx.reduction, _per_sample_count(scores))
        return (winner - onehot) * g.unsqueeze(-1), None, None


MulticlassHingeLoss = module("multiclass_hinge_loss", "MulticlassHingeLoss", multiclass_hinge_loss)
multiclass_hinge_loss_function = function("multiclass_hinge_loss", MulticlassHingeLossFunction)


# -- multiclass_perceptron_loss ----------------------------------------------------

def multiclass_perceptron_loss(scores, labels, reduction="none"):
    return reduce(scores.amax(-1) - _take_label(scores, labels), reduction)


class MulticlassPerceptronLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(scores, labels, reduction):
        return multiclass_perceptron_loss(scores, labels, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, labels, ctx.reduction = inputs
        ctx.save_for_backward(scores, labels)

    @staticmethod
    def backward(ctx, grad_output):
        scores, labels = ctx.saved_tensors
        num_classes = scores.shape[-1]
        winner = _onehot(torch.argmax(scores, dim=-1), num_classes, scores.dtype)
        g = reduce_vjp(grad_output, ctx.reduction, _per_sample_count(scores))
        return (winner - _onehot(labels, num_classes, scores.dtype)) * g.unsqueeze(-1), None, None


MulticlassPerceptronLoss = module("multiclass_perceptron_loss", "MulticlassPerceptronLoss",
                                  multiclass_perceptron_loss)
multiclass_perceptron_loss_function = function("multiclass_perceptron_loss", MulticlassPerceptronLossFunction)


# -- multiclass_sparsemax_loss -----------------------------------------------------

def sparsemax(z):
    """The projection of each row onto the probability simplex, as ``reference.margin.sparsemax``."""
    z_sorted = torch.sort(z, dim=-1, descending=True).values
    cssv = z_sorted.cumsum(-1) - 1.0
    rank = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    k = (z_sorted - cssv / rank > 0).sum(-1, keepdim=True).clamp_min(1)  # a NaN row: k = 1, tau NaN
    tau = torch.gather(cssv, -1, k - 1) / k.to(z.dtype)
    return (z - tau).clamp_min(0.0)


def multiclass_sparsemax_loss(scores, labels, reduction="none"):
    p = sparsemax(scores)
    shifted = torch.where(p > 0, scores - _take_label(scores, labels).unsqueeze(-1), torch.zeros_like(scores))
    return reduce((p * shifted).sum(-1) + 0.5 * (1.0 - (p * p).sum(-1)), reduction)


class MulticlassSparsemaxLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(scores, labels, reduction):
        return multiclass_sparsemax_loss(scores, labels, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, labels, ctx.reduction = inputs
        ctx.save_for_backward(scores, labels)

    @staticmethod
    def backward(ctx, grad_output):
        scores, labels = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, _per_sample_count(scores))
        d_scores = sparsemax(scores) - _onehot(labels, scores.shape[-1], scores.dtype)
        return d_scores * g.unsqueeze(-1), None, None


MulticlassSparsemaxLoss = module("multiclass_sparsemax_loss", "MulticlassSparsemaxLoss", multiclass_sparsemax_loss)
multiclass_sparsemax_loss_function = function("multiclass_sparsemax_loss", MulticlassSparsemaxLossFunction)


# -- squared_hinge (Keras) ---------------------------------------------------------

def keras_hinge_labels(y_true):
    """Keras's {0, 1} -> {-1, 1} conversion, decided over the whole array."""
    is_binary = ((y_true == 0) | (y_true == 1)).all()
    return torch.where(is_binary, 2.0 * y_true - 1.0, y_true)


def squared_hinge(y_true, y_pred, reduction="none"):
    y = keras_hinge_labels(y_true.to(y_pred.dtype))
    h = (1.0 - y * y_pred).clamp_min(0.0)
    return row_mean_reduced(h * h, reduction)


class SquaredHingeFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(y_true, y_pred, reduction):
        return squared_hinge(y_true, y_pred, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y_true, y_pred, ctx.reduction = inputs
        ctx.save_for_backward(y_true, y_pred)

    @staticmethod
    def backward(ctx, grad_output):
        y_true, y_pred = ctx.saved_tensors
        y = keras_hinge_labels(y_true.to(y_pred.dtype))
        h = (1.0 - y * y_pred).clamp_min(0.0)
        g = reduce_vjp(grad_output, ctx.reduction, _per_sample_count(y_pred))
        return None, -2.0 * y * h / y_pred.shape[-1] * g.unsqueeze(-1), None


SquaredHinge = module("squared_hinge", "SquaredHinge", squared_hinge)
squared_hinge_function = function("squared_hinge", SquaredHingeFunction)


# -- categorical_hinge (Keras) -----------------------------------------------------

def categorical_hinge(y_true, y_pred, reduction="none"):
    y = y_true.to(y_pred.dtype)
    pos = (y * y_pred).sum(-1)
    neg = ((1.0 - y) * y_pred).amax(-1)
    return reduce((neg - pos + 1.0).clamp_min(0.0), reduction)


class CategoricalHingeFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(y_true, y_pred, reduction):
        return categorical_hinge(y_true, y_pred, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y_true, y_pred, ctx.reduction = inputs
        ctx.save_for_backward(y_true, y_pred)

    @staticmethod
    def backward(ctx, grad_output):
        y_true, y_pred = ctx.saved_tensors
        y = y_true.to(y_pred.dtype)
        candidates = (1.0 - y) * y_pred
        active = (candidates.amax(-1) - (y * y_pred).sum(-1) + 1.0 > 0).unsqueeze(-1)
        winner = _onehot(torch.argmax(candidates, dim=-1), y_pred.shape[-1], y_pred.dtype)
        slope = torch.where(active, (1.0 - y) * winner - y, torch.zeros_like(y))
        g = reduce_vjp(grad_output, ctx.reduction, _per_sample_count(y_pred))
        return None, slope * g.unsqueeze(-1), None


CategoricalHinge = module("categorical_hinge", "CategoricalHinge", categorical_hinge)
categorical_hinge_function = function("categorical_hinge", CategoricalHingeFunction)


# -- the built-ins (part 2): torch has these two under another name -----------------

def _margin_ranking_hinge(predictor_outputs, targets, reduction="none"):
    """hinge_loss == margin_ranking_loss(x, 0, y, margin=1)."""
    return F.margin_ranking_loss(predictor_outputs, torch.zeros_like(predictor_outputs), targets,
                                 margin=1.0, reduction=reduction)


def _margin_ranking_perceptron(predictor_outputs, targets, reduction="none"):
    """perceptron_loss == margin_ranking_loss(x, 0, y, margin=0)."""
    return F.margin_ranking_loss(predictor_outputs, torch.zeros_like(predictor_outputs), targets,
                                 margin=0.0, reduction=reduction)


builtin("hinge_loss", _margin_ranking_hinge)
builtin("perceptron_loss", _margin_ranking_perceptron)
