"""The reference's analytic VJP against central finite differences, in float64."""

import numpy as np
import pytest

import reference
from reports.matrix import draw
from cases import loss_case_reduction

# Central differences with step h have truncation error O(h^2 f''') ~ 1e-12 and rounding
# error O(eps / h) ~ 1e-10 for the O(1) losses the samplers draw: 1e-6 leaves a margin.
STEP, RTOL, ATOL = 1e-6, 1e-6, 1e-7


def finite_difference_vjp(name, inputs, kw, cotangent):
    spec = reference.get(name)
    grads = []
    for input_name in spec.differentiable:
        i = spec.inputs.index(input_name)
        x = inputs[i]
        grad = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            def at(delta):
                moved = list(inputs)
                moved[i] = x.copy()
                moved[i][j] += delta
                return np.sum(cotangent * reference.loss(name, *moved, **kw))
            grad[j] = (at(STEP) - at(-STEP)) / (2 * STEP)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("name, case, reduction", loss_case_reduction())
def test_vjp_matches_finite_differences(name, case, reduction):
    d = draw(reference.get(name), case, reduction, "float64")
    analytic = reference.vjp(name, *d.inputs, d.cotangent, **d.kw)
    numeric = finite_difference_vjp(name, d.inputs, d.kw, d.cotangent)
    for input_name, a, n in zip(reference.get(name).differentiable, analytic, numeric):
        np.testing.assert_allclose(a, n, rtol=RTOL, atol=ATOL, err_msg=f"d{name}/d{input_name}")
