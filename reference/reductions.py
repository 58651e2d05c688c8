"""Reductions, written once for NumPy, torch and JAX arrays alike.

They use only what the three array types share (``.sum()``, ``.mean()``, ``.shape``,
arithmetic and broadcasting), so torch_impl and jax_impl import these same two
functions. The semantics are torch's:

* ``none``: the per-element losses;
* ``sum``: their sum;
* ``mean``: the sum divided by ``denominator`` where the loss defines one (the sum
  of the class weights of the targets that count, for weighted ``cross_entropy``
  and ``nll_loss``), otherwise by the number of elements (NaN for none);
* ``batchmean``: the sum divided by the size of the first dimension (``kl_div``).
"""

from __future__ import annotations

import numpy as np


def reduce(elementwise, reduction: str, denominator=None, batch_size: int | None = None):
    if reduction == "none":
        return elementwise
    if reduction == "sum":
        return elementwise.sum()
    if reduction == "mean":
        if denominator is None:
            return elementwise.mean() if _numel(elementwise) else elementwise.sum() * float("nan")
        return _divide(elementwise.sum(), denominator)
    if reduction == "batchmean":
        return _divide(elementwise.sum(), batch_size)
    raise ValueError(f"reduction must be one of 'none', 'mean', 'sum', 'batchmean'; got {reduction!r}")


def reduce_vjp(cotangent, reduction: str, numel: int, denominator=None, batch_size: int | None = None):
    """The cotangent of the per-element losses, broadcastable against them.

    For ``none`` it is the cotangent itself; for the other reductions a scalar
    that the caller multiplies into the per-element derivative.
    """
    if reduction in ("none", "sum"):
        return cotangent
    if reduction == "mean":
        # An empty loss has no element to receive the cotangent, so any finite divisor does.
        return _divide(cotangent, max(numel, 1) if denominator is None else denominator)
    if reduction == "batchmean":
        return _divide(cotangent, batch_size)
    raise ValueError(f"reduction must be one of 'none', 'mean', 'sum', 'batchmean'; got {reduction!r}")


def mean_over(x: np.ndarray, axis=-1):
    """``x.mean(axis)`` (an int, a tuple or None), NaN without NumPy's "Mean of empty slice"
    warning where the axes hold no element (a class or feature dim of 0), as torch's and JAX's
    means give."""
    axes = range(x.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis
    if any(x.shape[a] == 0 for a in axes):
        return _divide(x.sum(axis), 0)
    return x.mean(axis)


def _divide(total, denominator):
    """``total / denominator``; for NumPy without its warning where an empty batch makes it 0 / 0
    (NaN, as torch's built-ins give)."""
    if isinstance(total, (np.ndarray, np.generic)):
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / denominator
    return total / denominator


def _numel(x) -> int:
    n = 1
    for s in x.shape:
        n *= s
    return n
