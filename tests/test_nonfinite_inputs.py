"""NaN in, NaN out, and infinities likewise: a NaN, +inf or -inf in any differentiable
floating input of any loss.

The value of each implementation is NaN, +inf, -inf or finite exactly where the reference's
value is: a loss that turns a NaN input into a finite value is a silent wrong answer (JAX's
triplet losses once gave the margin, their distance read a NaN sum as 0), one that raises
where the reference gives a value is a crash (torch's sparsemax once indexed out of range), and
a NaN where the limit is +inf is a wrong answer too (torch's binary_cross_entropy_with_logits
once computed x - t x, inf - inf, at x = +inf, where torch's own gives +inf). Where the
reference refuses the input (a domain check: probabilities, variances, ...), torch's
implementations refuse it with the same exception type; JAX's value checks run eagerly only
(jit cannot read values), and ``tests/test_errors.py`` holds them to the spec's bad inputs.
Gradients there are each framework's own (torch's ``sign`` of NaN is 0, JAX's ``abs`` has
slope 1 there) and are not compared; rows whose softmax normaliser is not finite are a matrix
case of their own ("non-finite logits"). A known disagreement is an ``XFail`` on the spec with
``check="<framework>.infinite input"`` or ``"<framework>.NaN input"``. ``make test`` runs the NaN
in every case for torch and in the default case for JAX, and the infinities in the default
case; the rest is ``slow``.
"""

import contextlib
import dataclasses

import numpy as np
import pytest

import jax_impl
import reference
import torch_impl
from reports.matrix import draw, expected, run_jax, run_torch

IMPLEMENTATIONS = (("torch", torch_impl, ("module", "function")), ("jax", jax_impl, ("autodiff", "custom_vjp")))
VALUES = {"NaN": np.nan, "+inf": np.inf, "-inf": -np.inf}


def _quick(spec, case, value: str, framework: str) -> bool:
    if case is spec.cases[0]:
        return True
    return value == "NaN" and framework == "torch"


def _params():
    for name in reference.names():
        spec = reference.get(name)
        for case in spec.cases:
            for position, input_name in enumerate(spec.inputs):
                if input_name not in spec.differentiable:
                    continue
                for value in VALUES:
                    for framework, _, _ in IMPLEMENTATIONS:
                        marks = [] if _quick(spec, case, value, framework) else [pytest.mark.slow]
                        check = f"{framework}.{'NaN' if value == 'NaN' else 'infinite'} input"
                        reason = spec.check_xfail_reason(check, None, case.name, None)
                        if reason:
                            marks.append(pytest.mark.xfail(strict=True, reason=reason))
                        yield pytest.param(name, case.name, position, value, framework,
                                           id=f"{name}-{case.name}-{input_name}-{value}-{framework}", marks=marks)


def _kind(values) -> np.ndarray:
    """Each entry as one of NaN, +inf, -inf and finite (0, 1, 2, 3)."""
    v = np.asarray(values)
    return np.select([np.isnan(v), np.isposinf(v), np.isneginf(v)], [0, 1, 2], 3)


def _with_value(spec, case: str, position: int, value: float):
    """The case's draw (per-element values where the case has ``none``) with the input at
    ``position`` set to ``value`` at its first element; None where that input is not floating
    or is empty."""
    reductions = spec.case_reductions(spec.case(case))
    d = draw(spec, case, "none" if "none" in reductions else reductions[0], "float64")
    x = np.array(d.inputs[position])
    if x.dtype.kind != "f" or x.size == 0:
        return None
    x.reshape(-1)[0] = value
    return dataclasses.replace(d, inputs=d.inputs[:position] + (x,) + d.inputs[position + 1:])


@pytest.mark.parametrize("name, case, position, value, framework", list(_params()))
def test_a_non_finite_input_gives_what_the_reference_gives(name, case, position, value, framework):
    spec = reference.get(name)
    d = _with_value(spec, case, position, VALUES[value])
    if d is None:
        pytest.skip(f"{spec.inputs[position]} is not a floating array here")
    _, pkg, variants = next(f for f in IMPLEMENTATIONS if f[0] == framework)
    # An infinite input makes NumPy compute inf - inf or 0 * inf on the way, an "invalid value"
    # it warns of (the tests turn the reference's warnings into errors); a NaN input must not.
    quiet = (np.errstate(invalid="ignore", divide="ignore", over="ignore") if value != "NaN"
             else contextlib.nullcontext())
    try:
        with quiet:
            want = expected(spec, d)[0]
    except (ValueError, TypeError, IndexError) as refusal:
        if framework == "jax":
            pytest.skip("the reference refuses this input; JAX under jit cannot read values (tests/test_errors.py)")
        for variant in variants:
            with pytest.raises(type(refusal)):
                run_torch(pkg.get(name, variant), spec, d, "cpu")
        return
    for variant in variants:
        fn = pkg.get(name, variant)
        got = run_torch(fn, spec, d, "cpu")[0] if framework == "torch" else run_jax(fn, spec, d, "cpu")[0]
        assert np.array_equal(_kind(got), _kind(want)), (
            f"{framework}.{variant} of {name} ({case}), {value} at {spec.inputs[position]}[0]: value {got}, "
            f"the reference's {want}\nreproduce with:\n"
            f"import numpy as np, reference, {framework}_impl\n"
            f"from tests.test_nonfinite_inputs import VALUES, _with_value\n"
            f"from reports.matrix import expected, run_{framework}\n"
            f"spec = reference.get({name!r})\n"
            f"d = _with_value(spec, {case!r}, {position}, VALUES[{value!r}])\n"
            f"got = run_{framework}({framework}_impl.get({name!r}, {variant!r}), spec, d, 'cpu')[0]\n"
            f"want = expected(spec, d)[0]")
