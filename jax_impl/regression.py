"""Regression losses in JAX: l1_loss, mse_loss, huber_loss, smooth_l1_loss,
poisson_nll_loss, gaussian_nll_loss; squared_error (an alias of mse_loss), l2_loss,
log_cosh; mean_absolute_percentage_error, mean_squared_logarithmic_error, poisson.

Each loss reads as in ``reference/regression.py``: a jax.numpy function (the
``autodiff`` variant) and a ``jax.custom_vjp`` whose backward is the reference's VJP.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from reference.reductions import reduce, reduce_vjp
from .core import alias, autodiff, builtin, custom_vjp, keras


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
    passes straight through (``jnp.maximum`` alone would zero it below eps). The zero-valued
    term that carries it is 0 outright at an infinite variance, where var - var is NaN."""
    var = _homoscedastic_view(var, input)
    straight_through = jnp.where(jnp.isfinite(var), var - jax.lax.stop_gradient(var), 0.0)
    return jax.lax.stop_gradient(jnp.maximum(var, eps)) + straight_through


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


# ==================================================================================
# Part 2: optax's and Keras's regression losses (see reference/regression.py). Keras's
# average over the last axis: one value per row.
# ==================================================================================

KERAS_EPSILON = 1e-7
_LOG_2 = math.log(2.0)


def _rows(x):
    return x.size // x.shape[-1] if x.shape[-1] else 0


# -- squared_error (optax): an alias of mse_loss -------------------------------------

alias("squared_error")


# -- l2_loss (optax) ---------------------------------------------------------------

def l2_loss(predictions, targets, reduction="none"):
    d = predictions - targets
    return reduce(0.5 * d * d, reduction)


def _l2_loss_fwd(predictions, targets, reduction):
    return l2_loss(predictions, targets, reduction), (predictions, targets)


def _l2_loss_bwd(reduction, residuals, cotangent):
    predictions, targets = residuals
    g = reduce_vjp(cotangent, reduction, predictions.size)
    d_predictions = (predictions - targets) * g
    return d_predictions, -d_predictions


l2_loss_custom_vjp = jax.custom_vjp(l2_loss, nondiff_argnums=(2,))
l2_loss_custom_vjp.defvjp(_l2_loss_fwd, _l2_loss_bwd)
autodiff("l2_loss", l2_loss)
custom_vjp("l2_loss", l2_loss_custom_vjp, _l2_loss_fwd, _l2_loss_bwd)


# -- log_cosh (optax) --------------------------------------------------------------

def log_cosh(predictions, targets, reduction="none"):
    d = predictions - targets
    return reduce(jnp.logaddexp(d, -d) - _LOG_2, reduction)


def _log_cosh_fwd(predictions, targets, reduction):
    return log_cosh(predictions, targets, reduction), (predictions, targets)


def _log_cosh_bwd(reduction, residuals, cotangent):
    predictions, targets = residuals
    g = reduce_vjp(cotangent, reduction, predictions.size)
    d_predictions = jnp.tanh(predictions - targets) * g
    return d_predictions, -d_predictions


log_cosh_custom_vjp = jax.custom_vjp(log_cosh, nondiff_argnums=(2,))
log_cosh_custom_vjp.defvjp(_log_cosh_fwd, _log_cosh_bwd)
autodiff("log_cosh", log_cosh)
custom_vjp("log_cosh", log_cosh_custom_vjp, _log_cosh_fwd, _log_cosh_bwd)


# -- mean_absolute_percentage_error (Keras) ----------------------------------------

def mean_absolute_percentage_error(y_true, y_pred, reduction="none"):
    y = y_true.astype(y_pred.dtype)
    per = jnp.abs((y - y_pred) / jnp.maximum(jnp.abs(y), KERAS_EPSILON))
    return reduce(100.0 * per.mean(-1), reduction)


def _mean_absolute_percentage_error_fwd(y_true, y_pred, reduction):
    return mean_absolute_percentage_error(y_true, y_pred, reduction), (y_true, y_pred)


def _mean_absolute_percentage_error_bwd(reduction, residuals, cotangent):
    y_true, y_pred = residuals
    y = y_true.astype(y_pred.dtype)
    g = reduce_vjp(cotangent, reduction, _rows(y_pred))
    slope = 100.0 / max(y_pred.shape[-1], 1) * jnp.sign(y_pred - y) / jnp.maximum(jnp.abs(y), KERAS_EPSILON)
    return None, slope * jnp.expand_dims(g, -1)


mean_absolute_percentage_error_custom_vjp = jax.custom_vjp(mean_absolute_percentage_error, nondiff_argnums=(2,))
mean_absolute_percentage_error_custom_vjp.defvjp(_mean_absolute_percentage_error_fwd,
                                                 _mean_absolute_percentage_error_bwd)
autodiff("mean_absolute_percentage_error", mean_absolute_percentage_error)
custom_vjp("mean_absolute_percentage_error", mean_absolute_percentage_error_custom_vjp,
           _mean_absolute_percentage_error_fwd, _mean_absolute_percentage_error_bwd)


# -- mean_squared_logarithmic_error (Keras) ----------------------------------------

def _msle_terms(y_true, y_pred):
    """The clipped prediction x = max(y_pred, eps) and log(1 + x) - log(1 + max(y, eps))."""
    x = jnp.maximum(y_pred, KERAS_EPSILON)
    return x, jnp.log1p(x) - jnp.log1p(jnp.maximum(y_true.astype(y_pred.dtype), KERAS_EPSILON))


def mean_squared_logarithmic_error(y_true, y_pred, reduction="none"):
    _, diff = _msle_terms(y_true, y_pred)
    return reduce((diff * diff).mean(-1), reduction)


def _mean_squared_logarithmic_error_fwd(y_true, y_pred, reduction):
    # the backward reads the difference of logs and the clipped prediction: no second log1p
    x, diff = _msle_terms(y_true, y_pred)
    return reduce((diff * diff).mean(-1), reduction), (y_pred, x, diff)


def _mean_squared_logarithmic_error_bwd(reduction, residuals, cotangent):
    y_pred, x, diff = residuals
    g = reduce_vjp(cotangent, reduction, _rows(y_pred))
    slope = jnp.where(y_pred > KERAS_EPSILON, 2.0 / max(y_pred.shape[-1], 1) * diff / (1.0 + x), 0.0)
    return None, slope * jnp.expand_dims(g, -1)


mean_squared_logarithmic_error_custom_vjp = jax.custom_vjp(mean_squared_logarithmic_error, nondiff_argnums=(2,))
mean_squared_logarithmic_error_custom_vjp.defvjp(_mean_squared_logarithmic_error_fwd,
                                                 _mean_squared_logarithmic_error_bwd)
autodiff("mean_squared_logarithmic_error", mean_squared_logarithmic_error)
custom_vjp("mean_squared_logarithmic_error", mean_squared_logarithmic_error_custom_vjp,
           _mean_squared_logarithmic_error_fwd, _mean_squared_logarithmic_error_bwd)


# -- poisson (Keras) ---------------------------------------------------------------

def poisson(y_true, y_pred, reduction="none"):
    y = y_true.astype(y_pred.dtype)
    return reduce((y_pred - y * jnp.log(y_pred + KERAS_EPSILON)).mean(-1), reduction)


def _poisson_fwd(y_true, y_pred, reduction):
    return poisson(y_true, y_pred, reduction), (y_true, y_pred)


def _poisson_bwd(reduction, residuals, cotangent):
    y_true, y_pred = residuals
    y = y_true.astype(y_pred.dtype)
    g = reduce_vjp(cotangent, reduction, _rows(y_pred))
    return None, (1.0 - y / (y_pred + KERAS_EPSILON)) / y_pred.shape[-1] * jnp.expand_dims(g, -1)


poisson_custom_vjp = jax.custom_vjp(poisson, nondiff_argnums=(2,))
poisson_custom_vjp.defvjp(_poisson_fwd, _poisson_bwd)
autodiff("poisson", poisson)
custom_vjp("poisson", poisson_custom_vjp, _poisson_fwd, _poisson_bwd)


# -- the built-ins (part 2): optax's and Keras's own losses ------------------------

def _optax_pair(name: str):
    def adapter(predictions, targets, reduction="none"):
        import optax
        return reduce(getattr(optax.losses, name)(predictions, targets), reduction)
    adapter.__name__ = f"optax_{name}"
    adapter.__doc__ = f"optax.losses.{name}, reduced as lossparity reduces."
    return adapter


KERAS_FLOAT64 = ("Keras 3 cannot give float64 values on the JAX backend: keras.ops.mean casts float64 to "
                 "float32 before averaging (keras.backend.result_type maps float64 to float32 on every backend "
                 "but TensorFlow, whatever keras.config.floatx() says), so its row means carry float32 rounding; "
                 "tests/test_differences_regression.py compares it in float32")


def _keras_regression(name: str):
    def adapter(y_true, y_pred, reduction="none"):
        if jnp.dtype(y_pred.dtype) == jnp.float64:
            raise NotImplementedError(KERAS_FLOAT64)
        k = keras()
        if k.config.epsilon() != KERAS_EPSILON:
            raise NotImplementedError(f"keras.config.epsilon() is {k.config.epsilon()}; lossparity follows 1e-7")
        return reduce(getattr(k.losses, name)(y_true, y_pred), reduction)
    adapter.__name__ = f"keras_{name}"
    adapter.__doc__ = f"keras.losses.{name} on the JAX backend (float32 only), reduced as lossparity reduces."
    return adapter


for _name in ("squared_error", "l2_loss", "log_cosh"):
    builtin(_name, _optax_pair(_name))
for _name in ("mean_absolute_percentage_error", "mean_squared_logarithmic_error", "poisson"):
    builtin(_name, _keras_regression(_name))
