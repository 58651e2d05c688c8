"""The seed articles' losses in torch: q_error, binomial_deviance, contrastive_loss,
gaussian_kernel_loss, batch_sum_squared_error.

Each loss reads as in ``reference/custom.py``: a functional over torch ops (the
``module`` variant, autograd does the backward) and an ``autograd.Function`` whose
backward is the reference's VJP written in torch ops. None of them is a torch loss;
``batch_sum_squared_error`` is ``F.mse_loss(reduction="sum") / N``, registered as its
built-in so that the recorded mapping is tested.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference.reductions import reduce, reduce_vjp
from .core import builtin, function, module, scaled


# -- q_error ---------------------------------------------------------------------

def q_error(input, target, log_space=True, reduction="mean"):
    if log_space:
        elementwise = torch.expm1((input - target).abs())
    else:
        elementwise = (input - target).abs() / torch.minimum(input, target)
    return reduce(elementwise, reduction)


class QErrorFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, log_space, reduction):
        return q_error(input, target, log_space, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.log_space, ctx.reduction = inputs
        ctx.save_for_backward(input, target)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, input.numel())
        if ctx.log_space:
            d = input - target
            d_input = torch.sign(d) * d.abs().exp() * g
            return d_input, -d_input, None, None
        over, under = input > target, input < target
        zero = torch.zeros_like(input)
        d_input = torch.where(over, 1.0 / target, torch.where(under, -target / input ** 2, zero)) * g
        d_target = torch.where(over, -input / target ** 2, torch.where(under, 1.0 / input, zero)) * g
        return d_input, d_target, None, None


QError = module("q_error", "QError", q_error)
q_error_function = function("q_error", QErrorFunction)


# -- binomial_deviance -----------------------------------------------------------

def _cosine_matrix(x):
    r = (x * x).sum(dim=1).sqrt()
    xn = x / r[:, None]
    return xn @ xn.T, xn, r


def binomial_deviance(x, m, w, alpha=2.0, beta=0.5, reduction="sum"):
    s, _, _ = _cosine_matrix(x)
    return reduce(w * F.softplus(-alpha * (s - beta) * m), reduction)


class BinomialDevianceFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, m, w, alpha, beta, reduction):
        return binomial_deviance(x, m, w, alpha, beta, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, m, w, ctx.alpha, ctx.beta, ctx.reduction = inputs
        ctx.save_for_backward(x, m, w)

    @staticmethod
    def backward(ctx, grad_output):
        x, m, w = ctx.saved_tensors
        s, xn, r = _cosine_matrix(x)
        z = -ctx.alpha * (s - ctx.beta) * m
        g = reduce_vjp(grad_output, ctx.reduction, s.numel())
        grad_s = g * w * torch.sigmoid(z) * (-ctx.alpha * m)
        grad_xn = (grad_s + grad_s.T) @ xn
        d_x = (grad_xn - xn * (xn * grad_xn).sum(dim=1, keepdim=True)) / r[:, None]
        return d_x, None, None, None, None, None


BinomialDeviance = module("binomial_deviance", "BinomialDeviance", binomial_deviance)
binomial_deviance_function = function("binomial_deviance", BinomialDevianceFunction)


# -- contrastive_loss ------------------------------------------------------------

def _safe_distance(d2):
    """sqrt(d2) with the derivative taken as 0 where d2 == 0 (the double-where trick)."""
    positive = d2 > 0
    return torch.where(positive, torch.where(positive, d2, 1.0).sqrt(), 0.0)


def contrastive_loss(x1, x2, y, margin=1.0, reduction="mean"):
    diff = x1 - x2
    d2 = (diff * diff).sum(dim=1)
    hinge = (margin - _safe_distance(d2)).clamp(min=0.0)
    return reduce(0.5 * (1.0 - y) * d2 + 0.5 * y * hinge * hinge, reduction)


class ContrastiveLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x1, x2, y, margin, reduction):
        return contrastive_loss(x1, x2, y, margin, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x1, x2, y, ctx.margin, ctx.reduction = inputs
        ctx.save_for_backward(x1, x2, y)

    @staticmethod
    def backward(ctx, grad_output):
        x1, x2, y = ctx.saved_tensors
        diff = x1 - x2
        d2 = (diff * diff).sum(dim=1)
        dist = _safe_distance(d2)
        hinge = (ctx.margin - dist).clamp(min=0.0)
        positive = d2 > 0
        inv = torch.where(positive, 1.0 / torch.where(positive, dist, 1.0), 0.0)
        g = reduce_vjp(grad_output, ctx.reduction, y.numel())
        coef = g * ((1.0 - y) - y * hinge * inv)
        d_x1 = coef[..., None] * diff
        return d_x1, -d_x1, None, None, None


ContrastiveLoss = module("contrastive_loss", "ContrastiveLoss", contrastive_loss)
contrastive_loss_function = function("contrastive_loss", ContrastiveLossFunction)


# -- gaussian_kernel_loss --------------------------------------------------------

def gaussian_kernel_loss(input, sigma, center, reduction="mean"):
    diff = input - center
    q = (diff * diff).sum(dim=-1)
    return reduce(torch.exp(-q / (2.0 * sigma * sigma)), reduction)


class GaussianKernelLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, sigma, center, reduction):
        return gaussian_kernel_loss(input, sigma, center, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, sigma, center, ctx.reduction = inputs
        ctx.save_for_backward(input, sigma, center)

    @staticmethod
    def backward(ctx, grad_output):
        input, sigma, center = ctx.saved_tensors
        diff = input - center
        q = (diff * diff).sum(dim=-1)
        value = torch.exp(-q / (2.0 * sigma * sigma))
        g = reduce_vjp(grad_output, ctx.reduction, q.numel()) * value
        d_input = -(g / (sigma * sigma))[..., None] * diff
        d_sigma = g * q / sigma ** 3
        d_center = -d_input
        if sigma.dim() == 0:
            d_sigma = d_sigma.sum()
        if center.dim() == 1:
            d_center = d_center.sum(dim=0)
        return d_input, d_sigma, d_center, None


GaussianKernelLoss = module("gaussian_kernel_loss", "GaussianKernelLoss", gaussian_kernel_loss)
gaussian_kernel_loss_function = function("gaussian_kernel_loss", GaussianKernelLossFunction)


# -- batch_sum_squared_error -----------------------------------------------------

def batch_sum_squared_error(input, target, reduction="mean"):
    d = input - target
    squares = d * d
    if reduction == "none":
        return squares.reshape(d.shape[0], math.prod(d.shape[1:])).sum(dim=1)  # not -1: N may be 0
    # The per-sample sums only to be added up: one sum over everything (torch's CPU sums rows
    # of a few features several times slower). An empty batch's mean is 0 / 0, NaN.
    total = squares.sum()
    return total if reduction == "sum" else total / d.shape[0]


class BatchSumSquaredErrorFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, reduction):
        return batch_sum_squared_error(input, target, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction = inputs
        ctx.save_for_backward(input, target)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        n = input.shape[0]
        g = reduce_vjp(grad_output, ctx.reduction, n)
        g = 2.0 * g
        if g.dim():
            g = g.reshape((n,) + (1,) * (input.dim() - 1))
        d_input = scaled(input - target, g)
        return d_input, (-d_input if ctx.needs_input_grad[1] else None), None


BatchSumSquaredError = module("batch_sum_squared_error", "BatchSumSquaredError", batch_sum_squared_error)
batch_sum_squared_error_function = function("batch_sum_squared_error", BatchSumSquaredErrorFunction)


# -- the built-ins, the outside oracle ---------------------------------------------

def _mse_loss_per_sample(input, target, reduction="mean"):
    """The recorded mapping: ``F.mse_loss(reduction="sum") / N`` for ``mean``."""
    if reduction == "mean":
        return F.mse_loss(input, target, reduction="sum") / input.shape[0]
    if reduction == "sum":
        return F.mse_loss(input, target, reduction="sum")
    squared = F.mse_loss(input, target, reduction="none")
    return squared.reshape(input.shape[0], math.prod(input.shape[1:])).sum(dim=1)


builtin("batch_sum_squared_error", _mse_loss_per_sample)
