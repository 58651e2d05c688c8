"""Regression losses: l1_loss, mse_loss, huber_loss, smooth_l1_loss.

Each loss is a pointwise function of the difference ``d = input - target``,
optionally scaled by an element ``weight`` of the input's shape (torch >= 2.11).
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
