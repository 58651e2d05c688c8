"""Regression losses in torch: l1_loss, mse_loss, huber_loss, smooth_l1_loss,
poisson_nll_loss, gaussian_nll_loss; squared_error (an alias of mse_loss), l2_loss,
log_cosh; mean_absolute_percentage_error, mean_squared_logarithmic_error, poisson.

Each loss reads as in ``reference/regression.py``: a functional over torch ops (the
``module`` variant, autograd does the backward) and an ``autograd.Function`` whose
backward is the reference's VJP written in torch ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference.reductions import reduce, reduce_vjp
from .core import alias, builtin, cotangent, function, in_place_ok, module, row_mean_reduced, scaled


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
        if weight is None:
            g = cotangent(grad_output, ctx.reduction, input.numel())
        else:
            g = reduce_vjp(grad_output, ctx.reduction, input.numel(), _weight_sum(weight)) * weight
        d = input - target
        d_input = scaled(d.sign_() if in_place_ok() else d.sign(), g)
        return d_input, (-d_input if ctx.needs_input_grad[1] else None), None, None


L1Loss = module("l1_loss", "L1Loss", l1_loss)
l1_loss_function = function("l1_loss", L1LossFunction)


# -- mse_loss --------------------------------------------------------------------

def mse_loss(input, target, reduction="mean", weight=None):
    d = input - target
    return reduce(_weighted(d * d, weight), reduction, _weight_sum(weight))


class MSELossFunction(torch.autograd.Function):
    """Returns the difference input - target beside the loss (``returns_residuals``): the
    backward is one product, 2 (input - target) g, not a difference and a product."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, reduction, weight):
        d = input - target
        return reduce(_weighted(d * d, weight), reduction, _weight_sum(weight)), d

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction, weight = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, weight, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        input, target, weight, d = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None
        if torch.is_grad_enabled():  # recorded for a double backward: the difference as a function of the inputs
            d = input - target
        if weight is None:
            g = cotangent(grad_output, ctx.reduction, input.numel(), 2.0)  # the 2 folded into 1/n
        else:
            g = reduce_vjp(grad_output, ctx.reduction, input.numel(), _weight_sum(weight)) * (2.0 * weight)
        d_input = d * g
        return d_input, (-d_input if ctx.needs_input_grad[1] else None), None, None


MSELoss = module("mse_loss", "MSELoss", mse_loss)
mse_loss_function = function("mse_loss", MSELossFunction)


# -- huber_loss ------------------------------------------------------------------

def _clipped(input, target, delta, fresh=False):
    """The per-element huber loss and its slope k = clip(d, -delta, delta): the loss is
    (d - k/2) k, which is d^2/2 inside delta and delta (|d| - delta/2) outside, in four passes
    with no mask (and autograd's derivative of it is k). ``fresh``: outside autograd, written
    into d (two large allocations, not four: a fresh block costs this CPU its page faults)."""
    d = input - target
    k = d.clamp(-delta, delta)
    if fresh:
        return d.sub_(k, alpha=0.5).mul_(k), k
    return torch.sub(d, k, alpha=0.5) * k, k


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    return reduce(_weighted(_clipped(input, target, delta)[0], weight), reduction)


class HuberLossFunction(torch.autograd.Function):
    """Returns the slope clip(d, -delta, delta) beside the loss (``returns_residuals``): the
    backward is that slope times the cotangent."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, reduction, delta, weight):
        elementwise, slope = _clipped(input, target, delta, fresh=not torch.is_grad_enabled())
        return reduce(_weighted(elementwise, weight), reduction), slope

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction, ctx.delta, weight = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, weight, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        input, target, weight, slope = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None
        if torch.is_grad_enabled():  # recorded for a double backward: the slope as a function of the inputs
            slope = (input - target).clamp(-ctx.delta, ctx.delta)
        g = cotangent(grad_output, ctx.reduction, input.numel())
        d_input = slope * (g if weight is None else g * weight)
        return d_input, (-d_input if ctx.needs_input_grad[1] else None), None, None, None


HuberLoss = module("huber_loss", "HuberLoss", huber_loss)
huber_loss_function = function("huber_loss", HuberLossFunction)


# -- smooth_l1_loss --------------------------------------------------------------

def _smooth_l1(input, target, reduction, beta):
    """The reduced loss and the slope (sign(d) at beta = 0, else clip(d, -beta, beta), to be
    divided by beta): huber_loss(delta=beta) / beta, the 1/beta applied after the reduction."""
    if beta == 0:
        d = input - target
        return reduce(d.abs(), reduction), d.sign()
    elementwise, slope = _clipped(input, target, beta, fresh=not torch.is_grad_enabled())
    out = reduce(elementwise, reduction)
    return (out if beta == 1.0 else out / beta), slope


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    if beta == 0:
        return reduce((input - target).abs(), reduction)
    return _smooth_l1(input, target, reduction, beta)[0]


class SmoothL1LossFunction(torch.autograd.Function):
    """Returns the slope beside the loss (``returns_residuals``), as ``HuberLossFunction``."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, reduction, beta):
        return _smooth_l1(input, target, reduction, beta)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction, ctx.beta = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        input, target, slope = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None
        beta = ctx.beta
        if torch.is_grad_enabled():  # recorded for a double backward: the slope as a function of the inputs
            d = input - target
            slope = d.sign() if beta == 0 else d.clamp(-beta, beta)
        g = cotangent(grad_output, ctx.reduction, input.numel(), 1.0 if beta == 0 else 1.0 / beta)
        d_input = slope * g
        return d_input, (-d_input if ctx.needs_input_grad[1] else None), None, None


SmoothL1Loss = module("smooth_l1_loss", "SmoothL1Loss", smooth_l1_loss)
smooth_l1_loss_function = function("smooth_l1_loss", SmoothL1LossFunction)


# -- poisson_nll_loss ------------------------------------------------------------

_LOG_2PI = math.log(2.0 * math.pi)


def _stirling(target):
    safe = torch.where(target > 1, target, 2.0)  # keeps log finite where the term is dropped
    return torch.where(target > 1, safe * torch.log(safe) - safe + 0.5 * (_LOG_2PI + torch.log(safe)), 0.0)


def _poisson_elementwise(input, target, log_input, eps):
    """The per-element loss without the Stirling term, and exp(input) (None unless log_input)."""
    if log_input:
        rate = torch.exp(input)
        return torch.addcmul(rate, target, input, value=-1.0), rate  # exp(x) - t x in one pass
    return input - target * torch.log(input + eps), None


def poisson_nll_loss(input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
    elementwise = _poisson_elementwise(input, target, log_input, eps)[0]
    if full:
        elementwise = elementwise + _stirling(target)
    return reduce(elementwise, reduction)


class PoissonNLLLossFunction(torch.autograd.Function):
    """Returns exp(input) beside the loss (``returns_residuals``): the backward reuses it."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, log_input, full, eps, reduction):
        elementwise, rate = _poisson_elementwise(input, target, log_input, eps)
        if full:
            elementwise = elementwise + _stirling(target)
        return reduce(elementwise, reduction), rate

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.log_input, ctx.full, ctx.eps, ctx.reduction = inputs
        rate = output[1]
        if rate is not None:
            ctx.mark_non_differentiable(rate)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, rate)

    @staticmethod
    def backward(ctx, grad_output, _):
        input, target, rate = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None, None
        g = cotangent(grad_output, ctx.reduction, input.numel())
        if ctx.log_input:
            if torch.is_grad_enabled():  # recorded for a double backward: exp(input) as a function of input
                rate = torch.exp(input)
            d_input, d_target = rate - target, -input
        else:
            d_input, d_target = 1.0 - target / (input + ctx.eps), -torch.log(input + ctx.eps)
        if ctx.full:
            safe = torch.where(target > 1, target, 2.0)
            d_target = d_target + torch.where(target > 1, torch.log(safe) + 0.5 / safe, 0.0)
        return (scaled(d_input, g) if ctx.needs_input_grad[0] else None,
                scaled(d_target, g) if ctx.needs_input_grad[1] else None, None, None, None, None)


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
    with torch.no_grad():  # copy_, not clamp_: vmap batches copy_ and has no rule for clamp_
        var.copy_(var.clamp(min=eps))
    return var


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    var = _clamped(var, input, eps)
    d = input - target
    elementwise = 0.5 * (torch.log(var) + d * d / var)
    if full:
        elementwise = elementwise + 0.5 * _LOG_2PI
    return reduce(elementwise, reduction)


class GaussianNLLLossFunction(torch.autograd.Function):
    """Returns u = (input - target) / v and v, the clamped variance, beside the loss
    (``returns_residuals``): the backward is u g and (1/v - u^2) g / 2."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, target, var, full, eps, reduction):
        v = _homoscedastic_view(var, input).clamp_min(eps)
        d = input - target
        u = d / v
        elementwise = torch.addcmul(torch.log(v), u, d)  # log v + d^2 / v
        if full:
            elementwise = elementwise + _LOG_2PI
        return 0.5 * reduce(elementwise, reduction), u, v

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, var, ctx.full, ctx.eps, ctx.reduction = inputs
        ctx.var_shape = var.shape
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, var, *output[1:])

    @staticmethod
    def backward(ctx, grad_output, *_):
        input, target, var, u, v = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None, None
        if torch.is_grad_enabled():  # recorded for a double backward: u and v as functions of the inputs
            v = _clamped(var, input, ctx.eps)
            u = (input - target) / v
        g = cotangent(grad_output, ctx.reduction, input.numel())
        d_input = (u * g).expand(input.shape)
        d_var = None
        if ctx.needs_input_grad[2]:
            d_var = torch.addcmul(torch.reciprocal(v), u, u, value=-1.0)
            d_var = scaled(d_var, 0.5 * g).expand(input.shape)
            d_var = d_var.sum_to_size(_homoscedastic_view(var, input).shape).reshape(ctx.var_shape)
        return d_input, (-d_input if ctx.needs_input_grad[1] else None), d_var, None, None, None


GaussianNLLLoss = module("gaussian_nll_loss", "GaussianNLLLoss", gaussian_nll_loss)
gaussian_nll_loss_function = function("gaussian_nll_loss", GaussianNLLLossFunction)


# -- the built-ins, the outside oracle ---------------------------------------------

builtin("l1_loss", F.l1_loss)
builtin("mse_loss", F.mse_loss)
builtin("huber_loss", F.huber_loss)
builtin("smooth_l1_loss", F.smooth_l1_loss)
builtin("poisson_nll_loss", F.poisson_nll_loss)
builtin("gaussian_nll_loss", F.gaussian_nll_loss)


# ==================================================================================
# Part 2: optax's and Keras's regression losses (see reference/regression.py). Keras's
# average over the last axis: one value per row.
# ==================================================================================

KERAS_EPSILON = 1e-7
_LOG_2 = math.log(2.0)


def _rows(x):
    return x.numel() // x.shape[-1] if x.shape[-1] else 0


def _row_cotangent(grad_output, reduction, y_pred, factor):
    """``factor`` times the cotangent of each element of a Keras loss (a mean over the last axis,
    then ``reduction``): a scalar, or (rows, 1) for ``none``; the 1/n of both means in one product."""
    g = cotangent(grad_output, reduction, _rows(y_pred), factor / max(y_pred.shape[-1], 1))
    return g.unsqueeze(-1) if reduction == "none" else g


# -- squared_error (optax): an alias of mse_loss -------------------------------------

SquaredError = alias("squared_error", "SquaredError")


# -- l2_loss (optax) ---------------------------------------------------------------

def l2_loss(predictions, targets, reduction="none"):
    d = predictions - targets
    if reduction == "none":
        return 0.5 * (d * d)
    return 0.5 * reduce(d * d, reduction)  # the half on the reduced scalar: one pass fewer


class L2LossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(predictions, targets, reduction):
        return l2_loss(predictions, targets, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        predictions, targets, ctx.reduction = inputs
        ctx.save_for_backward(predictions, targets)

    @staticmethod
    def backward(ctx, grad_output):
        predictions, targets = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, predictions.numel())
        d_predictions = scaled(predictions - targets, g)
        return d_predictions, (-d_predictions if ctx.needs_input_grad[1] else None), None


L2Loss = module("l2_loss", "L2Loss", l2_loss)
l2_loss_function = function("l2_loss", L2LossFunction)


# -- log_cosh (optax) --------------------------------------------------------------

def log_cosh(predictions, targets, reduction="none"):
    d = predictions - targets
    return reduce(torch.logaddexp(d, -d) - _LOG_2, reduction)


class LogCoshFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(predictions, targets, reduction):
        return log_cosh(predictions, targets, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        predictions, targets, ctx.reduction = inputs
        ctx.save_for_backward(predictions, targets)

    @staticmethod
    def backward(ctx, grad_output):
        predictions, targets = ctx.saved_tensors
        g = reduce_vjp(grad_output, ctx.reduction, predictions.numel())
        d_predictions = torch.tanh(predictions - targets) * g
        return d_predictions, -d_predictions, None


LogCosh = module("log_cosh", "LogCosh", log_cosh)
log_cosh_function = function("log_cosh", LogCoshFunction)


# -- mean_absolute_percentage_error (Keras) ----------------------------------------

def mean_absolute_percentage_error(y_true, y_pred, reduction="none"):
    y = y_true.to(y_pred.dtype)
    per = ((y - y_pred) / y.abs().clamp(min=KERAS_EPSILON)).abs()
    return 100.0 * row_mean_reduced(per, reduction)


class MeanAbsolutePercentageErrorFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(y_true, y_pred, reduction):
        return mean_absolute_percentage_error(y_true, y_pred, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y_true, y_pred, ctx.reduction = inputs
        ctx.save_for_backward(y_true, y_pred)

    @staticmethod
    def backward(ctx, grad_output):
        y_true, y_pred = ctx.saved_tensors
        y = y_true.to(y_pred.dtype)
        g = _row_cotangent(grad_output, ctx.reduction, y_pred, 100.0)
        slope, scale = torch.sign(y_pred - y), y.abs().clamp(min=KERAS_EPSILON)
        return None, scaled(slope.div_(scale) if in_place_ok() else slope / scale, g), None


MeanAbsolutePercentageError = module("mean_absolute_percentage_error", "MeanAbsolutePercentageError",
                                     mean_absolute_percentage_error)
mean_absolute_percentage_error_function = function("mean_absolute_percentage_error",
                                                   MeanAbsolutePercentageErrorFunction)


# -- mean_squared_logarithmic_error (Keras) ----------------------------------------

def mean_squared_logarithmic_error(y_true, y_pred, reduction="none"):
    y = y_true.to(y_pred.dtype)
    diff = torch.log1p(y_pred.clamp(min=KERAS_EPSILON)) - torch.log1p(y.clamp(min=KERAS_EPSILON))
    return row_mean_reduced(diff * diff, reduction)


class MeanSquaredLogarithmicErrorFunction(torch.autograd.Function):
    """Returns the difference of the logs beside the loss (``returns_residuals``): the
    backward is 2 diff / (1 + y_pred) where y_pred is above the clamp, over the row length."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(y_true, y_pred, reduction):
        y = y_true.to(y_pred.dtype)
        diff = torch.log1p(y_pred.clamp(min=KERAS_EPSILON)).sub_(torch.log1p(y.clamp(min=KERAS_EPSILON)))
        return row_mean_reduced(diff * diff, reduction), diff

    @staticmethod
    def setup_context(ctx, inputs, output):
        y_true, y_pred, ctx.reduction = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(y_true, y_pred, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        y_true, y_pred, diff = ctx.saved_tensors
        if grad_output is None:
            return None, None, None
        x = y_pred.clamp(min=KERAS_EPSILON)
        if torch.is_grad_enabled():  # recorded for a double backward: the difference as a function of y_pred
            diff = torch.log1p(x) - torch.log1p(y_true.to(y_pred.dtype).clamp(min=KERAS_EPSILON))
        g = _row_cotangent(grad_output, ctx.reduction, y_pred, 2.0)
        slope = diff / (1.0 + x)
        # 0 where the clip holds y_pred, even where diff is not finite (a NaN or infinite y_true): not a product
        return None, torch.where(y_pred > KERAS_EPSILON, scaled(slope, g), 0.0), None


MeanSquaredLogarithmicError = module("mean_squared_logarithmic_error", "MeanSquaredLogarithmicError",
                                     mean_squared_logarithmic_error)
mean_squared_logarithmic_error_function = function("mean_squared_logarithmic_error",
                                                   MeanSquaredLogarithmicErrorFunction)


# -- poisson (Keras) ---------------------------------------------------------------

def poisson(y_true, y_pred, reduction="none"):
    y = y_true.to(y_pred.dtype)
    return row_mean_reduced(y_pred - y * torch.log(y_pred + KERAS_EPSILON), reduction)


class PoissonFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(y_true, y_pred, reduction):
        return poisson(y_true, y_pred, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y_true, y_pred, ctx.reduction = inputs
        ctx.save_for_backward(y_true, y_pred)

    @staticmethod
    def backward(ctx, grad_output):
        y_true, y_pred = ctx.saved_tensors
        y = y_true.to(y_pred.dtype)
        g = _row_cotangent(grad_output, ctx.reduction, y_pred, -1.0)
        ratio = y_pred + KERAS_EPSILON  # 1 - y / (y_pred + eps), times g
        ratio = torch.div(y, ratio, out=ratio).sub_(1.0) if in_place_ok() else y / ratio - 1.0
        return None, scaled(ratio, g), None


Poisson = module("poisson", "Poisson", poisson)
poisson_function = function("poisson", PoissonFunction)


# -- the built-ins (part 2): torch's own losses under the recorded mappings ---------

def _torch_squared_error(predictions, targets, reduction="none"):
    """torch.nn.functional.mse_loss under optax's name (the alias's mapping)."""
    return F.mse_loss(predictions, targets, reduction=reduction)


def _torch_l2_loss(predictions, targets, reduction="none"):
    """Half of torch.nn.functional.mse_loss, for every reduction."""
    return 0.5 * F.mse_loss(predictions, targets, reduction=reduction)


def _torch_mean_absolute_percentage_error(y_true, y_pred, reduction="none"):
    """100 times torch.nn.functional.l1_loss weighted by 1 / max(|y|, 1e-7), averaged over the last axis."""
    y = y_true.to(y_pred.dtype)
    weight = 1.0 / y.abs().clamp(min=KERAS_EPSILON)
    return reduce(100.0 * F.l1_loss(y_pred, y, reduction="none", weight=weight).mean(-1), reduction)


def _torch_mean_squared_logarithmic_error(y_true, y_pred, reduction="none"):
    """torch.nn.functional.mse_loss between log1p of the clipped values, averaged over the last axis."""
    y = y_true.to(y_pred.dtype)
    return reduce(F.mse_loss(torch.log1p(y_pred.clamp(min=KERAS_EPSILON)), torch.log1p(y.clamp(min=KERAS_EPSILON)),
                             reduction="none").mean(-1), reduction)


def _torch_poisson(y_true, y_pred, reduction="none"):
    """torch.nn.functional.poisson_nll_loss in its rate form with eps 1e-7, averaged over the last axis."""
    y = y_true.to(y_pred.dtype)
    return reduce(F.poisson_nll_loss(y_pred, y, log_input=False, full=False, eps=KERAS_EPSILON,
                                     reduction="none").mean(-1), reduction)


builtin("squared_error", _torch_squared_error)
builtin("l2_loss", _torch_l2_loss)
builtin("mean_absolute_percentage_error", _torch_mean_absolute_percentage_error)
builtin("mean_squared_logarithmic_error", _torch_mean_squared_logarithmic_error)
builtin("poisson", _torch_poisson)
