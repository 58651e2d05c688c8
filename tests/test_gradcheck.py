"""The hand-written backwards, checked by the frameworks' own tools in float64:
torch.autograd.gradcheck on every Function in every case (``make test``: the matrix's quick tier
of cases and reductions, ``reports.matrix.quick``), jax.test_util.check_grads on every
custom_vjp. check_grads is ``slow`` (``make report`` runs it; 14 s of a cold ``make test`` on 2
cores): in ``make test`` every matrix cell holds the custom_vjp's VJP to the reference's, and the
reference's VJP is held to central differences in every case (``test_reference_vjp.py``);
check_grads is the JAX-side oracle of the same."""

import jax
import pytest
import torch
from jax.test_util import check_grads

import jax_impl
import reference
import torch_impl
from reports.matrix import draw, jax_arrays, on_differentiable, torch_arrays
from cases import loss_case_reduction


@pytest.mark.parametrize("name, case, reduction", loss_case_reduction(tiered=True))
def test_torch_function_gradcheck(name, case, reduction):
    spec = reference.get(name)
    d = draw(spec, case, reduction, "float64")
    call, primals = on_differentiable(torch_impl.get(name, "function"), spec, *torch_arrays(d))
    assert torch.autograd.gradcheck(call, [p.clone().requires_grad_(True) for p in primals])


@pytest.mark.slow
@pytest.mark.parametrize("name, case, reduction", loss_case_reduction())
def test_jax_custom_vjp_check_grads(name, case, reduction):
    spec = reference.get(name)
    d = draw(spec, case, reduction, "float64")
    call, primals = on_differentiable(jax_impl.get(name, "custom_vjp"), spec, *jax_arrays(d))
    # Under jax.jit: check_grads evaluates the function at many points, and eager JAX would
    # compile each of its operations apart. The custom VJP is the same under jit.
    check_grads(jax.jit(call), tuple(primals), order=1, modes=("rev",))
