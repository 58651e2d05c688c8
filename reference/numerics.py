"""NumPy's and scipy's log-sum-exps as the reference uses them: NaN in, NaN out, quietly.

``shifted_log_softmax`` is scipy's ``log_softmax`` with torch's and ``jax.nn``'s treatment of a
slice whose largest logit is not finite, and ``masked_logsumexp`` the same over the entries a
mask keeps. NumPy flags ``np.logaddexp`` "invalid" whenever a term
is NaN, and the tests turn the reference's RuntimeWarnings into errors (a warning there is a
loss computing something it should not). A NaN term is data here, not a mistake: the result is
NaN, as in torch and JAX, without the warning. For finite or infinite terms ``logaddexp`` never
makes a NaN, so nothing else is silenced.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import log_softmax


def logaddexp(a, b):
    """``np.logaddexp(a, b)``, without NumPy's warning where a term is NaN (the result is NaN)."""
    with np.errstate(invalid="ignore"):
        return np.logaddexp(a, b)


def nan_propagates(fn):
    """``fn`` (a recursion of ``np.logaddexp`` steps) without NumPy's "invalid value" warning:
    a NaN term gives NaN, NaN in, NaN out."""
    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with np.errstate(invalid="ignore"):
            return fn(*args, **kwargs)
    return quiet


def shifted_log_softmax(x, axis):
    """scipy's ``log_softmax``, NaN over a slice whose largest logit is not finite (a NaN, a +inf,
    or every logit -inf): torch's and ``jax.nn``'s log-softmax subtract that maximum (inf - inf
    is NaN), so the built-ins' loss and gradient are NaN over such a slice, where scipy would
    give -inf at a finite logit beside a +inf (and, not shifting such a slice, overflow its exp:
    silenced, the slice is NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(np.isfinite(np.max(x, axis=axis, keepdims=True)), log_softmax(x, axis=axis), np.nan)


def masked_logsumexp(x, axes, mask=None, keepdims=True):
    r""":math:`\log\sum_{k:\,\text{mask}_k} e^{x_k}` along ``axes``, shifted by the kept
    maximum, and the shift (kept dims; 0 where the mask keeps nothing), for a VJP's softmax
    :math:`e^{x - \text{shift}} / \sum`. :math:`-\infty` where the mask keeps nothing (all is
    kept without one). Where the largest kept value is not finite (NaN, +inf, or every one -inf)
    the shift, and so the value and the softmax, are NaN: the built-ins subtract that maximum
    (inf - inf is NaN), NaN in, NaN out (see ``shifted_log_softmax``)."""
    xm = x if mask is None else np.where(mask, x, -np.inf)
    top = np.max(xm, axis=axes, keepdims=True, initial=-np.inf)
    keeps = True if mask is None else np.broadcast_to(mask, xm.shape).any(axis=axes, keepdims=True)
    shift = np.where(np.isfinite(top), top, np.where(keeps, np.nan, 0.0))
    total = np.exp(xm - shift).sum(axis=axes, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = np.log(total) + shift
    return (lse if keepdims else np.squeeze(lse, axes)), shift
