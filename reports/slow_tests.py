"""The test suite's slow tier, run by the report.

``make test`` runs the quick tier; what is marked ``slow`` (the second-order and transform
checks of every case and reduction, the built-in comparisons and ``check_grads`` beyond the
quick tier) runs here: one pytest run in a subprocess on all cores, whose JUnit XML becomes
``slow_tests.csv`` (one row a test) and REPORT.md's "Slow tests" section (the counts per test
file, and every failure with its message and the test id that reruns it). The
parity matrix's slow cells are not run twice: the report's parity phase runs every cell.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

TESTS = Path(__file__).resolve().parents[1] / "tests"
MARKERS = "slow and not cuda"
# The parity phase of the report runs every matrix cell, the slow ones included.
NOT_HERE = ("test_matrix.py",)
COLUMNS = ["test", "file", "outcome", "seconds", "message"]
OUTCOMES = ("passed", "failed", "error", "xfail", "skipped")
# conftest.py keeps only the tests of these losses (comma-separated) where it is set.
LOSSES_VARIABLE = "LOSSPARITY_TEST_LOSSES"
PROGRESS = re.compile(r"\[\s*(\d+)%\]\s*$")


@dataclass
class SlowTests:
    """What the slow tier's run left: ``tests`` (``COLUMNS``, one row a test), the wall time,
    the command, and where nothing could run, why (``tests`` is then empty)."""

    tests: pd.DataFrame
    seconds: float
    command: str
    problem: str = ""

    def counts(self) -> dict:
        found = self.tests["outcome"].value_counts()
        return {o: int(found.get(o, 0)) for o in OUTCOMES}

    def summary(self) -> str:
        """``"214 run: 212 passed, 0 failed, 0 xfail, 2 skipped"`` (an error counts as failed)."""
        c = self.counts()
        return (f"{len(self.tests)} run: {c['passed']} passed, {c['failed'] + c['error']} failed, {c['xfail']} xfail, "
                f"{c['skipped']} skipped")

    def failed(self) -> pd.DataFrame:
        return self.tests[self.tests["outcome"].isin(["failed", "error"])]

    def per_file(self) -> pd.DataFrame:
        """Per test file: the tests by outcome and their seconds (summed over the workers)."""
        rows = []
        for file, sub in self.tests.groupby("file", sort=True):
            found = sub["outcome"].value_counts()
            rows.append({"file": file, "tests": len(sub), **{o: int(found.get(o, 0)) for o in OUTCOMES},
                         "seconds": round(float(sub["seconds"].sum()), 1)})
        return pd.DataFrame(rows, columns=["file", "tests", *OUTCOMES, "seconds"])


def pytest_args(jobs: int, tests: Path = TESTS, markers: str = MARKERS) -> list[str]:
    """pytest's arguments, run from the folder that holds ``tests`` (``make test``'s runner
    and scheduling, ``--dist loadgroup``)."""
    args = [tests.name, "-m", markers, "-q", "-p", "no:cacheprovider"]
    args += [f"--ignore={tests.name}/{name}" for name in NOT_HERE if (tests / name).exists()]
    if jobs > 1:
        args += ["-n", str(jobs), "--dist", "loadgroup"]
    return args


def run(losses=None, jobs: int | None = None, log=print, tests: Path = TESTS, markers: str = MARKERS) -> SlowTests:
    """Run the slow tier (of ``losses`` only, where given) and read its outcome. A pytest
    that could not run (no tests folder in an installed copy, pytest missing, a crash) gives
    an empty frame and the reason in ``problem``."""
    jobs = max(1, jobs or os.cpu_count() or 1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lossparity-slow-") as tmp:
        junit_xml = Path(tmp) / "junit.xml"
        args = pytest_args(jobs, tests, markers)
        cmd = [sys.executable, "-m", "pytest", *args, f"--junitxml={junit_xml}"]
        shown = shlex.join(["python", "-m", "pytest", *args])
        env = dict(os.environ)
        if losses:
            env[LOSSES_VARIABLE] = ",".join(losses)
            shown = f"{LOSSES_VARIABLE}={shlex.quote(env[LOSSES_VARIABLE])} {shown}"
        if not tests.is_dir():
            return SlowTests(_frame([]), 0.0, shown, f"no tests folder at {tests} (an installed copy)")
        log(f"slow tests: {shown}")
        tail = collections.deque(maxlen=5)
        logged = -1
        with subprocess.Popen(cmd, cwd=tests.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            for line in proc.stdout:
                tail.append(line.rstrip())
                done = PROGRESS.search(line)
                if done and int(done.group(1)) // 10 > logged:  # pytest -q's "[ 40%]": a line every tenth
                    logged = int(done.group(1)) // 10
                    log(f"slow tests: {done.group(1)}% ({time.perf_counter() - start:.0f} s)")
        seconds = time.perf_counter() - start
        # pytest's exit codes: 0 all passed, 1 some failed, 5 nothing collected; others mean it did not run.
        if proc.returncode not in (0, 1, 5) or not junit_xml.exists():
            return SlowTests(_frame([]), seconds, shown, f"pytest exited with status {proc.returncode}: "
                                                         + " / ".join(t for t in tail if t))
        return SlowTests(read_junit(junit_xml), seconds, shown)


def read_junit(path: Path) -> pd.DataFrame:
    """pytest's JUnit XML as ``COLUMNS``: the test's node id, its file, its outcome (a strict
    xfail that passed is a failure there already), its seconds and the message of a failure,
    an error, an xfail or a skip."""
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "")
        file = module.replace(".", "/") + ".py"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = ("failed" if child.tag == "failure" else "error"), child.get("message", "")
                break
            if child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome, message = ("xfail" if xfail else "skipped"), child.get("message", "")
        rows.append({"test": f"{file}::{case.get('name', '')}", "file": file, "outcome": outcome,
                     "seconds": float(case.get("time") or 0.0), "message": message})
    return _frame(rows)


def _frame(rows: list) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)
