"""The reference's analytic VJP against central finite differences, in float64."""

import numpy as np
import pytest

import reference
# Step 1e-6, rtol 1e-6, atol 1e-7; the helper and its tolerances live in reports/matrix.py,
# where the report's `reference` rows use them too.
from reports.matrix import FD_ATOL as ATOL, FD_RTOL as RTOL, draw, finite_difference_vjp
from cases import loss_case_reduction


@pytest.mark.parametrize("name, case, reduction", loss_case_reduction())
def test_vjp_matches_finite_differences(name, case, reduction):
    d = draw(reference.get(name), case, reduction, "float64")
    analytic = reference.vjp(name, *d.inputs, d.cotangent, **d.kw)
    numeric = finite_difference_vjp(name, d.inputs, d.kw, d.cotangent)
    for input_name, a, n in zip(reference.get(name).differentiable, analytic, numeric):
        np.testing.assert_allclose(a, n, rtol=RTOL, atol=ATOL, err_msg=f"d{name}/d{input_name}")
