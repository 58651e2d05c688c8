"""The parity matrix, generated from the registry: one test per cell.

A failing cell prints its errors and the Python that reproduces it. ``make test`` runs the
quick tier (``matrix.quick``: every loss, implementation and case); the other cells are
``slow``, and ``make report`` runs them all.
"""

import pytest

import reference
from reports import matrix


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
def test_cell(cell):
    result = matrix.run_cell(cell)
    assert result.passed, result.detail
