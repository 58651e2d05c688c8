"""NaN in, NaN out: a NaN in any differentiable floating input of any loss, in every case.

The value of each implementation has NaN exactly where the reference's value has it: a loss
that turns a NaN input into a finite value is a silent wrong answer (JAX's triplet losses once
gave the margin, their distance read a NaN sum as 0), one that raises where the reference
gives NaN is a crash (torch's sparsemax once indexed out of range). Where the reference
refuses the NaN (a domain check: probabilities, variances, ...), torch's implementations
refuse it with the same exception type; JAX's value checks run eagerly only (jit cannot read
values), and ``tests/test_errors.py`` holds them to the spec's bad inputs. Gradients at a NaN
are each framework's own (torch's ``sign`` of NaN is 0, JAX's ``abs`` has slope 1 there) and
are not compared here; rows whose softmax normaliser is NaN are a matrix case of their own
("non-finite logits"). ``make test`` runs every case for torch and the default case for JAX
(under jit); the rest is ``slow``.
"""

import dataclasses

import numpy as np
import pytest

import jax_impl
import reference
import torch_impl
from reports.matrix import draw, expected, run_jax, run_torch

IMPLEMENTATIONS = (("torch", torch_impl, ("module", "function")), ("jax", jax_impl, ("autodiff", "custom_vjp")))


def _params():
    for name in reference.names():
        spec = reference.get(name)
        for case in spec.cases:
            for position, input_name in enumerate(spec.inputs):
                if input_name not in spec.differentiable:
                    continue
                for framework, _, _ in IMPLEMENTATIONS:
                    slow = framework == "jax" and case is not spec.cases[0]
                    yield pytest.param(name, case.name, position, framework,
                                       id=f"{name}-{case.name}-{input_name}-{framework}",
                                       marks=[pytest.mark.slow] if slow else [])


def _with_nan(spec, case: str, position: int):
    """The case's draw (per-element values where the case has ``none``) with the input at
    ``position`` NaN at its first element; None where that input is not floating or empty."""
    reductions = spec.case_reductions(spec.case(case))
    d = draw(spec, case, "none" if "none" in reductions else reductions[0], "float64")
    x = np.array(d.inputs[position])
    if x.dtype.kind != "f" or x.size == 0:
        return None
    x.reshape(-1)[0] = np.nan
    return dataclasses.replace(d, inputs=d.inputs[:position] + (x,) + d.inputs[position + 1:])


@pytest.mark.parametrize("name, case, position, framework", list(_params()))
def test_a_nan_input_gives_nan_where_the_reference_does(name, case, position, framework):
    spec = reference.get(name)
    d = _with_nan(spec, case, position)
    if d is None:
        pytest.skip(f"{spec.inputs[position]} is not a floating array here")
    _, pkg, variants = next(f for f in IMPLEMENTATIONS if f[0] == framework)
    try:
        want = expected(spec, d)[0]
    except (ValueError, TypeError, IndexError) as refusal:
        if framework == "jax":
            pytest.skip("the reference refuses this NaN; JAX under jit cannot read values (tests/test_errors.py)")
        for variant in variants:
            with pytest.raises(type(refusal)):
                run_torch(pkg.get(name, variant), spec, d, "cpu")
        return
    for variant in variants:
        fn = pkg.get(name, variant)
        value = run_torch(fn, spec, d, "cpu")[0] if framework == "torch" else run_jax(fn, spec, d, "cpu")[0]
        assert np.array_equal(np.isnan(value), np.isnan(want)), (
            f"{framework}.{variant} of {name} ({case}), NaN at {spec.inputs[position]}[0]: value {value}, "
            f"the reference's {want}")
