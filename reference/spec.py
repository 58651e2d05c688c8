"""`LossSpec`, the one declarative entry per loss that drives every test and report row.

A spec holds the NumPy forward and its analytic VJP, the names of the inputs, the
hyperparameters (read from the forward's signature, so they cannot drift from it),
the hyperparameter cases the matrix runs, a sampler that draws valid inputs, and
the validation that all three packages share.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

REDUCTIONS = ("none", "mean", "sum")


class Sampled:
    """An array-valued hyperparameter (``weight``, ``pos_weight``) drawn per cell.

    ``draw(rng, inputs)`` returns a float64 array whose shape fits the drawn inputs;
    ``description`` is what reports and test ids show instead of the numbers.
    """

    def __init__(self, description: str, draw: Callable[[np.random.Generator, tuple], np.ndarray]):
        self.description = description
        self.draw = draw

    def __repr__(self) -> str:
        return f"<{self.description}>"


class PerFramework:
    """A hyperparameter that is code, so each framework needs its own (a
    ``distance_function``). The harness hands the reference ``numpy``, torch_impl
    ``torch`` and jax_impl ``jax``; ``description`` names it in reports."""

    def __init__(self, description: str, numpy: Callable, torch: Callable, jax: Callable):
        self.description = description
        self.numpy, self.torch, self.jax = numpy, torch, jax

    def __repr__(self) -> str:
        return f"<{self.description}>"


class Case(dict):
    """One hyperparameter dict of the matrix, with a name for test ids.

    ``sample`` holds options for the spec's sampler (say, probability targets
    instead of class indices, or extra spatial dimensions), because some cases
    are about the inputs' form rather than a hyperparameter.
    """

    def __init__(self, name: str, params: dict | None = None, sample: dict | None = None,
                 reductions: tuple[str, ...] | None = None):
        super().__init__(params or {})
        self.name = name
        self.sample = dict(sample or {})
        self.reductions = reductions

    def __repr__(self) -> str:
        return f"Case({self.name!r}, {dict(self)!r}, sample={self.sample!r})"


@dataclass(frozen=True)
class Difference:
    """How another library's loss differs from ours, and the mapping that reconciles them."""

    library: str
    builtin: str
    difference: str
    mapping: str


@dataclass(frozen=True)
class BadInput:
    """Input that every package must reject with the same error.

    ``mutate(inputs, kw) -> (inputs, kw)`` edits NumPy inputs drawn from the spec's
    first case (``kw`` holds the full hyperparameters); ``error`` is the exception
    type and ``match`` a regular expression its message must contain (it names the
    offending argument).
    """

    description: str
    mutate: Callable[[tuple, dict], tuple[tuple, dict]]
    error: type
    match: str


def replace_input(position: int, make: Callable[[tuple], np.ndarray]):
    """A ``BadInput`` mutation that replaces input ``position`` with ``make(inputs)``."""
    def mutate(inputs, kw):
        inputs = list(inputs)
        inputs[position] = make(inputs)
        return tuple(inputs), kw
    return mutate


def set_param(key: str, make: Callable[[tuple], object]):
    """A ``BadInput`` mutation that sets hyperparameter ``key`` to ``make(inputs)``."""
    return lambda inputs, kw: (inputs, {**kw, key: make(inputs)})


@dataclass(frozen=True)
class XFail:
    """A matrix cell known to disagree; the matrix marks it ``xfail(strict=True)``.

    Every field left as None matches anything.
    """

    reason: str
    variant: str | None = None
    dtype: str | None = None
    case: str | None = None
    reduction: str | None = None

    def matches(self, variant: str, dtype: str, case: str, reduction: str) -> bool:
        return all(want is None or want == got for want, got in (
            (self.variant, variant), (self.dtype, dtype), (self.case, case), (self.reduction, reduction)))


@dataclass(frozen=True)
class LossSpec:
    name: str
    family: str
    forward: Callable[..., np.ndarray]
    vjp_fn: Callable[..., tuple]
    inputs: tuple[str, ...]
    differentiable: tuple[str, ...]
    sampler: Callable[..., tuple]
    check: Callable[..., None]
    cases: tuple[Case, ...] = (Case("default"),)
    reductions: tuple[str, ...] = REDUCTIONS
    array_params: tuple[str, ...] = ()
    builtins: dict[str, str] = field(default_factory=dict)
    differences: tuple[Difference, ...] = ()
    xfails: tuple[XFail, ...] = ()
    bad_inputs: tuple[BadInput, ...] = ()
    alias_of: str | None = None
    # Array hyperparameters that get a gradient whenever they are given (``linear_bias``, which
    # torch takes as an optional keyword). Their gradients follow the inputs' gradients, in this
    # order, in ``reference.vjp`` and in every matrix cell; None means absent and gets none.
    differentiable_params: tuple[str, ...] = ()
    # Cases whose gradient is, by the loss's definition, not the derivative of its forward (a
    # clamp under ``no_grad`` that the gradient passes straight through). The parity matrix runs
    # them like any case (every implementation against the reference VJP); the checks that
    # iterate ``cases`` with finite differences (reference VJP, gradcheck, check_grads) cannot.
    straight_through_cases: tuple[Case, ...] = ()

    @property
    def defaults(self) -> dict[str, Any]:
        """The hyperparameters and their defaults, in signature order, reduction included."""
        params = inspect.signature(self.forward).parameters
        return {k: p.default for k, p in params.items() if k not in self.inputs}

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.forward) or ""

    def sample(self, rng: np.random.Generator, dtype=np.float64, **sizes) -> tuple:
        """Valid NumPy inputs from the loss's domain; floating inputs get ``dtype``."""
        inputs = self.sampler(rng, **sizes)
        return tuple(_cast_float(x, dtype) for x in inputs)

    def draw(self, rng: np.random.Generator, case: Case | str | None = None, dtype=np.float64,
             **sizes) -> tuple[tuple, dict]:
        """Inputs and the full keyword arguments of one case, array hyperparameters drawn."""
        case = self.case(case)
        inputs = self.sample(rng, dtype, **{**case.sample, **sizes})
        kw = {}
        for key, value in case.items():
            kw[key] = _cast_float(value.draw(rng, inputs), dtype) if isinstance(value, Sampled) else value
        return inputs, kw

    @property
    def matrix_cases(self) -> tuple[Case, ...]:
        """The cases the parity matrix runs: ``cases``, then ``straight_through_cases``."""
        return self.cases + self.straight_through_cases

    def case(self, case: Case | str | None) -> Case:
        if isinstance(case, Case):
            return case
        if case is None:
            return self.cases[0]
        for c in self.matrix_cases:
            if c.name == case:
                return c
        raise KeyError(f"{self.name} has no case {case!r}; its cases are {[c.name for c in self.matrix_cases]}")

    def gradient_names(self, kw: dict) -> tuple[str, ...]:
        """What gets a gradient under ``kw``: the differentiable inputs, then the differentiable
        array hyperparameters that ``kw`` gives (not None)."""
        return self.differentiable + tuple(p for p in self.differentiable_params if kw.get(p) is not None)

    def case_reductions(self, case: Case) -> tuple[str, ...]:
        return case.reductions or self.reductions

    def bind(self, inputs: tuple | None, kw: dict) -> dict:
        """Complete ``kw`` with the defaults; a wrong input count or an unknown keyword is a TypeError."""
        if inputs is not None and len(inputs) != len(self.inputs):
            raise TypeError(f"{self.name}() takes {len(self.inputs)} inputs {self.inputs}, got {len(inputs)}")
        defaults = self.defaults
        unknown = sorted(set(kw) - set(defaults))
        if unknown:
            raise TypeError(f"{self.name}() got unexpected keyword argument(s) {unknown}; "
                            f"its hyperparameters are {list(defaults)}")
        return {**defaults, **kw}

    def xfail_reason(self, variant: str, dtype: str, case: str, reduction: str) -> str | None:
        for x in self.xfails:
            if x.matches(variant, dtype, case, reduction):
                return x.reason
        return None


def _cast_float(x, dtype):
    x = np.asarray(x)
    return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x


_REGISTRY: dict[str, LossSpec] = {}


def register(spec: LossSpec) -> LossSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"loss {spec.name!r} is registered twice")
    missing = set(spec.differentiable) - set(spec.inputs)
    if missing:
        raise ValueError(f"{spec.name}: differentiable inputs {sorted(missing)} are not among its inputs")
    missing = set(spec.differentiable_params) - set(spec.array_params)
    if missing:
        raise ValueError(f"{spec.name}: differentiable_params {sorted(missing)} are not among its array_params")
    names = [c.name for c in spec.matrix_cases]
    if len(names) != len(set(names)):
        raise ValueError(f"{spec.name}: case names must be unique; got {names}")
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    """Every loss in the catalogue, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> LossSpec:
    """The spec of ``name``; an unknown name is a KeyError that lists close names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known losses: {', '.join(names())}"
        raise KeyError(f"unknown loss {name!r}{hint}") from None
