"""The parity matrix, generated from the registry: one test per cell.

A failing cell prints its errors and the Python that reproduces it. ``make test`` runs the
quick tier (``matrix.quick``: every loss, implementation and case); the other cells are
``slow``, and ``make report`` runs them all. The JAX cells of one loss that this session
selected are computed by one jitted program (``matrix.run_jax_cells``), compiled once, and
each cell's test checks its part.
"""

import pytest

import reference
from reports import matrix
from cases import PerLoss


def _params():
    for cell in matrix.cells(devices=matrix.DEVICES):
        marks = [] if matrix.quick(reference.get(cell.loss), cell.case, cell.reduction, cell.dtype) else [pytest.mark.slow]
        if cell.device == "cuda":
            marks += [pytest.mark.cuda,
                      pytest.mark.skipif(not matrix.device_available(cell.framework, "cuda"),
                                         reason=f"no CUDA device for {cell.framework}")]
        if cell.xfail_reason:
            marks.append(pytest.mark.xfail(strict=True, reason=cell.xfail_reason))
        yield pytest.param(cell, id=cell.id, marks=marks)


@pytest.mark.parametrize("cell", list(_params()))
def test_cell(cell, request):
    outputs = None
    if cell.framework == "jax":
        outputs = JAX_OUTPUTS.get(request, {"cell": cell})
        if outputs is None:  # the one cell, alone
            outputs = matrix.run_jax_cells([cell])[cell]
        if isinstance(outputs, BaseException):
            raise outputs
    result = matrix.run_cell(cell, outputs=outputs)
    assert result.passed, result.detail


def _jax_outputs(loss, params) -> dict:
    """One program a device for the loss's selected JAX cells (none for a device not here)."""
    cells = [p["cell"] for p in params if p["cell"].framework == "jax"]
    out = {}
    for device in matrix.DEVICES:
        if matrix.device_available("jax", device):
            out.update(matrix.run_jax_cells([c for c in cells if c.device == device]))
    return out


JAX_OUTPUTS = PerLoss(test_cell, loss_of=lambda p: p["cell"].loss, key_of=lambda p: p["cell"], compute=_jax_outputs)
