"""NumPy's log-sum-exp of two terms as the reference uses it: NaN in, NaN out, quietly.

NumPy flags ``np.logaddexp`` "invalid" whenever a term is NaN, and the tests turn the
reference's RuntimeWarnings into errors (a warning there is a loss computing something it
should not). A NaN term is data here, not a mistake: the result is NaN, as in torch and JAX,
without the warning. For finite or infinite terms ``logaddexp`` never makes a NaN, so nothing
else is silenced.
"""

from __future__ import annotations

import functools

import numpy as np


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
