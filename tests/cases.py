"""Parameters shared by the test modules: every (loss, case, reduction) of the registry."""

import pytest

import reference


def loss_case_reduction():
    return list(_loss_case_reduction())


def _loss_case_reduction():
    for name in reference.names():
        spec = reference.get(name)
        for case in spec.cases:
            for reduction in spec.case_reductions(case):
                yield pytest.param(name, case.name, reduction, id=f"{name}-{case.name}-{reduction}")


def loss_case():
    return list(_loss_case())


def _loss_case():
    for name in reference.names():
        for case in reference.get(name).cases:
            yield pytest.param(name, case.name, id=f"{name}-{case.name}")
