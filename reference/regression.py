"""Regression losses: l1_loss, mse_loss, huber_loss, smooth_l1_loss, poisson_nll_loss,
gaussian_nll_loss.

The first four are pointwise functions of the difference ``d = input - target``,
optionally scaled by an element ``weight`` of the input's shape (torch >= 2.11); the
likelihoods follow them.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .reductions import reduce, reduce_vjp
from .spec import BadInput, Case, Difference, LossSpec, Sampled, register, replace_input, set_param


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
    cases=(Case("default"), Case("weighted", {"weight": element_weight})),
    array_params=("weight",), bad_inputs=POINTWISE_BAD_INPUTS + WEIGHT_BAD_INPUTS,
    builtins={"torch": "torch.nn.functional.l1_loss"},
))

register(LossSpec(
    name="mse_loss", forward=mse_loss, vjp_fn=mse_loss_vjp, check=check_pointwise, **_POINTWISE,
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
                   "reduction='none').mean(-1) (Keras is not installed here, so no test proves it)"),
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
