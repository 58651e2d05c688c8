"""The NumPy specification of every loss: forward, analytic VJP, sampler, cases.

Public contract::

    reference.names()                                # every loss, sorted
    reference.get(name) -> LossSpec                  # KeyError listing close names
    reference.loss(name, *inputs, **kw) -> np.ndarray
    reference.vjp(name, *inputs, cotangent, **kw) -> tuple  # one array per differentiable input
"""

from __future__ import annotations

import numpy as np

from . import checks
from .checks import value_checks
from .spec import (BadInput, Case, Difference, LossSpec, PerFramework, Sampled, XFail, get, names, register,
                   replace_input, set_param)
from . import regression, classification, custom, linear, margin, metric, sequence, segmentation  # noqa: F401  (each family registers its losses)

__all__ = ["BadInput", "Case", "Difference", "LossSpec", "PerFramework", "Sampled", "XFail", "get", "names", "register",
           "loss", "vjp", "validate", "checks", "value_checks"]


def validate(spec: LossSpec, inputs: tuple, kw: dict, describe=checks.numpy_info) -> dict:
    """Bind ``kw`` to the spec's defaults and run its shared checks.

    ``describe(name, array) -> ArrayInfo`` adapts one framework's arrays; torch_impl
    and jax_impl pass their own, so all three packages run the very same checks.
    """
    kw = spec.bind(inputs, kw)
    args = {n: describe(n, x) for n, x in zip(spec.inputs, inputs)}
    for k, v in kw.items():
        args[k] = describe(k, v) if k in spec.array_params and v is not None else v
    spec.check(args)
    return kw


def loss(name: str, *inputs, **kw) -> np.ndarray:
    """The loss ``name`` at ``inputs``, as the reference defines it."""
    spec = get(name)
    inputs = tuple(np.asarray(x) for x in inputs)
    kw = validate(spec, inputs, _arrays(spec, kw))
    return np.asarray(spec.forward(*_int64(inputs), **kw))


def vjp(name: str, *inputs_and_cotangent, cotangent=None, **kw) -> tuple:
    """The analytic vector-Jacobian product: one array per differentiable input.

    The cotangent comes after the inputs, positionally or as ``cotangent=``.
    """
    spec = get(name)
    if cotangent is None:
        if len(inputs_and_cotangent) != len(spec.inputs) + 1:
            raise TypeError(f"vjp({name!r}, ...) takes the {len(spec.inputs)} inputs {spec.inputs} "
                            "followed by the cotangent")
        *inputs, cotangent = inputs_and_cotangent
    else:
        inputs = inputs_and_cotangent
    inputs = tuple(np.asarray(x) for x in inputs)
    kw = validate(spec, inputs, _arrays(spec, kw))
    inputs = _int64(inputs)
    cotangent = np.asarray(cotangent, dtype=np.result_type(*[x for x in inputs if x.dtype.kind == "f"]))
    expected = np.shape(spec.forward(*inputs, **kw))
    if cotangent.shape != expected:
        raise ValueError(f"cotangent must have the loss's shape {expected}; got {cotangent.shape}")
    grads = spec.vjp_fn(cotangent, *inputs, **kw)
    return tuple(np.asarray(g) for g in grads)


def _int64(inputs: tuple) -> tuple:
    """The integer inputs (labels, lengths) as int64, once checked: NumPy promotes an unsigned
    integer with a signed one to float64, which cannot index (a uint8 label map's offsets)."""
    return tuple(x.astype(np.int64) if x.dtype.kind in "iu" and x.dtype != np.int64 else x for x in inputs)


def _arrays(spec: LossSpec, kw: dict) -> dict:
    return {k: (np.asarray(v) if k in spec.array_params and v is not None else v) for k, v in kw.items()}
