"""Margin losses in torch: margin_ranking_loss, hinge_embedding_loss, soft_margin_loss,
multilabel_soft_margin_loss, multilabel_margin_loss, multi_margin_loss.

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
