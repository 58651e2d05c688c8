"""Regression losses: l1_loss, mse_loss, huber_loss, smooth_l1_loss, poisson_nll_loss,
gaussian_nll_loss (torch's names); squared_error (an alias of mse_loss), l2_loss and
log_cosh (optax's names); mean_absolute_percentage_error, mean_squared_logarithmic_error
and poisson (Keras's names).

The first four are pointwise functions of the difference ``d = input - target``,
optionally scaled by an element ``weight`` of the input's shape (torch >= 2.11); the
likelihoods follow them; part 2, the library-named losses, closes the file.
"""

from __future__ import annotations

import numpy as np

from . import articles, checks
from .numerics import logaddexp
from .reductions import mean_over, reduce, reduce_vjp
from .spec import (Alias, BadInput, Case, Difference, LossSpec, Sampled, alias_spec, register, replace_input,
                   set_param)


# -- sampling and checks shared by the pointwise losses --------------------------

# |input - target| is drawn from bands that stay clear of every kink the cases use
# (0 for l1, delta or beta in {0.5, 1, 2}), so finite differences see smooth functions.
_BANDS = ((0.1, 0.4), (0.6, 0.9), (1.1, 1.9), (2.1, 3.0))


def sample_pair(rng: np.random.Generator, shape=(6, 4)):
    """``input`` ~ N(0, 1) and ``target = input - d`` with |d| kept off the kinks."""
    shape = tuple(shape)
    band = rng.integers(len(_BANDS), size=shape)
    low = np.array([b[0] for b in _BANDS])[band]
    high = np.array([b[1] for b in _BANDS])[band]
    d = rng.uniform(low, high) * rng.choice([-1.0, 1.0], size=shape)
    x = rng.standard_normal(shape)
    return x, x - d


element_weight = Sampled("weight ~ U(0.1, 2), the input's shape",
                         lambda rng, inputs: rng.uniform(0.1, 2.0, size=inputs[0].shape))


def check_pointwise(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, y = args["input"], args["target"]
    checks.floating(x)
    checks.floating(y)
    checks.same_shape(x, y)
    checks.same_dtype(x, y)
    w = args.get("weight")
    if w is not None:
        checks.floating(w)
        checks.same_shape(x, w)
        checks.nonnegative_array(w)


def _weighted(elementwise, weight):
    return elementwise if weight is None else elementwise * weight


# -- l1_loss ---------------------------------------------------------------------

def l1_loss(input, target, reduction="mean", weight=None):
    r"""Mean absolute error, as ``torch.nn.functional.l1_loss``.

    .. math:: \ell_i = w_i\,|x_i - y_i|

    ``mean`` divides by :math:`\sum_i w_i` when ``weight`` is given (torch >= 2.11),
    by the number of elements otherwise.
    """
    elementwise = _weighted(np.abs(input - target), weight)
    return reduce(elementwise, reduction, None if weight is None else weight.sum())


def l1_loss_vjp(cotangent, input, target, reduction="mean", weight=None):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = w_i\,\operatorname{sign}(x_i - y_i)
              = -\frac{\partial \ell_i}{\partial y_i}
    """
    g = reduce_vjp(cotangent, reduction, input.size, None if weight is None else weight.sum())
    d_input = _weighted(np.sign(input - target), weight) * g
    return d_input, -d_input


# -- mse_loss --------------------------------------------------------------------

def mse_loss(input, target, reduction="mean", weight=None):
    r"""Mean squared error, as ``torch.nn.functional.mse_loss``.

    .. math:: \ell_i = w_i\,(x_i - y_i)^2

    ``mean`` divides by :math:`\sum_i w_i` when ``weight`` is given.
    """
    elementwise = _weighted((input - target) ** 2, weight)
    return reduce(elementwise, reduction, None if weight is None else weight.sum())


def mse_loss_vjp(cotangent, input, target, reduction="mean", weight=None):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = 2 w_i (x_i - y_i) = -\frac{\partial \ell_i}{\partial y_i}
    """
    g = reduce_vjp(cotangent, reduction, input.size, None if weight is None else weight.sum())
    d_input = _weighted(2.0 * (input - target), weight) * g
    return d_input, -d_input


# -- huber_loss ------------------------------------------------------------------

def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    r"""Huber loss, as ``torch.nn.functional.huber_loss``.

    .. math:: \ell_i = w_i \begin{cases} \tfrac12 d_i^2 & |d_i| < \delta \\
              \delta\,(|d_i| - \tfrac12\delta) & \text{otherwise} \end{cases},
              \qquad d_i = x_i - y_i

    Unlike ``l1_loss`` and ``mse_loss``, torch 2.13's weighted ``mean`` divides
    by the number of elements, not by :math:`\sum_i w_i` (``weighted_loss.mean()``
    in ``torch/nn/functional.py``); the reference follows torch.
    """
    d = input - target
    a = np.abs(d)
    elementwise = np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    return reduce(_weighted(elementwise, weight), reduction)


def huber_loss_vjp(cotangent, input, target, reduction="mean", delta=1.0, weight=None):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = w_i\,\operatorname{clip}(d_i, -\delta, \delta)
              = -\frac{\partial \ell_i}{\partial y_i}
    """
    g = reduce_vjp(cotangent, reduction, input.size)
    d_input = _weighted(np.clip(input - target, -delta, delta), weight) * g
    return d_input, -d_input


def check_huber(args: dict) -> None:
    check_pointwise(args)
    checks.nonnegative("delta", args["delta"])
    if args["delta"] == 0:
        raise ValueError("delta must be positive; got 0 (torch's huber_loss rejects it too)")


# -- smooth_l1_loss --------------------------------------------------------------

def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    r"""Smooth L1 loss, as ``torch.nn.functional.smooth_l1_loss``.

    .. math:: \ell_i = \begin{cases} \tfrac12 d_i^2 / \beta & |d_i| < \beta \\
              |d_i| - \tfrac12\beta & \text{otherwise} \end{cases}

    ``beta = 0`` is exactly ``l1_loss``. ``huber_loss(delta) = delta * smooth_l1_loss(beta=delta)``.
    """
    d = input - target
    a = np.abs(d)
    if beta == 0:
        return reduce(a, reduction)
    return reduce(np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta), reduction)


def smooth_l1_loss_vjp(cotangent, input, target, reduction="mean", beta=1.0):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = \operatorname{clip}(d_i / \beta, -1, 1)
              \;(\operatorname{sign}(d_i) \text{ at } \beta = 0) = -\frac{\partial \ell_i}{\partial y_i}
    """
    g = reduce_vjp(cotangent, reduction, input.size)
    d = input - target
    slope = np.sign(d) if beta == 0 else np.clip(d / beta, -1.0, 1.0)
    return slope * g, -slope * g


def check_smooth_l1(args: dict) -> None:
    check_pointwise(args)
    checks.nonnegative("beta", args["beta"])


# -- registry --------------------------------------------------------------------

POINTWISE_BAD_INPUTS = (
    BadInput("target of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "target"),
    BadInput("target that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "target"),
    BadInput("integer input", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "input"),
    BadInput("target of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError, "target"),
)
WEIGHT_BAD_INPUTS = (
    BadInput("weight of another shape", set_param("weight", lambda xs: np.ones(xs[0].shape[-1])), ValueError, "weight"),
    BadInput("negative weight", set_param("weight", lambda xs: -np.ones(xs[0].shape)), ValueError, "weight"),
)

_POINTWISE = dict(family="regression", inputs=("input", "target"), differentiable=("input", "target"),
                  sampler=sample_pair)

register(LossSpec(
    name="l1_loss", forward=l1_loss, vjp_fn=l1_loss_vjp, check=check_pointwise, **_POINTWISE,
    claims=articles.claims("l1_loss"),
    cases=(Case("default"), Case("weighted", {"weight": element_weight})),
    array_params=("weight",), bad_inputs=POINTWISE_BAD_INPUTS + WEIGHT_BAD_INPUTS,
    builtins={"torch": "torch.nn.functional.l1_loss"},
))

register(LossSpec(
    name="mse_loss", forward=mse_loss, vjp_fn=mse_loss_vjp, check=check_pointwise, **_POINTWISE,
    claims=articles.claims("mse_loss"),
    cases=(Case("default"), Case("weighted", {"weight": element_weight})),
    array_params=("weight",), bad_inputs=POINTWISE_BAD_INPUTS + WEIGHT_BAD_INPUTS,
    builtins={"torch": "torch.nn.functional.mse_loss", "optax": "optax.losses.squared_error"},
    differences=(
        Difference("optax", "optax.losses.squared_error",
                   "per-element (x - y)^2 with no reduction and no weight",
                   "mse_loss(x, y, reduction='none') == squared_error(x, y)"),
    ),
))

register(LossSpec(
    name="huber_loss", forward=huber_loss, vjp_fn=huber_loss_vjp, check=check_huber, **_POINTWISE,
    cases=(Case("default"), Case("delta=0.5", {"delta": 0.5}), Case("delta=2", {"delta": 2.0}),
           Case("weighted", {"weight": element_weight})),
    array_params=("weight",),
    bad_inputs=POINTWISE_BAD_INPUTS + WEIGHT_BAD_INPUTS + (
        BadInput("negative delta", set_param("delta", lambda xs: -1.0), ValueError, "delta"),
        BadInput("zero delta", set_param("delta", lambda xs: 0.0), ValueError, "delta"),
    ),
    builtins={"torch": "torch.nn.functional.huber_loss", "optax": "optax.losses.huber_loss"},
    differences=(
        Difference("optax", "optax.losses.huber_loss",
                   "per-element, argument `delta`, no reduction, no weight",
                   "huber_loss(x, y, reduction='none', delta=d) == optax.losses.huber_loss(x, y, delta=d)"),
        Difference("torch", "torch.nn.functional.smooth_l1_loss",
                   "huber is smooth_l1 scaled by its threshold",
                   "huber_loss(x, y, delta=d) == d * smooth_l1_loss(x, y, beta=d)"),
    ),
))

register(LossSpec(
    name="smooth_l1_loss", forward=smooth_l1_loss, vjp_fn=smooth_l1_loss_vjp, check=check_smooth_l1,
    **_POINTWISE,
    cases=(Case("default"), Case("beta=0.5", {"beta": 0.5}), Case("beta=0", {"beta": 0.0})),
    bad_inputs=POINTWISE_BAD_INPUTS + (
        BadInput("negative beta", set_param("beta", lambda xs: -0.5), ValueError, "beta"),
    ),
    builtins={"torch": "torch.nn.functional.smooth_l1_loss"},
))


# -- poisson_nll_loss ------------------------------------------------------------

_LOG_2PI = float(np.log(2.0 * np.pi))


def _stirling(target):
    r"""torch's Stirling term :math:`y\log y - y + \tfrac12\log(2\pi y)`, only where y > 1 (0 elsewhere)."""
    safe = np.where(target > 1, target, 2.0)  # keeps log finite where the term is dropped
    return np.where(target > 1, safe * np.log(safe) - safe + 0.5 * (_LOG_2PI + np.log(safe)), 0.0)


def poisson_nll_loss(input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
    r"""Poisson negative log likelihood, as ``torch.nn.functional.poisson_nll_loss``.

    .. math:: \ell_i = \begin{cases} e^{x_i} - y_i x_i & \text{log\_input} \\
              x_i - y_i \log(x_i + \varepsilon) & \text{otherwise} \end{cases}
              \;+\; [\text{full}]\,[y_i > 1]\,\bigl(y_i \log y_i - y_i + \tfrac12 \log(2\pi y_i)\bigr)

    ``eps`` is used only when ``log_input=False``; the Stirling term of ``full`` only
    where the target exceeds 1 (so the loss jumps by about -0.081 as y crosses 1). torch's
    deprecated ``size_average``/``reduce`` are dropped. Keras ``poisson`` is the
    ``log_input=False`` form with eps 1e-7, no Stirling term, averaged over the last axis.
    """
    if log_input:
        elementwise = np.exp(input) - target * input
    else:
        elementwise = input - target * np.log(input + eps)
    if full:
        elementwise = elementwise + _stirling(target)
    return reduce(elementwise, reduction)


def poisson_nll_loss_vjp(cotangent, input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = \begin{cases} e^{x_i} - y_i \\
              1 - y_i / (x_i + \varepsilon) \end{cases}, \qquad
              \frac{\partial \ell_i}{\partial y_i} = \begin{cases} -x_i \\ -\log(x_i + \varepsilon) \end{cases}
              + [\text{full}]\,[y_i > 1]\,\bigl(\log y_i + \tfrac{1}{2 y_i}\bigr)

    The true derivative everywhere: torch's own gradient w.r.t. the target is NaN where
    the target is exactly 0 and ``full=True`` (its backward meets 0·log 0 in the dropped term).
    """
    g = reduce_vjp(cotangent, reduction, input.size)
    if log_input:
        d_input, d_target = np.exp(input) - target, -input
    else:
        d_input, d_target = 1.0 - target / (input + eps), -np.log(input + eps)
    if full:
        safe = np.where(target > 1, target, 2.0)
        d_target = d_target + np.where(target > 1, np.log(safe) + 0.5 / safe, 0.0)
    return d_input * g, d_target * g


def check_poisson_nll(args: dict) -> None:
    check_pointwise(args)
    checks.boolean("log_input", args["log_input"])
    checks.boolean("full", args["full"])
    checks.nonnegative("eps", args["eps"])
    checks.nonnegative_array(args["target"])  # Poisson counts
    if not args["log_input"]:
        checks.nonnegative_array(args["input"])  # a rate, not its log


def sample_poisson(rng: np.random.Generator, shape=(6, 4), log_input=True):
    """``input``: log-rates ~ N(0, 0.7) or rates ~ U(0.2, 3); ``target``: non-negative and kept
    away from 1, where the Stirling term of ``full`` switches on (the loss jumps there)."""
    shape = tuple(shape)
    low = rng.uniform(0.1, 0.9, size=shape)
    high = rng.uniform(1.2, 4.5, size=shape)
    target = np.where(rng.random(shape) < 0.4, low, high)
    x = 0.7 * rng.standard_normal(shape) if log_input else rng.uniform(0.2, 3.0, size=shape)
    return x, target


register(LossSpec(
    name="poisson_nll_loss", family="regression", forward=poisson_nll_loss, vjp_fn=poisson_nll_loss_vjp,
    inputs=("input", "target"), differentiable=("input", "target"), sampler=sample_poisson,
    check=check_poisson_nll,
    cases=(Case("default"),
           Case("full", {"full": True}),
           Case("log_input=False", {"log_input": False}, sample={"log_input": False}),
           Case("log_input=False, full", {"log_input": False, "full": True}, sample={"log_input": False}),
           Case("log_input=False, eps=0.5", {"log_input": False, "eps": 0.5}, sample={"log_input": False})),
    bad_inputs=POINTWISE_BAD_INPUTS + (
        BadInput("negative eps", set_param("eps", lambda xs: -1e-8), ValueError, "eps"),
        BadInput("negative target", replace_input(1, lambda xs: xs[1] - 10.0), ValueError, "target"),
        BadInput("negative rate with log_input=False",
                 lambda xs, kw: ((-np.abs(xs[0]) - 0.1, xs[1]), {**kw, "log_input": False}), ValueError, "input"),
        BadInput("log_input that is not a bool", set_param("log_input", lambda xs: "yes"), TypeError, "log_input"),
    ),
    builtins={"torch": "torch.nn.functional.poisson_nll_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.poisson_nll_loss",
                   "size_average and reduce (deprecated) are dropped; torch broadcasts target and "
                   "accepts negative targets or rates, lossparity rejects them; with full=True torch's "
                   "gradient w.r.t. target is NaN where target == 0 (0 * log 0 in the backward of the "
                   "masked Stirling term), the reference gives the true derivative there",
                   "poisson_nll_loss(x, y, log_input, full, eps=e, reduction=r) == "
                   "F.poisson_nll_loss(x, y, log_input, full, eps=e, reduction=r); gradients agree "
                   "wherever target != 0 or full=False"),
        Difference("keras", "keras.losses.poisson",
                   "Keras takes the rate (log_input=False) with eps 1e-7, has no Stirling term, "
                   "and averages over the last axis",
                   "keras.losses.poisson(y, x) == poisson_nll_loss(x, y, log_input=False, eps=1e-7, "
                   "reduction='none').mean(-1) == poisson(y, x) (lossparity's Keras-named loss)"),
    ),
))


# -- gaussian_nll_loss -----------------------------------------------------------

def homoscedastic_view(var, input_shape):
    """``var`` as torch broadcasts it: one dimension short of ``input`` gets a trailing 1."""
    if tuple(var.shape) != tuple(input_shape) and tuple(var.shape) == tuple(input_shape)[:-1]:
        return var.reshape(tuple(var.shape) + (1,))
    return var


def _sum_to(grad, shape):
    """``grad`` (the input's shape) summed over the axes ``var`` was broadcast along."""
    view = homoscedastic_view(np.empty(shape), grad.shape).shape
    axes = tuple(i for i, (v, g) in enumerate(zip(view, grad.shape)) if v == 1 and g != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    r"""Gaussian negative log likelihood, as ``torch.nn.functional.gaussian_nll_loss``.

    .. math:: \ell_i = \tfrac12\Bigl(\log \tilde v_i + \frac{(x_i - y_i)^2}{\tilde v_i}\Bigr)
              + [\text{full}]\,\tfrac12\log 2\pi, \qquad \tilde v_i = \max(v_i, \varepsilon)

    ``var`` has the input's shape, or is one dimension short of it, or differs from it in
    exactly one dimension where it is 1 (``(N, 1)`` for ``(N, D)``): those dimensions
    broadcast (homoscedastic). ``mean`` averages over the input's elements. torch clamps
    ``var`` at ``eps`` under ``no_grad``, so the clamp has no derivative of its own: the
    gradient w.r.t. ``var`` is :math:`\partial\ell/\partial\tilde v` evaluated at the clamped
    value and passed straight through, also where :math:`v_i < \varepsilon`; the VJP
    follows torch there (see ``gaussian_nll_loss_vjp``).
    """
    v = np.maximum(homoscedastic_view(var, input.shape), eps)
    elementwise = 0.5 * (np.log(v) + (input - target) ** 2 / v)
    if full:
        elementwise = elementwise + 0.5 * _LOG_2PI
    return reduce(elementwise, reduction)


def gaussian_nll_loss_vjp(cotangent, input, target, var, full=False, eps=1e-6, reduction="mean"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = \frac{x_i - y_i}{\tilde v_i}
              = -\frac{\partial \ell_i}{\partial y_i}, \qquad
              \frac{\partial \ell_i}{\partial v_i} = \frac12\Bigl(\frac{1}{\tilde v_i}
              - \frac{(x_i - y_i)^2}{\tilde v_i^2}\Bigr) \text{ (straight through the clamp)}

    summed over the dimensions ``var`` broadcasts along. Where :math:`v_i < \varepsilon` the
    forward is flat in :math:`v_i` yet torch's gradient is the one above: it is torch's
    definition, not the forward's derivative (a ``maximum(var, eps)`` port gives 0 there).
    """
    v = np.maximum(homoscedastic_view(var, input.shape), eps)
    g = reduce_vjp(cotangent, reduction, input.size)
    d = input - target
    d_input = np.broadcast_to(d / v * g, input.shape)
    d_var = np.broadcast_to(0.5 * (1.0 / v - d * d / (v * v)) * g, input.shape)
    return d_input, -d_input, _sum_to(d_var, var.shape)


def check_var_shape(input: checks.ArrayInfo, var: checks.ArrayInfo) -> None:
    """torch's rule: the input's shape; one dimension short of it; or the input's number of
    dimensions, differing in exactly one, where var has size 1."""
    x, v = input.shape, var.shape
    if v == x or v == x[:-1]:
        return
    mismatched = [s for s, t in zip(v, x) if s != t]
    if len(v) == len(x) and mismatched == [1]:
        return
    raise ValueError(f"var must have the input's shape {x}, be one dimension short of it {x[:-1]}, or differ "
                     f"from it in exactly one dimension where it is 1 (torch's homoscedastic cases); got {v}")


def check_gaussian_nll(args: dict) -> None:
    check_pointwise(args)
    var = args["var"]
    checks.floating(var)
    checks.same_dtype(args["input"], var)
    check_var_shape(args["input"], var)
    checks.nonnegative_array(var)
    checks.boolean("full", args["full"])
    checks.nonnegative("eps", args["eps"])
    if args["eps"] == 0:
        raise ValueError("eps must be positive; got 0 (a zero var would reach log 0)")


def sample_gaussian(rng: np.random.Generator, shape=(6, 4), var_shape=None, below_eps=None):
    """``input``, ``target`` ~ N(0, 1); ``var`` ~ U(0.5, 2) of ``var_shape`` (default the
    input's). ``below_eps=e`` draws about a third of var in [0.1 e, 0.6 e] (clamped) and
    the rest in [2 e, 4 e], with |input - target| in [0.2, 0.6] sqrt(e) so that torch's
    straight-through gradient 0.5 (1/e - d^2/e^2) stays well away from 0."""
    shape = tuple(shape)
    var_shape = shape if var_shape is None else tuple(var_shape)
    x = rng.standard_normal(shape)
    if below_eps is None:
        return x, x + rng.standard_normal(shape), rng.uniform(0.5, 2.0, size=var_shape)
    e = below_eps
    d = rng.uniform(0.2, 0.6, size=shape) * np.sqrt(e) * rng.choice([-1.0, 1.0], size=shape)
    var = np.where(rng.random(var_shape) < 0.35, rng.uniform(0.1 * e, 0.6 * e, size=var_shape),
                   rng.uniform(2 * e, 4 * e, size=var_shape))
    return x, x - d, var


register(LossSpec(
    name="gaussian_nll_loss", family="regression", forward=gaussian_nll_loss, vjp_fn=gaussian_nll_loss_vjp,
    inputs=("input", "target", "var"), differentiable=("input", "target", "var"), sampler=sample_gaussian,
    check=check_gaussian_nll,
    cases=(Case("default"),
           Case("var (N, 1)", sample={"var_shape": (6, 1)}),
           Case("var (N,), one dim short", sample={"var_shape": (6,)}),
           Case("var (1, D)", sample={"var_shape": (1, 4)}),
           Case("3-D input, var (N, 1, K)", sample={"shape": (3, 4, 2), "var_shape": (3, 1, 2)}),
           Case("3-D input, var (N, D), one dim short", sample={"shape": (3, 4, 2), "var_shape": (3, 4)}),
           Case("1-D input, 0-d var", sample={"shape": (5,), "var_shape": ()}),
           Case("full", {"full": True}),
           Case("full, eps=0.1", {"full": True, "eps": 0.1})),
    # Some var below eps: every implementation must let the gradient through the clamp as
    # torch does, which finite differences of the (flat) clamped forward cannot confirm.
    straight_through_cases=(
        Case("var < eps (clamp, straight-through)", {"eps": 0.5}, sample={"below_eps": 0.5}),
        Case("var (N, 1) < eps (clamp, straight-through)", {"eps": 0.5},
             sample={"below_eps": 0.5, "var_shape": (6, 1)}),
    ),
    bad_inputs=POINTWISE_BAD_INPUTS + (
        BadInput("negative var", replace_input(2, lambda xs: xs[2] - 10.0), ValueError, "var"),
        BadInput("var of another shape", replace_input(2, lambda xs: xs[2][:, :-1]), ValueError, "var"),
        BadInput("var (1, 1) for a (N, D) input", replace_input(2, lambda xs: xs[2][:1, :1]), ValueError, "var"),
        BadInput("var (D,)", replace_input(2, lambda xs: xs[2][0]), ValueError, "var"),
        BadInput("integer var", replace_input(2, lambda xs: np.ones(xs[2].shape, np.int64)), TypeError, "var"),
        BadInput("negative eps", set_param("eps", lambda xs: -1e-6), ValueError, "eps"),
        BadInput("zero eps", set_param("eps", lambda xs: 0.0), ValueError, "eps"),
    ),
    builtins={"torch": "torch.nn.functional.gaussian_nll_loss"},
    differences=(
        Difference("numpy/jax ports", "maximum(var, eps)",
                   "torch clamps var at eps under no_grad, so the gradient w.r.t. var passes straight "
                   "through the clamp (0.5 (1/eps - d^2/eps^2) where var < eps); a maximum(var, eps) "
                   "port differentiates the clamp and gives 0 there",
                   "v = stop_gradient(maximum(var, eps)) + (var - stop_gradient(var)) (JAX), "
                   "v = var.clone(); with no_grad: v.clamp_(min=eps) (torch)"),
        Difference("torch", "torch.nn.functional.gaussian_nll_loss",
                   "torch also takes a Python float var (a constant, no gradient) and broadcasts target "
                   "silently; lossparity takes var as an array and rejects a target of another shape",
                   "F.gaussian_nll_loss(x, y, v: float) == gaussian_nll_loss(x, y, full_like(x, v)) "
                   "(value; torch discards the float's gradient)"),
    ),
))


# ==================================================================================
# Part 2: optax's and Keras's regression losses: squared_error (an alias of mse_loss),
# l2_loss and log_cosh (optax's names and argument names), mean_absolute_percentage_error,
# mean_squared_logarithmic_error and poisson (Keras's names and (y_true, y_pred) order).
#
# These losses are named after a library that has no reduction, so ``reduction`` defaults
# to "none": called with the defaults they give the library's per-example values; "mean"
# is the plain mean of those values and "sum" their sum. optax's losses give one value
# per element; Keras's average over the last axis, so they give one value per row.
#
# optax's ``targets=None`` (zeros) is not taken: lossparity's inputs are all positional and
# required (a missing input is a TypeError in every package). Pass ``zeros_like(predictions)``;
# each optax loss records the mapping.
# ==================================================================================

KERAS_EPSILON = 1e-7  # keras.config.epsilon(), Keras's default fuzz factor
_LOG_2 = float(np.log(2.0))


def check_optax_pair(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, y = args["predictions"], args["targets"]
    checks.floating(x)
    checks.floating(y)
    checks.same_shape(x, y)
    checks.same_dtype(x, y)


def sample_smooth_pair(rng: np.random.Generator, shape=(6, 4), large=False):
    """``predictions`` ~ N(0, 1) and ``targets`` ~ N(0, 1) (no kinks to avoid), or, with
    ``large``, ``targets = predictions - d`` with |d| in [95, 150]: past float32's cosh overflow
    (|d| > 89.4), with a loss total (at most 900 for the 2 x 3 draw the case asks for) whose
    rounding in float64, 1e-13, stays far below what central differences with step 1e-6 resolve."""
    shape = tuple(shape)
    x = rng.standard_normal(shape)
    if large:
        return x, x - rng.uniform(95.0, 150.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return x, rng.standard_normal(shape)


OPTAX_PAIR_BAD_INPUTS = (
    BadInput("targets of another shape", replace_input(1, lambda xs: xs[1][..., :-1]), ValueError, "targets"),
    BadInput("targets that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "targets"),
    BadInput("integer predictions", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "predictions"),
    BadInput("integer targets", replace_input(1, lambda xs: xs[1].astype(np.int64)), TypeError, "targets"),
    BadInput("targets of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError, "targets"),
)

_OPTAX_SHAPE_CASES = (Case("default"), Case("vector", sample={"shape": (6,)}),
                      Case("3-d", sample={"shape": (2, 3, 2)}))


# -- squared_error (optax): an alias of mse_loss -------------------------------------

SQUARED_ERROR = Alias("mse_loss", inputs={"predictions": "input", "targets": "target"},
                      hyperparameters={"reduction": "none"}, fixed={"weight": None})

register(alias_spec(
    "squared_error", "regression", SQUARED_ERROR,
    doc=r"""Squared error, as ``optax.losses.squared_error``: an alias of ``mse_loss``.

    .. math:: \ell_i = (x_i - y_i)^2

    ``squared_error(predictions, targets, reduction=r) == mse_loss(predictions, targets,
    reduction=r)`` (no ``weight``); the default reduction is ``"none"``, optax's per-element
    values. Implemented once, by ``mse_loss``: the reference, torch and JAX variants map the
    arguments and call ``mse_loss``'s. optax's ``targets=None`` (zeros) is not taken.""",
    cases=_OPTAX_SHAPE_CASES,
    bad_inputs=OPTAX_PAIR_BAD_INPUTS,
    builtins={"optax": "optax.losses.squared_error", "torch": "torch.nn.functional.mse_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.mse_loss",
                   "the same mathematics under optax's name and argument names, with no weight and "
                   "reduction='none' by default",
                   "squared_error(x, y, reduction=r) == F.mse_loss(x, y, reduction=r) == "
                   "mse_loss(x, y, reduction=r)"),
        Difference("optax", "optax.losses.squared_error",
                   "optax's targets=None means zeros and its targets may have another dtype (it promotes); "
                   "lossparity requires targets of the predictions' dtype (TypeError otherwise)",
                   "optax.losses.squared_error(x) == squared_error(x, zeros_like(x)); "
                   "optax.losses.squared_error(x, y) == squared_error(x, y.astype(x.dtype))"),
        Difference("keras", "keras.losses.mean_squared_error",
                   "Keras takes (y_true, y_pred) and averages over the last axis, so Keras's Loss with "
                   "reduction='sum' sums row means: it is torch's sum divided by the last dimension C",
                   "keras.losses.mean_squared_error(y, x) == squared_error(x, y).mean(-1); "
                   "keras.losses.MeanSquaredError(reduction='sum')(y, x) == squared_error(x, y, "
                   "reduction='sum') / C"),
    ),
))


# -- l2_loss (optax) ---------------------------------------------------------------

def l2_loss(predictions, targets, reduction="none"):
    r"""L2 loss, as ``optax.losses.l2_loss``: half the squared error.

    .. math:: \ell_i = \tfrac12 (x_i - y_i)^2

    Not an alias: an alias is the same mathematics under another name, and the factor
    :math:`\tfrac12` changes every value and gradient. It is ``0.5 * squared_error`` (optax
    computes it so) and ``0.5 * mse_loss(reduction=r)`` for every reduction (the mean of
    halves is half the mean); the spec records both mappings. optax's ``targets=None`` (zeros)
    is not taken.
    """
    d = predictions - targets
    return reduce(0.5 * d * d, reduction)


def l2_loss_vjp(cotangent, predictions, targets, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = x_i - y_i = -\frac{\partial \ell_i}{\partial y_i}
    """
    g = reduce_vjp(cotangent, reduction, predictions.size)
    d_predictions = (predictions - targets) * g
    return d_predictions, -d_predictions


register(LossSpec(
    name="l2_loss", family="regression", forward=l2_loss, vjp_fn=l2_loss_vjp,
    inputs=("predictions", "targets"), differentiable=("predictions", "targets"),
    sampler=sample_smooth_pair, check=check_optax_pair,
    cases=_OPTAX_SHAPE_CASES,
    bad_inputs=OPTAX_PAIR_BAD_INPUTS,
    builtins={"optax": "optax.losses.l2_loss", "torch": "torch.nn.functional.mse_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.mse_loss",
                   "torch has no halved squared error; l2_loss is half of mse_loss for every reduction",
                   "l2_loss(x, y, reduction=r) == 0.5 * F.mse_loss(x, y, reduction=r)"),
        Difference("optax", "optax.losses.squared_error",
                   "optax defines l2_loss as half its squared_error (lossparity's alias of mse_loss)",
                   "l2_loss(x, y) == 0.5 * optax.losses.squared_error(x, y) == 0.5 * squared_error(x, y)"),
        Difference("optax", "optax.losses.l2_loss",
                   "optax's targets=None means zeros and its targets may have another dtype (it promotes); "
                   "lossparity requires targets of the predictions' dtype",
                   "optax.losses.l2_loss(x) == l2_loss(x, zeros_like(x)); "
                   "optax.losses.l2_loss(x, y) == l2_loss(x, y.astype(x.dtype))"),
    ),
))


# -- log_cosh (optax) --------------------------------------------------------------

def log_cosh(predictions, targets, reduction="none"):
    r"""Log-cosh loss, as ``optax.losses.log_cosh``.

    .. math:: \ell_i = \log\cosh(d_i) = \operatorname{logaddexp}(d_i, -d_i) - \log 2
              = |d_i| + \log\bigl(1 + e^{-2|d_i|}\bigr) - \log 2, \qquad d_i = x_i - y_i

    in optax's stable form (``cosh`` itself overflows float32 past :math:`|d| \approx 89`; this
    stays finite and exact to :math:`|d| \sim 10^{38}`). About :math:`d^2/2` near 0 and
    :math:`|d| - \log 2` far from it. Keras's ``log_cosh`` is the same function,
    :math:`d + \operatorname{softplus}(-2d) - \log 2`, averaged over the last axis. optax's
    ``targets=None`` (zeros) is not taken.
    """
    d = predictions - targets
    return reduce(logaddexp(d, -d) - _LOG_2, reduction)


def log_cosh_vjp(cotangent, predictions, targets, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = \tanh(d_i) = -\frac{\partial \ell_i}{\partial y_i}
    """
    g = reduce_vjp(cotangent, reduction, predictions.size)
    d_predictions = np.tanh(predictions - targets) * g
    return d_predictions, -d_predictions


register(LossSpec(
    name="log_cosh", family="regression", forward=log_cosh, vjp_fn=log_cosh_vjp,
    inputs=("predictions", "targets"), differentiable=("predictions", "targets"),
    sampler=sample_smooth_pair, check=check_optax_pair,
    cases=_OPTAX_SHAPE_CASES + (Case("large errors, |d| in [95, 150]", sample={"large": True, "shape": (2, 3)}),),
    bad_inputs=OPTAX_PAIR_BAD_INPUTS,
    builtins={"optax": "optax.losses.log_cosh"},
    differences=(
        Difference("optax", "optax.losses.log_cosh",
                   "optax broadcasts targets against predictions without checking their shapes (its "
                   "squared_error checks them), takes targets=None as zeros and promotes targets of another "
                   "dtype; lossparity requires one shape and dtype (ValueError, TypeError)",
                   "optax.losses.log_cosh(x, y) == log_cosh(*numpy.broadcast_arrays(x, y)); "
                   "optax.losses.log_cosh(x) == log_cosh(x, zeros_like(x))"),
        Difference("keras", "keras.losses.log_cosh",
                   "Keras takes (y_true, y_pred), writes d + softplus(-2 d) - log 2 (the same function) and "
                   "averages over the last axis",
                   "keras.losses.log_cosh(y, x) == log_cosh(x, y, reduction='none').mean(-1)"),
    ),
))


# -- Keras's regression losses: shared checks, sampling, bad inputs ----------------

def _per_row(g):
    """A per-row cotangent (or a scalar one) against the row's elements."""
    return np.expand_dims(np.asarray(g), -1)


def check_keras_regression(args: dict) -> None:
    """Keras's pair: ``y_pred`` floating, at least 1-d (Keras averages over the last axis);
    ``y_true`` of its shape, floating (of its dtype) or integer (cast to it, as Keras casts)."""
    checks.reduction(args["reduction"])
    y_true, y_pred = args["y_true"], args["y_pred"]
    checks.floating(y_pred)
    checks.kind_in(y_true, ("float", "int"), "values")
    checks.same_shape(y_pred, y_true)
    if y_true.kind == "float":
        checks.same_dtype(y_pred, y_true)
    checks.ndim_in(y_pred, range(1, 64), "at least one-dimensional (Keras averages over the last axis)")


_KERAS_SHAPE_BAD_INPUTS = (
    BadInput("y_true of another shape", replace_input(0, lambda xs: xs[0][..., :-1]), ValueError, "y_true"),
    BadInput("y_true that would broadcast", replace_input(0, lambda xs: xs[0][:1]), ValueError, "y_true"),
    BadInput("y_true one dimension short (Keras would expand or squeeze)",
             replace_input(0, lambda xs: xs[0][..., 0]), ValueError, "y_true"),
    BadInput("integer y_pred", replace_input(1, lambda xs: xs[1].astype(np.int64)), TypeError, "y_pred"),
    BadInput("y_true of another float dtype", replace_input(0, lambda xs: xs[0].astype(np.float32)),
             TypeError, "y_true"),
    BadInput("bool y_true", replace_input(0, lambda xs: xs[0] > 1), TypeError, "y_true"),
    BadInput("0-d y_true and y_pred", lambda xs, kw: ((xs[0][0, 0], xs[1][0, 0]), kw), ValueError, "y_pred"),
)

_KERAS_SHAPE_CASES = (Case("vector", sample={"shape": (5,)}), Case("3-d", sample={"shape": (2, 3, 4)}))


def _signs(rng, shape):
    return rng.choice([-1.0, 1.0], size=shape)


# -- mean_absolute_percentage_error (Keras) ----------------------------------------

def mean_absolute_percentage_error(y_true, y_pred, reduction="none"):
    r"""Mean absolute percentage error, as ``keras.losses.mean_absolute_percentage_error``
    (argument order ``(y_true, y_pred)``).

    .. math:: \ell_n = \frac{100}{C} \sum_c \frac{|y_{n,c} - x_{n,c}|}{\max(|y_{n,c}|,\, \epsilon)},
              \qquad \epsilon = 10^{-7}

    the mean over the last axis (one value per row), with Keras's clipping: the denominator is
    :math:`|y|` clipped below at Keras's ``epsilon()`` (``1e-7``, its default), so a zero target
    costs :math:`100\,|x| / 10^{-7}`. An integer ``y_true`` is cast to ``y_pred``'s dtype, as Keras
    casts it. It is torch's ``l1_loss`` weighted by :math:`1 / \max(|y|, \epsilon)`, times 100,
    averaged over the last axis.
    """
    y = y_true.astype(y_pred.dtype)
    per = np.abs((y - y_pred) / np.maximum(np.abs(y), KERAS_EPSILON))
    return reduce(100.0 * mean_over(per), reduction)


def mean_absolute_percentage_error_vjp(cotangent, y_true, y_pred, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_n}{\partial x_{n,c}} = \frac{100}{C}\,
              \frac{\operatorname{sign}(x_{n,c} - y_{n,c})}{\max(|y_{n,c}|,\, \epsilon)}

    ``y_true`` gets no gradient: Keras treats it as data, and the clip makes its derivative
    jump at :math:`|y| = \epsilon`, where zero targets sit.
    """
    y = y_true.astype(y_pred.dtype)
    g = reduce_vjp(cotangent, reduction, int(np.prod(y_pred.shape[:-1])))
    slope = 100.0 / max(y_pred.shape[-1], 1) * np.sign(y_pred - y) / np.maximum(np.abs(y), KERAS_EPSILON)
    return (slope * _per_row(g),)


def sample_mape(rng: np.random.Generator, shape=(4, 5), signed=False, integer=False, clipped=None):
    """``y_true`` in [0.5, 3] (integers 1..5 with ``integer``; of either sign with ``signed``)
    and ``y_pred = y_true + d`` with |d| in [0.1, 2], off the kink at ``y_pred = y_true``.

    ``clipped`` puts every ``y_true`` under Keras's clip: ``"zero"`` (all 0) or ``"tiny"``
    (|y| < 0.9e-7, either sign). Every element then costs about 1e9, so the whole draw is
    clipped: a draw mixing 1e9 with O(1) elements cannot be checked by central differences
    in float64 (the rounding of the large sum, 1e-7, over the step 1e-6, swamps the small
    elements' gradients)."""
    shape = tuple(shape)
    y = rng.integers(1, 6, size=shape).astype(np.float64) if integer else rng.uniform(0.5, 3.0, size=shape)
    if clipped == "zero":
        y = np.zeros(shape)
    elif clipped == "tiny":
        y = rng.uniform(0.0, 0.9e-7, size=shape)
    if signed:
        y = y * _signs(rng, shape)
    y_pred = y + rng.uniform(0.1, 2.0, size=shape) * _signs(rng, shape)
    return (y.astype(np.int64) if integer else y), y_pred


_KERAS_REDUCTIONS = (
    Difference("keras", "keras.losses.Loss(reduction=...)",
               "Keras's regression losses average over the last axis before the Loss object reduces, so "
               "Keras's reduction='sum' sums row means (torch's sum over the C columns divided by C) and its "
               "'sum_over_batch_size' averages them (torch's mean); lossparity's reductions act on the row "
               "values, as Keras's do",
               "keras.losses.<Class>(reduction='sum')(y, x) == <loss>(y, x, reduction='sum'); "
               "keras.losses.<Class>(reduction='sum_over_batch_size')(y, x) == <loss>(y, x, reduction='mean')"),
)

_KERAS_RANK = Difference(
    "keras", "keras.src.losses.loss.squeeze_or_expand_to_same_rank",
    "Keras pairs y_true and y_pred whose ranks differ by one when the longer ends in an axis of 1: a 1-d "
    "partner is expanded, otherwise the longer is squeezed; lossparity requires one shape (ValueError)",
    "for y of shape (N,) and x of shape (N, 1): keras_loss(y, x) == loss(y[:, None], x); for y of shape "
    "(N, M) and x of shape (N, M, 1): keras_loss(y, x) == loss(y, x[..., 0])")

register(LossSpec(
    name="mean_absolute_percentage_error", family="regression", forward=mean_absolute_percentage_error,
    vjp_fn=mean_absolute_percentage_error_vjp, inputs=("y_true", "y_pred"), differentiable=("y_pred",),
    sampler=sample_mape, check=check_keras_regression,
    cases=(Case("default"),
           Case("signed y_true", sample={"signed": True}),
           Case("y_true all 0 (clipped at epsilon)", sample={"clipped": "zero"}),
           Case("|y_true| < epsilon (clipped)", sample={"clipped": "tiny", "signed": True}),
           Case("integer y_true", sample={"integer": True, "signed": True}),
           Case("integer y_true all 0", sample={"integer": True, "clipped": "zero"})) +
    _KERAS_SHAPE_CASES,
    bad_inputs=_KERAS_SHAPE_BAD_INPUTS,
    builtins={"keras": "keras.losses.mean_absolute_percentage_error", "torch": "torch.nn.functional.l1_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.l1_loss",
                   "torch has no percentage error; it is torch's element-weighted L1 (torch >= 2.11) with "
                   "weight 1 / max(|y|, 1e-7), times 100, averaged over the last axis; go through "
                   "reduction='none', since torch's weighted 'mean' divides by the sum of the weights",
                   "mean_absolute_percentage_error(y, x) == 100 * F.l1_loss(x, y, reduction='none', "
                   "weight=1 / clamp(abs(y), min=1e-7)).mean(-1)"),
        Difference("keras", "keras.config.epsilon()",
                   "Keras reads its clip from the global keras.config.epsilon() (default 1e-7); lossparity "
                   "fixes 1e-7",
                   "equal while keras.config.epsilon() == 1e-7"),
        _KERAS_RANK,
    ) + _KERAS_REDUCTIONS,
))


# -- mean_squared_logarithmic_error (Keras) ----------------------------------------

def mean_squared_logarithmic_error(y_true, y_pred, reduction="none"):
    r"""Mean squared logarithmic error, as ``keras.losses.mean_squared_logarithmic_error``
    (argument order ``(y_true, y_pred)``).

    .. math:: \ell_n = \frac1C \sum_c \Bigl(\log\bigl(1 + \max(x_{n,c}, \epsilon)\bigr)
              - \log\bigl(1 + \max(y_{n,c}, \epsilon)\bigr)\Bigr)^2, \qquad \epsilon = 10^{-7}

    the mean over the last axis, with Keras's clipping: values below Keras's ``epsilon()``
    (``1e-7``, its default), zeros and negatives included, count as ``1e-7``. Keras computes
    ``log(max(x, eps) + 1)``; lossparity computes ``log1p(max(x, eps))``, the same function
    without the rounding of ``1 + x`` (the two agree to float64 rounding; in float32 Keras's form
    loses digits for small x). An integer ``y_true`` is cast to ``y_pred``'s dtype.
    """
    y = y_true.astype(y_pred.dtype)
    diff = np.log1p(np.maximum(y_pred, KERAS_EPSILON)) - np.log1p(np.maximum(y, KERAS_EPSILON))
    return reduce(mean_over(diff * diff), reduction)


def mean_squared_logarithmic_error_vjp(cotangent, y_true, y_pred, reduction="none"):
    r"""With :math:`\delta_{n,c}` the difference of logs above,

    .. math:: \frac{\partial \ell_n}{\partial x_{n,c}} = \frac{2}{C}\,
              \frac{\delta_{n,c}}{1 + x_{n,c}}\,[\,x_{n,c} > \epsilon\,]

    (0 where the clip holds ``y_pred`` at epsilon). ``y_true`` gets no gradient: Keras treats it
    as data, and its clip at epsilon, where zero targets sit, makes the derivative jump.
    """
    y = y_true.astype(y_pred.dtype)
    kept = y_pred > KERAS_EPSILON
    x = np.maximum(y_pred, KERAS_EPSILON)
    diff = np.log1p(x) - np.log1p(np.maximum(y, KERAS_EPSILON))
    g = reduce_vjp(cotangent, reduction, int(np.prod(y_pred.shape[:-1])))
    slope = np.where(kept, 2.0 / max(y_pred.shape[-1], 1) * diff / (1.0 + x), 0.0)
    return (slope * _per_row(g),)


def sample_msle(rng: np.random.Generator, shape=(4, 5), zeros=False, integer=False, clipped=False):
    """``y_true`` in [0, 4] (integers 0..5 with ``integer``; about a third 0 with ``zeros``) and
    ``y_pred`` in [0.05, 4]; with ``clipped`` about a third of ``y_pred`` in [-1, -0.05], held at
    epsilon by the clip. ``y_pred`` stays 0.05 away from the clip's kink at 1e-7."""
    shape = tuple(shape)
    y = rng.integers(0, 6, size=shape).astype(np.float64) if integer else rng.uniform(0.0, 4.0, size=shape)
    if zeros:
        y = np.where(rng.random(shape) < 0.35, 0.0, y)
    y_pred = rng.uniform(0.05, 4.0, size=shape)
    if clipped:
        y_pred = np.where(rng.random(shape) < 0.35, -rng.uniform(0.05, 1.0, size=shape), y_pred)
    return (y.astype(np.int64) if integer else y), y_pred


register(LossSpec(
    name="mean_squared_logarithmic_error", family="regression", forward=mean_squared_logarithmic_error,
    vjp_fn=mean_squared_logarithmic_error_vjp, inputs=("y_true", "y_pred"), differentiable=("y_pred",),
    sampler=sample_msle, check=check_keras_regression,
    cases=(Case("default"),
           Case("y_true with zeros (clipped at epsilon)", sample={"zeros": True}),
           Case("integer y_true", sample={"integer": True}),
           Case("y_pred <= 0 (clipped at epsilon)", sample={"clipped": True})) + _KERAS_SHAPE_CASES,
    bad_inputs=_KERAS_SHAPE_BAD_INPUTS,
    builtins={"keras": "keras.losses.mean_squared_logarithmic_error", "torch": "torch.nn.functional.mse_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.mse_loss",
                   "torch has no logarithmic error; it is torch's squared error between log1p of the clipped "
                   "values, averaged over the last axis",
                   "mean_squared_logarithmic_error(y, x) == F.mse_loss(log1p(clamp(x, min=1e-7)), "
                   "log1p(clamp(y, min=1e-7)), reduction='none').mean(-1)"),
        Difference("keras", "keras.losses.mean_squared_logarithmic_error",
                   "Keras computes log(max(x, eps) + 1): in float32 the sum 1 + x rounds away the low digits "
                   "of a small x, which log1p keeps; the two forms agree to float64 rounding",
                   "log(maximum(x, 1e-7) + 1) == log1p(maximum(x, 1e-7)) in float64; in float32 lossparity's "
                   "value is the closer to the float64 one where y_pred is small"),
        Difference("keras", "keras.config.epsilon()",
                   "Keras reads its clip from the global keras.config.epsilon() (default 1e-7); lossparity "
                   "fixes 1e-7",
                   "equal while keras.config.epsilon() == 1e-7"),
        _KERAS_RANK,
    ) + _KERAS_REDUCTIONS,
))


# -- poisson (Keras) ---------------------------------------------------------------

def poisson(y_true, y_pred, reduction="none"):
    r"""Poisson loss, as ``keras.losses.poisson`` (argument order ``(y_true, y_pred)``).

    .. math:: \ell_n = \frac1C \sum_c \bigl(x_{n,c} - y_{n,c} \log(x_{n,c} + \epsilon)\bigr),
              \qquad \epsilon = 10^{-7}

    the mean over the last axis, with Keras's ``epsilon()`` (``1e-7``, its default) inside the
    log. ``y_pred`` is a rate (not its log) and ``y_true`` a count, both non-negative (Keras does
    not check: a negative rate gives NaN); an integer ``y_true`` is cast to ``y_pred``'s dtype. It
    is torch's ``poisson_nll_loss(y_pred, y_true, log_input=False, full=False, eps=1e-7)``
    averaged over the last axis.
    """
    y = y_true.astype(y_pred.dtype)
    return reduce(mean_over(y_pred - y * np.log(y_pred + KERAS_EPSILON)), reduction)


def poisson_vjp(cotangent, y_true, y_pred, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_n}{\partial x_{n,c}} = \frac1C \Bigl(1 - \frac{y_{n,c}}{x_{n,c} + \epsilon}\Bigr)

    ``y_true`` gets no gradient: Keras treats it as data (counts, often integers).
    """
    y = y_true.astype(y_pred.dtype)
    g = reduce_vjp(cotangent, reduction, int(np.prod(y_pred.shape[:-1])))
    return ((1.0 - y / (y_pred + KERAS_EPSILON)) / y_pred.shape[-1] * _per_row(g),)


def check_keras_poisson(args: dict) -> None:
    check_keras_regression(args)
    checks.nonnegative_array(args["y_pred"])  # a rate
    checks.nonnegative_array(args["y_true"])  # a count


def sample_keras_poisson(rng: np.random.Generator, shape=(4, 5), integer=False, small_rates=False):
    """``y_true``: counts in [0, 4.5] (integers 0..5 with ``integer``); ``y_pred``: rates in
    [0.2, 3], or in [0.08, 0.15] with ``small_rates``, where epsilon moves each term by
    y eps / x ~ 5e-6 (fifty times the float64 tolerance) while the curvature y / x^2 stays
    small enough for jax's check_grads, whose step is 1e-4."""
    shape = tuple(shape)
    y = rng.integers(0, 6, size=shape) if integer else rng.uniform(0.0, 4.5, size=shape)
    y_pred = rng.uniform(0.08, 0.15, size=shape) if small_rates else rng.uniform(0.2, 3.0, size=shape)
    return (y.astype(np.int64) if integer else y), y_pred


register(LossSpec(
    name="poisson", family="regression", forward=poisson, vjp_fn=poisson_vjp,
    inputs=("y_true", "y_pred"), differentiable=("y_pred",),
    sampler=sample_keras_poisson, check=check_keras_poisson,
    cases=(Case("default"),
           Case("integer y_true", sample={"integer": True}),
           Case("small rates (epsilon shows)", sample={"small_rates": True})) + _KERAS_SHAPE_CASES,
    bad_inputs=_KERAS_SHAPE_BAD_INPUTS + (
        BadInput("negative y_pred", replace_input(1, lambda xs: -xs[1]), ValueError, "y_pred"),
        BadInput("negative y_true", replace_input(0, lambda xs: xs[0] - 10.0), ValueError, "y_true"),
    ),
    builtins={"keras": "keras.losses.poisson", "torch": "torch.nn.functional.poisson_nll_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.poisson_nll_loss",
                   "Keras's poisson is torch's rate form with eps 1e-7 and no Stirling term, averaged over the "
                   "last axis, with the arguments swapped",
                   "poisson(y, x) == F.poisson_nll_loss(x, y, log_input=False, full=False, eps=1e-7, "
                   "reduction='none').mean(-1) == poisson_nll_loss(x, y, log_input=False, eps=1e-7, "
                   "reduction='none').mean(-1)"),
        Difference("keras", "keras.losses.poisson",
                   "Keras broadcasts y_true against y_pred (no rank matching, unlike its other regression "
                   "losses) and accepts negative values (a negative rate gives NaN); lossparity requires one "
                   "shape and non-negative values (ValueError)",
                   "keras.losses.poisson(y, x) == poisson(*numpy.broadcast_arrays(y, x)) for non-negative y, x"),
        Difference("keras", "keras.config.epsilon()",
                   "Keras reads its eps from the global keras.config.epsilon() (default 1e-7); lossparity "
                   "fixes 1e-7",
                   "equal while keras.config.epsilon() == 1e-7"),
    ) + _KERAS_REDUCTIONS,
))
