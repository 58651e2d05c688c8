"""Training-level parity (``reports/training.py``): a short run of the real experiment (2 epochs
of the LeNet-style CNN on scikit-learn's 8x8 digits, float64, every torch and JAX variant of
cross_entropy beside its framework's built-in) holds the tolerance stated in the module,
``training.TOLERANCE``; the comparison catches a loss that is off by 1e-6; the report writes
training.csv, the curves and the section. The full run (10 epochs, float32 too) is the report's."""

import math

import numpy as np
import pandas as pd
import pytest

from reports import report, training

EPOCHS = 2  # 88 steps: the network is past chance (test accuracy ~0.75) and JAX compiles once per variant


@pytest.fixture(scope="module")
def short():
    return training.run(epochs=EPOCHS)


def test_every_variant_trains_like_its_builtin(short):
    s = short.summary.set_index("comparison")
    assert list(s.index) == ["torch.module vs torch.builtin", "torch.function vs torch.builtin",
                             "jax.builtin vs torch.builtin", "jax.autodiff vs jax.builtin",
                             "jax.custom_vjp vs jax.builtin"]
    assert (s["dtype"] == "float64").all() and (s["steps"] == EPOCHS * 44).all()
    assert (s["tolerance"] == training.TOLERANCE).all()
    assert (s["curve_max_rel_diff"] <= training.TOLERANCE).all(), s
    assert (s["weights_rel_diff"] <= training.TOLERANCE).all(), s
    assert s["passed"].tolist() == [True] * 5 and short.passed


def test_the_runs_really_train(short):
    """Two runs that never left their initial weights would agree trivially."""
    init = training.initial_weights(0)
    for run in short.runs:
        assert len(run.losses) == EPOCHS * 44 and all(map(math.isfinite, run.losses))
        first, last = np.mean(run.losses[:10]), np.mean(run.losses[-10:])
        assert first > 2.0 and last < 0.6 * first, (run.framework, run.variant, first, last)
        assert run.accuracy[-1] > 0.5  # ten classes: chance is 0.1
        moved, _ = training.weights_diff(run.weights[-1], init)
        assert moved > 0.1


def test_the_comparison_catches_a_loss_off_by_1e6():
    """Our module with ``label_smoothing=1e-6``, and our module scaled by 1 + 1e-6, fail the
    tolerance: the check is sensitive far below any real mistake."""
    import torch_impl
    data = training.digits(0)
    data = (data[0][:320], data[1][:320], data[2], data[3])
    weights, schedule = training.initial_weights(0), training.batches(320, 1, training.BATCH_SIZE)
    base = training.train_torch("builtin", data, weights, schedule)
    ours = training.train_torch("module", data, weights, schedule)
    module = torch_impl.get("cross_entropy", "module")
    smoothed = training.train_torch("module", data, weights, schedule,
                                    loss_fn=lambda x, t: module(x, t, label_smoothing=1e-6))
    scaled = training.train_torch("module", data, weights, schedule, loss_fn=lambda x, t: module(x, t) * (1 + 1e-6))
    assert training.compare(ours, base, training.TOLERANCE)["passed"] is True
    wrong = training.compare(smoothed, base, training.TOLERANCE)
    assert wrong["passed"] is False and wrong["curve_max_rel_diff"] > 10 * training.TOLERANCE
    wrong = training.compare(scaled, base, training.TOLERANCE)
    assert wrong["passed"] is False and 0.9e-6 < wrong["curve_max_rel_diff"] < 1.1e-6


def test_training_csv_and_the_report_section(short, tmp_path):
    curves = short.curves
    assert list(curves.columns) == training.CURVE_COLUMNS
    assert len(curves) == 6 * EPOCHS * 44
    ends = curves[curves["test_accuracy"].notna()]
    assert len(ends) == 6 * EPOCHS  # the epochs' last steps
    compared = curves[curves["compared_with"] != ""]
    assert set(compared["compared_with"]) == {"torch.builtin", "jax.builtin"}
    assert (curves[curves["compared_with"] == ""][["framework", "variant"]].drop_duplicates().values.tolist()
            == [["torch", "builtin"]])

    rep = report.Report(losses=[], parity=report.parity_frame([]), timings=report.timings_frame([]), failures={},
                        skipped=[], settings={"seed": 0, "quick": True, "dtypes": ["float64"], "load": None,
                                              "variants": list(report.VARIANT_ORDER), "devices": ["cpu"]},
                        training=short)
    written = report.write(rep, tmp_path, log=lambda msg: None)
    assert tmp_path / "training.csv" in written and tmp_path / "figures" / "training.png" in written
    assert (tmp_path / "figures" / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = pd.read_csv(tmp_path / "training.csv", keep_default_na=False, na_values=[""])
    assert np.allclose(back["loss"], curves["loss"], rtol=1e-9, atol=0)
    text = (tmp_path / "REPORT.md").read_text()
    section = text[text.index("## Training-level parity"):]
    assert "**Tolerance, stated before running (float64):** 1e-09" in section
    assert "![training curves and their differences from the built-in](figures/training.png)" in section
    assert "every comparison is within the tolerance" in section
    for comparison in short.summary["comparison"]:
        assert f"| {comparison}" in section
