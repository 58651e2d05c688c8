"""Regression losses in JAX: l1_loss, mse_loss, huber_loss, smooth_l1_loss.

Each loss reads as in ``reference/regression.py``: a jax.numpy function (the
``autodiff`` variant) and a ``jax.custom_vjp`` whose backward is the reference's VJP.
"""

from __future__ import annotations

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
