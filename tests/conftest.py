"""The tests compare float64 cells, so this process turns JAX's float64 on; Keras, a test
oracle, runs on the JAX backend.

hypothesis profiles (the property-based tests, ``tests/test_fuzz.py``):

- ``lossparity``, the default: 50 examples per test, derandomized and without an example
  database, so every run (CI included) draws the same examples; no deadline (the first
  call at a new shape compiles JAX's operations).
- ``thorough``: 10,000 examples per test, randomized, no deadline. Select it with
  ``--hypothesis-profile=thorough`` or ``HYPOTHESIS_PROFILE=thorough``. A new shape costs a
  JAX compile (about 0.3 s an example), so 10,000 take hours a loss;
  ``LOSSPARITY_THOROUGH_EXAMPLES=N`` sets another count for a time-boxed run.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import reference  # noqa: E402
from reports import matrix  # noqa: E402

jax.config.update("jax_enable_x64", True)
# JAX's persistent compilation cache (``$LOSSPARITY_JAX_CACHE``, default ~/.cache/lossparity/jax),
# shared with the report's parity workers: most of an eager JAX test's time is XLA compiling
# its operations one by one, and a later run reads them back instead.
matrix.use_compilation_cache()

# The test arrays are tiny: a second intra-op thread only spins. Measured on the matrix's
# torch cells: 1 thread took a third of the CPU time of 2 (1.2 s vs 4.1 s for 548 cells).
torch.set_num_threads(1)


def _loss_in_nodeid(nodeid: str) -> str | None:
    """The registered loss a test's id names (``test_cell[ctc_loss-default-...]``,
    ``test_builtin_matches_reference[jax-ctc_loss-...]``): a ``-``-separated token of its
    parameters; None for a test of no one loss."""
    if "[" not in nodeid:
        return None
    tokens = nodeid[nodeid.index("[") + 1:].rstrip("]").split("-")
    return next((t for t in tokens if t in _LOSSES), None)


_LOSSES = frozenset(reference.names())


def pytest_collection_modifyitems(config, items):
    """Where ``$LOSSPARITY_TEST_LOSSES`` names losses (comma-separated; ``lossparity report
    --losses`` sets it for the slow tests it runs), keep only the tests of those losses."""
    wanted = os.environ.get("LOSSPARITY_TEST_LOSSES")
    if not wanted:
        return
    keep = set(wanted.split(","))
    selected, deselected = [], []
    for item in items:
        (selected if _loss_in_nodeid(item.nodeid) in keep else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadgroup`` (``make test``) every test of one loss runs in one worker:
    JAX compiles each program once per process, and a loss's tests share their programs
    (``tests/test_matrix.py`` computes a loss's JAX cells as one); split over two workers, both
    would compile them. pytest-xdist 3.8 groups by a suffix it writes into each test's node id,
    which pytest 9.2's structured node ids no longer take (pytest-dev/pytest-xdist#1386, open),
    so the loss is read from the node id here and each loss is one unit of work."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LossScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _loss_in_nodeid(nodeid) or nodeid

    return LossScheduling(config, log)


settings.register_profile("lossparity", max_examples=50, deadline=None, derandomize=True, database=None,
                          print_blob=True)
settings.register_profile("thorough", max_examples=int(os.environ.get("LOSSPARITY_THOROUGH_EXAMPLES", 10_000)),
                          deadline=None, database=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "lossparity"))
