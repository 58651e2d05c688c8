"""The report's run of the slow tier (``reports/slow_tests.py``): what it runs, what it leaves
out, and how it reads each outcome; and ``$LOSSPARITY_TEST_LOSSES`` (``conftest.py``)."""

import re
import textwrap
from types import SimpleNamespace

import conftest
from reports import report, slow_tests

SUITE = '''
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def broken():
    raise RuntimeError("a fixture that fails")


def test_passes():
    pass


def test_fails():
    raise AssertionError("the value differs\\nreproduce with:\\nrun('l1_loss')")


@pytest.mark.xfail(strict=True, reason="a known difference")
def test_known():
    assert False


@pytest.mark.xfail(strict=True, reason="a known difference")
def test_known_but_passes():
    pass


def test_skips():
    pytest.skip("no CUDA device")


def test_errors(broken):
    pass


@pytest.mark.cuda
def test_on_cuda():
    pass
'''


def _suite(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n    cuda: cuda\n")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_tier.py").write_text(textwrap.dedent(SUITE))
    (tests / "test_quick.py").write_text("def test_quick():\n    pass\n")
    # the report's parity phase runs the matrix's cells: its file is left out
    (tests / "test_matrix.py").write_text("import pytest\n\n\n@pytest.mark.slow\ndef test_cell():\n    assert False\n")
    return tests


def test_the_slow_tier_runs_and_each_outcome_is_read(tmp_path):
    lines = []
    result = slow_tests.run(jobs=1, tests=_suite(tmp_path), log=lines.append)
    assert result.problem == ""
    got = dict(zip(result.tests["test"], result.tests["outcome"]))
    assert got == {"tests/test_tier.py::test_passes": "passed", "tests/test_tier.py::test_fails": "failed",
                   "tests/test_tier.py::test_known": "xfail", "tests/test_tier.py::test_known_but_passes": "failed",
                   "tests/test_tier.py::test_skips": "skipped", "tests/test_tier.py::test_errors": "error"}
    message = dict(zip(result.tests["test"], result.tests["message"]))
    assert "reproduce with:\nrun('l1_loss')" in message["tests/test_tier.py::test_fails"]
    assert message["tests/test_tier.py::test_known"] == "a known difference"
    assert result.counts() == {"passed": 1, "failed": 2, "error": 1, "xfail": 1, "skipped": 1}
    assert list(result.per_file().itertuples(index=False, name=None))[0][:7] == (
        "tests/test_tier.py", 6, 1, 2, 1, 1, 1)
    assert result.command == ("python -m pytest tests -m 'slow and not cuda' -q -p no:cacheprovider "
                              "--ignore=tests/test_matrix.py")
    assert any(line.startswith("slow tests: 100%") for line in lines)

    text = report.render(report.slow_test_blocks(result), "markdown")
    assert "## Slow tests" in text and "6 tests, 1 passed, 2 failed, 1 error, 1 xfail, 1 skipped" in text
    assert "### Failed slow tests (3)" in text and "tests/test_tier.py::test_fails" in text
    assert "tests/test_tier.py::test_known_but_passes" in text and "[XPASS(strict)]" in text


def test_a_pytest_that_cannot_run_is_reported_not_raised(tmp_path):
    result = slow_tests.run(jobs=1, tests=tmp_path / "absent")
    assert "no tests folder" in result.problem and result.tests.empty
    result = slow_tests.run(jobs=1, tests=_suite(tmp_path), markers="slow and (")
    assert "pytest exited with status 4" in result.problem and result.tests.empty
    assert "Not run: pytest exited with status 4" in report.render(report.slow_test_blocks(result), "markdown")


def test_losses_variable_keeps_the_tests_of_those_losses(monkeypatch):
    ids = ["tests/test_transforms.py::test_transform[l1_loss-default-mean-gradgradcheck-module]",
           "tests/test_transforms.py::test_transform[smooth_l1_loss-default-mean-gradgradcheck-module]",
           "tests/test_builtins.py::test_builtin_matches_reference[jax-huber_loss-delta=2-mean]",
           "tests/test_cli.py::test_report_writes_the_files"]
    items = [SimpleNamespace(nodeid=i) for i in ids]
    deselected = []
    config = SimpleNamespace(hook=SimpleNamespace(pytest_deselected=lambda items: deselected.extend(items)))
    monkeypatch.setenv("LOSSPARITY_TEST_LOSSES", "l1_loss,huber_loss")
    conftest.pytest_collection_modifyitems(config, items)
    assert [i.nodeid for i in items] == [ids[0], ids[2]]
    assert [i.nodeid for i in deselected] == [ids[1], ids[3]]
    monkeypatch.delenv("LOSSPARITY_TEST_LOSSES")
    items = [SimpleNamespace(nodeid=i) for i in ids]
    conftest.pytest_collection_modifyitems(config, items)
    assert len(items) == 4


def test_the_report_runs_them_after_the_rest_and_writes_them(monkeypatch, tmp_path, capsys):
    import pandas as pd
    from reports import cli

    suite, calls = _suite(tmp_path / "suite"), []
    run = slow_tests.run

    def run_the_small_suite(losses=None, jobs=None, log=print):
        calls.append(losses)
        return run(losses, 1, log, tests=suite)

    monkeypatch.setattr(slow_tests, "run", run_the_small_suite)
    out = tmp_path / "out"
    code = cli.main(["report", "--losses", "mse_loss", "--variants", "module", "--dtypes", "float64", "--no-timings",
                     "--no-training", "--no-pictures", "--device", "cpu", "--out", str(out), "--strict"])
    stdout = capsys.readouterr().out
    assert code == 1  # --strict: the cells passed, but slow tests failed
    assert calls == [["mse_loss"]]
    assert len(pd.read_csv(out / "slow_tests.csv")) == 6
    text = (out / "REPORT.md").read_text()
    assert re.search(r"\| slow tests \(outside `make test`\) +\| 6 run: 1 passed, 3 failed, 1 xfail, 1 skipped +\|",
                     text)
    assert "## Slow tests" in text and "[Slow tests](#slow-tests)" in text
    assert "slow tests: 6 run: 1 passed, 3 failed, 1 xfail, 1 skipped" in stdout
    assert "failed tests/test_tier.py::test_fails: AssertionError: the value differs" in stdout
