"""The frameworks' own losses as a second, outside oracle of the reference.

Each built-in is called through the adapter its family file registers (``builtin``),
in float64, and its value and autodiff gradient must match the reference's value and
analytic VJP. An adapter that raises NotImplementedError marks an option the
built-in lacks: that cell is skipped, with the reason.
"""

import functools

import jax
import pytest
import torch

import jax_impl
import reference
import torch_impl
from reports.matrix import TOLERANCES, compare, draw, expected, run_jax, run_torch, Cell
from cases import loss_case_reduction

# Eager JAX: an adapter may read its arrays' values to refuse an option its built-in lacks
# (optax has no ignore_index, nor an infinite loss for an infeasible CTC target).
FRAMEWORKS = {"torch": (torch_impl, run_torch), "jax": (jax_impl, functools.partial(run_jax, jit=False))}


def _params():
    for param in loss_case_reduction(tiered=True):
        name = param.values[0]
        for framework, (pkg, _) in FRAMEWORKS.items():
            if pkg.builtin(name) is not None:
                yield pytest.param(framework, *param.values, id=f"{framework}-{param.id}", marks=param.marks)


@pytest.mark.parametrize("framework, name, case, reduction", list(_params()))
def test_builtin_matches_reference(framework, name, case, reduction):
    pkg, runner = FRAMEWORKS[framework]
    spec = reference.get(name)
    d = draw(spec, case, reduction, "float64")
    try:
        value, grads = runner(pkg.builtin(name), spec, d, "cpu")
    except NotImplementedError as e:
        pytest.skip(f"the {framework} built-in lacks this option: {e}")
    want_value, want_grads = expected(spec, d)
    cell = Cell(name, case, reduction, "builtin", "float64")
    result = compare(cell, value, grads, want_value, want_grads)
    rtol, atol = TOLERANCES["float64"]
    assert result.passed, (f"{framework} built-in for {name} ({case}, {reduction}) differs from the reference: "
                           f"value err {result.value_abs_err:.3g}, grad err {result.grad_abs_err:.3g} "
                           f"(rtol={rtol}, atol={atol})")
