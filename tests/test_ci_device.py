"""``.ci/device``, the checks that need a GPU: no GPU runs CI, so what can be checked without one
is checked here: the script parses, records the machine, refuses to pass for a CUDA run where
torch sees no GPU, and runs only the steps it is asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / ".ci" / "device"


def run_script(tmp_path, **env):
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), **env})


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no GPU")
def test_a_cuda_run_without_a_gpu_fails_and_says_why(tmp_path):
    done = run_script(tmp_path)
    assert done.returncode == 1
    steps = (tmp_path / "steps.txt").read_text()
    assert f"torch {torch.__version__}" in steps and "torch sees: no GPU" in steps
    assert "no CUDA device for torch here" in steps and "LOSSPARITY_DEVICE=cpu" in steps
    assert not (tmp_path / "tests.log").exists()


def test_only_the_named_steps_run(tmp_path):
    done = run_script(tmp_path, LOSSPARITY_DEVICE="cpu", STEPS="sweep", SWEEP_S="1")
    assert done.returncode == 0, done.stdout + done.stderr
    steps = (tmp_path / "steps.txt").read_text()
    assert "sweep: exit 124 (stopped at its 1 s limit)" in steps
    assert "tests:" not in steps and "timings:" not in steps
    assert (tmp_path / "sweep.log").exists() and not (tmp_path / "tests.log").exists()
