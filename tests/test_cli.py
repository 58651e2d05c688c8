"""The command line: ``lossparity list``, ``show`` and ``report`` (``python -m reports``)."""

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import jax_impl
import reference
import torch_impl
from reports import cli, matrix, report, timing

ROOT = Path(__file__).resolve().parents[1]
PARITY_COLUMNS = ["loss", "case", "reduction", "framework", "variant", "dtype", "device", "value_abs_err",
                  "value_rel_err", "grad_abs_err", "grad_rel_err", "rtol", "atol", "passed"]
TIMING_COLUMNS = ["loss", "framework", "variant", "dtype", "device", "size", "fwd_ms", "fwd_bwd_ms", "compile_ms",
                  "builtin", "builtin_fwd_ms", "builtin_fwd_bwd_ms", "ratio_to_builtin"]
LOSSES = ["mse_loss", "huber_loss"]


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- list --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["table", "csv", "markdown", "json"])
def test_list_formats(capsys, fmt):
    code, out, err = run(capsys, "list", "--format", fmt)
    assert code == 0, err
    names = reference.names()
    if fmt == "csv":
        df = pd.read_csv(io.StringIO(out), keep_default_na=False)
        assert list(df["name"]) == names
        assert {"name", "family", "inputs", "hyperparameters", "torch", "optax"} <= set(df.columns)
        row = df.set_index("name").loc["huber_loss"]
        assert row["family"] == "regression" and row["inputs"] == "input, target"
        assert "delta=1.0" in row["hyperparameters"] and row["torch"] == "torch.nn.functional.huber_loss"
        assert row["optax"] == "optax.losses.huber_loss"
        assert df.set_index("name").loc["l1_loss", "optax"] == ""  # optax has no l1 loss
    elif fmt == "json":
        records = json.loads(out)
        assert [r["name"] for r in records] == names
        huber = next(r for r in records if r["name"] == "huber_loss")
        assert huber["inputs"] == ["input", "target"]
        assert huber["hyperparameters"] == {"reduction": "mean", "delta": 1.0, "weight": None}
        assert huber["builtins"] == {"torch": "torch.nn.functional.huber_loss", "optax": "optax.losses.huber_loss"}
    else:
        lines = out.splitlines()
        if fmt == "markdown":
            assert lines[0].startswith("| name") and set(lines[1]) <= set("|:- ")
        else:
            assert lines[0].split()[:4] == ["name", "family", "inputs", "hyperparameters"]
        body = lines[2:]
        assert len(body) == len(names)
        assert [line.strip("| ").split()[0] for line in body] == names
        column = lines[0].index("family")  # aligned: every family starts under its header
        assert all(line[column:].startswith(reference.get(n).family) for line, n in zip(body, names))
        assert any("F.huber_loss" in line and "optax.huber_loss" in line for line in body)


# -- show --------------------------------------------------------------------------

def test_show_prints_the_reference_page(capsys):
    code, out, err = run(capsys, "show", "l1_loss", "--format", "markdown", "--no-timings")
    assert code == 0, err
    spec = reference.get("l1_loss")
    for section in ("# l1_loss", "## Formula", "## Gradient", "## Hyperparameters", "## Cases",
                    "## Built-ins and differences", "## Known disagreements (xfail)", "## Parity", "## Implementations"):
        assert section in out
    assert "\\ell_i = w_i\\,|x_i - y_i|" in out                     # the forward's formula
    assert "\\operatorname{sign}(x_i - y_i)" in out                 # the VJP's docstring
    assert "def l1_loss_vjp(cotangent, input, target" in out        # the NumPy source
    assert "class L1LossFunction(torch.autograd.Function)" in out    # torch's Function
    assert "def _l1_loss_bwd(" in out                                # JAX's custom_vjp backward
    # the parity rows are real: every implementation and dtype ran all of the loss's cells
    n = sum(len(spec.case_reductions(c)) for c in spec.matrix_cases)
    for variant in matrix.VARIANTS:
        for dtype in matrix.DTYPES:
            row = _table_row(out, f"{matrix.FRAMEWORK_OF[variant]}.{variant}", dtype)
            cells = n if dtype in matrix.FULL_DTYPES else 1  # a half dtype: the default case, one reduction
            assert row[2:6] == ["cpu", str(cells), str(cells), "0"], row
    row = _table_row(out, "numpy.reference", "float64")  # the reference against finite differences
    assert row[2:6] == ["cpu", str(len(spec.cases) * 3), str(len(spec.cases) * 3), "0"], row


def _table_row(text, first, second):
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == [first, second]:
            return cells
    raise AssertionError(f"no row {first} {second}")


def test_show_text_has_no_markdown_headings(capsys):
    code, out, err = run(capsys, "show", "mse_loss", "--no-timings")
    assert code == 0, err
    assert out.startswith("mse_loss\n========\n")
    assert "\n## " not in out and "```" not in out


def test_unknown_name_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "reports", "show", "mse_los"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown loss 'mse_los'" in proc.stderr and "did you mean mse_loss" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_unknown_names_in_report_options(capsys, tmp_path):
    code, out, err = run(capsys, "report", "--losses", "mse_loss,hubre_loss", "--out", str(tmp_path))
    assert code == 2 and "did you mean huber_loss" in err
    code, out, err = run(capsys, "report", "--variants", "modul", "--out", str(tmp_path))
    assert code == 2 and "did you mean module" in err
    assert not any(tmp_path.iterdir())


# -- report ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    # The training-level parity has its own tests (tests/test_training.py, which also writes its
    # section and picture through report.write); here it would only add its ~10 s again.
    code = cli.main(["report", "--quick", "--no-training", "--losses", ",".join(LOSSES), "--out", str(out)])
    assert code == 0
    return out


def test_report_writes_the_files(quick_report):
    out = quick_report
    assert {p.name for p in out.iterdir()} == {"parity.csv", "timings.csv", "REPORT.md", "losses", "figures"}
    assert sorted(p.name for p in (out / "losses").iterdir()) == sorted(f"{n}.md" for n in LOSSES)
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        ["parity_float32.png", "timing_ratios.png"] + [f"parity_{n}.png" for n in LOSSES])
    assert not list(out.rglob("*.tmp"))  # the atomic writes left no temporary file


def test_parity_csv(quick_report):
    df = pd.read_csv(quick_report / "parity.csv", keep_default_na=False, dtype=str)
    assert list(df.columns[:len(PARITY_COLUMNS) - 3]) == PARITY_COLUMNS[:-3]
    assert set(PARITY_COLUMNS) <= set(df.columns)
    assert set(df["passed"]) <= {"True", "False", "xfail"}
    cells = df[df["variant"] != "reference"]
    want = {c.id for c in matrix.cells(LOSSES)}
    got = {f"{r.loss}-{r.case}-{r.reduction}-{r.framework}.{r.variant}-{r.dtype}-{r.device}"
           for r in cells.itertuples()}
    assert got == want
    assert (cells["passed"] == "True").all()
    # a reference row (analytic VJP against finite differences) for every (loss, case, reduction)
    ref = df[df["variant"] == "reference"]
    assert set(ref["framework"]) == {"numpy"} and set(ref["dtype"]) == {"float64"}
    want = {(n, c.name, r) for n in LOSSES for c in reference.get(n).cases
            for r in reference.get(n).case_reductions(c)}
    assert set(zip(ref["loss"], ref["case"], ref["reduction"])) == want
    assert {(float(r), float(a)) for r, a in zip(ref["rtol"], ref["atol"])} == {(matrix.FD_RTOL, matrix.FD_ATOL)}
    assert (ref["passed"] == "True").all() and (ref["grad_abs_err"] != "").all()
    for dtype, (rtol, atol) in matrix.TOLERANCES.items():
        sub = cells[cells["dtype"] == dtype]
        assert {(float(r), float(a)) for r, a in zip(sub["rtol"], sub["atol"])} == {(rtol, atol)}
    assert (cells[["value_abs_err", "grad_rel_err"]].astype(float) >= 0).all().all()


def test_timings_csv(quick_report):
    df = pd.read_csv(quick_report / "timings.csv")
    assert set(TIMING_COLUMNS) <= set(df.columns)
    assert sorted(zip(df["loss"], df["variant"])) == sorted((n, v) for n in LOSSES for v in matrix.VARIANTS)
    assert set(df["dtype"]) == {"float32"} and set(df["device"]) == {"cpu"}
    assert (df["fwd_ms"] > 0).all() and (df["fwd_bwd_ms"] > 0).all()
    jax_rows = df[df["framework"] == "jax"]
    assert (jax_rows["compile_ms"] > 0).all() and df[df["framework"] == "torch"]["compile_ms"].isna().all()
    assert (df[df["framework"] == "torch"]["builtin"] == df[df["framework"] == "torch"]["loss"]
            .map(lambda n: f"torch.nn.functional.{n}")).all()
    # The CSV rounds every float to 4 significant digits (report.FLOAT_FORMAT), a relative error of
    # at most 5e-4 each: the ratio of the two rounded times and the rounded ratio can differ by 3 of them.
    ratio = df["fwd_bwd_ms"] / df["builtin_fwd_bwd_ms"]
    assert report.FLOAT_FORMAT == "%.4g"
    assert ((df["ratio_to_builtin"] - ratio).abs() <= 3 * 5e-4 * (1 + 1e-3) * ratio).all()


def test_report_markdown(quick_report):
    text = (quick_report / "REPORT.md").read_text()
    assert "## Summary" in text and "## Catalogue" in text and "## Timings" in text
    assert "[mse_loss](losses/mse_loss.md)" in text and "[huber_loss](losses/huber_loss.md)" in text
    assert "Worst cells by gradient error" in text
    page = (quick_report / "losses" / "huber_loss.md").read_text()
    assert "$$" in page and "optax.losses.huber_loss" in page and "class HuberLossFunction" in page
    assert "huber is smooth_l1 scaled by its threshold" in page  # a recorded Difference


def test_strict_report_lists_known_failures_apart_and_passes(tmp_path, capsys):
    # ctc_loss's spec marks its autodiff cells at a NaN log-probability xfail(strict=True)
    code, out, err = run(capsys, "report", "--quick", "--no-timings", "--no-training", "--no-pictures",
                         "--no-sweep", "--no-slow-tests", "--strict", "--losses", "ctc_loss",
                         "--variants", "module", "--dtypes", "float64", "--out", str(tmp_path))
    assert code == 0, out + err
    assert "FAILED (" not in out
    assert "XFAIL (3), known disagreements marked xfail(strict=True)" in out
    assert "ctc_loss-a NaN log-probability-mean-torch.module-float64-cpu" in out


def test_parity_csv_is_deterministic(quick_report, tmp_path, capsys):
    code, out, err = run(capsys, "report", "--quick", "--no-timings", "--no-training", "--no-pictures", "--losses",
                         ",".join(reversed(LOSSES)), "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "parity.csv").read_bytes() == (quick_report / "parity.csv").read_bytes()


# -- failures and gaps are recorded, not raised --------------------------------------

def test_a_cell_that_raises_is_recorded_and_the_run_goes_on(monkeypatch):
    def broken(*inputs, **kw):
        raise RuntimeError("boom")

    monkeypatch.setitem(jax_impl.IMPLEMENTATIONS._table["l1_loss"], "autodiff", broken)
    monkeypatch.delitem(torch_impl.IMPLEMENTATIONS._table["l1_loss"], "function")
    run_ = report.run_loss("l1_loss", dtypes=["float64"])
    rows = pd.DataFrame(run_.rows)
    autodiff = rows[rows["variant"] == "autodiff"]
    assert len(autodiff) and (autodiff["status"] == "error").all() and not autodiff["passed"].any()
    assert autodiff["error"].str.contains("RuntimeError: boom").all()
    assert (rows[rows["variant"].isin(["module", "custom_vjp", "reference"])]["status"] == "passed").all()
    assert "function" not in set(rows["variant"])
    assert run_.skipped == [{"loss": "l1_loss", "what": "torch function", "reason": "no implementation registered"}]
    assert all("reproduce with" in f["detail"] for f in run_.failures) and len(run_.failures) == len(autodiff)
    t_rows, _ = timing.time_loss("l1_loss", budget=timing.QUICK)
    assert sorted(r["variant"] for r in t_rows) == ["autodiff", "custom_vjp", "module"]
    assert "boom" in next(r["note"] for r in t_rows if r["variant"] == "autodiff")


# -- pictures, progress, --device, --format ---------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"


def _images(page: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text())


def test_report_pictures_are_embedded(quick_report):
    from PIL import Image
    report_md = quick_report / "REPORT.md"
    assert _images(report_md) == ["figures/parity_float32.png", "figures/timing_ratios.png"]
    for n in LOSSES:
        assert _images(quick_report / "losses" / f"{n}.md") == [f"../figures/parity_{n}.png"]
    for page in [report_md, *(quick_report / "losses").iterdir()]:
        for link in _images(page):
            path = (page.parent / link).resolve()
            assert path.read_bytes()[:8] == PNG, link
            assert Image.open(path).size[0] <= 1000, link  # shown at full size, not shrunk to fit the page
    text = report_md.read_text()
    headings = {report._anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    contents = re.findall(r"\]\(#([^)]+)\)", text)
    assert {"summary", "parity-at-a-glance", "timings", "time-against-problem-size", "training-level-parity"} <= set(
        contents) and set(contents) <= headings
    assert "Skipped: there is no `scaling.csv`" in text  # the sweep is not part of --quick
    assert "## Training-level parity\n\nNot run (`--no-training`" in text
    assert "<details>\n<summary>All 8 timings (table)</summary>\n\n| loss" in text  # the long table is folded


def _scaling_csv(with_sweep: bool) -> pd.DataFrame:
    """scaling.csv's columns (reports/bench.py) with made-up times: an element sweep of two losses
    and a class sweep of cross_entropy at 64 rows."""
    rows = []
    points = [("mse_loss", "elements", n, float("nan")) for n in (1000, 10000, 100000)]
    points += [("cross_entropy", "elements", n, 100) for n in (1000, 10000, 100000)]
    points += [("cross_entropy", "classes", 64 * c, c) for c in (10, 100, 1000)]
    for loss, sweep, elements, classes in points:
        for k, (framework, variant) in enumerate([("torch", "module"), ("torch", "function"), ("torch", "builtin"),
                                                  ("jax", "autodiff"), ("jax", "custom_vjp"), ("jax", "builtin")]):
            ms = 1e-4 * elements * (1 + 0.1 * k)
            rows.append({"loss": loss, "sweep": sweep, "framework": framework, "variant": variant, "device": "cpu",
                         "dtype": "float32", "elements": elements, "classes": classes, "fwd_bwd_ms": ms,
                         "builtin_fwd_bwd_ms": 1e-4 * elements})
    df = pd.DataFrame(rows)
    return df if with_sweep else df.drop(columns="sweep")


@pytest.mark.parametrize("with_sweep", [True, False])
def test_scaling_panels(with_sweep):
    from reports import plots
    panels = plots.scaling_panels(_scaling_csv(with_sweep))
    assert [(loss, device, sweep) for loss, device, sweep, _ in panels] == [
        ("mse_loss", "cpu", "elements"), ("cross_entropy", "cpu", "elements"), ("cross_entropy", "cpu", "classes")]
    classes = panels[2][3]
    assert sorted(set(classes["classes"])) == [10, 100, 1000] and set(classes["elements"] / classes["classes"]) == {64}
    assert set(panels[1][3]["classes"]) == {100}


def test_scaling_csv_in_the_folder_is_drawn(tmp_path):
    _scaling_csv(True).to_csv(tmp_path / "scaling.csv", index=False)
    rep = report.Report(losses=["mse_loss"], parity=report.parity_frame([]), timings=report.timings_frame([]),
                        failures={}, skipped=[], settings={"seed": 0, "quick": True, "dtypes": ["float64"],
                                                           "load": None, "variants": ["module"], "devices": ["cpu"]})
    written = report.write(rep, tmp_path, log=lambda msg: None)
    assert {p.name for p in written if p.suffix == ".png"} == {"scaling.png", "scaling_mse_loss.png"}
    text = (tmp_path / "REPORT.md").read_text()
    assert "From `scaling.csv` found in the report's folder" in text and "](figures/scaling.png)" in text
    assert "[scaling.csv](scaling.csv)" in text
    targets = text[text.index("### Speed targets"):]
    assert "1e3 elements" in targets and "64 rows x 10 classes" in targets
    assert _images(tmp_path / "losses" / "mse_loss.md") == ["../figures/scaling_mse_loss.png"]


def test_progress_bar_on_a_terminal_and_plain_lines_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = report.Progress(stream=screen)
    bar.phase("parity", 4, "cells")
    bar.advance(1, "  mse_loss: 1 passed")
    bar.advance(3)
    bar.close()
    bar.log("parity: done")
    text = screen.getvalue()
    assert "\r\x1b[2K[#######---------------------] parity 1/4 cells  25% 0:00" in text
    assert "\r\x1b[2K  mse_loss: 1 passed\n" in text  # a log line above the bar, which is drawn again
    assert "[############################] parity 4/4 cells 100%" in text
    assert text.endswith("\r\x1b[2Kparity: done\n")  # the bar is gone once the phase is over

    lines = []
    plain = report.Progress(log=lines.append)  # not a terminal: plain lines, no control characters
    plain.phase("pictures", 20, "PNGs")
    for _ in range(20):
        plain.advance(1)
    assert len(lines) == 10 and lines[-1].startswith("pictures 20/20 PNGs 100%")  # every tenth of the way
    assert not any("\r" in line or "\x1b" in line for line in lines)


def test_device_cuda_without_one_is_a_clear_error(capsys, tmp_path):
    if any(matrix.device_available(f, "cuda") for f in ("torch", "jax")):
        pytest.skip("a CUDA device is present")
    code, out, err = run(capsys, "report", "--device", "cuda", "--losses", "mse_loss", "--out", str(tmp_path))
    assert code == 2 and "--device cuda: no CUDA device is available" in err
    assert "Traceback" not in err and out == "" and not any(tmp_path.iterdir())


TINY = ["report", "--losses", "mse_loss", "--variants", "module", "--dtypes", "float64", "--no-timings",
        "--no-training", "--no-slow-tests", "--device", "cpu"]


def test_report_format_json_keeps_stdout_for_the_summary(capsys, tmp_path):
    code, out, err = run(capsys, *TINY, "--format", "json", "--out", str(tmp_path))
    assert code == 0, err
    record = json.loads(out)  # nothing but the JSON on stdout: the progress went to stderr
    n = sum(len(reference.get("mse_loss").case_reductions(c)) for c in reference.get("mse_loss").matrix_cases)
    assert (record["losses"], record["cells"], record["passed"], record["failed"]) == (1, n, n, 0)
    assert record["training"] is None and record["failures"] == [] and record["out"] == str(tmp_path)
    assert record["speed_targets"] == []  # --no-timings
    assert {"parity.csv", "REPORT.md", "losses/mse_loss.md", "figures/parity_mse_loss.png"} <= set(record["files"])
    assert record["per_loss"] == [{"loss": "mse_loss", "family": "regression", "cells": n, "passed": n, "failed": 0,
                                   "xfail": 0, "xpass": 0, "reference_passed": 0, "reference_run": 0,
                                   "worst_grad_err_over_tol": record["per_loss"][0]["worst_grad_err_over_tol"]}]
    assert f"parity {n}/{n} cells 100%" in err  # plain progress lines: stderr is not a terminal here
    parity = pd.read_csv(tmp_path / "parity.csv")
    assert set(parity["device"]) == {"cpu"} and set(parity["variant"]) == {"module"}


def test_report_format_csv_and_markdown(capsys, tmp_path):
    rep = report.build(["mse_loss"], ["module"], ["float64"], with_timings=False, with_training=False,
                       devices=["cpu"], log=lambda msg: None)
    written = report.write(rep, tmp_path, log=lambda msg: None)
    df = pd.read_csv(io.StringIO(cli._report_summary("csv", rep, tmp_path, written, 1.0, report)))
    assert df["loss"].tolist() == ["mse_loss"] and df.loc[0, "passed"] == df.loc[0, "cells"] > 0
    md = cli._report_summary("markdown", rep, tmp_path, written, 1.0, report)
    assert md.startswith("## lossparity report\n") and "| mse_loss " in md and "0 failed" in md
