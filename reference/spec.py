"""`LossSpec`, the one declarative entry per loss that drives every test and report row.

A spec holds the NumPy forward and its analytic VJP, the names of the inputs, the
hyperparameters (read from the forward's signature, so they cannot drift from it),
the hyperparameter cases the matrix runs, a sampler that draws valid inputs, and
the validation that all three packages share.
"""

from __future__ import annotations

import difflib
import functools
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

    ``dtypes`` limits the matrix's dtypes for this case (None: every dtype). It is for a
    case whose conditioning no implementation in a narrower dtype can meet at that dtype's
    fixed tolerance (the spec says why); the tolerances themselves never change.
    """

    def __init__(self, name: str, params: dict | None = None, sample: dict | None = None,
                 reductions: tuple[str, ...] | None = None, dtypes: tuple[str, ...] | None = None):
        super().__init__(params or {})
        self.name = name
        self.sample = dict(sample or {})
        self.reductions = reductions
        self.dtypes = dtypes

    def __repr__(self) -> str:
        return f"Case({self.name!r}, {dict(self)!r}, sample={self.sample!r})"


@dataclass(frozen=True)
class Difference:
    """How another library's loss differs from ours, and the mapping that reconciles them."""

    library: str
    builtin: str
    difference: str
    mapping: str


# The verdicts a ``Claim`` can get: the claim is true; it is false; it is true only under a
# condition the article does not state; or the article prints numbers from ``torch.randn``
# without a seed, so they cannot be reproduced and the proof checks the relation it shows instead.
HOLDS = "holds"
REFUTED = "refuted"
CAVEAT = "holds with caveat"
UNSEEDED = "not reproducible: unseeded input"
VERDICTS = (HOLDS, REFUTED, CAVEAT, UNSEEDED)


@dataclass(frozen=True)
class Source:
    """Where a claim comes from: the article's address and title, and how much of it could be
    read (``retrieved``: the whole text, its opening only, or the code it describes)."""

    url: str
    title: str
    retrieved: str


@dataclass(frozen=True)
class Claim:
    """A claim a seed article makes (or a pitfall it states), with the verdict we expect and the
    proof that measures it.

    ``claim`` is the article's statement, paraphrased (a short quote at most). ``proof()`` runs
    the real torch (and NumPy) code the article describes, re-expressed, against lossparity's
    implementations and the built-ins, and returns ``(verdict, evidence)``: the verdict it
    measured (one of ``VERDICTS``) and one or two sentences of numbers that back it. It asserts
    nothing itself, so ``lossparity show`` can print a measured verdict that disagrees with the
    expected one; ``tests/test_claims.py`` fails on any disagreement, and on a claim without a
    proof. ``key`` names the claim in test ids (unique per loss).
    """

    key: str
    source: Source
    claim: str
    verdict: str
    proof: Callable[[], tuple[str, str]] | None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.key!r}: verdict {self.verdict!r} is not one of {VERDICTS}")

    def measure(self) -> tuple[str, str]:
        """``(verdict, evidence)`` measured now; a proof that raises gives the verdict
        ``"error: <exception>"``, and a missing proof ``"no proof"``."""
        if self.proof is None:
            return "no proof", "this claim has no proof function"
        try:
            verdict, evidence = self.proof()
        except Exception as e:  # noqa: BLE001  (reported as the measured verdict)
            return f"error: {type(e).__name__}: {e}", ""
        return verdict, evidence


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


_PLAIN = frozenset({bool, int, float, str, type(None)})


def _number_held(name: str, v):
    """The Python number that ``v``, a NumPy scalar or a 0-d array of any framework, holds;
    ``v`` itself where it holds none, or where it is traced (JAX under jit or grad)."""
    if isinstance(v, np.generic):
        return v.item()
    if type(v) in _PLAIN or getattr(v, "ndim", None) != 0 or not hasattr(v, "item"):
        return v
    if getattr(v, "requires_grad", False):
        raise TypeError(f"{name} must be a number; got a tensor that requires grad, whose gradient would be lost "
                        f"(hyperparameters get none): pass {name}.item() or a detached tensor")
    try:
        return v.item()
    except Exception:  # noqa: BLE001  (a traced value has no number yet: the checks refuse it)
        return v


@dataclass(frozen=True)
class XFail:
    """A matrix cell known to disagree; the matrix marks it ``xfail(strict=True)``.

    Every field left as None matches anything.

    ``check`` names a transform test of ``tests/test_transforms.py`` instead (``gradgradcheck``,
    ``torch.func.grad``, ``torch.func.vmap``, ``jax.jit``, ``jax.grad``, ``jax.vmap``,
    ``jax.hvp``), or the built-in comparison of ``tests/test_builtins.py`` (``torch.builtin``,
    ``jax.builtin``), or a tuple of them: that test is marked ``xfail(strict=True)`` where the
    other fields match, and the parity matrix ignores the entry.
    """

    reason: str
    variant: str | None = None
    dtype: str | None = None
    case: str | None = None
    reduction: str | None = None
    check: str | tuple[str, ...] | None = None

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
    # What the seed articles claim about this loss, each with its proof (``reference.articles``).
    claims: tuple[Claim, ...] = ()
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
    # For an alias (see ``Alias`` and ``alias_spec``): how its arguments become its target's.
    # ``alias_of`` names the target; specs built by ``alias_spec`` set both.
    alias: "Alias | None" = None
    # The factors, besides 1, by which the property-based tests (``tests/test_fuzz.py``) multiply
    # each input that gets a gradient, for extreme values beyond the sampler's draw; a scaled draw
    # that the checks or the reference refuse is outside the domain and skipped. A loss whose
    # domain float64 cannot resolve at the matrix's tolerance under a factor names fewer (say why).
    fuzz_scales: tuple[float, ...] = (1e-3, 30.0, 1e3)

    @property
    def defaults(self) -> dict[str, Any]:
        """The hyperparameters and their defaults, in signature order, reduction included (a
        fresh dict)."""
        return dict(self._signature_defaults)

    @functools.cached_property
    def _signature_defaults(self) -> dict[str, Any]:
        # Read once: ``inspect.signature`` takes ~10 us, and every call of every variant binds
        # its arguments (an alias's twice, for itself and for its target).
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
        return {**defaults, **self.python_scalars(kw)}

    def python_scalars(self, kw: dict) -> dict:
        """``kw`` with each hyperparameter that holds one number (a NumPy scalar such as
        ``np.float32(0.5)``, ``np.int64(1)`` or ``np.bool_``; a 0-d NumPy array, torch tensor or
        concrete JAX array; also inside a tuple) as the Python number it holds, as the torch
        built-ins take them: the checks ask for Python numbers, torch's ops for numbers, and in
        JAX a NumPy scalar is not weakly typed (``np.float64(0.5) * x`` is float64 for a float32
        ``x``). A traced JAX value stays as it is (the checks refuse it: hyperparameters are
        static); a tensor that requires grad is refused here, since its gradient would be lost.
        ``kw`` itself where there is none (the common case: no copy)."""
        out = None
        for k, v in kw.items():
            if type(v) in _PLAIN or k in self.array_params:  # an array hyperparameter has checks of its own
                continue
            if type(v) is tuple:
                held = tuple(_number_held(k, i) for i in v)
                changed = any(h is not i for h, i in zip(held, v))
            else:
                held = _number_held(k, v)
                changed = held is not v
            if changed:
                out = dict(kw) if out is None else out
                out[k] = held
        return kw if out is None else out

    def xfail_reason(self, variant: str, dtype: str, case: str, reduction: str) -> str | None:
        for x in self.xfails:
            if x.check is None and x.matches(variant, dtype, case, reduction):
                return x.reason
        return None

    def check_xfail_reason(self, check: str, variant: str, case: str, reduction: str) -> str | None:
        """The reason a transform test or a built-in comparison (``XFail.check``) is expected to
        fail, or None."""
        for x in self.xfails:
            if x.check is not None and check in ((x.check,) if isinstance(x.check, str) else x.check) \
                    and x.matches(variant, "float64", case, reduction):
                return x.reason
        return None


# -- aliases ---------------------------------------------------------------------

@dataclass(frozen=True)
class Alias:
    """How an alias's arguments become its target's: the same mathematics as the registered
    loss ``target`` under another library's name (optax's ``squared_error`` is ``mse_loss``),
    implemented once, by the target.

    ``inputs`` maps each of the alias's inputs, in the alias's call order, to the target's
    input it becomes (it must cover every input of the target). ``hyperparameters`` are the
    alias's own, with the alias's defaults (a library-named alias defaults to
    ``reduction="none"``); ``rename`` maps those whose name differs in the target; ``fixed``
    holds target hyperparameters that the alias does not expose; every other target
    hyperparameter keeps the target's default.
    """

    target: str
    inputs: dict[str, str]
    hyperparameters: dict[str, Any]
    rename: dict[str, str] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    def target_name(self, name: str) -> str:
        """The target's name of one of the alias's inputs or hyperparameters."""
        return self.inputs.get(name) or self.rename.get(name, name)

    def arguments(self, inputs: tuple, kw: dict) -> tuple[tuple, dict]:
        """The target's inputs, in the target's order, and all its hyperparameters, in its
        signature order, from the alias's ``inputs`` (its order) and ``kw``. The values pass
        through untouched, so this serves NumPy, torch and JAX arrays, and the ``ArrayInfo``
        descriptions the checks receive, alike."""
        target = get(self.target)
        by_name = {self.inputs[a]: x for a, x in zip(self.inputs, inputs)}
        given = {**target.defaults, **{self.target_name(k): v for k, v in kw.items()}, **self.fixed}
        return tuple(by_name[n] for n in target.inputs), {k: given[k] for k in target.defaults}


def alias_spec(name: str, family: str, alias: Alias, doc: str, **fields) -> LossSpec:
    """The ``LossSpec`` of an alias: forward, VJP and checks are the target's, reached through
    ``alias.arguments``, so error messages name the alias's own arguments (the target's checks
    name an array by its ``ArrayInfo.name``). The sampler is the target's, its draws put in the
    alias's input order, unless ``fields`` gives one. ``doc`` is the alias's docstring (formula
    and mapping). ``fields`` are the other ``LossSpec`` fields (cases, bad_inputs, builtins,
    differences, ...). torch_impl's and jax_impl's ``alias`` register the variants."""
    target = get(alias.target)
    if sorted(alias.inputs.values()) != sorted(target.inputs):
        raise ValueError(f"alias {name}: inputs {alias.inputs} must map onto every input of {target.name} "
                         f"{target.inputs} once")
    unknown = [k for k in list(alias.hyperparameters) + list(alias.fixed)
               if alias.target_name(k) not in target.defaults]
    if unknown:
        raise ValueError(f"alias {name}: {unknown} are not hyperparameters of {target.name}")
    from_target = {t: a for a, t in alias.inputs.items()}
    from_target.update({alias.target_name(k): k for k in alias.hyperparameters})
    P = inspect.Parameter
    signature = inspect.Signature([P(a, P.POSITIONAL_OR_KEYWORD) for a in alias.inputs] +
                                  [P(k, P.POSITIONAL_OR_KEYWORD, default=v) for k, v in alias.hyperparameters.items()])

    def forward(*inputs, **kw):
        t_inputs, t_kw = alias.arguments(inputs, kw)
        return target.forward(*t_inputs, **t_kw)

    def vjp_fn(cotangent, *inputs, **kw):
        t_inputs, t_kw = alias.arguments(inputs, kw)
        grads = dict(zip(target.gradient_names(t_kw), target.vjp_fn(cotangent, *t_inputs, **t_kw)))
        return tuple(grads[alias.target_name(n)] for n in spec.gradient_names(kw))

    def check(args: dict) -> None:
        inputs = tuple(args[a] for a in alias.inputs)
        t_inputs, t_kw = alias.arguments(inputs, {k: v for k, v in args.items() if k not in alias.inputs})
        target.check({**dict(zip(target.inputs, t_inputs)), **t_kw})

    def sampler(rng, **options):
        drawn = dict(zip(target.inputs, target.sampler(rng, **options)))
        return tuple(drawn[alias.inputs[a]] for a in alias.inputs)

    forward.__name__ = forward.__qualname__ = name
    forward.__signature__ = signature
    forward.__doc__ = doc
    forward.__wrapped__ = target.forward  # ``lossparity show`` prints the one implementation
    vjp_fn.__name__ = vjp_fn.__qualname__ = f"{name}_vjp"
    vjp_fn.__doc__ = (f"The VJP of ``{target.name}`` (its arguments mapped as in the forward):\n\n"
                      + (inspect.getdoc(target.vjp_fn) or ""))
    vjp_fn.__wrapped__ = target.vjp_fn
    fields.setdefault("sampler", sampler)
    fields.setdefault("fuzz_scales", target.fuzz_scales)  # the same domain, under other names
    fields.setdefault("differentiable", tuple(from_target[t] for t in target.differentiable if t in from_target))
    fields.setdefault("array_params", tuple(from_target[t] for t in target.array_params if t in from_target))
    fields.setdefault("differentiable_params",
                      tuple(from_target[t] for t in target.differentiable_params if t in from_target))
    spec = LossSpec(name=name, family=family, forward=forward, vjp_fn=vjp_fn, inputs=tuple(alias.inputs),
                    check=check, alias_of=target.name, alias=alias, **fields)
    return spec


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
    keys = [c.key for c in spec.claims]
    if len(keys) != len(set(keys)):
        raise ValueError(f"{spec.name}: claim keys must be unique; got {keys}")
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
