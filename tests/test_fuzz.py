"""Property-based fuzzing of every loss and every implementation with hypothesis.

Generated from the registry; nothing here is written per loss. For one loss, an example is

- a **case** of ``spec.matrix_cases`` (its hyperparameters and its sampler options);
- a **size bucket**: the sampler's size options (``n``, ``num_classes``, ``T``, the dims of
  ``shape``, ...) at the case's own values (bucket 0) or at one of a few fixed alternatives
  drawn once per (loss, case) (see ``size_buckets``);
- a **seed** for the spec's own sampler (``matrix.draw_from``: inputs, ``Sampled``
  hyperparameters, then the cotangent, all from ``np.random.default_rng(seed)``);
- a **scale** applied to every input that gets a gradient: 1 (the sampler's domain as drawn),
  1e-3, 30 or 1e3 (extreme but valid where the spec's checks and the reference accept it:
  saturated sigmoids and softmaxes, overflowing exponentials in naive forms, tiny differences).

and every reduction of the case is checked on it. In float64, within the matrix's tolerances
(``reports.matrix.TOLERANCES``):

- ``reference``: the analytic VJP against a central finite difference along a random
  direction (two forward calls per reduction), at scale 1, outside the straight-through cases
  (there the gradient is by definition not the derivative), where the reference is finite;
- ``module``, ``function`` (torch) and ``autodiff``, ``custom_vjp`` (JAX): the value and every
  gradient (``spec.gradient_names``) against ``reference.loss`` / ``reference.vjp``, and finite
  wherever the reference is. JAX runs under ``jax.jit``: one program per (loss, variant, case)
  computes the value and VJP of every reduction of the case, and ``jax.jit`` compiles it once
  per shape, so the size buckets bound the compilations; programs are kept for the loss's
  examples (a module-level cache) and dropped when the next loss starts.

Where the example is outside the domain (a size bucket the sampler or the checks refuse for
this seed, or a scaled input that the checks refuse or at which the reference itself raises,
say an overflow in the true value) it is rejected, not counted. At scale 1 and the case's own
sizes nothing is rejected: the sampler's own draws must pass.

Profiles (registered in ``tests/conftest.py``) and tests:

- ``test_fuzz`` runs under the default profile ``lossparity`` (``make test``): 50 examples
  per loss, derandomized. Two size buckets per case (the case's own sizes and one moved by
  at most 2 per size); every case for torch and the reference; the JAX variants on the loss's
  first case (``spec.cases[0]``, drawn half the time), since JAX compiles anew per case and
  compilation (0.1 to 1.5 s per program) is what the budget is spent on. It is skipped under
  ``thorough``, which subsumes it.
- ``test_fuzz_thorough`` (marker ``thorough``; ``make test`` deselects it with
  ``-m "not slow and not thorough"``) runs only under the ``thorough`` profile: 10,000 examples
  per loss, eight size buckets per case moved by up to 4 per size, every case for every
  implementation. Run it with::

      .venv/bin/python -m pytest -n 2 -m thorough --hypothesis-profile=thorough
      HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest -n 2 tests/test_fuzz.py -k <loss>

A failure lists the loss, case, sizes, seed and scale, the drawn arrays' dtypes and shapes,
the errors, and the Python that redraws the example and calls the failing implementation;
hypothesis prints its ``@reproduce_failure`` blob beside it (``print_blob``).
"""

from __future__ import annotations

import functools
import inspect
import re
import zlib
from dataclasses import dataclass

import jax
import numpy as np
import pytest
import torch
from hypothesis import event, given, note, reject, settings
from hypothesis import strategies as st

import reference
from reports import matrix

DTYPE = "float64"
RTOL, ATOL = matrix.TOLERANCES[DTYPE]
# The scale of the inputs that get a gradient: 1 first, so hypothesis shrinks toward the
# sampler's own draw.
SCALES = (1.0, 1e-3, 30.0, 1e3)

THOROUGH = settings.get_current_profile_name() == "thorough"


@dataclass(frozen=True)
class Mode:
    buckets: int         # size buckets per case, the case's own sizes first
    spread: int          # how far a bucket may move each size
    jax_every_case: bool  # False: JAX fuzzes the loss's first case only


DEFAULT = Mode(buckets=2, spread=2, jax_every_case=False)
WIDE = Mode(buckets=8, spread=4, jax_every_case=True)


# -- the sampler's size options ------------------------------------------------------

def _forwarded_sampler(fn):
    """The sampler a ``**options`` sampler forwards to: the one function it calls whose first
    parameter is ``rng`` (``lambda rng, **o: sample_x(rng, flag=True, **o)``), or None."""
    try:
        refs = inspect.getclosurevars(fn)
    except (TypeError, ValueError):
        return None
    found = [v for v in {**refs.globals, **refs.nonlocals}.values()
             if inspect.isfunction(v) and v is not fn and list(inspect.signature(v).parameters)[:1] == ["rng"]]
    return found[0] if len(found) == 1 else None


def sampler_options(spec) -> dict:
    """The sampler's keyword options and their defaults (after ``rng``), read through an
    alias's target and through a ``**options`` sampler to the sampler it forwards to."""
    fn = spec.sampler
    for _ in range(8):
        params = list(inspect.signature(fn).parameters.values())[1:]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return {p.name: p.default for p in params if p.default is not p.empty}
        if spec.alias_of and fn is spec.sampler:
            spec = reference.get(spec.alias_of)
            fn = spec.sampler
            continue
        fn = _forwarded_sampler(fn)
        if fn is None:
            break
    return {}


def _is_size(v) -> bool:
    return type(v) is int and v >= 1  # bool is not a size


def _is_shape(v) -> bool:
    return isinstance(v, tuple) and all(type(x) is int and x >= 1 for x in v)


def _hyperparameters(spec) -> set:
    """The loss's hyperparameter names, and an alias's target's (its sampler is the target's)."""
    names = set(spec.defaults)
    return names | _hyperparameters(reference.get(spec.alias_of)) if spec.alias_of else names


def size_options(spec, case) -> dict:
    """The sampler's int size options and int-tuple shape options at their values in ``case``.
    Options that mirror a hyperparameter of the loss (``p``, ``margin``, ``blank``) are not
    sizes; neither are index-valued ones (their defaults are None, -1 or ``()``)."""
    defaults = sampler_options(spec)
    hyper = _hyperparameters(spec)
    out = {}
    for name, default in defaults.items():
        if name in hyper:
            continue
        value = case.sample.get(name, default)
        if (_is_size(default) and _is_size(value)) or (_is_shape(default) and default and _is_shape(value)):
            out[name] = value
        elif default is None and _is_shape(value) and value:  # a shape the case alone gives (var_shape)
            out[name] = value
    return out


def _in_domain(spec, case_name: str, sizes: dict) -> bool:
    """Whether the sampler draws valid inputs at ``sizes`` (three seeds tried)."""
    reduction = spec.case_reductions(spec.case(case_name))[0]
    try:
        for seed in range(3):
            matrix.draw_from(spec, np.random.default_rng(seed), case_name, reduction, DTYPE, **sizes)
    except Exception:  # noqa: BLE001  (the sampler, the checks or the reference refused)
        return False
    return True


@functools.lru_cache(maxsize=None)
def size_buckets(name: str, case_name: str, count: int, spread: int) -> tuple[dict, ...]:
    """Up to ``count`` size options for the case, the first ``{}`` (the case's own sizes). The
    others map every distinct size value above 1 (option values and shape dims alike) to a
    value within ``spread`` of it, at least 1, through one map, so sizes that are equal in the
    case stay equal (an input and its ``var`` keep matching dims) and dims of 1 stay 1 (a
    broadcast or channel axis). The maps come from a generator seeded by loss and case and
    are kept only where the sampler draws valid inputs, so each bucket is one fixed shape set
    and JAX compiles once per bucket."""
    spec = reference.get(name)
    own = size_options(spec, spec.case(case_name))
    values = sorted({v for o in own.values() for v in (o if isinstance(o, tuple) else (o,)) if v > 1})
    buckets, seen = [{}], {repr(own)}
    for attempt in range(40 * count):
        if len(buckets) >= count or not values:
            break
        rng = np.random.default_rng(zlib.crc32(f"{name}/{case_name}/{spread}/{attempt}".encode()))
        moved = {v: int(rng.integers(max(1, v - spread), v + spread + 1)) for v in values}
        sizes = {k: (tuple(moved.get(d, d) for d in o) if isinstance(o, tuple) else moved.get(o, o))
                 for k, o in own.items()}
        if repr(sizes) in seen:
            continue
        seen.add(repr(sizes))
        if _in_domain(spec, case_name, sizes):
            buckets.append(sizes)
    return tuple(buckets)


def fuzz_cases(spec) -> list:
    """The cases with a float64 cell."""
    return [c for c in spec.matrix_cases if c.dtypes is None or DTYPE in c.dtypes]


# -- one example -------------------------------------------------------------------------

def scaled(spec, d: matrix.Drawn, scale: float) -> matrix.Drawn:
    """``d`` with every array that gets a gradient multiplied by ``scale``."""
    if scale == 1.0:
        return d
    names = spec.gradient_names(d.kw)
    inputs = tuple(x * scale if n in names else x for n, x in zip(spec.inputs, d.inputs))
    kw = {k: (v * scale if k in names else v) for k, v in d.kw.items()}
    return matrix.Drawn(inputs, kw, d.cotangent)


@dataclass
class Example:
    name: str
    case: str
    sizes: dict
    seed: int
    scale: float

    def draw(self, reduction: str) -> matrix.Drawn:
        spec = reference.get(self.name)
        d = matrix.draw_from(spec, np.random.default_rng(self.seed), self.case, reduction, DTYPE, **self.sizes)
        return scaled(spec, d, self.scale)

    def describe(self) -> str:
        sizes = self.sizes or "the case's own"
        return (f"{self.name} [{self.case}] sizes={sizes} seed={self.seed} scale={self.scale:g}")

    def reproducer(self, reduction: str, variant: str) -> str:
        spec = reference.get(self.name)
        head = ("import numpy as np\nimport reference, torch_impl, jax_impl\nfrom reports import matrix\n"
                f"spec = reference.get({self.name!r})\n"
                f"d = matrix.draw_from(spec, np.random.default_rng({self.seed}), {self.case!r}, {reduction!r}, "
                f"{DTYPE!r}" + "".join(f", {k}={v!r}" for k, v in self.sizes.items()) + ")\n")
        if self.scale != 1.0:
            head += (f"names = spec.gradient_names(d.kw)  # scale {self.scale:g} on what gets a gradient\n"
                     f"d.inputs = tuple(x * {self.scale!r} if n in names else x for n, x in zip(spec.inputs, d.inputs))\n"
                     f"d.kw = {{k: v * {self.scale!r} if k in names else v for k, v in d.kw.items()}}\n")
        head += "want_value, want_grads = matrix.expected(spec, d)  # the reference\n"
        if variant == "reference":
            return head + ("# its VJP against central differences along a random direction: see "
                           "tests/test_fuzz.py::directional_check")
        if matrix.FRAMEWORK_OF[variant] == "torch":
            return head + (f"value, grads = matrix.run_torch(torch_impl.get({self.name!r}, {variant!r}), spec, d, 'cpu')")
        return head + (f"value, grads = matrix.run_jax(jax_impl.get({self.name!r}, {variant!r}), spec, d, 'cpu')"
                       "  # eager; the test runs it under jax.jit")


def arrays_of(spec, d: matrix.Drawn) -> str:
    parts = [f"{n} {x.dtype} {x.shape}" for n, x in zip(spec.inputs, d.inputs)]
    parts += [f"{k} {v.dtype} {v.shape}" for k, v in d.kw.items() if isinstance(v, np.ndarray)]
    return ", ".join(parts) + f"; cotangent {d.cotangent.shape}"


# -- the implementations ----------------------------------------------------------------

_PROGRAMS: dict = {}  # (loss, variants, case) -> jitted program; one loss at a time


def jax_program(spec, variants: tuple, case_name: str, reductions: tuple, d: matrix.Drawn):
    """``program(inputs, arrays, cotangents) -> [[(value, grads)] per reduction] per variant``:
    the JAX variants' values and VJPs for every reduction of the case, under one ``jax.jit``
    (one compilation per shape for both variants: about a third less than two). The inputs and
    the array hyperparameters are traced; the other hyperparameters are the case's, fixed."""
    if any(key[0] != spec.name for key in _PROGRAMS):
        _PROGRAMS.clear()
    key = (spec.name, variants, case_name)
    if key not in _PROGRAMS:
        fns = [matrix.implementation(v, spec.name) for v in variants]
        fixed = {k: (v.jax if isinstance(v, reference.PerFramework) else v)
                 for k, v in d.kw.items() if not isinstance(v, np.ndarray) and k != "reduction"}

        def program(inputs, arrays, cotangents):
            out = []
            for fn in fns:
                per_reduction = []
                for reduction, cotangent in zip(reductions, cotangents):
                    kw = {**fixed, **arrays, "reduction": reduction}
                    call, primals = matrix.on_differentiable(fn, spec, list(inputs), kw)
                    value, pullback = jax.vjp(call, *primals)
                    per_reduction.append((value, pullback(cotangent)))
                out.append(per_reduction)
            return out

        _PROGRAMS[key] = jax.jit(program)
    return _PROGRAMS[key]


def run_jax_jitted(spec, variants: tuple, case_name: str, draws: dict) -> dict:
    """``{variant: {reduction: (value, grads)}}`` from one jitted program."""
    reductions = tuple(draws)
    first = draws[reductions[0]]
    program = jax_program(spec, variants, case_name, reductions, first)
    inputs, kw = matrix.jax_arrays(first)
    arrays = {k: v for k, v in kw.items() if isinstance(v, jax.Array)}
    cotangents = [jax.numpy.asarray(draws[r].cotangent) for r in reductions]
    out = jax.device_get(program(inputs, arrays, cotangents))
    return {v: {r: (np.asarray(value, dtype=np.float64), tuple(np.asarray(g, dtype=np.float64) for g in grads))
                for r, (value, grads) in zip(reductions, per_reduction)}
            for v, per_reduction in zip(variants, out)}


# Central differences along one direction: the step and tolerances of the matrix's reference
# rows, plus the rounding error of differencing the sum sum(cotangent * loss).
def directional_check(spec, d: matrix.Drawn, want_grads, seed: int) -> str | None:
    """The reference's VJP against central differences of its forward along a random
    direction v: <vjp, v> against d/dt sum(cotangent * loss(x + t v)). Elements whose
    reference gradient is not finite are not moved. Returns the failure or None."""
    inputs, kw = matrix._as64(d.inputs), matrix._as64(d.kw)
    kw = reference.validate(spec, inputs, kw)  # once: the moved inputs may leave the checked domain by
    # 1e-6 at its boundary (a probability of 1 with one class), where the formula is still smooth
    call, primals = matrix.on_differentiable(lambda *a, **k: np.asarray(spec.forward(*a, **k)), spec,
                                             list(inputs), kw)
    rng = np.random.default_rng([seed, 2])
    direction = [np.where(np.isfinite(g), rng.standard_normal(np.shape(p)), 0.0) for p, g in zip(primals, want_grads)]
    cotangent = d.cotangent.astype(np.float64)
    h = matrix.FD_STEP

    def at(t):
        return np.sum(cotangent * call(*[p + t * v for p, v in zip(primals, direction)]))

    numeric = (at(h) - at(-h)) / (2 * h)
    terms = [np.where(v != 0, g * v, 0.0) for g, v in zip(want_grads, direction)]
    analytic = float(sum(np.sum(t) for t in terms))
    magnitude = float(sum(np.sum(np.abs(t)) for t in terms))
    rounding = 8 * np.finfo(np.float64).eps * float(np.sum(np.abs(cotangent * call(*primals)))) / h
    allowed = matrix.FD_ATOL + matrix.FD_RTOL * magnitude + rounding
    if not abs(numeric - analytic) <= allowed:
        return (f"reference VJP along a random direction: analytic {analytic:.12g}, central differences "
                f"{numeric:.12g}, |diff| {abs(numeric - analytic):.3g} > {allowed:.3g}")
    return None


def _problems(names, value, grads, want_value, want_grads) -> list[str]:
    rtol, atol = RTOL, ATOL
    out = []
    if len(grads) != len(want_grads):
        out.append(f"{len(grads)} gradients, the reference has {len(want_grads)}")
    for what, got, want in [("value", value, want_value)] + list(zip((f"grad[{n}]" for n in names), grads, want_grads)):
        if got.shape != want.shape:
            out.append(f"{what}: shape {got.shape}, the reference's {want.shape}")
            continue
        if np.any(np.isfinite(want) & ~np.isfinite(got)):
            out.append(f"{what} is not finite where the reference is")
        if not matrix.close(got, want, rtol, atol):
            a, r = matrix.errors(got, want)
            bad = np.argwhere(~np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True))[:3]
            out.append(f"{what}: abs err {a:.3g}, rel err {r:.3g} (rtol={rtol}, atol={atol}); first at "
                       + ", ".join(f"{tuple(i)}: got {got[tuple(i)]!r}, expected {want[tuple(i)]!r}" for i in bad))
    return out


def check_example(ex: Example, variants) -> list[str]:
    """Every implementation in ``variants`` against the reference on every reduction of the
    example. Raises ``matrix.OutsideDomain`` where the example is outside the domain."""
    spec = reference.get(ex.name)
    case = spec.case(ex.case)
    draws, wants = {}, {}
    for reduction in spec.case_reductions(case):
        d = ex.draw(reduction)  # OutsideDomain passes through
        try:
            wants[reduction] = matrix.expected(spec, d)
        except Exception as e:
            if ex.scale == 1.0:
                raise  # the sampler's own draw: the reference must take it
            raise matrix.OutsideDomain(f"the reference refuses scale {ex.scale:g}: {type(e).__name__}: {e}") from e
        draws[reduction] = d
    names = spec.gradient_names(draws[next(iter(draws))].kw)
    failures = []

    def fail(variant, reduction, lines):
        cell = matrix.Cell(ex.name, ex.case, reduction, variant, DTYPE)
        failures.append("\n".join([f"{cell.id}: {ex.describe()}", f"  arrays: {arrays_of(spec, draws[reduction])}",
                                   *("  " + line for line in lines), "reproduce with:",
                                   ex.reproducer(reduction, variant)]))

    straight_through = case in spec.straight_through_cases
    if "reference" in variants and ex.scale == 1.0 and not straight_through and names:
        for reduction, d in draws.items():
            value, grads = wants[reduction]
            if np.all(np.isfinite(value)):
                problem = directional_check(spec, d, grads, ex.seed)
                if problem:
                    fail("reference", reduction, [problem])
    jax_variants = tuple(v for v in variants if matrix.FRAMEWORK_OF.get(v) == "jax")
    if jax_variants:
        try:
            jax_results = run_jax_jitted(spec, jax_variants, ex.case, draws)
        except Exception:  # noqa: BLE001  (one variant failed: run each alone below to say which)
            jax_results = {}
    for variant in variants:
        if variant == "reference":
            continue
        reductions = [r for r in draws
                      if not matrix.Cell(ex.name, ex.case, r, variant, DTYPE).xfail_reason]  # strict xfails
        if not reductions:
            continue
        try:
            if matrix.FRAMEWORK_OF[variant] == "jax":
                got = jax_results.get(variant) or run_jax_jitted(spec, (variant,), ex.case, draws)[variant]
            else:
                fn = matrix.implementation(variant, ex.name)
                got = {r: matrix.run_torch(fn, spec, draws[r], "cpu") for r in reductions}
        except Exception as e:  # noqa: BLE001  (the reference took the example: an error is a finding)
            fail(variant, reductions[0], [f"raised {type(e).__name__}: {e}"])
            continue
        for reduction in reductions:
            problems = _problems(names, *got[reduction], *wants[reduction])
            if problems:
                fail(variant, reduction, problems)
    return failures


# -- the property ------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def one_torch_thread():
    """torch on one intra-op thread while fuzzing: the tensors are tiny, and on a loaded
    machine two threads made some operations (``log_sigmoid``) take milliseconds where one
    takes microseconds. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fuzz(name: str, data, mode: Mode) -> None:
    spec = reference.get(name)
    cases = fuzz_cases(spec)
    names = [c.name for c in cases]
    if mode.jax_every_case:
        case = data.draw(st.sampled_from(names), label="case")
    else:  # half the examples on the first case, which JAX fuzzes too
        case = data.draw(st.one_of(st.just(names[0]), st.sampled_from(names)), label="case")
    buckets = size_buckets(name, case, mode.buckets, mode.spread)
    bucket = data.draw(st.integers(0, len(buckets) - 1), label="size bucket")
    scale = data.draw(st.sampled_from(SCALES), label="scale")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    ex = Example(name, case, buckets[bucket], seed, scale)
    note(ex.describe())
    with_jax = mode.jax_every_case or case == names[0]
    variants = ("reference",) + tuple(v for v in matrix.VARIANTS if with_jax or matrix.FRAMEWORK_OF[v] != "jax")
    try:
        failures = check_example(ex, variants)
    except matrix.OutsideDomain as e:
        if bucket == 0 and scale == 1.0:
            raise  # the case's own sizes and the sampler's own values must be in the domain
        event(f"rejected: {'sizes' if scale == 1.0 else f'scale {scale:g}'} outside the domain")
        note(str(e))
        reject()
    event(f"case {case}")
    event(f"{'JAX too' if with_jax else 'torch and reference'}; bucket {bucket}; scale {scale:g}")
    assert not failures, f"{len(failures)} disagreement(s):\n\n" + "\n\n".join(failures)


@pytest.mark.skipif(THOROUGH, reason="the thorough profile runs test_fuzz_thorough, which subsumes this")
@pytest.mark.parametrize("name", reference.names())
@given(data=st.data())
def test_fuzz(name, data):
    fuzz(name, data, DEFAULT)


@pytest.mark.thorough
@pytest.mark.skipif(not THOROUGH, reason="opt-in: run with --hypothesis-profile=thorough (or HYPOTHESIS_PROFILE=thorough)")
@pytest.mark.parametrize("name", reference.names())
@given(data=st.data())
def test_fuzz_thorough(name, data):
    fuzz(name, data, WIDE)


# -- an empty batch ------------------------------------------------------------------------

BATCH_OPTIONS = ("n", "N", "batch")  # the samplers' batch sizes; a ``shape``'s first dim is one too


def empty_batch(spec, case) -> dict:
    """The case's sampler options with the batch size at 0 (``{}`` where it has none)."""
    out = {}
    for option, value in size_options(spec, case).items():
        if option == "shape" or option in BATCH_OPTIONS:
            out[option] = (0,) + tuple(value[1:]) if isinstance(value, tuple) else 0
    return out


def agreement_or_the_same_refusal(spec, case, sizes: dict, variants) -> list[str]:
    """``check_example`` on the sampler's draw at ``sizes``; where the checks refuse it, each of
    ``variants`` must raise the reference's error (its type, and its message up to a ';').
    Where the sampler itself cannot draw ``sizes``, what it raised, as ``matrix.OutsideDomain``."""
    try:
        inputs, kw = spec.draw(np.random.default_rng(0), case.name, np.float64, **sizes)
    except Exception as e:  # noqa: BLE001  (the sampler's own limit, not the loss's)
        raise matrix.OutsideDomain(f"{spec.name} [{case.name}]: the sampler cannot draw {sizes}: "
                                   f"{type(e).__name__}: {e}") from e
    try:
        return check_example(Example(spec.name, case.name, sizes, 0, 1.0), variants)
    except matrix.OutsideDomain as e:
        refused = e.__cause__
        assert isinstance(refused, (ValueError, TypeError, IndexError)), f"{spec.name} {sizes}: {e}"
    d = matrix.Drawn(inputs, {**kw, "reduction": spec.case_reductions(case)[0]}, np.zeros(()))
    failures = []
    for variant in (v for v in variants if v != "reference"):
        torch_side = matrix.FRAMEWORK_OF[variant] == "torch"
        arrays, kw = matrix.torch_arrays(d) if torch_side else matrix.jax_arrays(d)
        try:
            matrix.implementation(variant, spec.name)(*arrays, **kw)
            failures.append(f"{spec.name} {variant} {sizes}: took what the reference refuses ({refused!r})")
        except Exception as raised:  # noqa: BLE001  (compared with the reference's below)
            if type(raised) is not type(refused) or str(raised).split(";")[0] != str(refused).split(";")[0]:
                failures.append(f"{spec.name} {variant} {sizes}: raised {raised!r}, the reference {refused!r}")
    return failures


@pytest.mark.parametrize("name", reference.names())
def test_an_empty_batch(name):
    """Each loss's first case with a batch of 0, every reduction: every implementation agrees
    with the reference (no value for ``none``, 0 for ``sum``, NaN for ``mean``, as torch's
    built-ins, and empty gradients), or, where the checks refuse an empty batch, raises the same
    error as the reference."""
    spec = reference.get(name)
    case = spec.cases[0]
    sizes = empty_batch(spec, case)
    assert sizes, f"{name}: no batch size among its sampler's options {size_options(spec, case)}"
    failures = agreement_or_the_same_refusal(spec, case, sizes, ("reference",) + matrix.VARIANTS)
    assert not failures, f"{len(failures)} disagreement(s) on an empty batch:\n\n" + "\n\n".join(failures)


def zero_size_dims(spec, case) -> list[tuple[str, dict]]:
    """The case's sampler options with one dim other than the batch at 0 each: a class count, a
    feature count, a later dim of a ``shape``."""
    out = []
    for option, value in size_options(spec, case).items():
        if isinstance(value, tuple):
            out += [(f"{option}[{k}]=0", {option: value[:k] + (0,) + value[k + 1:]}) for k in range(1, len(value))]
        elif option not in BATCH_OPTIONS:
            out.append((f"{option}=0", {option: 0}))
    return out


def _zero_size_params():
    for name in reference.names():
        spec = reference.get(name)
        for label, sizes in zero_size_dims(spec, spec.cases[0]):
            for framework in ("torch", "jax"):
                marks = [pytest.mark.slow] if framework == "jax" else []  # a JAX compile per shape
                yield pytest.param(name, sizes, framework, id=f"{name}-{label}-{framework}", marks=marks)


@pytest.mark.parametrize("name, sizes, framework", list(_zero_size_params()))
def test_a_zero_size_class_or_feature_dim(name, sizes, framework):
    """Each loss's first case with a class, feature or later dim of 0 (where its sampler can
    draw one), every reduction: the framework's implementations agree with the reference (a
    mean over nothing is NaN, as in NumPy and torch's built-ins, and the gradients are empty),
    or, where the checks refuse it (``multilabel_margin_loss``, as torch's), raise its error.
    Found: ``ZeroDivisionError`` in the reference and JAX VJPs of two Keras losses, an
    IndexError in two torch backwards, a reshape error in ``multilabel_margin_loss``'s."""
    spec = reference.get(name)
    variants = ("reference", *matrix.FRAMEWORKS[framework]) if framework == "torch" else matrix.FRAMEWORKS[framework]
    try:
        failures = agreement_or_the_same_refusal(spec, spec.cases[0], sizes, variants)
    except matrix.OutsideDomain as e:
        pytest.skip(str(e))
    assert not failures, f"{len(failures)} disagreement(s) at {sizes}:\n\n" + "\n\n".join(failures)


# -- float32 far out ----------------------------------------------------------------------

FAR_OUT = 1e4  # the quality bar's edge: logits of +-1e4 in float32


def float32_cases():
    """(loss, case) for every case that admits float32; the first of each loss in the quick
    tier, the rest ``slow`` (run by the report)."""
    for name in reference.names():
        spec = reference.get(name)
        admitted = [c for c in spec.matrix_cases if c.dtypes is None or "float32" in c.dtypes]
        for i, case in enumerate(admitted):
            yield pytest.param(name, case.name, marks=[pytest.mark.slow] if i else [],
                               id=f"{name}-{case.name}")


@pytest.mark.parametrize("name, case_name", list(float32_cases()))
def test_float32_far_out(name, case_name):
    """The case in float32 with every input that gets a gradient multiplied by 1e4: wherever the
    reference's value or gradient (float64, from the same float32 inputs) is finite and within
    float32's range, every implementation's is finite. Agreement is not asked: at 1e4 a float32
    input carries an absolute error of 5e-4, which a loss can amplify (a difference of close
    distances); a non-finite number is a failure of the formula, not of the precision."""
    spec = reference.get(name)
    reduction = spec.case_reductions(spec.case(case_name))[0]
    d = scaled(spec, matrix.draw(spec, case_name, reduction, "float32"), FAR_OUT)  # stays float32
    failures = lost_finiteness(spec, case_name, reduction, "float32", d, FAR_OUT)
    assert not failures, f"{name} [{case_name}] {reduction}, float32 at {FAR_OUT:g}:\n" + "\n".join(failures)


def half_cases():
    """(loss, case, dtype) for every case that admits a half dtype (``Case.dtypes``), ``slow``:
    the matrix's quick tier holds each loss's half-precision case to the reference."""
    for name in reference.names():
        for case in reference.get(name).matrix_cases:
            for dtype in matrix.HALF_DTYPES:
                if case.dtypes is None or dtype in case.dtypes:
                    yield pytest.param(name, case.name, dtype, marks=[pytest.mark.slow],
                                       id=f"{name}-{case.name}-{dtype}")


@pytest.mark.parametrize("name, case_name, dtype", list(half_cases()))
def test_half_precision_finite(name, case_name, dtype):
    """Every case in float16 and bfloat16 (the matrix runs one per loss): wherever the reference's
    value or gradient (float64, from the same rounded inputs) is finite and within the dtype's
    range, every implementation's is finite. A case whose formula leaves float16's range (1e-12
    on a squared norm, 1 / 1e-7) says so in its ``dtypes``."""
    spec = reference.get(name)
    reduction = spec.case_reductions(spec.case(case_name))[0]
    failures = lost_finiteness(spec, case_name, reduction, dtype, matrix.draw(spec, case_name, reduction, dtype))
    assert not failures, f"{name} [{case_name}] {reduction}, {dtype}:\n" + "\n".join(failures)


def lost_finiteness(spec, case_name: str, reduction: str, dtype: str, d: matrix.Drawn, scale: float = 1.0) -> list:
    """Each implementation's value and gradients where they are not finite but the reference's are
    (and within ``dtype``'s range), with the call that reproduces it; skips the test where the
    reference refuses the input."""
    names = spec.gradient_names(d.kw)
    limit = float(jax.numpy.finfo(matrix.NP_DTYPES[dtype]).max)
    try:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # exp(1e4): the true value is inf
            want_value, want_grads = matrix.expected(spec, d)
    except (ValueError, TypeError, IndexError, FloatingPointError, OverflowError) as e:
        pytest.skip(f"outside the domain: the reference refuses it ({type(e).__name__}: {e})")
    failures = []
    variants = [v for v in matrix.VARIANTS if not matrix.Cell(spec.name, case_name, reduction, v, dtype).xfail_reason]
    # JAX under jax.jit, as XLA fuses it: both variants in one program (one compile, not two)
    jax_results = matrix.run_jax_calls({v: (matrix.implementation(v, spec.name), spec, d, "cpu")
                                        for v in variants if matrix.FRAMEWORK_OF[v] == "jax"})
    for variant in variants:
        try:
            if matrix.FRAMEWORK_OF[variant] == "torch":
                value, grads = matrix.run_torch(matrix.implementation(variant, spec.name), spec, d, "cpu")
            elif isinstance(jax_results[variant], BaseException):
                raise jax_results[variant]
            else:
                value, grads = jax_results[variant]
        except Exception as e:  # noqa: BLE001  (the reference took the input: an error is a finding)
            failures.append(f"{variant}: raised {type(e).__name__}: {e}")
            continue
        for what, got, want in [("value", value, want_value)] + list(zip((f"grad[{n}]" for n in names), grads,
                                                                          want_grads)):
            lost = (np.abs(want) <= limit) & ~np.isfinite(got)
            if np.any(lost):
                at = tuple(int(i) for i in np.argwhere(lost)[0])
                failures.append(f"{variant}: {what} is {got[at]} at {at} where the reference's is {want[at]:.6g} "
                                f"({int(lost.sum())} of {lost.size} entries); reproduce with:\n"
                                + lost_reproducer(spec.name, case_name, reduction, dtype, variant, scale))
    return failures


def lost_reproducer(name: str, case_name: str, reduction: str, dtype: str, variant: str, scale: float) -> str:
    package = "torch_impl" if matrix.FRAMEWORK_OF[variant] == "torch" else "jax_impl"
    out = (f"import numpy as np\nimport reference, {package}\nfrom reports import matrix\n"
           f"spec = reference.get({name!r})\n"
           f"d = matrix.draw(spec, {case_name!r}, {reduction!r}, {dtype!r})\n")
    if scale != 1.0:
        out += (f"names = spec.gradient_names(d.kw)  # times {scale:g}\n"
                f"d.inputs = tuple(x * {scale!r} if n in names else x for n, x in zip(spec.inputs, d.inputs))\n"
                f"d.kw = {{k: v * {scale!r} if k in names else v for k, v in d.kw.items()}}\n")
    return out + (f"want_value, want_grads = matrix.expected(spec, d)  # the reference\n"
                  f"value, grads = matrix.run_{'torch' if package == 'torch_impl' else 'jax'}"
                  f"({package}.get({name!r}, {variant!r}), spec, d, 'cpu')\n")


# -- the fuzzer itself ---------------------------------------------------------------------

@pytest.mark.parametrize("name", reference.names())
def test_every_loss_gets_a_second_shape(name):
    """The first case of every loss has a size bucket besides its own sizes: its sampler's
    size options are found (read through aliases and ``**options`` forwarding) and some moved
    sizes are in its domain."""
    spec = reference.get(name)
    case = fuzz_cases(spec)[0].name
    buckets = size_buckets(name, case, DEFAULT.buckets, DEFAULT.spread)
    assert len(buckets) == 2, (f"{name} [{case}]: no second size bucket; size options "
                               f"{size_options(spec, spec.case(case))} of the sampler's {sampler_options(spec)}")


@pytest.mark.parametrize("variant", matrix.VARIANTS)
def test_a_wrong_implementation_is_caught(variant, monkeypatch):
    """The property fails, with a reproducer, on an implementation whose value is off by 1e-6
    (its gradient then too, through autodiff or not at all for a custom VJP: the value alone
    suffices)."""
    real = matrix.implementation

    def off(v, loss):
        fn = real(v, loss)
        return (lambda *a, **kw: fn(*a, **kw) * (1 + 1e-6)) if v == variant else fn

    monkeypatch.setattr(matrix, "implementation", off)
    _PROGRAMS.clear()  # the wrong implementation gets programs of its own
    try:
        failures = check_example(Example("mse_loss", "default", {"shape": (2, 5)}, 3, 1.0), matrix.VARIANTS)
    finally:
        _PROGRAMS.clear()
    assert failures and all(f"{matrix.FRAMEWORK_OF[variant]}.{variant}" in f for f in failures)
    assert all("matrix.draw_from" in f and "shape=(2, 5)" in f for f in failures)


def test_a_wrong_reference_vjp_is_caught(monkeypatch):
    """Central differences along a random direction catch a reference VJP off by 1e-4."""
    spec = reference.get("huber_loss")
    ex = Example("huber_loss", "default", {}, 5, 1.0)
    d = ex.draw("sum")
    value, grads = matrix.expected(spec, d)
    assert directional_check(spec, d, grads, ex.seed) is None
    assert directional_check(spec, d, tuple(g * (1 + 1e-4) for g in grads), ex.seed) is not None
