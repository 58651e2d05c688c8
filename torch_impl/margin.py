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

import torch
import torch.nn.functional as F

from reference.reductions import reduce, reduce_vjp
from .core import builtin, function, module


def _per_sample_count(input) -> int:
    return input[..., 0].numel()


# -- margin_ranking_loss -----------------------------------------------------------

def margin_ranking_loss(input1, input2, target, margin=0.0, reduction="mean"):
    return reduce((-target * (input1 - input2) + margin).clamp_min(0.0), reduction)


class MarginRankingLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input1, input2, target, margin, reduction):
        return margin_ranking_loss(input1, input2, target, margin, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input1, input2, target, ctx.margin, ctx.reduction = inputs
        ctx.save_for_backward(input1, input2, target)

    @staticmethod
    def backward(ctx, grad_output):
        input1, input2, target = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, input1.numel())
        active = -target * (input1 - input2) + ctx.margin > 0
        d_input1 = torch.where(active, -target, torch.zeros_like(target)) * g
        return d_input1, -d_input1, None, None, None


MarginRankingLoss = module("margin_ranking_loss", "MarginRankingLoss", margin_ranking_loss)
margin_ranking_loss_function = function("margin_ranking_loss", MarginRankingLossFunction)


# -- hinge_embedding_loss ----------------------------------------------------------

def hinge_embedding_loss(input, target, margin=1.0, reduction="mean"):
    return reduce(torch.where(target == 1, input, (margin - input).clamp_min(0.0)), reduction)


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
        g = reduce_vjp(grad_output, ctx.reduction, input.numel())
        hinged = -(ctx.margin - input > 0).to(input.dtype)
        slope = torch.where(target == 1, torch.ones_like(input), hinged)
        return slope * g, None, None, None


HingeEmbeddingLoss = module("hinge_embedding_loss", "HingeEmbeddingLoss", hinge_embedding_loss)
hinge_embedding_loss_function = function("hinge_embedding_loss", HingeEmbeddingLossFunction)


# -- soft_margin_loss --------------------------------------------------------------

def soft_margin_loss(input, target, reduction="mean"):
    return reduce(-F.logsigmoid(target * input), reduction)


class SoftMarginLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, reduction):
        return soft_margin_loss(input, target, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction = inputs
        ctx.save_for_backward(input, target)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, input.numel())
        return -target * torch.sigmoid(-target * input) * g, None, None


SoftMarginLoss = module("soft_margin_loss", "SoftMarginLoss", soft_margin_loss)
soft_margin_loss_function = function("soft_margin_loss", SoftMarginLossFunction)


# -- multilabel_soft_margin_loss ---------------------------------------------------

def multilabel_soft_margin_loss(input, target, weight=None, reduction="mean"):
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
        g = reduce_vjp(grad_output, ctx.reduction, _per_sample_count(input)).unsqueeze(-1)
        d_input = (torch.sigmoid(input) - target) / input.shape[-1]
        if weight is not None:
            d_input = d_input * weight
        return d_input * g, None, None, None


MultiLabelSoftMarginLoss = module("multilabel_soft_margin_loss", "MultiLabelSoftMarginLoss",
                                  multilabel_soft_margin_loss)
multilabel_soft_margin_loss_function = function("multilabel_soft_margin_loss", MultilabelSoftMarginLossFunction)


# -- multilabel_margin_loss --------------------------------------------------------

def _multilabel_hinges(input, target):
    """Hinge arguments ``1 - x[t_k] + x[i]`` (..., K, C), the pairs that count, and the
    one-hot of the listed targets (..., K, C); as ``reference.margin._multilabel_hinges``."""
    classes = torch.arange(input.shape[-1], device=input.device)
    listed = torch.cumprod((target >= 0).to(torch.int64), dim=-1).bool()
    onehot = (target.unsqueeze(-1) == classes) & listed.unsqueeze(-1)
    is_target = onehot.any(dim=-2)
    x_target = torch.gather(input, -1, torch.where(listed, target, torch.zeros_like(target)))
    z = 1.0 - x_target.unsqueeze(-1) + input.unsqueeze(-2)
    counted = listed.unsqueeze(-1) & ~is_target.unsqueeze(-2)
    return z, counted, onehot


def multilabel_margin_loss(input, target, reduction="mean"):
    z, counted, _ = _multilabel_hinges(input, target)
    per_sample = torch.where(counted, z.clamp_min(0.0), torch.zeros_like(z)).sum((-2, -1)) / input.shape[-1]
    return reduce(per_sample, reduction)


class MultilabelMarginLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, reduction):
        return multilabel_margin_loss(input, target, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction = inputs
        ctx.save_for_backward(input, target)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        z, counted, onehot = _multilabel_hinges(input, target)
        g = reduce_vjp(grad_output, ctx.reduction, _per_sample_count(input)).unsqueeze(-1)
        active = (counted & (z > 0)).to(input.dtype)
        d_input = active.sum(-2) - (onehot.to(input.dtype) * active.sum(-1, keepdim=True)).sum(-2)
        return d_input / input.shape[-1] * g, None, None


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
        per_sample = per_sample * weight[target]
    return reduce(per_sample, reduction)


class MultiMarginLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, p, margin, weight, reduction):
        return multi_margin_loss(input, target, p, margin, weight, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.p, ctx.margin, weight, ctx.reduction = inputs
        ctx.save_for_backward(input, target, weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight = ctx.saved_tensors
        z, wrong = _multi_margin_hinges(input, target, ctx.margin)
        active = wrong & (z > 0)
        slope = torch.where(active, torch.ones_like(z) if ctx.p == 1 else 2.0 * z, torch.zeros_like(z))
        d_input = slope - torch.where(wrong, torch.zeros_like(z), slope.sum(-1, keepdim=True))
        g = reduce_vjp(grad_output, ctx.reduction, target.numel())
        if weight is not None:
            g = g * weight[target]
        return d_input / input.shape[-1] * g.unsqueeze(-1), None, None, None, None, None


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
        return torch.where(1.0 - x * y > 0, -y, torch.zeros_like(y)) * g, None, None


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
        return torch.where(-x * y > 0, -y, torch.zeros_like(y)) * g, None, None


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
    k = (z_sorted - cssv / rank > 0).sum(-1, keepdim=True)
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
    return reduce((h * h).mean(-1), reduction)


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
