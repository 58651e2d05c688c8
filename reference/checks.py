"""Input validation, written once and shared by the reference, torch_impl and jax_impl.

Every package describes its arrays as :class:`ArrayInfo` (shape, dtype kind, and a
way to read value bounds when the values are concrete) and calls the spec's
``check``. The error types and messages are therefore the same everywhere:

* ``TypeError``: a wrong dtype kind, a wrong argument count, an unknown keyword;
* ``ValueError``: a shape that does not fit, a value outside the domain, an
  unknown reduction, a hyperparameter out of range;
* ``IndexError``: a class label outside ``[0, C)``.

Under ``jax.jit`` and ``torch.compile`` shapes and dtypes are still checked; value checks are
skipped because the values are not known (``bounds`` returns None). Within
``value_checks(False)`` they are skipped everywhere, the same way.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable

import numpy as np

_VALUE_CHECKS = contextvars.ContextVar("lossparity_value_checks", default=True)


@contextlib.contextmanager
def value_checks(enabled: bool):
    """Within the block, the checks that read an array's values (a class label within
    ``[0, C)``, probabilities within [0, 1], a variance non-negative, a CTC target within its
    length, ...) run (``True``, the default outside any block) or are skipped (``False``), in
    all three packages, as ``jax.jit`` and ``torch.compile`` skip them; the shape, dtype and
    hyperparameter checks always run. On CUDA each value check reads its bounds back to the
    host, a wait for the device on every call: ``value_checks(False)`` is for a training loop
    whose inputs are known good (as
    ``torch.distributions.Distribution.set_default_validate_args(False)``). An input
    outside the domain then gives whatever the operations make of it, as under ``jax.jit``
    (torch's indexing raises for most labels out of range, JAX's fills or clamps)."""
    token = _VALUE_CHECKS.set(bool(enabled))
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


def values_checked() -> bool:
    """Whether the value checks run here (see ``value_checks``): an implementation that relies
    on them (a label known to lie in range) asks this first."""
    return _VALUE_CHECKS.get()


class ArrayInfo:
    """What validation needs to know about one array, in any framework.

    ``bounds(ignore)`` returns ``(min, max)`` over the elements not equal to
    ``ignore`` as Python numbers, or None when the array is empty (after
    ignoring), or when its values are not concrete (a JAX tracer).

    ``values()`` returns the elements as a NumPy array, or None when they are not
    concrete or the package did not say how to read them; it serves the checks that
    need positions, not just bounds (``ctc_loss``'s targets within their lengths).

    All three read nothing and return None within ``value_checks(False)``; a package that
    reads values its own way overrides ``_read_bounds``, ``_read_values`` or
    ``_read_abs_bounds``, and one with more states where values cannot be read (torch.compile,
    torch.func) overrides ``_values_readable``.
    """

    def __init__(self, name: str, shape: tuple[int, ...], kind: str, dtype: str,
                 bounds: Callable[[object], tuple[float, float] | None] | None = None,
                 values: Callable[[], np.ndarray | None] | None = None):
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.kind = kind
        self.dtype = dtype
        self._bounds = bounds
        self._values = values

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def bounds(self, ignore=None):
        return self._read_bounds(ignore) if self._values_readable() else None

    def values(self):
        return self._read_values() if self._values_readable() else None

    def abs_bounds(self):
        """``(min |x|, max |x|)``, or None as ``bounds``. ``signs`` reads it first, for a check
        on every call of a loss with labels."""
        return self._read_abs_bounds() if self._values_readable() else None

    def _values_readable(self) -> bool:
        return values_checked()

    def _read_bounds(self, ignore):
        return None if self._bounds is None else self._bounds(ignore)

    def _read_values(self):
        return None if self._values is None else self._values()

    def _read_abs_bounds(self):
        v = self._read_values()
        if v is None or np.size(v) == 0 or np.asarray(v).dtype == np.bool_:
            return None
        magnitudes = np.abs(v)
        return float(magnitudes.min()), float(magnitudes.max())

    def __repr__(self) -> str:
        return f"ArrayInfo({self.name}, shape={self.shape}, dtype={self.dtype})"


def dtype_kind(np_kind: str) -> str:
    """Map a NumPy dtype ``kind`` letter to the words used in messages."""
    return {"f": "float", "i": "int", "u": "int", "b": "bool", "c": "complex"}.get(np_kind, "other")


def numpy_info(name: str, x) -> ArrayInfo:
    x = np.asarray(x)

    def bounds(ignore):
        v = x if ignore is None else x[x != ignore]
        if v.size == 0:
            return None
        return float(v.min()), float(v.max())

    return ArrayInfo(name, x.shape, dtype_kind(x.dtype.kind), str(x.dtype), bounds, lambda: x)


# -- the shared checks ----------------------------------------------------------

def reduction(value, allowed=("none", "mean", "sum")) -> None:
    if value not in allowed:
        raise ValueError(f"reduction must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")


def floating(a: ArrayInfo) -> None:
    if a.kind != "float":
        raise TypeError(f"{a.name} must be a floating-point array; got dtype {a.dtype}")


def integer(a: ArrayInfo, what: str = "class indices") -> None:
    if a.kind != "int":
        raise TypeError(f"{a.name} must hold {what} as an integer array; got dtype {a.dtype}")


def same_dtype(a: ArrayInfo, b: ArrayInfo) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{b.name} must have the dtype of {a.name} ({a.dtype}); got {b.dtype}")


def same_shape(a: ArrayInfo, b: ArrayInfo) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{b.name} must have the shape of {a.name} {a.shape}; got {b.shape} "
                         "(lossparity never broadcasts silently)")


def shape_is(a: ArrayInfo, expected: tuple[int, ...], what: str) -> None:
    if a.shape != tuple(expected):
        raise ValueError(f"{a.name} must have shape {tuple(expected)} ({what}); got {a.shape}")


def broadcastable_to(a: ArrayInfo, shape: tuple[int, ...], what: str) -> None:
    # (== rather than ``in``: under torch.compile a dim may be symbolic, and dynamo in torch 2.13
    # answers ``4 in (1, s)`` False for a symbolic s of 4; pytorch/pytorch#153366)
    ok = a.ndim <= len(shape) and all(s == 1 or s == t for s, t in zip(reversed(a.shape), reversed(shape)))
    if not ok:
        raise ValueError(f"{a.name} must broadcast to {tuple(shape)} ({what}); got {a.shape}")


def ndim_in(a: ArrayInfo, allowed: tuple[int, ...] | range, what: str) -> None:
    if a.ndim not in allowed:
        raise ValueError(f"{a.name} must be {what}; got {a.ndim} dimensions, shape {a.shape}")


def within(a: ArrayInfo, low: float, high: float, what: str) -> None:
    """Values in the closed interval [low, high] (NaN counts as outside)."""
    b = a.bounds()
    if b is not None and not (low <= b[0] and b[1] <= high):
        raise ValueError(f"{a.name} must hold {what} in [{low}, {high}]; got values in [{b[0]}, {b[1]}]")


def nonnegative_array(a: ArrayInfo) -> None:
    b = a.bounds()
    if b is not None and not b[0] >= 0:
        raise ValueError(f"{a.name} must be non-negative; got a minimum of {b[0]}")


def class_labels(target: ArrayInfo, num_classes: int, ignore_index: int | None = None) -> None:
    b = target.bounds(ignore_index)
    if b is not None and not (0 <= b[0] and b[1] < num_classes):
        bad = b[0] if b[0] < 0 else b[1]
        note = "" if ignore_index is None else f" (ignore_index={ignore_index} is exempt)"
        raise IndexError(f"{target.name} holds class index {int(bad)}, outside [0, {num_classes}){note}")


def is_nan(value) -> bool:
    """``math.isnan`` by a comparison, which ``torch.compile`` can trace for a float argument it
    has made symbolic (dynamo in torch 2.13 cannot put ``math.isnan`` of one in a graph)."""
    return value != value


def is_finite(value) -> bool:
    """``math.isfinite`` by comparisons (see ``is_nan``); False for NaN."""
    return -math.inf < value < math.inf


def nonnegative(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or is_nan(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number; got {value!r}")


def finite_nonnegative(name: str, value) -> None:
    """A non-negative number that is not inf: a smoothing term, a weight or a margin that an
    infinity would turn into inf - inf or inf / inf, NaN, in every implementation."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite non-negative number; got {value!r}")


def in_interval(name: str, value, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}]; got {value!r}")


def boolean(name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {value!r}")


def integer_value(name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got {value!r}")


# -- added for the custom family (values in a small set, positive arrays) --

def positive_array(a: ArrayInfo, what: str = "positive values") -> None:
    """Every element > 0 (NaN counts as outside)."""
    b = a.bounds()
    if b is not None and not b[0] > 0:
        raise ValueError(f"{a.name} must hold {what} (> 0); got a minimum of {b[0]}")


def values_in(a: ArrayInfo, allowed: tuple[float, ...], what: str) -> None:
    """Every element is one of ``allowed`` (at most three values; NaN counts as outside).

    Only ``bounds(ignore)`` is used, and that suffices for up to three values
    ``v1 < v2 < v3``: all elements lie in ``[v1, v3]``; those other than ``v1`` are
    ``>= v2``; those other than ``v3`` are ``<= v2``. An element strictly between two
    allowed values breaks one of the last two.
    """
    values = sorted(float(v) for v in allowed)
    if not 1 <= len(values) <= 3:
        raise NotImplementedError("values_in decides membership of at most three values")
    lo, hi = values[0], values[-1]
    second_lo, second_hi = values[min(1, len(values) - 1)], values[max(len(values) - 2, 0)]
    b = a.bounds()
    ok = b is None or (lo <= b[0] and b[1] <= hi)
    if ok and len(values) > 1:
        above = a.bounds(lo)
        below = a.bounds(hi)
        ok = (above is None or above[0] >= second_lo) and (below is None or below[1] <= second_hi)
    if not ok:
        shown = ", ".join(f"{v:g}" for v in values)
        raise ValueError(f"{a.name} must hold {what}, each one of {{{shown}}}; got values in "
                         f"[{b[0]}, {b[1]}] that are not all in that set")


def signs(a: ArrayInfo) -> None:
    """Labels in {-1, 1} (the targets of torch's ranking and binary margin losses).

    ``bounds`` only gives a minimum and a maximum, so the elements other than 1 are
    read: they must all be -1 (NaN and 0 are caught this way too).
    """
    if a.abs_bounds() == (1.0, 1.0):  # every magnitude is 1: each element is -1 or 1
        return
    b = a.bounds(1)
    if b is not None and not (b[0] == -1 and b[1] == -1):
        bad = b[1] if b[0] == -1 else b[0]
        raise ValueError(f"{a.name} must hold labels in {{-1, 1}}; got {bad}")


def finite_number(name: str, value) -> None:
    """A real, finite scalar hyperparameter (a margin of either sign)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    if not is_finite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")


# -- added for the margin family, part 2 (optax's and Keras's hinge-type losses) --

def kind_in(a: ArrayInfo, kinds: tuple[str, ...], what: str) -> None:
    """The array's dtype kind is one of ``kinds`` ("float", "int", "bool")."""
    if a.kind not in kinds:
        raise TypeError(f"{a.name} must hold {what} as a {' or '.join(kinds)} array; got dtype {a.dtype}")


def signs_or_binary(a: ArrayInfo) -> None:
    """Keras's hinge labels: every element in {-1, 1}, or every element in {0, 1} (which
    Keras converts to {-1, 1}). A mix of -1, 0 and 1 is neither; NaN is caught too."""
    if a.abs_bounds() == (1.0, 1.0):  # all in {-1, 1}
        return
    b = a.bounds()
    if b is None:
        return
    if b[0] >= 0:
        ok = b[1] <= 1 and (a.bounds(0) is None or a.bounds(0)[0] >= 1)
    else:
        rest = a.bounds(1)
        ok = rest is None or (rest[0] == -1 and rest[1] == -1)
    if not ok:
        raise ValueError(f"{a.name} must hold labels all in {{-1, 1}} or all in {{0, 1}}; "
                         f"got values in [{b[0]}, {b[1]}] that are neither")


# -- added for the segmentation family (axes to sum over, a named choice) --

def one_of(name: str, value, allowed: tuple) -> None:
    """A hyperparameter that takes one of a few values (optax's ``reduction`` across classes)."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")


def axes(name: str, value, ndim: int, exclude: int | None = None, what: str = "") -> None:
    """``None``, an int or a tuple of distinct ints in ``[-ndim, ndim)`` (NumPy's ``axis``).

    A list is a TypeError (JAX's ``nondiff_argnums`` need a hashable value); ``exclude`` is an
    axis (non-negative) that may not be among them, ``what`` says why.
    """
    if value is None:
        return
    items = (value,) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if not isinstance(items, tuple) or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                                               for a in items):
        raise TypeError(f"{name} must be None, an int or a tuple of ints; got {value!r}")
    if not all(-ndim <= a < ndim for a in items):
        raise ValueError(f"{name} must hold axes in [-{ndim}, {ndim}) for {ndim}-dimensional inputs; got {value!r}")
    normalized = [int(a) % ndim for a in items]
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{name} must not repeat an axis; got {value!r}")
    if exclude is not None and exclude in normalized:
        raise ValueError(f"{name} must not include axis {exclude - ndim} ({exclude}): {what}; got {value!r}")
