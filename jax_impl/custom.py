"""The seed articles' losses in JAX: q_error, binomial_deviance, contrastive_loss,
gaussian_kernel_loss, batch_sum_squared_error.

Each loss reads as in ``reference/custom.py``: a jax.numpy function (the ``autodiff``
variant) and a ``jax.custom_vjp`` whose backward is the reference's VJP. None of them
is an optax loss; ``batch_sum_squared_error`` is ``optax.losses.squared_error`` summed
per sample, registered as its built-in so that the recorded mapping is tested.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from reference.reductions import reduce, reduce_vjp
from .core import autodiff, builtin, custom_vjp


# -- q_error ---------------------------------------------------------------------

def q_error(input, target, log_space=True, reduction="mean"):
    if log_space:
        elementwise = jnp.expm1(jnp.abs(input - target))
    else:
        elementwise = jnp.abs(input - target) / jnp.minimum(input, target)
    return reduce(elementwise, reduction)


def _q_error_fwd(input, target, log_space, reduction):
    return q_error(input, target, log_space, reduction), (input, target)


def _q_error_bwd(log_space, reduction, residuals, cotangent):
    input, target = residuals
    g = reduce_vjp(cotangent, reduction, input.size)
    if log_space:
        d = input - target
        d_input = jnp.sign(d) * jnp.exp(jnp.abs(d)) * g
        return d_input, -d_input
    over, under = input > target, input < target
    d_input = jnp.where(over, 1.0 / target, jnp.where(under, -target / input ** 2, 0.0)) * g
    d_target = jnp.where(over, -input / target ** 2, jnp.where(under, 1.0 / input, 0.0)) * g
    return d_input, d_target


q_error_custom_vjp = jax.custom_vjp(q_error, nondiff_argnums=(2, 3))
q_error_custom_vjp.defvjp(_q_error_fwd, _q_error_bwd)
autodiff("q_error", q_error)
custom_vjp("q_error", q_error_custom_vjp, _q_error_fwd, _q_error_bwd)


# -- binomial_deviance -----------------------------------------------------------

def _cosine_matrix(x):
    r = jnp.sqrt((x * x).sum(axis=1))
    xn = x / r[:, None]
    return xn @ xn.T, xn, r


def binomial_deviance(x, m, w, alpha=2.0, beta=0.5, reduction="sum"):
    s, _, _ = _cosine_matrix(x)
    return reduce(w * jax.nn.softplus(-alpha * (s - beta) * m), reduction)


def _binomial_deviance_fwd(x, m, w, alpha, beta, reduction):
    return binomial_deviance(x, m, w, alpha, beta, reduction), (x, m, w)


def _binomial_deviance_bwd(alpha, beta, reduction, residuals, cotangent):
    x, m, w = residuals
    s, xn, r = _cosine_matrix(x)
    z = -alpha * (s - beta) * m
    g = reduce_vjp(cotangent, reduction, s.size)
    grad_s = g * w * jax.nn.sigmoid(z) * (-alpha * m)
    grad_xn = (grad_s + grad_s.T) @ xn
    d_x = (grad_xn - xn * (xn * grad_xn).sum(axis=1, keepdims=True)) / r[:, None]
    return d_x, None, None


binomial_deviance_custom_vjp = jax.custom_vjp(binomial_deviance, nondiff_argnums=(3, 4, 5))
binomial_deviance_custom_vjp.defvjp(_binomial_deviance_fwd, _binomial_deviance_bwd)
autodiff("binomial_deviance", binomial_deviance)
custom_vjp("binomial_deviance", binomial_deviance_custom_vjp, _binomial_deviance_fwd, _binomial_deviance_bwd)


# -- contrastive_loss ------------------------------------------------------------

def _safe_distance(d2):
    """sqrt(d2) with the derivative taken as 0 where d2 == 0 (the double-where trick)."""
    positive = d2 > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, d2, 1.0)), 0.0)


def contrastive_loss(x1, x2, y, margin=1.0, reduction="mean"):
    diff = x1 - x2
    d2 = (diff * diff).sum(axis=1)
    hinge = jnp.maximum(0.0, margin - _safe_distance(d2))
    return reduce(0.5 * (1.0 - y) * d2 + 0.5 * y * hinge * hinge, reduction)


def _contrastive_loss_fwd(x1, x2, y, margin, reduction):
    return contrastive_loss(x1, x2, y, margin, reduction), (x1, x2, y)


def _contrastive_loss_bwd(margin, reduction, residuals, cotangent):
    x1, x2, y = residuals
    diff = x1 - x2
    d2 = (diff * diff).sum(axis=1)
    dist = _safe_distance(d2)
    hinge = jnp.maximum(0.0, margin - dist)
    positive = d2 > 0
    inv = jnp.where(positive, 1.0 / jnp.where(positive, dist, 1.0), 0.0)
    g = reduce_vjp(cotangent, reduction, y.size)
    coef = g * ((1.0 - y) - y * hinge * inv)
    d_x1 = coef[..., None] * diff
    return d_x1, -d_x1, None


contrastive_loss_custom_vjp = jax.custom_vjp(contrastive_loss, nondiff_argnums=(3, 4))
contrastive_loss_custom_vjp.defvjp(_contrastive_loss_fwd, _contrastive_loss_bwd)
autodiff("contrastive_loss", contrastive_loss)
custom_vjp("contrastive_loss", contrastive_loss_custom_vjp, _contrastive_loss_fwd, _contrastive_loss_bwd)


# -- gaussian_kernel_loss --------------------------------------------------------

def gaussian_kernel_loss(input, sigma, center, reduction="mean"):
    diff = input - center
    q = (diff * diff).sum(axis=-1)
    return reduce(jnp.exp(-q / (2.0 * sigma * sigma)), reduction)


def _gaussian_kernel_loss_fwd(input, sigma, center, reduction):
    return gaussian_kernel_loss(input, sigma, center, reduction), (input, sigma, center)


def _gaussian_kernel_loss_bwd(reduction, residuals, cotangent):
    input, sigma, center = residuals
    diff = input - center
    q = (diff * diff).sum(axis=-1)
    value = jnp.exp(-q / (2.0 * sigma * sigma))
    g = reduce_vjp(cotangent, reduction, q.size) * value
    d_input = -(g / (sigma * sigma))[..., None] * diff
    d_sigma = g * q / sigma ** 3
    d_center = -d_input
    if sigma.ndim == 0:
        d_sigma = d_sigma.sum()
    if center.ndim == 1:
        d_center = d_center.sum(axis=0)
    return d_input, d_sigma, d_center


gaussian_kernel_loss_custom_vjp = jax.custom_vjp(gaussian_kernel_loss, nondiff_argnums=(3,))
gaussian_kernel_loss_custom_vjp.defvjp(_gaussian_kernel_loss_fwd, _gaussian_kernel_loss_bwd)
autodiff("gaussian_kernel_loss", gaussian_kernel_loss)
custom_vjp("gaussian_kernel_loss", gaussian_kernel_loss_custom_vjp, _gaussian_kernel_loss_fwd,
           _gaussian_kernel_loss_bwd)


# -- batch_sum_squared_error -----------------------------------------------------

def batch_sum_squared_error(input, target, reduction="mean"):
    d = input - target
    return reduce((d * d).reshape(d.shape[0], math.prod(d.shape[1:])).sum(axis=1), reduction)  # not -1: N may be 0


def _batch_sum_squared_error_fwd(input, target, reduction):
    return batch_sum_squared_error(input, target, reduction), (input, target)


def _batch_sum_squared_error_bwd(reduction, residuals, cotangent):
    input, target = residuals
    n = input.shape[0]
    g = reduce_vjp(cotangent, reduction, n)
    if g.ndim:
        g = g.reshape((n,) + (1,) * (input.ndim - 1))
    d_input = 2.0 * (input - target) * g
    return d_input, -d_input


batch_sum_squared_error_custom_vjp = jax.custom_vjp(batch_sum_squared_error, nondiff_argnums=(2,))
batch_sum_squared_error_custom_vjp.defvjp(_batch_sum_squared_error_fwd, _batch_sum_squared_error_bwd)
autodiff("batch_sum_squared_error", batch_sum_squared_error)
custom_vjp("batch_sum_squared_error", batch_sum_squared_error_custom_vjp, _batch_sum_squared_error_fwd,
           _batch_sum_squared_error_bwd)


# -- the built-ins, the outside oracle ---------------------------------------------

def _optax_squared_error_per_sample(input, target, reduction="mean"):
    """The recorded mapping: optax's per-element squared error, summed per sample."""
    import optax
    squared = optax.losses.squared_error(input, target)
    per_sample = squared.reshape(input.shape[0], math.prod(input.shape[1:])).sum(axis=1)
    return reduce(per_sample, reduction)


builtin("batch_sum_squared_error", _optax_squared_error_per_sample)
