"""Parameters shared by the test modules: every (loss, case, reduction) of the registry."""

import pytest

import reference
from reports.matrix import quick


def loss_case_reduction(tiered: bool = False):
    """Every (loss, case, reduction); ``tiered``: those outside the quick tier
    (``reports.matrix.quick``) are marked ``slow``."""
    return list(_loss_case_reduction(tiered))


def _loss_case_reduction(tiered: bool):
    for name in reference.names():
        spec = reference.get(name)
        for case in spec.cases:
            for reduction in spec.case_reductions(case):
                marks = [pytest.mark.slow] if tiered and not quick(spec, case, reduction) else []
                yield pytest.param(name, case.name, reduction, id=f"{name}-{case.name}-{reduction}", marks=marks)


def loss_case():
    return list(_loss_case())


def _loss_case():
    for name in reference.names():
        for case in reference.get(name).cases:
            yield pytest.param(name, case.name, id=f"{name}-{case.name}")
