"""The frameworks' own losses as a second, outside oracle of the reference.

Each built-in is called through the adapter its family file registers (``builtin``),
in float64, and its value and autodiff gradient must match the reference's value and
analytic VJP, in every case the parity matrix runs (``straight_through_cases`` too: the
edges of a domain, NaN in and NaN out, are where a port most often parts from its original).
An adapter that raises NotImplementedError marks an option the built-in lacks: that cell is
skipped, with the reason. JAX built-ins run under jit, the
calls of one loss as one program (``matrix.run_jax_calls``), except where the built-in or
its adapter reads its arrays' values. A comparison known to fail for a genuine reason (the
built-in's own bug, recorded as a ``Difference``) is declared on the spec,
``XFail(check="jax.builtin")``, and runs as ``xfail(strict=True)``. ``make test`` compares
torch's built-ins on the matrix's quick tier (``reports.matrix.quick``) and JAX's on each loss's
default case; the rest is ``slow`` (``make report`` runs it).
"""

import jax
import pytest

import jax_impl
import reference
import torch_impl
from reports.matrix import TOLERANCES, compare, draw, expected, quick, run_jax, run_jax_calls, run_torch, Cell
from cases import PerLoss, loss_case_reduction

# What jax.jit raises where a function reads a traced array's value (optax's dice losses check
# that probabilities sum to 1 in Python; an adapter refuses ignore_index by looking).
_READS_VALUES = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                 jax.errors.TracerIntegerConversionError)


def _jax_quick(spec, case, reduction) -> bool:
    """JAX's built-ins in ``make test``: the quick tier's default case only. XLA compiles their
    programs (the other cases took about 15 s of a cold make test on 2 cores); torch's run
    eagerly in milliseconds and keep the whole quick tier."""
    return spec.case(case) is spec.cases[0] and quick(spec, case, reduction)


FRAMEWORKS = (("torch", torch_impl, quick), ("jax", jax_impl, _jax_quick))


def _params():
    tiers = [loss_case_reduction(tiered=True, quick_rule=rule, straight_through=True) for _, _, rule in FRAMEWORKS]
    for params in zip(*tiers):  # the same (loss, case, reduction) in each framework's tier
        for (framework, pkg, _), param in zip(FRAMEWORKS, params):
            name = param.values[0]
            if pkg.builtin(name) is not None:
                marks = list(param.marks)
                reason = reference.get(name).check_xfail_reason(f"{framework}.builtin", "builtin", *param.values[1:])
                if reason:
                    marks.append(pytest.mark.xfail(strict=True, reason=reason))
                yield pytest.param(framework, *param.values, id=f"{framework}-{param.id}", marks=marks)


def run_jax_builtin(request, name, case, reduction, d):
    """Under jit, as the matrix runs JAX; eager where the built-in or its adapter reads its
    arrays' values: where jit refuses to trace it, and where the adapter is registered as
    ``reads_values`` (it refuses an option its built-in lacks only on concrete arrays)."""
    fn = jax_impl.builtin(name)
    outputs = None
    if not getattr(fn, "reads_values", False):
        params = {"framework": "jax", "name": name, "case": case, "reduction": reduction}
        outputs = JAX_OUTPUTS.get(request, params)
    if outputs is None or isinstance(outputs, _READS_VALUES):
        outputs = run_jax(fn, reference.get(name), d, "cpu", jit=False)
    if isinstance(outputs, BaseException):
        raise outputs
    return outputs


@pytest.mark.parametrize("framework, name, case, reduction", list(_params()))
def test_builtin_matches_reference(framework, name, case, reduction, request):
    spec = reference.get(name)
    d = draw(spec, case, reduction, "float64")
    try:
        if framework == "torch":
            value, grads = run_torch(torch_impl.builtin(name), spec, d, "cpu")
        else:
            value, grads = run_jax_builtin(request, name, case, reduction, d)
    except NotImplementedError as e:
        pytest.skip(f"the {framework} built-in lacks this option: {e}")
    want_value, want_grads = expected(spec, d)
    cell = Cell(name, case, reduction, "builtin", "float64")
    result = compare(cell, value, grads, want_value, want_grads)
    rtol, atol = TOLERANCES["float64"]
    assert result.passed, (f"{framework} built-in for {name} ({case}, {reduction}) differs from the reference: "
                           f"value err {result.value_abs_err:.3g}, grad err {result.grad_abs_err:.3g} "
                           f"(rtol={rtol}, atol={atol})")


def _jax_outputs(name, params) -> dict:
    spec, fn = reference.get(name), jax_impl.builtin(name)
    keys = [(p["case"], p["reduction"]) for p in params if p["framework"] == "jax"]
    return run_jax_calls({k: (fn, spec, draw(spec, *k, "float64"), "cpu") for k in keys})


JAX_OUTPUTS = PerLoss(test_builtin_matches_reference, loss_of=lambda p: p["name"],
                      key_of=lambda p: (p["case"], p["reduction"]), compute=_jax_outputs)
