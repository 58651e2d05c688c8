"""Regression losses in JAX: l1_loss, mse_loss, huber_loss, smooth_l1_loss,
poisson_nll_loss, gaussian_nll_loss.

Each loss reads as in ``reference/regression.py``: a jax.numpy function (the
``autodiff`` variant) and a ``jax.custom_vjp`` whose backward is the reference's VJP.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from reference.reductions import reduce, reduce_vjp
from .core import autodiff, builtin, custom_vjp


def _weighted(elementwise, weight):
    return elementwise if weight is None else elementwise * weight


def _weight_sum(weight):
    return None if weight is None else weight.sum()


# -- l1_loss ---------------------------------------------------------------------

def l1_loss(input, target, reduction="mean", weight=None):
    return reduce(_weighted(jnp.abs(input - target), weight), reduction, _weight_sum(weight))


def _l1_loss_fwd(input, target, reduction, weight):
    return l1_loss(input, target, reduction, weight), (input, target, weight)


def _l1_loss_bwd(reduction, residuals, cotangent):
    input, target, weight = residuals
    g = reduce_vjp(cotangent, reduction, input.size, _weight_sum(weight))
    d_input = _weighted(jnp.sign(input - target), weight) * g
    return d_input, -d_input, None


l1_loss_custom_vjp = jax.custom_vjp(l1_loss, nondiff_argnums=(2,))
l1_loss_custom_vjp.defvjp(_l1_loss_fwd, _l1_loss_bwd)
autodiff("l1_loss", l1_loss)
custom_vjp("l1_loss", l1_loss_custom_vjp, _l1_loss_fwd, _l1_loss_bwd)


# -- mse_loss --------------------------------------------------------------------

def mse_loss(input, target, reduction="mean", weight=None):
    return reduce(_weighted((input - target) ** 2, weight), reduction, _weight_sum(weight))


def _mse_loss_fwd(input, target, reduction, weight):
    return mse_loss(input, target, reduction, weight), (input, target, weight)


def _mse_loss_bwd(reduction, residuals, cotangent):
    input, target, weight = residuals
    g = reduce_vjp(cotangent, reduction, input.size, _weight_sum(weight))
    d_input = _weighted(2.0 * (input - target), weight) * g
    return d_input, -d_input, None


mse_loss_custom_vjp = jax.custom_vjp(mse_loss, nondiff_argnums=(2,))
mse_loss_custom_vjp.defvjp(_mse_loss_fwd, _mse_loss_bwd)
autodiff("mse_loss", mse_loss)
custom_vjp("mse_loss", mse_loss_custom_vjp, _mse_loss_fwd, _mse_loss_bwd)


# -- huber_loss ------------------------------------------------------------------

def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    d = input - target
    a = jnp.abs(d)
    elementwise = jnp.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    return reduce(_weighted(elementwise, weight), reduction)


def _huber_loss_fwd(input, target, reduction, delta, weight):
    return huber_loss(input, target, reduction, delta, weight), (input, target, weight)


def _huber_loss_bwd(reduction, delta, residuals, cotangent):
    input, target, weight = residuals
    g = reduce_vjp(cotangent, reduction, input.size)
    d_input = _weighted(jnp.clip(input - target, -delta, delta), weight) * g
    return d_input, -d_input, None


huber_loss_custom_vjp = jax.custom_vjp(huber_loss, nondiff_argnums=(2, 3))
huber_loss_custom_vjp.defvjp(_huber_loss_fwd, _huber_loss_bwd)
autodiff("huber_loss", huber_loss)
custom_vjp("huber_loss", huber_loss_custom_vjp, _huber_loss_fwd, _huber_loss_bwd)


# -- smooth_l1_loss --------------------------------------------------------------

def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    d = input - target
    a = jnp.abs(d)
    if beta == 0:
        return reduce(a, reduction)
    return reduce(jnp.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta), reduction)


def _smooth_l1_loss_fwd(input, target, reduction, beta):
    return smooth_l1_loss(input, target, reduction, beta), (input, target)


def _smooth_l1_loss_bwd(reduction, beta, residuals, cotangent):
    input, target = residuals
    g = reduce_vjp(cotangent, reduction, input.size)
    d = input - target
    slope = jnp.sign(d) if beta == 0 else jnp.clip(d / beta, -1.0, 1.0)
    return slope * g, -slope * g


smooth_l1_loss_custom_vjp = jax.custom_vjp(smooth_l1_loss, nondiff_argnums=(2, 3))
smooth_l1_loss_custom_vjp.defvjp(_smooth_l1_loss_fwd, _smooth_l1_loss_bwd)
autodiff("smooth_l1_loss", smooth_l1_loss)
custom_vjp("smooth_l1_loss", smooth_l1_loss_custom_vjp, _smooth_l1_loss_fwd, _smooth_l1_loss_bwd)


# -- poisson_nll_loss ------------------------------------------------------------

_LOG_2PI = math.log(2.0 * math.pi)


def _stirling(target):
    safe = jnp.where(target > 1, target, 2.0)  # keeps log finite where the term is dropped
    return jnp.where(target > 1, safe * jnp.log(safe) - safe + 0.5 * (_LOG_2PI + jnp.log(safe)), 0.0)


def poisson_nll_loss(input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
    if log_input:
        elementwise = jnp.exp(input) - target * input
    else:
        elementwise = input - target * jnp.log(input + eps)
    if full:
        elementwise = elementwise + _stirling(target)
    return reduce(elementwise, reduction)


def _poisson_nll_loss_fwd(input, target, log_input, full, eps, reduction):
    return poisson_nll_loss(input, target, log_input, full, eps, reduction), (input, target)


def _poisson_nll_loss_bwd(log_input, full, eps, reduction, residuals, cotangent):
    input, target = residuals
    g = reduce_vjp(cotangent, reduction, input.size)
    if log_input:
        d_input, d_target = jnp.exp(input) - target, -input
    else:
        d_input, d_target = 1.0 - target / (input + eps), -jnp.log(input + eps)
    if full:
        safe = jnp.where(target > 1, target, 2.0)
        d_target = d_target + jnp.where(target > 1, jnp.log(safe) + 0.5 / safe, 0.0)
    return d_input * g, d_target * g


poisson_nll_loss_custom_vjp = jax.custom_vjp(poisson_nll_loss, nondiff_argnums=(2, 3, 4, 5))
poisson_nll_loss_custom_vjp.defvjp(_poisson_nll_loss_fwd, _poisson_nll_loss_bwd)
autodiff("poisson_nll_loss", poisson_nll_loss)
custom_vjp("poisson_nll_loss", poisson_nll_loss_custom_vjp, _poisson_nll_loss_fwd, _poisson_nll_loss_bwd)


# -- gaussian_nll_loss -----------------------------------------------------------

def _homoscedastic_view(var, input):
    """``var`` one dimension short of ``input`` gets a trailing 1, as in torch."""
    if var.shape != input.shape and var.shape == input.shape[:-1]:
        return var[..., None]
    return var


def _clamped(var, input, eps):
    """torch's clamp at eps under no_grad: the value is max(var, eps) exactly, the gradient
    passes straight through (``jnp.maximum`` alone would zero it below eps)."""
    var = _homoscedastic_view(var, input)
    return jax.lax.stop_gradient(jnp.maximum(var, eps)) + (var - jax.lax.stop_gradient(var))


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    var = _clamped(var, input, eps)
    elementwise = 0.5 * (jnp.log(var) + (input - target) ** 2 / var)
    if full:
        elementwise = elementwise + 0.5 * _LOG_2PI
    return reduce(elementwise, reduction)


def _sum_to(grad, var, input):
    """``grad`` (the input's shape) summed over the dimensions ``var`` broadcast along."""
    view = _homoscedastic_view(var, input).shape
    axes = tuple(i for i, (v, n) in enumerate(zip(view, grad.shape)) if v == 1 and n != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(var.shape)


def _gaussian_nll_loss_fwd(input, target, var, full, eps, reduction):
    return gaussian_nll_loss(input, target, var, full, eps, reduction), (input, target, var)


def _gaussian_nll_loss_bwd(full, eps, reduction, residuals, cotangent):
    input, target, var = residuals
    v = jnp.maximum(_homoscedastic_view(var, input), eps)  # the clamped value; straight through below
    g = reduce_vjp(cotangent, reduction, input.size)
    d = input - target
    d_input = jnp.broadcast_to(d / v * g, input.shape)
    d_var = jnp.broadcast_to(0.5 * (1.0 / v - d * d / (v * v)) * g, input.shape)
    return d_input, -d_input, _sum_to(d_var, var, input)


gaussian_nll_loss_custom_vjp = jax.custom_vjp(gaussian_nll_loss, nondiff_argnums=(3, 4, 5))
gaussian_nll_loss_custom_vjp.defvjp(_gaussian_nll_loss_fwd, _gaussian_nll_loss_bwd)
autodiff("gaussian_nll_loss", gaussian_nll_loss)
custom_vjp("gaussian_nll_loss", gaussian_nll_loss_custom_vjp, _gaussian_nll_loss_fwd, _gaussian_nll_loss_bwd)


# -- the built-ins, the outside oracle ---------------------------------------------

def _optax_squared_error(input, target, reduction="mean", weight=None):
    import optax
    if weight is not None:
        raise NotImplementedError("optax.losses.squared_error takes no weight")
    return reduce(optax.losses.squared_error(input, target), reduction)


def _optax_huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    import optax
    if weight is not None:
        raise NotImplementedError("optax.losses.huber_loss takes no weight")
    return reduce(optax.losses.huber_loss(input, target, delta=delta), reduction)


builtin("mse_loss", _optax_squared_error)
builtin("huber_loss", _optax_huber_loss)
