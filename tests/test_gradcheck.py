"""The hand-written backwards, checked by the frameworks' own tools in float64:
torch.autograd.gradcheck on every Function in every case (``make test``: the matrix's quick tier
of cases and reductions, ``reports.matrix.quick``), jax.test_util.check_grads on every
custom_vjp. check_grads is ``slow`` (``make report`` runs it; 14 s of a cold ``make test`` on 2
cores): in ``make test`` every matrix cell holds the custom_vjp's VJP to the reference's, and the
reference's VJP is held to central differences in every case (``test_reference_vjp.py``);
check_grads is the JAX-side oracle of the same.

A gradient asked for an input or array hyperparameter outside the loss's VJP (a Dice loss's
``targets``, a class ``weight``) is the hand-written variants' to refuse: each either raises a
NotImplementedError that names it, or gives the autodiff variant's gradient (cross_entropy's
probability targets); a gradient asked for the differentiable inputs alone is unaffected by
the others requiring one. Before, the hand-written backwards gave a silent zero."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads

import jax_impl
import reference
import torch_impl
from reports.matrix import TOLERANCES, draw, jax_arrays, on_differentiable, to_torch, torch_arrays
from reference.variants import undifferentiated
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


def _undifferentiated_cases():
    """Each loss with a floating input or array hyperparameter outside its VJP, the first case
    that gives each one a floating array, and the names so given."""
    for name in reference.names():
        spec = reference.get(name)
        positions, params = undifferentiated(name)
        seen = {}
        for case in spec.cases:
            d = draw(spec, case.name, spec.case_reductions(case)[0], "float64")
            arrays = {**{spec.inputs[i]: d.inputs[i] for i in positions}, **{p: d.kw.get(p) for p in params}}
            for arg, x in arrays.items():
                if isinstance(x, np.ndarray) and x.dtype.kind == "f" and arg not in seen:
                    seen[arg] = case.name
        for case in dict.fromkeys(seen.values()):
            yield pytest.param(name, case, tuple(a for a, c in seen.items() if c == case), id=f"{name}-{case}")


def _with_the_arguments(spec, d, framework: str):
    """The drawn arrays as ``{name: array}``, inputs then hyperparameters, in ``framework``'s type."""
    arrays, kw = torch_arrays(d) if framework == "torch" else jax_arrays(d)
    return {**dict(zip(spec.inputs, arrays)), **kw}


@pytest.mark.parametrize("name, case, arguments", list(_undifferentiated_cases()))
def test_a_gradient_outside_the_vjp_is_refused_or_autodiffs(name, case, arguments):
    spec = reference.get(name)
    d = draw(spec, case, spec.case_reductions(spec.case(case))[0], "float64")
    rtol, atol = TOLERANCES["float64"]
    differentiable = spec.gradient_names(d.kw)
    failures = []

    def torch_gradients(variant, asked, requiring):
        values = _with_the_arguments(spec, d, "torch")
        values = {k: v.clone().requires_grad_(True) if k in requiring else v for k, v in values.items()}
        fn = torch_impl.get(name, variant)
        out = fn(*(values[k] for k in spec.inputs), **{k: values[k] for k in spec.defaults if k in values})
        grads = torch.autograd.grad(out, [values[k] for k in asked], to_torch(d.cotangent), allow_unused=True)
        return [torch.zeros_like(values[k]) if g is None else g for g, k in zip(grads, asked)]

    def jax_gradients(variant, asked):
        values = _with_the_arguments(spec, d, "jax")
        fn = jax_impl.get(name, variant)

        def scalar(chosen):
            merged = {**values, **chosen}
            out = fn(*(merged[k] for k in spec.inputs), **{k: merged[k] for k in spec.defaults if k in merged})
            return jnp.vdot(out, jnp.asarray(d.cotangent))

        grads = jax.jit(jax.grad(scalar))({k: values[k] for k in asked})
        return [grads[k] for k in asked]

    for framework, handwritten, autodiff in (("torch", "function", "module"), ("jax", "custom_vjp", "autodiff")):
        for arg in arguments:
            where = (f"{name} [{case}] {framework} {handwritten}, d/d{arg}; reproduce: d = reports.matrix.draw("
                     f"reference.get({name!r}), {case!r}, {spec.case_reductions(spec.case(case))[0]!r}, 'float64')")
            if framework == "torch":
                # the differentiable inputs' gradients, with arg requiring one too but not asked for
                plain = torch_gradients(handwritten, differentiable, differentiable)
                beside = torch_gradients(handwritten, differentiable, (*differentiable, arg))
                for want, got in zip(plain, beside):
                    if not torch.equal(want, got):
                        failures.append(f"{where}: the other gradients changed when {arg} required one")
                run = lambda variant: torch_gradients(variant, (arg,), (*differentiable, arg))[0]  # noqa: E731
            else:
                run = lambda variant: jax_gradients(variant, (arg,))[0]  # noqa: E731
            try:
                got = np.asarray(run(handwritten))
            except NotImplementedError as e:
                if f"'{arg}'" not in str(e) or name not in str(e):
                    failures.append(f"{where}: the NotImplementedError does not name {arg!r} and {name}: {e}")
                continue
            want = np.asarray(run(autodiff))
            if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
                failures.append(f"{where}: gives a gradient that is not {autodiff}'s (max abs difference "
                                f"{np.nanmax(np.abs(got - want)):.3g})")
    assert not failures, "\n".join(failures)
