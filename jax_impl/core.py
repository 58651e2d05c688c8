"""What every JAX family file shares: array descriptions for the shared checks, and the
two wrappers that register a ``jax.numpy`` function (``autodiff``) and a
``jax.custom_vjp`` (``custom_vjp``).

Nothing here touches ``jax_enable_x64``: importing jax_impl leaves JAX's precision as
the user set it. The tests and the report enable float64 for themselves.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import reference
from reference import checks
from reference.variants import Implementations, check_positional_signature, no_gradient_message, undifferentiated

IMPLEMENTATIONS = Implementations("jax", ("autodiff", "custom_vjp"))


def masked_logsumexp(x, axes, mask=None, keepdims=True, empty=-jnp.inf):
    """log sum exp of the entries of ``x`` that ``mask`` keeps along ``axes``, and the mask of
    the slices that keep any (None without ``mask``, which keeps every entry). ``empty`` where a
    slice keeps nothing (-inf, log 0, or 0 for a caller that adds it to something), reached
    without a log(0) or an exp overflow, so autodiff's gradient there is 0, not NaN. NaN, value
    and gradient, where the largest kept entry is not finite: the shift is that maximum, as in
    ``jax.nn.log_softmax`` (NaN in, NaN out), where ``jax.nn.logsumexp`` would give -inf or
    +inf. ``keepdims=False`` where the caller wants the reduced shape: XLA on the CPU took 1.4x
    as long for a logsumexp with ``keepdims=True`` whose axis is then squeezed (6144 x 4)."""
    xm = x if mask is None else jnp.where(mask, x, -jnp.inf)
    m = jax.lax.stop_gradient(jnp.max(xm, axis=axes, keepdims=True, initial=-jnp.inf))  # empty axes: -inf
    kept = None if mask is None else jnp.any(mask, axis=axes, keepdims=True)
    shift = m if mask is None else jnp.where(kept, m, 0.0)
    s = jnp.exp(xm - shift).sum(axes, keepdims=keepdims)
    if not keepdims:
        shift = jnp.squeeze(shift, axes)
        kept = None if mask is None else jnp.squeeze(kept, axes)
    if mask is None:
        return jnp.log(s) + shift, None
    return jnp.where(kept, jnp.log(jnp.where(kept, s, 1.0)) + shift, empty), kept


def _kind(dtype) -> str:
    if jnp.issubdtype(dtype, jnp.floating):
        return "float"
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return "complex"
    if jnp.issubdtype(dtype, jnp.bool_):
        return "bool"
    if jnp.issubdtype(dtype, jnp.integer):
        return "int"
    return "other"


def describe(name: str, x) -> checks.ArrayInfo:
    if not isinstance(x, (jax.Array, np.ndarray)):
        raise TypeError(f"{name} must be a jax.Array; got {type(x).__name__}")

    def bounds(ignore):
        if isinstance(x, jax.core.Tracer):  # under jit/grad/vmap the values are not known
            return None
        v = np.asarray(x)
        if ignore is not None:
            v = v[v != ignore]
        if v.size == 0:
            return None
        return float(v.min()), float(v.max())

    def values():
        return None if isinstance(x, jax.core.Tracer) else np.asarray(x)

    return checks.ArrayInfo(name, tuple(x.shape), _kind(x.dtype), str(np.dtype(x.dtype)), bounds, values)


def validate(name: str, inputs: tuple, kw: dict) -> tuple[tuple, dict]:
    spec = reference.get(name)
    inputs = tuple(jnp.asarray(x) if isinstance(x, np.ndarray) else x for x in inputs)
    kw = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    return inputs, reference.validate(spec, inputs, kw, describe)


def widened(name: str):
    """``inputs -> inputs`` for ``name``: each integer array among the inputs that get no
    gradient (labels, CTC targets and lengths) of a dtype other than JAX's default integer (int64
    with float64 on, else int32) as that default, as ``torch_impl.core.widened`` takes a narrow
    label to int64: under strict dtype promotion JAX refuses to compare an int16 label with an
    int64 class index."""
    positions = undifferentiated(name)[0]

    def widen(inputs: tuple) -> tuple:
        default = jax.dtypes.canonicalize_dtype(jnp.int64)

        def other_integer(i) -> bool:
            x = inputs[i]
            return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.integer) and x.dtype != default

        if not any(other_integer(i) for i in positions):
            return inputs
        return tuple(x.astype(default) if i in positions and other_integer(i) else x for i, x in enumerate(inputs))

    return widen


def autodiff(name: str, fn):
    """The ``autodiff`` variant of ``name``: ``fn`` over jax.numpy, differentiated by JAX."""
    widen = widened(name)

    def call(*inputs, **kw):
        inputs, kw = validate(name, inputs, kw)
        return fn(*widen(inputs), **kw)

    call.__name__, call.__doc__ = name, fn.__doc__
    call.implementation = fn
    IMPLEMENTATIONS.add(name, "autodiff", call, (fn,))
    return fn


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gradient_required(x, message):
    """The identity, put before a ``custom_vjp`` variant's input (or array hyperparameter)
    that its backward may give no gradient (``reference.variants.undifferentiated``): where the
    backward gives none (a symbolic zero) and one is asked for, a NotImplementedError that
    names the input, instead of a silent zero. Where the backward gives one, it passes."""
    return x


def _gradient_required_fwd(x, message):
    return x.value, None


def _gradient_required_bwd(message, _, cotangent):
    if isinstance(cotangent, jax.custom_derivatives.SymbolicZero):
        raise NotImplementedError(message)
    return (cotangent,)


_gradient_required.defvjp(_gradient_required_fwd, _gradient_required_bwd, symbolic_zeros=True)


def gradients_required(name: str):
    """``(inputs, kw) -> (inputs, kw)`` for ``name``'s ``custom_vjp`` variant: each traced
    floating input and array hyperparameter outside its gradient goes through
    ``_gradient_required`` (a concrete array is not being differentiated)."""
    positions, params = undifferentiated(name)
    spec = reference.get(name)

    def traced(x) -> bool:
        return isinstance(x, jax.core.Tracer) and jnp.issubdtype(x.dtype, jnp.floating)

    def guard(x, argument):
        return _gradient_required(x, no_gradient_message(name, "custom_vjp", argument, "autodiff"))

    def required(inputs: tuple, kw: dict) -> tuple[tuple, dict]:
        inputs = tuple(guard(x, spec.inputs[i]) if i in positions and traced(x) else x for i, x in enumerate(inputs))
        kw = {k: guard(v, k) if k in params and traced(v) else v for k, v in kw.items()}
        return inputs, kw

    return required


def custom_vjp(name: str, fn: jax.custom_vjp, fwd, bwd):
    """The ``custom_vjp`` variant of ``name``: ``fn`` takes the inputs and then every
    hyperparameter positionally, in the spec's order; the non-array hyperparameters
    are its ``nondiff_argnums``."""
    check_positional_signature(name, fn.fun, f"the custom_vjp of {name}")
    required = gradients_required(name)
    widen = widened(name)

    def call(*inputs, **kw):
        inputs, kw = required(*validate(name, inputs, kw))
        return fn(*widen(inputs), *kw.values())

    call.__name__, call.__doc__ = name, fn.fun.__doc__
    call.implementation = fn
    IMPLEMENTATIONS.add(name, "custom_vjp", call, (fwd, bwd))
    return fn


def alias(name: str) -> None:
    """Both variants of the alias ``name`` (a spec built by ``reference.spec.alias_spec``):
    validate with the alias's own spec (messages name its arguments), map the arguments with
    ``spec.alias.arguments``, and call the target's jax.numpy function (``autodiff``) or the
    target's ``jax.custom_vjp`` (``custom_vjp``). Register the target first."""
    mapping = reference.get(name).alias
    for variant in IMPLEMENTATIONS.variants:
        target = IMPLEMENTATIONS.get(mapping.target, variant)
        IMPLEMENTATIONS.add(name, variant, _alias_call(name, mapping, target.implementation, variant),
                            target.sources)


def _alias_call(name: str, mapping, fn, variant: str):
    required = gradients_required(name) if variant == "custom_vjp" else None
    widen = widened(name)

    def call(*inputs, **kw):
        inputs, kw = validate(name, inputs, kw)
        if required is not None:
            inputs, kw = required(inputs, kw)
        t_inputs, t_kw = mapping.arguments(widen(inputs), kw)
        if variant == "custom_vjp":  # the custom_vjp takes every hyperparameter positionally
            return fn(*t_inputs, *t_kw.values())
        return fn(*t_inputs, **t_kw)

    call.__name__, call.__doc__ = name, reference.get(name).doc
    call.implementation = fn
    return call


# optax's (or Keras's) losses, called with our signature: the outside oracle of the tests
# and the yardstick of the timings. An adapter imports its library lazily (optax is a
# test dependency only) and raises NotImplementedError for options it lacks.
BUILTINS: dict = {}


def builtin(name: str, fn, reads_values: bool = False) -> None:
    """Register ``fn`` as ``name``'s built-in. ``reads_values``: the adapter refuses what its
    built-in cannot express by reading its arrays' values, which it can only do on concrete
    arrays: under ``jax.jit`` it computes the built-in's number unchecked (fine for a timing),
    so the tests call it eagerly."""
    if name in BUILTINS:
        raise ValueError(f"JAX built-in for {name!r} is registered twice")
    fn.reads_values = reads_values
    BUILTINS[name] = fn


def keras():
    """Keras 3 on the JAX backend, for the adapters of Keras's losses (a test dependency)."""
    import os
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras as keras_module
    if keras_module.backend.backend() != "jax":
        raise NotImplementedError(f"Keras runs on {keras_module.backend.backend()}; the oracle needs KERAS_BACKEND=jax")
    return keras_module
