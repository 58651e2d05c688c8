"""Regression losses in torch: l1_loss, mse_loss, huber_loss, smooth_l1_loss,
poisson_nll_loss, gaussian_nll_loss.

Each loss reads as in ``reference/regression.py``: a functional over torch ops (the
``module`` variant, autograd does the backward) and an ``autograd.Function`` whose
backward is the reference's VJP written in torch ops.
"""

from __future__ import annotations

import math

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


# -- poisson_nll_loss ------------------------------------------------------------

_LOG_2PI = math.log(2.0 * math.pi)


def _stirling(target):
    safe = torch.where(target > 1, target, 2.0)  # keeps log finite where the term is dropped
    return torch.where(target > 1, safe * torch.log(safe) - safe + 0.5 * (_LOG_2PI + torch.log(safe)), 0.0)


def poisson_nll_loss(input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
    if log_input:
        elementwise = torch.exp(input) - target * input
    else:
        elementwise = input - target * torch.log(input + eps)
    if full:
        elementwise = elementwise + _stirling(target)
    return reduce(elementwise, reduction)


class PoissonNLLLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, log_input, full, eps, reduction):
        return poisson_nll_loss(input, target, log_input, full, eps, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.log_input, ctx.full, ctx.eps, ctx.reduction = inputs
        ctx.save_for_backward(input, target)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, input.numel())
        if ctx.log_input:
            d_input, d_target = torch.exp(input) - target, -input
        else:
            d_input, d_target = 1.0 - target / (input + ctx.eps), -torch.log(input + ctx.eps)
        if ctx.full:
            safe = torch.where(target > 1, target, 2.0)
            d_target = d_target + torch.where(target > 1, torch.log(safe) + 0.5 / safe, 0.0)
        return d_input * g, d_target * g, None, None, None, None


PoissonNLLLoss = module("poisson_nll_loss", "PoissonNLLLoss", poisson_nll_loss)
poisson_nll_loss_function = function("poisson_nll_loss", PoissonNLLLossFunction)


# -- gaussian_nll_loss -----------------------------------------------------------

def _homoscedastic_view(var, input):
    """``var`` one dimension short of ``input`` gets a trailing 1, as in torch."""
    if var.shape != input.shape and var.shape == input.shape[:-1]:
        return var.unsqueeze(-1)
    return var


def _clamped(var, input, eps):
    """torch's clamp at eps under no_grad: the value is clamped, the gradient passes straight through."""
    var = _homoscedastic_view(var, input).clone()
    with torch.no_grad():
        var.clamp_(min=eps)
    return var


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    var = _clamped(var, input, eps)
    elementwise = 0.5 * (torch.log(var) + (input - target) ** 2 / var)
    if full:
        elementwise = elementwise + 0.5 * _LOG_2PI
    return reduce(elementwise, reduction)


class GaussianNLLLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, var, full, eps, reduction):
        return gaussian_nll_loss(input, target, var, full, eps, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, var, ctx.full, ctx.eps, ctx.reduction = inputs
        ctx.var_shape = var.shape
        ctx.save_for_backward(input, target, var)

    @staticmethod
    def backward(ctx, grad_output):
        input, target, var = ctx.saved_tensors
        v = _clamped(var, input, ctx.eps)
        g = reduce_vjp(grad_output, ctx.reduction, input.numel())
        d = input - target
        d_input = (d / v * g).expand(input.shape)
        d_var = (0.5 * (1.0 / v - d * d / (v * v)) * g).expand(input.shape)
        d_var = d_var.sum_to_size(_homoscedastic_view(var, input).shape).reshape(ctx.var_shape)
        return d_input, -d_input, d_var, None, None, None


GaussianNLLLoss = module("gaussian_nll_loss", "GaussianNLLLoss", gaussian_nll_loss)
gaussian_nll_loss_function = function("gaussian_nll_loss", GaussianNLLLossFunction)


# -- the built-ins, the outside oracle ---------------------------------------------

builtin("l1_loss", F.l1_loss)
builtin("mse_loss", F.mse_loss)
builtin("huber_loss", F.huber_loss)
builtin("smooth_l1_loss", F.smooth_l1_loss)
builtin("poisson_nll_loss", F.poisson_nll_loss)
builtin("gaussian_nll_loss", F.gaussian_nll_loss)
