"""Parameters shared by the test modules: every (loss, case, reduction) of the registry."""

import pytest

import reference
from reports.matrix import half_reduction, quick


def loss_case_reduction(tiered: bool = False, quick_rule=quick, straight_through: bool = False):
    """Every (loss, case, reduction); ``tiered``: those outside the quick tier (``quick_rule``,
    by default ``reports.matrix.quick``) are marked ``slow``; ``straight_through``: the
    ``straight_through_cases`` too (the checks by finite differences cannot take them)."""
    return list(_loss_case_reduction(tiered, quick_rule, straight_through))


def _loss_case_reduction(tiered: bool, quick_rule, straight_through: bool):
    for name in reference.names():
        spec = reference.get(name)
        for case in (spec.matrix_cases if straight_through else spec.cases):
            for reduction in spec.case_reductions(case):
                marks = [pytest.mark.slow] if tiered and not quick_rule(spec, case, reduction) else []
                yield pytest.param(name, case.name, reduction, id=f"{name}-{case.name}-{reduction}", marks=marks)


def loss_case():
    return list(_loss_case())


def _loss_case():
    for name in reference.names():
        for case in reference.get(name).cases:
            yield pytest.param(name, case.name, id=f"{name}-{case.name}")


class PerLoss:
    """Results a test module computes for all of one loss's tests at once (one jitted program
    for its JAX calls, compiled once), kept while that loss's tests run: the tests of one loss
    run together, in one worker (``conftest.py``). ``compute(loss, params)`` gets the parameters
    of the loss's tests of ``test`` that this session selected and returns ``{key: result}``."""

    def __init__(self, test, loss_of, key_of, compute):
        self.test, self.loss_of, self.key_of, self.compute = test, loss_of, key_of, compute
        self.loss, self.results = None, {}

    def get(self, request, params: dict):
        """The result for the test with ``params`` (None when it was not computed)."""
        loss = self.loss_of(params)
        if loss != self.loss:
            selected = [item.callspec.params for item in request.session.items
                        if getattr(item, "obj", None) is self.test and hasattr(item, "callspec")]
            mine = [p for p in selected if self.loss_of(p) == loss] or [params]
            self.loss, self.results = loss, self.compute(loss, mine)
        return self.results.get(self.key_of(params))
