"""Regression losses in torch: l1_loss, mse_loss, huber_loss, smooth_l1_loss.

Each loss reads as in ``reference/regression.py``: a functional over torch ops (the
``module`` variant, autograd does the backward) and an ``autograd.Function`` whose
backward is the reference's VJP written in torch ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference.reductions import reduce, reduce_vjp
from .core import builtin, function, module


def _weighted(elementwise, weight):
    return elementwise if weight is None else elementwise * weight


def _weight_sum(weight):
    return None if weight is None else weight.sum()


# -- l1_loss ---------------------------------------------------------------------

def l1_loss(input, target, reduction="mean", weight=None):
    return reduce(_weighted((input - target).abs(), weight), reduction, _weight_sum(weight))


class L1LossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, reduction, weight):
        return l1_loss(input, target, reduction, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction, weight = inputs
        ctx.save_for_backward(input, target, weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, input.numel(), _weight_sum(weight))
        d_input = _weighted(torch.sign(input - target), weight) * g
        return d_input, -d_input, None, None


L1Loss = module("l1_loss", "L1Loss", l1_loss)
l1_loss_function = function("l1_loss", L1LossFunction)


# -- mse_loss --------------------------------------------------------------------

def mse_loss(input, target, reduction="mean", weight=None):
    return reduce(_weighted((input - target) ** 2, weight), reduction, _weight_sum(weight))


class MSELossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, reduction, weight):
        return mse_loss(input, target, reduction, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction, weight = inputs
        ctx.save_for_backward(input, target, weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, input.numel(), _weight_sum(weight))
        d_input = _weighted(2.0 * (input - target), weight) * g
        return d_input, -d_input, None, None


MSELoss = module("mse_loss", "MSELoss", mse_loss)
mse_loss_function = function("mse_loss", MSELossFunction)


# -- huber_loss ------------------------------------------------------------------

def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    d = input - target
    a = d.abs()
    elementwise = torch.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    return reduce(_weighted(elementwise, weight), reduction)


class HuberLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, reduction, delta, weight):
        return huber_loss(input, target, reduction, delta, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction, ctx.delta, weight = inputs
        ctx.save_for_backward(input, target, weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, input.numel())
        d_input = _weighted((input - target).clamp(-ctx.delta, ctx.delta), weight) * g
        return d_input, -d_input, None, None, None


HuberLoss = module("huber_loss", "HuberLoss", huber_loss)
huber_loss_function = function("huber_loss", HuberLossFunction)


# -- smooth_l1_loss --------------------------------------------------------------

def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    d = input - target
    a = d.abs()
    if beta == 0:
        return reduce(a, reduction)
    return reduce(torch.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta), reduction)


class SmoothL1LossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, reduction, beta):
        return smooth_l1_loss(input, target, reduction, beta)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction, ctx.beta = inputs
        ctx.save_for_backward(input, target)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, input.numel())
        d = input - target
        slope = torch.sign(d) if ctx.beta == 0 else (d / ctx.beta).clamp(-1.0, 1.0)
        return slope * g, -slope * g, None, None


SmoothL1Loss = module("smooth_l1_loss", "SmoothL1Loss", smooth_l1_loss)
smooth_l1_loss_function = function("smooth_l1_loss", SmoothL1LossFunction)


# -- the built-ins, the outside oracle ---------------------------------------------

builtin("l1_loss", F.l1_loss)
builtin("mse_loss", F.mse_loss)
builtin("huber_loss", F.huber_loss)
builtin("smooth_l1_loss", F.smooth_l1_loss)
