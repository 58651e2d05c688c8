"""NumPy's and scipy's log-sum-exps as the reference uses them: NaN in, NaN out, quietly.

``shifted_log_softmax`` is scipy's ``log_softmax`` with torch's and ``jax.nn``'s treatment of a
slice whose largest logit is not finite. NumPy flags ``np.logaddexp`` "invalid" whenever a term
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
